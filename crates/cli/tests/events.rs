//! The event stream end to end (issue 16, acceptance 2, 4 and 5), with a real `rota server`
//! and real workers on both backends: a client that disconnects for 2 s and reconnects with
//! `Last-Event-ID` receives every event it missed, in order, once; reconnecting to the other
//! server of a PostgreSQL pair gives `resync` first and then live events; `rota events -f
//! --json` shows a job from submit to success in order; a server that loses a bus message
//! sends its connected clients a `resync`. Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_api_types::events::{EventsQuery, StreamEvent};
use rota_client::{Client, EventStream};
use rota_testkit::{
    Backend, Env, HEARTBEAT, LEASE_TTL, both_backends, bound, isolate, rota_bin, server, spawn_worker,
    submit, wait_for_end,
};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn admin(env: &Env, url: &str) -> Client {
    let token = server::read_token(&env.data_dir().join("admin.token")).unwrap();
    Client::new(url, Some(token)).unwrap()
}

fn follow() -> EventsQuery {
    EventsQuery { follow: Some(true), ..EventsQuery::default() }
}

/// The suite runs a second time over a bus that loses every other message (`.ci/run`'s
/// lossy-bus phase). Exact delivery is then not promised; what is promised is a `resync`
/// (reload state and carry on), which these tests check instead, with the job's end read
/// from the store.
fn lossy_bus() -> bool {
    std::env::var_os("ROTA_TEST_BUS_DROP_EVERY").is_some()
}

/// The number part of an id `SERVER-N`.
fn number(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

/// Reads `stream` (reconnecting after `last` when the server ends it) until `done` holds
/// for an event; every event read, in order.
async fn read_until(
    client: &Client,
    mut stream: EventStream,
    query: &EventsQuery,
    done: impl Fn(&StreamEvent) -> bool,
) -> (Vec<StreamEvent>, EventStream) {
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        assert!(started.elapsed() < bound(), "the awaited event never came; got {got:#?}");
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Ok(Some(e))) => {
                let end = done(&e) || (lossy_bus() && e.kind == "resync");
                got.push(e);
                if end {
                    return (got, stream);
                }
            }
            // The server ended a followed stream (its longest poll): carry on from there.
            Ok(Ok(None)) => {
                let last = stream.last_id().map(str::to_string);
                stream = client.events(query, last.as_deref()).await.unwrap();
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
}

fn job_ended(id: &str) -> impl Fn(&StreamEvent) -> bool + '_ {
    move |e| {
        e.kind == "job"
            && e.job.map(|j| j.to_string()).as_deref() == Some(id)
            && e.state.as_deref() == Some("succeeded")
    }
}

both_backends!(async fn a_client_that_reconnects_with_its_last_event_id_gets_what_it_missed_once_in_order);
async fn a_client_that_reconnects_with_its_last_event_id_gets_what_it_missed_once_in_order(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _w = spawn_worker(&env, "w", &[]);
    let client = admin(&env, &env.url);

    let stream = client.events(&follow(), None).await.unwrap();
    let first = submit(&env, &["--", "true"]);
    let (seen, stream) = read_until(&client, stream, &follow(), job_ended(&first)).await;
    if lossy_bus() {
        assert!(seen.iter().any(|e| job_ended(&first)(e) || e.kind == "resync"), "{seen:#?}");
        assert_eq!(wait_for_end(&env, &first)["state"], "succeeded");
        return;
    }
    let last = stream.last_id().unwrap().to_string();
    assert_eq!(seen.last().unwrap().id, last);
    drop(stream);

    // Away for 2 s while two more jobs run from submit to success.
    let second = submit(&env, &["--", "true"]);
    let third = submit(&env, &["--", "sh", "-c", "echo out"]);
    wait_for_end(&env, &second);
    wait_for_end(&env, &third);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let again = client.events(&follow(), Some(&last)).await.unwrap();
    let (missed, _) = read_until(&client, again, &follow(), job_ended(&third)).await;
    assert!(missed.iter().all(|e| e.kind != "resync"), "{missed:#?}");
    // Every event after `last`, once, in order: the numbers run on without a hole.
    let numbers: Vec<u64> = missed.iter().map(|e| number(&e.id)).collect();
    let expected: Vec<u64> = (number(&last) + 1..).take(numbers.len()).collect();
    assert_eq!(numbers, expected, "{missed:#?}");
    for id in [&second, &third] {
        let of = |kind: &str, state: &str| {
            missed.iter().any(|e| {
                e.kind == kind
                    && e.job.map(|j| j.to_string()).as_deref() == Some(id)
                    && e.state.as_deref() == Some(state)
            })
        };
        assert!(
            of("job", "queued") && of("attempt", "running") && of("attempt", "succeeded"),
            "{id}: {missed:#?}"
        );
    }
    // What it missed is what the server's buffer holds after `last`.
    let mut dump = client.events(&EventsQuery::default(), None).await.unwrap();
    let mut buffered = Vec::new();
    while let Some(e) = dump.next().await.unwrap() {
        if number(&e.id) > number(&last) {
            buffered.push(e.id);
        }
    }
    let missed_ids: Vec<String> = missed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(buffered[..missed_ids.len()], missed_ids[..]);

    // Another server of a PostgreSQL pair has not got that id: resync first, then live.
    if backend == Backend::Postgres {
        let b = server::start_beside(&env, env.database_url().unwrap());
        let other = admin(&env, &b.url);
        let stream = other.events(&follow(), Some(&last)).await.unwrap();
        let fourth = submit(&env, &["--", "true"]);
        let (got, _) = read_until(&other, stream, &follow(), job_ended(&fourth)).await;
        assert_eq!(got[0].kind, "resync", "{got:#?}");
        assert_eq!(got[0].state.as_deref(), Some("stale_id"));
        assert!(got[1..].iter().all(|e| e.kind != "resync"));
        assert!(got.iter().any(|e| e.job.map(|j| j.to_string()) == Some(fourth.clone())));
    }
}

