//! NATS JetStream sink, speaking the NATS client protocol directly (a few lines of text over
//! TCP, so no second TLS/crypto stack is pulled in): `HPUB` with `Nats-Msg-Id: <event id>`
//! (JetStream drops a re-publish inside its duplicate window) and a reply inbox on which
//! JetStream acknowledges — delivered only then.

use payonce_store::EventRow;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct NatsSink {
    addr: String,
    stream: String,
    prefix: String,
    conn: tokio::sync::Mutex<Option<NatsConn>>,
}

/// One client connection with a reply inbox.
pub struct NatsConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    inbox: String,
    next: u64,
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl NatsConn {
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.map_err(io)??;
        let (r, w) = stream.into_split();
        let mut c = NatsConn { reader: BufReader::new(r), writer: w, inbox: format!("_INBOX.payonce.{}", &payonce_core::EventId::new().as_str()[4..]), next: 0 };
        let info = c.line().await?;
        if !info.starts_with("INFO") {
            return Err(io(format!("not a NATS server: {info}")));
        }
        let sub = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1,\"name\":\"payonce\"}}\r\nSUB {}.* 1\r\nPING\r\n",
            c.inbox
        );
        c.writer.write_all(sub.as_bytes()).await?;
        loop {
            let l = c.line().await?;
            if l == "PONG" {
                return Ok(c);
            }
            if l.starts_with("-ERR") {
                return Err(io(l));
            }
        }
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut l)).await.map_err(io)??;
        if n == 0 {
            return Err(io("connection closed"));
        }
        Ok(l.trim_end().to_owned())
    }

    /// Publishes (with optional headers) and waits for the reply: (status line, payload).
    pub async fn request(&mut self, subject: &str, headers: Option<&str>, payload: &[u8]) -> std::io::Result<(Option<String>, Vec<u8>)> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        let mut msg = match headers {
            Some(h) => format!("HPUB {subject} {reply} {} {}\r\n{h}", h.len(), h.len() + payload.len()).into_bytes(),
            None => format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes(),
        };
        msg.extend_from_slice(payload);
        msg.extend_from_slice(b"\r\n");
        self.writer.write_all(&msg).await?;
        loop {
            let l = self.line().await?;
            let parts: Vec<&str> = l.split(' ').collect();
            match parts[0] {
                "PING" => self.writer.write_all(b"PONG\r\n").await?,
                "MSG" | "HMSG" => {
                    let total: usize = parts.last().and_then(|n| n.parse().ok()).ok_or_else(|| io("bad MSG"))?;
                    let hlen: usize = if parts[0] == "HMSG" { parts[parts.len() - 2].parse().map_err(io)? } else { 0 };
                    let mut buf = vec![0u8; total + 2];
                    tokio::time::timeout(TIMEOUT, self.reader.read_exact(&mut buf)).await.map_err(io)??;
                    buf.truncate(total);
                    if parts[1] != reply {
                        continue; // a late answer to an earlier request
                    }
                    let status = (hlen > 0).then(|| String::from_utf8_lossy(&buf[..hlen]).lines().next().unwrap_or("").to_owned());
                    return Ok((status, buf[hlen..].to_vec()));
                }
                "-ERR" => return Err(io(l)),
                _ => {}
            }
        }
    }
}

impl NatsSink {
    pub fn new(addr: String, stream: String, prefix: String) -> Self {
        NatsSink { addr: addr.trim_start_matches("nats://").to_owned(), stream, prefix, conn: tokio::sync::Mutex::new(None) }
    }

    async fn with_conn(&self, ev: &EventRow) -> Result<String, String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let mut c = NatsConn::connect(&self.addr).await.map_err(|e| e.to_string())?;
            // The stream that captures our subjects, with a duplicate window (2 h) keyed by
            // Nats-Msg-Id. "Already exists" is fine.
            let cfg = serde_json::json!({"name": self.stream, "subjects": [format!("{}.>", self.prefix)], "storage": "file", "duplicate_window": 7_200_000_000_000i64});
            let (_, body) = c.request(&format!("$JS.API.STREAM.CREATE.{}", self.stream), None, cfg.to_string().as_bytes()).await.map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(err) = v.get("error")
                && err["err_code"] != 10058 {
                    return Err(format!("creating stream {}: {err}", self.stream));
                }
            *guard = Some(c);
        }
        let c = guard.as_mut().expect("connected");
        let subject = format!("{}.{}", self.prefix, ev.event_type);
        let headers = format!("NATS/1.0\r\nNats-Msg-Id: {}\r\n\r\n", ev.id);
        let (status, body) = c.request(&subject, Some(&headers), ev.payload.as_bytes()).await.map_err(|e| e.to_string())?;
        if let Some(s) = status.filter(|s| s.contains("503")) {
            return Err(format!("no stream listening on {subject}: {s}"));
        }
        let ack: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("bad JetStream ack: {e}"))?;
        if let Some(err) = ack.get("error") {
            return Err(format!("JetStream refused: {err}"));
        }
        Ok(format!("nats:{}#{}", subject, ack["seq"]))
    }

    pub async fn publish(&self, ev: &EventRow) -> Result<String, String> {
        let r = self.with_conn(ev).await;
        if r.is_err() {
            *self.conn.lock().await = None;
        }
        r
    }
}
