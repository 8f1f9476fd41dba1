//! Parsing the documents users write: job documents (`rota job submit -f`) and resource
//! manifests (`rota apply`, `diff`, `delete -f`), with errors that lead with `file:line:column`.
//! No network and no process state; the CLI turns every [`Error`] into a usage error (exit 2).

mod error;
pub mod job_document;
pub mod manifests;
pub mod source_map;

pub use error::Error;
