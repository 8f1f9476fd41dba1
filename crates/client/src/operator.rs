//! Operator calls (admin token): submit, list, show, logs, cancel, retry, workers and
//! `/healthz`. One pooled connection set per [`Client`]; no retries here.

use crate::error::Result;
use crate::transport::{CALL_TIMEOUT, Call, Transport, long_poll_timeout};
use reqwest::{Method, StatusCode, Url};
use rota_api_types::IDEMPOTENCY_KEY_HEADER;
use rota_api_types::fleet::{
    FleetRequest, FleetResponse, QueueList, QueueView, RevokeList, RevokeRequest, RevokeResponse,
};
use rota_api_types::jobs::{
    BatchSubmitResponse, JobDetail, JobList, JobSummary, ListJobsQuery, LogPage, LogsQuery, SubmitResponse,
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
}

/// Typed client for the operator API. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    transport: Transport,
    token: Option<String>,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    jobs: &'a [JobSpec],
}

const NO_BODY: Option<&()> = None;

impl Client {
    /// A client for `server` (`host:port` or URL) using the admin `token`, if any.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        Ok(Self { transport: Transport::new(server)?, token })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        self.transport.base()
    }

    fn call<'a, B: Serialize + ?Sized>(
        &'a self,
        method: Method,
        url: Url,
        body: Option<&'a B>,
    ) -> Call<'a, B> {
        Call { method, url, token: self.token.as_deref(), body, timeout: CALL_TIMEOUT, headers: &[] }
    }

    /// `POST /api/v1/jobs`. `created` is true for a 201 (new job) and false for a 200 (the
    /// idempotency key matched an existing job).
    pub async fn submit(&self, spec: &JobSpec, idempotency_key: Option<&str>) -> Result<SubmitResponse> {
        let url = self.transport.url(&["api", "v1", "jobs"], &[]);
        let headers: Vec<(&'static str, &str)> =
            idempotency_key.map(|k| (IDEMPOTENCY_KEY_HEADER, k)).into_iter().collect();
        let call = Call { headers: &headers, ..self.call(Method::POST, url, Some(spec)) };
        let reply = self.transport.send(call).await?;
        let mut resp: SubmitResponse = reply.json()?;
        resp.created = reply.status == StatusCode::CREATED;
        Ok(resp)
    }

    /// `POST /api/v1/jobs/batch`: each job is accepted or refused on its own.
    pub async fn submit_batch(&self, jobs: &[JobSpec]) -> Result<BatchSubmitResponse> {
        let url = self.transport.url(&["api", "v1", "jobs", "batch"], &[]);
        self.transport.send(self.call(Method::POST, url, Some(&BatchRef { jobs }))).await?.json()
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
        let url = self.transport.url(&["api", "v1", "jobs"], &pairs);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn get_job(&self, id: JobId) -> Result<JobDetail> {
        let url = self.transport.url(&["api", "v1", "jobs", &id.to_string()], &[]);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
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
        let url = self.transport.url(&["api", "v1", "jobs", &id.to_string(), "logs"], &pairs);
        let timeout = query.wait_ms.map_or(CALL_TIMEOUT, |w| long_poll_timeout(w).max(CALL_TIMEOUT));
        let call = Call { timeout, ..self.call(Method::GET, url, NO_BODY) };
        self.transport.send(call).await?.json()
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: JobId) -> Result<JobSummary> {
        let url = self.transport.url(&["api", "v1", "jobs", &id.to_string(), "cancel"], &[]);
        self.transport.send(self.call(Method::POST, url, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/jobs/{id}/retry`.
    pub async fn retry_job(&self, id: JobId) -> Result<JobSummary> {
        let url = self.transport.url(&["api", "v1", "jobs", &id.to_string(), "retry"], &[]);
        self.transport.send(self.call(Method::POST, url, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/workers`.
    pub async fn list_workers(&self) -> Result<WorkerList> {
        let url = self.transport.url(&["api", "v1", "workers"], &[]);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/workers/control`: a command fanned out to workers; replies are
    /// collected by the server until the request's timeout.
    pub async fn fleet(&self, req: &FleetRequest) -> Result<FleetResponse> {
        let url = self.transport.url(&["api", "v1", "workers", "control"], &[]);
        let wait = req.timeout_ms.unwrap_or(1000);
        let call = Call { timeout: long_poll_timeout(wait), ..self.call(Method::POST, url, Some(req)) };
        self.transport.send(call).await?.json()
    }

    /// `POST /api/v1/revokes`.
    pub async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeResponse> {
        let url = self.transport.url(&["api", "v1", "revokes"], &[]);
        self.transport.send(self.call(Method::POST, url, Some(req))).await?.json()
    }

    /// `GET /api/v1/revokes`.
    pub async fn list_revokes(&self) -> Result<RevokeList> {
        let url = self.transport.url(&["api", "v1", "revokes"], &[]);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
    }

    /// `GET /api/v1/queues`.
    pub async fn list_queues(&self) -> Result<QueueList> {
        let url = self.transport.url(&["api", "v1", "queues"], &[]);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
    }

    /// `POST /api/v1/queues/{queue}/pause` or `.../resume`.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<QueueView> {
        let verb = if paused { "pause" } else { "resume" };
        let url = self.transport.url(&["api", "v1", "queues", queue, verb], &[]);
        self.transport.send(self.call(Method::POST, url, NO_BODY)).await?.json()
    }

    /// `GET /healthz` (no auth needed; the token is not sent).
    pub async fn healthz(&self) -> Result<Health> {
        let url = self.transport.url(&["healthz"], &[]);
        let call = Call { token: None, ..self.call(Method::GET, url, NO_BODY) };
        self.transport.send(call).await?.json()
    }

    /// `GET /healthz/detail` (admin token): this server and who leads the control plane.
    pub async fn healthz_detail(&self) -> Result<rota_api_types::health::HealthDetail> {
        let url = self.transport.url(&["healthz", "detail"], &[]);
        self.transport.send(self.call(Method::GET, url, NO_BODY)).await?.json()
    }

    /// `GET /metrics`: the Prometheus text (no token needed).
    pub async fn metrics_text(&self) -> Result<String> {
        let url = self.transport.url(&["metrics"], &[]);
        let call = Call { token: None, ..self.call(Method::GET, url, NO_BODY) };
        let reply = self.transport.send(call).await?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }
}
