//! Who is calling: the admin (operator token), a joining worker (join token) or a worker
//! session (its own credential). Every kind is stored as a SHA-256 hash, never as itself:
//! the admin and join hashes in the store's credentials (shared by every server of the
//! control plane, cached here and read again every [`CREDENTIALS_RECHECK`] or when the bus
//! announces a rotation), session credentials with their session (cached on first use). The hash of the presented token is
//! compared in constant time. This module neither generates nor rotates the admin and join
//! tokens (the CLI does).
//!
//! Unknown or missing token → 401 (`forgotten` for the credential of a session an operator
//! forgot); a valid token on the wrong kind of endpoint → 403. During a rotation's grace the
//! replaced token is accepted too, until the grace ends by the store's clock. Repeated
//! failures from one address are slowed (`auth_limit.rs`).

use crate::auth_limit::AuthFailures;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rota_domain::SessionId;
use rota_store::{CredentialHashes, CredentialKind, JobStore, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session a worker credential belongs to.
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    pub(crate) session: SessionId,
    pub(crate) name: String,
    /// The worker's namespace: what it is told about (pools, configs, secrets) is its own.
    pub(crate) namespace: String,
}

/// How long a cached session credential is trusted before the store is asked again: the
/// bus tells every server when a session ends, and this bounds the time a lost message
/// lets an ended session's credential still pass.
const SESSION_RECHECK: Duration = Duration::from_secs(10);

/// How long the cached admin and join hashes are trusted before the store is read again.
pub(crate) const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);

/// Credential hash → session, filled on first use, emptied when a session ends (a bus
/// event) and re-checked against the store every [`SESSION_RECHECK`]; and the stored admin
/// and join hashes, loaded at start (or by the first request of a server built with
/// [`crate::router`]) and replaced by a reload (the bus's `Credentials` event).
#[derive(Default)]
pub(crate) struct AuthCache {
    sessions: RwLock<HashMap<String, (SessionInfo, Instant)>>,
    credentials: RwLock<Option<(Arc<CredentialHashes>, Instant)>>,
    pub(crate) failures: AuthFailures,
}

impl AuthCache {
    /// Loads the stored admin and join hashes into the cache. First, the tokens `config`
    /// carries (see [`ServerConfig::admin_token`]) are stored, hashed, for each kind the
    /// store holds none of; a configured token the store already holds another hash for is
    /// not used, and said so.
    pub(crate) async fn load_credentials(
        &self,
        store: &dyn JobStore,
        config: &ServerConfig,
    ) -> Result<Arc<CredentialHashes>, StoreError> {
        let mut seeds = CredentialHashes::default();
        for (kind, token) in
            [(CredentialKind::Admin, &config.admin_token), (CredentialKind::Join, &config.join_token)]
        {
            if !token.is_empty() {
                seeds.set(kind, Some(hash_token(token)));
            }
        }
        if seeds == CredentialHashes::default() {
            return self.reload_credentials(store).await;
        }
        let held = store.init_credentials(&seeds, chrono::Utc::now()).await?;
        for kind in CredentialKind::ALL {
            if seeds.get(kind).is_some_and(|s| held.get(kind) != Some(s)) {
                tracing::warn!(
                    "the store already holds another {kind} token: the one configured for this server is not used"
                );
            }
        }
        Ok(self.set_credentials(held))
    }

    /// Re-reads the admin and join hashes from the store (after a rotation), so that the
    /// rotated tokens are accepted and the replaced ones refused from now on.
    pub(crate) async fn reload_credentials(
        &self,
        store: &dyn JobStore,
    ) -> Result<Arc<CredentialHashes>, StoreError> {
        let held = store.credential_hashes().await?;
        Ok(self.set_credentials(held))
    }

    fn set_credentials(&self, held: CredentialHashes) -> Arc<CredentialHashes> {
        for kind in CredentialKind::ALL {
            if held.get(kind).is_none() {
                tracing::warn!("the store holds no {kind} token: every {kind} token is refused");
            }
        }
        let held = Arc::new(held);
        if let Ok(mut c) = self.credentials.write() {
            *c = Some((held.clone(), Instant::now()));
        }
        held
    }

