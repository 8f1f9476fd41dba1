//! Declared resources (`rota apply`, `get`, `delete`, `diff`) and starting a workflow
//! (`rota run`). An apply validates every document first and then stores all of them in one
//! store transaction, or none; each refusal names the field to blame as a JSON pointer into
//! the request (`/documents/2/spec/steps/0/needs/0`), which the CLI maps back to its file.
//! The rules (generation, inputs, naming) are `rota_domain`'s; nothing is stored here but
//! through the store.

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::namespace::Scope;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rota_api_types::jobs::SubmitResponse;
use rota_api_types::resources::{
    API_VERSION, ApplyRequest, ApplyResponse, ApplyResult, DEFAULT_LIST_LIMIT, DeleteRequest, DeleteResponse,
    DeleteResult, ListResourcesQuery, MAX_LIST_LIMIT, ResourceDocument, ResourceList, ResourceSpec,
    ResourceView, RunRequest, StoredMetadata,
};
use rota_domain::resource::{self, Applied, Kind, MAX_DOCUMENT_BYTES, Status};
use rota_domain::workflow::{InputError, WorkflowSpec};
use rota_domain::{JobId, JobState, limits};
use rota_store::NewJob;
use rota_store::bus::Event;
use rota_store::resources::{AppliedResource, ResourceKey, ResourceRecord, ResourceWrite};
use std::collections::{BTreeMap, HashMap};

/// Most documents in one apply or resources in one delete.
const MAX_DOCUMENTS: usize = 1000;

/// 400 for document `i`, blaming `field` (a domain path relative to `under`).
fn invalid(i: usize, under: &str, field: &str, message: &str) -> ApiError {
    let rel = if field.is_empty() { under.to_string() } else { format!("{under}.{field}") };
    ApiError::invalid_at(
        format!("/documents/{i}{}", resource::json_pointer(&rel)),
        format!("documents[{i}].{rel}: {message}"),
    )
}

/// A document checked and ready to store, with its spec's canonical text.
fn prepare(i: usize, doc: &ResourceDocument) -> Result<ResourceWrite, ApiError> {
    if let Some(v) = doc.api_version()
        && v != API_VERSION
    {
        return Err(invalid(i, "apiVersion", "", &format!("`{v}` is not known; use {API_VERSION}")));
    }
    doc.metadata().validate().map_err(|e| invalid(i, &e.field, "", &e.message))?;
    doc.validate_spec().map_err(|e| invalid(i, "spec", &e.path, &e.message))?;
    let spec = serde_json::to_string(&doc.spec()).map_err(ApiError::internal)?;
    if spec.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(
            i,
            "spec",
            "",
            &format!("is {} bytes; the limit is {MAX_DOCUMENT_BYTES}", spec.len()),
        ));
    }
    Ok(ResourceWrite { kind: doc.kind(), metadata: doc.metadata().clone(), spec })
}

fn spec_view(kind: Kind, text: &str) -> Result<ResourceSpec, ApiError> {
    ResourceSpec::parse(kind, text)
        .map_err(|e| ApiError::internal(format!("a stored {kind} spec cannot be read: {e}")))
}

