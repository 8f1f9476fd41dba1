//! rota's one test kit: a test's private HOME/XDG tree ([`Env`]) on a [`Backend`], the one way to start a
//! real `rota server` on port 0 with its own data ([`server`]), background `rota`
//! processes ([`Proc`]), an async cluster with an API client ([`cluster`]), in-process
//! servers and workers ([`inproc`]), a headless browser ([`browser`]), test hosts in network namespaces ([`netns`]), a TLS
//! path to the test PostgreSQL server ([`pg_tls_proxy`]), a test CA ([`certs`]), the
//! background-worker commands ([`background`]), `/proc` checks ([`procs`]), the one skip
//! helper ([`require`]), several servers of one control plane ([`several`]) and what they
//! recorded ([`records`]), scenario sizes ([`size`]) and one test body for both backends
//! ([`both_backends!`]).
//! Test code only (and the bench's throwaway servers): it panics with context on failure.

mod bin;
mod env;
mod error;
mod jobs;
mod proc;
mod wait;

pub mod backend;
pub mod background;
pub mod browser;
pub mod certs;
pub mod cluster;
pub mod inproc;
pub mod netns;
pub mod pg_tls_proxy;
pub mod postgres;
pub mod procs;
pub mod records;
pub mod require;
pub mod server;
pub mod several;
pub mod size;

pub use backend::Backend;
pub use bin::rota_bin;
pub use env::{
    Env, HEARTBEAT, LEASE_TTL, bound, isolate, isolate_tree, rota, spawn_server, spawn_server_with,
    spawn_worker,
};
pub use error::KitError;
pub use jobs::{redact, show_json, submit, wait_for_end, wait_for_state, yaml_str};
pub use proc::{Proc, Tap};
pub use procs::pid_alive;
pub use wait::{wait_file, wait_file_exists, wait_for, wait_until};
