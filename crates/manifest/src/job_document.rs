//! Building the job `rota job submit` sends: a YAML or JSON document (file or stdin), then
//! the flags on top (they override scalars and extend lists), then local validation. Every
//! error is a usage error naming where it is: `job.yaml:3:5: ...` for syntax and types,
//! `job.yaml:7:14: steps[1].needs[0]: ...` for the rules `JobSpec::validate` checks.

use crate::args::{Deadline, SubmitArgs};
use crate::failure::usage;
use crate::source_map;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rota_domain::{JobSpec, StepSpec};
use rota_lifecycle::shell;
use std::io::Read;
use std::path::Path;

/// Name of the step made from the argv after `--`.
pub(crate) const ARGV_STEP: &str = "main";

/// A document's text and the name errors call it by.
struct Document {
    name: String,
    text: String,
    json: bool,
}

/// The job described by `args`, validated. `now` resolves a relative `--deadline`.
pub(crate) fn build(args: &SubmitArgs, now: DateTime<Utc>) -> Result<JobSpec> {
    let (mut spec, doc) = match &args.file {
        Some(path) => {
            let doc = read(path)?;
            (parse(&doc)?, Some(doc))
        }
        None => (JobSpec::new(Vec::new()), None),
    };
    apply_flags(&mut spec, args, now)?;
    if spec.steps.is_empty() {
        return Err(usage("nothing to run: give -f FILE, --step NAME=CMD, or a command after `--`"));
    }
    spec.validate().map_err(|e| match &doc {
        Some(doc) => match source_map::locate(&doc.text, &e.path) {
            Some((line, column)) => usage(format!("{}:{line}:{column}: {e}", doc.name)),
            None => usage(format!("{}: {e}", doc.name)),
        },
        None => usage(format!("job: {e}")),
    })?;
    Ok(spec)
}