/// A schedule's workflow must exist (stored, or declared in the same apply) and take the
/// schedule's inputs: refused at apply, naming `spec.workflow` or `spec.inputs.NAME`.
async fn check_schedules(state: &AppState, req: &ApplyRequest) -> Result<(), ApiError> {
    // A schedule runs a workflow of its own namespace.
    let declared: HashMap<(&str, &str), &WorkflowSpec> = req
        .documents
        .iter()
        .filter_map(|d| match d {
            ResourceDocument::Workflow(w) => {
                Some(((w.metadata.namespace.as_str(), w.metadata.name.as_str()), &w.spec))
            }
            _ => None,
        })
        .collect();
    for (i, doc) in req.documents.iter().enumerate() {
        let ResourceDocument::Schedule(d) = doc else { continue };
        let stored;
        let workflow = match declared.get(&(d.metadata.namespace.as_str(), d.spec.workflow.as_str())) {
            Some(w) => *w,
            None => {
                let key =
                    ResourceKey::new(d.metadata.namespace.clone(), Kind::Workflow, d.spec.workflow.clone());
                let Some(found) = state.store.get_resource(&key).await? else {
                    return Err(invalid(
                        i,
                        "spec",
                        "workflow",
                        &format!(
                            "workflow `{}` does not exist; declare it first (or in the same apply)",
                            d.spec.workflow
                        ),
                    ));
                };
                let ResourceSpec::Workflow(w) = spec_view(found.kind, &found.spec)? else {
                    return Err(ApiError::internal("a stored workflow is not a workflow"));
                };
                stored = w;
                &stored
            }
        };
        workflow.job(&d.spec.workflow, &d.spec.input_texts(), None).map_err(|e| match &e {
            InputError::Unknown { name, .. }
            | InputError::Missing { name }
            | InputError::WrongType { name, .. } => {
                let field = if matches!(e, InputError::Missing { .. }) {
                    "inputs".to_string()
                } else {
                    format!("inputs.{name}")
                };
                invalid(i, "spec", &field, &e.to_string())
            }
            InputError::Job(s) => invalid(i, "spec", "inputs", &s.to_string()),
        })?;
    }
    Ok(())
}

async fn view(state: &AppState, r: ResourceRecord) -> Result<ResourceView, ApiError> {
    let spec = spec_view(r.kind, &r.spec)?;
    let mut status = r.status;
    if let ResourceSpec::Schedule(s) = &spec {
        status.schedule = Some(
            crate::schedules::status_of(state, &r.metadata.namespace, &r.metadata.name, s, state.store.now())
                .await?,
        );
    }
    Ok(ResourceView {
        api_version: API_VERSION.to_string(),
        kind: r.kind,
        spec,
        metadata: StoredMetadata {
            name: r.metadata.name,
            namespace: r.metadata.namespace,
            labels: r.metadata.labels,
            generation: r.generation,
            creation_timestamp: r.created_at,
        },
        status,
    })
}

fn kind_of(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).map_err(|e| ApiError::not_found(e.to_string()))
}

