//! The worker protocol client: register with the join token, then every call with the
//! session credential that register returned. It holds the credential and nothing else:
//! no retries, no session recovery (the worker decides what a 401 or 409 means). Every
//! worker call may go to the next server of the list: the credential is valid on every
//! server of the control plane, and each call is idempotent or de-duplicated by the server
//! (claims: an unanswered claim's attempts are lost by lease; completions: fencing; logs:
//! seq; register: the same instance supersedes its own session).

use crate::error::{ClientError, Result};
use crate::transport::{CALL_TIMEOUT, Call, Failover, Reply, Transport, long_poll_timeout};
use reqwest::{Method, Url};
use rota_api_types::logframes;
use rota_api_types::worker::{
    ClaimRequest, ClaimResponse, CompleteBatchRequest, CompleteBatchResponse, CompleteRequest,
    CompleteResponse, ConfigQuery, ConfigReply, ControlRequest, ControlResponse, HeartbeatRequest,
    HeartbeatResponse, LogsBatchRequest, LogsBatchResponse, LogsRequest, PoolQuery, PoolReply,
    RegisterRequest, RegisterResponse, StartRequest, UnregisterRequest,
};
use rota_domain::JobId;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The session credential and how many registrations produced one so far.
#[derive(Debug, Default)]
struct Credential {
    generation: u64,
    token: Option<Arc<str>>,
}

/// Typed client for `/worker/...`. Cheap to clone; clones share the connection pool and
/// the credential, so a re-registration is seen by every clone.
#[derive(Clone, Debug)]
pub struct WorkerClient {
    transport: Transport,
    credential: Arc<RwLock<Credential>>,
    /// Set once a server answered that it does not know the binary log route (a server of
    /// an older release): log batches go as JSON from then on.
    json_logs: Arc<AtomicBool>,
}

impl WorkerClient {
    /// A client for `server` (`host:port` or URL, or a comma-separated list of them: the
    /// servers of one control plane), not yet registered.
    pub fn new(server: &str) -> Result<Self> {
        Self::trusting(server, &crate::CaCerts::default())
    }

    /// [`Self::new`], trusting `ca` besides the system roots over `https://`.
    pub fn trusting(server: &str, ca: &crate::CaCerts) -> Result<Self> {
        Ok(Self {
            transport: Transport::new(server, ca)?,
            credential: Arc::default(),
            json_logs: Arc::default(),
        })
    }

    /// The base URL of the server calls go to first (the one that answered last).
    pub fn base_url(&self) -> &Url {
        self.transport.base()
    }

    /// Every server's base URL, in the order given.
    pub fn server_urls(&self) -> &[Url] {
        self.transport.bases()
    }

    /// How many times `register` succeeded on this client (0 = never). A caller that gets a
    /// 401 compares this with the value it read before the call to tell whether the
    /// credential it used is the current one.
    pub fn credential_generation(&self) -> u64 {
        self.credential.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Forgets the credential (after `unregister`, or when the session is known gone).
    pub fn clear_credential(&self) {
        self.credential.write().unwrap_or_else(PoisonError::into_inner).token = None;
    }

    fn token(&self) -> Result<Arc<str>> {
        let cred = self.credential.read().unwrap_or_else(PoisonError::into_inner);
        cred.token.clone().ok_or(ClientError::NotRegistered)
    }

    async fn post<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
        wait_ms: Option<u64>,
    ) -> Result<Reply> {
        let token = self.token()?;
        let route = self.transport.route(segments, &[]);
        let timeout = wait_ms.map_or(CALL_TIMEOUT, long_poll_timeout);
        let call = Call {
            method: Method::POST,
            route,
            token: Some(&token),
            body: Some(body),
            timeout,
            headers: &[],
            failover: Failover::Always,
        };
        self.transport.send(call).await
    }

