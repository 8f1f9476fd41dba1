//! The dashboard at `/ui`: server-rendered pages (askama templates compiled into the binary)
//! made live by htmx and its SSE extension (vendored under `assets/`, no Node build), over the
//! same API handlers and event stream the CLI uses. It owns routing, the page frame, the
//! security headers and rendering; it must not hold job rules or SQL (it calls the API's
//! handlers, so the dashboard and the API cannot disagree).
//!
//! Every page is bounded: a page of rows, never a whole table, and log tails capped
//! ([`MAX_PAGE_ROWS`], [`LOG_TAIL_BYTES`]).

mod actions;
mod assets;
mod fleet;
mod graph;
mod jobs;
mod queues;
mod resources;
pub(crate) mod session;
mod throughput;

use crate::error::ApiError;
use crate::namespace::Scope;
use crate::state::AppState;
use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use session::UiSession;

/// Rows a page shows at most (jobs, workers, resources...).
pub(crate) const MAX_PAGE_ROWS: usize = 50;
/// Bytes of a step's output a job page shows at most (the tail); the rest is a download.
pub(crate) const LOG_TAIL_BYTES: u64 = 64 << 10;

/// The Content-Security-Policy of every dashboard response: scripts and styles from this
/// server's files only (no inline script or style, no `eval`), nothing framed, forms posted
/// here only; violations are reported to [`csp_report`].
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
    report-uri /ui/csp-report";

/// The dashboard's routes (merged into the server's router).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/csp-report", post(csp_report))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/fleet", get(fleet::page))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/jobs/{id}/logs", get(jobs::logs))
        .route("/ui/jobs/{id}/logs.txt", get(jobs::download))
        .route("/ui/queues", get(queues::page))
        .route("/ui/resources", get(resources::page))
        .route("/ui/throughput", get(throughput::page))
        .route("/ui/heal", post(actions::heal))
        .route("/ui/jobs/{id}/cancel", post(actions::cancel))
        .route("/ui/jobs/{id}/retry", post(actions::retry))
        .route("/ui/jobs/{id}/revoke", post(actions::revoke))
        .route("/ui/queues/{queue}/pause", post(actions::pause))
        .route("/ui/queues/{queue}/resume", post(actions::resume))
        .route("/ui/workflows/{name}/run", post(actions::run_workflow))
        .route("/ui/schedules/{name}/suspend", post(actions::suspend))
        .route("/ui/schedules/{name}/resume", post(actions::unsuspend))
        // Unknown dashboard paths only: the API keeps its own JSON 404.
        .route(
            "/ui/{*rest}",
            axum::routing::any(|| async { UiError::Api(ApiError::not_found("no such dashboard page")) }),
        )
        // Route layers: a `layer` would also wrap this router's fallback, which the merge
        // makes the whole server's (the API's unknown paths would get dashboard pages).
        .route_layer(axum::middleware::from_fn(error_pages))
        .route_layer(axum::middleware::map_response(security_headers))
}

/// The message of a refused dashboard request, for [`error_pages`].
#[derive(Clone)]
struct UiMessage(String);

