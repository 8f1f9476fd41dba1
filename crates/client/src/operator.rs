//! Operator calls (admin token): submit, list, show, logs, cancel, retry, workers,
//! declared resources (apply, get, delete, run) and `/healthz`. One pooled connection set per [`Client`]; no retries here.

use crate::error::Result;
use crate::transport::{CALL_TIMEOUT, Call, Failover, Route, Transport, long_poll_timeout};
use reqwest::{Method, StatusCode, Url};
use rota_api_types::IDEMPOTENCY_KEY_HEADER;
use rota_api_types::fleet::{
    FleetRequest, FleetResponse, QueueList, QueueView, RevokeList, RevokeRequest, RevokeResponse,
};
use rota_api_types::jobs::{
    BatchSubmitResponse, JobDetail, JobList, JobSummary, ListJobsQuery, LogPage, LogsQuery, SubmitResponse,
};
use rota_api_types::resources::{
    ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, ResourceList, ResourceView, RunRequest,
};
use rota_api_types::workers::WorkerList;
use rota_domain::{JobId, JobSpec};
use serde::{Deserialize, Serialize};

/// Reply of `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the server is serving.
    pub status: String,
    /// The server's rota version.
    pub version: String,
    /// Use of its total log quota (absent from older servers).
    #[serde(default)]
    pub logs: Option<rota_api_types::jobs::LogQuotaUse>,
    /// When the server's TLS certificate expires (absent without TLS, and from older servers).
    #[serde(default, rename = "tlsNotAfter")]
    pub tls_not_after: Option<String>,
}

/// Typed client for the operator API. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    transport: Transport,
    token: Option<String>,
    /// The namespace every `/api/v1` call acts in (`None`: the server's default).
    namespace: Option<String>,
    /// Listings span every namespace.
    all_namespaces: bool,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    jobs: &'a [JobSpec],
}

const NO_BODY: Option<&()> = None;

