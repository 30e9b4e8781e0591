//! PostgreSQL: a pool of connections (deadpool-postgres over tokio-postgres), migrations
//! under an advisory lock, and the backend's implementations of the storage traits. No
//! state lives in the process: several processes may share the database.

pub mod cluster;
pub mod copy;
mod entities;
mod error;
mod migrations;
pub mod queue;
pub mod registry;
pub mod secrets;
pub mod tls;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::storage::{StoreError, StoreResult};
use migrations::MIGRATIONS;

/// How long one attempt to connect may take (unless the URL says `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a connection when all are busy.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// After a failed connection attempt, callers are told "unavailable" at once for this
/// long, doubling with each failure up to `MAX_BACKOFF`; then one tries again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The database's clock in milliseconds since the epoch (the transaction's start): every
/// lease, retry and heartbeat time is read and written by it, never by a host's clock.
pub(crate) const NOW_MS: &str = "(extract(epoch FROM now()) * 1000)::BIGINT";

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

/// Why the work listener wakes the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// It listens (again): hints sent meanwhile were missed, so look now.
    Listening,
    /// Another instance (or this one) said work is ready.
    Hint,
}

/// What the work listener calls to wake the workers.
pub type WakeFn = Arc<dyn Fn(Wake) + Send + Sync>;

/// The database of this process, shared by its queue, registry and store.
pub struct PgDb {
    pool: Pool,
    backoff: Mutex<Backoff>,
    /// For connections of their own (the work listener), with the pool's settings.
    config: tokio_postgres::Config,
    connector: MakeRustlsConnect,
    /// Where "work is ready" hints go: one channel per schema, so instances of other
    /// schemas in the same database are not woken.
    pub(crate) work_channel: String,
    /// Where "the shared hook secrets changed" goes (see `secrets`).
    pub(crate) secrets_channel: String,
    /// Where "changes were committed" goes: sent by the transaction that appends them,
    /// so PostgreSQL delivers it at that commit (see `copy::append_changes`).
    pub(crate) changes_channel: String,
    /// This process's feed followers: bumped when the listener hears `changes_channel`.
    pub(crate) changes: Arc<crate::storage::changes::ChangeSignal>,
}

/// What the listener listens to: a channel, and what it calls on a notification there
/// (and with [`Wake::Listening`] whenever it starts listening again).
pub type Listen = Vec<(String, WakeFn)>;

/// Why a listening session ended, and whether it had been listening.
struct SessionEnd {
    why: String,
    listened: bool,
}

/// Whether the server answered the last attempt to connect, and if not, until when
/// callers get "unavailable" without another attempt: while the server is away, a flood
/// of requests costs no connection attempts, and each gets its 503 at once.
#[derive(Debug, Default)]
struct Backoff {
    /// The last failure: why, the wait before the next attempt, and when that ends.
    failing: Option<(String, Duration, Instant)>,
}

impl PgDb {
    /// Connects, creates the schema when asked for one, and brings the tables up to date.
    /// A wrong password, an unknown database or an unreachable server is one clear error.
    pub async fn open(url: &str, options: PostgresOptions) -> anyhow::Result<Self> {
        let (config, connector) = connect_config(url, options.schema.as_deref())?;
        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("failed to set up the PostgreSQL connection pool")?;
        let channel = |what: &str| match &options.schema {
            Some(schema) => format!("futurnal_{what}_{schema}"),
            None => format!("futurnal_{what}"),
        };
        let (work_channel, secrets_channel, changes_channel) =
            (channel("work"), channel("secrets"), channel("changes"));
        let db = Self {
            pool,
            backoff: Mutex::default(),
            config,
            connector,
            work_channel,
            secrets_channel,
            changes_channel,
            changes: Arc::default(),
        };
        let mut client = db.pool.get().await.map_err(|e| {
            let (url, why) = (crate::config::redact_url(url), error::describe_pool(&e));
            anyhow::anyhow!("cannot connect to PostgreSQL at {url}: {why}")
        })?;
        migrate(&mut client, options.schema.as_deref()).await?;
        Ok(db)
    }