#[derive(Template)]
#[template(path = "ui/error_page.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A refusal answered to a browser's navigation (not an htmx request, whose answer goes into
/// the page) becomes a page of its own: the status, what was wrong, a way back. Covers
/// axum's own rejections (a malformed id in the path, say), whose body is plain text.
async fn error_pages(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let htmx = req.headers().contains_key("hx-request");
    let response = next.run(req).await;
    let status = response.status();
    if htmx || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let known = response.extensions().get::<UiMessage>().cloned();
    if is_html && known.is_none() {
        // A page already (the login page's refusal).
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = match known {
        Some(UiMessage(m)) => m,
        None => {
            let bytes = axum::body::to_bytes(body, 16 << 10).await.unwrap_or_default();
            String::from_utf8_lossy(&bytes).trim().to_string()
        }
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    let message = if message.is_empty() { reason.to_string() } else { message };
    match (ErrorPage { status: status.as_u16(), reason, message: &message }).render() {
        Ok(page) => (parts.status, Html(page)).into_response(),
        Err(_) => (parts.status, message).into_response(),
    }
}

/// Headers every dashboard response carries.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What every page's frame shows: the namespace selector, navigation, the anti-forgery
/// token htmx sends, and the one event-stream connection of the page.
pub(crate) struct Chrome {
    pub(crate) title: String,
    pub(crate) active: &'static str,
    /// The namespace selected (`*`: every namespace).
    pub(crate) ns: String,
    pub(crate) namespaces: Vec<String>,
    pub(crate) csrf: String,
    /// The page's event stream.
    pub(crate) events_url: String,
}

impl Chrome {
    /// The query string that keeps the namespace across links (`ns=...`).
    pub(crate) fn nsq(&self) -> String {
        format!("ns={}", urlencode(&self.ns))
    }

    /// The navigation: (path, label, whether it is this page).
    pub(crate) fn nav(&self) -> Vec<(&'static str, &'static str, bool)> {
        [
            ("fleet", "Fleet"),
            ("jobs", "Jobs"),
            ("queues", "Queues"),
            ("resources", "Resources"),
            ("throughput", "Throughput"),
        ]
        .into_iter()
        .map(|(k, l)| (k, l, k == self.active))
        .collect()
    }

    /// Whether every namespace is shown (a NAMESPACE column then).
    pub(crate) fn all(&self) -> bool {
        self.ns == "*"
    }
}

/// A dashboard request from a logged-in browser: its session, the namespace it looks at and
/// whether htmx asks for the live part of the page only.
pub(crate) struct UiRequest {
    pub(crate) session: UiSession,
    pub(crate) scope: Scope,
    /// `ns` as given (`*` for every namespace).
    pub(crate) ns: String,
    /// An htmx request: render the page's live fragment only.
    pub(crate) fragment: bool,
}

#[derive(Deserialize)]
struct NsQuery {
    ns: Option<String>,
}

/// Why a dashboard request is refused.
pub(crate) enum UiError {
    /// Not logged in (or the session ended): to the login page.
    Login,
    /// A refusal with a status and a message (rendered where the request's answer goes).
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        UiError::Api(ApiError::internal(format!("rendering a page: {e}")))
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorFragment<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            // htmx follows `HX-Redirect`; a plain navigation follows the 303.
            UiError::Login => {
                let mut r = Redirect::to("/ui/login").into_response();
                r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/ui/login"));
                r
            }
            UiError::Api(e) => {
                let body = ErrorFragment { status: e.status.as_u16(), message: &e.message }
                    .render()
                    .unwrap_or_else(|_| "error".into());
                let mut r = (e.status, Html(body)).into_response();
                r.extensions_mut().insert(UiMessage(e.message));
                r
            }
        }
    }
}

impl FromRequestParts<AppState> for UiRequest {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let session = session::verify(&parts.headers, state).await.ok_or(UiError::Login)?;
        let axum::extract::Query(q) = axum::extract::Query::<NsQuery>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let ns = q.ns.filter(|n| !n.is_empty()).unwrap_or_else(rota_domain::namespace::default_owned);
        let scope = if ns == "*" {
            Scope { namespace: rota_domain::namespace::default_owned(), all: true }
        } else {
            rota_domain::namespace::check("ns", &ns).map_err(ApiError::limit)?;
            Scope { namespace: ns.clone(), all: false }
        };
        let fragment = parts.headers.get("hx-request").is_some_and(|v| v == "true")
            && parts.headers.get("hx-boosted").is_none();
        Ok(UiRequest { session, scope, ns, fragment })
    }
}

/// A state-changing dashboard request: logged in, and not forged by another site.
pub(crate) struct UiAction(pub(crate) UiRequest);

