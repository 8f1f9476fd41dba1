//! rota's control plane: the HTTP API (worker protocol and operator calls), authentication,
//! long-polls, and the sweeper that expires leases and deadlines.
//!
//! No SQL and no job rules live here: state changes are [`rota_store::JobStore`] calls, the
//! rules they apply are `rota_domain::policy`. The library never installs signal handlers;
//! the caller passes a [`CancellationToken`] to [`run`].
//!
//! # Layout
//! - `config`: [`ServerConfig`].
//! - [`Seams`] (`seams`): the bus and leadership a backend provides besides its store.
//! - `state`: shared state handed to handlers (store, bus, leadership, auth cache, wake-ups,
//!   control hub).
//! - `events` (publishing on the bus), `listen` (what each bus event wakes here).
//! - `feed` (the event stream: numbering, replay buffer, resync; served by
//!   `routes/events.rs`).
//! - `metrics` (the Prometheus recorder behind `/metrics`), `fleet_gauges` (the leader's
//!   cached fleet snapshot).
//! - `auth`: admin / join / worker-session extractors.
//! - `hub`: per-session command queues behind `POST /worker/control`.
//! - `parking` (claim long-polls waiting for work), `handoff` (a submit claims for them),
//!   `liveness` (when each session was last heard from: only fresh ones are handed work).
//! - `sweeper`: lease expiry, deadlines, retention; runs only while this server leads.
//! - `schedules`: the schedule controller (fire times → runs); only while this server leads.
//! - `secrets`: the key-encryption key, sealing and opening secrets, resolving references.
//! - `routes/`: one file per resource.
//! - `ui/`: the dashboard at `/ui` (askama pages over the same handlers, made live by htmx
//!   and the event stream; session cookie and cross-site checks in `ui/session.rs`).
//! - `tls`: [`tls::ServerTls`] (the served certificate, reloadable) and the TLS listener.
//! - `error`: [`ApiError`] and the JSON body extractor that turns bad input into 400/413.

mod auth;
mod auth_limit;
pub mod config;
mod error;
mod events;
mod feed;
mod fleet_gauges;
mod handoff;
mod hub;
mod listen;
mod liveness;
mod metrics;
mod namespace;
mod openapi;
mod openapi_facts;
mod parking;
mod refresh;
mod routes;
mod schedules;
mod seams;
pub mod secrets;
mod serve;
mod state;
mod supervisors;
mod sweeper;
pub mod tls;
mod ui;
mod views;

pub use auth::{hash_token, new_token};
pub use config::ServerConfig;
pub use error::ApiError;
pub use metrics::{ProcessProbe, ProcessSample};
pub use seams::{Seams, this_process};

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

/// The router with every route and the OpenAPI document, for tests (`oneshot`): a server
/// that is the whole control plane. Call it inside a Tokio runtime (its bus listener is a
/// task of that runtime).
pub fn router(store: Arc<dyn JobStore>, config: ServerConfig) -> axum::Router {
    let state = state::AppState::new(store, config, Seams::single("in-process"), CancellationToken::new());
    tokio::spawn(listen::run(state.events.bus().subscribe(), state.receivers(), state.shutdown.clone()));
    routes::build(state)
}

/// The OpenAPI document of every endpoint as served: generated from the handlers, with
/// the limits, formats and statuses they enforce.
pub fn openapi() -> serde_json::Value {
    routes::openapi().clone()
}

/// [`run_with`] for a server that is the whole control plane ([`Seams::single`]).
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn JobStore>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    run_with(listener, store, config, Seams::single("localhost"), shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled. Before serving, if no other server
/// of the control plane is serving (a full outage; with one server: always), every live
/// lease is extended by one TTL so workers that kept running while the control plane was
/// down are not marked lost; the admin and join token hashes are loaded from the store
/// (first seeded with `config`'s tokens where it holds none). The bus listener runs until
/// shutdown, and so do the sweeper and the schedule controller, which act only while this
/// server leads.
pub async fn run_with(
    listener: TcpListener,
    store: Arc<dyn JobStore>,
    config: ServerConfig,
    seams: Seams,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if seams.leader.others_serving().await? {
        tracing::info!("other servers are serving: live leases are theirs to keep, none extended");
    } else {
        let extended = store.extend_live_leases(store.now(), config.lease_ttl).await?;
        if extended > 0 {
            tracing::info!(extended, "extended live leases by one TTL after start");
        }
    }
    // Long-polls watch the same token, so they end at once when shutdown begins.
    let state = state::AppState::new(store, config, seams, shutdown.clone());
    // Before serving: a store that cannot be read fails the start, not the first request.
    state.auth.load_credentials(state.store.as_ref(), &state.config).await?;
    let listening =
        tokio::spawn(listen::run(state.events.bus().subscribe(), state.receivers(), shutdown.clone()));
    let app = routes::build(state.clone());
    let sweeper = tokio::spawn(sweeper::run(state.clone(), shutdown.clone()));
    let scheduling = tokio::spawn(schedules::run(state.clone(), shutdown.clone()));
    let refreshing = tokio::spawn(refresh::run(state.clone(), shutdown.clone()));
    let gauging = tokio::spawn(fleet_gauges::run(state.clone(), shutdown.clone()));
    let stop = shutdown.clone();
    let headers = state.config.header_read_timeout;
    match state.config.tls.clone() {
        Some(tls) => {
            tokio::spawn(tls::watch_expiry(tls.clone(), shutdown.clone()));
            serve::serve(tls::TlsListener::new(listener, &tls)?, app, headers, stop).await;
        }
        None => serve::serve(listener, app, headers, stop).await,
    }
    shutdown.cancel();
    let _ = sweeper.await;
    let _ = scheduling.await;
    let _ = refreshing.await;
    let _ = gauging.await;
    let _ = listening.await;
    if let Err(e) = state.leader.resign().await {
        tracing::warn!(error = %e, "could not give up leadership at shutdown");
    }
    Ok(())
}
