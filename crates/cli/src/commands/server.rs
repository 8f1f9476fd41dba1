//! `rota server`: the control plane in the foreground, on SQLite. Creates the token files
//! when its store holds no tokens (`tokens::settle_with_store`), prints the bound URL (tests
//! read the `rota server listening on URL` line) and where the tokens are, never the
//! tokens. SIGINT/SIGTERM stop it gracefully, exit 0. Under `rota server start` it reports
//! readiness and stops with its supervisor. Also `rota server rotate-token`.

use crate::args::{RotateTokenArgs, ServerArgs, TokenKind};
use crate::config::{Paths, ServerSetup};
use crate::database::Database;
use crate::failure::{EXIT_CONFIG, with_code};
use crate::log_quota::LogQuota;
use crate::output::note;
use crate::signals::StopSignals;
use crate::tokens;
use anyhow::{Context, Result, bail};
use rota_lifecycle::locks::{self, Held};
use rota_lifecycle::readiness::{self, ReadyLine};
use rota_server::ServerConfig;
use rota_store::{CredentialKind, JobStore};
use rota_store_postgres::bus::PgBus;
use rota_store_postgres::leader::PgLeader;
use rota_store_postgres::{PgError, PgOptions, PgStore};
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(args: &ServerArgs, paths: &Paths) -> Result<ExitCode> {
    // Under `rota server start`: one line on the readiness pipe once it listens.
    let ready_pipe = readiness::take_from_stdout();
    let settings = ServerSetup::from_settings(&args.settings(), paths)?;
    super::init_tracing();
    // It holds the secret key and, while handing out steps, secret values.
    rota_worker::dumpable::forbid_dumps();
    let signals = StopSignals::install()?;
    let server = Prepared::new(&settings, paths).await?;
    server.announce(paths);

    let shutdown = CancellationToken::new();
    if !rota_lifecycle::supervisor::follow_supervisor() {
        shutdown.cancel();
    }
    if let Some(pipe) = ready_pipe {
        let port = server.listener.local_addr().ok().map(|a| a.port());
        let line = ReadyLine {
            ok: true,
            pid: Some(std::process::id()),
            port,
            name: Some(server.url.clone()),
            ..ReadyLine::default()
        };
        readiness::send(pipe, &line);
    }
    // The server has no slower and faster stop: both signals mean "stop".
    signals.spawn_escalation(shutdown.clone(), shutdown.clone());
    if let Some(tls) = server.tls.clone() {
        crate::signals::spawn_tls_reload(tls)?;
    }
    rota_server::run_with(server.listener, server.store, server.config, server.seams, shutdown)
        .await
        .context("server stopped with an error")?;
    tracing::info!("server stopped");
    Ok(ExitCode::SUCCESS)
}

/// A server ready to run: store open, tokens agreed with it, socket bound.
pub(crate) struct Prepared {
    pub(crate) listener: TcpListener,
    /// `http://ADDR` (`https://ADDR` with TLS) of the bound socket.
    pub(crate) url: String,
    /// The served certificate, reloaded on SIGHUP.
    pub(crate) tls: Option<rota_server::tls::ServerTls>,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) config: ServerConfig,
    /// The join token (the local worker of `rota dev` joins with it).
    pub(crate) join_token: String,
    /// The total log quota, described for the start-up lines.
    pub(crate) log_quota: String,
    /// Which token files this start generated (the store held no token of that kind).
    pub(crate) tokens_created: TokensCreated,
    /// The secret key file, and whether this start created it.
    pub(crate) secret_key: (std::path::PathBuf, bool),
    /// The bus and leadership that go with the store.
    pub(crate) seams: rota_server::Seams,
    /// SQLite: this server's claim on its file (one server per file); held until it exits.
    pub(crate) _serving: Option<Held>,
}

/// `/metrics`' `process_*` series, read through the workspace's one `/proc` reader.
fn process_usage() -> Option<rota_server::ProcessSample> {
    let u = rota_worker::procfs::self_usage()?;
    Some(rota_server::ProcessSample {
        cpu_seconds: u.cpu_seconds,
        resident_bytes: u.resident_bytes,
        start_time_seconds: u.start_time_seconds,
        open_fds: u.open_fds,
        threads: u.threads,
    })
}

