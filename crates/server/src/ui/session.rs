//! The dashboard's login: a signed, expiring session cookie that every server of the control
//! plane accepts, and the cross-site checks of every state-changing dashboard request. It
//! owns the cookie's format, its signing key and those checks; what a page shows is the
//! pages'.
//!
//! The cookie is `v1.<expiry>.<nonce>.<mac>`, an HMAC-SHA256 under a key derived from the
//! stored admin token hash (shared by every server, so any of them accepts it, and replaced
//! by a rotation, which ends every session) and, when the server has one, the secrets key
//! file (so that reading the database alone is not enough to forge one). Nothing is stored
//! per session: logging out removes the cookie from the browser; rotating the admin token
//! ends every session at once.

use crate::auth::{hash_token, matches};
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;
use zeroize::Zeroizing;

/// The cookie's name.
pub(crate) const COOKIE: &str = "rota_session";
/// How long a login lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The header every state-changing dashboard request carries its anti-forgery token in
/// (htmx sends it from the page's `hx-headers`; a cross-site form cannot set a header).
pub(crate) const CSRF_HEADER: &str = "x-rota-csrf";

type HmacSha256 = Hmac<Sha256>;

/// A verified session.
#[derive(Clone, Debug)]
pub(crate) struct UiSession {
    /// The token state-changing requests of this session must carry in [`CSRF_HEADER`].
    pub(crate) csrf: String,
}

/// The signing key of sessions, `None` when the store holds no admin token (nobody can log in).
async fn signing_key(state: &AppState) -> Option<Zeroizing<[u8; 32]>> {
    let held = state.auth.credentials(state).await.ok()?;
    let admin = held.admin.clone()?;
    let mut h = Sha256::new();
    h.update(b"rota-ui-session\0");
    h.update(admin.as_bytes());
    if let Some(keyring) = &state.config.secret_key {
        h.update(keyring.current().derive("rota-ui-session").as_ref());
    }
    Some(Zeroizing::new(h.finalize().into()))
}

fn mac(key: &[u8; 32], text: &str) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC key of any length"));
    m.update(text.as_bytes());
    m
}

fn csrf_of(key: &[u8; 32], nonce: &str) -> String {
    hex::encode(&mac(key, &format!("csrf.{nonce}")).finalize().into_bytes()[..16])
}

/// The session cookie a browser sent, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The session the request's cookie proves, if it is valid and unexpired.
pub(crate) async fn verify(headers: &HeaderMap, state: &AppState) -> Option<UiSession> {
    let value = cookie(headers)?;
    let key = signing_key(state).await?;
    let mut parts = value.splitn(4, '.');
    let (version, expiry, nonce, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "v1" || nonce.len() != 32 {
        return None;
    }
    let sig = hex::decode(sig).ok()?;
    // Constant time: `verify_slice` compares the MAC so.
    mac(&key, &format!("v1.{expiry}.{nonce}")).verify_slice(&sig).ok()?;
    let expiry: i64 = expiry.parse().ok()?;
    if expiry <= chrono::Utc::now().timestamp() {
        return None;
    }
    Some(UiSession { csrf: csrf_of(&key, nonce) })
}

/// Checks a login token; on success the `Set-Cookie` value of a fresh session.
pub(crate) async fn login(state: &AppState, token: &str, secure: bool) -> Option<HeaderValue> {
    let held = state.auth.credentials(state).await.ok()?;
    if !matches(&hash_token(token.trim()), held.admin.as_deref()) {
        return None;
    }
    let key = signing_key(state).await?;
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let expiry = chrono::Utc::now().timestamp() + SESSION_TTL.as_secs() as i64;
    let sig = hex::encode(mac(&key, &format!("v1.{expiry}.{nonce}")).finalize().into_bytes());
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=v1.{expiry}.{nonce}.{sig}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    ))
    .ok()
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn logout_cookie() -> HeaderValue {
    HeaderValue::from_static("rota_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Why a state-changing request is refused as cross-site, `None` when it is not: the
/// browser's own `Sec-Fetch-Site` (when sent) must say same-origin, an `Origin` (when sent)
/// must be this server's, and the session's anti-forgery token must be in [`CSRF_HEADER`].
pub(crate) fn cross_site(headers: &HeaderMap, session: Option<&UiSession>) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some("the request came from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin_host != host {
            return Some("the request's Origin is not this server");
        }
    }
    let session = session?;
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), session.csrf.as_bytes())) {
        return Some("the request lacks this page's anti-forgery token");
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; rota_session=v1.x.y.z; b=2"));
        assert_eq!(cookie(&h), Some("v1.x.y.z"));
        h.insert(header::COOKIE, HeaderValue::from_static("rota_sessionx=1"));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn cross_site_checks() {
        let s = UiSession { csrf: "t".into() };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7777"));
        assert!(cross_site(&h, Some(&s)).is_some(), "no token");
        h.insert(CSRF_HEADER, HeaderValue::from_static("t"));
        assert_eq!(cross_site(&h, Some(&s)), None);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert!(cross_site(&h, Some(&s)).is_some(), "another origin (port)");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7777"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site(&h, Some(&s)).is_some(), "same-site is not same-origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(cross_site(&h, Some(&s)), None);
    }
}