    /// The cached admin and join hashes, loading them on first use.
    pub(crate) async fn credentials(&self, state: &AppState) -> Result<Arc<CredentialHashes>, StoreError> {
        let cached = self.credentials.read().ok().and_then(|c| c.clone());
        match cached {
            Some((held, at)) if at.elapsed() < CREDENTIALS_RECHECK => Ok(held),
            // Re-read now and then: a rotation made elsewhere (another server, `rota server
            // rotate-token`) reaches this server even when no bus message says so.
            Some(_) => self.reload_credentials(state.store.as_ref()).await,
            None => self.load_credentials(state.store.as_ref(), &state.config).await,
        }
    }

    pub(crate) fn forget_session(&self, session: SessionId) {
        if let Ok(mut m) = self.sessions.write() {
            m.retain(|_, (v, _)| v.session != session);
        }
    }

    /// Forgets the cached admin and join hashes (a rotation was announced, or a bus message
    /// was missed): the next request reads them again.
    pub(crate) fn forget_credentials(&self) {
        if let Ok(mut c) = self.credentials.write() {
            *c = None;
        }
    }

    /// Forgets every cached session (a bus message was missed: any may have ended).
    pub(crate) fn forget_all_sessions(&self) {
        if let Ok(mut m) = self.sessions.write() {
            m.clear();
        }
    }

    fn get(&self, hash: &str) -> Option<SessionInfo> {
        let m = self.sessions.read().ok()?;
        let (info, at) = m.get(hash)?;
        (at.elapsed() < SESSION_RECHECK).then(|| info.clone())
    }

    fn put(&self, hash: String, info: SessionInfo) {
        if let Ok(mut m) = self.sessions.write() {
            m.insert(hash, (info, Instant::now()));
        }
    }
}

/// SHA-256 hex of a token or credential, as stored: the one hash of every kind (the CLI
/// stores the admin and join hashes with it too).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh admin or join token: 32 random bytes, hex (the one generator: `rota server`'s
/// first start and every rotation use it).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// A fresh random credential (32 bytes, hex).
pub(crate) fn new_credential() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("rw_{}", hex::encode(bytes))
}

/// Whether `hash` is the stored one, in constant time; nothing matches a missing or empty one.
pub(crate) fn matches(hash: &str, stored: Option<&str>) -> bool {
    stored.is_some_and(|b| !b.is_empty() && hash.as_bytes().ct_eq(b.as_bytes()).into())
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let text = value.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not text"))?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
}

enum Caller {
    Admin,
    /// The join token; `previous` when it is the replaced one, still in its grace.
    Joiner {
        previous: bool,
    },
    Worker(SessionInfo),
}

/// The address a request came from (unknown in `oneshot` tests: one shared bucket).
pub(crate) fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Extractor: the address a request came from ([`peer`]).
pub(crate) struct Peer(pub(crate) IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts)))
    }
}

/// 429 for an address slowed by [`AuthFailures`].
pub(crate) fn slowed(state: &AppState, addr: IpAddr) -> Result<(), ApiError> {
    match state.auth.failures.retry_after(addr, state.config.auth_failures_per_minute, Instant::now()) {
        Some(wait) => Err(ApiError::too_many_attempts(wait)),
        None => Ok(()),
    }
}

/// Who the bearer token of `parts` is. Slowed addresses get 429 before any check; a 401 is
/// counted against the address.
async fn identify(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let addr = peer(parts);
    slowed(state, addr)?;
    let found = match bearer(parts) {
        Ok(token) => lookup(hash_token(token), state).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &found
        && e.status == axum::http::StatusCode::UNAUTHORIZED
    {
        state.auth.failures.failed(addr, state.config.auth_failures_per_minute, Instant::now());
    }
    found
}

async fn lookup(hash: String, state: &AppState) -> Result<Caller, ApiError> {
    let held = state.auth.credentials(state).await?;
    if matches(&hash, held.admin.as_deref()) {
        return Ok(Caller::Admin);
    }
    if matches(&hash, held.join.as_deref()) {
        return Ok(Caller::Joiner { previous: false });
    }
    if let Some(kind) = in_grace(&held, &hash, state.store.now()) {
        return Ok(match kind {
            CredentialKind::Admin => Caller::Admin,
            CredentialKind::Join => Caller::Joiner { previous: true },
        });
    }
    if let Some(info) = state.auth.get(&hash) {
        return Ok(Caller::Worker(info));
    }
    match state.store.session_by_token(&hash).await? {
        Some(w) => {
            let info = SessionInfo { session: w.session, name: w.name, namespace: w.namespace };
            state.auth.put(hash, info.clone());
            Ok(Caller::Worker(info))
        }
        None if state.store.is_forgotten(&hash).await? => Err(ApiError::forgotten()),
        None => Err(ApiError::unauthorized("unknown or expired token")),
    }
}

/// The kind whose replaced token `hash` is, while its grace lasts at `now`.
pub(crate) fn in_grace(
    held: &CredentialHashes,
    hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<CredentialKind> {
    held.previous.iter().find(|p| p.until > now && matches(hash, Some(&p.hash))).map(|p| p.kind)
}

/// Extractor: the caller holds the admin token.
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Joiner { .. } => {
                Err(ApiError::forbidden("the join token cannot call operator endpoints"))
            }
            Caller::Worker(_) => {
                Err(ApiError::forbidden("a worker credential cannot call operator endpoints"))
            }
        }
    }
}

