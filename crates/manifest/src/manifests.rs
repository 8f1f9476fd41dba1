//! Reading what `rota apply`, `diff` and `delete -f` are given: a file, a directory (every
//! `*.yaml`, `*.yml` and `*.json` in it, in name order) or `-` (stdin). A YAML file holds
//! one or more documents separated by `---` lines; a JSON file holds one document. Each
//! document is parsed strictly into a `ResourceDocument` and checked against the domain
//! rules here, so mistakes are named by `file:line:column` before any network call; each
//! keeps where it came from, so a server's JSON pointer maps back too. No network here.

use crate::error::{Error, invalid};
use crate::source_map;
use rota_api_types::resources::{
    API_VERSION, ResourceDocument, ScheduleDocument, WorkerConfigDocument, WorkerPoolDocument,
    WorkflowDocument,
};
use rota_domain::resource::{Kind, MAX_DOCUMENT_BYTES, json_pointer};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One document and where it came from.
pub struct Manifest {
    /// The file's name as errors say it (`<stdin>` for `-`).
    pub file: String,
    /// The line of the file the document's first line is (1-based).
    pub first_line: u64,
    /// The document's own text.
    pub text: String,
    /// The document, parsed.
    pub doc: ResourceDocument,
}

impl Manifest {
    /// `file:line:column` of the value at `pointer` (relative to the document), or `file:line`
    /// of the document when it cannot be found.
    pub fn position(&self, pointer: &str) -> String {
        match source_map::locate_pointer(&self.text, pointer) {
            Some((line, column)) => format!("{}:{}:{column}", self.file, line + self.first_line - 1),
            None => format!("{}:{}", self.file, self.first_line),
        }
    }

    /// The document's kind and name, as `rota get` writes them (`workflows/build`).
    pub fn label(&self) -> String {
        format!("{}/{}", self.doc.kind().plural(), self.doc.metadata().name)
    }
}

/// Every document `-f PATH` names, in order; the first problem is the error.
pub fn read(path: &Path) -> Result<Vec<Manifest>, Error> {
    let mut out = Vec::new();
    for (file, text, json) in sources(path)? {
        out.extend(documents(&file, &text, json)?);
    }
    if out.is_empty() {
        return Err(invalid(format!("{}: no documents found", path.display())));
    }
    Ok(out)
}

/// Every document of `text` (JSON when it starts with `{`, else YAML), as `-` reads stdin;
/// errors name `file`. `rota mcp`'s `apply_resources` is given its documents this way.
pub fn from_text(file: &str, text: &str) -> Result<Vec<Manifest>, Error> {
    let json = text.trim_start().starts_with('{');
    let out = documents(file, text, json)?;
    if out.is_empty() {
        return Err(invalid(format!("{file}: no documents found")));
    }
    Ok(out)
}

/// One file's documents, parsed and checked.
fn documents(file: &str, text: &str, json: bool) -> Result<Vec<Manifest>, Error> {
    let parts = split(text, json)
        .map_err(|line| invalid(format!("{file}:{line}: start the document on the line after `---`")))?;
    parts.into_iter().map(|(first_line, part)| parse(file, first_line, part, json)).collect()
}

/// The files to read: `(name, text, is JSON)`.
fn sources(path: &Path) -> Result<Vec<(String, String, bool)>, Error> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::Stdin { what: "documents", source })?;
        let json = text.trim_start().starts_with('{');
        return Ok(vec![("<stdin>".into(), text, json)]);
    }
    let name = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| Error::Read { name: name(), source })?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| Error::List { name: name(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(extension(p), Some("yaml" | "yml" | "json")))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(invalid(format!(
                "{}: no *.yaml, *.yml or *.json files in this directory",
                path.display()
            )));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|f| {
            let name = f.display().to_string();
            let bytes = std::fs::read(&f).map_err(|source| Error::Read { name: name.clone(), source })?;
            let text = String::from_utf8(bytes).map_err(|_| invalid(format!("{name}: not UTF-8 text")))?;
            // A byte-order mark some editors write is not part of the document.
            let text = text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text);
            let json = match extension(&f) {
                Some("json") => true,
                Some("yaml" | "yml") => false,
                _ => text.trim_start().starts_with('{'),
            };
            Ok((name, text, json))
        })
        .collect()
}

