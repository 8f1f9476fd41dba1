//! `GET /api/v1/events`: Server-Sent Events of what changes in the control plane (job,
//! attempt, log-activity, worker, resource, supervisor and heal events, and `resync`), its
//! query and the JSON each event's `data` carries.

use rota_domain::{AttemptId, JobId, SessionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kinds of stream events (the SSE `event:` field and `kind`).
pub const KINDS: &[&str] = &["job", "attempt", "logs", "worker", "resource", "supervisor", "heal", "resync"];

/// `?follow=&job=&worker=&kind=&lastEventId=` (and the namespace parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Keep the stream open for new events (up to the server's longest poll, then it ends
    /// and the client reconnects with the last id). Without it the stream holds what the
    /// server's replay buffer has and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    /// Only this job's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// Only events of this worker (by name: its sessions and the attempts it holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Only these kinds, comma-separated (`job,attempt`); `resync` is always sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The id of the last event received, for clients that cannot send the
    /// `Last-Event-ID` header (the header wins when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

/// One stream event: the SSE `data:` line's JSON. Only the fields of its kind are present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    /// The event's id (also the SSE `id:` field): `SERVER-N`, N rising on that server.
    pub id: String,
    /// What it is about: one of [`KINDS`].
    pub kind: String,
    /// When this server heard of it.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The namespace of what changed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The job (`job`, `attempt`, `logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job: Option<JobId>,
    /// The step (`attempt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt (`attempt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub attempt: Option<AttemptId>,
    /// The state after the change: a job state (`job`), an attempt status (`attempt`),
    /// `active`/`offline` (`worker`), `applied`/`deleted`/`status` (`resource`), the
    /// reported state (`supervisor`), the phase (`heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The worker's name (`attempt`, `worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The worker session (`worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub session: Option<SessionId>,
    /// The resource's kind (`resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The resource's name (`resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host (`supervisor`, `heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The worker instance (`supervisor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The heal operation (`heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<Uuid>,
    /// More words: the last error (`supervisor`, `heal`), why to reload (`resync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