/// Extractor: a caller that may watch the control plane (the event stream): the admin
/// bearer token, as for [`Admin`], or, on a `GET` without an `Authorization` header, the
/// dashboard's session cookie (`ui/session.rs`). Only read-only routes take it, so a cookie
/// a browser sends on its own never changes anything.
pub(crate) struct Viewer;

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.method == axum::http::Method::GET
            && !parts.headers.contains_key(axum::http::header::AUTHORIZATION)
            && crate::ui::session::cookie(&parts.headers).is_some()
        {
            return match crate::ui::session::verify(&parts.headers, state).await {
                Some(_) => Ok(Viewer),
                None => Err(ApiError::unauthorized("the dashboard session has ended: log in again")),
            };
        }
        Admin::from_request_parts(parts, state).await.map(|Admin| Viewer)
    }
}

/// Extractor: the caller holds the join token (`previous`: the replaced one, in its grace).
pub(crate) struct Joiner {
    pub(crate) previous: bool,
}

impl FromRequestParts<AppState> for Joiner {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Joiner { previous } => Ok(Joiner { previous }),
            _ => Err(ApiError::forbidden("registration needs the join token")),
        }
    }
}

/// Extractor: the caller is a live worker session.
pub(crate) struct Session(pub(crate) SessionInfo);

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Worker(info) => Ok(Session(info)),
            _ => {
                Err(ApiError::forbidden("worker endpoints need a worker session credential (register first)"))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use rota_store_sqlite::{SqliteOptions, SqliteStore};
    use tower::ServiceExt;

    async fn status(app: &axum::Router, token: &str) -> StatusCode {
        let req = Request::builder()
            .uri("/api/v1/jobs")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    fn state_of(store: Arc<dyn JobStore>, config: ServerConfig) -> AppState {
        AppState::new(store, config, crate::Seams::single("test"), tokio_util::sync::CancellationToken::new())
    }

    /// The configured tokens seed an empty store; later servers over that store check the
    /// stored hashes, whatever they are configured with; a rotation in the store is honoured
    /// after a reload (or the periodic re-read), not before.
    #[tokio::test]
    async fn callers_are_checked_against_the_stored_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap());
        let seeded =
            ServerConfig { admin_token: "a1".into(), join_token: "j1".into(), ..ServerConfig::default() };
        let first = crate::routes::build(state_of(store.clone(), seeded));
        assert_eq!(status(&first, "a1").await, StatusCode::OK);
        assert_eq!(status(&first, "j1").await, StatusCode::FORBIDDEN, "the join token on an operator route");
        assert_eq!(status(&first, "nope").await, StatusCode::UNAUTHORIZED);
        let held = store.credential_hashes().await.unwrap();
        assert_eq!(held.admin.as_deref(), Some(hash_token("a1").as_str()), "the store holds the hash");

        // Another server over the same store, configured with other tokens and with none.
        let other =
            ServerConfig { admin_token: "a2".into(), join_token: "j2".into(), ..ServerConfig::default() };
        let second = crate::routes::build(state_of(store.clone(), other));
        assert_eq!(status(&second, "a1").await, StatusCode::OK, "the stored token, not the configured one");
        assert_eq!(status(&second, "a2").await, StatusCode::UNAUTHORIZED);
        let third = crate::routes::build(state_of(store.clone(), ServerConfig::default()));
        assert_eq!(status(&third, "a1").await, StatusCode::OK);

        let state = state_of(store.clone(), ServerConfig::default());
        let app = crate::routes::build(state.clone());
        assert_eq!(status(&app, "a1").await, StatusCode::OK);
        store.rotate_credential(CredentialKind::Admin, &hash_token("a3"), chrono::Utc::now()).await.unwrap();
        assert_eq!(status(&app, "a1").await, StatusCode::OK, "cached until a reload");
        state.auth.reload_credentials(store.as_ref()).await.unwrap();
        assert_eq!(status(&app, "a1").await, StatusCode::UNAUTHORIZED, "the replaced token is refused");
        assert_eq!(status(&app, "a3").await, StatusCode::OK, "the rotated token is accepted");
        assert_eq!(status(&app, "j1").await, StatusCode::FORBIDDEN, "the join token is unchanged");
    }

    async fn post(app: &axum::Router, uri: &str, token: &str, body: &str) -> axum::response::Response {
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        app.clone().oneshot(req).await.unwrap()
    }

    /// `POST /api/v1/tokens/join/rotate` with a grace: the new token works at once, the old
    /// one until the grace ends (by the store's clock) and not after; the reply carries the
    /// token, which the store holds only as a hash and a sealed copy.
    #[tokio::test]
    async fn a_rotated_token_is_accepted_with_the_old_one_until_the_grace_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap());
        let ring = Arc::new(crate::secrets::Keyring::new(crate::secrets::SecretKey::generate(), None));
        let config = ServerConfig {
            admin_token: "a1".into(),
            join_token: "j1".into(),
            secret_key: Some(ring.clone()),
            ..ServerConfig::default()
        };
        let app = crate::routes::build(state_of(store.clone(), config));
        assert_eq!(status(&app, "a1").await, StatusCode::OK);

        let r = post(&app, "/api/v1/tokens/join/rotate", "a1", r#"{"graceMs": 1500}"#).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let reply: rota_api_types::tokens::RotateReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply.kind, "join");
        assert!(reply.grace_until.is_some());
        let held = store.credential_hashes().await.unwrap();
        assert_eq!(held.join.as_deref(), Some(hash_token(&reply.token).as_str()));
        let sealed = held.previous[0].handover.clone().unwrap();
        assert!(!sealed.contains(&reply.token), "only sealed");
        assert_eq!(
            ring.open_token("join", &sealed).as_deref().map(String::as_str),
            Some(reply.token.as_str())
        );
        // Both join tokens are join tokens now (403 on an operator route, not 401).
        assert_eq!(status(&app, &reply.token).await, StatusCode::FORBIDDEN);
        assert_eq!(status(&app, "j1").await, StatusCode::FORBIDDEN, "the old one, in its grace");
        tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
        assert_eq!(status(&app, "j1").await, StatusCode::UNAUTHORIZED, "the grace ended");
        assert_eq!(status(&app, &reply.token).await, StatusCode::FORBIDDEN);

        let bad = post(&app, "/api/v1/tokens/root/rotate", "a1", "{}").await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let long = post(&app, "/api/v1/tokens/admin/rotate", "a1", r#"{"graceMs": 999999999999}"#).await;
        assert_eq!(long.status(), StatusCode::BAD_REQUEST);
        let by_join = post(&app, "/api/v1/tokens/admin/rotate", &reply.token, "{}").await;
        assert_eq!(by_join.status(), StatusCode::FORBIDDEN, "only the admin rotates");
        assert_eq!(status(&app, "a1").await, StatusCode::OK, "nothing rotated by the refused calls");
    }

    /// Failed authentications from one address are answered 429 with Retry-After once past
    /// the threshold, whatever the token; successes never count.
    #[tokio::test]
    async fn repeated_failures_from_one_address_are_slowed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap());
        let config =
            ServerConfig { admin_token: "a1".into(), join_token: "j1".into(), ..ServerConfig::default() };
        let app = crate::routes::build(state_of(store, config));
        for _ in 0..crate::auth_limit::MAX_FAILURES * 2 {
            assert_eq!(status(&app, "a1").await, StatusCode::OK, "successes do not count");
        }
        for _ in 0..crate::auth_limit::MAX_FAILURES {
            assert_eq!(status(&app, "wrong").await, StatusCode::UNAUTHORIZED);
        }
        let req = Request::builder()
            .uri("/api/v1/jobs")
            .header("authorization", "Bearer wrong")
            .body(Body::empty())
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(status(&app, "a1").await, StatusCode::TOO_MANY_REQUESTS, "the address is slowed");
    }
}
