//! The declarative commands end to end (issue 13, first part), on both backends: `rota
//! apply` (created / configured / unchanged, generations, all or nothing with
//! `file:line:column`), `rota diff` (exactly what the next apply changes), `rota get`,
//! `rota delete` and `rota run` with typed inputs and `--follow`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::cluster::{Cluster, Timing};
use rota_testkit::{Backend, both_backends};
use std::process::Output;

/// Three workflows in one file; `bad` (if given) replaces the second one's step timeout,
/// which sits on line 10.
fn three(dir: &str, b_run: &str, bad_timeout: Option<&str>) -> String {
    let timeout = bad_timeout.unwrap_or("30s");
    let text = format!(
        "# three workflows\nkind: Workflow\nmetadata: {{name: greet}}\nspec:\n  inputs:\n    who: {{type: string}}\n  steps:\n    - name: a\n      run: echo \"hello $ROTA_INPUT_WHO\"; echo \"GREETING=hi-$ROTA_INPUT_WHO\" >> \"$ROTA_OUTPUT\"\n      timeout: {timeout}\n    - name: b\n      run: {b_run}\n      needs: [a]\n---\nkind: Workflow\nmetadata: {{name: two}}\nspec:\n  steps: [{{name: s, run: 'true'}}]\n---\nkind: Workflow\nmetadata: {{name: three}}\nspec:\n  steps: [{{name: s, run: 'true'}}]\n"
    );
    let path = format!("{dir}/wf.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(c: &Cluster, args: &[&str]) -> Output {
    c.rota().args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

both_backends!(async fn apply_diff_get_run_and_delete);
async fn apply_diff_get_run_and_delete(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let _w = c.worker("w1", 2).await;
    let dir = c.marker_dir("docs");

    let file = three(&dir, "echo b-ran", None);
    let o = run(&c, &["apply", "-f", &file]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out, "workflows/greet created\nworkflows/two created\nworkflows/three created\n");
    let o = run(&c, &["apply", "-f", &file]);
    assert_eq!(text(&o).0, "workflows/greet unchanged\nworkflows/two unchanged\nworkflows/three unchanged\n");

    // A bad field on line 10: exit 2 naming file:10:column, and nothing of it stored.
    let bad = three(&dir, "echo changed", Some("ten minutes"));
    let o = run(&c, &["apply", "-f", &bad]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{bad}:10:")), "names line 10: {err}");
    let o = run(&c, &["get", "workflow", "greet", "-o", "json"]);
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["metadata"]["generation"], 1);
    assert_eq!(got["spec"]["steps"][1]["run"], "echo b-ran", "the state from before the refused apply");

    // A refusal only the server makes (one name twice across documents) names the line too.
    let dup = format!("{dir}/dup.yaml");
    std::fs::write(
        &dup,
        "kind: Workflow\nmetadata: {name: twin}\nspec:\n  steps: [{name: s, run: 'true'}]\n---\n# again\nkind: Workflow\nmetadata:\n  name: twin\nspec:\n  steps: [{name: s, run: 'true'}]\n",
    )
    .unwrap();
    let o = run(&c, &["apply", "-f", &dup]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{dup}:9:9: metadata.name: workflows/twin is also documents[0]")), "{err}");

    // diff shows exactly the change the next apply makes; only greet's generation moves.
    let file = three(&dir, "echo b-changed $ROTA_OUT_A_GREETING", None);
    let o = run(&c, &["diff", "-f", &file]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "a diff with changes exits 1: {err}");
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(['-', '+']) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(changed, ["-    run: echo b-ran", "+    run: echo b-changed $ROTA_OUT_A_GREETING"], "{out}");
    assert!(out.contains("# workflows/greet would be configured"), "{out}");
    let o = run(&c, &["apply", "-f", &file]);
    assert_eq!(
        text(&o).0,
        "workflows/greet configured\nworkflows/two unchanged\nworkflows/three unchanged\n"
    );
    let o = run(&c, &["diff", "-f", &file]);
    assert_eq!((o.status.code(), text(&o).0.as_str()), (Some(0), ""), "nothing left to change");
    let o = run(&c, &["get", "wf", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let generations: Vec<(String, u64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap().to_string(),
                i["metadata"]["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(generations, [("greet".into(), 2), ("three".into(), 1), ("two".into(), 1)]);

    // run: typed inputs reach the steps; --follow streams and exits with the result.
    let o = run(&c, &["run", "greet", "--input", "who=ada", "--follow"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    // b reads what a wrote to $ROTA_OUTPUT; job show lists it with a's attempt.
    assert!(out.contains("hello ada") && out.contains("b-changed hi-ada"), "{out}");
    let id = out.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap().to_string();
    let o = run(&c, &["job", "show", &id]);
    assert!(text(&o).0.contains("ROTA_OUT_A_GREETING=hi-ada"), "{}", text(&o).0);
    // One key, one run.
    let keyed =
        |c: &Cluster| run(c, &["run", "greet", "--input", "who=bo", "--idempotency-key", "nightly-1"]);
    let (first, again) = (text(&keyed(&c)).0, text(&keyed(&c)).0);
    let id_of = |s: &str| s.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(id_of(&first), id_of(&again), "{first}{again}");
    assert!(again.contains("already known by its idempotency key"), "{again}");
    let o = run(&c, &["run", "greet", "--input", "whom=x"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown input `whom`"), "{err}");
    let o = run(&c, &["run", "greet"]);
    assert_eq!(o.status.code(), Some(2), "a required input missing: {}", text(&o).1);

    // Outputs past 64 KiB fail the step, saying so.
    let o = run(
        &c,
        &[
            "job",
            "submit",
            "--wait",
            "--",
            "sh",
            "-c",
            "head -c 70000 /dev/zero | tr '\\0' a | sed 's/^/K=/' > $ROTA_OUTPUT",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("ROTA_OUTPUT") && err.contains("limit is 65536"), "{err}");

    // delete by name and by file.
    let o = run(&c, &["delete", "wf", "two"]);
    assert_eq!(text(&o).0, "workflows/two deleted\n");
    let o = run(&c, &["delete", "wf", "two"]);
    assert_eq!(o.status.code(), Some(1), "deleting what is not there");
    let o = run(&c, &["delete", "-f", &file]);
    assert_eq!(text(&o).0, "workflows/greet deleted\nworkflows/two not found\nworkflows/three deleted\n");
    let o = run(&c, &["get", "wf"]);
    assert_eq!(text(&o).0.lines().count(), 1, "only the header is left: {}", text(&o).0);
}

both_backends!(async fn get_lists_every_page);
/// More workflows than one listing page holds (500 by default): `rota get` fetches every
/// page, in name order, and prints them as one list.
async fn get_lists_every_page(backend: Backend) {
    let c = Cluster::on(backend, Timing::FAST).await;
    let dir = c.marker_dir("many");
    let count = 501;
    let docs: String = (0..count)
        .map(|i| format!("kind: Workflow\nmetadata: {{name: w{i:04}}}\nspec:\n  steps: [{{name: s, run: 'true'}}]\n---\n"))
        .collect();
    let file = format!("{dir}/many.yaml");
    std::fs::write(&file, docs).unwrap();
    let o = run(&c, &["apply", "-f", &file]);
    assert!(o.status.success(), "{}", text(&o).1);
    let o = run(&c, &["get", "wf", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..count).map(|i| format!("w{i:04}")).collect();
    assert_eq!(names, want);
    assert!(list.get("continue").is_none(), "the CLI prints one whole list");
    let o = run(&c, &["get", "wf"]);
    assert_eq!(text(&o).0.lines().count(), count + 1, "a header and every workflow");
}
