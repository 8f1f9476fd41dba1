//! Schedules end to end (issue 14, "Schedule"), on both backends: a schedule firing every
//! 2 s runs once per fire time with no fire time twice; `overlap: cancel_previous` cancels
//! the running run at each fire time; `overlap: skip` skips the fire times
//! that come while a slow run is going; a server stopped for ~10 s and started again on the
//! same database runs exactly one late fire time for the gap (`catchup: 1`) and records the
//! rest as missed; invalid schedules are refused at apply naming the field's line; `rota
//! get schedule NAME` shows cron, zone, next fire time, last run and what did not run; with
//! two servers on PostgreSQL, killing the leader hands the schedule to the other server
//! without running a fire time twice.
//! Every run appends `FIRE_TIME JOB_ID` to a log, which is what "ran" means here. Bounds
//! are generous (a loaded 2-core machine); observed times are printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_testkit::cluster::{Cluster, Timing};
use rota_testkit::postgres::TestDb;
use rota_testkit::{Backend, Env, both_backends, isolate, rota_bin, server, spawn_worker};
use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(rota_bin());
    isolate(&mut cmd, env);
    cmd.args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Applies a workflow whose step appends its fire time and job id to `log` (after sleeping
/// `sleep` seconds when given, the line written first), and a schedule of it.
fn apply(c: &Env, dir: &str, name: &str, extra: &str, sleep: u32) -> String {
    let log = format!("{dir}/{name}.log");
    let doc = format!(
        "kind: Workflow\nmetadata: {{name: {name}-wf}}\nspec:\n  steps:\n    - name: s\n      run: echo \"$ROTA_FIRE_TIME $ROTA_JOB_ID\" >> {log}; sleep {sleep}\n---\nkind: Schedule\nmetadata: {{name: {name}}}\nspec:\n  cron: '*/2 * * * * *'\n  workflow: {name}-wf\n{extra}"
    );
    let path = format!("{dir}/{name}.yaml");
    std::fs::write(&path, doc).unwrap();
    let o = run(c, &["apply", "-f", &path]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out, format!("workflows/{name}-wf created\nschedules/{name} created\n"));
    log
}

/// The fire times the runs logged, in order of logging; panics on one logged twice.
fn runs(log: &str) -> Vec<DateTime<Utc>> {
    let body = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in body.lines() {
        let fire = line.split_whitespace().next().unwrap();
        assert!(seen.insert(fire.to_string()), "fire time {fire} ran twice:\n{body}");
        out.push(utc(fire));
    }
    out
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Waits until `log` holds at least `n` runs.
async fn wait_runs(c: &Env, log: &str, n: usize, within: Duration) -> Vec<DateTime<Utc>> {
    let start = Instant::now();
    loop {
        let got = runs(log);
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < within,
            "{} runs after {within:?}, wanted {n}\n{}",
            got.len(),
            c.server_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn schedule_json(c: &Env, name: &str) -> serde_json::Value {
    let o = run(c, &["get", "schedule", name, "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o).1);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The recent fire times that did not run, with their outcome.
fn not_run(c: &Env, name: &str) -> Vec<(DateTime<Utc>, String)> {
    let v = schedule_json(c, name);
    v["status"]["schedule"]["recentNotRun"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (utc(f["fireTime"].as_str().unwrap()), f["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn show(times: &[DateTime<Utc>]) -> String {
    times.iter().map(|t| t.format("%H:%M:%S").to_string()).collect::<Vec<_>>().join(" ")
}

both_backends!(async fn every_two_seconds_runs_once_per_fire_time);
async fn every_two_seconds_runs_once_per_fire_time(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 4).await;
    let dir = c.marker_dir("sched");
    let applied = Utc::now();
    let log = apply(&c, &dir, "tick", "", 0);
    let got = wait_runs(&c, &log, 6, Duration::from_secs(60)).await;
    eprintln!("applied {}, runs at {}", applied.format("%H:%M:%S%.3f"), show(&got));
    for t in &got {
        assert_eq!(t.timestamp() % 2, 0, "{t}: not a fire time of */2");
        assert!(*t > applied - chrono::Duration::seconds(1), "{t}: before the schedule existed");
    }
    // Every fire time between the first and the last run either ran or is recorded.
    let mut sorted = got.clone();
    sorted.sort();
    let recorded: BTreeSet<DateTime<Utc>> = not_run(&c, "tick").into_iter().map(|(t, _)| t).collect();
    let mut t = sorted[0];
    while t < *sorted.last().unwrap() {
        assert!(sorted.contains(&t) || recorded.contains(&t), "{t} neither ran nor was recorded");
        t += chrono::Duration::seconds(2);
    }

    // What get shows: cron, zone, next fire time, last run with its job and state.
    let v = schedule_json(&c, "tick");
    let s = &v["status"]["schedule"];
    assert_eq!((s["cron"].as_str(), s["timeZone"].as_str()), (Some("*/2 * * * * *"), Some("UTC")), "{v}");
    let next = utc(s["nextFireTime"].as_str().unwrap());
    assert!(next > Utc::now() - chrono::Duration::seconds(3) && next.timestamp() % 2 == 0, "{next}");
    assert_eq!(s["lastRun"]["outcome"], "run", "{v}");
    assert!(s["lastRun"]["jobId"].is_string(), "{v}");
    let ready = &v["status"]["conditions"][0];
    assert_eq!((ready["type"].as_str(), ready["status"].as_str()), (Some("Ready"), Some("True")), "{v}");
    let o = run(&c, &["get", "schedule", "tick"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for want in ["Cron:       */2 * * * * *", "Time zone:  UTC", "Next fire:  20", "Last run:   20", " job "]
    {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let o = run(&c, &["get", "schedules"]);
    let (out, _) = text(&o);
    assert!(out.contains("NEXT") && out.contains("tick") && out.contains("tick-wf"), "{out}");

    // Suspended: nothing more runs.
    let path = format!("{dir}/tick.yaml");
    let body = std::fs::read_to_string(&path).unwrap() + "  suspend: true\n";
    std::fs::write(&path, body).unwrap();
    let o = run(&c, &["apply", "-f", &path]);
    assert!(text(&o).0.contains("schedules/tick configured"), "{}", text(&o).1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = runs(&log).len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs(&log).len(), before, "a suspended schedule runs nothing");
    let v = schedule_json(&c, "tick");
    assert_eq!(v["status"]["conditions"][0]["reason"], "Suspended", "{v}");
}

both_backends!(async fn overlap_skip_skips_fire_times_while_a_run_is_going);
async fn overlap_skip_skips_fire_times_while_a_run_is_going(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 4).await;
    let dir = c.marker_dir("sched");
    let log = apply(&c, &dir, "slow", "  overlap: skip\n", 5);
    let got = wait_runs(&c, &log, 3, Duration::from_secs(90)).await;
    let skipped: Vec<DateTime<Utc>> =
        not_run(&c, "slow").into_iter().filter(|(_, o)| o == "skipped").map(|(t, _)| t).collect();
    eprintln!("runs at {}; skipped {}", show(&got), show(&skipped));
    // A run takes over 5 s: the next one starts at least 6 s (three fire times) later.
    for w in got.windows(2) {
        assert!(w[1] - w[0] >= chrono::Duration::seconds(6), "runs overlapped: {}", show(&got));
    }
    assert!(skipped.len() >= 2, "skipped {}", show(&skipped));
    for t in &skipped {
        assert!(!got.contains(t), "{t} both ran and was skipped");
    }
}

both_backends!(async fn overlap_cancel_previous_cancels_the_running_run);
async fn overlap_cancel_previous_cancels_the_running_run(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 4).await;
    let dir = c.marker_dir("sched");
    let log = apply(&c, &dir, "busy", "  overlap: cancel_previous\n", 30);
    let got = wait_runs(&c, &log, 3, Duration::from_secs(60)).await;
    eprintln!("runs at {}", show(&got));
    let body = std::fs::read_to_string(&log).unwrap();
    let jobs: Vec<&str> = body.lines().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    // Each run but the newest was cancelled when the next fire time came.
    for id in &jobs[..jobs.len() - 1] {
        let job = rota_testkit::wait_for_state(&c, id, &["cancelled"], rota_testkit::bound());
        assert_eq!(job["state"], "cancelled", "{job}");
    }
    for w in got.windows(2) {
        assert_eq!(w[1] - w[0], chrono::Duration::seconds(2), "a fire time did not run: {}", show(&got));
    }
}

both_backends!(async fn a_restart_runs_one_late_fire_time_and_records_the_rest_missed);
async fn a_restart_runs_one_late_fire_time_and_records_the_rest_missed(backend: Backend) {
    let mut c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 4).await;
    let dir = c.marker_dir("sched");
    let log = apply(&c, &dir, "gap", "  catchup: 1\n", 0);
    wait_runs(&c, &log, 2, Duration::from_secs(60)).await;
    let addr = c.listen_addr();
    c.stop_server();
    let stopped = Utc::now();
    let before = runs(&log);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let started = Utc::now();
    c.start_server(&addr).await;
    let up = Utc::now();
    let after = wait_runs(&c, &log, before.len() + 3, Duration::from_secs(60)).await;
    let missed: Vec<DateTime<Utc>> =
        not_run(&c, "gap").into_iter().filter(|(_, o)| o == "missed").map(|(t, _)| t).collect();
    eprintln!(
        "stopped {}, started {} (up {}); runs before {}; runs {}; missed {}",
        stopped.format("%H:%M:%S%.3f"),
        started.format("%H:%M:%S%.3f"),
        up.format("%H:%M:%S%.3f"),
        show(&before),
        show(&after),
        show(&missed)
    );
    let last_before = *before.iter().max().unwrap();
    // The first run after the gap is the newest fire time due when the new server's
    // controller first looked: the one late run (`catchup: 1`). On a loaded machine that
    // look may come after one more fire time fell due, so the run is not necessarily before
    // `started`; what must hold is that every fire time of the gap before it is `missed`.
    let first = *after.iter().filter(|t| **t > last_before).min().expect("a run after the gap");
    assert!(
        first >= started - chrono::Duration::seconds(2),
        "the late run is the newest due: {}",
        show(&after)
    );
    let gap_missed: Vec<&DateTime<Utc>> =
        missed.iter().filter(|t| **t > last_before && **t < first).collect();
    assert!(gap_missed.len() >= 3, "the rest of the gap is missed: {}", show(&missed));
    // Every fire time of the gap is accounted for once: missed, or the one late run.
    let mut t = last_before + chrono::Duration::seconds(2);
    while t < first {
        assert!(missed.contains(&t), "{t}: neither ran nor recorded as missed");
        t += chrono::Duration::seconds(2);
    }
    for m in &missed {
        assert!(!after.contains(m), "{m} both ran and was missed");
    }
    let mut sorted = after.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), after.len(), "a fire time ran twice: {}", show(&after));
}

both_backends!(async fn invalid_schedules_are_refused_at_apply_naming_the_line);
async fn invalid_schedules_are_refused_at_apply_naming_the_line(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let dir = c.marker_dir("docs");
    let wf = "kind: Workflow\nmetadata: {name: w}\nspec:\n  steps: [{name: s, run: 'true'}]\n---\n";
    let cases = [
        ("cron", "  cron: '* * *'\n  workflow: w\n", 9),
        ("zone", "  cron: '@hourly'\n  timeZone: Mars/Base\n  workflow: w\n", 10),
        ("workflow", "  cron: '@hourly'\n  workflow: nope\n", 10),
        ("input", "  cron: '@hourly'\n  workflow: w\n  inputs: {colour: red}\n", 11),
    ];
    for (what, spec, line) in cases {
        let path = format!("{dir}/{what}.yaml");
        std::fs::write(&path, format!("{wf}kind: Schedule\nmetadata: {{name: s}}\nspec:\n{spec}")).unwrap();
        let o = run(&c, &["apply", "-f", &path]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(&format!("{path}:{line}:")), "{what}: names line {line}: {err}");
    }
    let o = run(&c, &["get", "schedules", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0), "nothing stored: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_hands_the_schedule_over_without_a_fire_time_twice() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    let a = env.url.clone();
    let b = server::start_beside(&env, &db.url);
    // A started first and leads; every command of the tree gets ROTA_SERVER=A,B.
    let root = env.dir.path().to_path_buf();
    let start = Instant::now();
    while rota_testkit::several::leads(&root, &a).await != Some(true) {
        assert!(start.elapsed() < Duration::from_secs(30), "A never led");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.url = format!("{a},{}", b.url);
    let mut worker = spawn_worker(&env, "w1", &["--concurrency", "4"]);
    let dir = env.path("sched");
    std::fs::create_dir_all(&dir).unwrap();
    let log = apply(&env, dir.to_str().unwrap(), "lead", "", 0);
    let before = wait_runs(&env, &log, 3, Duration::from_secs(60)).await;
    env.kill_server();
    let killed = Utc::now();
    let after = wait_runs(&env, &log, before.len() + 4, Duration::from_secs(90)).await;
    let recorded: BTreeSet<DateTime<Utc>> = not_run(&env, "lead").into_iter().map(|(t, _)| t).collect();
    eprintln!(
        "killed A at {}; runs {}; not run {}",
        killed.format("%H:%M:%S%.3f"),
        show(&after),
        show(&recorded.iter().copied().collect::<Vec<_>>())
    );
    // No fire time ran twice (`runs` panics on one), and each from the first to the last
    // either ran (through A, then B) or was recorded as not run.
    let mut sorted = after.clone();
    sorted.sort();
    let mut t = sorted[0];
    while t < *sorted.last().unwrap() {
        assert!(sorted.contains(&t) || recorded.contains(&t), "{t} neither ran nor was recorded");
        t += chrono::Duration::seconds(2);
    }
    assert!(sorted.last().unwrap() > &killed, "B fired after A was killed: {}", show(&sorted));
    assert_eq!(rota_testkit::several::leads(&root, &b.url).await, Some(true), "B leads now");
    worker.terminate(rota_testkit::bound());
    drop(b);
}
