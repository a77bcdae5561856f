//! The sandbox connector: payonce's side of the sandbox protocol.

use super::protocol::{self, CreateOrder, Created, ErrorBody, OrderView, PaymentNotification};
use crate::secret::SecretBytes;
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply,
    Prepaid, PrepayRequest, TradeState, classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;

pub struct SandboxClient {
    gateway: String,
    key: SecretBytes,
    http: reqwest::Client,
    clock: crate::SharedClock,
}

/// The path the sandbox signs notifications for (our endpoint's path).
pub const NOTIFY_PATH: &str = "/notify/sandbox";

impl SandboxClient {
    pub fn new(
        gateway: String,
        key: SecretBytes,
        http: reqwest::Client,
        clock: crate::SharedClock,
    ) -> Self {
        SandboxClient {
            gateway: gateway.trim_end_matches('/').to_owned(),
            key,
            http,
            clock,
        }
    }

    fn now_secs(&self) -> i64 {
        self.clock.now().0.div_euclid(1000)
    }

    /// Sends a signed request; returns the status and the body once the response signature
    /// checks out. An unsigned or mis-signed answer is ambiguous: it may not be the gateway's.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ChannelError> {
        let body = body.unwrap_or_default();
        let ts = self.now_secs();
        let sig = protocol::sign(&self.key, ts, method.as_str(), path, &body);
        let resp = self
            .http
            .request(method.clone(), format!("{}{}", self.gateway, path))
            .header(protocol::TS_HEADER, ts.to_string())
            .header(protocol::SIG_HEADER, sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?
            .to_vec();
        if status >= 500 {
            return Err(ChannelError::Ambiguous(format!(
                "gateway answered {status}"
            )));
        }
        let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        protocol::verify(
            &self.key,
            hv(protocol::TS_HEADER),
            hv(protocol::SIG_HEADER),
            method.as_str(),
            path,
            &bytes,
            self.now_secs(),
        )
        .map_err(|e| ChannelError::Ambiguous(format!("response signature rejected: {e:?}")))?;
        Ok((status, bytes))
    }

    fn error_of(status: u16, body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
            code: format!("HTTP_{status}"),
            message: "unparseable error".into(),
        })
    }
}

#[async_trait]
impl Channel for SandboxClient {
    fn name(&self) -> ChannelName {
        ChannelName::Sandbox
    }

