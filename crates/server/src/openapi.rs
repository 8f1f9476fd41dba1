//! The OpenAPI document's fixed parts (title, version, tags); paths and schemas come from
//! the handlers' `#[utoipa::path]` annotations.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "rota control plane", description = "Worker protocol (/worker/...) and operator API (/api/v1/...)."),
    tags(
        (name = "worker", description = "Worker protocol: join token for register, then the session credential."),
        (name = "jobs", description = "Operator job calls (admin token)."),
        (name = "workers", description = "Operator views of workers (admin token)."),
        (name = "tokens", description = "Control-plane token rotation (admin token)."),
        (name = "resources", description = "Declared resources (`rota apply`) and workflow runs (admin token)."),
        (name = "secrets", description = "Secrets: values in (write-only, sealed at rest), key names and sizes out; key rotation (admin token)."),
        (name = "events", description = "The event stream: Server-Sent Events of jobs, attempts, log activity, workers, resources (admin token)."),
        (name = "meta", description = "Health, metrics, this document (no token).")
    )
)]
struct ApiDoc;

pub(crate) fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
