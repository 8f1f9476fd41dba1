//! The declarative commands: `rota apply`, `diff`, `get`, `delete` and `run`. Documents are
//! read and checked locally first (`rota_manifest::manifests`: exit 2 naming `file:line:column`); the
//! server's own refusals carry a JSON pointer into the request, mapped back here to the
//! document's file and line. Connecting and client errors are `job::Api`'s.

use crate::args::{ApplyArgs, DeleteArgs, DiffArgs, GetArgs, GetFormat, GlobalArgs, LogsArgs, RunArgs};
use crate::commands::job::{Api, logs, submit};
use crate::config::Paths;
use crate::failure::{document_error, usage};
use crate::output::{self, Out};
use anyhow::{Result, anyhow};
use rota_api_types::jobs::SubmitResponse;
use rota_api_types::resources::{
    ApplyRequest, ApplyResponse, DeleteRequest, ResourceDocument, ResourceRef, ResourceSpec, ResourceView,
    RunRequest,
};
use rota_client::ClientError;
use rota_domain::resource::{Applied, Kind};
use rota_manifest::manifests::{self, Manifest};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// `rota apply -f`.
pub(crate) async fn apply(global: &GlobalArgs, args: &ApplyArgs, paths: &Paths) -> Result<ExitCode> {
    let manifests = manifests::read(&args.file).map_err(document_error)?;
    let api = Api::connect(global, paths)?;
    let resp = send(&api, &manifests, false).await?;
    let mut out = Out::new();
    if global.json {
        out.json(&resp)?;
    } else {
        for r in &resp.results {
            writeln!(out, "{}/{} {}", r.kind.plural(), r.name, r.action)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `rota diff -f`: exit 0 when nothing would change, 1 when something would.
pub(crate) async fn diff(global: &GlobalArgs, args: &DiffArgs, paths: &Paths) -> Result<ExitCode> {
    let manifests = manifests::read(&args.file).map_err(document_error)?;
    let api = Api::connect(global, paths)?;
    let resp = send(&api, &manifests, true).await?;
    let mut out = Out::new();
    if global.json {
        out.json(&resp)?;
    }
    let mut changes = 0;
    for (m, r) in manifests.iter().zip(&resp.results) {
        if r.action == Applied::Unchanged {
            continue;
        }
        changes += 1;
        if global.json {
            continue;
        }
        let old = match &r.previous {
            Some(spec) => yaml(&Shown {
                kind: r.kind,
                name: r.name.clone(),
                labels: r.previous_labels.clone().unwrap_or_default(),
                spec: spec.clone(),
            })?,
            None => String::new(),
        };
        let new = yaml(&Shown::of_document(&m.doc))?;
        let label = m.label();
        write!(out, "{}", unified(&old, &new, &label, r.action))?;
    }
    out.flush()?;
    Ok(if changes == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `rota get KIND [NAME]`.
pub(crate) async fn get(global: &GlobalArgs, args: &GetArgs, paths: &Paths) -> Result<ExitCode> {
    let kind = Kind::parse(&args.kind).map_err(|e| usage(format!("KIND: {e}")))?;
    let api = Api::connect(global, paths)?;
    let format = if global.json { GetFormat::Json } else { args.output };
    let items = match &args.name {
        Some(name) => {
            let one = api
                .client
                .get_resource(kind.plural(), name)
                .await
                .map_err(|e| not_found(&api, e, kind, name))?;
            if format == GetFormat::Json {
                let mut out = Out::new();
                out.json(&one)?;
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            if format == GetFormat::Table && kind == Kind::Schedule {
                let mut out = Out::new();
                schedule_detail(&mut out, &one)?;
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            vec![one]
        }
        None => api.client.list_resources(kind.plural()).await.map_err(|e| api.error(e, None))?.items,
    };
    let mut out = Out::new();
    match format {
        GetFormat::Json => {
            out.json(&rota_api_types::resources::ResourceList { items, continue_token: None })?
        }
        GetFormat::Yaml => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                write!(out, "{}", yaml(&Shown::of_view(item))?)?;
            }
        }
        GetFormat::Table => table(&mut out, &items)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `rota delete KIND NAME` or `rota delete -f FILE`.
pub(crate) async fn delete(global: &GlobalArgs, args: &DeleteArgs, paths: &Paths) -> Result<ExitCode> {
    let refs: Vec<ResourceRef> = match (&args.file, &args.kind, &args.name) {
        (Some(file), _, _) => manifests::read(file)
            .map_err(document_error)?
            .iter()
            .map(|m| ResourceRef {
                kind: m.doc.kind().as_str().to_string(),
                name: m.doc.metadata().name.clone(),
            })
            .collect(),
        (None, Some(kind), Some(name)) => {
            let kind = Kind::parse(kind).map_err(|e| usage(format!("KIND: {e}")))?;
            vec![ResourceRef { kind: kind.as_str().to_string(), name: name.clone() }]
        }
        _ => return Err(usage("give KIND NAME or -f FILE")),
    };
    let single = args.file.is_none();
    let api = Api::connect(global, paths)?;
    let resp = api
        .client
        .delete_resources(&DeleteRequest { resources: refs })
        .await
        .map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if global.json {
        out.json(&resp)?;
    } else {
        for r in &resp.results {
            let what = if r.deleted { "deleted" } else { "not found" };
            writeln!(out, "{}/{} {what}", r.kind.plural(), r.name)?;
        }
    }
    out.flush()?;
    // Deleting one named resource that does not exist is an error, as for `job show`; a
    // file's resources that are already gone are not.
    if single && resp.results.iter().any(|r| !r.deleted) {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `rota run WORKFLOW`.
pub(crate) async fn run(global: &GlobalArgs, args: &RunArgs, paths: &Paths) -> Result<ExitCode> {
    let mut inputs = BTreeMap::new();
    for (k, v) in &args.inputs {
        if inputs.insert(k.clone(), v.clone()).is_some() {
            return Err(usage(format!("--input {k}: given twice")));
        }
    }
    let api = Api::connect(global, paths)?;
    let req = RunRequest { inputs, on: args.on.clone() };
    let submitted = start_run(&api, &args.workflow, &req, args.idempotency_key.as_deref(), "--input").await?;
    let mut out = Out::new();
    if global.json {
        out.json(&submitted)?;
    } else if submitted.created {
        writeln!(out, "started {} (workflow {})", submitted.id, args.workflow)?;
    } else {
        writeln!(
            out,
            "started {} (workflow {}; already known by its idempotency key)",
            submitted.id, args.workflow
        )?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let follow = LogsArgs { id: submitted.id, step: None, follow: true, headers: false, tail: None };
    logs::run(&api, &follow).await?;
    submit::wait(&api, submitted.id).await
}

/// Starts a run of `workflow` (with the user's idempotency key, else one of our own): `rota
/// run`'s call, also `rota mcp`'s `run_workflow`. A refused input is a usage error naming
/// `inputs_field`, the way the caller's user gave the inputs.
pub(crate) async fn start_run(
    api: &Api,
    workflow: &str,
    req: &RunRequest,
    idempotency_key: Option<&str>,
    inputs_field: &str,
) -> Result<SubmitResponse> {
    let (key, own_key) = submit::submit_key(idempotency_key);
    let mut submitted = api.client.run_workflow(workflow, req, Some(&key)).await.map_err(|e| match e {
        // A wrong input is the user's command line: a usage error naming it.
        ClientError::Http { status: 400, message, pointer: Some(p), .. } if p.starts_with("/inputs/") => {
            usage(format!("{inputs_field}: {message}"))
        }
        ClientError::Http { status: 404, .. } => {
            anyhow!(
                "no workflow named '{workflow}' (rota get workflows lists them; rota apply -f declares one)"
            )
        }
        other => api.error(other, None),
    })?;
    if own_key {
        // Our own fresh key can only match the run this very command started (sent again
        // to another server after its first answer was lost).
        submitted.created = true;
    }
    Ok(submitted)
}

/// Sends the documents; a refusal that names a field is mapped back to its file and line.
pub(crate) async fn send(api: &Api, manifests: &[Manifest], dry_run: bool) -> Result<ApplyResponse> {
    let req = ApplyRequest { documents: manifests.iter().map(|m| m.doc.clone()).collect(), dry_run };
    api.client.apply(&req).await.map_err(|e| match e {
        ClientError::Http { status: 400, message, pointer: Some(p), .. } => match located(manifests, &p) {
            Some(at) => usage(format!("{at}: {}", strip_document(&message))),
            None => usage(message),
        },
        other => api.error(other, None),
    })
}

/// `file:line:column` of `/documents/I/REST`.
fn located(manifests: &[Manifest], pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix("/documents/")?;
    let (index, within) = rest.split_once('/').unwrap_or((rest, ""));
    let m = manifests.get(index.parse::<usize>().ok()?)?;
    Some(m.position(&format!("/{within}")))
}

/// The server says `documents[2].spec...: message`; the file position replaces the index.
fn strip_document(message: &str) -> &str {
    match message.strip_prefix("documents[") {
        Some(rest) => rest.split_once("].").map_or(message, |(_, m)| m),
        None => message,
    }
}

pub(crate) fn not_found(api: &Api, e: ClientError, kind: Kind, name: &str) -> anyhow::Error {
    match e {
        ClientError::Http { status: 404, .. } => anyhow!("no {} named '{name}'", kind.as_str()),
        other => api.error(other, None),
    }
}

/// A resource as `diff` and `get -o yaml` show it: Kubernetes-shaped (apiVersion, kind,
/// metadata with name and labels, spec), whatever it came from.
struct Shown {
    kind: Kind,
    name: String,
    labels: BTreeMap<String, String>,
    spec: ResourceSpec,
}

impl Shown {
    fn of_document(doc: &ResourceDocument) -> Shown {
        Shown {
            kind: doc.kind(),
            name: doc.metadata().name.clone(),
            labels: doc.metadata().labels.clone(),
            spec: doc.spec(),
        }
    }

    fn of_view(v: &ResourceView) -> Shown {
        Shown {
            kind: v.kind,
            name: v.metadata.name.clone(),
            labels: v.metadata.labels.clone(),
            spec: v.spec.clone(),
        }
    }
}

fn yaml(item: &Shown) -> Result<String> {
    #[derive(serde::Serialize)]
    struct Meta<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: &'a BTreeMap<String, String>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc<'a> {
        api_version: &'a str,
        kind: Kind,
        metadata: Meta<'a>,
        spec: &'a ResourceSpec,
    }
    let doc = Doc {
        api_version: rota_api_types::resources::API_VERSION,
        kind: item.kind,
        metadata: Meta { name: &item.name, labels: &item.labels },
        spec: &item.spec,
    };
    serde_saphyr::to_string(&doc).map_err(|e| anyhow!("cannot render YAML: {e}"))
}

/// A unified diff of two YAML renderings, headed by the resource and what would happen.
fn unified(old: &str, new: &str, label: &str, action: Applied) -> String {
    let verb = if action == Applied::Created { "would be created" } else { "would be configured" };
    let diff = similar::TextDiff::from_lines(old, new);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{label} (stored)"), &format!("{label} (file)"))
        .to_string();
    format!("# {label} {verb}\n{body}")
}

fn table(out: &mut Out, items: &[ResourceView]) -> Result<()> {
    let now = chrono::Utc::now();
    let ready = |r: &ResourceView| {
        r.status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map_or("-".to_string(), |c| format!("{:?}", c.status))
    };
    if items.iter().any(|r| r.kind == Kind::Schedule) {
        let mut t = output::table(&["NAME", "CRON", "ZONE", "WORKFLOW", "NEXT", "LAST RUN", "READY"]);
        for r in items {
            let ResourceSpec::Schedule(s) = &r.spec else { continue };
            let st = r.status.schedule.as_ref();
            let next = if s.suspend {
                "suspended".to_string()
            } else {
                st.and_then(|x| x.next_fire_time).map_or("-".to_string(), |t| t.to_rfc3339())
            };
            let last = st.and_then(|x| x.last_run.as_ref()).map_or("-".to_string(), run_text);
            t.add_row(vec![
                r.metadata.name.clone(),
                s.cron.clone(),
                s.zone_name().to_string(),
                s.workflow.clone(),
                next,
                last,
                ready(r),
            ]);
        }
        return out.table(&t);
    }
    let what = match items.first().map(|r| r.kind) {
        Some(Kind::WorkerPool) => "PRIORITY",
        Some(Kind::WorkerConfig) => "FILES",
        Some(Kind::Secret) => "KEYS",
        _ => "STEPS",
    };
    let mut t = output::table(&["NAME", "GENERATION", what, "AGE", "READY"]);
    for r in items {
        let steps = match &r.spec {
            ResourceSpec::Workflow(w) => w.steps.len().to_string(),
            ResourceSpec::WorkerPool(p) => p.priority.to_string(),
            ResourceSpec::WorkerConfig(c) => c.files.len().to_string(),
            ResourceSpec::Schedule(_) => "-".to_string(),
            // Names and sizes only: a secret's values are never shown.
            ResourceSpec::Secret(sec) => {
                sec.keys.iter().map(|(k, n)| format!("{k} ({n} B)")).collect::<Vec<_>>().join(", ")
            }
        };
        t.add_row(vec![
            r.metadata.name.clone(),
            r.metadata.generation.to_string(),
            steps,
            output::age(r.metadata.creation_timestamp, now),
            ready(r),
        ]);
    }
    out.table(&t)
}

/// A fire that ran: its time, its job and that job's state.
fn run_text(f: &rota_domain::schedule::FireView) -> String {
    let job = f.job_id.map_or("-".to_string(), |j| j.to_string());
    let state = f.state.map_or("pruned".to_string(), |s| s.as_str().to_string());
    format!("{} job {job} ({state})", f.fire_time.to_rfc3339())
}

/// `rota get schedule NAME`: what it runs when, the next fire time, the last run and the
/// recent fires that did not run.
fn schedule_detail(out: &mut Out, r: &ResourceView) -> Result<()> {
    let ResourceSpec::Schedule(s) = &r.spec else {
        return Err(anyhow!("{} is not stored as a schedule", r.metadata.name));
    };
    let st = r.status.schedule.as_ref();
    writeln!(out, "Name:       {}", r.metadata.name)?;
    writeln!(out, "Cron:       {}", s.cron)?;
    writeln!(out, "Time zone:  {}", s.zone_name())?;
    writeln!(out, "Workflow:   {}", s.workflow)?;
    writeln!(out, "Overlap:    {}", s.overlap.as_str())?;
    writeln!(out, "Catchup:    {}", s.catchup)?;
    writeln!(out, "Suspended:  {}", if s.suspend { "yes" } else { "no" })?;
    let next = st.and_then(|x| x.next_fire_time).map_or("-".to_string(), |t| t.to_rfc3339());
    writeln!(out, "Next fire:  {next}")?;
    let last = st.and_then(|x| x.last_run.as_ref()).map_or("-".to_string(), run_text);
    writeln!(out, "Last run:   {last}")?;
    for c in &r.status.conditions {
        writeln!(out, "Condition:  {}={:?} {}: {}", c.kind, c.status, c.reason, c.message)?;
    }
    let recent = st.map(|x| x.recent_not_run.as_slice()).unwrap_or_default();
    if recent.is_empty() {
        writeln!(out, "Not run:    none recently")?;
    } else {
        writeln!(out, "Not run (newest first):")?;
        for f in recent {
            writeln!(out, "  {}  {}", f.fire_time.to_rfc3339(), f.outcome)?;
        }
    }
    Ok(())
}
