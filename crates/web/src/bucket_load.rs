//! `GET /internal/bucket-load`: the queries this server sent about each bucket's
//! rows since it started, reads and writes apart ([`data::Data::bucket_load`]),
//! as `{"buckets": [[bucket, reads, writes], ...]}` ([`data::BucketLoadReport`]).
//! The controller samples every web server and worker twice and weighs each
//! bucket by the difference (`millions shard rebalance --by load`).

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::state::AppState;

/// `GET /internal/bucket-load` (internal: `lb::rules::INTERNAL_PATHS` holds
/// `/internal`, so no load balancer forwards it from its public entry; `lb`'s
/// `tests/internal.rs` tries it through every public listener).
pub fn routes() -> Router<AppState> {
    Router::new().route("/internal/bucket-load", get(bucket_load))
}

/// Every bucket with a nonzero count, in bucket order.
async fn bucket_load(State(state): State<AppState>) -> axum::Json<data::BucketLoadReport> {
    axum::Json(data::BucketLoadReport { buckets: state.data().bucket_load() })
}
