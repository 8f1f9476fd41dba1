//! Secrets over HTTP (`/api/v1/secrets...`) and the `Secret` kind of `rota apply`, `get`
//! and `delete` (the resource routes call [`write`], [`view`] and the store for it). Values
//! come in (write-only) and are sealed here with the server's key before they reach the
//! store; every answer shows key names and sizes only. Error messages name keys and
//! fields, never a value. `rotate-key` re-seals every secret under a new key.

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::namespace::Scope;
use crate::secrets::{Keyring, SecretKey, Values};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use rota_api_types::secrets::{
    DeleteSecretResponse, PutSecretRequest, RotateKeyRequest, RotateKeyResponse, SecretList, SecretView,
};
use rota_domain::resource::{Applied, Metadata};
use rota_store::bus::Event;
use rota_store::secrets::{SecretRecord, SecretWrite};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The key ring, or 409 saying how to give the server one.
pub(crate) fn keyring(state: &AppState) -> Result<&Keyring, ApiError> {
    state.config.secret_key.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "this server holds no secret key; start it with --secret-key-file (rota server does)",
        )
    })
}

/// The first of `refs` (field, reference) that names no stored secret or no key of it, as
/// `FIELD: problem`; checked at submit and apply so a typo is a 400, not a failed step.
pub(crate) async fn refused_refs(
    state: &AppState,
    namespace: &str,
    refs: impl IntoIterator<Item = (String, rota_domain::secret::SecretRef)>,
) -> Result<Option<String>, ApiError> {
    let checked = crate::secrets::check_refs(state.store.as_ref(), namespace, refs).await?;
    Ok(checked.err().map(|(field, problem)| format!("{field}: {problem}")))
}

/// [`refused_refs`] of a job document.
pub(crate) async fn refused_job(
    state: &AppState,
    spec: &rota_domain::JobSpec,
) -> Result<Option<String>, ApiError> {
    let refs: Vec<(String, rota_domain::secret::SecretRef)> =
        spec.secret_refs().into_iter().map(|(f, r)| (f, r.clone())).collect();
    // A job's references name secrets of its own namespace.
    refused_refs(state, &spec.namespace, refs).await
}

/// A stored secret as reads show it.
pub(crate) fn view(r: &SecretRecord) -> SecretView {
    SecretView {
        name: r.name.clone(),
        labels: r.labels.clone(),
        generation: r.generation,
        keys: r.keys.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Creates or replaces secret `metadata.name`: with `values`, they replace the stored ones
/// (equal values keep the stored sealed bytes: `unchanged`); without, the stored values are
/// kept and only the labels are applied (a document read back by `rota get` applies
/// unchanged). Values are already checked (names, sizes).
pub(crate) async fn write(
    state: &AppState,
    metadata: &Metadata,
    values: Option<BTreeMap<String, Vec<u8>>>,
) -> Result<(Applied, u64), ApiError> {
    let keyring = keyring(state)?;
    let name = &metadata.name;
    let ns = metadata.namespace.as_str();
    let old = state.store.get_secret(ns, name).await?;
    let key = keyring.current();
    let (keys, sealed) = match (values, &old) {
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "secret '{name}' does not exist, so it needs values: give spec.data or spec.stringData"
            )));
        }
        (None, Some(o)) => (o.keys.clone(), o.sealed.clone()),
        (Some(values), old) => {
            let values: Values = values.into_iter().map(|(k, v)| (k, Zeroizing::new(v))).collect();
            let keys = values.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
            // The same values keep their sealed bytes, so re-applying a file is `unchanged`.
            let same = match old {
                Some(o) if o.key_fingerprint == key.fingerprint() => {
                    keyring.open(o).ok().is_some_and(|v| v == values)
                }
                _ => false,
            };
            match old {
                Some(o) if same => (keys, o.sealed.clone()),
                _ => (keys, key.seal(ns, name, &values)),
            }
        }
    };
    let write = SecretWrite {
        namespace: ns.to_string(),
        name: name.clone(),
        labels: metadata.labels.clone(),
        keys,
        sealed,
        key_fingerprint: key.fingerprint(),
    };
    let applied = state.store.put_secret(write, state.store.now()).await?;
    let generation = match state.store.get_secret(ns, name).await? {
        Some(r) => r.generation,
        None => return Err(ApiError::internal("a secret just stored cannot be read back")),
    };
    if applied != Applied::Unchanged {
        state.publish(vec![Event::Resource {
            resource: "Secret".into(),
            name: name.clone(),
            namespace: Some(ns.to_string()),
            change: Some("applied".into()),
        }]);
    }
    Ok((applied, generation))
}

