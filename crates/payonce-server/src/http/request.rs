//! One struct per request body: the struct is both what reads the body and what the OpenAPI
//! document shows (`#[derive(Deserialize, ToSchema)]`).
//!
//! serde stops at the first error, but a client is told EVERY problem of a body by name (one
//! 400 `validation_failed` listing them all). So each field is a [`Checked`] of a newtype that
//! validates itself ([`Field::check`]): deserializing it never fails, it holds the valid value,
//! the message saying why the value is not one, or nothing (absent or `null`). The request's
//! own `validate` then takes its fields in order through [`Problems`] — which collects the
//! messages, says `is required` of a missing required field — adds the cross-field rules
//! (a merchant number or a payer_ref; a JSAPI prepay needs `payer.openid`), and returns the
//! valid request or the one 400.
//!
//! Before serde sees the body, `http::body` has refused what is not one JSON object without a
//! key given twice (strict JSON), and [`Body`] has taken out the keys the struct does not
//! name: each is reported as an `unknown field` after the others, sorted, as before. The
//! struct keeps `deny_unknown_fields` for the document (`additionalProperties: false`). The
//! constraints the document shows (`#[schema(...)]` on each field) are the ones the newtypes
//! check; `tests/api/openapi.rs` and schemathesis hold the two together.

use crate::error::{ApiError, FieldError};
use crate::http::body::JsonObject;
use crate::state::AppState;
use axum::extract::{FromRequest, Request};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

/// A field's value as the client sent it.
pub enum Checked<T> {
    /// Not sent, or `null`.
    Absent,
    Valid(T),
    /// Why the value sent is not one (the message of `errors[]`).
    Invalid(String),
}

/// Why a value sent for a field is not one: the `message` of its `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid(message.to_owned())
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid(message)
    }
}

/// A field type that validates itself from the JSON value sent (never `null`).
pub trait Field: Sized {
    fn check(v: Value) -> Result<Self, Invalid>;
}

impl<'de, T: Field> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_option`: a missing field and `null` both read as `None`.
        Ok(match Option::<Value>::deserialize(d)? {
            None => Checked::Absent,
            Some(v) => match T::check(v) {
                Ok(t) => Checked::Valid(t),
                Err(Invalid(m)) => Checked::Invalid(m),
            },
        })
    }
}

/// A request body read into `T`, with the keys `T` does not name (reported by `Problems`).
pub struct Body<T> {
    pub fields: T,
    pub unknown: Vec<String>,
}

impl<T: DeserializeOwned> Body<T> {
    pub fn read(mut map: Map<String, Value>) -> Result<Self, ApiError> {
        let known = field_names::<T>();
        let mut unknown: Vec<String> = map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        unknown.sort();
        for k in &unknown {
            map.remove(k);
        }
        // Every field is a `Checked`, which reads any value: this cannot fail once the unknown
        // keys are out; said as the body's problem if it ever did.
        let fields = serde_json::from_value(Value::Object(map))
            .map_err(|e| ApiError::field("body", e.to_string()))?;
        Ok(Body { fields, unknown })
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let JsonObject(map) = JsonObject::from_request(req, state).await?;
        Body::read(map)
    }
}

/// Collects the problems of one body, field by field, in the order `validate` takes them.
pub struct Problems {
    errors: Vec<FieldError>,
    unknown: Vec<String>,
}

