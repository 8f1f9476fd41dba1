//! HTTP request and response bodies of the rota control plane, shared by the server (which
//! derives `/openapi.json` from them) and the client. Plain serde data: no I/O, no logic.
//!
//! Naming: the job document ([`rota_domain::JobSpec`]) keeps the snake_case field names of
//! PRODUCT.md; every other body is camelCase.
//!
//! # Layout
//! - [`worker`]: the worker protocol (`/worker/...`).
//! - [`jobs`]: operator job calls (`/api/v1/jobs...`).
//! - [`workers`]: operator views of workers (`/api/v1/workers`).
//! - [`fleet`]: fleet control: commands to workers, revokes, paused queues.
//! - [`health`]: `/healthz/detail`: this server and the leader.
//! - [`resources`]: declared resources (`rota apply`, `get`, `delete`, `run`).
//! - [`namespace`]: the namespace query parameters of every operator call.
//! - [`secrets`]: secrets: writes (values, write-only), reads (key names and sizes), key
//!   rotation.
//! - [`supervisors`]: the supervisor link, supervisor views and the fleet heal.
//! - [`bytes`]: byte-exact payloads carried as base64.
//! - [`logframes`]: the binary form of a log batch (raw bytes, no base64).
//! - [`error`]: the error body every non-2xx reply carries.

pub mod bytes;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod jobs;
pub mod logframes;
pub mod namespace;
pub mod resources;
pub mod secrets;
pub mod supervisors;
pub mod tokens;
pub mod worker;
pub mod workers;

pub use bytes::Bytes64;
pub use error::ErrorBody;

/// Header carrying a submit's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
