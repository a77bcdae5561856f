//! NATS JetStream sink, through the official client (`async-nats`: TLS, credentials in the URL,
//! reconnects): each event is published with `Nats-Msg-Id: <event id>` — JetStream drops a
//! re-publish inside the stream's duplicate window — and counts as delivered only once
//! JetStream has acknowledged it. The subject is `<prefix>.<app id>.<event type>`, so a NATS
//! user allowed `<prefix>.<app id>.>` sees one app's events only.

use super::{Message, SinkError};
use async_nats::jetstream;
use std::time::Duration;

pub struct NatsSink {
    url: String,
    stream: String,
    prefix: String,
    js: tokio::sync::Mutex<Option<jetstream::Context>>,
}

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long JetStream remembers a message id (a resend within it is dropped).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 3600);

impl NatsSink {
    /// `url`: `nats://[user:pass@]host:port` or `tls://…` (a bare `host:port` is `nats://`).
    pub fn new(url: String, stream: String, prefix: String) -> Self {
        NatsSink {
            url,
            stream,
            prefix,
            js: tokio::sync::Mutex::new(None),
        }
    }

    /// The JetStream context, connecting (and making sure our stream exists) on first use.
    async fn context(&self) -> Result<jetstream::Context, SinkError> {
        let mut guard = self.js.lock().await;
        if let Some(js) = guard.as_ref() {
            return Ok(js.clone());
        }
        let client = async_nats::ConnectOptions::new()
            .name("payonce")
            .connection_timeout(TIMEOUT)
            .request_timeout(Some(TIMEOUT))
            .connect(self.url.as_str())
            .await
            .map_err(|e| SinkError::Broker(format!("connecting to NATS: {e}")))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| SinkError::Broker(format!("creating stream {}: {e}", self.stream)))?;
        *guard = Some(js.clone());
        Ok(js)
    }

    pub async fn publish(&self, msg: &Message<'_>) -> Result<String, SinkError> {
        let subject = format!("{}.{}", self.prefix, msg.routing_key()?);
        let js = self.context().await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg.event.id.as_str());
        for (name, value) in &msg.headers {
            headers.insert(*name, value.as_str());
        }
        let publish = async {
            let ack = js
                .publish_with_headers(subject.clone(), headers, msg.body.clone().into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(TIMEOUT, publish).await {
            Ok(Ok(ack)) => Ok(format!("nats:{subject}#{}", ack.sequence)),
            Ok(Err(e)) => {
                self.js.lock().await.take();
                Err(SinkError::Broker(format!(
                    "JetStream did not acknowledge: {e}"
                )))
            }
            Err(_) => {
                self.js.lock().await.take();
                Err(SinkError::Broker(
                    "JetStream did not acknowledge in time".into(),
                ))
            }
        }
    }
}
