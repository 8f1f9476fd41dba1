//! Leadership on PostgreSQL ([`PgLeader`]): the leader is the server whose dedicated
//! connection holds a session advisory lock (key [`LEADER_KEY`], per database). Owns taking,
//! re-checking and giving up that lock and this server's heartbeat row (`servers.rs`); must
//! not run the leader's loops (the server's sweeper asks [`Leadership::lead`] each round).
//!
//! - `lead()` is cheap: while holding, it answers from memory and proves the session alive
//!   with one round trip every [`RECHECK`]; a closed connection or a round trip that fails
//!   or takes longer than [`CHECK_TIMEOUT`] loses leadership at once (the connection is
//!   dropped, so this server can never lead on a session it is unsure of). Not holding, it
//!   tries `pg_try_advisory_lock` at most every [`TRY_EVERY`], reconnecting with backoff.
//! - The connection has TCP keepalives on both ends (`dedicated.rs`). On a silent network
//!   the leader notices within `RECHECK + CHECK_TIMEOUT` (about 5 s), the database
//!   releases the lock only after its keepalives give up (about 11 s): the old leader has
//!   normally stopped before another can take over. Overlaps stay safe anyway (leader.rs of
//!   `rota-store`: a leader's writes are conditional).
//! - A heartbeat every [`HEARTBEAT`] upserts this server's row in `servers`;
//!   `others_serving` is "another row seen within three heartbeats, of a server started
//!   more than that before this one", `leader()` reads
//!   the lock's holder from `pg_locks` joined to `servers` by backend pid.
//! - `resign()` unlocks, deletes the row and ends the session; it is final (shutdown).

use crate::dedicated::{self, AbortOnDrop, ConnectionError, Role};
use crate::servers;
use async_trait::async_trait;
use rota_store::leader::{Leadership, ServerInfo};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// The advisory lock the leader holds ("rotalead"); advisory locks are per database.
pub const LEADER_KEY: i64 = 0x726f_7461_6c65_6164;
/// How often each server writes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// How often a leader proves its session alive.
pub const RECHECK: Duration = Duration::from_secs(3);
/// How long that proof may take before leadership is given up.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a server that does not lead tries to take the lock.
pub const TRY_EVERY: Duration = Duration::from_secs(1);
/// Any other statement on the leadership connection.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Another server counts as serving while its row is this fresh.
const SERVING_WINDOW: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

/// Leadership of one server over a PostgreSQL database. Dropping it ends its session,
/// which releases the lock.
pub struct PgLeader {
    shared: Arc<Shared>,
    _heartbeat: AbortOnDrop,
}

struct Shared {
    config: dedicated::Target,
    me: ServerInfo,
    session: Mutex<Session>,
}

#[derive(Default)]
struct Session {
    live: Option<Live>,
    holds: bool,
    /// When holding was last proven.
    checked: Option<Instant>,
    /// No lock or connection attempt before this.
    next_try: Option<Instant>,
    /// Consecutive failed connection attempts.
    failures: u32,
    resigned: bool,
}

/// An open leadership connection; dropping it ends the session.
struct Live {
    client: Client,
    _driver: AbortOnDrop,
}

impl PgLeader {
    /// Connects for server `me` to the database at `url` (migrated: its `servers` table is
    /// the migrations' — open the [`crate::PgStore`] first), writes `me`'s row and starts
    /// the heartbeat. Does not take the lock: the first [`Leadership::lead`] does. Fails if
    /// the database cannot be reached.
    pub async fn start(url: &str, me: ServerInfo) -> Result<Self, ConnectionError> {
        let config = dedicated::config(url, Role::Leader, me.id)?;
        let live = Live::open(&config).await?;
        timed(STATEMENT_TIMEOUT, servers::beat(&live.client, &me)).await?;
        let session = Session { live: Some(live), ..Session::default() };
        let shared = Arc::new(Shared { config, me, session: Mutex::new(session) });
        let heartbeat = AbortOnDrop(tokio::spawn(heartbeat(shared.clone())));
        Ok(Self { shared, _heartbeat: heartbeat })
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let mut s = shared.session.lock().await;
        if s.resigned {
            return;
        }
        // Unreachable: `connected` logged it and set the next attempt.
        let Ok(client) = s.connected(&shared).await else { continue };
        if let Err(e) = timed(STATEMENT_TIMEOUT, servers::beat(client, &shared.me)).await {
            s.drop_connection(&shared, &format!("the heartbeat failed: {e}"));
        }
    }
}

impl Live {
    async fn open(config: &dedicated::Target) -> Result<Self, ConnectionError> {
        let (client, connection) = dedicated::open(config).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "leadership connection ended");
            }
        });
        Ok(Self { client, _driver: AbortOnDrop(driver) })
    }
}

