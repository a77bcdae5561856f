//! `/console`: a small operator console over the admin API — the abnormal queue, events and
//! their deliveries, resend. One self-contained page (no external assets); the admin token is
//! typed in and kept only in the tab's session storage, and every action goes through the same
//! authenticated admin API a script would use.

use axum::response::Html;

pub async fn console() -> Html<&'static str> {
    Html(
        r#"<!doctype html><meta charset="utf-8"><title>payonce console</title>
<style>body{font:14px/1.5 system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}code{font-size:12px}button{cursor:pointer}
.bad{color:#b00}.ok{color:#070}</style>
<h1>payonce console</h1>
<p><input id="token" type="password" placeholder="admin token" size="40"> <button id="save">use token</button>
<span id="msg"></span></p>
<h2>Needs a person <small>(GET /admin/v1/abnormal)</small></h2><table id="abnormal"></table>
<h2>Events <select id="status"><option value="failed">failed</option><option value="pending">pending</option>
<option value="delivered">delivered</option><option value="">all</option></select>
<button id="resendAll">resend every failed</button></h2><table id="events"></table>
<script src="/console.js"></script>"#,
    )
}

/// The page's script, served on its own so the page's CSP can forbid inline script.
pub async fn console_js() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/javascript; charset=utf-8")],
        r#"const $=id=>document.getElementById(id);
const esc=s=>String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
$('token').value=sessionStorage.getItem('payonce-admin')||'';
async function api(path,method='GET'){
  const r=await fetch(path,{method,headers:{Authorization:'Bearer '+$('token').value}});
  if(!r.ok){$('msg').innerHTML=`<span class="bad">${r.status} on ${esc(path)}</span>`;throw new Error(r.status)}
  $('msg').innerHTML='<span class="ok">ok</span>';return r.json();
}
async function load(){
  const a=await api('/admin/v1/abnormal');
  $('abnormal').innerHTML='<tr><th>kind</th><th>reference</th><th>detail</th><th>since</th></tr>'+
    a.items.map(i=>`<tr><td>${esc(i.kind)}</td><td><code>${esc(i.reference)}</code></td><td>${esc(i.detail)}</td><td>${esc(i.created_at)}</td></tr>`).join('');
  const st=$('status').value;
  const e=await api('/admin/v1/events'+(st?'?status='+st:''));
  $('events').innerHTML='<tr><th>event</th><th>type</th><th>status</th><th>attempts</th><th>last answer</th><th></th></tr>'+
    e.items.map(i=>`<tr><td><code>${esc(i.id)}</code></td><td>${esc(i.type)}</td><td>${esc(i.delivery_status)}</td><td>${i.attempts}</td>
    <td>${esc(i.last_status??'')} ${esc(i.last_error??'')}</td><td><button data-id="${esc(i.id)}">resend</button></td></tr>`).join('');
  document.querySelectorAll('#events button').forEach(b=>b.onclick=async()=>{await api(`/admin/v1/events/${b.dataset.id}/resend`,'POST');load()});
}
$('save').onclick=()=>{sessionStorage.setItem('payonce-admin',$('token').value);load()};
$('status').onchange=load;
$('resendAll').onclick=async()=>{await api('/admin/v1/events/resend-failed','POST');load()};
if($('token').value)load();
"#,
    )
}
