//! What a PostgreSQL or pool error means to a caller of the storage traits.

use crate::storage::StoreError;

impl From<tokio_postgres::Error> for StoreError {
    /// A constraint the data broke (class 23: unique, foreign key, check, not null) is a
    /// `Conflict`; everything else (connection lost, server shutting down, timeouts)
    /// means the database cannot be used right now: `Unavailable`.
    fn from(e: tokio_postgres::Error) -> Self {
        let message = describe(&e);
        match e.code() {
            Some(code) if code.code().starts_with("23") => StoreError::Conflict(message),
            _ => StoreError::Unavailable(message),
        }
    }
}

/// The server's own message (with its SQLSTATE), or the error with its causes, on one line:
/// "role \"x\" does not exist (28000)", "error connecting to server: Connection refused".
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A pool error on one line, the database's own words when it said something.
pub(super) fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("no database connection: {}", describe_pool(&other))),
        }
    }
}

/// A GitHub id or number as PostgreSQL's BIGINT; refused, not wrapped, past its range.
pub(super) fn to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Conflict(format!("{value} does not fit a BIGINT")))
}

/// A BIGINT read back as a GitHub id or number.
pub(super) fn from_db(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Unavailable(format!("stored id {value} is negative")))
}
