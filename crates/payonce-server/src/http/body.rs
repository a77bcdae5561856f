//! Parsing request bodies at the edge: JSON objects with every field checked and every problem
//! reported by name, rather than serde's first error.

use crate::error::{ApiError, FieldError};
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

/// Collects field errors while reading a JSON object.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Fields {
            map,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        match self.map.remove(name) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    /// A string of 1..=max characters, printable (no control characters).
    pub fn string(&mut self, name: &str, max: usize, required: bool) -> Option<String> {
        match self.take(name) {
            None => {
                if required {
                    self.error(name, "is required");
                }
                None
            }
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n == 0 || n > max {
                    self.error(name, format!("must be 1 to {max} characters"));
                    None
                } else if s.chars().any(char::is_control) {
                    self.error(name, "must not contain control characters");
                    None
                } else {
                    Some(s)
                }
            }
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    /// An integer within [min, max].
    pub fn integer(&mut self, name: &str, min: i64, max: i64, required: bool) -> Option<i64> {
        match self.take(name) {
            None => {
                if required {
                    self.error(name, "is required");
                }
                None
            }
            // JSON has numbers, not integers: 4990.0 is the integer 4990 (as JSON Schema
            // says), while 4990.5 is not one.
            Some(Value::Number(n)) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }) {
                Some(v) if v >= min && v <= max => Some(v),
                Some(_) => {
                    self.error(name, format!("must be between {min} and {max}"));
                    None
                }
                None => {
                    self.error(name, "must be an integer");
                    None
                }
            },
            Some(_) => {
                self.error(name, "must be an integer");
                None
            }
        }
    }

    pub fn object(&mut self, name: &str, max_bytes: usize) -> Option<Map<String, Value>> {
        match self.take(name) {
            None => None,
            Some(Value::Object(m)) => {
                if serde_json::to_string(&m)
                    .map(|s| s.len())
                    .unwrap_or(usize::MAX)
                    > max_bytes
                {
                    self.error(name, format!("must be at most {max_bytes} bytes of JSON"));
                    None
                } else {
                    Some(m)
                }
            }
            Some(_) => {
                self.error(name, "must be an object");
                None
            }
        }
    }

    /// Rejects fields nobody asked for: a typo (`ammount`) must not silently fall back to a
    /// default. Returns the collected errors, if any.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut unknown: Vec<String> = self.map.keys().cloned().collect();
        unknown.sort();
        for k in unknown {
            self.error(&k, "unknown field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

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
