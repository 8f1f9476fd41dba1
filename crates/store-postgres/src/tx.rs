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
        // Sent, not waited for: it goes out ahead of the body's first statement, in the same
        // round trip, instead of costing one of its own on every claim, heartbeat and
        // completion. It cannot fail on a live connection; if it did, the body's first
        // statement would fail (the transaction is aborted) and nothing would commit.
        send_only(tx.batch_execute("SET LOCAL synchronous_commit = off")).await;
    }
    Ok(tx)
}

/// Sends a request and does not wait for its answer. Polled once, a tokio-postgres request
/// is queued on its connection, ahead of every request made after it (the server runs them
/// in that order); the connection reads and discards the answer of a request whose future
/// was dropped.
async fn send_only<F: Future>(f: F) {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let _ = f.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
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

/// Opens an item's savepoint (`item!`). Sent, not waited for, like `RELEASE` after an item
/// that succeeded: neither can fail in a healthy transaction, and waiting for each cost a
/// batch two round trips per item (a submit's claim for a parked worker, a completion's
/// claim, each log append). A rollback is waited for: what follows must not run before it.
pub(crate) async fn begin_item(tx: &Tx<'_>) {
    send_only(tx.batch_execute("SAVEPOINT item")).await;
}

/// Ends an item's savepoint: kept if the item succeeded, rolled back if it was refused or
/// failed on its own. A failure that ends the batch (the connection, a deadlock) is the
/// caller's error, not the item's.
pub(crate) async fn end_item<T>(tx: &Tx<'_>, r: Result<T>) -> Result<rota_store::Result<T>> {
    match r {
        Ok(v) => {
            send_only(tx.batch_execute("RELEASE SAVEPOINT item")).await;
            Ok(Ok(v))
        }
        Err(e) if e.ends_the_batch() => Err(e),
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT item; RELEASE SAVEPOINT item").await?;
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
        let $sp: &$crate::tx::Tx<'_> = &$tx;
        $crate::tx::begin_item($sp).await;
        let r: $crate::error::Result<_> = async { $body }.await;
        $crate::tx::end_item($sp, r).await?
    }};
}

pub(crate) use {in_tx, item};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{PgOptions, PgStore};
    use rota_testkit::postgres::TestDb;

    /// A store on `db` (its schema migrated) and its one pooled connection.
    async fn one_connection(db: &TestDb) -> (PgStore, deadpool_postgres::Object) {
        let store =
            PgStore::connect(&db.url, PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
        let client = store.client().await.unwrap();
        (store, client)
    }

    async fn shown(tx: &Tx<'_>) -> String {
        tx.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0)
    }

    /// A relaxed transaction's `SET LOCAL` is sent without waiting for its answer: the
    /// statements after it must run with it in force and get their own answers, and it must
    /// end with the transaction.
    #[tokio::test]
    async fn each_durability_commits_as_it_says() {
        let Some(db) = TestDb::create().await else { return };
        let (_store, mut client) = one_connection(&db).await;
        for round in 0..3 {
            let tx = begin(&mut client, Durability::Relaxed).await.unwrap();
            assert_eq!(shown(&tx).await, "off", "relaxed, round {round}");
            let n: i32 = tx.query_one("SELECT $1::int4 + 1", &[&round]).await.unwrap().get(0);
            assert_eq!(n, round + 1, "the answer after the unanswered SET is the statement's own");
            tx.commit().await.unwrap();
            let tx = begin(&mut client, Durability::Full).await.unwrap();
            assert_eq!(shown(&tx).await, "on", "full after relaxed, round {round}");
            tx.rollback().await.unwrap();
        }
        let tx = begin(&mut client, Durability::Relaxed).await.unwrap();
        tx.rollback().await.unwrap();
        let after: String = client.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
        assert_eq!(after, "on", "SET LOCAL ends with its transaction");
    }

    /// Items whose `SAVEPOINT` and `RELEASE` are not waited for: a failing item (an error of
    /// the database after it wrote, and a refusal of rota's own) leaves nothing behind, the
    /// items around it keep what they wrote, and every item gets its own answer.
    #[tokio::test]
    async fn a_failing_item_rolls_back_alone() {
        let Some(db) = TestDb::create().await else { return };
        let (_store, mut client) = one_connection(&db).await;
        client.batch_execute("CREATE TABLE t (n int4 PRIMARY KEY)").await.unwrap();
        let tx = begin(&mut client, Durability::Relaxed).await.unwrap();
        let mut answers = Vec::new();
        for n in 1..=6i32 {
            let r: Result<rota_store::Result<i32>> = async {
                Ok(item!(tx, |sp| async {
                    exec(sp, "INSERT INTO t VALUES ($1)", &[&n]).await?;
                    match n {
                        // The database refuses after the insert: the transaction is aborted
                        // until the item's rollback.
                        2 => exec(sp, "SELECT 1 / ($1 - 2)", &[&n]).await.map(|_| n),
                        // rota refuses after the insert.
                        4 => Err(crate::error::conflict(rota_store::ConflictKind::Exists, "refused")),
                        _ => Ok(n),
                    }
                }
                .await))
            }
            .await;
            answers.push(r.unwrap().is_ok());
        }
        tx.commit().await.unwrap();
        assert_eq!(answers, [true, false, true, false, true, true]);
        let kept: Vec<i32> =
            client.query("SELECT n FROM t ORDER BY n", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(kept, [1, 3, 5, 6]);
    }
}
