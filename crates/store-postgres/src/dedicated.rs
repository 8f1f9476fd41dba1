//! One connection of its own, outside the pool, for what must stay on a single session:
//! `LISTEN` (the bus) and the session advisory lock (leadership). This module owns how such
//! a connection is configured (TCP keepalives on both ends, connect timeout, an
//! `application_name` naming its role and server, TLS as the URL's `sslmode` asks),
//! opened, and how long to wait before opening it again; it must not run the queries of
//! the bus or of leadership.
//!
//! The reconnect delay reuses the one capped exponential formula reachable from here,
//! `rota_domain::policy::retry_delay` (the worker's `rota_worker::backoff` is not: a store
//! must not depend on the worker).

use rota_domain::spec::Backoff;
use rota_store::StoreError;
use rota_store::leader::ServerId;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection half of a dedicated connection (TLS or plain, as negotiated).
pub(crate) type PgConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// A dedicated connection: the client, and the connection its owner must drive.
pub(crate) type Opened = (Client, PgConnection);

/// How to open a dedicated connection: the driver's configuration and the TLS it uses.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    tls: MakeRustlsConnect,
}

/// Why a dedicated connection could not be opened or used. Never carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The URL is not a PostgreSQL URL this driver accepts (or its TLS settings are not
    /// usable); the text never holds the password.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The server could not be reached or refused the session.
    #[error("cannot connect to PostgreSQL at {address}: {source}")]
    Connect {
        /// `host:port` (or socket directory) of the first host the URL names.
        address: String,
        /// What the driver said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement on the dedicated connection failed.
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The connection is closed and is not being reopened right now (backoff, or resigned).
    #[error("the PostgreSQL connection is closed")]
    Closed,
    /// The database did not answer in time.
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<ConnectionError> for StoreError {
    fn from(e: ConnectionError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// What a dedicated connection is for; it shows in `pg_stat_activity.application_name`
/// as `rota-<role> <server id>`.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The bus: `LISTEN rota_bus` and the `NOTIFY`s of this server.
    Bus,
    /// Leadership: the advisory lock and this server's heartbeat row.
    Leader,
}

/// The `application_name` of `role`'s connection for server `me` (what an operator, or a
/// test, finds in `pg_stat_activity`).
pub fn application_name(role: Role, me: ServerId) -> String {
    let role = match role {
        Role::Bus => "bus",
        Role::Leader => "leader",
    };
    format!("rota-{role} {me}")
}

/// Idle time before the first keepalive probe, the time between probes, and how many
/// unanswered probes end the connection: a silent peer is noticed within about 11 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
/// Used when the URL sets no `connect_timeout`: an unreachable host must not hang a start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The configuration of `role`'s dedicated connection for `me`, from a `postgres://` URL.
pub(crate) fn config(url: &str, role: Role, me: ServerId) -> Result<Target, ConnectionError> {
    let url = crate::url::PgUrl::parse(url).map_err(|e| ConnectionError::Url(e.to_string()))?;
    let tls = crate::tls::connector(url.tls()).map_err(|e| ConnectionError::Url(e.to_string()))?;
    let mut config = url.config().clone();
    config
        .application_name(application_name(role, me))
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    // The server end gets the same keepalives (set in the startup packet, no round trip):
    // a session advisory lock is released only when the *server* notices its session is
    // gone, which with the operating system's defaults takes two hours on a silent network.
    let server_keepalives = format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={}",
        KEEPALIVE_IDLE.as_secs(),
        KEEPALIVE_INTERVAL.as_secs(),
        KEEPALIVE_RETRIES
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {server_keepalives}"),
        _ => server_keepalives,
    };
    config.options(options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(Target { config, tls })
}

/// Opens a dedicated connection; its owner must drive the returned `Connection`.
pub(crate) async fn open(target: &Target) -> Result<Opened, ConnectionError> {
    target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(|source| ConnectionError::Connect { address: address(&target.config), source })
}

/// `host:port` of the first host `config` names, for messages (never the user or password).
fn address(config: &Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => format!("{h}:{port}"),
        Some(Host::Unix(dir)) => format!("{}/.s.PGSQL.{port}", dir.display()),
        None => format!("localhost:{port}"),
    }
}

/// How long to wait before the `failures`-th consecutive attempt to reopen a dedicated
/// connection: 200 ms doubling to 10 s, ± 20 % so servers do not reconnect in lockstep.
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    let schedule = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
        factor: 2.0,
        jitter: 0.2,
    };
    rota_domain::policy::retry_delay(&schedule, failures.max(1), rand::random::<f64>())
}

/// A task aborted when this is dropped: the background work of a bus or leader ends with it.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