/// Creates or updates every document, all or nothing; `dryRun` only says what would change.
#[utoipa::path(post, path = "/api/v1/resources/apply", tag = "resources", security(("admin" = [])), request_body = ApplyRequest,
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = ApplyResponse), (status = 400, body = rota_api_types::ErrorBody, description = "a document is invalid (`error.pointer` names the field); nothing was stored"),
        (status = 401), (status = 403), (status = 409, description = "a Secret document, and this server holds no secret key (or it was rotated meanwhile)"), (status = 413), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn apply(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(mut req): ApiJson<ApplyRequest>,
) -> Result<Json<ApplyResponse>, ApiError> {
    limits::check_count("documents", req.documents.len(), MAX_DOCUMENTS).map_err(ApiError::limit)?;
    // As `kubectl apply -n`: a document naming no namespace goes into the call's; one
    // naming another than a namespace the call gave is refused.
    for (i, doc) in req.documents.iter_mut().enumerate() {
        let m = doc.metadata_mut();
        if rota_domain::namespace::is_default(&m.namespace) {
            m.namespace = scope.namespace.clone();
        } else if m.namespace != scope.namespace && !rota_domain::namespace::is_default(&scope.namespace) {
            return Err(invalid(
                i,
                "metadata",
                "namespace",
                &format!(
                    "the document says '{}' but the call is in namespace '{}'",
                    m.namespace, scope.namespace
                ),
            ));
        }
    }
    let mut writes = Vec::with_capacity(req.documents.len());
    // Secrets are kept apart from the other kinds (sealed, in their own table): checked
    // with the others, written after them.
    let mut secrets: Vec<SecretDoc> = Vec::new();
    let mut order: Vec<Option<usize>> = Vec::with_capacity(req.documents.len());
    let mut seen: HashMap<ResourceKey, usize> = HashMap::new();
    for (i, doc) in req.documents.iter().enumerate() {
        if let ResourceDocument::Secret(d) = doc {
            let key = ResourceKey::new(d.metadata.namespace.clone(), Kind::Secret, d.metadata.name.clone());
            if let Some(j) = seen.insert(key.clone(), i) {
                return Err(invalid(i, "metadata.name", "", &format!("{key} is also documents[{j}]")));
            }
            secrets.push((i, prepare_secret(i, d)?, None));
            if d.spec.has_values() {
                let values = d.spec.values().map_err(|e| invalid(i, "spec", &e.field, &e.message))?;
                if let Some(last) = secrets.last_mut() {
                    last.2 = Some(values);
                }
            }
            order.push(None);
            continue;
        }
        let w = prepare(i, doc)?;
        if let Some(j) = seen.insert(w.key(), i) {
            return Err(invalid(i, "metadata.name", "", &format!("{} is also documents[{j}]", w.key())));
        }
        order.push(Some(writes.len()));
        writes.push(w);
    }
    check_schedules(&state, &req).await?;
    check_secret_refs(&state, &req).await?;
    // A dry run decides from what is stored now; a real apply reports what its own
    // transaction saw and did (another apply racing it cannot skew the answer).
    let done: Vec<AppliedResource> = if req.dry_run {
        let mut done = Vec::with_capacity(writes.len());
        for w in &writes {
            let before = state.store.get_resource(&w.key()).await?;
            let (next, applied) =
                resource::apply(w.kind, before.clone().map(stored), w.metadata.clone(), w.spec.clone());
            done.push(AppliedResource { applied, generation: next.generation, previous: before });
        }
        done
    } else if writes.is_empty() {
        Vec::new()
    } else {
        state.store.apply_resources(writes.clone(), state.store.now()).await?
    };
    let mut results = Vec::with_capacity(writes.len());
    let mut events = Vec::new();
    for (w, AppliedResource { applied: action, generation, previous: b }) in writes.iter().zip(done) {
        if action != Applied::Unchanged && !req.dry_run {
            events.push(Event::Resource {
                resource: w.kind.as_str().to_string(),
                name: w.metadata.name.clone(),
                namespace: Some(w.metadata.namespace.clone()),
                change: Some("applied".into()),
            });
        }
        results.push(ApplyResult {
            kind: w.kind,
            name: w.metadata.name.clone(),
            action,
            generation,
            previous: b.as_ref().map(|b| spec_view(b.kind, &b.spec)).transpose()?,
            previous_labels: b.map(|b| b.metadata.labels),
        });
    }
    if !events.is_empty() {
        state.publish(events);
    }
    let mut secret_results = HashMap::new();
    for (i, metadata, values) in secrets {
        let before = super::secrets::stored(&state, &metadata.namespace, &metadata.name).await?;
        let (action, generation) = if req.dry_run {
            match &before {
                None => (Applied::Created, 1),
                Some(b) if values.is_some() => (Applied::Configured, b.generation + 1),
                Some(b) if b.labels != metadata.labels => (Applied::Configured, b.generation),
                Some(b) => (Applied::Unchanged, b.generation),
            }
        } else {
            super::secrets::write(&state, &metadata, values).await?
        };
        secret_results.insert(
            i,
            ApplyResult {
                kind: Kind::Secret,
                name: metadata.name.clone(),
                action,
                generation,
                // Never a value: the keys as stored before.
                previous: before.as_ref().map(secret_spec),
                previous_labels: before.map(|b| b.labels),
            },
        );
    }
    let mut results: Vec<Option<ApplyResult>> = results.into_iter().map(Some).collect();
    let results: Vec<ApplyResult> = order
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| match slot {
            Some(w) => results.get_mut(*w).and_then(Option::take),
            None => secret_results.remove(&i),
        })
        .collect();
    Ok(Json(ApplyResponse { results, dry_run: req.dry_run }))
}

/// A `Secret` document of an apply: its index, metadata and values (none: keep the stored).
type SecretDoc = (usize, resource::Metadata, Option<BTreeMap<String, Vec<u8>>>);

/// A `Secret` document's metadata, checked (its values are checked by the caller).
fn prepare_secret(
    i: usize,
    d: &rota_api_types::resources::SecretDocument,
) -> Result<resource::Metadata, ApiError> {
    if let Some(v) = &d.api_version
        && v != API_VERSION
    {
        return Err(invalid(i, "apiVersion", "", &format!("`{v}` is not known; use {API_VERSION}")));
    }
    d.metadata.validate().map_err(|e| invalid(i, &e.field, "", &e.message))?;
    Ok(d.metadata.clone())
}