fn extension(p: &Path) -> Option<&str> {
    p.extension().and_then(|e| e.to_str())
}

/// A file's documents with the line each starts on. YAML splits at `---` lines (a `...`
/// line ends a document); documents holding nothing but comments are skipped. JSON: the
/// whole text, one document.
fn split(text: &str, json: bool) -> Result<Vec<(u64, &str)>, u64> {
    if json {
        return Ok(vec![(1, text)]);
    }
    let mut out = Vec::new();
    let (mut start, mut start_line) = (0usize, 1u64);
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let separator =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        let rest = bare.get(3..).unwrap_or("").trim();
        if separator && bare != "..." && !rest.is_empty() && !rest.starts_with('#') {
            // `--- {kind: …}`: a document on the separator line, which YAML allows but
            // whose line and column errors could not name; say so rather than drop it.
            return Err(i as u64 + 1);
        }
        if separator {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i as u64 + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    Ok(out
        .into_iter()
        .filter(|(_, t)| t.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .collect())
}

/// The first lines of every document: its kind says what to parse the rest as. Parsing
/// straight into the kind's own type (not an enum tagged by `kind`, which serde buffers)
/// keeps every error's line and column.
#[derive(serde::Deserialize)]
struct Head {
    kind: Option<String>,
}

/// A `Workflow` document as a file holds it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WorkflowFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    api_version: Option<String>,
    metadata: rota_domain::resource::Metadata,
    spec: rota_domain::workflow::WorkflowSpec,
}

/// A `Schedule` document as a file holds it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScheduleFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    api_version: Option<String>,
    metadata: rota_domain::resource::Metadata,
    spec: rota_domain::schedule::ScheduleSpec,
}

/// A `WorkerConfig` document as a file holds it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    api_version: Option<String>,
    metadata: rota_domain::resource::Metadata,
    spec: rota_domain::hostconfig::WorkerConfigSpec,
}

/// A `Secret` document as a file holds it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    api_version: Option<String>,
    metadata: rota_domain::resource::Metadata,
    #[serde(default)]
    spec: rota_api_types::secrets::SecretSpec,
}

/// A `WorkerPool` document as a file holds it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoolFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    api_version: Option<String>,
    metadata: rota_domain::resource::Metadata,
    spec: rota_domain::pool::PoolSpec,
}

