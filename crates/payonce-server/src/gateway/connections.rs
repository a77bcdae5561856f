//! Connections at the gateway: when each request began (its first byte), so one deadline can
//! cover headers and body together; and room for complete requests when the connection cap is
//! reached, by closing the connection that has been slowest to send its request.
//!
//! Why both: a client that sends one byte every few seconds costs payonce nothing but a socket
//! as long as no load-shedding permit is taken before its body is read (the permit is taken
//! after, see `http::read_whole_request`). What it can still take are connections. Refusing
//! new connections at the cap would let one slow sender lock every payer out — and a cap per
//! address would lock out every payer behind the same NAT or proxy. So at the cap payonce
//! closes the connection that has been waiting longest for its request to arrive (or idling
//! on keep-alive) instead, and a complete request always finds a place.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's shared state: read by the IO wrapper, the request middleware and the
/// eviction scan.
#[derive(Debug)]
pub struct Conn {
    /// The current request's first byte arrived (or, while idle, the last answer went out).
    since: Mutex<Instant>,
    /// Waiting for a new request: the next byte read starts one.
    armed: AtomicBool,
    /// A whole request was read and is being handled: not to be evicted (its handler runs in
    /// its own task anyway, but its client is owed the answer).
    handling: AtomicBool,
    kill: Notify,
    /// The tracker's signal that some connection may be evicted now.
    turned_idle: Arc<Notify>,
}

impl Conn {
    fn new(turned_idle: Arc<Notify>) -> Self {
        Conn {
            since: Mutex::new(Instant::now()),
            armed: AtomicBool::new(true),
            handling: AtomicBool::new(false),
            kill: Notify::new(),
            turned_idle,
        }
    }

    /// When the request now being read began: its first byte on this connection.
    pub fn request_started(&self) -> Instant {
        *self.since.lock().expect("not poisoned")
    }

    /// The whole request is read: from now on the connection is busy, not slow.
    pub fn mark_handling(&self) {
        self.handling.store(true, Ordering::Relaxed);
    }

    /// The answer is out: the connection waits for its next request.
    pub fn mark_idle(&self) {
        *self.since.lock().expect("not poisoned") = Instant::now();
        self.handling.store(false, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
        self.turned_idle.notify_one();
    }

    fn bytes_arrived(&self) {
        if self.armed.swap(false, Ordering::Relaxed) {
            *self.since.lock().expect("not poisoned") = Instant::now();
        }
    }

    /// Resolves when the gateway wants this connection closed.
    pub async fn evicted(&self) {
        self.kill.notified().await
    }
}

/// The live connections of one server.
#[derive(Default)]
pub struct Tracker {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Told whenever a connection finishes a request (and so could make room).
    turned_idle: Arc<Notify>,
}

impl Tracker {
    pub fn open(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.turned_idle.clone()));
        self.live
            .lock()
            .expect("not poisoned")
            .insert(id, conn.clone());
        (id, conn)
    }

    pub fn close(&self, id: u64) {
        self.live.lock().expect("not poisoned").remove(&id);
    }

    /// Asks the connection that has waited longest without delivering a whole request (slow
    /// sender or idle keep-alive) to close. `false` when every connection is handling a request.
    pub fn evict_slowest(&self) -> bool {
        let mut live = self.live.lock().expect("not poisoned");
        let victim = live
            .iter()
            .filter(|(_, c)| !c.handling.load(Ordering::Relaxed))
            .min_by_key(|(_, c)| c.request_started())
            .map(|(id, _)| *id);
        match victim.and_then(|id| live.remove(&id)) {
            Some(conn) => {
                // `notify_one` keeps the wake-up if the connection is not waiting yet.
                conn.kill.notify_one();
                true
            }
            None => false,
        }
    }

    /// Resolves once a connection has finished a request since the last call (a newcomer
    /// waiting at the cap then tries to evict again).
    pub async fn some_connection_turned_idle(&self) {
        self.turned_idle.notified().await
    }

    pub fn len(&self) -> usize {
        self.live.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream that tells its `Conn` when a request's first byte arrives.
pub struct Timed<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Self {
        Timed { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_slowest_idle_or_reading_connection_goes_first() {
        let t = Tracker::default();
        let (_, old) = t.open();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let (_, busy) = t.open();
        busy.mark_handling();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let (_, young) = t.open();
        // The oldest connection still reading goes; the one handling a request never does.
        assert!(t.evict_slowest());
        assert_eq!(t.len(), 2);
        tokio::time::timeout(std::time::Duration::from_millis(1), old.evicted())
            .await
            .expect("the oldest was told to close");
        assert!(t.evict_slowest());
        tokio::time::timeout(std::time::Duration::from_millis(1), young.evicted())
            .await
            .expect("then the next reader");
        assert!(
            !t.evict_slowest(),
            "a connection handling a request is not evicted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_starts_at_its_first_byte_not_at_the_previous_answer() {
        let t = Tracker::default();
        let (_, c) = t.open();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        c.bytes_arrived();
        let first = c.request_started();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        c.bytes_arrived();
        assert_eq!(
            c.request_started(),
            first,
            "later bytes of the same request do not move its start"
        );
        c.mark_idle();
        // A newcomer waiting at the cap hears of it (the connection may now be evicted).
        tokio::time::timeout(
            std::time::Duration::from_millis(1),
            t.some_connection_turned_idle(),
        )
        .await
        .expect("the tracker was told the connection turned idle");
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        c.bytes_arrived();
        assert!(c.request_started() > first + std::time::Duration::from_secs(3));
    }
}
