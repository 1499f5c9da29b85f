//! The bottom of the queries: running a prepared statement and passing a
//! duration as a parameter, shared by the write path and every entity module
//! (`users`, `follows`, `likes`, `posts`, `jobs`), so that none of them imports
//! from another. A row's shape stays with its entity (`USER_COLUMNS` in `users`,
//! `POST_COLUMNS` in `posts`).

use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

/// A statement's parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// `sql` (prepared once per connection) with `params`: at most one row.
pub(crate) async fn opt_row(
    c: &ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

/// `sql` (prepared once per connection) with `params`: every row.
pub(crate) async fn rows(
    c: &ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

/// `d` as the milliseconds a statement multiplies by `interval '1 millisecond'`.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
