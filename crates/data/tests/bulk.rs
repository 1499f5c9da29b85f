//! The bulk loaders' statements against a migrated shard: a migration that
//! renames a column, or adds one a row cannot do without, fails here first.

use data::bulk;
use tokio_postgres::NoTls;

#[tokio::test]
async fn every_bulk_statement_runs_against_the_schema() {
    let pg = testkit::postgres();
    let url = pg.url(&pg.create_database(None).await);
    data::migrate(std::slice::from_ref(&url)).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    // A fresh shard as its superuser: no bucket ever left it, triggers may be skipped.
    client.batch_execute(&format!("BEGIN; {}", bulk::LOCK_MOVES_SQL)).await.unwrap();
    let skip: bool = client.query_one(bulk::MAY_SKIP_TRIGGERS_SQL, &[]).await.unwrap().get(0);
    assert!(skip);
    client.batch_execute(&format!("{}; COMMIT", bulk::SKIP_TRIGGERS_SQL)).await.unwrap();
    client
        .batch_execute("INSERT INTO bucket_moves (bucket, move_id, gone) VALUES (1, 1, true)")
        .await
        .unwrap();
    let skip: bool = client.query_one(bulk::MAY_SKIP_TRIGGERS_SQL, &[]).await.unwrap().get(0);
    assert!(!skip, "once a bucket left the shard, its fence must stay in force");
    client.batch_execute("DELETE FROM bucket_moves").await.unwrap();
    for table in bulk::ALL {
        let sink = client
            .copy_in::<_, &'static [u8]>(table.copy_sql())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", table.copy_sql()));
        let mut sink = std::pin::pin!(sink);
        assert_eq!(sink.as_mut().finish().await.unwrap(), 0, "{}: zero rows copied", table.name());

        let required: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                   AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
                &[&table.name()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!required.is_empty(), "{} exists", table.name());
        let written: Vec<&str> = table.columns().split(',').map(str::trim).collect();
        for column in &required {
            assert!(
                written.contains(&column.as_str()),
                "{}: {column} has no default and is not written",
                table.name()
            );
        }
    }
    drop(client);
    let _ = conn.await;
}

#[tokio::test]
async fn the_name_check_finds_a_taken_name_and_only_that() {
    let pg = testkit::postgres();
    let url = pg.url(&pg.create_database(None).await);
    data::migrate(std::slice::from_ref(&url)).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let taken = |names: Vec<&'static str>| {
        let client = &client;
        async move {
            let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
            client
                .query_opt(bulk::USERNAME_TAKEN_SQL, &[&names])
                .await
                .unwrap()
                .map(|r| r.get::<_, String>(0))
        }
    };
    assert_eq!(taken(vec!["user0", "user1"]).await, None, "an empty shard has no name");
    client
        .execute(
            "INSERT INTO users (user_id, username, display_name, password_hash) VALUES (1, 'user1', 'x', 'h')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(taken(vec!["user0", "user1"]).await.as_deref(), Some("user1"));
    assert_eq!(taken(vec!["user0", "user2"]).await, None, "other names are free");
    assert_eq!(taken(vec![]).await, None);
    drop(client);
    let _ = conn.await;
}
