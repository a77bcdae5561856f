//! payonce's server: the business API, the channel notification endpoints, and the workers,
//! run side by side until shutdown.

// An error here is an answer (`ApiError`, or a page's `Response`), built once per refused
// request and returned straight to the client: boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

// The rooms, by what each is: the engine decides and records what happens to money; the
// gateway decides who may ask and how often; http speaks the API, the notification endpoints,
// the cashier and the console; the workers drive everything no request is waiting for.
// Beside them, the infrastructure every room shares: state, errors, crypto, metrics, tracing,
// and the broker sinks.
pub mod engine;
pub mod gateway;
pub mod http;
pub mod workers;

pub mod channels;
pub mod crypto;
pub mod error;
pub mod metered;
pub mod privacy;
pub mod sinks;
pub mod state;
pub mod telemetry;
pub mod views;

pub use state::{AppState, ServerConfig};

use std::future::Future;
use tokio::net::TcpListener;

/// Binds the API's listening socket, with a backlog of 4,096 connections (the kernel caps it
/// at `net.core.somaxconn`, 4,096 by default): when every connection payonce holds is handling
/// a request, newcomers wait there, in the kernel, not in payonce's memory (see `run`). tokio's
/// `TcpListener::bind` keeps 1,024; past the backlog, the kernel drops connection attempts and
/// the client's TCP stack tries again a second or more later.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `std::net::TcpListener::bind` does on Unix: a restarted server binds its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves the API on `listener` and runs the workers until `shutdown` resolves; then stops
/// taking connections, lets in-flight requests finish, and stops the workers.
///
/// Connections are served by hyper directly (not `axum::serve`) so that the gateway can defend
/// itself: a request must arrive whole — headers and body — within `request_timeout` of its
/// first byte (`http::read_whole_request`; hyper closes a connection that has not sent headers
/// within `header_read_timeout`, idle keep-alive included); and past `max_connections` a new
/// connection takes the place of the one slowest to send its request (`connections`), so slow
/// senders cannot lock out complete requests, even from the same address.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_until(listener, state, Box::pin(shutdown)).await
}

/// `run`'s body, not generic: the whole HTTP stack under it (hyper's connection, the router,
/// every middleware) is compiled once, here, instead of again in each crate that calls `run`
/// with its own shutdown future (the binary, the harness, every test binary) — a generic `run`
/// made the binary's crate the longest single step at the end of a cold build.
async fn serve_until(
    listener: TcpListener,
    state: AppState,
    mut shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::sync::Arc;
    // Console sessions opened under another admin token end now (a session lookup also
    // checks the token's generation, so an instance still on the old token cannot revive them).
    match state
        .store
        .end_sessions_of_other_tokens(&http::console::token_generation(&state))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            ended = n,
            "console sessions of a previous admin token ended"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not end the console sessions of a previous admin token")
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(workers::run(state.clone(), stop_rx));
    let header_timeout = state
        .config
        .header_read_timeout
        .min(state.config.request_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        state.config.max_connections.max(1),
    ));
    let tracker = Arc::new(gateway::connections::Tracker::default());
    let app = http::router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a transient error: pause instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // At the cap, the slowest connection makes room. When every connection is handling a
        // request, this one waits instead — for a connection to end, or to finish its request
        // and so become evictable — and those behind it wait in the kernel's backlog (`listen`).
        // Refused at once, as before, a client owed nothing could not tell a full server from a
        // dead one, and a channel's notification came back only on its retry schedule.
        let (mut waited, mut stopping) = (false, false);
        let slot = loop {
            match slots.clone().try_acquire_owned() {
                Ok(slot) => break Some(slot),
                // The evicted connection's task gives its slot back as it ends.
                Err(_) if tracker.evict_slowest() => {
                    metrics::counter!("payonce_connections_evicted_total").increment(1);
                    match tokio::time::timeout(
                        std::time::Duration::from_millis(500),
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => break Some(slot),
                        _ => break None,
                    }
                }
                Err(_) => {
                    if !waited {
                        waited = true;
                        metrics::counter!("payonce_connections_waited_total").increment(1);
                    }
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => {
                            break Some(slot.expect("the slots are never closed"));
                        }
                        _ = tracker.some_connection_turned_idle() => {}
                        _ = &mut shutdown => {
                            stopping = true;
                            break None;
                        }
                    }
                }
            }
        };
        if stopping {
            break;
        }
        let Some(slot) = slot else {
            metrics::counter!("payonce_connections_refused_total").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = tracker.open();
        // The peer's address rides in the request's extensions (as `axum::serve` would put it),
        // and so does the connection, whose first-byte time starts the request's deadline.
        let in_request = conn.clone();
        let svc = tower::util::MapRequest::new(
            app.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req.extensions_mut()
                    .insert(http::ConnHandle(in_request.clone()));
                req
            },
        );
        let answered = conn.clone();
        let svc = tower::ServiceExt::map_response(svc, move |resp| {
            answered.mark_idle();
            resp
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(
                TokioIo::new(gateway::connections::Timed::new(stream, conn.clone())),
                svc,
            );
        let served = graceful.watch(served);
        let tracker = tracker.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = served => {}
                // Dropping the connection closes its socket; a request being handled is not
                // evicted, and handlers run in their own tasks anyway.
                _ = conn.evicted() => {}
            }
            tracker.close(id);
            drop(slot);
        });
    }
    drop(listener);
    // In-flight requests finish; idle connections close.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
    let _ = stop_tx.send(true);
    let _ = workers.await;
    Ok(())
}