/// A stored secret's spec as reads show it: key names and sizes.
fn secret_spec(r: &rota_store::secrets::SecretRecord) -> ResourceSpec {
    ResourceSpec::Secret(rota_api_types::secrets::SecretSpec { keys: r.keys.clone(), ..Default::default() })
}

/// A stored secret as a resource view (key names and sizes only).
fn secret_view(r: &rota_store::secrets::SecretRecord) -> ResourceView {
    ResourceView {
        api_version: API_VERSION.to_string(),
        kind: Kind::Secret,
        spec: secret_spec(r),
        metadata: StoredMetadata {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            labels: r.labels.clone(),
            generation: r.generation,
            creation_timestamp: r.created_at,
        },
        status: Status::default(),
    }
}

/// Secret references of workflows and worker configs must name a secret (stored, or
/// declared in the same apply) and one of its keys: refused at apply, naming the field.
async fn check_secret_refs(state: &AppState, req: &ApplyRequest) -> Result<(), ApiError> {
    use rota_domain::secret::SecretRef;
    let declared: HashMap<&str, Option<Vec<String>>> = req
        .documents
        .iter()
        .filter_map(|d| match d {
            ResourceDocument::Secret(s) => Some((
                s.metadata.name.as_str(),
                s.spec.has_values().then(|| s.spec.values().unwrap_or_default().into_keys().collect()),
            )),
            _ => None,
        })
        .collect();
    for (i, doc) in req.documents.iter().enumerate() {
        let refs: Vec<(String, SecretRef)> = match doc {
            ResourceDocument::WorkerConfig(d) => d.spec.secret_refs(),
            ResourceDocument::Workflow(d) => {
                let mut refs: Vec<(String, SecretRef)> = d
                    .spec
                    .env
                    .iter()
                    .filter_map(|(k, v)| Some((format!("env.{k}"), v.secret()?.clone())))
                    .collect();
                for (j, st) in d.spec.steps.iter().enumerate() {
                    refs.extend(
                        st.env
                            .iter()
                            .filter_map(|(k, v)| Some((format!("steps[{j}].env.{k}"), v.secret()?.clone()))),
                    );
                }
                refs
            }
            _ => continue,
        };
        // A secret declared alongside with values answers for itself; one declared without
        // values is the stored one.
        let mut stored_refs = Vec::new();
        for (field, r) in refs {
            match declared.get(r.name()) {
                Some(Some(keys)) if keys.iter().any(|k| k == r.key()) => {}
                Some(Some(_)) => {
                    return Err(invalid(
                        i,
                        "spec",
                        &field,
                        &format!("secret '{}' has no key '{}'", r.name(), r.key()),
                    ));
                }
                _ => stored_refs.push((field, r)),
            }
        }
        // References name secrets of the document's own namespace.
        let checked =
            crate::secrets::check_refs(state.store.as_ref(), &doc.metadata().namespace, stored_refs).await?;
        if let Err((field, problem)) = checked {
            return Err(invalid(i, "spec", &field, &problem));
        }
    }
    Ok(())
}

fn stored(r: ResourceRecord) -> resource::Stored<String> {
    resource::Stored {
        kind: r.kind,
        metadata: r.metadata,
        generation: r.generation,
        spec: r.spec,
        status: Status::default(),
    }
}

/// The resources of a kind (`workflows`, `Workflow`, `wf`) by name, a page at a time as
/// Kubernetes lists: at most `limit` (default 500, at most 1000), with a `continue` token
/// while more remain.
#[utoipa::path(get, path = "/api/v1/resources/{kind}", tag = "resources", security(("admin" = [])),
    params(("kind" = String, Path, description = "kind: `Workflow`, `workflows` or `wf`; `Schedule`, `schedules` or `sched`"), ListResourcesQuery,
        rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = ResourceList), (status = 400, body = rota_api_types::ErrorBody, description = "`limit` out of 1-1000, or a `continue` token no listing gave"),
        (status = 401), (status = 403), (status = 404, description = "unknown kind")))]
