//! RabbitMQ sink: a durable topic exchange, routing key = event type, `message_id` = event id,
//! persistent messages, `mandatory` (an unroutable event comes back as `basic.return` and counts
//! as not delivered), and publisher confirms (delivered only once the broker acked).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use payonce_store::EventRow;

pub struct RabbitSink {
    url: String,
    exchange: String,
    conn: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl RabbitSink {
    pub fn new(url: String, exchange: String) -> Self {
        RabbitSink { url, exchange, conn: tokio::sync::Mutex::new(None) }
    }

    async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut guard = self.conn.lock().await;
        if let Some((c, ch)) = guard.as_ref()
            && c.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        let conn = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.exchange_declare(
            self.exchange.clone().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
        *guard = Some((conn, ch.clone()));
        Ok(ch)
    }

    pub async fn publish(&self, ev: &EventRow) -> Result<String, String> {
        let result = async {
            let ch = self.channel().await.map_err(|e| e.to_string())?;
            let props = BasicProperties::default()
                .with_message_id(ev.id.clone().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            let confirm = ch
                .basic_publish(
                    self.exchange.clone().into(),
                    ev.event_type.clone().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    ev.payload.as_bytes(),
                    props,
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            match confirm {
                Confirmation::Ack(None) => Ok(format!("rabbitmq:{}/{}", self.exchange, ev.event_type)),
                Confirmation::Ack(Some(returned)) => Err(format!("returned by the broker: {}", returned.reply_text)),
                Confirmation::Nack(_) => Err("nacked by the broker".into()),
                Confirmation::NotRequested => Err("publisher confirms not enabled".into()),
            }
        }
        .await;
        if result.is_err() {
            // Reconnect next time.
            *self.conn.lock().await = None;
        }
        result
    }
}
