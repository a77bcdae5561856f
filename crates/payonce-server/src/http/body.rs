//! Reading request bodies at the edge: a JSON object (strict: no key given twice), refused as
//! problem+json otherwise; `http::request` reads it into the request's struct.

use crate::error::ApiError;
pub use crate::gateway::body_limit::{TooLarge, read_limited};
use crate::state::AppState;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

/// A JSON object body. Not sent as JSON → 415; over the size limit → 413; not JSON, not an
/// object, or a key given twice → 400.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = state.config.body_limit;
        let bytes = read_limited(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::payload_too_large(limit))?;
        parse_object(&bytes)
    }
}

/// Query parameters as axum reads them, but refused as problem+json (400 `validation_failed`)
/// rather than axum's plain-text rejection.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| {
                ApiError::field(
                    "query",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                        .to_owned(),
                )
            })
    }
}

/// `Content-Type: application/json` (parameters allowed), or a `+json` type.
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

pub fn parse_object(bytes: &[u8]) -> Result<JsonObject, ApiError> {
    match strict_json(bytes) {
        Ok(Value::Object(m)) => Ok(JsonObject(m)),
        Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::field("body", format!("malformed JSON: {e}"))),
    }
}

/// Strict JSON (a key given twice is an error): in `payonce_core::json`, where the fuzz target
/// reaches it without the server's dependency tree.
pub use payonce_core::json::strict as strict_json;

#[cfg(test)]
mod tests {
    use super::strict_json;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(strict_json(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        assert!(strict_json(br#"{"amount":1,"amount":100000}"#).is_err());
        assert!(strict_json(br#"{"a":{"x":1,"x":2}}"#).is_err());
        assert!(strict_json(br#"[{"x":1,"x":2}]"#).is_err());
        assert!(strict_json(br#"{"a":1} trailing"#).is_err());
        assert_eq!(strict_json(br#"{"n":1.5,"s":"\u00e9"}"#).unwrap()["s"], "é");
    }
}
