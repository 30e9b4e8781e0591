//! Storage: the traits the rest of the program sees (`Queue`, `Registry`, `CopyStore`),
//! their record types and the rules every backend keeps, with one folder per database
//! beside them (`sqlite/`, `postgres/`), and `migrate.rs`, which copies the first into the
//! second. Nothing outside this module knows which database it talks to.

pub mod backend;
pub mod changes;
pub mod cluster;
pub mod copy;
pub mod entities;
pub mod migrate;
pub mod postgres;
pub mod queue;
pub mod registry;
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
    /// A write with a claim that is no longer current: its lease expired and another
    /// worker took the delivery. Nothing was written.
    #[error("lease lost: {0}")]
    LeaseLost(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
