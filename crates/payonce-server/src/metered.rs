//! Every channel call measured: a `Channel` that forwards to the real connector and records
//! `payonce_channel_calls_total{channel,account,operation,outcome}` (outcome `ok`, `refused`,
//! `unreachable`, `ambiguous`) and `payonce_channel_call_seconds{channel,account,operation}`. The
//! operator's "is a channel misbehaving?" is these two series; the alert on a channel's error
//! rate reads them (deploy/prometheus/payonce-rules.yml). Each call is also a span
//! (`channel.call`, a child of whatever asked: a prepay request, a query round), so a trace shows
//! the channel's share of a payment.

use async_trait::async_trait;
use payonce_channels::bill::BillDownload;
use payonce_channels::{
    Channel, ChannelError, ChannelOrderRef, ChannelRegistry, CloseAnswer, Notification,
    NotifyError, NotifyReply, Prepaid, PrepayRequest, RefundRef, RefundRequest, RefundState,
    TradeState,
};
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::Instant;

/// Wraps every account's connector of `registry` so its calls are measured, labelled with the
/// account: one merchant number misbehaving is told apart from the channel misbehaving.
pub fn metered(registry: ChannelRegistry) -> ChannelRegistry {
    registry.wrap(|a| {
        Arc::new(Metered {
            inner: a.connector.clone(),
            account: Arc::from(a.name.as_str()),
        })
    })
}

/// `database` with every connector wrapped, except those it shares with `current` (kept from
/// the last build: already wrapped).
pub fn metered_new(database: ChannelRegistry, current: &ChannelRegistry) -> ChannelRegistry {
    database.wrap(|a| match current.account(a.channel(), &a.name) {
        Some(kept) if Arc::ptr_eq(&kept.connector, &a.connector) => a.connector.clone(),
        _ => Arc::new(Metered {
            inner: a.connector.clone(),
            account: Arc::from(a.name.as_str()),
        }),
    })
}

struct Metered {
    inner: Arc<dyn Channel>,
    account: Arc<str>,
}

/// When each (channel, account)'s last call answered `ok` in this process, Unix ms: the console
/// shows it beside the last self-check ("does this merchant number still work?").
static LAST_SUCCESS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(ChannelName, String), i64>>,
> = std::sync::LazyLock::new(Default::default);

/// The last successful call of an account on this instance, Unix ms.
pub fn last_success(channel: ChannelName, account: &str) -> Option<i64> {
    LAST_SUCCESS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(channel, account.to_owned()))
        .copied()
}

fn outcome<T>(r: &Result<T, ChannelError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ChannelError::Refused { .. }) => "refused",
        Err(ChannelError::Unreachable(_)) => "unreachable",
        Err(ChannelError::Ambiguous(_)) => "ambiguous",
    }
}

impl Metered {
    async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, ChannelError>>,
    ) -> Result<T, ChannelError> {
        use tracing::Instrument as _;
        let channel = self.inner.name().as_str();
        let account = &*self.account;
        let span = tracing::info_span!("channel.call", channel, account, operation, outcome = tracing::field::Empty, otel.name = %format!("{channel} {operation}"), otel.kind = "client");
        let started = Instant::now();
        let r = call.instrument(span.clone()).await;
        span.record("outcome", outcome(&r));
        metrics::histogram!("payonce_channel_call_seconds", "channel" => channel, "account" => self.account.to_string(), "operation" => operation).record(started.elapsed().as_secs_f64());
        metrics::counter!("payonce_channel_calls_total", "channel" => channel, "account" => self.account.to_string(), "operation" => operation, "outcome" => outcome(&r)).increment(1);
        if r.is_ok() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            LAST_SUCCESS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((self.inner.name(), self.account.to_string()), now);
        }
        r
    }
}

#[async_trait]
impl Channel for Metered {
    fn name(&self) -> ChannelName {
        self.inner.name()
    }
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        self.measure("prepay", self.inner.prepay(req)).await
    }
    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        self.measure("query", self.inner.query(order)).await
    }
    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        self.measure("close", self.inner.close(order)).await
    }
    fn refund_call_data(&self, now: Timestamp) -> Option<String> {
        self.inner.refund_call_data(now)
    }
    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError> {
        self.measure("refund", self.inner.refund(req)).await
    }
    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        self.measure("refund_query", self.inner.refund_query(r))
            .await
    }
    async fn download_bill(&self, date: &str) -> Result<BillDownload, ChannelError> {
        self.measure("download_bill", self.inner.download_bill(date))
            .await
    }
    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Notification, NotifyError> {
        self.inner.verify_notification(headers, body, now)
    }
    fn notify_ack(&self) -> NotifyReply {
        self.inner.notify_ack()
    }
    fn notify_nack(&self, reason: &str) -> NotifyReply {
        self.inner.notify_nack(reason)
    }
}
