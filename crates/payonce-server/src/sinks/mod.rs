//! Where business events go besides webhooks: RabbitMQ (publisher confirms, durable topic
//! exchange, `mandatory`) and NATS JetStream (acknowledged publish, `Nats-Msg-Id` = event id for
//! its de-duplication window). An event counts as delivered only once the broker confirmed it;
//! anything else is retried on the webhook schedule, never dropped. Each is a cargo feature.
//!
//! Tenants stay apart on the broker as they do over HTTP: the app id is a token of the subject
//! (`<prefix>.<app id>.<event type>`) and of the routing key (`<app id>.<event type>`), so
//! per-app broker permissions can confine each business to its own events; it is in the body
//! (`app_id`); and every message carries the Standard Webhooks headers, signed with the app's
//! webhook secret exactly as a webhook would be, so a consumer can prove whose event it holds.

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

use payonce_store::EventRow;

/// Why an event was not published (it is retried on the webhook schedule), or why the sinks
/// cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A sink configured that this build does not have (the message names the feature).
    #[error("{0}")]
    NotBuilt(&'static str),
    #[error("app id {0:?} cannot be a subject token")]
    AppIdToken(String),
    #[error("event type {0:?} cannot be a subject")]
    EventTypeToken(String),
    /// The app publishes to a sink this instance was not given (`RabbitMQ`, `NATS`).
    #[error("no {0} configured")]
    NotConfigured(&'static str),
    #[error("sink {0} is not available in this build")]
    NotAvailable(&'static str),
    #[error("event payload is not a JSON object: {0}")]
    Payload(serde_json::Error),
    /// The broker could not be reached, or did not confirm the message (its own words).
    #[error("{0}")]
    Broker(String),
}

/// Broker settings from the command line. Not `Debug`: the AMQP URL carries a password.
#[derive(Clone, Default)]
pub struct SinkConfig {
    /// `amqp://user:pass@host:5672/%2f` and the exchange events are published to.
    pub rabbitmq: Option<(String, String)>,
    /// `host:4222`, the JetStream stream, and the subject prefix (`<prefix>.<app id>.<event type>`).
    pub nats: Option<(String, String, String)>,
}

/// One event as a broker message: whose it is, the exact bytes published, and the headers
/// over them — what an HTTP delivery of the same event would carry.
pub struct Message<'a> {
    pub event: &'a EventRow,
    /// The app the event belongs to: a token of the subject / routing key.
    pub app_id: &'a str,
    /// The event's payload with `app_id` added: what is published, and what is signed.
    pub body: String,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`, and `traceparent` when the
    /// order's trace is known.
    pub headers: Vec<(&'static str, String)>,
}

impl Message<'_> {
    /// `<app id>.<event type>`: the app first, so one wildcard (`<app id>.#`, `<prefix>.<app
    /// id>.>`) grants one app everything of its own and nothing of another's.
    ///
    /// An app id that is not a plain token (a `.`, a wildcard, a space would shift or widen
    /// what a permission matches) is refused rather than published where it does not belong.
    pub fn routing_key(&self) -> Result<String, SinkError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token(self.app_id) {
            return Err(SinkError::AppIdToken(self.app_id.to_owned()));
        }
        if !self.event.event_type.split('.').all(token) {
            return Err(SinkError::EventTypeToken(self.event.event_type.clone()));
        }
        Ok(format!("{}.{}", self.app_id, self.event.event_type))
    }
}

#[derive(Default)]
pub struct Sinks {
    #[cfg(feature = "rabbitmq")]
    pub rabbitmq: Option<rabbitmq::RabbitSink>,
    #[cfg(feature = "nats")]
    pub nats: Option<nats::NatsSink>,
}

impl Sinks {
    /// Prepares the configured sinks. A sink asked for but not compiled in is an error: events
    /// for it would otherwise pile up unseen.
    pub async fn from_config(cfg: &SinkConfig) -> Result<Self, SinkError> {
        #[allow(unused_mut)]
        let mut s = Sinks::default();
        if let Some((_url, _exchange)) = &cfg.rabbitmq {
            #[cfg(feature = "rabbitmq")]
            {
                s.rabbitmq = Some(rabbitmq::RabbitSink::new(_url.clone(), _exchange.clone()));
            }
            #[cfg(not(feature = "rabbitmq"))]
            return Err(SinkError::NotBuilt(
                "RabbitMQ sink configured but payonce was built without the `rabbitmq` feature",
            ));
        }
        if let Some((_addr, _stream, _prefix)) = &cfg.nats {
            #[cfg(feature = "nats")]
            {
                s.nats = Some(nats::NatsSink::new(
                    _addr.clone(),
                    _stream.clone(),
                    _prefix.clone(),
                ));
            }
            #[cfg(not(feature = "nats"))]
            return Err(SinkError::NotBuilt(
                "NATS sink configured but payonce was built without the `nats` feature",
            ));
        }
        Ok(s)
    }

    /// Publishes to the app's sink, with the message's headers; `Ok(destination)` once the
    /// broker confirmed.
    #[cfg_attr(
        not(any(feature = "rabbitmq", feature = "nats")),
        allow(unused_variables)
    )]
    pub async fn publish(
        &self,
        sink: payonce_store::Sink,
        msg: &Message<'_>,
    ) -> Result<String, SinkError> {
        match sink {
            #[cfg(feature = "rabbitmq")]
            payonce_store::Sink::Rabbitmq => match &self.rabbitmq {
                Some(r) => r.publish(msg).await,
                None => Err(SinkError::NotConfigured("RabbitMQ")),
            },
            #[cfg(feature = "nats")]
            payonce_store::Sink::Nats => match &self.nats {
                Some(n) => n.publish(msg).await,
                None => Err(SinkError::NotConfigured("NATS")),
            },
            #[allow(unreachable_patterns)]
            other => Err(SinkError::NotAvailable(other.as_str())),
        }
    }
}
