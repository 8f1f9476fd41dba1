//! Issue 11: the admin and join tokens live in the store as hashes. Against real `rota
//! server` processes on port 0, each in its own HOME/XDG tree: the first start creates the
//! token files and stores their hashes, a restart reuses them, a missing or foreign token
//! file is refused (exit 78) saying where to get it, `rota server rotate-token` replaces a
//! token, and a store written before the store held tokens keeps the tokens of its files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use predicates::prelude::*;
use rota_testkit::{Env, bound, rota, spawn_server, spawn_worker, wait_until};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn token(env: &Env, file: &str) -> String {
    std::fs::read_to_string(env.data_dir().join(file)).expect(file).trim().to_string()
}

/// The credentials rows of the tree's default store (read while the server may run: WAL).
fn stored_hashes(env: &Env) -> BTreeMap<String, String> {
    let conn = rusqlite::Connection::open(env.data_dir().join("rota.db")).expect("open rota.db");
    let mut st = conn.prepare("SELECT kind, hash FROM credentials").expect("credentials table");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// The server's `admin token ...` and `join token ...` lines, once both were printed.
fn token_lines(env: &Env) -> (String, String) {
    wait_until(bound(), "the token lines", || env.server_log().contains("join token (ROTA_JOIN_TOKEN)"));
    let log = env.server_log();
    let line = |p: &str| log.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    (line("admin token (ROTA_TOKEN): "), line("join token (ROTA_JOIN_TOKEN): "))
}

/// `rota server` in `env`'s tree, expected to refuse to start.
fn refused_start(env: &Env) -> assert_cmd::assert::Assert {
    rota(env).args(["server", "--listen", "127.0.0.1:0"]).assert().code(78)
}

/// `rota job list` with this admin token.
fn job_list(env: &Env, admin: &str) -> assert_cmd::assert::Assert {
    rota(env).args(["job", "list", "--token", admin]).assert()
}

#[test]
fn the_first_start_stores_the_hashes_and_a_restart_reuses_the_files() {
    let mut env = spawn_server();
    let (admin_line, join_line) = token_lines(&env);
    assert!(admin_line.ends_with("(created now, mode 0600)"), "{admin_line}");
    assert!(join_line.ends_with("(created now, mode 0600)"), "{join_line}");
    let (admin, join) = (token(&env, "admin.token"), token(&env, "join.token"));
    let stored = stored_hashes(&env);
    assert_eq!(stored.get("admin"), Some(&sha256(&admin)), "the store holds the admin token's hash");
    assert_eq!(stored.get("join"), Some(&sha256(&join)), "the store holds the join token's hash");
    assert!(!stored.values().any(|h| h == &admin || h == &join), "never a token itself");

    assert_eq!(env.stop_server(), Some(0));
    env.start_server(&[]);
    let (admin_line, join_line) = token_lines(&env);
    assert!(admin_line.ends_with("(existing file, reused)"), "{admin_line}");
    assert!(join_line.ends_with("(existing file, reused)"), "{join_line}");
    assert_eq!((token(&env, "admin.token"), token(&env, "join.token")), (admin.clone(), join));
    job_list(&env, &admin).success();
    job_list(&env, "not-the-token").code(1).stderr(predicate::str::contains("unknown or expired token"));
}

#[test]
fn a_missing_or_foreign_token_file_is_refused_saying_where_to_get_it() {
    let mut env = spawn_server();
    let admin = token(&env, "admin.token");
    assert_eq!(env.stop_server(), Some(0));
    let join_file = env.data_dir().join("join.token");
    let kept = std::fs::read_to_string(&join_file).unwrap();
    std::fs::remove_file(&join_file).unwrap();

    refused_start(&env).stderr(
        predicate::str::contains("already holds the join token's hash")
            .and(predicate::str::contains(join_file.display().to_string()))
            .and(predicate::str::contains("cannot be turned back into the token"))
            .and(predicate::str::contains("copy join.token"))
            .and(predicate::str::contains("rota server rotate-token join"))
            .and(predicate::str::contains("admin.token").not()),
    );
    assert!(!join_file.exists(), "no new join token was generated");
    assert_eq!(token(&env, "admin.token"), admin, "the admin token is untouched");

    // A token file from elsewhere (another store, or rotated since).
    std::fs::write(&join_file, "0123456789abcdef\n").unwrap();
    refused_start(&env).stderr(
        predicate::str::contains(format!("{} does not hold the join token", join_file.display()))
            .and(predicate::str::contains("rota server rotate-token join")),
    );

    // The right file back: it starts again.
    std::fs::write(&join_file, kept).unwrap();
    env.start_server(&[]);
    job_list(&env, &admin).success();
}

#[test]
fn rotate_token_replaces_a_token_on_a_running_server_and_for_the_next_start() {
    let mut env = spawn_server();
    let (old_admin, old_join) = (token(&env, "admin.token"), token(&env, "join.token"));
    let admin_file = env.data_dir().join("admin.token");

    // While the server runs: the file and the store change, and the running server switches
    // to the new token when it next reads the stored hashes (every 30 s).
    rota(&env).args(["server", "rotate-token", "admin"]).assert().success().stderr(
        predicate::str::contains(format!(
            "admin token (ROTA_TOKEN): {} (rotated now, mode 0600)",
            admin_file.display()
        ))
        .and(predicate::str::contains("switches to the new token within 30 s")),
    );
    let new_admin = token(&env, "admin.token");
    assert_ne!(new_admin, old_admin);
    assert_eq!(std::fs::metadata(&admin_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(stored_hashes(&env).get("admin"), Some(&sha256(&new_admin)));
    let rotated = std::time::Instant::now();
    while !job_list(&env, &new_admin).get_output().status.success() {
        assert!(
            rotated.elapsed() < std::time::Duration::from_secs(90),
            "the running server never took the new token"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!("the running server took the rotated admin token after {:?}", rotated.elapsed());
    job_list(&env, &old_admin).code(1).stderr(predicate::str::contains("unknown or expired token"));

    assert_eq!(env.stop_server(), Some(0));
    rota(&env).args(["server", "rotate-token", "join"]).assert().success();
    let new_join = token(&env, "join.token");
    assert_ne!(new_join, old_join);
    let leftovers: Vec<_> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");

    env.start_server(&[]);
    let (admin_line, join_line) = token_lines(&env);
    assert!(
        admin_line.ends_with("(existing file, reused)") && join_line.ends_with("(existing file, reused)")
    );
    job_list(&env, &old_admin).code(1).stderr(predicate::str::contains("unknown or expired token"));
    job_list(&env, &new_admin).success();
    let mut old = rota(&env);
    old.args(["worker", "run", "--join-token", &old_join, "--workspace"]).arg(env.path("ws-old"));
    old.assert().code(78);
    // The new join token (read from join.token) is accepted.
    let _w = spawn_worker(&env, "w1", &[]);
}

#[test]
fn rotate_token_needs_an_existing_store() {
    let env = Env::new();
    rota(&env)
        .args(["server", "rotate-token", "admin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no database at").and(predicate::str::contains("rota.db")));
    assert!(!env.data_dir().join("admin.token").exists());
}

/// The main database's migrations up to schema 5 and the logs database's, as the release
/// before the credentials table wrote them (`schema.rs::migrate` bookkeeping included).
const MAIN_UP_TO_5: [(i64, &str, &str); 5] = [
    (1, "init", include_str!("../../store-sqlite/migrations/main/0001_init.sql")),
    (2, "fleet", include_str!("../../store-sqlite/migrations/main/0002_fleet.sql")),
    (3, "partial_indexes", include_str!("../../store-sqlite/migrations/main/0003_partial_indexes.sql")),
    (4, "worker_instance", include_str!("../../store-sqlite/migrations/main/0004_worker_instance.sql")),
    (5, "key_revokes", include_str!("../../store-sqlite/migrations/main/0005_key_revokes.sql")),
];
const LOGS_UP_TO_2: [(i64, &str, &str); 2] = [
    (1, "init", include_str!("../../store-sqlite/migrations/logs/0001_init.sql")),
    (2, "quota", include_str!("../../store-sqlite/migrations/logs/0002_quota.sql")),
];

fn write_schema(path: &Path, migrations: &[(i64, &str, &str)]) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS schema_migrations (
         version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    for (version, name, sql) in migrations {
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 1000)",
            (version, name),
        )
        .unwrap();
        tx.commit().unwrap();
    }
}

fn write_token(path: &Path, token: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    writeln!(f, "{token}").unwrap();
}

#[test]
fn an_upgrade_moves_the_token_files_of_the_previous_release_into_the_store() {
    let mut env = Env::new();
    let data = env.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    write_schema(&data.join("rota.db"), &MAIN_UP_TO_5);
    write_schema(&data.join("rota.db.logs"), &LOGS_UP_TO_2);
    let (admin, join) = ("a".repeat(64), "b".repeat(64));
    write_token(&data.join("admin.token"), &admin);
    write_token(&data.join("join.token"), &join);
    assert!(
        rusqlite::Connection::open(data.join("rota.db"))
            .unwrap()
            .prepare("SELECT 1 FROM credentials")
            .is_err()
    );

    env.start_server(&[]);
    let (admin_line, join_line) = token_lines(&env);
    assert!(admin_line.ends_with("(existing file, reused)"), "{admin_line}");
    assert!(join_line.ends_with("(existing file, reused)"), "{join_line}");
    let stored = stored_hashes(&env);
    assert_eq!(stored.get("admin"), Some(&sha256(&admin)), "the admin token file's hash was stored");
    assert_eq!(stored.get("join"), Some(&sha256(&join)), "the join token file's hash was stored");
    assert_eq!((token(&env, "admin.token"), token(&env, "join.token")), (admin.clone(), join));
    job_list(&env, &admin).success();
    let _w = spawn_worker(&env, "w1", &[]);

    // And the next start of the new release finds them there.
    drop(_w);
    assert_eq!(env.stop_server(), Some(0));
    env.start_server(&[]);
    job_list(&env, &admin).success();
}
