//! payonce's server: the business API, the channel notification endpoints, and the workers,
//! run side by side until shutdown.

pub mod accelerator;
pub mod apps;
pub mod auth;
pub mod crypto;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod locks;
pub mod metered;
pub mod payments;
pub mod privacy;
pub mod ratelimit;
pub mod reconcile;
pub mod refunding;
pub mod sinks;
pub mod state;
pub mod telemetry;
pub mod webhooks;
pub mod workers;

pub use state::{AppState, ServerConfig};

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` and runs the workers until `shutdown` resolves; then stops
/// taking connections, lets in-flight requests finish, and stops the workers.
///
/// Connections are served by hyper directly (not `axum::serve`) so that the gateway can defend
/// itself: a connection that has not sent a request's headers within `header_read_timeout` is
/// closed (slowloris, idle keep-alive), and past `max_connections` new connections are closed at
/// once instead of exhausting descriptors and memory.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(workers::run(state.clone(), stop_rx));
    let header_timeout = state.config.header_read_timeout;
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(state.config.max_connections.max(1)));
    let app = http::router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
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
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("payonce_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address rides in the request's extensions (as `axum::serve` would put it),
        // without re-layering the router for every connection.
        let svc = tower::util::MapRequest::new(app.clone(), move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    // In-flight requests finish; idle connections close.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
    let _ = stop_tx.send(true);
    let _ = workers.await;
    Ok(())
}
