//! What a PostgreSQL control plane recorded, read straight from its database: for the
//! end-to-end tests of several servers (takeover, net split, chaos), which check what the
//! API cannot tell (no attempt left running, one lost attempt per killed one, every job's
//! successes). Reads only, except [`Records::backdate_finished`], which ages finished jobs
//! so a test can hold them "past retention" without waiting for the clock. Never used by
//! the product.

use std::time::Duration;
use tokio_postgres::NoTls;

/// A connection to a test's database.
pub struct Records {
    client: tokio_postgres::Client,
}

/// One attempt as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// Its job (uuid text).
    pub job: String,
    /// Its step's name.
    pub step: String,
    /// Its number within the step (1 first).
    pub number: i32,
    /// The worker that held it.
    pub worker: String,
    /// `running`, `succeeded`, `failed`, `lost`, ...
    pub status: String,
}

impl Records {
    /// Connects to the database at `url` (a test's `Env::database_url`).
    pub async fn connect(url: &str) -> Records {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test database to read its records: {e}"));
        tokio::spawn(conn);
        Records { client }
    }

    /// Every row of every table of the database as text (`SELECT t::text`), one line per
    /// row: for tests that grep what a database holds (bytea columns read as hex).
    pub async fn dump_text(&self) -> String {
        let tables = self
            .client
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("listing tables: {e}"));
        let mut out = String::new();
        for t in tables {
            let name: String = t.get(0);
            let rows = self
                .client
                .query(&format!("SELECT t::text FROM \"{name}\" t"), &[])
                .await
                .unwrap_or_else(|e| panic!("reading {name}: {e}"));
            for r in rows {
                out.push_str(&name);
                out.push(' ');
                out.push_str(&r.get::<_, String>(0));
                out.push('\n');
            }
        }
        out
    }

    /// Every attempt, by job, step and number.
    pub async fn attempts(&self) -> Vec<AttemptRow> {
        let rows = self
            .client
            .query(
                "SELECT job_id::text, step, number, worker_name, status FROM attempts \
                 ORDER BY job_id, step, number",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading attempts: {e}"));
        rows.iter()
            .map(|r| AttemptRow {
                job: r.get(0),
                step: r.get(1),
                number: r.get(2),
                worker: r.get(3),
                status: r.get(4),
            })
            .collect()
    }

    /// The attempts of one job.
    pub async fn attempts_of(&self, job: &str) -> Vec<AttemptRow> {
        self.attempts().await.into_iter().filter(|a| a.job == job).collect()
    }

    /// How many jobs are stored (pruned ones are gone).
    pub async fn job_count(&self) -> i64 {
        self.client
            .query_one("SELECT count(*) FROM jobs", &[])
            .await
            .unwrap_or_else(|e| panic!("counting jobs: {e}"))
            .get(0)
    }

    /// How many jobs are in each state, by state.
    pub async fn job_states(&self) -> std::collections::BTreeMap<String, i64> {
        let rows = self
            .client
            .query("SELECT state, count(*) FROM jobs GROUP BY state", &[])
            .await
            .unwrap_or_else(|e| panic!("counting jobs by state: {e}"));
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Whether the job is still stored.
    pub async fn job_exists(&self, job: &str) -> bool {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM jobs WHERE id::text = $1", &[&job])
            .await
            .unwrap_or_else(|e| panic!("looking for job {job}: {e}"))
            .get(0);
        n == 1
    }

    /// Moves the finish time of these finished jobs `by` into the past, so that a server
    /// with a retention shorter than `by` must prune them on its next pass. Panics unless
    /// every one of them is stored and finished.
    pub async fn backdate_finished(&self, jobs: &[String], by: Duration) {
        let secs = by.as_secs_f64();
        let n = self
            .client
            .execute(
                "UPDATE jobs SET finished_at = finished_at - make_interval(secs => $2) \
                 WHERE id::text = ANY($1) AND finished_at IS NOT NULL",
                &[&jobs, &secs],
            )
            .await
            .unwrap_or_else(|e| panic!("backdating finished jobs: {e}"));
        assert_eq!(n, jobs.len() as u64, "every job to backdate must be stored and finished");
    }
}
