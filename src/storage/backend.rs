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

    /// What wakes this process's workers when another process enqueues work (`work`),
    /// and its receiver when another process changed the shared hook secrets (`secrets`):
    /// PostgreSQL's LISTEN/NOTIFY, one connection for both (hints only; both also poll).
    /// `None` for SQLite, where only this process enqueues and tells its workers itself,
    /// or when neither is asked for.
    pub fn listener(
        &self,
        work: Option<Arc<tokio::sync::Notify>>,
        secrets: Option<crate::storage::postgres::WakeFn>,
        changes: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<crate::storage::BoxFuture<'static, ()>> {
        let db = self.postgres.clone()?;
        let mut channels: crate::storage::postgres::Listen = Vec::new();
        if changes {
            // Committed by any instance (this one too): this process's followers look.
            let signal = db.changes.clone();
            channels.push((db.changes_channel.clone(), Arc::new(move |_| signal.notify())));
        }
        if let Some(work) = work {
            channels.push((db.work_channel.clone(), Arc::new(move |_| work.notify_one())));
        }
        if let Some(secrets) = secrets {
            channels.push((db.secrets_channel.clone(), secrets));
        }
        if channels.is_empty() {
            return None;
        }
        Some(Box::pin(async move { db.listen(channels, shutdown).await }))
    }

    /// The shared hook secrets (sealed), on PostgreSQL.
    /// What this process's feed followers wait on: bumped after this process commits
    /// changes (SQLite), or whenever any instance does (PostgreSQL, once
    /// [`Backend::listener`] runs with `changes`). Followers still look on a timer: other
    /// processes writing the same SQLite file do not bump it.
    pub fn change_signal(&self) -> Arc<crate::storage::changes::ChangeSignal> {
        match (&self.sqlite, &self.postgres) {
            (Some(db), _) => db.change_signal(),
            (_, Some(db)) => db.changes.clone(),
            (None, None) => Arc::default(),
        }
    }

    pub fn shared_secrets(&self) -> Option<crate::storage::postgres::secrets::PgSecrets> {
        self.postgres.clone().map(crate::storage::postgres::secrets::PgSecrets::new)
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
