//! RabbitMQ sink: a durable topic exchange, routing key = `<app id>.<event type>` (a queue bound
//! with `<app id>.#` gets one app's events only), `message_id` = event id, the Standard Webhooks
//! headers as AMQP headers, persistent messages, `mandatory` (an unroutable event comes back as
//! `basic.return` and counts as not delivered), and publisher confirms (delivered only once the
//! broker acked).

use super::{Message, SinkError};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;

/// The longest a connection set-up, or a publish and its confirm, may take. A connection cut at
/// the wrong moment can leave lapin waiting for a frame that never comes; without a bound one
/// such wait held the connection lock and stalled every delivery behind it (seen in CI).
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct RabbitSink {
    url: String,
    exchange: String,
    /// The connection in use, with its generation (how many were made before it).
    conn: tokio::sync::Mutex<Option<(u64, Connection, Channel)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl RabbitSink {
    pub fn new(url: String, exchange: String) -> Self {
        RabbitSink {
            url,
            exchange,
            conn: tokio::sync::Mutex::new(None),
            generations: Default::default(),
        }
    }

    /// The channel of the live connection (made if there is none), and its generation.
    async fn channel(&self) -> Result<(u64, Channel), SinkError> {
        let mut guard = self.conn.lock().await;
        if let Some((generation, c, ch)) = guard.as_ref()
            && c.status().connected()
            && ch.status().connected()
        {
            return Ok((*generation, ch.clone()));
        }
        let setup = async {
            let conn = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            ch.exchange_declare(
                self.exchange.clone().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
            Ok::<_, lapin::Error>((conn, ch))
        };
        let (conn, ch) = tokio::time::timeout(TIMEOUT, setup)
            .await
            .map_err(|_| SinkError::Broker("connecting to RabbitMQ timed out".into()))?
            .map_err(|e| SinkError::Broker(e.to_string()))?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *guard = Some((generation, conn, ch.clone()));
        Ok((generation, ch))
    }

    pub async fn publish(&self, msg: &Message<'_>) -> Result<String, SinkError> {
        let routing_key = msg.routing_key()?;
        let mut used = None;
        let result = async {
            let (generation, ch) = self.channel().await?;
            used = Some(generation);
            let mut headers = FieldTable::default();
            for (name, value) in &msg.headers {
                headers.insert(
                    (*name).into(),
                    lapin::types::AMQPValue::LongString(value.as_str().into()),
                );
            }
            let props = BasicProperties::default()
                .with_headers(headers)
                .with_message_id(msg.event.id.clone().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            let publish = async {
                ch.basic_publish(
                    self.exchange.clone().into(),
                    routing_key.clone().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    msg.body.as_bytes(),
                    props,
                )
                .await?
                .await
            };
            let confirm = tokio::time::timeout(TIMEOUT, publish)
                .await
                .map_err(|_| SinkError::Broker("RabbitMQ did not confirm in time".into()))?
                .map_err(|e| SinkError::Broker(e.to_string()))?;
            match confirm {
                Confirmation::Ack(None) => Ok(format!("rabbitmq:{}/{routing_key}", self.exchange)),
                Confirmation::Ack(Some(returned)) => Err(SinkError::Broker(format!(
                    "returned by the broker: {}",
                    returned.reply_text
                ))),
                Confirmation::Nack(_) => Err(SinkError::Broker("nacked by the broker".into())),
                Confirmation::NotRequested => {
                    Err(SinkError::Broker("publisher confirms not enabled".into()))
                }
            }
        }
        .await;
        if result.is_err() {
            // Reconnect next time — but only if the connection that failed is still the one in
            // use: deliveries run concurrently, and one failing on an old connection must not
            // close the new one another delivery just made (after a burst of cuts that cascade
            // kept every connection dying at birth).
            let mut guard = self.conn.lock().await;
            if guard
                .as_ref()
                .is_some_and(|(generation, ..)| Some(*generation) == used)
            {
                *guard = None;
            }
        }
        result
    }
}
