"""The operator console in a real browser (headless Chromium through ChromeDriver, driven by
Selenium), against a payonce whose admin token is ADMIN_TOKEN and whose app APP_SECRET sends its
webhooks to a receiver this script runs on HOOK_PORT.

  python3 tests/browser/console.py BASE_URL SIM_URL ADMIN_TOKEN APP_SECRET HOOK_PORT ARTIFACT_DIR

Scenarios (each ends with a screenshot in ARTIFACT_DIR):
  1. no session: the console sends to the sign-in form; an action is refused (401); a wrong
     token is refused; signing in by the plain form (the token never stored by the page);
  2. an order paid at the simulator whose webhook failed (the receiver answers 500 until told
     otherwise): found by its merchant_order_no, its timeline shows the payment and the failed
     deliveries; "Resend" with the receiver fixed -> delivered, and the action is in the timeline;
  3. an attempt whose answer was lost and whose queries all fail ends in the abnormal queue:
     resolved from the order's page with a note -> gone from the queue, "resolved by" in the
     timeline;
  4. a POST with the session but without the CSRF token, or with another's -> 403, nothing changed.
Deadlines are generous (60 s) and nothing is timed.
"""

import http.server
import json
import sys
import threading
import time
from pathlib import Path

from common import Fail, check, chromium, http_call
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, SIM, ADMIN, SECRET, HOOK_PORT, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), Path(sys.argv[6])
ARTIFACTS.mkdir(parents=True, exist_ok=True)
DEADLINE = 60


def wait_until(what, fn, deadline=DEADLINE):
    end = time.time() + deadline
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise Fail(f"timed out waiting for {what}")


def call(method, url, body=None, auth=SECRET, headers=None, form=None):
    return http_call(method, url, body, bearer=auth, headers=headers, form=form)


def api(method, path, body=None, auth=SECRET):
    status, raw = call(method, f"{BASE}{path}", body, auth=auth)
    return status, json.loads(raw or b"null")


# The business's webhook receiver: 500 until told to accept; records what it received.
class Hooks:
    accept = False
    received = []


class HookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Hooks.received.append({"headers": dict(self.headers), "body": body.decode()})
        self.send_response(200 if Hooks.accept else 500)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), HookHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()


def browser():
    return chromium("--window-size=1280,1600")


def shot(d, name):
    d.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))


def replaced(old):
    """The page's old root is gone. Chromium sometimes answers the check on a node of a page it
    is tearing down with an inspector error ("Node with given id does not belong to the
    document") instead of a stale-element error: both say the old page is gone."""

    def check(_):
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            return True

    return check


def navigate(d, element):
    """Clicks what leads to another page and waits until that page has replaced this one."""
    old = d.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(d, DEADLINE).until(replaced(old))
    WebDriverWait(d, DEADLINE).until(lambda d: d.execute_script("return document.readyState") == "complete")


def text(d):
    return d.find_element(By.TAG_NAME, "body").text


def paid_order(no):
    status, order = api("POST", "/v1/orders", {"merchant_order_no": no, "amount": 2500, "currency": "CNY", "subject": f"Console {no}"})
    check(status == 201, f"create {no}: {status} {order}")
    status, p = api("POST", f"/v1/orders/{order['id']}/prepay", {"channel": "sandbox"})
    check(status == 200, f"prepay {no}: {status} {p}")
    status, _ = call("POST", f"{SIM}/sim/pay", {"channel": "sandbox", "out_trade_no": p["out_trade_no"]}, auth=None)
    check(status == 200, f"sim pay: {status}")
    wait_until(f"{no} paid", lambda: api("GET", f"/v1/orders/{order['id']}")[1]["status"] == "paid")
    return order["id"]


def session_cookie(d):
    c = d.get_cookie("payonce_console")
    check(c is not None, "a session cookie after sign-in")
    check(c.get("httpOnly") is True, f"the session cookie is HttpOnly: {c}")
    check(c.get("sameSite") == "Strict", f"the session cookie is SameSite=Strict: {c}")
    return f"payonce_console={c['value']}"


