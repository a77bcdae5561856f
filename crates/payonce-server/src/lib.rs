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
pub mod payments;
pub mod ratelimit;
pub mod sinks;
pub mod state;
pub mod webhooks;
pub mod workers;

pub use state::{AppState, ServerConfig};

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` and runs the workers until `shutdown` resolves; then stops
/// taking connections, lets in-flight requests finish, and stops the workers.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(workers::run(state.clone(), stop_rx));
    let app = http::router(state);
    // The peer's address reaches handlers (rate limits on failing notifications).
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await;
    let _ = stop_tx.send(true);
    let _ = workers.await;
    served
}
