//! The UnionPay connector (front-end gateway consume).

use super::protocol::{self, get, txn_time};
use crate::crypto::{Certificate, RsaSigner};
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply,
    Prepaid, PrepayRequest, TradeState, classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState, SharedClock};
use async_trait::async_trait;
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;

pub struct UnionpayKeys {
    pub mer_id: String,
    pub sign_key: RsaSigner,
    /// The merchant signing certificate's serial, in decimal.
    pub cert_id: String,
    pub root: Certificate,
    pub middle: Option<Certificate>,
    /// Also accept the owner `00040000:SIGN` that older UnionPay TEST certificates carry (the
    /// acp SDK does so in its test environment). Off by default; never in production.
    pub accept_test_owner: bool,
}

pub struct UnionpayClient {
    gateway: String,
    /// The file-transfer host (`https://filedownload.95516.com`), its own `channels.toml` key.
    file_transfer: String,
    keys: UnionpayKeys,
    http: reqwest::Client,
    clock: SharedClock,
}

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

impl UnionpayClient {
    pub fn new(
        gateway: String,
        file_transfer: String,
        keys: UnionpayKeys,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        UnionpayClient {
            gateway: gateway.trim_end_matches('/').to_owned(),
            file_transfer: file_transfer.trim_end_matches('/').to_owned(),
            keys,
            http,
            clock,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

    /// The fields every request to UnionPay starts with, for one transaction type
    /// (`txnType`, `txnSubType`, `bizType`) and its `orderId`.
    fn head(
        &self,
        (txn_type, txn_sub_type, biz_type): (&str, &str, &str),
        order_id: &str,
    ) -> Vec<(String, String)> {
        vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", txn_type),
            p("txnSubType", txn_sub_type),
            p("bizType", biz_type),
            p("accessType", "0"),
            p("channelType", "07"),
            p("merId", self.keys.mer_id.clone()),
            p("orderId", order_id),
        ]
    }

    fn signed(&self, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
        params.push(p("certId", self.keys.cert_id.clone()));
        let sig = protocol::sign(&self.keys.sign_key, &params);
        params.push(p("signature", sig));
        params
    }

    /// Posts a signed form; returns UnionPay's answer once its certificate and signature check out.
    async fn post(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ChannelError> {
        self.post_to(&self.gateway, path, params).await
    }

    async fn post_to(
        &self,
        host: &str,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ChannelError> {
        let resp = self
            .http
            .post(format!("{host}{path}"))
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(crate::form::encode(params))
            .send()
            .await
            .map_err(classify_transport)?;
        if !resp.status().is_success() {
            return Err(ChannelError::Ambiguous(format!(
                "gateway answered {}",
                resp.status()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        // Synchronous answers are raw `k=v&…`, never url-decoded (see `protocol::parse_answer`).
        let answer = protocol::parse_answer(&body)
            .map_err(|e| ChannelError::Ambiguous(format!("unparseable answer: {e}")))?;
        self.verify_message(&answer)
            .map_err(|e| ChannelError::Ambiguous(format!("answer not trusted: {e}")))?;
        Ok(answer)
    }

    /// `queryTrans.do` for one transaction (a consume or a refund), named by orderId + txnTime.
    async fn query_trans(
        &self,
        order: &ChannelOrderRef,
    ) -> Result<Vec<(String, String)>, ChannelError> {
        let Some(txn) = order.channel_data.clone() else {
            return Err(ChannelError::Refused {
                code: "NO_TXN_TIME".into(),
                message: "the original txnTime was not stored".into(),
            });
        };
        let mut fields = self.head(("00", "00", "000000"), &order.out_trade_no);
        fields.push(p("txnTime", txn));
        let params = self.signed(fields);
        let answer = self.post("/gateway/api/queryTrans.do", &params).await?;
        if get(&answer, "orderId").is_some_and(|o| o != order.out_trade_no) {
            return Err(ChannelError::Ambiguous(
                "query answer about another transaction".into(),
            ));
        }
        Ok(answer)
    }

    /// Verifies a message from UnionPay (answer or notification): certificate chain, then
    /// signature, then that it is about our merchant.
    fn verify_message(&self, params: &[(String, String)]) -> Result<(), NotifyError> {
        verify_unionpay_message(
            params,
            &self.keys.root,
            self.keys.middle.as_ref(),
            self.now_ms() / 1000,
            self.keys.accept_test_owner,
        )?;
        if get(params, "merId") != Some(self.keys.mer_id.as_str()) {
            return Err(NotifyError::Malformed(
                "message for another merchant".into(),
            ));
        }
        Ok(())
    }
}

/// Chain, owner and signature of one UnionPay message, as of `now_secs`; shared with
/// `payonce verify-message`.
pub fn verify_unionpay_message(
    params: &[(String, String)],
    root: &Certificate,
    middle: Option<&Certificate>,
    now_secs: i64,
    accept_test_owner: bool,
) -> Result<Certificate, NotifyError> {
    let cert = protocol::trusted_signer(params, root, middle, now_secs, accept_test_owner)
        .map_err(|e| match e {
            protocol::CertError::Missing | protocol::CertError::Unparseable => {
                NotifyError::Malformed(format!("signPubKeyCert: {e:?}"))
            }
            protocol::CertError::Untrusted => NotifyError::UnknownKey,
            protocol::CertError::NotUnionpay => NotifyError::UnknownKey,
        })?;
    if !protocol::verify(&cert.verifier, params) {
        return Err(NotifyError::BadSignature);
    }
    Ok(cert)
}

/// What a `queryTrans` answer says about a CONSUME (payment) transaction.
/// Table rows UP-Q-* in docs/channels.md.
pub fn consume_state(answer: &[(String, String)]) -> Result<TradeState, ChannelError> {
    match get(answer, "respCode").unwrap_or_default() {
        "00" => match get(answer, "origRespCode").unwrap_or_default() {
            "00" | "A6" => Ok(TradeState::Paid {
                amount: get(answer, "txnAmt")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| ChannelError::Ambiguous("no txnAmt".into()))?,
                channel_trade_no: get(answer, "queryId").map(str::to_owned),
                paid_at: Timestamp(
                    get(answer, "txnTime")
                        .and_then(protocol::parse_txn_time)
                        .unwrap_or(0),
                ),
            }),
            // Being processed (03 timeout, 04 status unknown, 05 processing): ask again later.
            "03" | "04" | "05" => Err(ChannelError::Ambiguous(
                "the consume is still being processed".into(),
            )),
            // Missing: the query answer does not say; never guess.
            "" => Err(ChannelError::Ambiguous(
                "query answer without origRespCode".into(),
            )),
            // A failed try: the payer may try again on the same form until payTimeout, so the
            // channel order is not paid YET. Past payTimeout the close (a last query) ends it.
            _ => Ok(TradeState::Unpaid),
        },
        // 查无此交易: the payer never submitted the form (or UnionPay has not recorded it yet):
        // not paid yet, watched until payTimeout — never "failed".
        "34" => Ok(TradeState::Absent),
        // 03 timeout / 04 unknown / 05 processing, or any code not documented for queryTrans.
        "03" | "04" | "05" => Err(ChannelError::Ambiguous(
            "UnionPay asks to query again".into(),
        )),
        other @ ("01" | "02" | "06" | "10" | "11" | "12" | "13" | "14" | "30" | "31" | "32"
        | "33" | "35" | "36" | "37" | "38" | "39") => Err(ChannelError::Refused {
            code: other.into(),
            message: get(answer, "respMsg").unwrap_or_default().into(),
        }),
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented respCode {other}"
        ))),
    }
}

/// What a verified `backUrl` notification says (UP-N-*): a consume's result, or (txnType 04) a
/// refund's, whose orderId is our refund number.
///
/// UnionPay's signed string also joins raw values with `&`, so a verified signature is kept
/// apart from "accepted": no field twice, `txnType` a consume or a refund, `orderId` of the form
/// payonce sends (8–40 letters and digits), `txnAmt` a whole number of fen. payonce sends no
/// free text that comes back (no `orderDesc`, no `reqReserved`), so nothing of ours can carry a
/// separator into a notification.
pub fn read_notification(params: &[(String, String)]) -> Result<Notification, NotifyError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some((k, _)) = params.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(NotifyError::Malformed(format!("field {k} given twice")));
    }
    if !matches!(get(params, "txnType"), Some("01" | "04")) {
        return Err(NotifyError::Malformed(
            "txnType is neither a consume nor a refund".into(),
        ));
    }
    if get(params, "txnAmt")
        .is_some_and(|a| a.is_empty() || a.len() > 12 || !a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(NotifyError::Malformed(
            "txnAmt is not a whole number of fen".into(),
        ));
    }
    let order_id = get(params, "orderId")
        .ok_or_else(|| NotifyError::Malformed("no orderId".into()))?
        .to_owned();
    if !(8..=40).contains(&order_id.len()) || !order_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(NotifyError::Malformed(
            "orderId is not of payonce's form".into(),
        ));
    }
    if get(params, "txnType") == Some("04") {
        // A refund's result: its orderId is our refund number.
        let state = match get(params, "respCode") {
            Some("00" | "A6") => RefundState::Succeeded,
            Some("03" | "04" | "05") => RefundState::Processing,
            other => RefundState::Failed(format!("respCode {}", other.unwrap_or("?"))),
        };
        return Ok(Notification {
            event_id: get(params, "queryId")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{order_id}-refund")),
            out_trade_no: get(params, "origQryId").unwrap_or_default().to_owned(),
            state: TradeState::Unpaid,
            refund: Some(crate::RefundNotice {
                out_refund_no: order_id,
                state,
            }),
            content: None,
        });
    }
    let event_id = get(params, "queryId")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{order_id}-{}", get(params, "txnTime").unwrap_or("")));
    let state = match get(params, "respCode") {
        Some("00" | "A6") => TradeState::Paid {
            amount: get(params, "txnAmt")
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| NotifyError::Malformed("bad txnAmt".into()))?,
            channel_trade_no: get(params, "queryId").map(str::to_owned),
            paid_at: Timestamp(
                get(params, "txnTime")
                    .and_then(protocol::parse_txn_time)
                    .unwrap_or(0),
            ),
        },
        _ => TradeState::Unpaid,
    };
    Ok(Notification {
        event_id,
        out_trade_no: order_id,
        state,
        refund: None,
        content: None,
    })
}