fn read(path: &Path) -> Result<Document> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the job document from stdin")?;
        let json = text.trim_start().starts_with('{');
        return Ok(Document { name: "<stdin>".into(), text, json });
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| usage(format!("{name}: cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| usage(format!("{name}: not UTF-8 text")))?;
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    Ok(Document { name, text, json })
}

fn parse(doc: &Document) -> Result<JobSpec> {
    let at = |line: u64, column: u64| format!("{}:{line}:{column}", doc.name);
    source_map::deserialize(&doc.text, doc.json, &at)
}

/// Flags override the document's scalars and extend its lists; `--timeout`/`--retries`
/// fill in steps that set none.
fn apply_flags(spec: &mut JobSpec, args: &SubmitArgs, now: DateTime<Utc>) -> Result<()> {
    if let Some(name) = &args.name {
        spec.name = Some(name.clone());
    }
    if let Some(queue) = &args.queue {
        spec.queue = queue.clone();
    }
    if let Some(host) = &args.on {
        spec.target.host = Some(host.clone());
    }
    for tag in &args.tags {
        if !spec.target.tags.contains(tag) {
            spec.target.tags.push(tag.clone());
        }
    }
    if let Some(p) = args.priority {
        spec.priority = p;
    }
    for (k, v) in &args.env {
        spec.env.insert(k.clone(), v.clone().into());
    }
    if let Some(key) = &args.idempotency_key {
        spec.idempotency_key = Some(key.clone());
    }
    match args.deadline {
        Some(Deadline::At(at)) => spec.deadline = Some(at),
        Some(Deadline::In(d)) => {
            let d = chrono::Duration::from_std(d).map_err(|_| usage("--deadline: too far away"))?;
            spec.deadline = Some(now + d);
        }
        None => {}
    }
    for (name, run) in &args.steps {
        spec.steps.push(StepSpec::new(name.clone(), run.clone()));
    }
    if !args.command.is_empty() {
        spec.steps.push(StepSpec::new(ARGV_STEP, shell::join_quoted(&args.command)));
    }
    for step in &mut spec.steps {
        if step.timeout.is_none() {
            step.timeout = args.timeout;
        }
        // A document cannot say "no retries" apart from leaving retry out, so a step with
        // a single attempt is one that set none.
        if let Some(retries) = args.retries
            && step.retry.max_attempts == 1
        {
            step.retry.max_attempts = retries + 1;
        }
    }
    for (step, deps) in &args.needs {
        let s = spec
            .steps
            .iter_mut()
            .find(|s| &s.name == step)
            .ok_or_else(|| usage(format!("--needs {step}={deps}: no step named '{step}'")))?;
        for dep in deps.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if !s.needs.iter().any(|n| n == dep) {
                s.needs.push(dep.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, JobCommand};
    use clap::Parser;

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from(["rota", "job", "submit"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Job { command: JobCommand::Submit(s) } => *s,
            _ => panic!("not submit"),
        }
    }

    fn yaml(text: &str) -> Result<JobSpec> {
        parse(&Document { name: "job.yaml".into(), text: text.into(), json: false })
    }

    fn message(r: Result<JobSpec>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn yaml_errors_have_line_and_column() {
        let m = message(yaml("steps:\n  - name: a\n    run: true\n    bogus: 1\n"));
        assert!(m.starts_with("job.yaml:4:5: "), "{m}");
        assert!(m.contains("bogus"), "{m}");
        let m = message(yaml("steps:\n  - name: a\n    run: echo\n    keep_workspace: yes\n"));
        assert!(m.starts_with("job.yaml:4:"), "{m}");
        let m = message(yaml("steps: [\n"));
        assert!(m.starts_with("job.yaml:"), "{m}");
    }

    #[test]
    fn json_errors_have_line_and_column() {
        let doc = Document { name: "j.json".into(), text: "{\n  \"steps\": 3\n}".into(), json: true };
        let m = message(parse(&doc));
        assert!(m.starts_with("j.json:2:"), "{m}");
        assert!(!m.contains(" at line "), "{m}");
    }

    #[test]
    fn flags_override_and_extend_the_document() {
        let mut spec = yaml(
            "queue: q1\nsteps:\n  - name: a\n    run: make\n    timeout: 5s\n  - name: b\n    run: test\n",
        )
        .unwrap();
        let args = submit_args(&[
            "--queue",
            "q2",
            "--timeout",
            "1m",
            "--retries",
            "2",
            "--needs",
            "b=a",
            "--tag",
            "gpu",
            "--env",
            "K=V",
            "--on",
            "web1",
            "--deadline",
            "10m",
            "--",
            "echo",
            "it's",
        ]);
        let now = Utc::now();
        apply_flags(&mut spec, &args, now).unwrap();
        assert_eq!(spec.queue, "q2");
        assert_eq!(spec.steps[0].timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(spec.steps[1].timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(spec.steps[1].retry.max_attempts, 3);
        assert_eq!(spec.steps[1].needs, ["a"]);
        assert_eq!(spec.steps[2].name, ARGV_STEP);
        assert_eq!(spec.steps[2].run, r"echo 'it'\''s'");
        assert_eq!(spec.target.tags, ["gpu"]);
        assert_eq!(spec.target.host.as_deref(), Some("web1"));
        assert_eq!(spec.env["K"], "V");
        assert_eq!(spec.deadline, Some(now + chrono::Duration::minutes(10)));
        spec.validate().unwrap();
    }

    #[test]
    fn validation_errors_name_the_field() {
        let args = submit_args(&["--step", "a=true", "--step", "b=true", "--needs", "a=b", "--needs", "b=a"]);
        let m = format!("{:#}", build(&args, Utc::now()).unwrap_err());
        assert!(m.starts_with("job: steps: "), "{m}");
        assert!(m.contains("cycle"), "{m}");
        let args = submit_args(&["--needs", "x=y", "--", "true"]);
        let m = format!("{:#}", build(&args, Utc::now()).unwrap_err());
        assert!(m.contains("no step named 'x'"), "{m}");
    }
}
