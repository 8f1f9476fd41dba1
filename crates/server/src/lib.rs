//! rota's control plane: the HTTP API (worker protocol and operator calls), authentication,
//! long-polls, and the sweeper that expires leases and deadlines.
//!
//! No SQL and no job rules live here: state changes are [`rota_store::JobStore`] calls, the
//! rules they apply are `rota_domain::policy`. The library never installs signal handlers;
//! the caller passes a [`CancellationToken`] to [`run`].
//!
//! # Layout
//! - `config`: [`ServerConfig`].
//! - `state`: shared state handed to handlers (store, auth cache, wake-ups, control hub).
//! - `auth`: admin / join / worker-session extractors.
//! - `hub`: per-session command queues behind `POST /worker/control`.
//! - `parking` (claim long-polls waiting for work), `handoff` (a submit claims for them),
//!   `liveness` (when each session was last heard from: only fresh ones are handed work).
//! - `sweeper`: lease expiry, deadlines, retention.
//! - `routes/`: one file per resource.
//! - `error`: [`ApiError`] and the JSON body extractor that turns bad input into 400/413.

mod auth;
pub mod config;
mod error;
mod handoff;
mod hub;
mod liveness;
mod metrics;
mod openapi;
mod openapi_facts;
mod parking;
mod routes;
mod state;
mod sweeper;
mod views;

pub use auth::hash_token;
pub use config::ServerConfig;
pub use error::ApiError;

use rota_store::JobStore;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store failed during start-up (lease extension).
    #[error("store: {0}")]
    Store(#[from] rota_store::StoreError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The router with every route and the OpenAPI document, for tests (`oneshot`) and [`run`].
pub fn router(store: Arc<dyn JobStore>, config: ServerConfig) -> axum::Router {
    let state = state::AppState::new(store, config);
    routes::build(state)
}

/// The OpenAPI document of every endpoint as served: generated from the handlers, with
/// the limits, formats and statuses they enforce.
pub fn openapi() -> serde_json::Value {
    routes::openapi().clone()
}

/// Serves on `listener` until `shutdown` is cancelled. Before serving, every live lease is
/// extended by one TTL so workers that kept running while the server was down are not
/// marked lost, and the admin and join token hashes are loaded from the store (which is
/// first seeded with `config`'s tokens where it holds none). The sweeper runs until shutdown.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn JobStore>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let now = chrono::Utc::now();
    let extended = store.extend_live_leases(now, config.lease_ttl).await?;
    if extended > 0 {
        tracing::info!(extended, "extended live leases by one TTL after start");
    }
    // Long-polls watch the same token, so they end at once when shutdown begins.
    let state = state::AppState::with_shutdown(store, config, shutdown.clone());
    // Before serving: a store that cannot be read fails the start, not the first request.
    state.auth.load_credentials(state.store.as_ref(), &state.config).await?;
    let app = routes::build(state.clone());
    let sweeper = tokio::spawn(sweeper::run(state.clone(), shutdown.clone()));
    let stop = shutdown.clone();
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    shutdown.cancel();
    let _ = sweeper.await;
    served?;
    Ok(())
}
