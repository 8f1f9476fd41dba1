//! `rota mcp` (issue 17) on both backends: the real binary, spoken to in JSON-RPC over its
//! stdin and stdout, against a real server with a real background worker. `initialize`,
//! `tools/list`, then `submit_job` → `show_job` until the worker ran it, `job_logs`, bad
//! inputs answered as tool errors naming the field, and `heal_workers` with a progress
//! token healing the worker driven into a crash loop (progress notifications arrive).
//! Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::*;
use rota_testkit::{Backend, Env, both_backends, bound, isolate, rota_bin, wait_until};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

/// `rota mcp` running in `env`'s tree: what it writes to stdout arrives as JSON values.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
}

impl Mcp {
    fn start(env: &Env) -> Mcp {
        let mut cmd = Command::new(rota_bin());
        isolate(&mut cmd, env);
        cmd.arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("rota mcp starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Everything on stdout must be a protocol message: `request` fails on anything else.
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "notJson": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                keep.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let stdin = child.stdin.take();
        Mcp { child, stdin, lines, stderr, next_id: 1 }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request; returns its response and the notifications that came before it.
    fn request(&mut self, method: &str, params: Value) -> (Value, Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut notes = Vec::new();
        let deadline = Instant::now() + bound();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no answer to {method} within {:?}; stderr:\n{}", bound(), self.stderr())
            });
            assert!(msg.get("notJson").is_none(), "stdout carried something else than JSON-RPC: {msg}");
            if msg["id"] == json!(id) {
                return (msg, notes);
            }
            notes.push(msg);
        }
    }

    /// `tools/call`: the result (with `isError` and the text of its content).
    fn call(&mut self, tool: &str, args: Value) -> (bool, String) {
        let (resp, _) = self.request("tools/call", json!({"name": tool, "arguments": args}));
        result_of(tool, &resp)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn result_of(tool: &str, resp: &Value) -> (bool, String) {
    let r = &resp["result"];
    assert!(r.is_object(), "{tool}: not a tool result: {resp}");
    let text = r["content"][0]["text"].as_str().unwrap_or_default().to_string();
    (r["isError"] == json!(true), text)
}

fn supervisors(env: &Env) -> Vec<Value> {
    let o = run(env, &["worker", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["supervisors"].as_array().cloned().unwrap_or_default()
}

/// Shows the job over MCP until it succeeded (failing at once if it ended otherwise);
/// returns the last `show_job` text.
fn wait_succeeded(mcp: &mut Mcp, env: &Env, id: &str) -> String {
    let start = Instant::now();
    loop {
        let (err, text) = mcp.call("show_job", json!({"id": id}));
        assert!(!err, "{text}");
        let job: Value = serde_json::from_str(&text).unwrap();
        let state = job["state"].as_str().unwrap_or_default().to_string();
        assert!(!["failed", "cancelled", "revoked"].contains(&state.as_str()), "{text}");
        if state == "succeeded" {
            return text;
        }
        assert!(
            start.elapsed() < bound(),
            "the job did not succeed within {:?}: {text}\nworkers: {}\nlog:\n{}",
            bound(),
            stdout(&run(env, &["worker", "list", "--json"])),
            log(env)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

both_backends!(async fn an_assistant_submits_a_job_and_heals_a_worker_over_mcp);
async fn an_assistant_submits_a_job_and_heals_a_worker_over_mcp(backend: Backend) {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let crash = start_crash_loopable(&env);
    wait_until(bound(), "the supervisor reports running", || {
        supervisors(&env).iter().any(|s| s["state"] == "running" && !s["worker"].is_null())
    });

    let mut mcp = Mcp::start(&env);
    let (init, _) = mcp.request(
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "rota-test", "version": "0"}
        }),
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "rota", "{init}");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let (list, _) = mcp.request("tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "apply_resources",
            "cancel_job",
            "get_resources",
            "heal_workers",
            "job_logs",
            "list_jobs",
            "list_workers",
            "retry_job",
            "run_workflow",
            "show_job",
            "submit_job",
            "unhealthy_workers",
        ],
        "{list}"
    );
    let submit = tools.iter().find(|t| t["name"] == "submit_job").unwrap();
    for field in ["command", "steps", "queue", "timeout", "retries", "idempotency_key"] {
        assert!(submit["inputSchema"]["properties"][field].is_object(), "{field} not in {submit}");
    }

    // Submit, then show until the live worker ran it.
    let (err, text) = mcp.call("submit_job", json!({"command": "echo hello-from-mcp", "name": "mcp-job"}));
    assert!(!err, "{text}");
    let submitted: Value = serde_json::from_str(&text).unwrap();
    let id = submitted["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    let last = wait_succeeded(&mut mcp, &env, &id);
    eprintln!("succeeded after {:?}", start.elapsed());
    assert!(last.contains("mcp-job"), "{last}");
    let (err, text) = mcp.call("job_logs", json!({"id": id, "step": "main"}));
    assert!(!err && text.contains("hello-from-mcp"), "{text}");
    let (err, text) = mcp.call("list_jobs", json!({"state": "succeeded", "limit": 5}));
    assert!(!err && text.contains(&id), "{text}");

    // Bad inputs: tool errors naming the field.
    let (err, text) = mcp.call("submit_job", json!({"command": "true", "retries": "two"}));
    assert!(err && text.starts_with("retries: "), "{text}");
    let (err, text) = mcp.call("submit_job", json!({"command": "true", "timeout": "soon"}));
    assert!(err && text.starts_with("timeout: "), "{text}");
    let (err, text) = mcp.call("submit_job", json!({"name": "nothing"}));
    assert!(err && text.starts_with("command: "), "{text}");
    let (err, text) = mcp.call("show_job", json!({"id": "not-a-job"}));
    assert!(err && text.starts_with("id: "), "{text}");
    let (err, text) = mcp.call("list_jobs", json!({"state": "bogus"}));
    assert!(err && text.starts_with("state: "), "{text}");
    let (err, text) = mcp.call("get_resources", json!({"kind": "gizmo"}));
    assert!(err && text.starts_with("kind: "), "{text}");

    // Declared resources: apply (YAML text), get, run with inputs; bad ones named.
    let wf = "kind: Workflow\nmetadata: {name: greet}\nspec:\n  inputs:\n    who: {type: string}\n  steps:\n    - name: a\n      run: echo \"hello $ROTA_INPUT_WHO\"\n";
    let (err, text) = mcp.call("apply_resources", json!({"documents": wf}));
    assert!(!err && text.contains("created"), "{text}");
    let (err, text) = mcp.call("get_resources", json!({"kind": "workflows"}));
    assert!(!err && text.contains("greet"), "{text}");
    let (err, text) = mcp.call("run_workflow", json!({"workflow": "greet", "inputs": {"who": "ada"}}));
    assert!(!err, "{text}");
    let run_id = serde_json::from_str::<Value>(&text).unwrap()["id"].as_str().unwrap().to_string();
    wait_succeeded(&mut mcp, &env, &run_id);
    let (err, text) = mcp.call("job_logs", json!({"id": run_id}));
    assert!(!err && text.contains("hello ada"), "{text}");
    let (err, text) = mcp.call("run_workflow", json!({"workflow": "greet", "inputs": {"whom": "x"}}));
    assert!(err && text.starts_with("inputs: "), "{text}");
    let bad = "kind: Workflow\nmetadata: {name: bad}\nspec:\n  steps:\n    - name: a\n      bogus: 1\n";
    let (err, text) = mcp.call("apply_resources", json!({"documents": bad}));
    assert!(err && text.starts_with("documents:") && text.contains("bogus"), "{text}");

    // A crash loop, seen as unhealthy, healed with progress.
    std::fs::write(&crash, b"").unwrap();
    let start = Instant::now();
    wait_until(bound(), "the server lists the supervisor failed", || {
        supervisors(&env).iter().any(|s| s["state"] == "failed")
    });
    eprintln!("listed failed after {:?}", start.elapsed());
    std::fs::remove_file(&crash).unwrap();
    let (err, text) = mcp.call("unhealthy_workers", json!({}));
    assert!(!err, "{text}");
    let unhealthy: Value = serde_json::from_str(&text).unwrap();
    assert!(
        unhealthy["supervisors"].as_array().is_some_and(|s| s.iter().any(|s| s["state"] == "failed")),
        "{text}"
    );

    let start = Instant::now();
    let (resp, notes) = mcp.request(
        "tools/call",
        json!({"name": "heal_workers", "arguments": {}, "_meta": {"progressToken": "heal-1"}}),
    );
    let (err, text) = result_of("heal_workers", &resp);
    assert!(!err, "{text}\nstderr:\n{}\nlog:\n{}", mcp.stderr(), log(&env));
    eprintln!("healed in {:?}", start.elapsed());
    let healed: Value = serde_json::from_str(&text).unwrap();
    let phases: Vec<&str> =
        healed["events"].as_array().unwrap().iter().filter_map(|e| e["phase"].as_str()).collect();
    assert_eq!(phases, ["starting", "healed", "done"], "{text}");
    let progress: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "notifications/progress" && n["params"]["progressToken"] == "heal-1")
        .collect();
    assert!(!progress.is_empty(), "no progress notification: {notes:?}");
    let said = |what: &str| {
        progress.iter().any(|n| n["params"]["message"].as_str().unwrap_or_default().contains(what))
    };
    assert!(said("heal starting") && said("heal healed") && said("done: healed 1"), "{progress:?}");
    eprintln!("progress: {progress:?}");
    wait_until(bound(), "the supervisor reports running again", || {
        supervisors(&env).iter().any(|s| s["state"] == "running")
    });

    // End of input ends the server, cleanly.
    drop(mcp.stdin.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = mcp.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < bound(), "rota mcp did not exit after its stdin closed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}; stderr:\n{}", mcp.stderr());
}