fn parse(file: &str, first_line: u64, text: &str, json: bool) -> Result<Manifest, Error> {
    let at = |line: u64, column: u64| format!("{file}:{}:{column}", line + first_line - 1);
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(format!(
            "{}: the document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
            at(1, 1),
            text.len()
        )));
    }
    let head: Head = source_map::deserialize(text, json, &at)?;
    let place = |pointer: &str| match source_map::locate_pointer(text, pointer) {
        Some((line, column)) => at(line, column),
        None => at(1, 1),
    };
    let Some(kind) = head.kind else {
        return Err(invalid(format!("{}: missing `kind` (e.g. kind: Workflow)", at(1, 1))));
    };
    let doc = match Kind::ALL.iter().find(|k| k.as_str() == kind) {
        Some(Kind::Workflow) => {
            let f: WorkflowFile = source_map::deserialize(text, json, &at)?;
            ResourceDocument::Workflow(WorkflowDocument {
                api_version: f.api_version,
                metadata: f.metadata,
                spec: f.spec,
            })
        }
        Some(Kind::Schedule) => {
            let f: ScheduleFile = source_map::deserialize(text, json, &at)?;
            ResourceDocument::Schedule(ScheduleDocument {
                api_version: f.api_version,
                metadata: f.metadata,
                spec: f.spec,
            })
        }
        Some(Kind::WorkerConfig) => {
            let f: ConfigFile = source_map::deserialize(text, json, &at)?;
            ResourceDocument::WorkerConfig(WorkerConfigDocument {
                api_version: f.api_version,
                metadata: f.metadata,
                spec: f.spec,
            })
        }
        Some(Kind::WorkerPool) => {
            let f: PoolFile = source_map::deserialize(text, json, &at)?;
            ResourceDocument::WorkerPool(WorkerPoolDocument {
                api_version: f.api_version,
                metadata: f.metadata,
                spec: f.spec,
            })
        }
        Some(Kind::Secret) => {
            let f: SecretFile = source_map::deserialize(text, json, &at)?;
            ResourceDocument::Secret(rota_api_types::resources::SecretDocument {
                api_version: f.api_version,
                metadata: f.metadata,
                spec: f.spec,
            })
        }
        None => {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(invalid(format!(
                "{}: unknown kind `{kind}`; known kinds: {}",
                place("/kind"),
                known.join(", ")
            )));
        }
    };
    let m = Manifest { file: file.to_string(), first_line, text: text.to_string(), doc };
    check(&m)?;
    Ok(m)
}

/// The rules the server also checks, here first: `file:line:column` of the field to blame.
fn check(m: &Manifest) -> Result<(), Error> {
    let fail = |pointer: &str, field: &str, message: &str| {
        invalid(format!("{}: {field}: {message}", m.position(pointer)))
    };
    if let Some(v) = m.doc.api_version()
        && v != API_VERSION
    {
        return Err(fail("/apiVersion", "apiVersion", &format!("`{v}` is not known; use {API_VERSION}")));
    }
    if let Err(e) = m.doc.metadata().validate() {
        return Err(fail(&json_pointer(&e.field), &e.field, &e.message));
    }
    m.doc.validate_spec().map_err(|e| {
        let field = format!("spec.{}", e.path);
        fail(&json_pointer(&field), &field, &e.message)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const THREE: &str = "# three workflows\nkind: Workflow\nmetadata: {name: a}\nspec:\n  steps:\n    - {name: s, run: 'true'}\n---\nkind: Workflow\nmetadata: {name: b}\nspec:\n  steps:\n    - {name: s, run: 'true'}\n--- # c\nkind: Workflow\nmetadata: {name: c}\nspec:\n  steps:\n    - name: s\n      run: 'true'\n      needs: [nope]\n";

    #[test]
    fn yaml_files_split_into_documents_that_keep_their_lines() {
        let parts = split(THREE, false).unwrap();
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 8, 14]);
        assert!(split("---\n# only a comment\n---\n", false).unwrap().is_empty());
        assert_eq!(split("a: 1\n--- {kind: Workflow}\n", false), Err(2));
    }

    #[test]
    fn a_rule_broken_in_the_third_document_names_its_line_in_the_file() {
        let parts = split(THREE, false).unwrap();
        let (line, text) = parts[2];
        let e = parse("three.yaml", line, text, false).err().unwrap().to_string();
        assert!(e.starts_with("three.yaml:20:15: spec.steps[0].needs[0]"), "{e}");
        let (line, text) = parts[1];
        assert_eq!(parse("three.yaml", line, text, false).unwrap().label(), "workflows/b");
    }

    #[test]
    fn unknown_fields_and_kinds_are_named_where_they_are() {
        let e = parse("w.yaml", 5, "kind: Workflow\nmetadata: {name: a}\nspec:\n  stepz: []\n", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("w.yaml:8:3:") && e.contains("stepz"), "{e}");
        let e = parse("w.json", 1, r#"{"kind": "Pod", "metadata": {"name": "a"}, "spec": {}}"#, true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("w.json:1:") && e.contains("Pod"), "{e}");
    }
}
