//! Storage plumbing shared by the queue and the store: the error type, the boxed future
//! the backend traits return, and the SQLite connection machinery.

pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

/// What the backend traits return, so that they stay object-safe (`Arc<dyn Queue>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors a caller of the queue or the store can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be read or written (disk full, read-only, locked, gone).
    /// The receiver answers 503 for these; nothing was acknowledged.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