impl FromRequestParts<AppState> for UiAction {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let req = UiRequest::from_request_parts(parts, state).await?;
        if let Some(why) = session::cross_site(&parts.headers, Some(&req.session)) {
            tracing::warn!(path = %parts.uri.path(), why, "dashboard: cross-site request refused");
            return Err(ApiError::forbidden(format!("refused: {why}")).into());
        }
        Ok(UiAction(req))
    }
}

impl UiRequest {
    /// The page frame.
    pub(crate) async fn chrome(
        &self,
        state: &AppState,
        title: impl Into<String>,
        active: &'static str,
        extra_events: &str,
    ) -> Chrome {
        let ns_param = if self.scope.all {
            "allNamespaces=true".to_string()
        } else {
            format!("namespace={}", urlencode(&self.scope.namespace))
        };
        Chrome {
            title: title.into(),
            active,
            ns: self.ns.clone(),
            namespaces: known_namespaces(state, &self.ns).await,
            csrf: self.session.csrf.clone(),
            events_url: format!("/api/v1/events?follow=true&{ns_param}{extra_events}"),
        }
    }
}

/// Namespaces worth offering in the selector: those of live workers, queues and resources,
/// `default` and the one selected.
async fn known_namespaces(state: &AppState, selected: &str) -> Vec<String> {
    let mut set = std::collections::BTreeSet::from([rota_domain::namespace::default_owned()]);
    if selected != "*" {
        set.insert(selected.to_string());
    }
    if let Ok(workers) = state.store.list_workers().await {
        set.extend(workers.into_iter().map(|w| w.namespace));
    }
    if let Ok(queues) = state.store.queue_stats(None).await {
        set.extend(queues.into_iter().map(|q| q.namespace));
    }
    // Bounded: a selector, not a listing.
    set.into_iter().take(MAX_PAGE_ROWS).collect()
}

/// Renders a template as an HTML response.
pub(crate) fn html(t: &impl Template) -> Result<Response, UiError> {
    Ok(Html(t.render()?).into_response())
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A short age ("3s", "4m", "2h", "5d").
pub(crate) fn age(since: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - since).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A time for people, UTC.
pub(crate) fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
}

async fn login_page(headers: HeaderMap, State(state): State<AppState>) -> Result<Response, UiError> {
    if session::verify(&headers, &state).await.is_some() {
        return Ok(Redirect::to("/ui/fleet").into_response());
    }
    html(&LoginPage { error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the admin token and starts a session. A login form posted from another site is
/// refused (login forgery would log the victim into the attacker's session).
async fn login(
    headers: HeaderMap,
    crate::auth::Peer(addr): crate::auth::Peer,
    State(state): State<AppState>,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    if let Some(why) = session::cross_site(&headers, None) {
        return Err(ApiError::forbidden(format!("refused: {why}")).into());
    }
    // Wrong tokens count against the address like the API's (and are slowed the same way).
    crate::auth::slowed(&state, addr)?;
    if form.token.len() > rota_domain::limits::MAX_NAME * 4 {
        return Err(ApiError::bad_request("token: too long").into());
    }
    let Some(cookie) = session::login(&state, &form.token, state.config.tls.is_some()).await else {
        tracing::warn!("dashboard: a login with a wrong token was refused");
        state.auth.failures.failed(addr, state.config.auth_failures_per_minute, std::time::Instant::now());
        let page = LoginPage { error: Some("That is not the admin token.") }.render()?;
        return Ok((StatusCode::UNAUTHORIZED, Html(page)).into_response());
    };
    let mut r = Redirect::to("/ui/fleet").into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

/// Ends the browser's session (the cookie is removed; rotating the admin token ends all).
async fn logout(UiAction(_): UiAction) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::SET_COOKIE, session::logout_cookie());
    r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/ui/login"));
    r
}

/// A browser's report of a Content-Security-Policy violation: logged and counted
/// (`rota_ui_csp_violations_total`), so a page that breaks under the policy is seen.
async fn csp_report(State(state): State<AppState>, body: axum::body::Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
    tracing::warn!(report = %text, "dashboard: Content-Security-Policy violation");
    state.metrics.csp_violation();
    StatusCode::NO_CONTENT
}