impl Prepared {
    pub(crate) async fn new(settings: &ServerSetup, paths: &Paths) -> Result<Self> {
        // First: a certificate that cannot be served fails the start before anything is opened.
        let tls = match &settings.tls {
            Some((cert, key)) => Some(rota_server::tls::ServerTls::load(cert, key).map_err(|e| {
                with_code(
                    EXIT_CONFIG,
                    anyhow::Error::new(e).context("cannot serve TLS (--tls-cert, --tls-key)"),
                )
            })?),
            None => None,
        };
        let Opened { store, log_quota, serving, seams } = open_store(settings).await?;
        let tokens = tokens::settle_with_store(store.as_ref(), paths, &settings.database).await?;
        let key = crate::secret_key::settle_with_store(store.as_ref(), &settings.secret_key_file).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        // No tokens to seed the store with: it holds both hashes now, which the server loads.
        let config = ServerConfig {
            heartbeat_interval: settings.heartbeat_interval,
            lease_ttl: settings.lease_ttl,
            retention: settings.retention,
            secret_key: Some(Arc::new(key.keyring)),
            process_probe: Some(process_usage),
            tls: tls.clone(),
            ..ServerConfig::default()
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            listener,
            url: format!("{scheme}://{addr}"),
            tls,
            store,
            config,
            join_token: tokens.join.token,
            log_quota,
            tokens_created: TokensCreated { admin: tokens.admin.created, join: tokens.join.created },
            secret_key: (settings.secret_key_file.clone(), key.created),
            seams,
            _serving: serving,
        })
    }

    /// The lines people (and tests) look for on stderr.
    pub(crate) fn announce(&self, paths: &Paths) {
        note(format_args!("rota server listening on {}", self.url));
        if let Some(tls) = &self.tls {
            note(format_args!(
                "TLS certificate: {} (expires {}; SIGHUP reads it again)",
                tls.cert_path().display(),
                tls.not_after().to_rfc3339()
            ));
        }
        announce_tokens(paths, self.tokens_created);
        let (key_file, created) = &self.secret_key;
        if *created {
            note(format_args!(
                "secret key: {} (created now, mode 0600). Back it up: losing it loses every secret; every \
                 server of this control plane needs a copy",
                key_file.display()
            ));
        } else {
            note(format_args!("secret key: {} (existing file, reused)", key_file.display()));
        }
        note(format_args!("log quota: {}", self.log_quota));
    }
}

/// Which token files a start generated; each is told apart, since the store may hold one
/// kind and not the other (a kind is generated only when the store holds none of it).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokensCreated {
    pub(crate) admin: bool,
    pub(crate) join: bool,
}

/// Where the tokens are, never what they are; for each, whether it was created now or an
/// existing file was reused.
pub(crate) fn announce_tokens(paths: &Paths, created: TokensCreated) {
    let how = |created: bool| if created { "created now, mode 0600" } else { "existing file, reused" };
    note(format_args!(
        "admin token (ROTA_TOKEN): {} ({})",
        paths.admin_token().display(),
        how(created.admin)
    ));
    note(format_args!(
        "join token (ROTA_JOIN_TOKEN): {} ({})",
        paths.join_token().display(),
        how(created.join)
    ));
}

/// An open store with what goes with it.
struct Opened {
    store: Arc<dyn JobStore>,
    /// The total log quota, described.
    log_quota: String,
    /// SQLite: this server's claim on the file.
    serving: Option<Held>,
    seams: rota_server::Seams,
}

