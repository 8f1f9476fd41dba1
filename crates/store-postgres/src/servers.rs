//! The `servers` table: one row per running server process (its id, host, pid, start, the
//! backend pid of its leadership connection, when it last beat), written by that server's
//! heartbeat on its leadership connection and read to tell who leads and whether others
//! serve. Owns these statements; must not decide leadership (the advisory lock does). The
//! table is created by the migrations (`migrations/0001_init.sql`).

use rota_store::leader::{ServerId, ServerInfo};
use std::time::Duration;
use tokio_postgres::Client;

/// Rows of servers not heard from for this long are deleted by any heartbeat.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Records that `me` is alive, with the backend pid of the connection this runs on (the
/// one holding or trying the leader lock), and forgets servers gone for a day.
pub(crate) async fn beat(client: &Client, me: &ServerInfo) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO servers (id, host, pid, started_at, backend_pid, last_seen)
             VALUES ($1, $2, $3, $4, pg_backend_pid(), now())
             ON CONFLICT (id) DO UPDATE
                SET backend_pid = excluded.backend_pid, last_seen = excluded.last_seen",
            &[&me.id.0, &me.host, &i64::from(me.pid), &me.started_at],
        )
        .await?;
    client
        .execute(
            "DELETE FROM servers WHERE last_seen < now() - make_interval(secs => $1)",
            &[&FORGET_AFTER.as_secs_f64()],
        )
        .await?;
    Ok(())
}

/// Removes `me` (a clean shutdown): a server starting next does not count it as serving.
pub(crate) async fn remove(client: &Client, me: ServerId) -> Result<(), tokio_postgres::Error> {
    client.execute("DELETE FROM servers WHERE id = $1", &[&me.0]).await.map(|_| ())
}

/// The server whose leadership connection holds advisory lock `key` in this database now
/// (read from `pg_locks`, so it is exact, not as of the last heartbeat).
pub(crate) async fn holder(client: &Client, key: i64) -> Result<Option<ServerInfo>, tokio_postgres::Error> {
    // A bigint advisory key shows in pg_locks as classid (high half), objid (low half) and
    // objsubid 1. A recycled backend pid could match a dead server's row: the freshest wins.
    let row = client
        .query_opt(
            "SELECT s.id, s.host, s.pid, s.started_at
               FROM pg_locks l
               JOIN servers s ON s.backend_pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND ((l.classid::int8 << 32) | l.objid::int8) = $1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              ORDER BY s.last_seen DESC
              LIMIT 1",
            &[&key],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(ServerInfo {
        id: ServerId(r.try_get(0)?),
        host: r.try_get(1)?,
        pid: u32::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
        started_at: r.try_get(3)?,
    }))
}

/// Whether a server other than `me` beat within `window`, had started more than `window`
/// before `me` did, and still has its leadership connection open: one that started together
/// with `me` (a whole control plane restarted after an outage) was not serving before, and a
/// killed one's row (its connection gone) serves nobody.
pub(crate) async fn others_seen(
    client: &Client,
    me: &ServerInfo,
    window: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM servers
                             WHERE id <> $1 AND last_seen > now() - make_interval(secs => $2)
                               AND started_at < $3::timestamptz - make_interval(secs => $2)
                               AND backend_pid IN (SELECT pid FROM pg_stat_activity))",
            &[&me.id.0, &window.as_secs_f64(), &me.started_at],
        )
        .await?;
    row.try_get(0)
}