impl Problems {
    pub fn new(unknown: Vec<String>) -> Self {
        Problems {
            errors: Vec::new(),
            unknown,
        }
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// The value of an optional field, or `None` (absent, or its problem noted).
    pub fn optional<T>(&mut self, name: &str, v: Checked<T>) -> Option<T> {
        match v {
            Checked::Absent => None,
            Checked::Valid(t) => Some(t),
            Checked::Invalid(m) => {
                self.error(name, m);
                None
            }
        }
    }

    /// The value of a required field, or `None` with its problem noted.
    pub fn required<T>(&mut self, name: &str, v: Checked<T>) -> Option<T> {
        if matches!(v, Checked::Absent) {
            self.error(name, "is required");
        }
        self.optional(name, v)
    }

    /// Refuses fields nobody asked for — a typo (`ammount`) must not silently fall back to a
    /// default — after the others; then the one 400 listing every problem, if there is any.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for k in std::mem::take(&mut self.unknown) {
            self.error(&k, "unknown field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

/// A string of 1..=max characters, printable (no control characters).
pub fn text(v: Value, max: usize) -> Result<String, Invalid> {
    match v {
        Value::String(s) => {
            let n = s.chars().count();
            if n == 0 || n > max {
                Err(Invalid(format!("must be 1 to {max} characters")))
            } else if s.chars().any(char::is_control) {
                Err("must not contain control characters".into())
            } else {
                Ok(s)
            }
        }
        _ => Err("must be a string".into()),
    }
}

/// An integer within [min, max]. JSON has numbers, not integers: 4990.0 is the integer 4990 (as
/// JSON Schema says), while 4990.5 is not one.
pub fn integer(v: Value, min: i64, max: i64) -> Result<i64, Invalid> {
    let Value::Number(n) = v else {
        return Err("must be an integer".into());
    };
    match n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    }) {
        Some(v) if v >= min && v <= max => Ok(v),
        Some(_) => Err(format!("must be between {min} and {max}").into()),
        None => Err("must be an integer".into()),
    }
}

/// A JSON object of at most `max_bytes` bytes as JSON.
pub fn object(v: Value, max_bytes: usize) -> Result<Map<String, Value>, Invalid> {
    match v {
        Value::Object(m) => {
            if serde_json::to_string(&m)
                .map(|s| s.len())
                .unwrap_or(usize::MAX)
                > max_bytes
            {
                Err(Invalid(format!(
                    "must be at most {max_bytes} bytes of JSON"
                )))
            } else {
                Ok(m)
            }
        }
        _ => Err("must be an object".into()),
    }
}

/// A printable string of 1..=MAX characters, with no other rule.
pub struct Text<const MAX: usize>(pub String);

impl<const MAX: usize> Field for Text<MAX> {
    fn check(v: Value) -> Result<Self, Invalid> {
        text(v, MAX).map(Text)
    }
}

/// An http(s) URL of at most MAX characters (`notify_url`, `return_url`).
pub struct HttpUrl<const MAX: usize>(pub String);

impl<const MAX: usize> Field for HttpUrl<MAX> {
    fn check(v: Value) -> Result<Self, Invalid> {
        let u = text(v, MAX)?;
        if u.starts_with("https://") || u.starts_with("http://") {
            Ok(HttpUrl(u))
        } else {
            Err("must be an http(s) URL".into())
        }
    }
}

/// A JSON object of at most MAX bytes (`metadata`, `payer`).
pub struct Object<const MAX: usize>(pub Map<String, Value>);

impl<const MAX: usize> Field for Object<MAX> {
    fn check(v: Value) -> Result<Self, Invalid> {
        object(v, MAX).map(Object)
    }
}

/// A business's own number for an order or a refund: 1 to 64 of letters, digits and
/// `- _ . : | *` (what every channel takes in its out_trade_no).
pub struct MerchantNo(pub String);

impl Field for MerchantNo {
    fn check(v: Value) -> Result<Self, Invalid> {
        let n = text(v, 64)?;
        if n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:|*".contains(&b))
        {
            Ok(MerchantNo(n))
        } else {
            Err("may contain only letters, digits and - _ . : | *".into())
        }
    }
}

/// An amount in minor units: 1 to `MAX_MINOR`.
pub struct Amount(pub i64);

impl Field for Amount {
    fn check(v: Value) -> Result<Self, Invalid> {
        integer(v, 1, payonce_core::money::MAX_MINOR).map(Amount)
    }
}

/// The names of the fields a struct reads (serde's derive passes them to `deserialize_struct`;
/// a deserializer that only records them, then stops, reads them out).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        amount: Checked<Amount>,
        note: Checked<Text<4>>,
    }

    fn read(v: Value) -> Result<(), Vec<(String, String)>> {
        let Value::Object(map) = v else { panic!() };
        let body = Body::<Probe>::read(map).unwrap();
        let mut p = Problems::new(body.unknown);
        p.required("amount", body.fields.amount);
        p.optional("note", body.fields.note);
        p.finish()
            .map_err(|e| e.errors.into_iter().map(|e| (e.field, e.message)).collect())
    }

    #[test]
    fn every_problem_is_named_and_unknown_fields_come_last() {
        assert_eq!(field_names::<Probe>(), &["amount", "note"]);
        assert!(read(json!({"amount": 5, "note": null})).is_ok());
        assert!(read(json!({"amount": 5.0})).is_ok());
        let got = read(json!({"zz": 1, "note": "too long", "aa": 2})).unwrap_err();
        let want = [
            ("amount", "is required"),
            ("note", "must be 1 to 4 characters"),
            ("aa", "unknown field"),
            ("zz", "unknown field"),
        ];
        assert_eq!(
            got,
            want.map(|(f, m)| (f.to_owned(), m.to_owned())).to_vec()
        );
        let got = read(json!({"amount": "1", "note": "a\u{0}"})).unwrap_err();
        assert_eq!(got[0].1, "must be an integer");
        assert_eq!(got[1].1, "must not contain control characters");
    }
}
