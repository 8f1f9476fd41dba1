//! Assembles the router: every handler is registered through `utoipa_axum::routes!` so
//! `/openapi.json` is generated from the same code that serves requests.

mod events;
pub(crate) mod fleet;
mod host;
pub(crate) mod jobs;
mod logs;
mod meta;
pub(crate) mod resources;
pub(crate) mod secrets;
pub(crate) mod supervisors;
mod timeout;
pub(crate) mod tokens;
mod worker;
pub(crate) mod workers;

use crate::config::ServerConfig;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

fn api_router(config: &ServerConfig) -> OpenApiRouter<AppState> {
    let (body_limit, log_body_limit) = (config.body_limit, config.log_body_limit);
    let small = OpenApiRouter::new()
        .routes(routes!(jobs::submit_job))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(workers::list_workers))
        .routes(routes!(workers::forget))
        .routes(routes!(workers::unblock))
        .routes(routes!(tokens::rotate))
        .routes(routes!(supervisors::list_supervisors))
        .routes(routes!(fleet::revoke))
        .routes(routes!(fleet::list_revokes))
        .routes(routes!(fleet::list_queues))
        .routes(routes!(fleet::pause_queue))
        .routes(routes!(fleet::resume_queue))
        .routes(routes!(worker::register))
        .routes(routes!(worker::heartbeat))
        .routes(routes!(host::pool))
        .routes(routes!(host::configs))
        .routes(routes!(worker::start_step))
        .routes(routes!(worker::unregister))
        .routes(routes!(resources::list))
        .routes(routes!(resources::get, resources::delete_one))
        .routes(routes!(resources::delete_many))
        .routes(routes!(resources::run))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::put_secret, secrets::get_secret, secrets::delete_secret))
        .routes(routes!(secrets::rotate_secret_key))
        .layer(DefaultBodyLimit::max(body_limit));
    // Long-polls (log follow, fleet replies, control, claim) hold a request on purpose, each
    // bounded by `max_poll`: the request timeout would cut them.
    let polls = OpenApiRouter::new()
        .routes(routes!(jobs::job_logs))
        .routes(routes!(fleet::fleet_control))
        .routes(routes!(worker::control))
        .routes(routes!(worker::claim))
        .routes(routes!(supervisors::link))
        .routes(routes!(supervisors::heal))
        .routes(routes!(events::events))
        .layer(DefaultBodyLimit::max(body_limit));
    let large = OpenApiRouter::new()
        .routes(routes!(jobs::submit_batch))
        .routes(routes!(resources::apply))
        .routes(routes!(worker::complete_step))
        .routes(routes!(worker::complete_batch))
        .routes(routes!(worker::append_logs))
        .routes(routes!(worker::append_logs_batch))
        .routes(routes!(logs::append_log_frames))
        .layer(DefaultBodyLimit::max(log_body_limit));
    let meta = OpenApiRouter::new()
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::healthz_detail))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::openapi_json));
    let bounded = small.merge(large).merge(meta);
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(timeout::bounded(bounded, config.request_timeout))
        .merge(polls)
}

/// The OpenAPI document as served: generated from the handlers, with security schemes and
/// what the types cannot say (`openapi_facts`). Built once.
pub(crate) fn openapi() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(generated()).unwrap_or_default();
        crate::openapi_facts::complete(&mut doc);
        doc
    })
}

fn generated() -> utoipa::openapi::OpenApi {
    let mut doc = api_router(&ServerConfig::default()).into_openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    for name in ["admin", "join", "worker"] {
        components.add_security_scheme(
            name,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    doc
}

pub(crate) fn build(state: AppState) -> axum::Router {
    let (router, _) = api_router(&state.config).split_for_parts();
    // The dashboard: forms and CSP reports are small; its pages are read-only GETs.
    let router = router.merge(crate::ui::router().route_layer(DefaultBodyLimit::max(64 << 10)));
    // One span per request (method, path, version): what a handler logs names its request.
    let trace = TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO));
    router.with_state(state).layer(trace)
}
