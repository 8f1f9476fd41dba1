//! Acceptance of the core (issue 2), end to end: a real `rota server` on port 0, real
//! `rota worker` processes, real `sh` steps. Bounds derive from the cluster's heartbeat and
//! lease TTL with wide margins, so a loaded 2-core CI machine stays green. Every test runs
//! on both backends (`name::sqlite`, `name::postgres`, through `rota_testkit::both_backends!`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_api_types::jobs::LogsQuery;
use rota_testkit::cluster::{Cluster, Timing, wait_file};
use rota_testkit::pid_alive;
use rota_testkit::procs::{group_members, wait_gone};
use rota_testkit::{Backend, Env, both_backends, isolate_tree, rota_bin};
use sha2::{Digest, Sha256};
use std::time::Duration;

both_backends!(async fn dag_runs_in_order_and_logs_each_step);
async fn dag_runs_in_order_and_logs_each_step(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 4).await;
    let m = c.marker_dir("dag");
    // Each step records when it started and ended (ns); d must start after b and c end.
    let step = |name: &str| {
        format!("date +%s%N > $M/{name}.start; echo out-{name}; sleep 0.3; date +%s%N > $M/{name}.end")
    };
    let doc = format!(
        "env:\n  M: {m}\nsteps:\n  - name: a\n    run: {a}\n  - name: b\n    needs: [a]\n    run: {b}\n  - name: c\n    needs: [a]\n    run: {cc}\n  - name: d\n    needs: [b, c]\n    run: {d}\n",
        a = rota_testkit::yaml_str(&step("a")),
        b = rota_testkit::yaml_str(&step("b")),
        cc = rota_testkit::yaml_str(&step("c")),
        d = rota_testkit::yaml_str(&step("d")),
    );
    let id = c.submit_file(&doc);
    c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    let t = |f: &str| -> u128 {
        std::fs::read_to_string(format!("{m}/{f}")).expect(f).trim().parse().expect("ns")
    };
    assert!(t("b.start") >= t("a.end") && t("c.start") >= t("a.end"), "b/c started before a ended");
    assert!(t("d.start") >= t("b.end") && t("d.start") >= t("c.end"), "d started before b and c ended");
    let out = c.rota().args(["job", "logs", &id.to_string()]).output().expect("logs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in ["a", "b", "c", "d"] {
        assert!(text.contains(&format!("out-{s}\n")), "logs lack step {s}: {text:?}");
    }
}

