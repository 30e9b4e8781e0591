//! Picks the database behind the storage traits from the configuration: the embedded
//! SQLite file, or PostgreSQL.

use std::sync::Arc;

use crate::config::{Config, DatabaseUrl};
use crate::storage::cluster::{Cluster, SingleInstance};
use crate::storage::copy::CopyStore;
use crate::storage::postgres::cluster::PgCluster;
use crate::storage::postgres::copy::PgCopyStore;
use crate::storage::postgres::queue::PgQueue;
use crate::storage::postgres::registry::PgRegistry;
use crate::storage::postgres::{PgDb, PostgresOptions};
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
    pub cluster: Arc<dyn Cluster>,
    pub queue: Arc<dyn Queue>,
    pub registry: Arc<dyn Registry>,
    pub copy: Arc<dyn CopyStore>,
    sqlite: Option<Arc<SqliteDb>>,
    postgres: Option<Arc<PgDb>>,
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
                    cluster: Arc::new(SingleInstance::new()),
                    queue: Arc::new(SqliteQueue::new(db.clone())),
                    registry: Arc::new(SqliteRegistry::new(db.clone())),
                    copy: Arc::new(SqliteCopyStore::new(db.clone())),
                    sqlite: Some(db),
                    postgres: None,
                })
            }
            DatabaseUrl::Postgres(url) => {
                // A one-shot command needs few connections; the daemon the configured pool.
                let pool_size = match purpose {
                    Purpose::Daemon => config.postgres.pool_size,
                    Purpose::Command => config.postgres.pool_size.min(4),
                };
                let options = PostgresOptions { schema: config.postgres.schema.clone(), pool_size };
                let db = Arc::new(PgDb::open(url, options).await?);
                Ok(Self {
                    cluster: Arc::new(PgCluster::new(db.clone())),
                    queue: Arc::new(PgQueue::new(db.clone()).with_effect_audit(config.workers.test_effect_audit)),
                    registry: Arc::new(PgRegistry::new(db.clone())),
                    copy: Arc::new(PgCopyStore::new(db.clone())),
                    sqlite: None,
                    postgres: Some(db),
                })
            }
        }
    }

    /// What wakes this process's workers when another process enqueues work: PostgreSQL's
    /// LISTEN/NOTIFY (a hint; the workers also poll). `None` for SQLite, where only this
    /// process enqueues and tells its workers itself.
    pub fn work_listener(
        &self,
        wake: Arc<tokio::sync::Notify>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<crate::storage::BoxFuture<'static, ()>> {
        let db = self.postgres.clone()?;
        let wake: crate::storage::postgres::WakeFn = Arc::new(move |_| wake.notify_one());
        Some(Box::pin(async move { db.listen_for_work(wake, shutdown).await }))
    }

    /// Flushes pending writes and closes the database.
    pub fn close(&self) {
        if let Some(db) = &self.sqlite {
            db.close();
        }
        if let Some(db) = &self.postgres {
            db.close();
        }
    }
}
