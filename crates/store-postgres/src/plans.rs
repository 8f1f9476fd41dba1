//! Pins the plan of the hottest query: a claim reads one queue's ready steps in the order
//! of the partial index `steps_ready`, without sorting the backlog, however many finished
//! steps the table holds. Test only; needs `ROTA_TEST_POSTGRES_URL`.

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::{PgOptions, PgStore};
    use rota_testkit::postgres::TestDb;

    #[tokio::test]
    async fn a_claim_reads_the_ready_index_in_order() {
        let Some(db) = TestDb::create().await else { return };
        drop(PgStore::connect(&db.url, PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap());
        let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
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
}
