//! Building the job `rota job submit` sends: the document (`rota_manifest::job_document`:
//! file or stdin, YAML or JSON), then the flags on top (they override scalars and extend
//! lists), then validation placed in the document. Every error is a usage error.

use crate::args::{Deadline, SubmitArgs};
use crate::failure::{document_error, usage};
use anyhow::Result;
use chrono::{DateTime, Utc};
use rota_domain::{JobSpec, StepSpec};
use rota_lifecycle::shell;
use rota_manifest::job_document;

/// Name of the step made from the argv after `--`.
pub(crate) const ARGV_STEP: &str = "main";

/// The job described by `args`, validated. `now` resolves a relative `--deadline`.
pub(crate) fn build(args: &SubmitArgs, now: DateTime<Utc>) -> Result<JobSpec> {
    let (mut spec, doc) = match &args.file {
        Some(path) => {
            let doc = job_document::read(path).map_err(document_error)?;
            (job_document::parse(&doc).map_err(document_error)?, Some(doc))
        }
        None => (JobSpec::new(Vec::new()), None),
    };
    apply_flags(&mut spec, args, now)?;
    if spec.steps.is_empty() {
        return Err(usage("nothing to run: give -f FILE, --step NAME=CMD, or a command after `--`"));
    }
    job_document::validate(&spec, doc.as_ref()).map_err(document_error)?;
    Ok(spec)
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
    use rota_manifest::job_document::{Document, parse};

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from(["rota", "job", "submit"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Job { command: JobCommand::Submit(s) } => *s,
            _ => panic!("not submit"),
        }
    }

    fn yaml(text: &str) -> JobSpec {
        parse(&Document { name: "job.yaml".into(), text: text.into(), json: false }).unwrap()
    }

    #[test]
    fn flags_override_and_extend_the_document() {
        let mut spec = yaml(
            "queue: q1\nsteps:\n  - name: a\n    run: make\n    timeout: 5s\n  - name: b\n    run: test\n",
        );
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
