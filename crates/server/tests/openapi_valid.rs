//! The served `/openapi.json` is valid OpenAPI 3.1 by a standard validator
//! (`openapi-spec-validator` from PyPI), fetched from a real server on port 0.

#![allow(clippy::unwrap_used)]

use rota_server::ServerConfig;
use std::process::Command;

/// The validator's command; `.ci/run` installs it with pip.
const VALIDATOR: &str = "openapi-spec-validator";

fn validator_available() -> bool {
    Command::new(VALIDATOR).arg("--help").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_passes_openapi_spec_validator() {
    if !rota_testkit::require::require(
        validator_available(),
        "`openapi-spec-validator` on the PATH",
        "install it with `python3 -m pip install openapi-spec-validator`",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server =
        rota_testkit::inproc::Server::start_with(&dir.path().join("rota.db"), None, ServerConfig::default())
            .await;
    let addr = server.addr;
    let body = reqwest::get(format!("http://{addr}/openapi.json")).await.unwrap().text().await.unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(VALIDATOR).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{VALIDATOR}: {}", text.trim());
    server.shut().await;
    assert!(out.status.success(), "the served OpenAPI document is invalid:\n{text}");
}