/// UPACP has no close for an unpaid consume: a "close" is a query (UP-C-*). Paid is reported;
/// anything else means the form can only stop paying at payTimeout, so payonce closes the
/// attempt locally and keeps watching it until then.
pub fn close_from_query(state: TradeState) -> CloseAnswer {
    match state {
        TradeState::Paid { .. } => CloseAnswer::AlreadyPaid,
        TradeState::Closed => CloseAnswer::Closed,
        TradeState::Unpaid | TradeState::Absent => CloseAnswer::Absent,
    }
}

/// What a `queryTrans` answer says about a REFUND transaction (its own orderId and txnTime).
/// Table rows UP-RQ-*.
pub fn refund_query_state(answer: &[(String, String)]) -> Result<RefundState, ChannelError> {
    match get(answer, "respCode").unwrap_or_default() {
        "00" => Ok(match get(answer, "origRespCode").unwrap_or_default() {
            "00" | "A6" => RefundState::Succeeded,
            "03" | "04" | "05" => RefundState::Processing,
            "" => {
                return Err(ChannelError::Ambiguous(
                    "query answer without origRespCode".into(),
                ));
            }
            other => RefundState::Failed(format!(
                "origRespCode {other}: {}",
                get(answer, "origRespMsg").unwrap_or_default()
            )),
        }),
        // Not found YET: the refund was sent; it may still appear. Never re-send.
        "34" => Ok(RefundState::NotFoundYet),
        "03" | "04" | "05" => Err(ChannelError::Ambiguous(
            "UnionPay asks to query again".into(),
        )),
        other => Err(ChannelError::Ambiguous(format!(
            "refund query answered {other}"
        ))),
    }
}