impl Client {
    /// A client for `server` (`host:port` or URL, or a comma-separated list of them: the
    /// servers of one control plane) using the admin `token`, if any.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        Self::trusting(server, token, &crate::CaCerts::default())
    }

    /// [`Self::new`], trusting `ca` besides the system roots over `https://`.
    pub fn trusting(server: &str, token: Option<String>, ca: &crate::CaCerts) -> Result<Self> {
        Ok(Self { transport: Transport::new(server, ca)?, token, namespace: None, all_namespaces: false })
    }

    /// The same client acting in `namespace` (every `/api/v1` call carries it).
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The same client listing every namespace (`allNamespaces=true` on every call; the
    /// server reads it on listings only).
    pub fn across_namespaces(mut self, all: bool) -> Self {
        self.all_namespaces = all;
        self
    }

    /// The route of an operator call: `segments` under the base URL with `query`, plus
    /// the client's namespace parameters.
    fn route(&self, segments: &[&str], query: &[(&str, String)]) -> Route {
        let mut pairs = query.to_vec();
        if let Some(ns) = &self.namespace {
            pairs.push(("namespace", ns.clone()));
        }
        if self.all_namespaces {
            pairs.push(("allNamespaces", "true".to_string()));
        }
        self.transport.route(segments, &pairs)
    }

    /// The base URL of the server calls go to first (the one that answered last).
    pub fn base_url(&self) -> &Url {
        self.transport.base()
    }

    /// Every server's base URL, in the order given.
    pub fn server_urls(&self) -> &[Url] {
        self.transport.bases()
    }

    /// A call with the admin token. Reads and idempotent writes fail over to the next
    /// server; the callers of anything that could act twice say [`Failover::Unsent`].
    fn call<'a, B: Serialize + ?Sized>(
        &'a self,
        method: Method,
        route: Route,
        body: Option<&'a B>,
    ) -> Call<'a, B> {
        Call {
            method,
            route,
            token: self.token.as_deref(),
            body,
            timeout: CALL_TIMEOUT,
            headers: &[],
            failover: Failover::Always,
        }
    }

    /// `POST /api/v1/jobs`. `created` is true for a 201 (new job) and false for a 200 (the
    /// idempotency key matched an existing job). With a key (header or document) a submit
    /// that got no answer is sent again to the next server; without one only if it never left.
    pub async fn submit(&self, spec: &JobSpec, idempotency_key: Option<&str>) -> Result<SubmitResponse> {
        let route = self.route(&["api", "v1", "jobs"], &[]);
        let headers: Vec<(&'static str, &str)> =
            idempotency_key.map(|k| (IDEMPOTENCY_KEY_HEADER, k)).into_iter().collect();
        let keyed = idempotency_key.is_some() || spec.idempotency_key.is_some();
        let failover = if keyed { Failover::Always } else { Failover::Unsent };
        let call = Call { headers: &headers, failover, ..self.call(Method::POST, route, Some(spec)) };
        let reply = self.transport.send(call).await?;
        let mut resp: SubmitResponse = reply.json()?;
        resp.created = reply.status == StatusCode::CREATED;
        Ok(resp)
    }

    /// `POST /api/v1/jobs/batch`: each job is accepted or refused on its own. The batch
    /// has no header key; it is sent again to the next server only when every job carries
    /// its own idempotency key in its document (or when it never left).
    pub async fn submit_batch(&self, jobs: &[JobSpec]) -> Result<BatchSubmitResponse> {
        let route = self.route(&["api", "v1", "jobs", "batch"], &[]);
        let keyed = jobs.iter().all(|j| j.idempotency_key.is_some());
        let failover = if keyed { Failover::Always } else { Failover::Unsent };
        let body = BatchRef { jobs };
        let call = Call { failover, ..self.call(Method::POST, route, Some(&body)) };
        self.transport.send(call).await?.json()
    }

    /// `GET /api/v1/jobs?state=&queue=&limit=`.
    pub async fn list_jobs(&self, query: &ListJobsQuery) -> Result<JobList> {
        let mut pairs = Vec::new();
        if let Some(state) = &query.state {
            pairs.push(("state", state.clone()));
        }
        if let Some(queue) = &query.queue {
            pairs.push(("queue", queue.clone()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        let route = self.route(&["api", "v1", "jobs"], &pairs);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn get_job(&self, id: JobId) -> Result<JobDetail> {
        let route = self.route(&["api", "v1", "jobs", &id.to_string()], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/jobs/{id}/logs?step=&after=&waitMs=&maxBytes=`. With `wait_ms` the call
    /// long-polls; its timeout is the wait plus 10 s.
    pub async fn job_logs(&self, id: JobId, query: &LogsQuery) -> Result<LogPage> {
        let mut pairs = Vec::new();
        if let Some(step) = &query.step {
            pairs.push(("step", step.clone()));
        }
        if let Some(after) = query.after {
            pairs.push(("after", after.to_string()));
        }
        if let Some(wait) = query.wait_ms {
            pairs.push(("waitMs", wait.to_string()));
        }
        if let Some(max) = query.max_bytes {
            pairs.push(("maxBytes", max.to_string()));
        }
        let route = self.route(&["api", "v1", "jobs", &id.to_string(), "logs"], &pairs);
        let timeout = query.wait_ms.map_or(CALL_TIMEOUT, |w| long_poll_timeout(w).max(CALL_TIMEOUT));
        let call = Call { timeout, ..self.call(Method::GET, route, NO_BODY) };
        self.transport.send(call).await?.json()
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: JobId) -> Result<JobSummary> {
        let route = self.route(&["api", "v1", "jobs", &id.to_string(), "cancel"], &[]);
        self.transport.send(self.call(Method::POST, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/jobs/{id}/retry`.
    pub async fn retry_job(&self, id: JobId) -> Result<JobSummary> {
        let route = self.route(&["api", "v1", "jobs", &id.to_string(), "retry"], &[]);
        // A second retry of a job the first one re-queued would be refused or act twice.
        let call = Call { failover: Failover::Unsent, ..self.call(Method::POST, route, NO_BODY) };
        self.transport.send(call).await?.json()
    }

    /// `GET /api/v1/workers`.
    pub async fn list_workers(&self) -> Result<WorkerList> {
        let route = self.route(&["api", "v1", "workers"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/workers/{name}/forget`: ends that worker's session everywhere (and
    /// blocks its name with `block`). Idempotent: sent again, it forgets nothing more.
    pub async fn forget_worker(
        &self,
        name: &str,
        block: bool,
    ) -> Result<rota_api_types::workers::ForgetReply> {
        let route = self.route(&["api", "v1", "workers", name, "forget"], &[]);
        let req = rota_api_types::workers::ForgetRequest { block };
        self.transport.send(self.call(Method::POST, route, Some(&req))).await?.json()
    }

    /// `POST /api/v1/workers/{name}/unblock`.
    pub async fn unblock_worker(&self, name: &str) -> Result<rota_api_types::workers::UnblockReply> {
        let route = self.route(&["api", "v1", "workers", name, "unblock"], &[]);
        self.transport.send(self.call(Method::POST, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/tokens/{kind}/rotate`. Never sent twice: a second rotation would
    /// replace the token this one answers.
    pub async fn rotate_token(
        &self,
        kind: &str,
        grace_ms: u64,
    ) -> Result<rota_api_types::tokens::RotateReply> {
        let route = self.route(&["api", "v1", "tokens", kind, "rotate"], &[]);
        let req = rota_api_types::tokens::RotateRequest { grace_ms };
        let call = Call { failover: Failover::Unsent, ..self.call(Method::POST, route, Some(&req)) };
        self.transport.send(call).await?.json()
    }

    /// `POST /api/v1/workers/control`: a command fanned out to workers; replies are
    /// collected by the server until the request's timeout.
    pub async fn fleet(&self, req: &FleetRequest) -> Result<FleetResponse> {
        let route = self.route(&["api", "v1", "workers", "control"], &[]);
        let wait = req.timeout_ms.unwrap_or(1000);
        // The server names the command: sent again elsewhere, the workers would get it twice.
        let call = Call {
            timeout: long_poll_timeout(wait),
            failover: Failover::Unsent,
            ..self.call(Method::POST, route, Some(req))
        };
        self.transport.send(call).await?.json()
    }

    /// `POST /api/v1/revokes`.
    pub async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeResponse> {
        let route = self.route(&["api", "v1", "revokes"], &[]);
        let call = Call { failover: Failover::Unsent, ..self.call(Method::POST, route, Some(req)) };
        self.transport.send(call).await?.json()
    }

    /// `GET /api/v1/revokes`.
    pub async fn list_revokes(&self) -> Result<RevokeList> {
        let route = self.route(&["api", "v1", "revokes"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/queues`.
    pub async fn list_queues(&self) -> Result<QueueList> {
        let route = self.route(&["api", "v1", "queues"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/queues/{queue}/pause` or `.../resume`.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<QueueView> {
        let verb = if paused { "pause" } else { "resume" };
        let route = self.route(&["api", "v1", "queues", queue, verb], &[]);
        self.transport.send(self.call(Method::POST, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/resources/apply`: all documents or none. Applying the same documents
    /// twice changes nothing, so an apply that got no answer is sent again to the next
    /// server.
    pub async fn apply(&self, req: &ApplyRequest) -> Result<ApplyResponse> {
        let route = self.route(&["api", "v1", "resources", "apply"], &[]);
        self.transport.send(self.call(Method::POST, route, Some(req))).await?.json()
    }

    /// Every resource of `kind`: `GET /api/v1/resources/{kind}` page after page (the
    /// server's default page size) until no `continue` token comes back. The result holds
    /// no token.
    pub async fn list_resources(&self, kind: &str) -> Result<ResourceList> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_resources_page(kind, None, token.as_deref()).await?;
            items.extend(page.items);
            match page.continue_token {
                // Keys (namespace, then name: `NS/NAME`) only grow along a listing: a token
                // that does not would loop forever.
                Some(next) if token.as_deref().is_some_and(|t| next.split_once('/') <= t.split_once('/')) => {
                    let url = self.base_url().to_string();
                    let source = <serde_json::Error as serde::de::Error>::custom(format!(
                        "the listing's continue token went back from {:?} to {next:?}",
                        token.unwrap_or_default()
                    ));
                    return Err(crate::error::ClientError::Decode { url, source });
                }
                Some(next) => token = Some(next),
                None => return Ok(ResourceList { items, continue_token: None }),
            }
        }
    }

    /// One page of `GET /api/v1/resources/{kind}`: at most `limit` (the server's default
    /// without), after the `continue` token of the previous page if given.
    pub async fn list_resources_page(
        &self,
        kind: &str,
        limit: Option<u32>,
        continue_token: Option<&str>,
    ) -> Result<ResourceList> {
        let mut pairs = Vec::new();
        if let Some(limit) = limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(token) = continue_token {
            pairs.push(("continue", token.to_string()));
        }
        let route = self.route(&["api", "v1", "resources", kind], &pairs);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/resources/{kind}/{name}`.
    pub async fn get_resource(&self, kind: &str, name: &str) -> Result<ResourceView> {
        let route = self.route(&["api", "v1", "resources", kind, name], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/resources/delete`: deletes together; a missing one is reported.
    pub async fn delete_resources(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let route = self.route(&["api", "v1", "resources", "delete"], &[]);
        self.transport.send(self.call(Method::POST, route, Some(req))).await?.json()
    }

    /// `POST /api/v1/workflows/{name}/runs`: starts a run (a job). With an idempotency key
    /// a run that got no answer is sent again to the next server (the key makes it one
    /// run); without one only if it never left.
    pub async fn run_workflow(
        &self,
        name: &str,
        req: &RunRequest,
        idempotency_key: Option<&str>,
    ) -> Result<SubmitResponse> {
        let route = self.route(&["api", "v1", "workflows", name, "runs"], &[]);
        let headers: Vec<(&'static str, &str)> =
            idempotency_key.map(|k| (IDEMPOTENCY_KEY_HEADER, k)).into_iter().collect();
        let failover = if idempotency_key.is_some() { Failover::Always } else { Failover::Unsent };
        let call = Call { headers: &headers, failover, ..self.call(Method::POST, route, Some(req)) };
        let reply = self.transport.send(call).await?;
        let mut resp: SubmitResponse = reply.json()?;
        resp.created = reply.status == StatusCode::CREATED;
        Ok(resp)
    }

    /// `PUT /api/v1/secrets/{name}`: creates or replaces a secret (values in, never out).
    /// Replacing is idempotent, so it may move on to the next server.
    pub async fn put_secret(
        &self,
        name: &str,
        req: &rota_api_types::secrets::PutSecretRequest,
    ) -> Result<rota_api_types::secrets::PutSecretResponse> {
        let route = self.route(&["api", "v1", "secrets", name], &[]);
        let call = Call { failover: Failover::Always, ..self.call(Method::PUT, route, Some(req)) };
        self.transport.send(call).await?.json()
    }

    /// `GET /api/v1/secrets`: key names and sizes only.
    pub async fn list_secrets(&self) -> Result<rota_api_types::secrets::SecretList> {
        let route = self.route(&["api", "v1", "secrets"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `DELETE /api/v1/secrets/{name}`.
    pub async fn delete_secret(&self, name: &str) -> Result<rota_api_types::secrets::DeleteSecretResponse> {
        let route = self.route(&["api", "v1", "secrets", name], &[]);
        self.transport.send(self.call(Method::DELETE, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/secrets/rotate-key`: re-encrypts every secret under `req.key`. Sent
    /// to one server only (never moved on once sent).
    pub async fn rotate_secret_key(
        &self,
        req: &rota_api_types::secrets::RotateKeyRequest,
    ) -> Result<rota_api_types::secrets::RotateKeyResponse> {
        let route = self.route(&["api", "v1", "secrets", "rotate-key"], &[]);
        let call = Call { failover: Failover::Unsent, ..self.call(Method::POST, route, Some(req)) };
        self.transport.send(call).await?.json()
    }

    /// `GET /api/v1/supervisors`: the supervisors heard from (their last reports).
    pub async fn list_supervisors(&self) -> Result<rota_api_types::supervisors::SupervisorList> {
        let route = self.route(&["api", "v1", "supervisors"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/workers/heal`: heals the failed workers whose supervisors are linked;
    /// waits for every outcome (the call's timeout is the heal wait plus a margin). Sent
    /// once: a heal is not repeated on another server.
    pub async fn heal_fleet(
        &self,
        req: &rota_api_types::supervisors::FleetHealRequest,
    ) -> Result<rota_api_types::supervisors::FleetHealResponse> {
        let route = self.route(&["api", "v1", "workers", "heal"], &[]);
        let wait = req.timeout_ms.unwrap_or(60_000);
        let call = Call {
            timeout: long_poll_timeout(wait),
            failover: Failover::Unsent,
            ..self.call(Method::POST, route, Some(req))
        };
        self.transport.send(call).await?.json()
    }

    /// `GET /healthz` (no auth needed; the token is not sent).
    pub async fn healthz(&self) -> Result<Health> {
        let route = self.transport.route(&["healthz"], &[]);
        let call = Call { token: None, ..self.call(Method::GET, route, NO_BODY) };
        self.transport.send(call).await?.json()
    }

    /// `GET /healthz/detail` (admin token): this server and who leads the control plane.
    pub async fn healthz_detail(&self) -> Result<rota_api_types::health::HealthDetail> {
        let route = self.transport.route(&["healthz", "detail"], &[]);
        self.transport.send(self.call(Method::GET, route, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/events`: the event stream with the query's filters, after `last_id`
    /// (`Last-Event-ID`) when given. Streams have no overall timeout (a followed one ends
    /// when the server ends it; [`EventStream::next`] gives up after 45 s of silence).
    pub async fn events(
        &self,
        query: &rota_api_types::events::EventsQuery,
        last_id: Option<&str>,
    ) -> Result<crate::EventStream> {
        let mut pairs = Vec::new();
        if query.follow == Some(true) {
            pairs.push(("follow", "true".to_string()));
        }
        if let Some(job) = query.job {
            pairs.push(("job", job.to_string()));
        }
        if let Some(w) = &query.worker {
            pairs.push(("worker", w.clone()));
        }
        if let Some(k) = &query.kind {
            pairs.push(("kind", k.clone()));
        }
        let route = self.route(&["api", "v1", "events"], &pairs);
        let headers: Vec<(&'static str, &str)> =
            last_id.map(|id| ("last-event-id", id)).into_iter().collect();
        let call = Call {
            timeout: std::time::Duration::from_secs(24 * 3600),
            headers: &headers,
            ..self.call(Method::GET, route, NO_BODY)
        };
        Ok(crate::EventStream::new(self.transport.open(call).await?))
    }

    /// `GET /metrics`: the Prometheus text (no token needed).
    pub async fn metrics_text(&self) -> Result<String> {
        let route = self.transport.route(&["metrics"], &[]);
        let call = Call { token: None, ..self.call(Method::GET, route, NO_BODY) };
        let reply = self.transport.send(call).await?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }
}
