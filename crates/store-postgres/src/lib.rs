//! `JobStore` on PostgreSQL: the store of a control plane of several servers (issue 12).
//! Under construction: this crate holds what exists so far and is not yet used by the
//! server; `crates/store-sqlite` remains the backend `rota server` opens.
//!
//! Driver: tokio-postgres (with deadpool-postgres for pooling), chosen over sqlx by
//! measurement on this machine's PostgreSQL 15 (release builds, one connection, 3 rounds,
//! the machine otherwise busy): a prepared `SELECT $1` round trip took 34–77 µs with
//! tokio-postgres against 80–173 µs with sqlx, and a transaction of 5 inserts plus a
//! `FOR UPDATE SKIP LOCKED` claim of 5 rows 0.97–2.8 ms against 1.3–3.7 ms. It also
//! mirrors the SQLite backend (hand-written SQL, explicit transactions) and gives direct
//! access to a connection's notifications (`LISTEN`) and session-level advisory locks.

pub mod bus;
pub mod dedicated;
pub mod leader;
mod servers;
pub mod url;