/// What a `backTransReq` answer to a refund (txnType 04) says. Table rows UP-R-*.
pub fn refund_answer_state(answer: &[(String, String)]) -> Result<RefundState, ChannelError> {
    match get(answer, "respCode").unwrap_or_default() {
        // Accepted: the result comes by notification or query.
        "00" | "A6" => Ok(RefundState::Processing),
        // Timeout / unknown / processing: accepted or not, the query tells.
        "03" | "04" | "05" => Ok(RefundState::Processing),
        // 12 "duplicate transaction" (this orderId + txnTime was received before), system
        // closed / busy / too frequent / general error: maybe received — query, never re-send.
        "12" | "02" | "06" | "37" | "99" => Err(ChannelError::Ambiguous(
            "UnionPay did not say whether it took the refund: query it".into(),
        )),
        // Definitive refusals: format, signature, merchant, original transaction, amount, risk,
        // and the card-side 60–80 codes — nothing refunded.
        other @ ("01" | "10" | "11" | "13" | "14" | "30" | "31" | "32" | "33" | "35" | "36"
        | "38" | "39") => Ok(RefundState::Failed(format!(
            "{other}: {}",
            get(answer, "respMsg").unwrap_or_default()
        ))),
        other if other.len() == 2 && other.parse::<u8>().is_ok_and(|n| (60..=80).contains(&n)) => {
            Ok(RefundState::Failed(format!(
                "{other}: {}",
                get(answer, "respMsg").unwrap_or_default()
            )))
        }
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented respCode {other}"
        ))),
    }
}

