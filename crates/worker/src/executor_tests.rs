//! Real processes through `run_attempt`: outcomes, byte-exact output, timeouts, stops,
//! no orphans, attempt directories and pgid records.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::procfs::live_group_members;
use rota_domain::{AttemptId, JobId};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[test]
fn spawner_helper() {
    crate::spawner::serve_if_test_helper();
}

#[derive(Default)]
struct Recorder {
    groups: Mutex<Vec<Option<i32>>>,
}

impl Hooks for Recorder {
    fn group(&self, pgid: Option<Pid>) {
        self.groups.lock().unwrap().push(pgid.map(|p| p.as_raw_nonzero().get()));
    }
    fn long_running(&self, _pid: u32) {}
}

impl Recorder {
    fn pgid(&self) -> i32 {
        self.groups.lock().unwrap().iter().flatten().copied().next().unwrap()
    }
}

fn claimed(id: i64, run: &str) -> ClaimedStep {
    ClaimedStep {
        secret_env: Vec::new(),
        attempt_id: AttemptId(id),
        job_id: JobId::new(),
        step: "s".into(),
        attempt: 1,
        run: run.into(),
        env: BTreeMap::new(),
        timeout_ms: None,
        memory_limit: None,
        keep_workspace: false,
        log_cap: 64 << 20,
        queue: None,
    }
}

struct Harness {
    ws: tempfile::TempDir,
    spawner: crate::spawner::Spawner,
    dirs: crate::workspace::AttemptDirs,
    _lock: crate::workspace::WorkspaceLock,
    logs: Arc<LogShip>,
    base: BaseEnv,
}

impl Harness {
    fn new() -> Self {
        let ws = tempfile::tempdir().unwrap();
        let lock = crate::workspace::prepare(ws.path(), None).unwrap();
        let spawner = crate::spawner::start_in_test_binary("executor::tests::spawner_helper").unwrap();
        let dirs = crate::workspace::AttemptDirs::new(ws.path());
        Self {
            ws,
            spawner,
            dirs,
            _lock: lock,
            logs: Arc::new(LogShip::new(Duration::from_millis(250))),
            base: BaseEnv::from_process(),
        }
    }

    fn setup(&self, grace: Duration) -> Setup<'_> {
        Setup {
            host_secrets: &[],
            dirs: &self.dirs,
            spawner: &self.spawner,
            base_env: &self.base,
            secrets: &[],
            host_env: &[],
            project_dir: None,
            kill_grace: grace,
        }
    }

    async fn run(
        &self,
        step: &ClaimedStep,
        stop_rx: mpsc::UnboundedReceiver<StopKind>,
        hooks: &Recorder,
    ) -> Option<AttemptOutcome> {
        self.logs.open(step.attempt_id, step.job_id, &step.step, step.log_cap);
        self.spawner.use_journal(self.ws.path(), false).await.unwrap();
        run_attempt(step, &self.setup(Duration::from_millis(500)), &self.logs, stop_rx, hooks)
            .await
            .map(|e| e.outcome)
    }
}

/// Bound for what takes milliseconds on an idle machine (an exit, a fork), generous for a
/// loaded 2-core CI machine, and far below the `sleep 300` of the steps that must be stopped.
const BOUND: Duration = Duration::from_secs(30);

