//! Migrations: every shard's schema, embedded from `migrations/` and applied
//! under an advisory lock.

use sharding::ShardId;
use tokio_postgres::NoTls;

use crate::error::DataError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Bring every shard's schema to the newest version.
///
/// Safe to run from several processes at once: each shard migrates under an
/// advisory lock.
pub async fn migrate(shard_urls: &[String]) -> Result<(), DataError> {
    const LOCK_KEY: i64 = 0x6d69_6c6c_696f_6e73; // "millions"
    for (i, url) in shard_urls.iter().enumerate() {
        let shard = ShardId(i as u16);
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(DataError::db(shard))?;
        let conn = tokio::spawn(conn);
        client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(DataError::db(shard))?;
        let result = embedded::migrations::runner().run_async(&mut client).await;
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
        drop(client);
        let _ = conn.await;
        result.map_err(|e| DataError::Migration { shard, message: with_causes(&e) })?;
    }
    Ok(())
}

/// `e` and every error that caused it, outermost first (the runner's own message
/// says only "db error"; PostgreSQL's says why).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