#[async_trait]
impl Channel for UnionpayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Unionpay
    }

    /// The consume is a form the payer's browser posts to UnionPay; nothing is sent now, and the
    /// channel order exists once the payer submits it. `txnTime` is kept for later queries.
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let txn = txn_time(self.now_ms());
        let mut fields = self.head(("01", "01", "000201"), &req.out_trade_no);
        fields.extend([
            p("txnTime", txn.clone()),
            p("txnAmt", req.amount.minor.to_string()),
            p("currencyCode", "156"),
            p("backUrl", req.notify_url.clone()),
            // UnionPay stops accepting the payment at payTimeout: never after the order expires.
            p("payTimeout", txn_time(req.expires_at.0)),
        ]);
        let fields = self.signed(fields);
        let fields: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok(Prepaid {
            credential: serde_json::json!({
                "action": format!("{}/gateway/api/frontTransReq.do", self.gateway),
                "method": "POST",
                "fields": fields,
            }),
            credential_expires_at: req.expires_at,
            // UnionPay refuses the form after payTimeout.
            payable_until: req.expires_at,
            channel_data: Some(txn),
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        consume_state(&self.query_trans(order).await?)
    }

    /// UPACP cannot close an unpaid consume. A paid one is reported; otherwise the form simply
    /// stops paying at payTimeout, and payonce keeps watching until then (anything that still
    /// arrives is handled as a late or duplicate payment).
    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        Ok(close_from_query(self.query(order).await?))
    }

    /// A refund (`txnType=04`) is a back-end transaction of its own: its `orderId` is our refund
    /// number, `origQryId` names the payment, and its `txnTime` is kept for queries.
    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError> {
        let Some(orig) = req.channel_trade_no.clone() else {
            return Ok((
                RefundState::Failed("no queryId of the payment".into()),
                None,
            ));
        };
        // The txnTime stored in the refund row before this call: a resend or a query names the
        // same refund transaction, never a new one.
        let txn = req
            .channel_data
            .clone()
            .unwrap_or_else(|| txn_time(self.now_ms()));
        let mut fields = self.head(("04", "00", "000201"), &req.out_refund_no);
        fields.extend([
            p("origQryId", orig),
            p("txnTime", txn.clone()),
            p("txnAmt", req.amount.minor.to_string()),
            p("currencyCode", "156"),
            p("backUrl", req.notify_url.clone()),
        ]);
        let params = self.signed(fields);
        let answer = self.post("/gateway/api/backTransReq.do", &params).await?;
        Ok((refund_answer_state(&answer)?, Some(txn)))
    }

    fn refund_call_data(&self, now: Timestamp) -> Option<String> {
        Some(txn_time(now.0))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let order = ChannelOrderRef {
            out_trade_no: r.out_refund_no.clone(),
            channel_data: r.channel_data.clone(),
        };
        refund_query_state(&self.query_trans(&order).await?)
    }

    /// `fileTransfer` (txnType=76) to the file-transfer host: the clearing day's archive. The
    /// answer is signed like every UnionPay answer (checked in `post`); `fileContent` is base64
    /// of the zlib-deflated zip, stored as the zlib bytes. `date` is the clearing day: UnionPay
    /// clears from 23:00 the day before to 23:00 (Beijing), and `settleDate` is its `MMDD`.
    async fn download_bill(&self, date: &str) -> Result<crate::bill::BillDownload, ChannelError> {
        let settle = date
            .get(5..7)
            .zip(date.get(8..10))
            .map(|(m, d)| format!("{m}{d}"))
            .ok_or_else(|| ChannelError::Refused {
                code: "BAD_DATE".into(),
                message: format!("not a date: {date}"),
            })?;
        let fields = vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "76"),
            p("txnSubType", "01"),
            p("bizType", "000000"),
            p("accessType", "0"),
            p("merId", self.keys.mer_id.clone()),
            p("settleDate", settle),
            p("txnTime", txn_time(self.now_ms())),
            p("fileType", "00"),
        ];
        let params = self.signed(fields);
        let answer = self.post_to(&self.file_transfer, "/", &params).await?;
        match get(&answer, "respCode") {
            Some("00") => {}
            // 文件不存在: no file for that clearing day. UnionPay writes none for a day on which
            // nothing moved; reconciliation tells that from a missing file by payonce's own
            // records of the day.
            Some("98") => return Ok(crate::bill::BillDownload::NoBill { code: "98".into() }),
            other => {
                return Err(ChannelError::Refused {
                    code: other.unwrap_or_default().to_owned(),
                    message: get(&answer, "respMsg").unwrap_or_default().to_owned(),
                });
            }
        }
        use base64::Engine as _;
        let content = get(&answer, "fileContent")
            .ok_or_else(|| ChannelError::Ambiguous("no fileContent".into()))?;
        let zlib = base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| ChannelError::Ambiguous(format!("fileContent is not base64: {e}")))?;
        Ok(crate::bill::BillDownload::Bill(
            crate::bill::DownloadedBill {
                merchant_account: self.keys.mer_id.clone(),
                bill_type: "ZM".into(),
                format: crate::bill::BillFormat::UnionpayZlibZip,
                content: zlib,
            },
        ))
    }

    fn verify_notification(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<Notification, NotifyError> {
        let params = crate::form::parse(body);
        if params.is_empty() {
            return Err(NotifyError::Malformed("empty form".into()));
        }
        self.verify_message(&params)?;
        read_notification(&params)
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply {
            status: 200,
            content_type: "text/plain",
            body: "ok".into(),
        }
    }

    fn notify_nack(&self, _reason: &str) -> NotifyReply {
        NotifyReply {
            status: 400,
            content_type: "text/plain",
            body: "fail".into(),
        }
    }
}
