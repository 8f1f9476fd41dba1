//! Who is calling: the admin (operator token), a joining worker (join token) or a worker
//! session (its own credential). Tokens are compared in constant time; session credentials
//! are stored and looked up as SHA-256 hashes and cached in memory.
//!
//! Unknown or missing token → 401; a valid token on the wrong kind of endpoint → 403.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rota_domain::SessionId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session a worker credential belongs to.
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    pub(crate) session: SessionId,
    pub(crate) name: String,
}

/// How long a cached session credential is trusted before the store is asked again: the
/// bus tells every server when a session ends, and this bounds the time a lost message
/// lets an ended session's credential still pass.
const SESSION_RECHECK: Duration = Duration::from_secs(10);

/// Credential hash → session, filled on first use, emptied when a session ends (a bus
/// event) and re-checked against the store every [`SESSION_RECHECK`].
#[derive(Default)]
pub(crate) struct AuthCache {
    sessions: RwLock<HashMap<String, (SessionInfo, Instant)>>,
}

impl AuthCache {
    pub(crate) fn forget_session(&self, session: SessionId) {
        if let Ok(mut m) = self.sessions.write() {
            m.retain(|_, (v, _)| v.session != session);
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

/// SHA-256 hex of a credential, as stored.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random credential (32 bytes, hex).
pub(crate) fn new_credential() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("rw_{}", hex::encode(bytes))
}

fn eq(a: &str, b: &str) -> bool {
    !b.is_empty() && a.as_bytes().ct_eq(b.as_bytes()).into()
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
    Joiner,
    Worker(SessionInfo),
}

async fn identify(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(parts)?;
    if eq(token, &state.config.admin_token) {
        return Ok(Caller::Admin);
    }
    if eq(token, &state.config.join_token) {
        return Ok(Caller::Joiner);
    }
    let hash = hash_token(token);
    if let Some(info) = state.auth.get(&hash) {
        return Ok(Caller::Worker(info));
    }
    match state.store.session_by_token(&hash).await? {
        Some(w) => {
            let info = SessionInfo { session: w.session, name: w.name };
            state.auth.put(hash, info.clone());
            Ok(Caller::Worker(info))
        }
        None => Err(ApiError::unauthorized("unknown or expired token")),
    }
}

/// Extractor: the caller holds the admin token.
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Joiner => Err(ApiError::forbidden("the join token cannot call operator endpoints")),
            Caller::Worker(_) => {
                Err(ApiError::forbidden("a worker credential cannot call operator endpoints"))
            }
        }
    }
}

/// Extractor: the caller holds the join token.
pub(crate) struct Joiner;

impl FromRequestParts<AppState> for Joiner {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Joiner => Ok(Joiner),
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
