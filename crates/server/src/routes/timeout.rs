//! The request timeout of every route but the long-polls (tower-http's Timeout), answered
//! in the same JSON error shape as every other error. Which routes are long-polls is
//! decided in `routes/mod.rs`, not here.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;

/// Bounds every request of `routes` (reading its body included) to `limit`: past it the
/// client gets 408 `timeout` (which rota's clients retry) and the server logs one warning.
/// The OpenAPI document lists the 408 on exactly these routes.
pub(super) fn bounded(mut routes: OpenApiRouter<AppState>, limit: Duration) -> OpenApiRouter<AppState> {
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            op.responses.responses.entry("408".into()).or_insert_with(|| {
                utoipa::openapi::Response::new(
                    "The request took longer than the server's request timeout (60 s by default); retry it",
                )
                .into()
            });
        }
    }
    routes
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit))
        .layer(axum::middleware::map_response(move |res: Response| async move { as_json(res, limit) }))
}

/// tower-http answers a timeout with an empty 408; handlers never answer 408, and every
/// body they send is typed, so an untyped 408 is the timeout's.
fn as_json(res: Response, limit: Duration) -> Response {
    if res.status() != StatusCode::REQUEST_TIMEOUT || res.headers().contains_key(header::CONTENT_TYPE) {
        return res;
    }
    let limit = humanize(limit);
    tracing::warn!("request timed out after {limit}");
    ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        code: "timeout",
        message: format!("the request took longer than the server's request timeout ({limit}); retry it"),
        pointer: None,
        retry_after: None,
    }
    .into_response()
}

/// `1.5s`, `60s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