both_backends!(async fn twenty_megabytes_of_binary_output_round_trip_exactly);
async fn twenty_megabytes_of_binary_output_round_trip_exactly(backend: Backend) {
    // Longer leases: shipping 20 MB keeps a loaded machine busy, and a lease lost meanwhile
    // retries the step, whose output (new random bytes) would then be in the logs twice.
    let timing = Timing { heartbeat: Duration::from_millis(500), ttl: Duration::from_secs(10) };
    let c = Cluster::on(backend, timing).await;
    let _w = c.worker("w1", 2).await;
    let m = c.marker_dir("bin");
    let run = format!("{{ head -c 20000000 /dev/urandom; printf '\\377\\376'; }} | tee {m}/expected.bin");
    let doc = format!("steps:\n  - name: big\n    run: {}\n", rota_testkit::yaml_str(&run));
    let id = c.submit_file(&doc);
    let d = c.wait_state(id, &["succeeded"], c.timing.bound() * 2).await;
    let attempts = &d.step_details[0].attempts;
    assert_eq!(attempts.len(), 1, "the logs hold the output of every attempt: {attempts:#?}");
    let expected = std::fs::read(format!("{m}/expected.bin")).expect("expected.bin");
    assert_eq!(expected.len(), 20_000_002);
    let out = c.rota().args(["job", "logs", &id.to_string(), "--step", "big"]).output().expect("logs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), expected.len(), "byte count differs");
    assert_eq!(
        hex::encode(Sha256::digest(&out.stdout)),
        hex::encode(Sha256::digest(&expected)),
        "checksum differs"
    );
}

both_backends!(async fn stopped_worker_loses_its_attempt_and_fences_itself);
async fn stopped_worker_loses_its_attempt_and_fences_itself(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let w1 = c.worker("w1", 1).await;
    let m = c.marker_dir("fence");
    // First attempt: record its pid (= pgid) and block; any later attempt answers at once.
    let run = format!(
        "if [ -e {m}/first ]; then echo second; else echo $$ > {m}/first; sleep 300 & echo $! > {m}/child; wait; echo first; fi"
    );
    let doc = format!(
        "steps:\n  - name: s\n    retry:\n      max_attempts: 3\n      backoff:\n        initial: 100ms\n    run: {}\n",
        rota_testkit::yaml_str(&run)
    );
    let id = c.submit_file(&doc);
    let pgid: i32 = wait_file(&c.path("fence/first"), c.timing.bound()).await.parse().expect("pid");
    let child: i32 = wait_file(&c.path("fence/child"), c.timing.bound()).await.parse().expect("pid");
    w1.signal("STOP");
    let _w2 = c.worker("w2", 1).await;
    let d = c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    let attempts = &d.step_details[0].attempts;
    assert!(attempts.len() >= 2, "{attempts:#?}");
    assert_eq!(format!("{:?}", attempts[0].status).to_lowercase(), "lost");
    let last = attempts.last().expect("attempt");
    assert_eq!(last.worker, "w2");
    let page = c.client.job_logs(id, &LogsQuery::default()).await.expect("logs");
    let out: Vec<u8> = page.chunks.iter().flat_map(|ch| ch.data.0.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&out), "second\n");
    // The first worker's step group is still running while it is stopped.
    assert!(pid_alive(child), "the stopped worker's step should still be running");
    w1.signal("CONT");
    // Self-fencing kills the whole group; its late result is refused with 409.
    wait_gone(pgid, &[pgid, child], c.timing.bound()).await;
    rota_testkit::wait_for(c.timing.bound(), "w1 to log the 409", || async { w1.output().contains("(409)") })
        .await;
    let d = c.client.get_job(id).await.expect("job");
    assert_eq!(d.summary.state, "succeeded", "a late result must change nothing");
    assert_eq!(d.step_details[0].attempts.len(), attempts.len());
}

both_backends!(async fn killed_worker_leftovers_are_reaped_at_next_boot);
async fn killed_worker_leftovers_are_reaped_at_next_boot(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let ws = c.path("shared-ws");
    let mut w1 = c.worker_with("w1", 1, &ws, &[]).await;
    let m = c.marker_dir("orphan");
    let run = format!("echo $$ > {m}/leader; (sleep 300 & echo $! > {m}/grandchild; wait) & wait");
    let id = c.submit_step(&run);
    let leader: i32 = wait_file(&c.path("orphan/leader"), c.timing.bound()).await.parse().expect("pid");
    let grandchild: i32 =
        wait_file(&c.path("orphan/grandchild"), c.timing.bound()).await.parse().expect("pid");
    // The step can get this far before its spawner has journaled its group. The worker
    // reports the pid only after the spawner answered, which it does after journaling.
    rota_testkit::wait_for(c.timing.bound(), "w1 to report the step's pid", || async {
        c.client
            .get_job(id)
            .await
            .is_ok_and(|d| d.step_details[0].attempts.first().and_then(|a| a.pid) == Some(leader as u32))
    })
    .await;
    // A worker's spawners kill their steps when the worker dies, and the worker kills them
    // when a spawner dies; only if all die at once is anything left for boot reaping.
    // The worker is frozen first, so it cannot act on its spawners' deaths. The step may
    // be in any helper's journal (`running.log`, `running.<n>.log`).
    let spawners = rota_testkit::procs::spawners_of(w1.pid());
    assert!(spawners.len() >= 2, "worker {} should have a spawner per core (2 to 4): {spawners:?}", w1.pid());
    w1.signal("STOP");
    for s in spawners {
        rota_testkit::procs::kill("KILL", s);
    }
    w1.signal("KILL");
    w1.wait_exit(Duration::from_secs(10));
    assert!(pid_alive(grandchild), "the step's grandchild should survive its worker and spawner's SIGKILL");
    let _w2 = c.worker_with("w1b", 1, &ws, &[]).await;
    wait_gone(leader, &[leader, grandchild], c.timing.bound()).await;
    assert!(group_members(leader).is_empty());
}