both_backends!(async fn rota_events_follow_json_shows_a_job_from_submit_to_success_in_order);
async fn rota_events_follow_json_shows_a_job_from_submit_to_success_in_order(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _w = spawn_worker(&env, "w", &[]);
    let id = submit(&env, &["--", "sh", "-c", "echo hello"]);
    wait_for_end(&env, &id);

    // Started after the job ended: `-f` prints the buffer first, so nothing is missed.
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, &env);
    let child = cmd
        .args(["events", "-f", "--json", "--job", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed however the test ends (a failed assertion too): `-f` never ends by itself.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let started = Instant::now();
    let lossy = lossy_bus();
    // Over a lossy bus the success may be one of the messages lost (and it was lost before
    // this client connected, so no resync is owed to it): read for a while instead.
    let enough = |lines: &[serde_json::Value]| {
        if lossy {
            started.elapsed() > Duration::from_secs(3)
        } else {
            lines.iter().any(|v| v["kind"] == "job" && v["state"] == "succeeded")
        }
    };
    while !enough(&lines) {
        assert!(started.elapsed() < bound(), "no success in {lines:#?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    drop(child);
    if lossy {
        // The events it printed are this job's, in order; a resync may stand for the rest.
        let ids: Vec<u64> = lines.iter().filter_map(|v| v["id"].as_str()).map(number).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
        return;
    }
    let what: Vec<String> = lines
        .iter()
        .map(|v| format!("{}:{}", v["kind"].as_str().unwrap(), v["state"].as_str().unwrap_or("-")))
        .collect();
    eprintln!("{what:?}");
    assert!(lines.iter().all(|v| v["job"] == id.as_str() && v["namespace"] == "default"), "{lines:#?}");
    let at = |w: &str| what.iter().position(|x| x == w).unwrap_or_else(|| panic!("{w} missing: {what:?}"));
    assert_eq!(at("job:queued"), 0, "{what:?}");
    assert!(at("job:queued") < at("attempt:running"));
    assert!(at("attempt:running") < at("logs:-"));
    assert!(at("logs:-") < at("attempt:succeeded"));
    assert!(at("attempt:succeeded") < at("job:succeeded"));
    assert_eq!(at("job:succeeded"), what.len() - 1);
    let ids: Vec<u64> = lines.iter().map(|v| number(v["id"].as_str().unwrap())).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
}

/// A server whose bus loses every other message (feature `test-bus`; SQLite: the in-process
/// bus) tells its connected clients to resync.
#[tokio::test(flavor = "multi_thread")]
async fn a_connected_client_receives_resync_when_the_server_misses_a_bus_message() {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let env = Env::new();
    let spec = server::Spec {
        env: vec![("ROTA_TEST_BUS_DROP_EVERY".into(), "2".into())],
        ..env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &[])
    };
    let s = server::start(spec).unwrap();
    let client = admin(&env, &s.url);
    let stream = client.events(&follow(), None).await.unwrap();
    let submitter = client.clone();
    let spec: rota_domain::JobSpec =
        serde_json::from_str(r#"{"steps":[{"name":"a","run":"true"}]}"#).unwrap();
    // Publishing goes on until the stream shows the resync (the third envelope shows the
    // gap the second left).
    let publishing = tokio::spawn(async move {
        loop {
            let _ = submitter.submit(&spec, None).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (got, _) = read_until(&client, stream, &follow(), |e| e.kind == "resync").await;
    publishing.abort();
    let resync = got.last().unwrap();
    assert_eq!(resync.state.as_deref(), Some("missed"), "{resync:?}");
    let metrics = client.metrics_text().await.unwrap();
    assert!(metrics.contains("rota_event_resyncs_total{reason=\"missed\"}"), "{metrics}");
}
