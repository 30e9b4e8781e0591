//! PostgreSQL: a pool of connections (deadpool-postgres over tokio-postgres), migrations
//! under an advisory lock, and the backend's implementations of the storage traits. No
//! state lives in the process: several processes may share the database.

pub mod copy;
mod error;
mod migrations;
pub mod queue;
pub mod registry;

use std::str::FromStr;

use anyhow::{bail, Context};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::storage::StoreResult;
use migrations::MIGRATIONS;

/// Any fixed number: the key of the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x6675_7475_726e_616c;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema to keep the tables in (created when missing); `None`: the server's
    /// default search path (usually `public`).
    pub schema: Option<String>,
    pub pool_size: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self { schema: None, pool_size: 16 }
    }
}

/// The database of this process, shared by its queue, registry and store.
pub struct PgDb {
    pool: Pool,
}

impl PgDb {
    /// Connects, creates the schema when asked for one, and brings the tables up to date.
    /// A wrong password, an unknown database or an unreachable server is one clear error.
    pub async fn open(url: &str, options: PostgresOptions) -> anyhow::Result<Self> {
        let config = connect_config(url, options.schema.as_deref())?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .build()
            .context("failed to set up the PostgreSQL connection pool")?;
        let db = Self { pool };
        let mut client = db.pool.get().await.map_err(|e| {
            let (url, why) = (crate::config::redact_url(url), error::describe_pool(&e));
            anyhow::anyhow!("cannot connect to PostgreSQL at {url}: {why}")
        })?;
        if let Some(schema) = &options.schema {
            client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
        }
        migrate(&mut client).await?;
        Ok(db)
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Closes the pool: new requests for a connection fail, open ones end when returned.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// The connection settings of `url`, with the tables' schema (when one is configured) as
/// the search path.
fn connect_config(url: &str, schema: Option<&str>) -> anyhow::Result<tokio_postgres::Config> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| anyhow::anyhow!("the PostgreSQL URL is not valid: {e}"))?;
    if let Some(schema) = schema {
        if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || schema.is_empty() {
            bail!("the PostgreSQL schema '{schema}' must be letters, digits and underscores");
        }
        config.options(format!("-c search_path={schema}"));
    }
    config.application_name("futurnal");
    Ok(config)
}

/// One connection of its own, outside any pool (`db migrate` holds it for one long
/// transaction), with the same settings as the pool's.
pub(crate) async fn connect(url: &str, schema: Option<&str>) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = connect_config(url, schema)?.connect(NoTls).await.map_err(|e| {
        let (url, why) = (crate::config::redact_url(url), error::describe(&e));
        anyhow::anyhow!("cannot connect to PostgreSQL at {url}: {why}")
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %error::describe(&e), "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// The server's own message for a failed statement, on one line (no URL, no password).
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    error::describe(e)
}

async fn migrate(client: &mut deadpool_postgres::Object) -> anyhow::Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.context("failed to lock for migrations")?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS futurnal_schema (version INTEGER PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await?;
        let applied: i32 = client.query_one("SELECT COALESCE(MAX(version), 0) FROM futurnal_schema", &[]).await?.get(0);
        let known = MIGRATIONS.len() as i32;
        if applied > known {
            bail!(
                "the database's schema is version {applied}, newer than this futurnal knows ({known}): \
                 upgrade futurnal, or point it at another database"
            );
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let version = index as i32 + 1;
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await.with_context(|| format!("migration {version} failed"))?;
            tx.execute("INSERT INTO futurnal_schema (version) VALUES ($1)", &[&version]).await?;
            tx.commit().await?;
        }
        Ok(())
    }
    .await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result?;
    unlocked.context("failed to unlock after migrations")?;
    Ok(())
}