both_backends!(async fn cancel_kills_the_whole_group);
async fn cancel_kills_the_whole_group(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 1).await;
    let m = c.marker_dir("cancel");
    let run = format!("echo $$ > {m}/leader; sleep 300 & echo $! > {m}/bg; wait");
    let id = c.submit_step(&run);
    let leader: i32 = wait_file(&c.path("cancel/leader"), c.timing.bound()).await.parse().expect("pid");
    let bg: i32 = wait_file(&c.path("cancel/bg"), c.timing.bound()).await.parse().expect("pid");
    let out = c.rota().args(["job", "cancel", &id.to_string()]).output().expect("cancel");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_gone(leader, &[leader, bg], c.timing.bound()).await;
    let d = c.wait_state(id, &["cancelled"], c.timing.bound()).await;
    assert!(d.summary.reason.is_some());
    rota_testkit::wait_for(c.timing.bound(), "the cancelled step to end", || async {
        c.client.get_job(id).await.map(|d| d.summary.finished_at.is_some()).unwrap_or(false)
    })
    .await;
}

both_backends!(async fn timeout_kills_the_group_and_fails_the_step);
async fn timeout_kills_the_group_and_fails_the_step(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 1).await;
    let m = c.marker_dir("timeout");
    let run = format!("echo $$ > {m}/leader; sleep 300 & echo $! > {m}/bg; wait");
    // The timeout leaves the step time to write both pid files even on a loaded machine.
    let id = c.submit_file(&format!(
        "steps:\n  - name: s\n    timeout: 3s\n    run: {}\n",
        rota_testkit::yaml_str(&run)
    ));
    let leader: i32 = wait_file(&c.path("timeout/leader"), c.timing.bound()).await.parse().expect("pid");
    let bg: i32 = wait_file(&c.path("timeout/bg"), c.timing.bound()).await.parse().expect("pid");
    let d = c.wait_state(id, &["failed"], c.timing.bound()).await;
    assert_eq!(d.step_details[0].state.as_str(), "failed");
    assert_eq!(d.step_details[0].reason.as_deref(), Some("timeout"), "{:#?}", d.step_details);
    wait_gone(leader, &[leader, bg], c.timing.bound()).await;
}

both_backends!(async fn sigterm_drains_running_steps_and_claims_nothing_new);
async fn sigterm_drains_running_steps_and_claims_nothing_new(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let mut w = c.worker("w1", 2).await;
    let m = c.marker_dir("drain");
    let run = format!("echo started > {m}/started; sleep 2; echo finished");
    let first = c.submit_step(&run);
    wait_file(&c.path("drain/started"), c.timing.bound()).await;
    w.signal("TERM");
    // The second job is submitted once the worker has stopped claiming (it logs the drain
    // after its claim loop ended), not after a guessed delay.
    rota_testkit::wait_for(c.timing.bound(), "w1 to log its drain", || async {
        w.output().contains("draining: no more claims")
    })
    .await;
    let second = c.submit_file("steps:\n  - name: s\n    run: echo should-not-run\n");
    let code = w.wait_exit(c.timing.bound());
    assert_eq!(code, Some(0), "worker log:\n{}", w.output());
    let d = c.wait_state(first, &["succeeded"], c.timing.bound()).await;
    assert_eq!(d.step_details[0].attempts.len(), 1);
    let d2 = c.client.get_job(second).await.expect("second");
    assert!(matches!(d2.summary.state.as_str(), "queued" | "unschedulable"), "{}", d2.summary.state);
    assert!(d2.step_details[0].attempts.is_empty());
}

