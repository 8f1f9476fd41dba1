//! Typed HTTP client for the rota control plane, used by the CLI, the worker and the
//! end-to-end tests. It speaks the bodies of `rota-api-types` and nothing else: no retries,
//! no caching, no business rules (callers decide what an error means for them).
//!
//! # Layout
//! - [`Client`]: operator calls under `/api/v1` (admin token) and `/healthz`.
//! - [`WorkerClient`]: the worker protocol under `/worker` (join token, then a session
//!   credential).
//! - [`server_url`]: parses `host:port`, `http://…` and `https://…` server addresses.
//! - [`ClientError`]: every way a call can fail.

mod error;
mod operator;
mod transport;
mod url;
mod worker;

pub use error::{ClientError, Result};
pub use operator::{Client, Health};
pub use url::{DEFAULT_PORT, server_url};
pub use worker::WorkerClient;

/// The URL type accepted and returned by this crate.
pub use reqwest::Url;
