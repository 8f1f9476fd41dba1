//! Transactions and statements: the `in_tx!` retry loop every call runs in (deadlock and
//! serialization failures run the whole transaction again), `item!` (one savepoint per item
//! of a batch, so one failing item never rolls back the others), short query helpers
//! over cached prepared statements, and `pipeline` (many statements in one round trip).
//! Knows nothing of jobs.

use crate::error::Result;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

/// A transaction (or a savepoint inside one).
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Statement parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How many times a transaction that lost a deadlock or serialization conflict runs again.
pub(crate) const MAX_RETRIES: u32 = 8;

/// How a transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Acknowledged once the WAL is flushed (the server's `synchronous_commit`): submits,
    /// revokes, registrations, credentials.
    Full,
    /// `SET LOCAL synchronous_commit = off`: claims, heartbeats, completions, logs. Losing
    /// one to a database crash only re-runs a step.
    Relaxed,
    /// A read-only snapshot (`REPEATABLE READ READ ONLY`): a read of several statements
    /// (a job with its steps and attempts) sees one moment; it never conflicts.
    Read,
}

/// Starts a transaction with `durability`.
pub(crate) async fn begin(client: &mut deadpool_postgres::Object, durability: Durability) -> Result<Tx<'_>> {
    if durability == Durability::Read {
        let b = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true);
        return Ok(b.start().await?);
    }
    let tx = client.transaction().await?;
    if durability == Durability::Relaxed {
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
    }
    Ok(tx)
}

/// Every row of a statement.
pub(crate) async fn rows(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, p).await?)
}

/// The row of a statement returning at most one.
pub(crate) async fn opt(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, p).await?)
}

/// The row of a statement returning exactly one.
pub(crate) async fn one(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> Result<Row> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&st, p).await?)
}

/// Runs a statement; returns the rows it changed.
pub(crate) async fn exec(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, p).await?)
}

/// A statement's future, boxed so one pipeline can hold statements of several kinds.
pub(crate) type Sent<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `statements` as one pipeline: each is polled once, in order, which sends it (a
/// statement already prepared is sent on its first poll, with no round trip before), then
/// their answers are awaited in order. The server runs them in the order sent, so this is
/// `statements` one after the other in a single round trip. After a failed statement the
/// server refuses the rest of the transaction's statements (`25P02`): the first error is the
/// one that counts.
pub(crate) async fn pipeline<T>(mut statements: Vec<Sent<'_, T>>) -> Vec<T> {
    let mut early: Vec<Option<T>> = statements.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, slot) in statements.iter_mut().zip(early.iter_mut()) {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                *slot = Some(v);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut out = Vec::with_capacity(statements.len());
    for (f, slot) in statements.into_iter().zip(early) {
        out.push(match slot {
            Some(v) => v,
            None => f.await,
        });
    }
    out
}

/// Ends an item's savepoint: kept if the item succeeded, rolled back if it was refused or
/// failed on its own. A failure that ends the batch (the connection, a deadlock) is the
/// caller's error, not the item's.
pub(crate) async fn end_item<T>(sp: Tx<'_>, r: Result<T>) -> Result<rota_store::Result<T>> {
    match r {
        Ok(v) => {
            sp.commit().await?;
            Ok(Ok(v))
        }
        Err(e) if e.ends_the_batch() => Err(e),
        Err(e) => {
            sp.rollback().await?;
            Ok(Err(e.into()))
        }
    }
}

/// Runs `$body` (an expression that may use `?` and `.await`) in a transaction on a pooled
/// connection of `$store`, committing with `$durability`; runs it again from the start when
/// it loses a deadlock or a serialization conflict. Evaluates to `rota_store::Result`.
macro_rules! in_tx {
    ($store:expr, $durability:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0u32;
        loop {
            let result: $crate::error::Result<_> = async {
                let mut client = $store.client().await?;
                #[allow(unused_mut)]
                let mut $tx = $crate::tx::begin(&mut client, $durability).await?;
                let out = $body;
                $tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if e.is_retryable() && tries < $crate::tx::MAX_RETRIES => {
                    tries += 1;
                    tracing::debug!(tries, error = ?e, "transaction lost a conflict: running it again");
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(tries) * 5)).await;
                }
                other => break other.map_err(rota_store::StoreError::from),
            }
        }
    }};
}

/// One item of a batch in its own savepoint of `$tx`: evaluates to
/// `Result<rota_store::Result<T>>` (the item's answer, or the batch's failure).
macro_rules! item {
    ($tx:expr, |$sp:ident| $body:expr) => {{
        let $sp = $tx.savepoint("item").await?;
        let r: $crate::error::Result<_> = async { $body }.await;
        $crate::tx::end_item($sp, r).await?
    }};
}

pub(crate) use {in_tx, item};