    #[tracing::instrument(skip_all, fields(channel = "sandbox", out_trade_no = %req.out_trade_no))]
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let body = CreateOrder {
            out_trade_no: req.out_trade_no.clone(),
            amount: req.amount.minor,
            currency: req.amount.currency.to_string(),
            description: req.subject.clone(),
            notify_url: req.notify_url.clone(),
            time_expire: req.expires_at.0,
        };
        let (status, bytes) = self
            .call(
                reqwest::Method::POST,
                "/sandbox/v1/orders",
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Err(ChannelError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        let created: Created = serde_json::from_slice(&bytes)
            .map_err(|e| ChannelError::Ambiguous(format!("bad prepay answer: {e}")))?;
        Ok(Prepaid {
            // The code, and the sandbox's page where a person pays it by hand.
            credential: serde_json::json!({ "code_url": created.code_url, "pay_url": format!("{}/sandbox/v1/pay/{}", self.gateway, req.out_trade_no) }),
            credential_expires_at: Timestamp(created.time_expire),
            payable_until: Timestamp(created.time_expire),
            channel_data: None,
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = format!("/sandbox/v1/orders/{out_trade_no}");
        let (status, bytes) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == 404 {
            return Ok(TradeState::Absent);
        }
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Err(ChannelError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        let v: OrderView = serde_json::from_slice(&bytes)
            .map_err(|e| ChannelError::Ambiguous(format!("bad query answer: {e}")))?;
        Ok(match v.trade_state.as_str() {
            protocol::SUCCESS => TradeState::Paid {
                amount: v.amount,
                channel_trade_no: v.trade_no,
                paid_at: Timestamp(v.paid_at.unwrap_or_default()),
            },
            protocol::NOTPAY => TradeState::Unpaid,
            protocol::CLOSED => TradeState::Closed,
            other => {
                return Err(ChannelError::Ambiguous(format!(
                    "unknown trade_state {other}"
                )));
            }
        })
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = format!("/sandbox/v1/orders/{out_trade_no}/close");
        let (status, bytes) = self.call(reqwest::Method::POST, &path, None).await?;
        match status {
            200 | 204 => Ok(CloseAnswer::Closed),
            404 => Ok(CloseAnswer::Absent),
            _ => {
                let e = Self::error_of(status, &bytes);
                match e.code.as_str() {
                    "ORDER_PAID" => Ok(CloseAnswer::AlreadyPaid),
                    "ORDER_CLOSED" => Ok(CloseAnswer::Closed),
                    _ => Err(ChannelError::Refused {
                        code: e.code,
                        message: e.message,
                    }),
                }
            }
        }
    }

    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError> {
        let body = serde_json::json!({
            "out_trade_no": req.order.out_trade_no, "out_refund_no": req.out_refund_no, "amount": req.amount.minor,
        });
        let (status, bytes) = self
            .call(
                reqwest::Method::POST,
                "/sandbox/v1/refunds",
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Ok((
                RefundState::Failed(format!("{}: {}", e.code, e.message)),
                None,
            ));
        }
        Ok((refund_state(&bytes)?, None))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let (status, bytes) = self
            .call(
                reqwest::Method::GET,
                &format!("/sandbox/v1/refunds/{}", r.out_refund_no),
                None,
            )
            .await?;
        match status {
            200 => refund_state(&bytes),
            404 => Ok(RefundState::Absent),
            _ => {
                let e = Self::error_of(status, &bytes);
                Err(ChannelError::Refused {
                    code: e.code,
                    message: e.message,
                })
            }
        }
    }

    async fn download_bill(&self, date: &str) -> Result<crate::bill::BillDownload, ChannelError> {
        let (status, bytes) = self
            .call(
                reqwest::Method::GET,
                &format!("/sandbox/v1/statement?date={date}"),
                None,
            )
            .await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Err(ChannelError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        // The answer is signed like every sandbox answer (checked in `call`); stored compressed.
        Ok(crate::bill::BillDownload::Bill(
            crate::bill::DownloadedBill {
                merchant_account: "sandbox".into(),
                bill_type: "statement".into(),
                format: crate::bill::BillFormat::SandboxGzip,
                content: crate::bill::gzip(&bytes),
            },
        ))
    }

    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Notification, NotifyError> {
        let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        protocol::verify(
            &self.key,
            hv(protocol::TS_HEADER),
            hv(protocol::SIG_HEADER),
            "POST",
            NOTIFY_PATH,
            body,
            now.0 / 1000,
        )
        .map_err(|e| match e {
            protocol::VerifyError::Stale => NotifyError::Stale,
            protocol::VerifyError::Missing | protocol::VerifyError::Bad => {
                NotifyError::BadSignature
            }
        })?;
        let n: PaymentNotification =
            serde_json::from_slice(body).map_err(|e| NotifyError::Malformed(e.to_string()))?;
        if n.event_type != protocol::EVENT_PAID {
            return Err(NotifyError::Malformed(format!(
                "unsupported event_type {}",
                n.event_type
            )));
        }
        Ok(Notification {
            event_id: n.id,
            out_trade_no: n.out_trade_no,
            state: TradeState::Paid {
                amount: n.amount,
                channel_trade_no: Some(n.trade_no),
                paid_at: Timestamp(n.paid_at),
            },
            refund: None,
            content: None,
        })
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply {
            status: 200,
            content_type: "application/json",
            body: r#"{"code":"SUCCESS"}"#.into(),
        }
    }

    fn notify_nack(&self, reason: &str) -> NotifyReply {
        NotifyReply {
            status: 400,
            content_type: "application/json",
            body: serde_json::json!({"code": "FAIL", "message": reason}).to_string(),
        }
    }
}

fn refund_state(bytes: &[u8]) -> Result<RefundState, ChannelError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
    Ok(match v["status"].as_str() {
        Some("SUCCESS") => RefundState::Succeeded,
        Some("PROCESSING") => RefundState::Processing,
        other => RefundState::Failed(format!("{other:?}")),
    })
}
