//! `GET /openapi.json` (OpenAPI 3.1) and `GET /docs`, a self-contained page that renders it.
//! The document is written here by hand, next to the router; `tests/api/openapi.rs` walks
//! every documented operation against the live router, so the two cannot drift apart.

use axum::Json;
use axum::response::Html;
use serde_json::{Value, json};

fn problem(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

const IDEMPOTENCY: &str = "Idempotency-Key";

/// The whole document.
pub fn document() -> Value {
    let idem = json!({"name": IDEMPOTENCY, "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "Replays the first complete answer verbatim (with Idempotent-Replayed: true) for ≥ 24 h; another body → 422."});
    let admin = json!([{"adminToken": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "payonce", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Payment center: never charge twice, never lose a payment. Money is integer minor units (fen)."},
        "security": [{"appSecret": []}],
        "paths": {
            "/v1/orders": {
                "post": {"summary": "Create a payment order (same merchant_order_no and content → 200 with the existing order)",
                         "parameters": [idem], "requestBody": body("CreateOrder"),
                         "responses": {"201": ok("created", "Order"), "200": ok("existing order", "Order"), "400": problem("validation_failed"),
                                       "401": problem("unauthorized"), "409": problem("merchant_order_no_conflict"), "413": problem("payload_too_large"),
                                       "422": problem("idempotency_key_reused")}},
                "get": {"summary": "Find an order by the business's number",
                        "parameters": [{"name": "merchant_order_no", "in": "query", "required": true, "schema": {"type": "string"}}],
                        "responses": {"200": ok("the order", "Order"), "404": problem("not_found")}}
            },
            "/v1/orders/{id}": {"get": {"summary": "An order with its attempts and refunds; ?sync=true asks the channel first",
                "parameters": [id_param("id"), {"name": "sync", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": ok("the order", "Order"), "404": problem("not_found")}}},
            "/v1/orders/{id}/prepay": {"post": {"summary": "Get a payment credential (the same one while it is valid)",
                "parameters": [id_param("id"), idem], "requestBody": body("Prepay"),
                "responses": {"200": ok("credential", "Prepaid"), "400": problem("validation_failed"), "404": problem("not_found"),
                              "409": problem("order_already_paid | order_closed | request_in_progress"), "502": problem("channel_unavailable"),
                              "503": problem("channel_unavailable")}}},
            "/v1/orders/{id}/close": {"post": {"summary": "Close the order and every open channel order (at the channel first)",
                "parameters": [id_param("id"), idem], "responses": {"200": ok("closed", "Order"), "404": problem("not_found"), "409": problem("order_already_paid")}}},
            "/v1/orders/{id}/refunds": {"post": {"summary": "Refund part or all of a paid order, idempotent by merchant_refund_no",
                "parameters": [id_param("id"), idem], "requestBody": body("CreateRefund"),
                "responses": {"201": ok("created", "Refund"), "200": ok("existing refund", "Refund"), "404": problem("not_found"),
                              "409": problem("order_not_paid | merchant_refund_no_conflict"), "422": problem("refund_exceeds_paid")}}},
            "/v1/refunds/{id}": {"get": {"summary": "A refund", "parameters": [id_param("id")],
                "responses": {"200": ok("the refund", "Refund"), "404": problem("not_found")}}},
            "/notify/{channel}": {"post": {"summary": "Channel notifications (wechatpay, alipay, unionpay, sandbox), answered in the channel's own format",
                "security": [], "parameters": [id_param("channel")], "responses": {"200": {"description": "accepted (channel format)"}, "204": {"description": "accepted (WeChat Pay)"},
                "400": {"description": "refused (channel format); nothing changed"}}}},
            "/admin/v1/abnormal": {"get": {"summary": "What a person must resolve", "security": admin, "responses": {"200": {"description": "items"}}}},
            "/admin/v1/events": {"get": {"summary": "Outbox events and their delivery state", "security": admin,
                "parameters": [{"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "delivered", "failed", "skipped"]}}],
                "responses": {"200": {"description": "items"}}}},
            "/admin/v1/events/{id}": {"get": {"summary": "One event with every delivery attempt", "security": admin, "parameters": [id_param("id")],
                "responses": {"200": {"description": "event"}, "404": problem("not_found")}}},
            "/admin/v1/events/{id}/resend": {"post": {"summary": "Deliver again, same id", "security": admin, "parameters": [id_param("id")],
                "responses": {"200": {"description": "requeued"}, "404": problem("not_found")}}},
            "/admin/v1/events/resend-failed": {"post": {"summary": "Deliver every failed event again", "security": admin, "responses": {"200": {"description": "requeued"}}}},
            "/admin/v1/apps/{id}/rotate-webhook-secret": {"post": {"summary": "New webhook secret; both sign until receivers switch", "security": admin,
                "parameters": [id_param("id")], "responses": {"200": {"description": "the new secret, shown once"}, "404": problem("not_found")}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "The database answers", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/docs": {"get": {"summary": "This document, readable", "security": [], "responses": {"200": {"description": "HTML"}}}},
            "/console": {"get": {"summary": "Operator console over the admin API (the token is typed in the page)", "security": [], "responses": {"200": {"description": "HTML"}}}}
        },
        "components": {
            "securitySchemes": {
                "appSecret": {"type": "http", "scheme": "bearer", "description": "the app secret from `payonce apps create`"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "PAYONCE_ADMIN_TOKEN"}
            },
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "code"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                    "code": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}},
                "CreateOrder": {"type": "object", "additionalProperties": false, "required": ["merchant_order_no", "amount", "currency", "subject"], "properties": {
                    "merchant_order_no": {"type": "string", "maxLength": 64}, "amount": {"type": "integer", "minimum": 1}, "currency": {"const": "CNY"},
                    "subject": {"type": "string", "maxLength": 127}, "expire_in_seconds": {"type": "integer", "minimum": 5, "default": 1800},
                    "notify_url": {"type": "string", "format": "uri"}, "metadata": {"type": "object"}}},
                "Prepay": {"type": "object", "additionalProperties": false, "required": ["channel"], "properties": {
                    "channel": {"enum": ["wechatpay", "alipay", "unionpay", "sandbox"]}, "method": {"enum": ["native", "jsapi", "gateway"]},
                    "payer": {"type": "object", "description": "e.g. {\"openid\": …} for WeChat JSAPI"}}},
                "Prepaid": {"type": "object", "properties": {"attempt_id": {"type": "string"}, "out_trade_no": {"type": "string"}, "channel": {"type": "string"},
                    "method": {"type": "string"}, "credential": {"type": "object"}, "expires_at": {"type": "string", "format": "date-time"}, "reused": {"type": "boolean"}}},
                "CreateRefund": {"type": "object", "additionalProperties": false, "required": ["merchant_refund_no", "amount"], "properties": {
                    "merchant_refund_no": {"type": "string", "maxLength": 64}, "amount": {"type": "integer", "minimum": 1}, "reason": {"type": "string", "maxLength": 80}}},
                "Order": {"type": "object", "properties": {"id": {"type": "string"}, "merchant_order_no": {"type": "string"}, "amount": {"type": "integer"},
                    "currency": {"type": "string"}, "status": {"enum": ["unpaid", "paying", "paid", "closed", "refunded", "partially_refunded"]},
                    "version": {"type": "integer"}, "refunded_amount": {"type": "integer"}, "expires_at": {"type": "string", "format": "date-time"},
                    "attempts": {"type": "array", "items": {"type": "object"}}, "refunds": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}}}},
                "Refund": {"type": "object", "properties": {"id": {"type": "string"}, "order_id": {"type": "string"}, "merchant_refund_no": {"type": ["string", "null"]},
                    "kind": {"enum": ["order", "duplicate"]}, "amount": {"type": "integer"}, "status": {"enum": ["pending", "succeeded", "failed", "unknown"]}}}
            }
        }
    })
}

pub async fn openapi() -> Json<Value> {
    Json(document())
}

/// A page that renders the document with no external assets.
pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html><meta charset="utf-8"><title>payonce API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}code{background:#f3f3f3;padding:0 .3em}
h2{margin-top:1.5em}.m{display:inline-block;min-width:4em;font-weight:bold}</style>
<h1>payonce API</h1><p>Machine-readable: <a href="/openapi.json"><code>/openapi.json</code></a></p><div id="ops">loading…</div>
<script src="/docs.js"></script>"#,
    )
}

/// The page's script, served on its own so the page's CSP can forbid inline script.
pub async fn docs_js() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/javascript; charset=utf-8")],
        r#"fetch('/openapi.json').then(r=>r.json()).then(d=>{
  const out=[`<p>${d.info.description}</p>`];
  for(const [p,ops] of Object.entries(d.paths)) for(const [m,op] of Object.entries(ops)){
    const codes=Object.entries(op.responses||{}).map(([c,r])=>`<code>${c}</code> ${r.description}`).join(' · ');
    out.push(`<h2><span class="m">${m.toUpperCase()}</span><code>${p}</code></h2><p>${op.summary}</p><p>${codes}</p>`);
  }
  document.getElementById('ops').innerHTML=out.join('');
});
"#,
    )
}
