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

    /// For values read back from our own database (or made by our own code).
    pub fn from_trusted(s: String) -> Self {
        OutTradeNo(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The refund number a channel sees (`out_refund_no`). Derived, never chosen: from the refund's
/// id for a business refund, from the attempt's `out_trade_no` for the automatic refund of a
/// duplicate, so a retry by any instance always names the same refund.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RefundNo(String);

impl RefundNo {
    /// A business refund's number: its id's 32 hex digits (WeChat allows 64 characters).
    pub fn for_refund(id: &RefundId) -> Self {
        RefundNo(id.as_str()["rfd_".len()..].to_owned())
    }

    /// The number of the automatic refund of a duplicate payment: `D` and the attempt's number
    /// past its first character, so however often it is retried the channel sees one refund.
    pub fn for_duplicate(out_trade_no: &OutTradeNo) -> Self {
        let s = out_trade_no.as_str();
        RefundNo(format!("D{}", &s[1.min(s.len())..]))
    }

    /// For values read back from our own database.
    pub fn from_trusted(s: String) -> Self {
        RefundNo(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Channel numbers are compared with what a channel or a person typed, and looked up by it.
macro_rules! str_like {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    )*};
}

str_like!(OutTradeNo, RefundNo);

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
    fn refund_numbers_are_derived() {
        let no = OutTradeNo::from_trusted("0190abc".into());
        assert_eq!(RefundNo::for_duplicate(&no), "D190abc");
        assert_eq!(
            RefundNo::for_duplicate(&OutTradeNo::from_trusted(String::new())),
            "D"
        );
        let id = RefundId::new();
        assert_eq!(RefundNo::for_refund(&id).as_str().len(), 32);
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