/// KILL is asynchronous, and `run_attempt` waits only 500 ms for the group to be gone: a
/// killed process may still be running its exit, so the group is checked until it empties.
async fn assert_group_dies(pgid: i32, what: &str) {
    let deadline = std::time::Instant::now() + BOUND;
    while !live_group_members(pgid).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} left processes: {:?}",
            live_group_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the step of attempt `id` created `marker` in its attempt directory (it has
/// run up to that point, e.g. past its `trap`).
async fn wait_marker(ws: &std::path::Path, id: i64, marker: &str) {
    let path = ws.join("attempts").join(id.to_string()).join(marker);
    let deadline = std::time::Instant::now() + BOUND;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stream_bytes(fin: &crate::logbuf::FinalLogs, stream: Stream) -> Vec<u8> {
    fin.chunks.iter().filter(|c| c.stream == stream).flat_map(|c| c.data.0.clone()).collect()
}

#[tokio::test]
async fn output_is_byte_exact_for_non_utf8_without_trailing_newline() {
    let h = Harness::new();
    let step = claimed(1, r"printf 'caf\351 \377\376\000end'; printf 'err\200' >&2");
    let (_tx, rx) = mpsc::unbounded_channel();
    let rec = Recorder::default();
    assert_eq!(h.run(&step, rx, &rec).await, Some(AttemptOutcome::Succeeded));
    let fin = h.logs.finish(step.attempt_id).await;
    assert_eq!(stream_bytes(&fin, Stream::Stdout), b"caf\xe9 \xff\xfe\x00end");
    assert_eq!(stream_bytes(&fin, Stream::Stderr), b"err\x80");
    // The attempt directory and the pgid record are gone, the group was reported gone.
    assert!(!h.ws.path().join("attempts").join("1").exists());
    // The helper journaled the group before the spawn was answered, and forgets it once
    // released (asynchronously: polled).
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let journal = std::fs::read_to_string(crate::pgid::journal_path(h.ws.path())).unwrap();
        if journal.starts_with("+{") && journal.ends_with("\n-1\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{journal}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rec.groups.lock().unwrap().last(), Some(&None));
}

#[tokio::test]
async fn exit_codes_and_signals_become_outcomes() {
    let h = Harness::new();
    let cases = [
        ("exit 3", AttemptOutcome::Failed { exit_code: Some(3), signal: None, why: None }),
        ("kill -9 $$", AttemptOutcome::Failed { exit_code: None, signal: Some(9), why: None }),
        ("true", AttemptOutcome::Succeeded),
    ];
    for (i, (run, want)) in cases.into_iter().enumerate() {
        let step = claimed(10 + i as i64, run);
        let (_tx, rx) = mpsc::unbounded_channel();
        assert_eq!(h.run(&step, rx, &Recorder::default()).await, Some(want), "{run}");
    }
}

#[tokio::test]
async fn the_step_runs_in_its_attempt_directory_which_can_be_kept() {
    let h = Harness::new();
    let mut step = claimed(20, "pwd; touch marker");
    step.keep_workspace = true;
    let (_tx, rx) = mpsc::unbounded_channel();
    assert_eq!(h.run(&step, rx, &Recorder::default()).await, Some(AttemptOutcome::Succeeded));
    let dir = h.ws.path().join("attempts").join("20");
    assert!(dir.join("marker").exists());
    let fin = h.logs.finish(step.attempt_id).await;
    let pwd = String::from_utf8(stream_bytes(&fin, Stream::Stdout)).unwrap();
    assert_eq!(std::fs::canonicalize(pwd.trim()).unwrap(), std::fs::canonicalize(&dir).unwrap());
}

#[tokio::test]
async fn background_children_do_not_outlive_the_step() {
    let h = Harness::new();
    let step = claimed(30, "sleep 300 >/dev/null 2>&1 & echo started");
    let (_tx, rx) = mpsc::unbounded_channel();
    let rec = Recorder::default();
    let began = std::time::Instant::now();
    assert_eq!(h.run(&step, rx, &rec).await, Some(AttemptOutcome::Succeeded));
    assert!(began.elapsed() < BOUND, "{:?}", began.elapsed());
    assert_group_dies(rec.pgid(), "the step").await;
}

#[tokio::test]
async fn an_escaped_process_holding_the_pipe_delays_the_end_by_at_most_the_drain_bound() {
    let h = Harness::new();
    // setsid leaves the group; the escaped sleep keeps stdout open.
    let step = claimed(31, "setsid sleep 30 & echo hi");
    let (_tx, rx) = mpsc::unbounded_channel();
    let began = std::time::Instant::now();
    assert_eq!(h.run(&step, rx, &Recorder::default()).await, Some(AttemptOutcome::Succeeded));
    // The escaped sleep holds the pipe for 30 s; the drain bound cuts that short.
    assert!(began.elapsed() < PIPE_DRAIN + Duration::from_secs(15), "{:?}", began.elapsed());
}

#[tokio::test]
async fn a_timeout_stops_the_whole_group() {
    let h = Harness::new();
    let mut step = claimed(40, "sleep 300 & sleep 300");
    step.timeout_ms = Some(300);
    let (_tx, rx) = mpsc::unbounded_channel();
    let rec = Recorder::default();
    let began = std::time::Instant::now();
    assert_eq!(h.run(&step, rx, &rec).await, Some(AttemptOutcome::Timeout));
    assert!(began.elapsed() < BOUND, "{:?}", began.elapsed());
    assert_group_dies(rec.pgid(), "the timeout").await;
}

#[tokio::test]
async fn stop_orders_decide_the_outcome() {
    let h = Harness::new();
    let cases = [
        (StopKind::Cancel(Signal::TERM), Some(AttemptOutcome::Cancelled)),
        (StopKind::NotHeld, Some(AttemptOutcome::Lost { why: "not held".into() })),
        (StopKind::Fence, Some(AttemptOutcome::Lost { why: "self-fenced: lease not renewed".into() })),
        (StopKind::Shutdown, Some(AttemptOutcome::Lost { why: "worker shut down".into() })),
        (StopKind::Memory, Some(AttemptOutcome::Memory)),
        (StopKind::Superseded, None),
    ];
    for (i, (kind, want)) in cases.into_iter().enumerate() {
        // TERM is ignored, so gentle stops need the KILL after the grace. The order is sent
        // once the step is past its trap (a TERM before it would end the step at once).
        let id = 50 + i as i64;
        let step = claimed(id, "trap '' TERM; touch ready; sleep 300 & sleep 300; sleep 300");
        let (tx, rx) = mpsc::unbounded_channel();
        let rec = Recorder::default();
        let ws = h.ws.path().to_path_buf();
        let stopper = tokio::spawn(async move {
            wait_marker(&ws, id, "ready").await;
            tx.send(kind).unwrap();
            tx
        });
        let began = std::time::Instant::now();
        assert_eq!(h.run(&step, rx, &rec).await, want, "{kind:?}");
        assert!(began.elapsed() < BOUND, "{kind:?} took {:?}", began.elapsed());
        assert_group_dies(rec.pgid(), &format!("{kind:?}")).await;
        drop(stopper.await);
    }
}

#[tokio::test]
async fn a_kill_now_order_cuts_a_grace_short() {
    let h = Harness::new();
    // The cancel is sent once the step is past its trap: a TERM before it would end the
    // step at once (outcome cancelled) instead of starting the 60 s grace.
    let step = claimed(60, "trap '' TERM; touch ready; sleep 300");
    let (tx, rx) = mpsc::unbounded_channel();
    let setup = Setup { kill_grace: Duration::from_secs(60), ..h.setup(Duration::ZERO) };
    h.logs.open(step.attempt_id, step.job_id, &step.step, step.log_cap);
    let ws = h.ws.path().to_path_buf();
    tokio::spawn(async move {
        wait_marker(&ws, 60, "ready").await;
        tx.send(StopKind::Cancel(Signal::TERM)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(StopKind::NotHeld).unwrap();
        std::future::pending::<()>().await;
    });
    let began = std::time::Instant::now();
    let outcome = run_attempt(&step, &setup, &h.logs, rx, &Recorder::default()).await.map(|e| e.outcome);
    assert_eq!(outcome, Some(AttemptOutcome::Lost { why: "not held".into() }));
    // Well under the 60 s grace.
    assert!(began.elapsed() < BOUND, "{:?}", began.elapsed());
}

#[tokio::test]
async fn a_step_that_cannot_be_spawned_is_reported_lost() {
    let h = Harness::new();
    // `sh` is spawned by absolute path, so a bad PATH no longer stops it; a NUL byte in
    // its argument does.
    let step = claimed(70, "echo a\0b");
    let (_tx, rx) = mpsc::unbounded_channel();
    match h.run(&step, rx, &Recorder::default()).await {
        Some(AttemptOutcome::Lost { why }) => assert!(why.contains("cannot start sh"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!h.ws.path().join("attempts").join("70").exists());
}

#[tokio::test]
async fn an_environment_over_the_kernel_limits_fails_the_step_with_the_reason() {
    // One variable over the per-string limit (128 KiB), then many under it that add up to
    // more than the argument limit: the kernel would refuse both (E2BIG). Either fails the
    // step naming the problem, never `lost` (which would be retried on every worker).
    let h = Harness::new();
    let mut one = claimed(50, "true");
    one.env.insert("BIG".into(), "x".repeat(200 * 1024));
    let mut many = claimed(51, "true");
    for i in 0..24 {
        many.env.insert(format!("PART{i}"), "y".repeat(100 * 1024));
    }
    for (step, needle) in [(one, "step.env.BIG"), (many, "the limit is")] {
        let (_tx, rx) = mpsc::unbounded_channel();
        let got = h.run(&step, rx, &Recorder::default()).await;
        eprintln!("attempt {}: {got:?}", step.attempt_id);
        match got {
            Some(AttemptOutcome::Failed { exit_code: None, signal: None, why: Some(why) }) => {
                assert!(why.contains(needle), "{why}");
            }
            other => panic!("expected a failed step with the reason, got {other:?}"),
        }
    }
}

/// `$ROTA_OUTPUT`: a plain file's `KEY=value` lines come back with the success; a link
/// (to /dev/zero) or a FIFO is refused at once, never read forever or waited on, and the
/// step fails saying why; the file is gone afterwards.
#[tokio::test]
async fn outputs_are_read_from_a_plain_file_only() {
    let h = Harness::new();
    let step = claimed(40, r#"printf 'A=1\nB=two words\n' >> "$ROTA_OUTPUT""#);
    let (_tx, rx) = mpsc::unbounded_channel();
    h.logs.open(step.attempt_id, step.job_id, &step.step, step.log_cap);
    h.spawner.use_journal(h.ws.path(), false).await.unwrap();
    let ended = run_attempt(&step, &h.setup(Duration::from_millis(500)), &h.logs, rx, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(ended.outcome, AttemptOutcome::Succeeded);
    assert_eq!(ended.outputs.get("B").map(String::as_str), Some("two words"));
    assert!(!h.dirs.output_file(step.attempt_id).exists(), "the file is removed");
    for (id, run) in [(41, r#"ln -s /dev/zero "$ROTA_OUTPUT""#), (42, r#"mkfifo "$ROTA_OUTPUT""#)] {
        let step = claimed(id, run);
        let (_tx, rx) = mpsc::unbounded_channel();
        let began = std::time::Instant::now();
        match h.run(&step, rx, &Recorder::default()).await {
            Some(AttemptOutcome::Failed { exit_code: Some(0), why: Some(why), .. }) => {
                assert!(why.contains("ROTA_OUTPUT"), "{why}")
            }
            other => panic!("{run}: {other:?}"),
        }
        assert!(began.elapsed() < BOUND, "{run}: {:?}", began.elapsed());
        assert!(!h.dirs.output_file(step.attempt_id).exists(), "{run}: removed");
    }
}

/// What `yes 0123456789abcdef | head -c n` writes.
fn yes_bytes(n: usize) -> Vec<u8> {
    b"0123456789abcdef\n".iter().copied().cycle().take(n).collect()
}

#[tokio::test]
async fn a_step_writing_faster_than_the_server_stores_is_held_back_not_cut() {
    use crate::logship::HOLD_AT;
    let h = Harness::new();
    const N: usize = 40 << 20;
    let step = claimed(61, &format!("yes 0123456789abcdef | head -c {N}"));
    h.logs.set_taking(true);
    // A slow server: 512 KiB every 10 ms, noting the most the worker ever held unsent.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (logs, stop) = (h.logs.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut stored, mut most) = (Vec::new(), 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let (batches, held) = logs.take_for_test(512 << 10);
                most = most.max(held);
                stored.extend(batches.into_iter().flat_map(|b| b.chunks));
            }
            (stored, most)
        })
    };
    assert_eq!(
        h.run(&step, mpsc::unbounded_channel().1, &Recorder::default()).await,
        Some(AttemptOutcome::Succeeded)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut chunks, most) = server.await.unwrap();
    let fin = h.logs.finish(step.attempt_id).await;
    assert_eq!(fin.dropped, 0, "nothing is dropped while the server takes output");
    chunks.extend(fin.chunks);
    let seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gap");
    let got: Vec<u8> = chunks.iter().flat_map(|c| c.data.0.clone()).collect();
    assert!(got == yes_bytes(N), "byte-exact ({} bytes of {N})", got.len());
    assert!(most <= HOLD_AT + READ_SIZE, "the worker held {most} bytes unsent (bound {HOLD_AT})");
}

#[tokio::test]
async fn a_server_that_stops_answering_does_not_stall_the_step() {
    let h = Harness::new();
    const N: usize = 24 << 20;
    let step = claimed(62, &format!("yes 0123456789abcdef | head -c {N}"));
    h.logs.set_taking(true);
    // Held back at the bound until the shipper finds the server gone; then read as before.
    let logs = h.logs.clone();
    let away = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        logs.set_taking(false);
    });
    assert_eq!(
        h.run(&step, mpsc::unbounded_channel().1, &Recorder::default()).await,
        Some(AttemptOutcome::Succeeded)
    );
    away.await.unwrap();
    let fin = h.logs.finish(step.attempt_id).await;
    assert_eq!(fin.dropped, 0);
    assert!(stream_bytes(&fin, Stream::Stdout) == yes_bytes(N), "byte-exact, within the cap");
}