both_backends!(async fn server_restart_does_not_lose_a_running_step);
async fn server_restart_does_not_lose_a_running_step(backend: Backend) {
    // Longer leases: the restart must fit well inside one TTL on a loaded machine.
    let timing = Timing { heartbeat: Duration::from_millis(500), ttl: Duration::from_secs(10) };
    let mut c = Cluster::on(backend, timing).await;
    let _w = c.worker("w1", 1).await;
    let m = c.marker_dir("restart");
    let run = format!("echo started > {m}/started; sleep 4; echo done");
    let id = c.submit_step(&run);
    wait_file(&c.path("restart/started"), timing.bound()).await;
    let addr = c.listen_addr();
    c.kill_server();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.start_server(&addr).await;
    let d = c.wait_state(id, &["succeeded", "failed"], timing.bound()).await;
    assert_eq!(d.summary.state, "succeeded", "{:#?}", d.step_details);
    let attempts = &d.step_details[0].attempts;
    assert_eq!(attempts.len(), 1, "the step must not have been marked lost: {attempts:#?}");
    let page = c.client.job_logs(id, &LogsQuery::default()).await.expect("logs");
    let out: Vec<u8> = page.chunks.iter().flat_map(|ch| ch.data.0.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
}

both_backends!(async fn step_environment_holds_no_secret);
async fn step_environment_holds_no_secret(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let token_dir = c.path("data/rota").display().to_string();
    let admin = c.admin_token.clone();
    let join = c.join_token.clone();
    // The worker itself has the tokens in its environment; the step must not.
    let _w = c
        .worker_with(
            "w1",
            1,
            &c.path("ws-env"),
            &[("ROTA_TOKEN", &admin), ("ROTA_JOIN_TOKEN", &join), ("SECRET_FROM_PARENT", "x")],
        )
        .await;
    let id = c.submit_file("env:\n  MINE: yes\nsteps:\n  - name: s\n    run: env\n");
    c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    let page = c.client.job_logs(id, &LogsQuery::default()).await.expect("logs");
    let out: Vec<u8> = page.chunks.iter().flat_map(|ch| ch.data.0.clone()).collect();
    let env = String::from_utf8_lossy(&out).to_string();
    assert!(env.contains("MINE=yes") && env.contains("ROTA_JOB_ID=") && env.contains("ROTA_STEP=s"), "{env}");
    assert!(env.contains("ROTA_ATTEMPT=1"), "{env}");
    for bad in [
        admin.as_str(),
        join.as_str(),
        "rw_",
        token_dir.as_str(),
        "ROTA_TOKEN",
        "ROTA_JOIN_TOKEN",
        "SECRET_FROM_PARENT",
        ".token",
    ] {
        assert!(!env.contains(bad), "step environment leaks {bad:?}:\n{env}");
    }
}

both_backends!(async fn rota_dev_runs_a_job_and_stops_on_ctrl_c);
async fn rota_dev_runs_a_job_and_stops_on_ctrl_c(backend: Backend) {
    // No server of the kit: `rota dev` is the server, on the tree's database.
    let env = Env::on(backend);
    let database =
        env.database_url().map_or_else(|| env.path("dev.db").display().to_string(), str::to_string);
    let rota = || {
        let mut cmd = std::process::Command::new(rota_bin());
        isolate_tree(&mut cmd, env.dir.path(), None);
        cmd
    };
    let mut dev = rota()
        .args(["dev", "--listen", "127.0.0.1:0", "--database", &database])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rota dev");
    // `rota dev` prints its URL; read both streams until one carries it.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut text = String::new();
    for pipe in [
        dev.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        dev.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("rota dev printed no URL: {text}"));
        text.push_str(&line);
        text.push('\n');
        if let Some(pos) = line.find("http://") {
            break line[pos..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(['/', ',', '.'])
                .to_string();
        }
    };
    let out = rota()
        .env("ROTA_SERVER", &url)
        .args(["job", "submit", "--wait", "--", "echo", "hello from dev"])
        .output()
        .expect("submit");
    assert!(out.status.success(), "submit --wait failed: {}\n{}", String::from_utf8_lossy(&out.stderr), text);
    let st = std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().expect("kill");
    assert!(st.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = dev.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = dev.kill();
            panic!("rota dev did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "rota dev exited with {status}");
}
