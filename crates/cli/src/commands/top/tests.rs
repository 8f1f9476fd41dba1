//! `rota top` against a real server (the test kit's, on port 0, SQLite) and real workers:
//! the run loop is driven with keys sent on a channel and drawn on ratatui's `TestBackend`,
//! whose text is snapshot-tested once times, ids and the host name are fixed. With
//! `ROTA_UPDATE_SCREENSHOTS=1` the fleet view is also written to docs/screenshots/top.svg.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::model::Model;
use super::{App, Flow};
use crate::commands::job::Api;
use clap::Parser;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rota_api_types::workers::WorkerState;
use rota_testkit::background::{Cleanup, code, json, run, stderr};
use rota_testkit::{Env, bound, server, spawn_worker, submit, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A `rota top` of `env`'s server (its admin token given), as `rota top` builds it.
fn app(env: &Env) -> App {
    let token = server::read_token(&env.data_dir().join("admin.token")).unwrap();
    let cli =
        crate::args::Cli::try_parse_from(["rota", "--server", &env.url, "--token", &token, "top"]).unwrap();
    let api = Api::connect(&cli.global, &crate::config::Paths::from_env().unwrap()).unwrap();
    let model = Model::new(api.server.clone(), None, false, chrono::Utc::now());
    App::start(api, model)
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

/// Steps the loop until `done` holds for its model (within the kit's bound).
async fn step_until(
    app: &mut App,
    term: &mut Terminal<TestBackend>,
    keys: &mut mpsc::Receiver<KeyEvent>,
    what: &str,
    done: impl Fn(&Model) -> bool,
) {
    let start = Instant::now();
    while !done(&app.model) {
        assert!(start.elapsed() < bound(), "{what}: not seen within {:?}; model: {:#?}", bound(), app.model);
        let flow =
            tokio::time::timeout(Duration::from_secs(10), app.step(term, keys)).await.unwrap().unwrap();
        assert_eq!(flow, Flow::Continue, "{what}: the loop quit");
    }
    eprintln!("{what}: seen after {:?}", start.elapsed());
}

/// Sends `k` and steps until the loop has acted on it.
async fn press(
    app: &mut App,
    term: &mut Terminal<TestBackend>,
    tx: &mpsc::Sender<KeyEvent>,
    keys: &mut mpsc::Receiver<KeyEvent>,
    k: KeyEvent,
) {
    tx.send(k).await.unwrap();
    while !keys.is_empty() {
        let flow =
            tokio::time::timeout(Duration::from_secs(10), app.step(term, keys)).await.unwrap().unwrap();
        assert_eq!(flow, Flow::Continue, "the loop quit on {k:?}");
    }
}

/// The model with what changes from run to run fixed: the server's port, the host name,
/// ages, ids and restart counts. Offline sessions are left out: whether a superseded one
/// is still listed depends on timing.
fn freeze(model: &mut Model) {
    let host = rota_worker::host_name();
    // Whole words only: a short host name may be part of other words.
    let fix = |s: &str| {
        s.split(' ')
            .map(|w| {
                let bare = w.trim_matches(|c: char| "():;,".contains(c));
                if bare == host { w.replace(bare, "HOST") } else { w.to_string() }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    model.server = "http://127.0.0.1:PORT".into();
    model.now = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    model.last_event = Some("worker active".into());
    let now = model.now;
    if let Some(h) = &mut model.heal {
        h.line = fix(&h.line);
    }
    let s = model.snapshot.as_mut().unwrap();
    s.workers.retain(|w| w.state != WorkerState::Offline);
    for w in &mut s.workers {
        w.host = fix(&w.host);
        w.name = fix(&w.name);
        w.last_heartbeat_at = now - chrono::Duration::milliseconds(400);
    }
    for v in &mut s.supervisors {
        v.report_age_ms = 1200;
        v.report.host = fix(&v.report.host);
        v.report.worker = v.report.worker.as_deref().map(fix);
        v.report.restarts = 0;
    }
    for (i, j) in s.running.iter_mut().enumerate() {
        j.id = format!("01900000-0000-7000-8000-0000a1b2c3d{i}").parse().unwrap();
        j.created_at = now - chrono::Duration::seconds(3);
    }
    for q in &mut s.queues {
        if q.oldest_waiting_since.is_some() {
            q.oldest_waiting_since = Some(now - chrono::Duration::seconds(42));
        }
    }
    if let Some(l) = &mut model.logs {
        l.job = "01900000-0000-7000-8000-0000a1b2c3d0".parse().unwrap();
    }
}

/// The screen's text, one quoted line per row (ratatui's `TestBackend` view).
fn screen(term: &Terminal<TestBackend>) -> String {
    term.backend().to_string()
}

/// Writes the README's screenshot when asked to.
fn screenshot(term: &Terminal<TestBackend>) {
    if std::env::var_os("ROTA_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots/top.svg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, super::svg::render(term.backend().buffer())).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_shows_two_live_workers_a_running_job_and_its_logs() {
    let mut env = Env::new();
    env.start_server(&[]);
    let _alpha = spawn_worker(&env, "alpha", &["--concurrency", "2"]);
    let _beta = spawn_worker(&env, "beta", &[]);
    let id = submit(
        &env,
        &["--name", "render", "--", "sh", "-c", "echo frame 1 of 3; echo frame 2 of 3; sleep 300"],
    );
    eprintln!("submitted {id}");

    let mut app = app(&env);
    let mut term = Terminal::new(TestBackend::new(110, 30)).unwrap();
    let (tx, mut keys) = mpsc::channel(16);
    step_until(&mut app, &mut term, &mut keys, "two active workers, a running job, the stream live", |m| {
        let active = m.fleet_rows().iter().filter(|r| r.kind == "worker" && r.state == "active").count();
        active == 2 && m.job_rows().len() == 1 && m.stream == super::model::Stream::Live
    })
    .await;

    // The jobs pane (Tab twice), then its log tail.
    for k in [
        KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE),
        KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE),
        key('l'),
    ] {
        press(&mut app, &mut term, &tx, &mut keys, k).await;
    }
    step_until(&mut app, &mut term, &mut keys, "the job's log lines", |m| {
        m.logs.as_ref().is_some_and(|l| l.shown().len() >= 2)
    })
    .await;

    let mut frozen = app.model.clone();
    freeze(&mut frozen);
    let mut shot = Terminal::new(TestBackend::new(110, 30)).unwrap();
    shot.draw(|f| super::view::render(f, &frozen)).unwrap();
    insta::assert_snapshot!("top_fleet", screen(&shot));
    screenshot(&shot);

    // Cancel it from the view: c, then y.
    press(&mut app, &mut term, &tx, &mut keys, key('c')).await;
    assert!(screen(&term).contains("? y/n"), "{}", screen(&term));
    press(&mut app, &mut term, &tx, &mut keys, key('y')).await;
    step_until(&mut app, &mut term, &mut keys, "the job cancelled and gone from the running jobs", |m| {
        m.status.starts_with("cancelled job") && m.job_rows().is_empty()
    })
    .await;
    let o = run(&env, &["job", "show", &id, "--json"]);
    assert_eq!(json(&o)["state"], "cancelled", "{}", stderr(&o));

    tx.send(key('q')).await.unwrap();
    assert_eq!(app.step(&mut term, &mut keys).await.unwrap(), Flow::Quit);
}

fn supervisors(env: &Env) -> Vec<Value> {
    let o = run(env, &["worker", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["supervisors"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heal_key_heals_a_crash_looping_worker_and_shows_its_progress() {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let mut env = Env::new();
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let crash = rota_testkit::background::start_crash_loopable(&env);
    wait_until(bound(), "the supervisor reports running", || {
        supervisors(&env).iter().any(|s| s["state"] == "running" && !s["worker"].is_null())
    });
    std::fs::write(&crash, b"").unwrap();
    wait_until(bound(), "the server lists the supervisor failed", || {
        supervisors(&env).iter().any(|s| s["state"] == "failed")
    });
    std::fs::remove_file(&crash).unwrap();

    let mut app = app(&env);
    let mut term = Terminal::new(TestBackend::new(110, 24)).unwrap();
    let (tx, mut keys) = mpsc::channel(16);
    step_until(&mut app, &mut term, &mut keys, "the failed supervisor shown", |m| {
        m.fleet_rows().iter().any(|r| r.kind == "supervisor" && r.state == "failed")
    })
    .await;
    assert!(screen(&term).contains("1 unhealthy"), "{}", screen(&term));

    press(&mut app, &mut term, &tx, &mut keys, key('h')).await;
    assert!(app.model.healing(), "{:#?}", app.model.heal);
    assert!(screen(&term).contains("heal: "), "{}", screen(&term));
    // The heal line as it moves (the stream's heal events, then the server's answer).
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    step_until(&mut app, &mut term, &mut keys, "the heal done and the worker running and active", |m| {
        let mut seen = lines.lock().unwrap();
        if let Some(h) = &m.heal
            && seen.last() != Some(&h.line)
        {
            seen.push(h.line.clone());
        }
        let rows = m.fleet_rows();
        !m.healing()
            && rows.iter().any(|r| r.kind == "supervisor" && r.state == "running")
            && rows.iter().any(|r| r.kind == "worker" && r.state == "active")
    })
    .await;
    let lines = lines.into_inner().unwrap();
    eprintln!("heal lines shown: {lines:#?}");
    assert!(lines[0].starts_with("heal: asking the server"), "{lines:?}");
    let line = app.model.heal.as_ref().unwrap().line.clone();
    assert!(line.starts_with("heal: done, healed 1 worker(s), 0 failed"), "{line}");
    assert!(supervisors(&env).iter().any(|s| s["state"] == "running"));

    let mut frozen = app.model.clone();
    freeze(&mut frozen);
    let mut shot = Terminal::new(TestBackend::new(110, 24)).unwrap();
    shot.draw(|f| super::view::render(f, &frozen)).unwrap();
    insta::assert_snapshot!("top_healed", screen(&shot));

    tx.send(key('q')).await.unwrap();
    assert_eq!(app.step(&mut term, &mut keys).await.unwrap(), Flow::Quit);
}