pub(crate) async fn list(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListResourcesQuery>,
) -> Result<Json<ResourceList>, ApiError> {
    let kind = kind_of(&kind)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
    }
    // The token is the last key of the previous page, `NAMESPACE/NAME`: anything that is not
    // one never came from a listing (and must not reach the store as a bound).
    let after = match &q.continue_token {
        None => None,
        Some(token) => {
            let parsed = token.split_once('/').filter(|(ns, name)| {
                rota_domain::namespace::check("continue", ns).is_ok()
                    && rota_domain::limits::check_name("continue", name).is_ok()
            });
            match parsed {
                Some(p) => Some(p),
                None => {
                    return Err(ApiError::bad_request(
                        "continue: not a token a listing returned; pass back the previous page's `continue` as is",
                    ));
                }
            }
        }
    };
    if kind == Kind::Secret {
        // Few per namespace: one page, by name (of the call's namespace, also with
        // allNamespaces: secrets are listed one namespace at a time).
        let items = super::secrets::all(&state, &scope.namespace).await?.iter().map(secret_view).collect();
        return Ok(Json(ResourceList { items, continue_token: None }));
    }
    // One more than asked says whether another page follows without a second query.
    let mut rows = state.store.list_resources(kind, scope.filter(), after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let continue_token = if more {
        rows.last().map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name))
    } else {
        None
    };
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(view(&state, r).await?);
    }
    Ok(Json(ResourceList { items, continue_token }))
}

