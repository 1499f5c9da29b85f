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
    for table in bulk::ALL {
        let sink = client
            .copy_in::<_, &'static [u8]>(table.copy_sql())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", table.copy_sql()));
        let mut sink = std::pin::pin!(sink);
        assert_eq!(sink.as_mut().finish().await.unwrap(), 0, "{}: zero rows copied", table.name());
        let any: bool = client.query_one(table.any_row_sql(), &[]).await.unwrap().get(0);
        assert!(!any, "{} is empty after migrating", table.name());

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
async fn the_emptiness_check_sees_a_table_the_seed_does_not_write() {
    let pg = testkit::postgres();
    let url = pg.url(&pg.create_database(None).await);
    data::migrate(std::slice::from_ref(&url)).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.execute("INSERT INTO likes (post_id, user_id, liker_id) VALUES (1, 2, 3)", &[]).await.unwrap();
    let any: bool = client.query_one(bulk::LIKES.any_row_sql(), &[]).await.unwrap().get(0);
    assert!(any);
    drop(client);
    let _ = conn.await;
}
