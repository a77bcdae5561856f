//! Money as integer minor units with a currency; no floats anywhere near an amount.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// ISO 4217 code. payonce's channels are Chinese, so CNY is what they accept today, but the
/// type keeps the currency next to every amount so a mix-up is a type error, not a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const CNY: Currency = Currency(*b"CNY");

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(|c| c.is_ascii_uppercase()) {
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(ParseError::new(
                "must be a three-letter upper-case ISO 4217 code",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).expect("ascii")
    }
}

impl TryFrom<String> for Currency {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in the currency's minor unit (fen for CNY). Always positive for orders and
/// refunds: zero or negative amounts are rejected at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

/// The largest single amount payonce accepts: 10 million yuan in fen. Far above any channel's
/// per-transaction limit, far below anything that could overflow when summed.
pub const MAX_MINOR: i64 = 1_000_000_000;

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Result<Self, ParseError> {
        if minor <= 0 {
            return Err(ParseError::new("must be a positive integer in minor units"));
        }
        if minor > MAX_MINOR {
            return Err(ParseError::new(format!("must be at most {MAX_MINOR}")));
        }
        Ok(Money { minor, currency })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        assert!(Money::new(0, Currency::CNY).is_err());
        assert!(Money::new(-1, Currency::CNY).is_err());
        assert!(Money::new(MAX_MINOR + 1, Currency::CNY).is_err());
        assert_eq!(Money::new(1, Currency::CNY).unwrap().minor, 1);
    }

    #[test]
    fn currency_codes_are_strict() {
        assert!(Currency::parse("CNY").is_ok());
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("CNYY").is_err());
    }
}
