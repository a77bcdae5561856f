//! Where business events go besides webhooks: RabbitMQ (publisher confirms, durable topic
//! exchange, `mandatory`) and NATS JetStream (acknowledged publish, `Nats-Msg-Id` = event id for
//! its de-duplication window). An event counts as delivered only once the broker confirmed it;
//! anything else is retried on the webhook schedule, never dropped. Each is a cargo feature.

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

use payonce_store::EventRow;

/// Broker settings from the command line. Not `Debug`: the AMQP URL carries a password.
#[derive(Clone, Default)]
pub struct SinkConfig {
    /// `amqp://user:pass@host:5672/%2f` and the exchange events are published to.
    pub rabbitmq: Option<(String, String)>,
    /// `host:4222`, the JetStream stream, and the subject prefix (`<prefix>.<event type>`).
    pub nats: Option<(String, String, String)>,
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
    pub async fn from_config(cfg: &SinkConfig) -> Result<Self, String> {
        #[allow(unused_mut)]
        let mut s = Sinks::default();
        if let Some((_url, _exchange)) = &cfg.rabbitmq {
            #[cfg(feature = "rabbitmq")]
            {
                s.rabbitmq = Some(rabbitmq::RabbitSink::new(_url.clone(), _exchange.clone()));
            }
            #[cfg(not(feature = "rabbitmq"))]
            return Err("RabbitMQ sink configured but payonce was built without the `rabbitmq` feature".into());
        }
        if let Some((_addr, _stream, _prefix)) = &cfg.nats {
            #[cfg(feature = "nats")]
            {
                s.nats = Some(nats::NatsSink::new(_addr.clone(), _stream.clone(), _prefix.clone()));
            }
            #[cfg(not(feature = "nats"))]
            return Err("NATS sink configured but payonce was built without the `nats` feature".into());
        }
        Ok(s)
    }

    /// Publishes to the app's sink, with the delivery's W3C `traceparent` as a message header;
    /// `Ok(destination)` once the broker confirmed.
    #[cfg_attr(not(any(feature = "rabbitmq", feature = "nats")), allow(unused_variables))]
    pub async fn publish(&self, sink: payonce_store::Sink, ev: &EventRow, traceparent: Option<&str>) -> Result<String, String> {
        match sink {
            #[cfg(feature = "rabbitmq")]
            payonce_store::Sink::Rabbitmq => match &self.rabbitmq {
                Some(r) => r.publish(ev, traceparent).await,
                None => Err("no RabbitMQ configured".into()),
            },
            #[cfg(feature = "nats")]
            payonce_store::Sink::Nats => match &self.nats {
                Some(n) => n.publish(ev, traceparent).await,
                None => Err("no NATS configured".into()),
            },
            #[allow(unreachable_patterns)]
            other => Err(format!("sink {} is not available in this build", other.as_str())),
        }
    }
}