    /// `POST /worker/register` with the join token. On success the returned credential is
    /// used for every later call. 401 = bad join token; 400 = protocol version mismatch.
    pub async fn register(&self, join_token: &str, req: &RegisterRequest) -> Result<RegisterResponse> {
        let route = self.transport.route(&["worker", "register"], &[]);
        let call = Call {
            method: Method::POST,
            route,
            token: Some(join_token),
            body: Some(req),
            timeout: CALL_TIMEOUT,
            headers: &[],
            failover: Failover::Always,
        };
        let resp: RegisterResponse = self.transport.send(call).await?.json()?;
        let mut cred = self.credential.write().unwrap_or_else(PoisonError::into_inner);
        cred.generation += 1;
        cred.token = Some(Arc::from(resp.credential.as_str()));
        Ok(resp)
    }

    /// `POST /worker/heartbeat`: renews the leases of the listed attempts.
    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        self.post(&["worker", "heartbeat"], req, None).await?.json()
    }

    /// `POST /supervisor/link` with the join token: a supervisor's report; the answer (after
    /// up to `waitMs`) may carry a heal. Moves on to the next server like any read.
    pub async fn supervisor_link(
        &self,
        join_token: &str,
        req: &rota_api_types::supervisors::LinkRequest,
    ) -> Result<rota_api_types::supervisors::LinkReply> {
        let route = self.transport.route(&["supervisor", "link"], &[]);
        let call = Call {
            method: Method::POST,
            route,
            token: Some(join_token),
            body: Some(req),
            timeout: long_poll_timeout(req.wait_ms),
            headers: &[],
            failover: Failover::Always,
        };
        self.transport.send(call).await?.json()
    }

    /// `POST /worker/control`: long-polls up to `req.wait_ms` for commands.
    pub async fn control(&self, req: &ControlRequest) -> Result<ControlResponse> {
        self.post(&["worker", "control"], req, Some(req.wait_ms)).await?.json()
    }

    /// `POST /worker/pool`: the declared pool in force for this worker (the session then
    /// claims from the queues the reply names).
    pub async fn pool(&self, req: &PoolQuery) -> Result<PoolReply> {
        self.post(&["worker", "pool"], req, None).await?.json()
    }

    /// `POST /worker/configs`: the declared worker configs that apply to this worker,
    /// reporting what became of the ones applied last.
    pub async fn configs(&self, req: &ConfigQuery) -> Result<ConfigReply> {
        self.post(&["worker", "configs"], req, None).await?.json()
    }

    /// `POST /worker/jobs/claim`: long-polls up to `req.wait_ms` for up to `req.max` steps.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse> {
        self.post(&["worker", "jobs", "claim"], req, Some(req.wait_ms)).await?.json()
    }

    /// `POST /worker/jobs/{job}/steps/{step}/start`: records the step's pid.
    pub async fn start(&self, job_id: JobId, step: &str, req: &StartRequest) -> Result<()> {
        let job = job_id.to_string();
        self.post(&["worker", "jobs", &job, "steps", step, "start"], req, None).await.map(drop)
    }

    /// `POST /worker/jobs/{job}/steps/{step}/complete`. 409 = the attempt is not held.
    pub async fn complete(
        &self,
        job_id: JobId,
        step: &str,
        req: &CompleteRequest,
    ) -> Result<CompleteResponse> {
        let job = job_id.to_string();
        self.post(&["worker", "jobs", &job, "steps", step, "complete"], req, None).await?.json()
    }

    /// `POST /worker/jobs/complete`: several results; each entry carries its own status.
    pub async fn complete_batch(&self, req: &CompleteBatchRequest) -> Result<CompleteBatchResponse> {
        self.post(&["worker", "jobs", "complete"], req, None).await?.json()
    }

    /// `POST /worker/jobs/{job}/logs`. 409 = the attempt is not held.
    pub async fn logs(&self, job_id: JobId, req: &LogsRequest) -> Result<()> {
        let job = job_id.to_string();
        self.post(&["worker", "jobs", &job, "logs"], req, None).await.map(drop)
    }

    /// `POST /worker/logs/frames` (the binary form: raw bytes, no base64), or `POST
    /// /worker/logs` (JSON) on a server that does not know it: chunks of several attempts;
    /// each entry carries its own status.
    pub async fn logs_batch(&self, req: &LogsBatchRequest) -> Result<LogsBatchResponse> {
        if !self.json_logs.load(Ordering::Relaxed)
            && let Some(body) = logframes::encode(req)
        {
            let token = self.token()?;
            let call: Call<'_, ()> = Call {
                method: Method::POST,
                route: self.transport.route(&["worker", "logs", "frames"], &[]),
                token: Some(&token),
                body: None,
                timeout: CALL_TIMEOUT,
                headers: &[],
                failover: Failover::Always,
            };
            match self.transport.send_raw(call, logframes::CONTENT_TYPE, body).await {
                // An older server: no such route (404), or `/worker/logs/{id}`-like routing
                // that refuses the method or the media type (405, 415).
                Err(ClientError::Http { status: 404 | 405 | 415, .. }) => {
                    tracing::info!("the server does not take binary log frames: sending logs as JSON");
                    self.json_logs.store(true, Ordering::Relaxed);
                }
                other => return other?.json(),
            }
        }
        self.post(&["worker", "logs"], req, None).await?.json()
    }

    /// `POST /worker/unregister`: ends the session; the credential is forgotten.
    pub async fn unregister(&self) -> Result<()> {
        self.post(&["worker", "unregister"], &UnregisterRequest {}, None).await?;
        self.clear_credential();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_before_register_fail_without_touching_the_network() {
        let c = WorkerClient::new("127.0.0.1:1").unwrap();
        assert_eq!(c.credential_generation(), 0);
        let err = c.heartbeat(&HeartbeatRequest::default()).await.unwrap_err();
        assert!(matches!(err, ClientError::NotRegistered), "{err:?}");
    }

    /// A server of an older release: no binary log route (404), the JSON one answers.
    /// Returns its address and the paths it was asked for, in order.
    async fn old_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 65536];
                    // Head, then as many body bytes as Content-Length says.
                    let (head_end, len) = loop {
                        let n = sock.read(&mut tmp).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let n = sock.read(&mut tmp).await.unwrap();
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let line = String::from_utf8_lossy(&buf[..head_end]).lines().next().unwrap().to_string();
                    let path = line.split(' ').nth(1).unwrap().to_string();
                    let (status, body) = if path == "/worker/logs" {
                        ("200 OK", r#"{"results":[{"status":204}]}"#)
                    } else {
                        ("404 Not Found", "")
                    };
                    log.lock().unwrap().push(path);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    sock.write_all(reply.as_bytes()).await.unwrap();
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn log_batches_fall_back_to_json_on_a_server_without_frames() {
        use rota_api_types::worker::{LogBatch, LogChunk, Stream};
        let (addr, seen) = old_server().await;
        let c = WorkerClient::new(&addr).unwrap();
        c.credential.write().unwrap().token = Some(Arc::from("cred"));
        let req = LogsBatchRequest {
            batches: vec![LogBatch {
                job_id: JobId::new(),
                step: "s".into(),
                attempt_id: rota_domain::AttemptId(1),
                chunks: vec![LogChunk {
                    stream: Stream::Stdout,
                    seq: 0,
                    data: rota_api_types::Bytes64(b"hi".to_vec()),
                }],
                dropped_bytes: 0,
            }],
        };
        assert_eq!(c.logs_batch(&req).await.unwrap().results[0].status, 204);
        assert_eq!(c.logs_batch(&req).await.unwrap().results[0].status, 204);
        // Frames once, then JSON for good.
        assert_eq!(*seen.lock().unwrap(), ["/worker/logs/frames", "/worker/logs", "/worker/logs"]);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Port 1 on loopback is closed on any sane test machine: connection refused.
        let c = crate::Client::new("127.0.0.1:1", None).unwrap();
        let err = c.healthz().await.unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(err.is_transient());
        assert_eq!(err.status(), None);
    }
}