impl Session {
    /// The open connection, opened now if the backoff allows.
    async fn connected(&mut self, shared: &Shared) -> Result<&Client, ConnectionError> {
        if self.resigned {
            return Err(ConnectionError::Closed);
        }
        if self.live.as_ref().is_some_and(|l| l.client.is_closed()) {
            self.drop_connection(shared, "its connection closed");
        }
        if self.live.is_none() {
            if self.next_try.is_some_and(|t| Instant::now() < t) {
                return Err(ConnectionError::Closed);
            }
            match Live::open(&shared.config).await {
                Ok(live) => {
                    tracing::info!(server = %shared.me.id, "leadership connection open");
                    self.failures = 0;
                    self.live = Some(live);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    let delay = dedicated::reconnect_delay(self.failures);
                    self.next_try = Some(Instant::now() + delay);
                    tracing::warn!(server = %shared.me.id, error = %e, retry_in = ?delay,
                        "cannot open the leadership connection");
                    return Err(e);
                }
            }
        }
        self.live.as_ref().map(|l| &l.client).ok_or(ConnectionError::Closed)
    }

    /// Ends the session (which releases the lock if the database still sees it); a holder
    /// stops leading at once, and says so for at least one round: it tries again only after
    /// [`TRY_EVERY`], even if the lock is free at once.
    fn drop_connection(&mut self, shared: &Shared, why: &str) {
        if self.holds {
            tracing::warn!(server = %shared.me.id, "this server no longer leads: {why}");
            self.next_try = Some(Instant::now() + TRY_EVERY);
        } else if self.live.is_some() {
            tracing::info!(server = %shared.me.id, "leadership connection dropped: {why}");
        }
        self.holds = false;
        self.live = None;
    }
}

#[async_trait]
impl Leadership for PgLeader {
    async fn lead(&self) -> rota_store::Result<bool> {
        let shared = &*self.shared;
        let mut s = shared.session.lock().await;
        if s.resigned {
            return Ok(false);
        }
        if s.live.as_ref().is_some_and(|l| l.client.is_closed()) {
            s.drop_connection(shared, "its connection closed");
        }
        let now = Instant::now();
        if s.holds {
            if s.checked.is_some_and(|t| now.duration_since(t) < RECHECK) {
                return Ok(true);
            }
            // A round trip proves the session, and so its lock, alive.
            let proof = match s.live.as_ref() {
                Some(l) => timed(CHECK_TIMEOUT, l.client.simple_query("SELECT 1")).await.map(drop),
                None => Err(ConnectionError::Closed),
            };
            return match proof {
                Ok(()) => {
                    s.checked = Some(Instant::now());
                    Ok(true)
                }
                Err(e) => {
                    s.drop_connection(shared, &format!("the database did not confirm its session: {e}"));
                    Ok(false)
                }
            };
        }
        if s.next_try.is_some_and(|t| now < t) {
            return Ok(false);
        }
        let client = s.connected(shared).await?;
        let took = timed(STATEMENT_TIMEOUT, async {
            let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_KEY]).await?;
            let took: bool = row.try_get(0)?;
            if took {
                // The row must name this connection's backend for `leader()` at once.
                servers::beat(client, &shared.me).await?;
            }
            Ok::<_, tokio_postgres::Error>(took)
        })
        .await;
        match took {
            Ok(true) => {
                tracing::info!(server = %shared.me.id, "this server took leadership");
                s.holds = true;
                s.checked = Some(Instant::now());
                Ok(true)
            }
            Ok(false) => {
                s.next_try = Some(Instant::now() + TRY_EVERY);
                Ok(false)
            }
            Err(e) => {
                s.drop_connection(shared, &format!("taking the lock failed: {e}"));
                s.next_try = Some(Instant::now() + TRY_EVERY);
                Err(e.into())
            }
        }
    }

    async fn resign(&self) -> rota_store::Result<()> {
        let shared = &*self.shared;
        let mut s = shared.session.lock().await;
        s.resigned = true;
        let holds = s.holds;
        let done = match s.live.as_ref().filter(|l| !l.client.is_closed()) {
            Some(l) => {
                timed(STATEMENT_TIMEOUT, async {
                    if holds {
                        l.client.execute("SELECT pg_advisory_unlock($1)", &[&LEADER_KEY]).await?;
                    }
                    servers::remove(&l.client, shared.me.id).await
                })
                .await
            }
            None => Ok(()),
        };
        if holds {
            tracing::info!(server = %shared.me.id, "this server resigned leadership");
        }
        // Ending the session releases the lock even if the unlock above failed.
        s.holds = false;
        s.live = None;
        done.map_err(Into::into)
    }

    async fn leader(&self) -> rota_store::Result<Option<ServerInfo>> {
        let shared = &*self.shared;
        let mut s = shared.session.lock().await;
        let client = s.connected(shared).await?;
        Ok(timed(STATEMENT_TIMEOUT, servers::holder(client, LEADER_KEY)).await?)
    }

    async fn others_serving(&self) -> rota_store::Result<bool> {
        let shared = &*self.shared;
        let mut s = shared.session.lock().await;
        let client = s.connected(shared).await?;
        Ok(timed(STATEMENT_TIMEOUT, servers::others_seen(client, &shared.me, SERVING_WINDOW)).await?)
    }
}

/// `work`, or [`ConnectionError::Timeout`] after `limit`: a silent network never hangs a caller.
async fn timed<T, E>(limit: Duration, work: impl Future<Output = Result<T, E>>) -> Result<T, ConnectionError>
where
    ConnectionError: From<E>,
{
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done.map_err(ConnectionError::from),
        Err(_) => Err(ConnectionError::Timeout(limit)),
    }
}
