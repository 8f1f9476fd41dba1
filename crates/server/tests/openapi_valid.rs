//! The served `/openapi.json` is valid OpenAPI 3.1 by a standard validator
//! (`openapi-spec-validator` from PyPI), fetched from a real server on port 0.

#![allow(clippy::unwrap_used)]

use rota_server::ServerConfig;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use std::process::Command;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The validator's command; `.ci/run` installs it with pip.
const VALIDATOR: &str = "openapi-spec-validator";

fn validator_available() -> bool {
    Command::new(VALIDATOR).arg("--help").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_passes_openapi_spec_validator() {
    if !validator_available() {
        let strict = std::env::var("ROTA_REQUIRE_ALL").is_ok_and(|v| v == "1");
        panic!(
            "`{VALIDATOR}` is not on the PATH{}: install it with `python3 -m pip install openapi-spec-validator`",
            if strict { " and ROTA_REQUIRE_ALL=1 forbids skipping" } else { "" }
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(rota_server::run(
        listener,
        Arc::new(store),
        ServerConfig { admin_token: "a".into(), join_token: "j".into(), ..ServerConfig::default() },
        shutdown.clone(),
    ));
    let body = reqwest::get(format!("http://{addr}/openapi.json")).await.unwrap().text().await.unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(VALIDATOR).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{VALIDATOR}: {}", text.trim());
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(out.status.success(), "the served OpenAPI document is invalid:\n{text}");
}