    /// A connection from the pool. While the server is away (the last attempt to
    /// connect failed and its backoff has not ended), "unavailable" at once.
    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        if let Some((why, _, until)) = &self.backoff_state().failing {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL is unreachable ({why}); trying again in {} ms",
                    left.as_millis().max(1)
                )));
            }
        }
        match self.pool.get().await {
            Ok(client) => {
                let mut backoff = self.backoff_state();
                if backoff.failing.take().is_some() {
                    tracing::info!("PostgreSQL is reachable again");
                }
                Ok(client)
            }
            Err(e) => {
                let connecting = matches!(
                    e,
                    deadpool_postgres::PoolError::Backend(_)
                        | deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Create)
                );
                if connecting {
                    let why = error::describe_pool(&e);
                    let mut backoff = self.backoff_state();
                    let wait = match &backoff.failing {
                        Some((_, wait, _)) => (*wait * 2).min(MAX_BACKOFF),
                        None => {
                            tracing::error!(error = %why, "PostgreSQL is unreachable; answering 503 until it is back");
                            FIRST_BACKOFF
                        }
                    };
                    backoff.failing = Some((why, wait, Instant::now() + wait));
                }
                Err(e.into())
            }
        }
    }

    fn backoff_state(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes this process's idle workers whenever another process (or this one) says work
    /// is ready (`NOTIFY` on the schema's channel), and its receiver when the shared
    /// secrets changed, until `shutdown`: each of `channels` calls its own function. Only
    /// a hint: the workers also look every second, the receiver every few. The listening connection is its own; when it
    /// drops, it is opened again (with backoff), and the workers look at once, since a
    /// hint may have been missed meanwhile. The backoff and the log's one line in ten
    /// are for attempts that keep failing: after a session that listened, they start
    /// afresh (else every later drop, however rare, would wait the longest pause unlogged).
    pub async fn listen(&self, channels: Listen, shutdown: CancellationToken) {
        let mut pause = FIRST_BACKOFF;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.listen_once(&channels, &shutdown).await {
                Ok(()) => return,
                Err(ended) => {
                    if ended.listened {
                        pause = FIRST_BACKOFF;
                        failures = 0;
                    }
                    if failures.is_multiple_of(10) {
                        tracing::warn!(error = %ended.why, "The listener lost its connection; opening it again");
                    }
                    failures += 1;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// [`PgDb::listen`] to the work channel alone.
    pub async fn listen_for_work(&self, wake: WakeFn, shutdown: CancellationToken) {
        self.listen(vec![(self.work_channel.clone(), wake)], shutdown).await
    }

    /// One listening session: `Ok` at shutdown, what ended it otherwise.
    async fn listen_once(&self, channels: &Listen, shutdown: &CancellationToken) -> Result<(), SessionEnd> {
        let failed = |why: String| SessionEnd { why, listened: false };
        let (client, mut connection) =
            self.config.connect(self.connector.clone()).await.map_err(|e| failed(error::describe(&e)))?;
        let (hints, mut hinted) = tokio::sync::mpsc::unbounded_channel();
        let mut driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        let _ = hints.send(n.channel().to_owned());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        let statements: String =
            channels.iter().map(|(channel, _)| format!("LISTEN \"{}\";", channel.replace('"', "\"\""))).collect();
        let listening = client.batch_execute(&statements).await;
        if let Err(e) = listening {
            driver.abort();
            return Err(failed(error::describe(&e)));
        }
        // Hints may have been missed while this connection was being opened.
        for (_, wake) in channels {
            wake(Wake::Listening);
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    driver.abort();
                    return Ok(());
                }
                Some(channel) = hinted.recv() => {
                    for (_, wake) in channels.iter().filter(|(c, _)| *c == channel) {
                        wake(Wake::Hint);
                    }
                }
                ended = &mut driver => {
                    let why = match ended {
                        Ok(Err(e)) => error::describe(&e),
                        _ => "the connection was closed".to_owned(),
                    };
                    return Err(SessionEnd { why, listened: true });
                }
            }
        }
    }

    /// Says work is ready to every listening instance (and this one). Only a hint;
    /// failures are not worth more than a debug line.
    pub async fn hint_work(&self) {
        let Ok(client) = self.client().await else { return };
        if let Err(e) = client.execute("SELECT pg_notify($1, '')", &[&self.work_channel]).await {
            tracing::debug!(error = %e, "Could not announce new work");
        }
    }

    /// Closes the pool: new requests for a connection fail, open ones end when returned.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Asks the kernel to start writing back every 256 kB a session writes (PostgreSQL's
/// `backend_flush_after`, off by default).
const BACKEND_FLUSH_AFTER: &str = "-c backend_flush_after=256kB";

/// The connection settings of `url` and its TLS connector (`sslmode`, `sslrootcert`:
/// see `tls`), with the tables' schema (when one is configured) as the search path.
fn connect_config(url: &str, schema: Option<&str>) -> anyhow::Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let invalid = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("the PostgreSQL URL {} is not valid: {e}", crate::config::redact_url(url))
    };
    let (driver_url, tls) = tls::split_url(url).map_err(|e| invalid(&e))?;
    let mut config = tokio_postgres::Config::from_str(&driver_url).map_err(|e| invalid(&e))?;
    config.ssl_mode(tls.driver_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A server that vanished without closing the connection (host down, network cut)
    // is noticed within about a minute, not after the kernel's two hours.
    config.keepalives_idle(Duration::from_secs(30));
    // Session settings, added to the URL's own `options` (server settings such as
    // `-c statement_timeout=…`), which win where they name the same one.
    let given = config.get_options().unwrap_or_default().trim().to_owned();
    let mut options = Vec::new();
    if !given.contains("backend_flush_after") {
        // The queue appends tens of megabytes a second. Without this, the kernel holds
        // what the sessions write back for up to 30 s (hundreds of megabytes here), and
        // the checkpoint's fsync of it stalls every commit behind it for 100-250 ms;
        // asking for write-back every 256 kB keeps that fsync, and the stall, small
        // (see ARCHITECTURE.md). A user setting, no privilege needed.
        options.push(BACKEND_FLUSH_AFTER.to_owned());
    }
    if !given.is_empty() {
        options.push(given);
    }
    if let Some(schema) = schema {
        if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || schema.is_empty() {
            bail!("the PostgreSQL schema '{schema}' must be letters, digits and underscores");
        }
        options.push(format!("-c search_path={schema}"));
    }
    config.options(options.join(" "));
    if config.get_application_name().is_none() {
        config.application_name("futurnal");
    }
    Ok((config, tls.connector()?))
}

/// One connection of its own, outside any pool (`db migrate` holds it for one long
/// transaction), with the same settings as the pool's.
pub(crate) async fn connect(url: &str, schema: Option<&str>) -> anyhow::Result<tokio_postgres::Client> {
    let (config, connector) = connect_config(url, schema)?;
    let (client, connection) = config.connect(connector).await.map_err(|e| {
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

/// Creates the schema (when one is configured) and brings its tables up to date, under
/// one advisory lock: instances started at the same moment on a new schema take turns
/// (`CREATE SCHEMA IF NOT EXISTS` alone is not safe against a concurrent one).
async fn migrate(client: &mut deadpool_postgres::Object, schema: Option<&str>) -> anyhow::Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.context("failed to lock for migrations")?;
    let result = async {
        if let Some(schema) = schema {
            client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
        }
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

#[cfg(test)]
mod tests {
    use super::connect_config;

    #[test]
    fn the_schema_joins_the_urls_own_server_options() {
        let url = "postgres://u@127.0.0.1/db?sslmode=disable&options=-c%20statement_timeout%3D5000";
        let (config, _) = connect_config(url, Some("futurnal")).unwrap();
        let flush = "-c backend_flush_after=256kB";
        assert_eq!(config.get_options(), Some(&*format!("{flush} -c statement_timeout=5000 -c search_path=futurnal")));
        let (config, _) = connect_config("postgres://u@127.0.0.1/db?sslmode=disable", Some("s1")).unwrap();
        assert_eq!(config.get_options(), Some(&*format!("{flush} -c search_path=s1")));
        let (config, _) = connect_config(url, None).unwrap();
        assert_eq!(config.get_options(), Some(&*format!("{flush} -c statement_timeout=5000")));
        // The user's own value wins.
        let mine = "postgres://u@127.0.0.1/db?options=-c%20backend_flush_after%3D0";
        let (config, _) = connect_config(mine, None).unwrap();
        assert_eq!(config.get_options(), Some("-c backend_flush_after=0"));
    }
}