/// One resource.
#[utoipa::path(get, path = "/api/v1/resources/{kind}/{name}", tag = "resources", security(("admin" = [])),
    params(("kind" = String, Path), ("name" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = ResourceView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath((kind, name)): ApiPath<(String, String)>,
) -> Result<Json<ResourceView>, ApiError> {
    let key = ResourceKey::new(scope.namespace, kind_of(&kind)?, name);
    if key.kind == Kind::Secret {
        return match super::secrets::stored(&state, &key.namespace, &key.name).await? {
            Some(r) => Ok(Json(secret_view(&r))),
            None => Err(ApiError::not_found(format!("no {key}"))),
        };
    }
    match state.store.get_resource(&key).await? {
        Some(r) => Ok(Json(view(&state, r).await?)),
        None => Err(ApiError::not_found(format!("no {key}"))),
    }
}

/// Deletes one resource.
#[utoipa::path(delete, path = "/api/v1/resources/{kind}/{name}", tag = "resources", security(("admin" = [])),
    params(("kind" = String, Path), ("name" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = DeleteResult), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn delete_one(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath((kind, name)): ApiPath<(String, String)>,
) -> Result<Json<DeleteResult>, ApiError> {
    let key = ResourceKey::new(scope.namespace, kind_of(&kind)?, name);
    let mut results = delete(&state, vec![key.clone()]).await?;
    match results.pop() {
        Some(r) if r.deleted => Ok(Json(r)),
        _ => Err(ApiError::not_found(format!("no {key}"))),
    }
}

/// Deletes several resources together; a missing one is reported, not an error.
#[utoipa::path(post, path = "/api/v1/resources/delete", tag = "resources", security(("admin" = [])), request_body = DeleteRequest,
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = DeleteResponse), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn delete_many(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DeleteRequest>,
) -> Result<Json<DeleteResponse>, ApiError> {
    limits::check_count("resources", req.resources.len(), MAX_DOCUMENTS).map_err(ApiError::limit)?;
    let mut keys = Vec::with_capacity(req.resources.len());
    for (i, r) in req.resources.iter().enumerate() {
        let kind = Kind::parse(&r.kind).map_err(|e| {
            ApiError::invalid_at(format!("/resources/{i}/kind"), format!("resources[{i}].kind: {e}"))
        })?;
        keys.push(ResourceKey::new(scope.namespace.clone(), kind, r.name.clone()));
    }
    Ok(Json(DeleteResponse { results: delete(&state, keys).await? }))
}

async fn delete(state: &AppState, keys: Vec<ResourceKey>) -> Result<Vec<DeleteResult>, ApiError> {
    // Secrets live apart from the other kinds.
    let (secrets, keys): (Vec<ResourceKey>, Vec<ResourceKey>) =
        keys.into_iter().partition(|k| k.kind == Kind::Secret);
    let mut secret_results = Vec::with_capacity(secrets.len());
    for k in secrets {
        let deleted = super::secrets::remove(state, &k.namespace, &k.name).await?;
        secret_results.push(DeleteResult { kind: k.kind, name: k.name, deleted });
    }
    let gone = if keys.is_empty() { Vec::new() } else { state.store.delete_resources(keys.clone()).await? };
    let events: Vec<Event> = keys
        .iter()
        .zip(&gone)
        .filter(|(_, deleted)| **deleted)
        .map(|(k, _)| Event::Resource {
            resource: k.kind.as_str().to_string(),
            name: k.name.clone(),
            namespace: Some(k.namespace.clone()),
            change: Some("deleted".into()),
        })
        .collect();
    let results: Vec<DeleteResult> = keys
        .into_iter()
        .zip(gone)
        .map(|(k, deleted)| DeleteResult { kind: k.kind, name: k.name, deleted })
        .collect();
    if !events.is_empty() {
        state.publish(events);
    }
    let mut results = results;
    results.extend(secret_results);
    Ok(results)
}

/// Starts a workflow: its steps as one job, inputs typed and checked, `on` overriding its
/// target host.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "resources", security(("admin" = [])), request_body = RunRequest,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Starting twice with one key yields one run"),
        rota_api_types::namespace::NamespaceQuery),
    responses((status = 201, body = SubmitResponse), (status = 200, body = SubmitResponse, description = "the key named a run already started"), (status = 400, body = rota_api_types::ErrorBody, description = "an unknown input, a missing one or a value of the wrong type (`error.pointer`: `/inputs/NAME`)"),
        (status = 401), (status = 403), (status = 404), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn run(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let idempotency_key = match headers.get(rota_api_types::IDEMPOTENCY_KEY_HEADER) {
        Some(v) => Some(
            v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key header is not text"))?.to_string(),
        ),
        None => None,
    };
    let key = ResourceKey::new(scope.namespace.clone(), Kind::Workflow, name.clone());
    let Some(found) = state.store.get_resource(&key).await? else {
        return Err(ApiError::not_found(format!("no {key}; `rota apply -f FILE` declares it")));
    };
    let spec: WorkflowSpec = serde_json::from_str(&found.spec)
        .map_err(|e| ApiError::internal(format!("a stored {key} spec cannot be read: {e}")))?;
    let mut job = spec.job(&name, &req.inputs, req.on.as_deref()).map_err(|e| match &e {
        InputError::Unknown { name, .. }
        | InputError::Missing { name }
        | InputError::WrongType { name, .. } => {
            ApiError::invalid_at(format!("/inputs/{name}"), e.to_string())
        }
        InputError::Job(s) => ApiError::bad_request(s.to_string()),
    })?;
    // A run is a job of the workflow's namespace, claimed by that namespace's workers.
    job.namespace = scope.namespace.clone();
    if let Some(k) = idempotency_key {
        job.idempotency_key = Some(k);
        job.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(refused) = super::secrets::refused_job(&state, &job).await? {
        return Err(ApiError::bad_request(refused));
    }
    let mut results = crate::handoff::submit_jobs(
        &state,
        vec![NewJob { id: JobId::new(), spec: job, now: chrono::Utc::now() }],
    )
    .await?;
    let submitted = results.pop().ok_or_else(|| ApiError::internal("store returned no result"))??;
    if !submitted.created {
        return Ok((StatusCode::OK, Json(SubmitResponse { id: submitted.id, created: false })));
    }
    state.metrics.jobs_submitted(1);
    state.publish(vec![
        Event::Claimable,
        Event::Job {
            job: submitted.id,
            state: Some(JobState::Queued),
            namespace: Some(scope.namespace.clone()),
        },
    ]);
    Ok((StatusCode::CREATED, Json(SubmitResponse { id: submitted.id, created: true })))
}
