//! Picks the database behind the `Queue` and `Registry` traits from the configuration.

use std::sync::Arc;

use anyhow::bail;

use crate::config::{Config, DatabaseUrl};
use crate::storage::copy::CopyStore;
use crate::storage::queue::Queue;
use crate::storage::registry::Registry;
use crate::storage::sqlite::copy::SqliteCopyStore;
use crate::storage::sqlite::queue::SqliteQueue;
use crate::storage::sqlite::registry::SqliteRegistry;
use crate::storage::sqlite::{SqliteDb, SqliteOptions};

/// Whether the database is opened by the long-running daemon or a one-shot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Daemon,
    Command,
}

pub struct Backend {
    pub queue: Arc<dyn Queue>,
    pub registry: Arc<dyn Registry>,
    pub copy: Arc<dyn CopyStore>,
    sqlite: Option<Arc<SqliteDb>>,
}

impl Backend {
    /// Opens (and migrates) the database `config` names.
    pub async fn open(config: &Config, purpose: Purpose) -> anyhow::Result<Self> {
        match &config.database {
            DatabaseUrl::Sqlite(path) => {
                let db = Arc::new(SqliteDb::open(
                    path,
                    SqliteOptions {
                        synchronous: config.sqlite.synchronous,
                        background_checkpoints: purpose == Purpose::Daemon,
                        max_database_bytes: config.sqlite.max_database_bytes,
                    },
                )?);
                Ok(Self {
                    queue: Arc::new(SqliteQueue::new(db.clone())),
                    registry: Arc::new(SqliteRegistry::new(db.clone())),
                    copy: Arc::new(SqliteCopyStore::new(db.clone())),
                    sqlite: Some(db),
                })
            }
            DatabaseUrl::Postgres(_) => {
                bail!("PostgreSQL is not supported by this build yet; use the embedded SQLite default (omit --database-url)")
            }
        }
    }

    /// Flushes pending writes and closes the database.
    pub fn close(&self) {
        if let Some(db) = &self.sqlite {
            db.close();
        }
    }
}
