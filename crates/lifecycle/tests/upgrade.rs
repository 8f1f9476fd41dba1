//! Settings files written by the release before one settings type (format version 1,
//! captured from that binary's `worker start`, `worker multi start` and `server start`
//! with paths anonymised) are read into today's settings, rewritten on first use, and run
//! the same command line as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_domain::settings::Autoscale;
use rota_lifecycle::paths::{Dirs, Instance};
use rota_lifecycle::saved::{self, SETTINGS_VERSION};
use std::path::Path;
use std::time::Duration;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/settings-v1").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_profile_worker_keeps_every_setting() {
    let (s, upgraded) = saved::parse(&fixture("profile-ci.json")).unwrap();
    assert!(upgraded);
    assert_eq!(s.version, SETTINGS_VERSION);
    let w = &s.worker;
    assert_eq!(w.server.as_deref(), Some("http://10.0.0.5:7777"));
    assert_eq!((w.name.as_deref(), w.profile.as_deref()), (Some("ci-worker"), Some("ci")));
    assert_eq!(w.queues, ["build", "deploy"]);
    assert_eq!(w.tags, ["gpu", "linux"]);
    assert_eq!(w.autoscale, Some(Autoscale { min: 2, max: 6 }));
    assert_eq!(w.scale_up_step, Some(3));
    assert_eq!(w.idle_period, Some(Duration::from_secs(20)));
    assert_eq!(w.max_jobs, Some(500));
    assert_eq!(w.max_memory, Some(1 << 30));
    assert_eq!(w.drain_timeout, Some(Duration::from_secs(45)));
    assert_eq!(w.workspace.as_deref(), Some(Path::new("/srv/ws")));
    assert_eq!(s.supervision.max_restarts, 7);
    assert_eq!(s.supervision.min_uptime_ms, 5000);
    // The command line the release before ran (durations now written as humantime).
    assert_eq!(
        s.invocation(Path::new("/usr/local/bin/rota")).args,
        [
            "--server",
            "http://10.0.0.5:7777",
            "worker",
            "run",
            "--profile",
            "ci",
            "--name",
            "ci-worker",
            "--queue",
            "build",
            "--queue",
            "deploy",
            "--tag",
            "gpu",
            "--tag",
            "linux",
            "--autoscale",
            "2,6",
            "--scale-up-step",
            "3",
            "--idle-period",
            "20s",
            "--max-jobs",
            "500",
            "--max-memory",
            "1073741824",
            "--drain-timeout",
            "45s",
            "--workspace",
            "/srv/ws"
        ]
    );
    // Written back, it reads as itself and is no longer an upgrade.
    let again = saved::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(again, (s, false));
}

#[test]
fn nodes_keep_their_files_env_token_and_command() {
    let (n1, _) = saved::parse(&fixture("node-n1.json")).unwrap();
    assert_eq!(n1.node.as_deref(), Some("n1"));
    assert_eq!(n1.worker.queues, ["q1"]);
    assert_eq!(n1.pidfile, Path::new("/run/user/1000/n1.pid"));
    assert_eq!(n1.log_path, Path::new("/srv/n1.log"));
    let (n2, _) = saved::parse(&fixture("node-n2.json")).unwrap();
    assert_eq!(n2.env_file.as_deref(), Some(Path::new("/srv/env")));
    assert!(n2.join_token_file.is_some());
    let inv = n2.invocation(Path::new("/ignored"));
    assert_eq!(inv.program, Path::new("/usr/local/bin/rota"));
    assert_eq!(inv.args, ["worker", "run", "--tag", "from-cmd"]);
    assert!(inv.env.contains(&("ROTA_WORKER_NODE".into(), "n2".into())));
}

