//! Pins the plans of the hottest queries: a claim reads one queue's ready steps in the order
//! of the partial index `steps_ready`, without sorting the backlog, however many finished
//! steps the table holds; a completion batch reads its jobs and their steps by index, also
//! on tables never analyzed (a server with autovacuum off). Test only; needs
//! `ROTA_TEST_POSTGRES_URL`.

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::{PgOptions, PgStore};
    use rota_testkit::postgres::TestDb;

    /// A plain connection to `db` once the store's migrations made its schema.
    async fn migrated(db: &TestDb) -> tokio_postgres::Client {
        drop(PgStore::connect(&db.url, PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap());
        let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn a_claim_reads_the_ready_index_in_order() {
        let Some(db) = TestDb::create().await else { return };
        let client = migrated(&db).await;
        // 20 000 jobs over three queues, half of them finished, half with a ready step: a
        // backlog the planner must not sort for every claim.
        client
            .batch_execute(
                "INSERT INTO jobs SELECT gen_random_uuid(), NULL, 'q' || (i % 3), 0, NULL, '{}', NULL, NULL, \
                 '{}'::jsonb, CASE WHEN i % 2 = 0 THEN 'queued' ELSE 'succeeded' END, NULL, now(), NULL \
                 FROM generate_series(1, 20000) i;
                 INSERT INTO steps SELECT id, 0, 's', CASE WHEN state = 'queued' THEN 'ready' ELSE 'succeeded' END, \
                 NULL, NULL, 0, NULL, queue, 0, NULL, '{}' FROM jobs;
                 ANALYZE;",
            )
            .await
            .unwrap();
        client.batch_execute(&format!("PREPARE candidates AS {}", crate::claim::CANDIDATES)).await.unwrap();
        let plan: Vec<String> = client
            .query("EXPLAIN EXECUTE candidates(now(), 'q0', 'h', 'w', 4, 0, 'default')", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("steps_ready"), "{plan}");
        assert!(!plan.contains("Sort"), "the backlog is never sorted:\n{plan}");
    }

    /// Plans of a prepared statement for 8 of the table's attempts, custom and generic.
    async fn plans_of(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
        client.batch_execute("DEALLOCATE ALL").await.unwrap();
        client.batch_execute(&format!("PREPARE q(int8[]) AS {sql}")).await.unwrap();
        let ids: Vec<i64> = client
            .query("SELECT id FROM attempts ORDER BY id DESC LIMIT 8", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let literal = format!("'{{{}}}'", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        let mut out = Vec::new();
        for mode in ["force_custom_plan", "force_generic_plan"] {
            client.batch_execute(&format!("SET plan_cache_mode = {mode}")).await.unwrap();
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN EXECUTE q({literal})"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            out.push(format!("{mode}:\n{}", plan.join("\n")));
        }
        out
    }

    #[tokio::test]
    async fn a_completion_reads_its_jobs_and_steps_by_index_also_unanalyzed() {
        let Some(db) = TestDb::create().await else { return };
        let client = migrated(&db).await;
        // 50 000 finished jobs with one step and one attempt each, and no ANALYZE: what a
        // server with autovacuum off (CI's) holds after a capacity run. The planner then
        // guesses the tables' sizes from their pages; a semi-join read every step.
        client
            .batch_execute(
                "INSERT INTO jobs SELECT gen_random_uuid(), NULL, 'q', 0, NULL, '{}', NULL, NULL, \
                 '{}'::jsonb, 'succeeded', NULL, now(), NULL FROM generate_series(1, 50000) i;
                 INSERT INTO steps SELECT id, 0, 's', 'succeeded', NULL, NULL, 1, NULL, queue, 0, NULL, '{}' \
                 FROM jobs;
                 INSERT INTO attempts (job_id, step, number, session, worker_name, status, started_at) \
                 SELECT id, 's', 1, gen_random_uuid(), 'w', 'succeeded', now() FROM jobs;",
            )
            .await
            .unwrap();
        for analyzed in [false, true] {
            if analyzed {
                client.batch_execute("ANALYZE").await.unwrap();
            }
            for (sql, table) in [(crate::complete::LOCK_JOBS, "jobs"), (crate::complete::STEPS, "steps")] {
                for plan in plans_of(&client, sql).await {
                    eprintln!("analyzed: {analyzed}, {plan}");
                    assert!(
                        !plan.contains(&format!("Seq Scan on {table}")),
                        "a completion batch must not read all of {table} (analyzed: {analyzed}):\n{plan}"
                    );
                }
            }
        }
    }
}
