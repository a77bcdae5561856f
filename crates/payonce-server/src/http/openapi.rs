//! `GET /openapi.json` (OpenAPI 3.1) and `GET /docs`, a self-contained page that renders it.
//! The document is generated: each handler's `#[utoipa::path]` and the typed request and
//! answer structs make the paths and schemas (registered with the route itself, through
//! `utoipa_axum`), and `finish` adds what the layers around the routes answer. schemathesis
//! (`scripts/schemathesis`) then holds the live server to it.

use axum::response::Html;

use crate::state::AppState;
use payonce_core::PayMethod;
use serde_json::{Map, Value, json};

/// Completes the document the routes generated (`#[utoipa::path]` on each handler) with what
/// the layers around them add, so that every status a route can answer is listed: the layers
/// are written once, and so is their documentation.
pub fn finish(doc: utoipa::openapi::OpenApi, state: &AppState) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "payonce",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Payment center: never charge twice, never lose a payment. Money is integer minor units (fen). \
            Errors are RFC 9457 problem+json with a stable `code`.",
    });
    doc["security"] = json!([{"appSecret": []}]);
    let components = doc["components"].as_object_mut().expect("components");
    components.insert(
        "securitySchemes".into(),
        json!({
            "appSecret": {"type": "http", "scheme": "bearer", "description": "the app secret from `payonce apps create`"},
            "adminToken": {"type": "http", "scheme": "bearer", "description": "PAYONCE_ADMIN_TOKEN"},
            "metricsToken": {"type": "http", "scheme": "bearer", "description": "--metrics-token, when set"},
        }),
    );
    components["schemas"]["Prepay"] = prepay_schema(state);
    // An order needs a merchant number or a payer_ref (the submission guard's key): a body
    // with neither is not valid, and the schema says so.
    components["schemas"]["CreateOrder"]["anyOf"] = json!([
        {"required": ["merchant_order_no"], "properties": {"merchant_order_no": {"type": "string"}}},
        {"required": ["payer_ref"], "properties": {"payer_ref": {"type": "string"}}}
    ]);
    for (path, item) in doc["paths"].as_object_mut().expect("paths") {
        for (method, op) in item.as_object_mut().expect("path item") {
            add_layer_answers(path, method, op);
            add_links(op);
        }
    }
    doc
}

/// OpenAPI links: where the id an answer carries can be used next (clients and stateful
/// testers follow them from a created order to its prepay, close and refunds).
fn add_links(op: &mut Value) {
    let (statuses, pointer, targets): (&[&str], &str, &[&str]) = match op["operationId"].as_str() {
        Some("create_order" | "find_order") => (
            &["200", "201"],
            "$response.body#/id",
            &["get_order", "prepay_order", "close_order", "create_refund"],
        ),
        Some("create_refund") => (&["200", "201"], "$response.body#/id", &["get_refund"]),
        Some("list_events") => (
            &["200"],
            "$response.body#/items/0/id",
            &["get_event", "resend_event"],
        ),
        _ => return,
    };
    for status in statuses {
        let Some(resp) = op["responses"].get_mut(*status) else {
            continue;
        };
        let links: Map<String, Value> = targets
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    json!({"operationId": t, "parameters": {"id": pointer}}),
                )
            })
            .collect();
        if !links.is_empty() {
            resp["links"] = Value::Object(links);
        }
    }
}

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// Adds `status` to the operation's answers, or its description to an existing entry.
fn answer(op: &mut Value, status: &str, description: &str) {
    let responses = op["responses"].as_object_mut().expect("responses");
    match responses.get_mut(status) {
        Some(existing) => {
            let d = existing["description"].as_str().unwrap_or_default();
            if !d.contains(description) {
                existing["description"] = json!(format!("{d} | {description}"));
            }
        }
        None => {
            responses.insert(status.into(), problem(description));
        }
    }
}

/// The answers of the layers in `http::router`, by the routes they wrap.
fn add_layer_answers(path: &str, method: &str, op: &mut Value) {
    let business = path.starts_with("/v1/");
    if business {
        // rate_limit: authenticates first, then takes a token from the app's bucket.
        answer(op, "401", "unauthorized");
        answer(op, "429", "rate_limited (Retry-After)");
        if method == "post" {
            // idempotency::layer
            answer(op, "400", "validation_failed (Idempotency-Key)");
            answer(
                op,
                "409",
                "request_in_progress (the same Idempotency-Key is still being processed)",
            );
            answer(op, "413", "payload_too_large");
            answer(op, "422", "idempotency_key_reused");
        }
    }
    if path.starts_with("/admin/") {
        // admin::gate: the admin token against the address's failure budget.
        answer(op, "401", "unauthorized");
        answer(
            op,
            "429",
            "rate_limited: too many wrong admin tokens from this address (Retry-After), the right one refused too",
        );
    }
    let has_query = op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    if has_query {
        // http::body::Query
        answer(op, "400", "validation_failed (query parameters)");
    }
    if op.get("requestBody").is_some() {
        // JsonObject: application/json only, bounded, strict.
        answer(op, "400", "validation_failed (errors[] names each field)");
        answer(op, "413", "payload_too_large");
        answer(op, "415", "unsupported_media_type");
    }
    // read_whole_request: headers and body within the request timeout.
    answer(
        op,
        "408",
        "request_timeout (the request did not arrive whole in time; the connection is closed)",
    );
    // shed_load, and any database call.
    answer(
        op,
        "503",
        "overloaded | database_unavailable (Retry-After); retrying is safe",
    );
}

/// The prepay body, as this server is configured: for each channel, the methods it takes; a
/// WeChat JSAPI payment names its payer.
fn prepay_schema(state: &AppState) -> Value {
    let mut variants = Vec::new();
    for channel in payonce_core::ChannelName::ALL
        .into_iter()
        .filter(|c| state.channels.get(*c).is_some())
    {
        for (i, method) in channel.methods().iter().enumerate() {
            let mut properties = Map::new();
            properties.insert("channel".into(), json!({"const": channel.as_str()}));
            properties.insert("method".into(), json!({"const": method.as_str()}));
            let mut required = vec!["channel"];
            if i > 0 {
                required.push("method");
            }
            if *method == PayMethod::Jsapi {
                properties.insert(
                    "payer".into(),
                    json!({"type": "object", "required": ["openid"],
                           "properties": {"openid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}},
                           "description": "the payer's openid under this merchant's WeChat app"}),
                );
                required.push("payer");
            } else {
                properties.insert("payer".into(), json!({"type": ["object", "null"]}));
            }
            variants.push(json!({
                "type": "object",
                "title": format!("{channel} {method}"),
                "additionalProperties": false,
                "required": required,
                "properties": properties,
            }));
        }
    }
    json!({
        "description": "The channel and method to pay with (the method defaults to the channel's first); only the channels configured on this server.",
        "anyOf": variants,
    })
}

/// `GET /openapi.json`: the document, as `finish` made it when the router was built.
pub fn serve(doc: &Value) -> axum::routing::MethodRouter<AppState> {
    let bytes = axum::body::Bytes::from(serde_json::to_vec(doc).expect("the document serializes"));
    axum::routing::get(move || {
        let bytes = bytes.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
        }
    })
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
        [(
            axum::http::header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        )],
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