/// One secret of `namespace`, if it exists.
pub(crate) async fn stored(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<Option<SecretRecord>, ApiError> {
    Ok(state.store.get_secret(namespace, name).await?)
}

/// The secrets of `namespace`.
pub(crate) async fn all(state: &AppState, namespace: &str) -> Result<Vec<SecretRecord>, ApiError> {
    Ok(state.store.list_secrets(namespace).await?)
}

/// Deletes one secret; whether it existed.
pub(crate) async fn remove(state: &AppState, namespace: &str, name: &str) -> Result<bool, ApiError> {
    let gone = state.store.delete_secret(namespace, name).await?;
    if gone {
        state.publish(vec![Event::Resource {
            resource: "Secret".into(),
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            change: Some("deleted".into()),
        }]);
    }
    Ok(gone)
}

/// Creates or replaces a secret: `data` holds every key it is to have (base64 values of at
/// least 6 bytes). The answer shows key names and sizes, never a value.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", security(("admin" = [])),
    params(("name" = String, Path), rota_api_types::namespace::NamespaceQuery), request_body = PutSecretRequest,
    responses((status = 200, body = rota_api_types::secrets::PutSecretResponse), (status = 400, body = rota_api_types::ErrorBody, description = "a bad name, key or value (the message names the key, never the value)"),
        (status = 401), (status = 403), (status = 409, description = "the server holds no secret key, or the key was rotated meanwhile"), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn put_secret(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PutSecretRequest>,
) -> Result<Json<rota_api_types::secrets::PutSecretResponse>, ApiError> {
    let metadata = Metadata { name, namespace: scope.namespace, labels: req.labels };
    metadata.validate().map_err(ApiError::limit)?;
    let spec = rota_api_types::secrets::SecretSpec { data: req.data, ..Default::default() };
    let values = spec.values().map_err(ApiError::limit)?;
    if values.is_empty() {
        return Err(ApiError::bad_request("data: a secret needs at least one key"));
    }
    let (action, _) = write(&state, &metadata, Some(values)).await?;
    let r = stored(&state, &metadata.namespace, &metadata.name)
        .await?
        .ok_or_else(|| ApiError::internal("a secret just stored cannot be read back"))?;
    Ok(Json(rota_api_types::secrets::PutSecretResponse { action, secret: view(&r) }))
}

/// The secrets, by name: key names and sizes only.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", security(("admin" = [])),
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = SecretList), (status = 401), (status = 403)))]
pub(crate) async fn list_secrets(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
) -> Result<Json<SecretList>, ApiError> {
    Ok(Json(SecretList { items: all(&state, &scope.namespace).await?.iter().map(view).collect() }))
}

/// One secret: key names and sizes only.
#[utoipa::path(get, path = "/api/v1/secrets/{name}", tag = "secrets", security(("admin" = [])),
    params(("name" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = SecretView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_secret(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SecretView>, ApiError> {
    match stored(&state, &scope.namespace, &name).await? {
        Some(r) => Ok(Json(view(&r))),
        None => Err(ApiError::not_found(format!("no secret named '{name}'"))),
    }
}

/// Deletes a secret. Steps already handed its values keep them; later claims of steps
/// referring to it fail, naming it.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", security(("admin" = [])),
    params(("name" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = DeleteSecretResponse), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn delete_secret(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DeleteSecretResponse>, ApiError> {
    if remove(&state, &scope.namespace, &name).await? {
        Ok(Json(DeleteSecretResponse { name, deleted: true }))
    } else {
        Err(ApiError::not_found(format!("no secret named '{name}'")))
    }
}

/// Re-encrypts every secret (of every namespace) under a new key-encryption key in one
/// transaction, then makes this server use it and rewrites its key file (the previous
/// content kept as `<file>.previous`). The other servers of a fleet follow once their key
/// file holds the new key (README: rotating the secret key).
#[utoipa::path(post, path = "/api/v1/secrets/rotate-key", tag = "secrets", security(("admin" = [])),
    request_body = RotateKeyRequest,
    responses((status = 200, body = RotateKeyResponse), (status = 400, description = "not a key"), (status = 401), (status = 403),
        (status = 409, description = "the server holds no secret key, or secrets changed during the rotation (run it again)"),
        (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn rotate_secret_key(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RotateKeyRequest>,
) -> Result<Json<RotateKeyResponse>, ApiError> {
    let keyring = keyring(&state)?;
    let new = SecretKey::from_text(&Zeroizing::new(req.key))
        .map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    let held = state
        .store
        .secret_key_fingerprint()
        .await?
        .ok_or_else(|| ApiError::conflict("the store holds no secret key yet"))?;
    let old = keyring.key_for(&held).ok_or_else(|| {
        ApiError::conflict(format!("this server does not hold the store's secret key (fingerprint {held})"))
    })?;
    if new.fingerprint() == held {
        return Err(ApiError::bad_request("key: that is the key already in use"));
    }
    let all = state.store.all_secrets().await?;
    let mut resealed = Vec::with_capacity(all.len());
    for r in &all {
        let values = old.open(r).map_err(|e| ApiError::conflict(format!("secret '{}': {e}", r.name)))?;
        resealed.push(SecretRecord { sealed: new.seal(&r.namespace, &r.name, &values), ..r.clone() });
    }
    state.store.reseal_secrets(&held, &new.fingerprint(), resealed, state.store.now()).await?;
    keyring.replace(new.clone());
    let key_file = match keyring.file() {
        Some(path) => {
            crate::secrets::replace_key_file(path, &new).map_err(|e| {
                ApiError::internal(format!(
                    "the secrets were re-encrypted under the new key, but its key file {} could not be \
                     rewritten ({e}): copy the new key file there before this server restarts",
                    path.display()
                ))
            })?;
            Some(path.display().to_string())
        }
        None => None,
    };
    tracing::info!(previous = %held, fingerprint = %new.fingerprint(), secrets = all.len(), "secret key rotated");
    Ok(Json(RotateKeyResponse {
        previous_fingerprint: held,
        fingerprint: new.fingerprint(),
        secrets: all.len() as u64,
        key_file,
    }))
}
