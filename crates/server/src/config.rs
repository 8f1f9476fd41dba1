//! Server settings: plain data with defaults, built by the CLI and passed by value.

use std::time::Duration;

/// Settings of one server process.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Operator token (`ROTA_TOKEN`) to seed the store with: at start its hash is stored if
    /// the store holds no admin token yet. Empty: none. Callers are checked against the
    /// stored hash only, so once the store holds one (seeded by an earlier start, another
    /// server or `rota server rotate-token`) this field is not used.
    pub admin_token: String,
    /// Token workers join with (`ROTA_JOIN_TOKEN`) to seed the store with, as `admin_token`.
    pub join_token: String,
    /// How often workers heartbeat (told to them at registration).
    pub heartbeat_interval: Duration,
    /// An attempt not renewed for this long is lost.
    pub lease_ttl: Duration,
    /// Finished jobs and their logs are deleted after this long.
    pub retention: Duration,
    /// Largest request body on operator and most worker routes.
    pub body_limit: usize,
    /// Largest request body on log and complete routes (they carry output).
    pub log_body_limit: usize,
    /// Longest a long-poll (claim, control, log follow) may be held.
    pub max_poll: Duration,
    /// Longest any other request may take, reading its body included (408 `timeout`).
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (then the connection is
    /// closed): a client sending them byte by byte cannot hold a connection.
    pub header_read_timeout: Duration,
    /// The key-encryption key secrets are sealed with (agreed with the store's fingerprint
    /// by the caller before the server starts). `None`: secret writes are refused and steps
    /// referring to a secret fail when claimed.
    pub secret_key: Option<std::sync::Arc<crate::secrets::Keyring>>,
    /// Failed authentications one address may have per minute before its requests are
    /// answered 429 (`auth_limit.rs`); generous, for a NAT of many workers.
    pub auth_failures_per_minute: u32,
    /// Reads this process's CPU, memory and descriptors for `/metrics` (`process_*`);
    /// `None`: not exported. The CLI passes its `/proc` reader.
    pub process_probe: Option<crate::metrics::ProcessProbe>,
    /// Serve HTTPS with this certificate (the caller keeps a clone to reload it); `None`:
    /// plain HTTP.
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            admin_token: String::new(),
            join_token: String::new(),
            heartbeat_interval: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
            body_limit: 2 << 20,
            log_body_limit: 48 << 20,
            max_poll: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            secret_key: None,
            auth_failures_per_minute: crate::auth_limit::MAX_FAILURES,
            process_probe: None,
            tls: None,
        }
    }
}
