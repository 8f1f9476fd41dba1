//! Typed HTTP client for the rota control plane, used by the CLI, the worker and the
//! end-to-end tests. It speaks the bodies of `rota-api-types` and nothing else: no retries
//! in time, no caching, no business rules (callers decide what an error means for them).
//! Given several servers of one control plane, a call that cannot be served by one goes on
//! to the next at once, when sending it again cannot act twice (`transport.rs::Failover`).
//!
//! # Layout
//! - [`Client`]: operator calls under `/api/v1` (admin token) and `/healthz`.
//! - [`WorkerClient`]: the worker protocol under `/worker` (join token, then a session
//!   credential).
//! - [`server_url`]: parses `host:port`, `http://…` and `https://…` server addresses;
//!   [`server_urls`] a comma-separated list of them (several servers: calls fail over).
//! - [`EventStream`]: the event stream `Client::events` opens (Server-Sent Events).
//! - [`CaCerts`]: CA certificates trusted besides the system roots over `https://`.
//! - [`ClientError`]: every way a call can fail.

mod error;
mod events;
mod operator;
mod tls;
mod transport;
mod url;
mod worker;

pub use error::{ClientError, Result};
pub use events::EventStream;
pub use operator::{Client, Health};
pub use tls::CaCerts;
pub use url::{DEFAULT_PORT, server_url, server_urls};
pub use worker::WorkerClient;

/// The URL type accepted and returned by this crate.
pub use reqwest::Url;
