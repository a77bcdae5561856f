//! Identifiers: UUID v7 (time-ordered, so indexes stay append-mostly) behind newtypes.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id: prefix plus the 32-hex-digit simple form of a UUID v7.
            pub fn new() -> Self {
                $name(format!(concat!($prefix, "{}"), uuid::Uuid::now_v7().simple()))
            }

            /// Accepts only what `new` produces, so a path segment cannot smuggle anything else.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                let rest = s
                    .strip_prefix($prefix)
                    .ok_or_else(|| ParseError::new(concat!("must start with ", $prefix)))?;
                if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(ParseError::new("malformed id"))
                }
            }

            /// For values read back from our own database.
            pub fn from_trusted(s: String) -> Self {
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

uuid_id!(/// A business system registered with payonce.
    AppId, "app_");
uuid_id!(/// A payment order.
    OrderId, "ord_");
uuid_id!(/// One channel order made for a payment order.
    AttemptId, "att_");
uuid_id!(/// A refund.
    RefundId, "rfd_");
uuid_id!(/// A business event in the outbox; stable across every delivery retry.
    EventId, "evt_");

/// The merchant order number a channel sees. WeChat Pay allows at most 32 characters of
/// `[0-9A-Za-z_-|*]`, so this is the attempt's UUID v7 in simple form: unique per channel,
/// never reused, and it tells nothing about the business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutTradeNo(String);

impl OutTradeNo {
    pub const MAX_LEN: usize = 32;

    pub fn for_attempt(attempt: &AttemptId) -> Self {
        OutTradeNo(attempt.as_str()["att_".len()..].to_owned())
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ParseError::new("out_trade_no must be 1 to 32 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
        {
            return Err(ParseError::new(
                "out_trade_no has a character channels refuse",
            ));
        }
        Ok(OutTradeNo(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutTradeNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_fits_wechat_limit() {
        let a = AttemptId::new();
        let no = OutTradeNo::for_attempt(&a);
        assert_eq!(no.as_str().len(), 32);
        assert!(OutTradeNo::parse(no.as_str()).is_ok());
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let o = OrderId::new();
        assert_eq!(OrderId::parse(o.as_str()).unwrap(), o);
        assert!(OrderId::parse("ord_xyz").is_err());
        assert!(OrderId::parse(&o.as_str().replace("ord_", "att_")).is_err());
        assert!(OrderId::parse("ord_../../etc/passwd00000000000000000").is_err());
    }
}