/// Opens the store with its log quota, and the bus and leadership that go with it.
async fn open_store(settings: &ServerSetup) -> Result<Opened> {
    match &settings.database {
        Database::Sqlite(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let serving = serve_alone(path)?;
            let mut store = SqliteStore::open(path, SqliteOptions::default())
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            let quota = LogQuota::choose(settings.log_quota, dir, store.log_usage().live_bytes)?;
            store.set_log_quota(Some(quota.bytes));
            let seams = rota_server::Seams::single(rota_worker::config::host_name());
            Ok(Opened {
                store: Arc::new(store),
                log_quota: quota.describe(dir),
                serving: Some(serving),
                seams,
            })
        }
        Database::Postgres(url) => {
            // Every message names the URL without its password, and the host:port tried.
            let at = || format!("{url} ({})", url.endpoints().join(", "));
            let mut store = match PgStore::connect(url.connect_text(), settings.pg.clone()).await {
                Ok(store) => store,
                // A schema this build cannot work with: restarting will not help, so the
                // exit a supervisor never restarts (78), as for other refused configuration.
                Err(e @ PgError::SchemaTooNew { .. }) => {
                    let e =
                        anyhow::Error::new(e).context(format!("cannot use the PostgreSQL database {}", at()));
                    return Err(with_code(EXIT_CONFIG, e));
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open the PostgreSQL database {}", at())));
                }
            };
            store.set_log_quota(settings.log_quota);
            let log_quota = match settings.log_quota {
                Some(q) => format!("{} (--log-quota)", crate::output::size_text(q)),
                None => "none (the database's disk is not this machine's; --log-quota sets one)".into(),
            };
            let me = rota_server::this_process(rota_worker::config::host_name());
            let bus = PgBus::start(url.connect_text(), me.id)
                .await
                .with_context(|| format!("cannot listen for notifications on {}", at()))?;
            let leader = PgLeader::start(url.connect_text(), me.clone())
                .await
                .with_context(|| format!("cannot open the leadership connection to {}", at()))?;
            let seams = rota_server::Seams { bus: Arc::new(bus), leader: Arc::new(leader), me };
            Ok(Opened { store: Arc::new(store), log_quota, serving: None, seams })
        }
    }
}

/// One server per SQLite file: an exclusive lock on `<db>.server.lock`, which records who
/// holds it. A second server on the same file is refused, naming the holder: the servers
/// of a control plane share work through PostgreSQL, never through one SQLite file (each
/// would believe it is the only one and lead alone).
pub(crate) fn serve_alone(db: &Path) -> Result<Held> {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".server.lock");
    let path = db.with_file_name(name);
    match locks::try_lock(&path)? {
        Some(held) => {
            let who = format!(
                "pid {} on host {} since {}\n",
                std::process::id(),
                rota_worker::config::host_name(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            held.record(&who).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(held)
        }
        None => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
            Err(with_code(
                EXIT_CONFIG,
                anyhow::anyhow!(
                    "the database {} is already served by another rota server ({holder}; lock {}): one \
                     SQLite file serves one server. Stop that one, or give this one its own --database; \
                     several servers sharing one control plane need PostgreSQL (--database postgres://…)",
                    db.display(),
                    path.display()
                ),
            ))
        }
    }
}

/// `rota server rotate-token KIND`: a new token file and its hash in the store (see
/// `tokens::rotate`). Its own small runtime: the other `rota server` subcommands are sync.
pub(crate) fn rotate_token(args: &RotateTokenArgs, paths: &Paths) -> Result<ExitCode> {
    let database = Database::from_flag(args.database.as_deref(), paths)?;
    if let Database::Sqlite(file) = &database
        && !file.exists()
    {
        bail!(
            "no database at {}: a server stores its tokens there on its first start (pass \
             --database if the server uses another file)",
            file.display()
        );
    }
    let (kind, env) = match args.kind {
        TokenKind::Admin => (CredentialKind::Admin, "ROTA_TOKEN"),
        TokenKind::Join => (CredentialKind::Join, "ROTA_JOIN_TOKEN"),
    };
    let path = tokens::path_of(paths, kind);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store: Arc<dyn JobStore> = match &database {
            Database::Sqlite(file) => Arc::new(
                SqliteStore::open(file, SqliteOptions::default())
                    .with_context(|| format!("cannot open the database {}", file.display()))?,
            ),
            Database::Postgres(url) => Arc::new(
                PgStore::connect(url.connect_text(), PgOptions { pool_size: 1, ..PgOptions::default() })
                    .await
                    .with_context(|| format!("cannot open the PostgreSQL database {url}"))?,
            ),
        };
        tokens::rotate(store.as_ref(), kind, &path).await
    })?;
    note(format_args!("{kind} token ({env}): {} (rotated now, mode 0600)", path.display()));
    note(format_args!(
        "the store {database} holds its hash; every server running on it switches to the new \
         token within 30 s"
    ));
    match kind {
        CredentialKind::Admin => note("operators on other machines need the new admin.token (or ROTA_TOKEN)"),
        CredentialKind::Join => note(
            "registered workers keep their sessions; a worker that registers again (after a restart) \
             needs the new join.token (or ROTA_JOIN_TOKEN)",
        ),
    }
    Ok(ExitCode::SUCCESS)
}
