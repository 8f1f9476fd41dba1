//! A job document `rota job submit -f` reads: YAML or JSON (file or stdin), parsed into a
//! `JobSpec`, and the spec's validation errors placed in the text. Every error leads with
//! where it is: `job.yaml:3:5: ...` for syntax and types, `job.yaml:7:14: steps[1].needs[0]:
//! ...` for the rules `JobSpec::validate` checks. Flags on top are the CLI's, not this file's.

use crate::error::{Error, invalid};
use crate::source_map;
use rota_domain::JobSpec;
use std::io::Read;
use std::path::Path;

/// A document's text and the name errors call it by.
pub struct Document {
    /// The name errors lead with (`job.yaml`, `<stdin>`).
    pub name: String,
    /// The text.
    pub text: String,
    /// JSON rather than YAML.
    pub json: bool,
}

/// `spec` validated; an error names where in `doc` the failing field is (or `job:` when the
/// job came from flags alone).
pub fn validate(spec: &JobSpec, doc: Option<&Document>) -> Result<(), Error> {
    spec.validate().map_err(|e| match doc {
        Some(doc) => match source_map::locate(&doc.text, &e.path) {
            Some((line, column)) => invalid(format!("{}:{line}:{column}: {e}", doc.name)),
            None => invalid(format!("{}: {e}", doc.name)),
        },
        None => invalid(format!("job: {e}")),
    })
}

/// The document at `path` (`-`: stdin); JSON by extension, else when it starts with `{`.
pub fn read(path: &Path) -> Result<Document, Error> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::Stdin { what: "the job document", source })?;
        let json = text.trim_start().starts_with('{');
        return Ok(Document { name: "<stdin>".into(), text, json });
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Read { name: name.clone(), source })?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(format!("{name}: not UTF-8 text")))?;
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    Ok(Document { name, text, json })
}

/// The document's job, not yet validated (flags may still add to it).
pub fn parse(doc: &Document) -> Result<JobSpec, Error> {
    let at = |line: u64, column: u64| format!("{}:{line}:{column}", doc.name);
    source_map::deserialize(&doc.text, doc.json, &at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<JobSpec, Error> {
        parse(&Document { name: "job.yaml".into(), text: text.into(), json: false })
    }

    fn message(r: Result<JobSpec, Error>) -> String {
        r.unwrap_err().to_string()
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
    fn validation_errors_are_placed_in_the_document() {
        let text = "steps:\n  - name: a\n    run: x\n    needs: [zz]\n";
        let doc = Document { name: "job.yaml".into(), text: text.into(), json: false };
        let spec = parse(&doc).unwrap();
        let m = validate(&spec, Some(&doc)).unwrap_err().to_string();
        assert!(m.starts_with("job.yaml:4:13: steps[0].needs[0]"), "{m}");
        let m = validate(&spec, None).unwrap_err().to_string();
        assert!(m.starts_with("job: steps[0].needs[0]"), "{m}");
    }
}
