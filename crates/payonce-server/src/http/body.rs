//! Parsing request bodies at the edge: JSON objects with every field checked and every problem
//! reported by name, rather than serde's first error.

use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

/// A JSON object body. Over the size limit → 413; not JSON or not an object → 400.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| ApiError::payload_too_large(limit))?;
        parse_object(&bytes)
    }
}

pub fn parse_object(bytes: &Bytes) -> Result<JsonObject, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(JsonObject(m)),
        Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::field("body", format!("malformed JSON: {e}"))),
    }
}

/// Collects field errors while reading a JSON object.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Fields { map, errors: Vec::new() }
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
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
            Some(Value::Number(n)) => match n.as_i64() {
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
                if serde_json::to_string(&m).map(|s| s.len()).unwrap_or(usize::MAX) > max_bytes {
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
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::validation(self.errors)) }
    }
}