def main():
    d = browser()
    try:
        # 1. No session: the sign-in form; actions refused; a wrong token refused.
        d.get(f"{BASE}/console")
        check(d.current_url.endswith("/console/sign-in"), f"sent to sign in: {d.current_url}")
        status, _ = call("POST", f"{BASE}/console/events/evt_x/resend", form={"csrf": "x"}, auth=None)
        check(status == 401, f"an action without a session: {status}")
        d.find_element(By.ID, "operator-name").send_keys("Ada")
        d.find_element(By.ID, "token").send_keys("not-the-token")
        navigate(d, d.find_element(By.ID, "sign-in"))
        check("not the admin token" in text(d), "a wrong token is refused")
        shot(d, "1-wrong-token")
        d.find_element(By.ID, "operator-name").clear()
        d.find_element(By.ID, "operator-name").send_keys("Ada")
        d.find_element(By.ID, "token").send_keys(ADMIN)
        navigate(d, d.find_element(By.ID, "sign-in"))
        check(d.find_element(By.ID, "operator").text == "Ada", "signed in as Ada")
        check(d.execute_script("return JSON.stringify(window.sessionStorage) + JSON.stringify(window.localStorage) + document.cookie") == "{}{}",
              "nothing in page storage, the cookie unreadable by script")
        cookie = session_cookie(d)
        shot(d, "1-signed-in")

        # 2. A paid order whose webhook failed: find it, read its timeline, resend the event.
        order_id = paid_order("CONSOLE-PAID-1")
        wait_until("the webhook to fail", lambda: len(Hooks.received) >= 2 and any(
            e["delivery_status"] == "failed" for e in api("GET", "/admin/v1/events?status=failed", auth=ADMIN)[1]["items"] if e["order_id"] == order_id))
        d.find_element(By.ID, "q").send_keys("CONSOLE-PAID-1")
        navigate(d, d.find_element(By.ID, "search"))
        navigate(d, d.find_element(By.CSS_SELECTOR, f"a[href='/console/orders/{order_id}']"))
        check(d.find_element(By.ID, "order-id").text == order_id, "the order's page")
        page = text(d)
        for step in ["order created", "prepay via sandbox", "notification from sandbox", "order paid", "event payment.succeeded", "delivery of payment.succeeded", "HTTP 500"]:
            check(step in page, f"the timeline shows {step!r}")
        shot(d, "2-timeline-failed-event")
        Hooks.accept = True
        before = len(Hooks.received)
        d.find_element(By.CSS_SELECTOR, "#failed-events input[name=note]").send_keys("receiver fixed")
        navigate(d, d.find_element(By.CSS_SELECTOR, "#failed-events button.resend"))
        check(d.current_url.endswith(f"/console/orders/{order_id}"), "back on the order after the action")
        wait_until("the resent event delivered", lambda: any(
            e["delivery_status"] == "delivered" for e in api("GET", "/admin/v1/events?status=delivered", auth=ADMIN)[1]["items"] if e["order_id"] == order_id))
        check(len(Hooks.received) > before, "the receiver got the event again")
        d.refresh()
        page = text(d)
        check("resend event by Ada" in page and "receiver fixed" in page, "the resend is in the timeline, with who and why")
        check("HTTP 200" in page, "the successful delivery is in the timeline")
        shot(d, "2-timeline-resent")

        # 3. An attempt nobody can settle: answer lost, every query fails -> the abnormal queue.
        status, _ = call("POST", f"{SIM}/sim/faults", {"prepay_timeout_rate": 1.0, "query_error_rate": 1.0}, auth=None)
        check(status == 200, "faults set")
        status, order = api("POST", "/v1/orders", {"merchant_order_no": "CONSOLE-UNKNOWN-1", "amount": 700, "currency": "CNY", "subject": "Console unknown"})
        check(status == 201, f"create: {status}")
        unknown_id = order["id"]
        api("POST", f"/v1/orders/{unknown_id}/prepay", {"channel": "sandbox"})
        item = wait_until("an abnormal item", lambda: next((i for i in api("GET", "/admin/v1/abnormal", auth=ADMIN)[1]["items"] if i["kind"] == "unresolved_unknown"), None))
        call("POST", f"{SIM}/sim/faults", {"prepay_timeout_rate": 0.0, "query_error_rate": 0.0}, auth=None)
        d.get(f"{BASE}/console")
        check(item["id"] in d.page_source, "the item is in the queue on the console's home")
        navigate(d, d.find_element(By.CSS_SELECTOR, f"#abnormal-{item['id']} a[href='/console/orders/{unknown_id}']"))
        row = d.find_element(By.ID, f"abnormal-{item['id']}")
        row.find_element(By.CSS_SELECTOR, "input[name=note]").send_keys("confirmed unpaid in the merchant portal")
        navigate(d, row.find_element(By.CSS_SELECTOR, "button.resolve-button"))
        page = text(d)
        check("resolved by Ada" in page and "confirmed unpaid in the merchant portal" in page, "the resolution is in the timeline")
        status, open_items = api("GET", "/admin/v1/abnormal", auth=ADMIN)
        check(all(i["id"] != item["id"] for i in open_items["items"]), "the item left the queue")
        shot(d, "3-abnormal-resolved")

        # 4. With the session but without the CSRF token, or with a wrong one: refused.
        paid_order("CONSOLE-PAID-2")
        status, events = api("GET", "/admin/v1/events", auth=ADMIN)
        # A settled event (delivered or failed): nothing but a resend changes it, so a difference
        # is the refused form's doing. (The newest event may still be on its way to the receiver
        # between the two reads — this check once failed on that.)
        target = next(e["id"] for e in events["items"] if e["delivery_status"] in ("delivered", "failed"))
        before = api("GET", f"/admin/v1/events/{target}", auth=ADMIN)[1]
        for form in [{}, {"csrf": "forged"}]:
            status, body = call("POST", f"{BASE}/console/events/{target}/resend", form=form, auth=None, headers={"Cookie": cookie})
            check(status == 403, f"a form without the right CSRF token: {status}")
        after = api("GET", f"/admin/v1/events/{target}", auth=ADMIN)[1]
        check(after["attempts"] == before["attempts"] and after["delivery_status"] == before["delivery_status"], "a refused form changed nothing")
        d.get(f"{BASE}/console")
        shot(d, "4-home")
        print("console: every scenario passed")
    except Exception:
        shot(d, "failure")
        raise
    finally:
        d.quit()


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
