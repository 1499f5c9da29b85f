//! The data layer's one error type.

use sharding::ShardId;

/// Why a data operation failed.
///
/// [`DataError::is_retryable`] tells a caller whether the same call may succeed
/// later (a shard restarting, a pool exhausted) or never will (a conflict).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The row the operation is about does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (for example a username already taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// No connection to the shard could be had in time.
    #[error("{shard} is unavailable: {source}")]
    Unavailable {
        /// The shard that could not be reached.
        shard: ShardId,
        /// What the pool said.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// The shard has no primary right now (a failover is in progress).
    #[error("{shard} has no primary (failover in progress)")]
    NoPrimary {
        /// The shard.
        shard: ShardId,
    },
    /// The database answered with an error.
    #[error("{shard}: {}", describe(source))]
    Db {
        /// The shard that answered.
        shard: ShardId,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Migrating a shard's schema failed.
    #[error("migrating {shard}: {message}")]
    Migration {
        /// The shard being migrated.
        shard: ShardId,
        /// What went wrong.
        message: String,
    },
}

/// The driver's error with the server's message and SQLSTATE, which its own
/// `Display` leaves out.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}: {})", e, db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

impl DataError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            DataError::NotFound | DataError::Conflict(_) | DataError::Migration { .. } => false,
            DataError::Unavailable { .. } | DataError::NoPrimary { .. } => true,
            DataError::Db { source, .. } => match source.code() {
                None => true, // connection-level: closed, reset, timed out
                Some(code) => {
                    code.code() == crate::moves::FENCED_SQLSTATE
                        || code == &SqlState::T_R_SERIALIZATION_FAILURE
                        || code == &SqlState::T_R_DEADLOCK_DETECTED
                        || code == &SqlState::ADMIN_SHUTDOWN
                        || code == &SqlState::CANNOT_CONNECT_NOW
                        || code == &SqlState::READ_ONLY_SQL_TRANSACTION
                        || code == &SqlState::TOO_MANY_CONNECTIONS
                }
            },
        }
    }

    /// Whether this failure suggests the shard's primary moved: it is
    /// unreachable, has no primary, or refuses writes as a standby.
    pub(crate) fn suggests_failover(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            DataError::Unavailable { .. } | DataError::NoPrimary { .. } => true,
            DataError::Db { source, .. } => match source.code() {
                None => true,
                Some(code) => {
                    code == &SqlState::READ_ONLY_SQL_TRANSACTION
                        || code == &SqlState::ADMIN_SHUTDOWN
                        || code == &SqlState::CANNOT_CONNECT_NOW
                }
            },
            _ => false,
        }
    }

    /// Whether the write was refused because its bucket is being moved to
    /// another shard (the move's cutover): nothing was changed, and the write
    /// succeeds on the bucket's new owner.
    pub fn is_fenced(&self) -> bool {
        matches!(self, DataError::Db { source, .. }
            if source.code().map(|c| c.code()) == Some(crate::moves::FENCED_SQLSTATE))
    }

    pub(crate) fn db(shard: ShardId) -> impl FnOnce(tokio_postgres::Error) -> DataError {
        move |source| DataError::Db { shard, source }
    }
}

/// How a write's statements failed, before the write path names the shard they
/// ran on: the statements use `?` on the driver's errors and return the data
/// layer's own ([`DataError::NotFound`], [`DataError::Conflict`]) as they are.
#[derive(Debug)]
pub(crate) enum QueryError {
    /// The driver's error; becomes [`DataError::Db`] of the shard.
    Db(tokio_postgres::Error),
    /// Already the data layer's error.
    Data(DataError),
}

impl QueryError {
    /// The error as callers see it, `shard` being where the statements ran.
    pub(crate) fn on(self, shard: ShardId) -> DataError {
        match self {
            QueryError::Db(source) => DataError::Db { shard, source },
            QueryError::Data(e) => e,
        }
    }

    /// Whether a unique constraint refused the statement.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, QueryError::Db(source)
            if source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> QueryError {
        QueryError::Db(e)
    }
}

impl From<DataError> for QueryError {
    fn from(e: DataError) -> QueryError {
        QueryError::Data(e)
    }
}
