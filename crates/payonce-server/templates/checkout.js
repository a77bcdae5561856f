// The hosted cashier page's behaviour (no inline script: the CSP forbids it). One click locks
// every button until the answer; the page then keeps asking "is it paid yet?" with backoff
// instead of letting the payer pay again.
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root || !root.dataset.token) return;
  var token = root.dataset.token;
  var buttons = Array.prototype.slice.call(document.querySelectorAll("button.channel"));
  var message = document.getElementById("message");
  var busy = false;
  var phase = root.dataset.phase;

  function setButtons() {
    buttons.forEach(function (b) { b.disabled = busy || phase !== "open"; });
  }

  function say(text) { message.textContent = text || ""; }

  function finish(newPhase, returnUrl) {
    phase = newPhase;
    root.dataset.phase = newPhase;
    setButtons();
    document.getElementById("credential").hidden = newPhase !== "open";
    if (newPhase !== "open") document.getElementById("choose").hidden = true;
    if (newPhase === "paid") {
      say(root.dataset.paid);
      if (returnUrl) {
        var link = document.getElementById("return-link");
        link.href = returnUrl;
        document.getElementById("return").hidden = false;
      }
    } else if (newPhase === "closed") {
      say(root.dataset.closed);
    } else if (newPhase === "expired") {
      say(root.dataset.expired);
    }
  }

  function show(answer) {
    var qr = document.getElementById("qr");
    var hint = document.getElementById("scan-hint");
    var link = document.getElementById("pay-link");
    qr.hidden = hint.hidden = link.hidden = true;
    document.getElementById("credential").hidden = false;
    if (answer.kind === "qr" && answer.qr_svg) {
      qr.src = answer.qr_svg;
      qr.hidden = hint.hidden = false;
    } else if (answer.kind === "link") {
      if (answer.qr_svg) { qr.src = answer.qr_svg; qr.hidden = false; }
      if (answer.href) { link.href = answer.href; link.hidden = false; }
    } else if (answer.kind === "form" && answer.action) {
      var form = document.createElement("form");
      form.method = "post";
      form.action = answer.action;
      Object.keys(answer.fields || {}).forEach(function (k) {
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = k;
        input.value = answer.fields[k];
        form.appendChild(input);
      });
      document.body.appendChild(form);
      form.submit();
    }
    say(root.dataset.waiting);
    poll(0);
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      if (busy || phase !== "open") return;
      busy = true;
      setButtons();
      fetch("/checkout/" + token + "/prepay", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ channel: b.dataset.channel }),
        credentials: "omit"
      }).then(function (r) {
        return r.json().then(function (v) { return { status: r.status, body: v }; });
      }).then(function (res) {
        if (res.status === 200) {
          show(res.body);
        } else if (res.body && res.body.error === "order_already_paid") {
          finish("paid");
        } else if (res.body && res.body.error === "order_closed") {
          checkNow();
        } else if (res.status === 410) {
          phase = "expired";
          say(root.dataset.linkExpired);
        } else {
          say(root.dataset.failed);
        }
      }).catch(function () {
        say(root.dataset.failed);
      }).then(function () {
        busy = false;
        setButtons();
      });
    });
  });

  // Backoff: 1 s, then 1.5×, at most 5 s between questions.
  var timer = null;
  var delay = 1000;
  function poll(after) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(checkNow, after);
  }
  function checkNow() {
    fetch("/checkout/" + token + "/status", { credentials: "omit" }).then(function (r) {
      if (r.status === 410) { phase = "expired"; setButtons(); say(root.dataset.linkExpired); return null; }
      return r.json();
    }).then(function (v) {
      if (!v) return;
      if (v.phase !== "open") { finish(v.phase, v.return_url); return; }
      delay = Math.min(delay * 1.5, 5000);
      poll(delay);
    }).catch(function () { poll(5000); });
  }

  setButtons();
  if (phase === "open") poll(1000);
})();
