//! The names of payment channels and their payment methods, as the API spells them.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Wechatpay,
    Alipay,
    Unionpay,
    Sandbox,
}

impl ChannelName {
    pub const ALL: [ChannelName; 4] = [
        ChannelName::Wechatpay,
        ChannelName::Alipay,
        ChannelName::Unionpay,
        ChannelName::Sandbox,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelName::Wechatpay => "wechatpay",
            ChannelName::Alipay => "alipay",
            ChannelName::Unionpay => "unionpay",
            ChannelName::Sandbox => "sandbox",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ParseError::new("unknown channel; expected wechatpay, alipay, unionpay or sandbox")
            })
    }

    /// Whether the channel creates its order at prepay. Where it does (WeChat Pay, sandbox), a
    /// query that finds nothing after the call timeout proves the prepay never happened. Alipay
    /// precreate and UnionPay only create a trade once the payer acts, so "absent" proves nothing.
    pub fn creates_order_at_prepay(&self) -> bool {
        matches!(self, ChannelName::Wechatpay | ChannelName::Sandbox)
    }

    /// The methods this channel offers.
    pub fn methods(&self) -> &'static [PayMethod] {
        match self {
            ChannelName::Wechatpay => &[PayMethod::Native, PayMethod::Jsapi],
            ChannelName::Alipay => &[PayMethod::Native],
            ChannelName::Unionpay => &[PayMethod::Gateway],
            ChannelName::Sandbox => &[PayMethod::Native],
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayMethod {
    /// A QR code the payer scans (WeChat native, Alipay precreate, sandbox).
    Native,
    /// WeChat in-app payment: the front end needs the signed `paySign` package.
    Jsapi,
    /// UnionPay's front-end gateway form.
    Gateway,
}

impl PayMethod {
    pub const ALL: [PayMethod; 3] = [PayMethod::Native, PayMethod::Jsapi, PayMethod::Gateway];

    pub fn as_str(&self) -> &'static str {
        match self {
            PayMethod::Native => "native",
            PayMethod::Jsapi => "jsapi",
            PayMethod::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "native" => Ok(PayMethod::Native),
            "jsapi" => Ok(PayMethod::Jsapi),
            "gateway" => Ok(PayMethod::Gateway),
            _ => Err(ParseError::new("unknown method")),
        }
    }
}

impl fmt::Display for PayMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