#[test]
fn the_default_worker_and_the_server() {
    let (d, _) = saved::parse(&fixture("default.json")).unwrap();
    assert_eq!(d.worker.concurrency, Some(3));
    assert_eq!(d.worker.profile, None);
    let (s, _) = saved::parse(&fixture("server.json")).unwrap();
    assert!(s.is_server());
    let ss = s.server_settings.as_ref().unwrap();
    assert_eq!(ss.listen.as_deref(), Some("127.0.0.1:0"));
    assert_eq!(ss.retention, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(ss.lease_ttl, Some(Duration::from_secs(20)));
    assert_eq!(ss.log_quota, Some(1 << 30));
    assert_eq!(s.supervision.restart_delay_ms, 2000);
    assert_eq!(s.url(), "http://127.0.0.1:0");
    assert_eq!(
        s.invocation(Path::new("/bin/rota")).args,
        [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--retention",
            "7days",
            "--lease-ttl",
            "20s",
            "--log-quota",
            "1073741824"
        ]
    );
}

#[test]
fn loading_rewrites_the_file_once_and_bad_files_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs { state: tmp.path().join("state"), run: tmp.path().join("run") };
    dirs.ensure().unwrap();
    let paths = dirs.instance(&Instance::profile(Some("ci")).unwrap());
    std::fs::write(&paths.meta, fixture("profile-ci.json")).unwrap();
    // Read-only listing: upgraded in memory, the file untouched.
    let listed = saved::all_saved(&dirs).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].1.is_ok());
    assert_eq!(std::fs::read(&paths.meta).unwrap(), fixture("profile-ci.json"));
    // First use: rewritten in today's format, with a note saying so.
    let mut notes = Vec::new();
    let s = saved::load(&paths, &mut notes).unwrap().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("upgraded the saved settings"), "{notes:?}");
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&paths.meta).unwrap()).unwrap();
    assert_eq!(on_disk["version"], SETTINGS_VERSION);
    assert_eq!(on_disk["worker"]["drainTimeout"], "45s");
    let mut notes = Vec::new();
    assert_eq!(saved::load(&paths, &mut notes).unwrap(), Some(s));
    assert!(notes.is_empty(), "a second load upgrades nothing: {notes:?}");
    // A version this release does not know is moved aside, not trusted.
    std::fs::write(&paths.meta, br#"{"version": 9, "key": "profile-ci"}"#).unwrap();
    let mut notes = Vec::new();
    assert_eq!(saved::load(&paths, &mut notes).unwrap(), None);
    assert!(notes[0].contains("unknown version 9"), "{notes:?}");
    assert!(!paths.meta.exists());
    // A version 1 file that breaks a rule is refused the same way, naming the rule.
    let mut bad: serde_json::Value = serde_json::from_slice(&fixture("default.json")).unwrap();
    bad["concurrency"] = 0.into();
    std::fs::write(&paths.meta, serde_json::to_vec(&bad).unwrap()).unwrap();
    let mut notes = Vec::new();
    assert_eq!(saved::load(&paths, &mut notes).unwrap(), None);
    assert!(notes[0].contains("--concurrency"), "{notes:?}");
}

/// Issue 18: a background server saved by the release before TLS, listening on a remote
/// address over plain HTTP, keeps serving as it did after the upgrade: `--insecure-http`
/// (which that address now needs) is added once, with a note saying so.
#[test]
fn a_saved_remote_plain_http_server_keeps_plain_http_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs { state: tmp.path().join("state"), run: tmp.path().join("run") };
    dirs.ensure().unwrap();
    let paths = dirs.instance(&Instance::Server);
    let mut old = saved::Saved::fresh(&paths, String::new());
    old.server_settings = Some(rota_domain::settings::ServerSettings {
        listen: Some("0.0.0.0:7777".into()),
        allow_remote: true,
        ..Default::default()
    });
    let text = serde_json::to_string(&old).unwrap();
    assert!(!text.contains("insecureHttp"), "the previous release's file has no such field: {text}");
    std::fs::write(&paths.meta, &text).unwrap();

    let mut notes = Vec::new();
    let s = saved::load(&paths, &mut notes).unwrap().unwrap();
    assert!(s.server_settings.as_ref().unwrap().insecure_http);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("0.0.0.0:7777") && notes[0].contains("--insecure-http"), "{notes:?}");
    let args = s.invocation(Path::new("/bin/rota")).args;
    assert!(args.iter().any(|a| a == "--insecure-http"), "{args:?}");
    s.server_settings.as_ref().unwrap().check().unwrap();
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&paths.meta).unwrap()).unwrap();
    assert_eq!(written["serverSettings"]["insecureHttp"], true, "rewritten: {written}");
    let mut notes = Vec::new();
    saved::load(&paths, &mut notes).unwrap().unwrap();
    assert!(notes.is_empty(), "once: {notes:?}");
}
