//! `rota job submit -f`: a job document (YAML, or JSON when the first byte is `{`) parsed,
//! validated, and every validation error placed in the text. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_manifest::job_document::{self, Document};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let json = text.trim_start().starts_with('{');
    let doc = Document { name: "job.yaml".into(), text: text.into(), json };
    if let Ok(spec) = job_document::parse(&doc) {
        let _ = job_document::validate(&spec, Some(&doc));
    }
});
