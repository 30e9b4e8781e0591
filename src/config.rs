//! Configuration: a TOML file, then environment variables, then flags (each layer wins
//! over the one before), resolved once into [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use futurnal_github::WebhookEventType;
use serde::Deserialize;

use crate::cli::{GlobalArgs, Role, ServeArgs};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8766";
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
/// GitHub's own cap on a delivery's size.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The configuration file, every key optional. Unknown keys are an error so that a typo
/// does not silently leave a default in place.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub github_api_url: Option<String>,
    #[serde(default)]
    pub serve: FileServe,
    #[serde(default)]
    pub webhook: FileWebhook,
    #[serde(default)]
    pub queue: FileQueue,
    #[serde(default)]
    pub workers: FileWorkers,
    #[serde(default)]
    pub poll: FilePoll,
    #[serde(default)]
    pub tunnel: FileTunnel,
    #[serde(default)]
    pub sqlite: FileSqlite,
    #[serde(default)]
    pub postgres: FilePostgres,
    #[serde(default)]
    pub changes: FileChanges,
}

/// The change feed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChanges {
    /// Changes older than this are pruned (0: kept for ever); a cursor older than what
    /// is kept is answered 410.
    pub retention_days: Option<u64>,
    /// An idle change stream (SSE) sends a comment this often (default 15), so that
    /// proxies do not close it.
    pub heartbeat_secs: Option<u64>,
}

/// Settings of a PostgreSQL database (`database_url = "postgres://…"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePostgres {
    /// The schema for futurnal's tables (created when missing); default: the server's
    /// search path (usually `public`).
    pub schema: Option<String>,
    /// Connections per process.
    pub pool_size: Option<usize>,
}

/// Settings of the embedded SQLite database (ignored on PostgreSQL).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSqlite {
    pub synchronous: Option<Synchronous>,
    pub max_database_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTunnel {
    /// The ngrok agent's local API (default http://127.0.0.1:4040).
    pub ngrok_api_url: Option<String>,
    /// Seconds between checks of the tunnel's public URL by `serve`.
    pub check_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePoll {
    /// Seconds between polls of a repository without a working webhook.
    pub interval_secs: Option<u64>,
    /// Seconds between reconciles of a repository in webhook mode.
    pub reconcile_secs: Option<u64>,
    /// A repository with a hook stays in webhook mode while a verified delivery or ping
    /// arrived within this many seconds (default: twice the reconcile interval).
    pub webhook_quiet_secs: Option<u64>,
    /// Per repository (`"owner/name" = { interval_secs = 60 }`): its own polling interval.
    #[serde(default)]
    pub repositories: BTreeMap<String, FileRepositoryPoll>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRepositoryPoll {
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServe {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub role: Option<Role>,
    pub shutdown_grace_secs: Option<u64>,
    /// This process's name among the instances sharing a database.
    pub instance: Option<String>,
    /// How long the leader's lease holds without a heartbeat.
    pub leader_lease_secs: Option<u64>,
    /// Required (`Authorization: Bearer …`) on the admin listener; a must when it is not
    /// on loopback.
    pub admin_token: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhook {
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    /// Per-hook secrets, keyed by the hook id GitHub sends in `X-GitHub-Hook-ID`.
    #[serde(default)]
    pub hook_secrets: BTreeMap<String, String>,
    pub events: Option<Vec<String>>,
    /// Where `webhook enable` keeps hook secrets: auto (the OS keychain when there is one,
    /// else a 0600 file), keychain (fail without one), or file.
    pub secret_store: Option<SecretStore>,
    pub verify_signatures: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub unverified_rate_per_sec: Option<u32>,
    pub unverified_burst: Option<u32>,
    /// Let `webhook enable` register loopback URLs (for a local stand-in of GitHub only).
    pub allow_loopback_hook_urls: Option<bool>,
    /// Peers (CIDRs) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Option<Vec<String>>,
    /// `"github"` (GitHub's published hook ranges) or a list of CIDRs: only those may
    /// deliver; the rest get 403 before their body is read.
    pub allow_sources: Option<FileAllowSources>,
    /// Open connections to the webhook listener at most; past it new ones wait.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileAllowSources {
    Named(String),
    Ranges(Vec<String>),
}

/// Who may deliver to the webhook listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowSources {
    /// GitHub's `hooks` ranges from `GET /meta`, fetched at start and daily.
    GitHub,
    Ranges(Vec<ipnet::IpNet>),
}

/// A CIDR (`10.0.0.0/8`) or one address (`192.0.2.7`), for `what` in errors.
pub fn parse_net(text: &str, what: &str) -> anyhow::Result<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| anyhow::anyhow!("{what}: '{text}' is not an address or CIDR range (like 10.0.0.0/8)"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQueue {
    pub max_queued: Option<u64>,
    /// Deprecated spelling of `[sqlite] synchronous`, still read.
    pub synchronous: Option<Synchronous>,
    pub compression: Option<Compression>,
    pub retention_days: Option<u64>,
    /// Deprecated spelling of `[sqlite] max_database_mb`, still read.
    pub max_database_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWorkers {
    pub concurrency: Option<usize>,
    pub batch_per_repository: Option<usize>,
    pub retry_base_ms: Option<u64>,
    pub retry_cap_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    /// How long a claim holds without renewal (renewed every third of it).
    pub lease_secs: Option<u64>,
    /// For fault tests only: each handler waits this long before it starts, so a test
    /// can stop the process while it holds a lease. Never set in production.
    pub test_handler_delay_ms: Option<u64>,
    /// For fault tests only (PostgreSQL): record every stored set of changes in the
    /// `effect_audit` table. Never set in production.
    pub test_effect_audit: Option<bool>,
}

/// SQLite's `synchronous` setting for the queue. `full` (the default) makes an
/// acknowledged delivery survive power loss, not only a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

/// How stored payload bodies are compressed (off the parse path, after verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4,
    None,
}

/// Everything resolved: defaults filled, paths absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    pub github_api_url: String,
    pub json: bool,
    pub webhook: WebhookConfig,
    pub queue: QueueConfig,
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
    pub workers: WorkerConfig,
    pub serve: ServeConfig,
    pub poll: PollConfig,
    pub tunnel: TunnelConfig,
    pub changes: ChangesConfig,
}

#[derive(Debug, Clone)]
pub struct ChangesConfig {
    /// `None`: kept for ever.
    pub retention: Option<Duration>,
    pub heartbeat: Duration,
}

#[derive(Debug, Clone)]
pub struct TunnelConfig {
    pub ngrok_api_url: String,
    pub check: Duration,
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    pub reconcile: Duration,
    /// How long without a verified delivery or ping before webhook mode falls back to polling.
    pub quiet: Duration,
    /// Polling intervals of single repositories, by lower-cased `owner/name`.
    pub per_repository: BTreeMap<String, Duration>,
}

impl PollConfig {
    /// The polling interval of a repository: its own, else the default.
    pub fn interval_for(&self, full_name: &str) -> Duration {
        self.per_repository.get(&full_name.to_lowercase()).copied().unwrap_or(self.interval)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Clone)]
pub struct WebhookConfig {
    /// The global secret from the environment or the file; `None` means "use or create
    /// the generated secret file in the data dir".
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    pub hook_secrets: BTreeMap<u64, String>,
    pub events: Vec<WebhookEventType>,
    pub verify_signatures: bool,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub unverified_rate_per_sec: u32,
    pub unverified_burst: u32,
    pub allow_loopback_hook_urls: bool,
    pub secret_store: SecretStore,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub allow_sources: Option<AllowSources>,
    pub max_connections: usize,
}

// `Debug` by hand for everything that holds a secret or a database URL (which may carry
// a password): a configuration printed in a log or a panic shows no secret.

/// `Some("<redacted>")` for a secret that is set.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// A URL with its password (`scheme://user:password@host`, or a `password=` parameter as
/// PostgreSQL URLs may carry) replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{user}:<redacted>@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let parameters: Vec<&str> = query
                .split('&')
                .map(|p| if p.split('=').next() == Some("password") { "password=<redacted>" } else { p })
                .collect();
            format!("{path}?{}", parameters.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("github_api_url", &self.github_api_url)
            .field("serve", &self.serve)
            .field("webhook", &self.webhook)
            .field("queue", &self.queue)
            .field("workers", &self.workers)
            .field("poll", &self.poll)
            .field("tunnel", &self.tunnel)
            .field("sqlite", &self.sqlite)
            .field("postgres", &self.postgres)
            .field("changes", &self.changes)
            .finish()
    }
}

impl std::fmt::Debug for FileWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWebhook")
            .field("secret", &redacted(&self.secret))
            .field("previous_secret", &redacted(&self.previous_secret))
            .field("hook_secrets", &self.hook_secrets.keys().collect::<Vec<_>>())
            .field("events", &self.events)
            .field("secret_store", &self.secret_store)
            .field("verify_signatures", &self.verify_signatures)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("body_read_timeout_secs", &self.body_read_timeout_secs)
            .field("unverified_rate_per_sec", &self.unverified_rate_per_sec)
            .field("unverified_burst", &self.unverified_burst)
            .field("allow_loopback_hook_urls", &self.allow_loopback_hook_urls)
            .finish()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &redacted(&self.secret))
            .field("previous_secret", &redacted(&self.previous_secret))
            .field("hook_secrets", &self.hook_secrets.keys().collect::<Vec<_>>())
            .field("events", &self.events)
            .field("verify_signatures", &self.verify_signatures)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("unverified_rate_per_sec", &self.unverified_rate_per_sec)
            .field("unverified_burst", &self.unverified_burst)
            .field("allow_loopback_hook_urls", &self.allow_loopback_hook_urls)
            .field("secret_store", &self.secret_store)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_sources", &self.allow_sources)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Where hook secrets are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretStore {
    #[default]
    Auto,
    Keychain,
    File,
}

impl std::str::FromStr for SecretStore {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "keychain" => Ok(Self::Keychain),
            "file" => Ok(Self::File),
            other => bail!("'{other}' is not a secret store: use auto, keychain or file"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub max_queued: u64,
    pub compression: Compression,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub schema: Option<String>,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub synchronous: Synchronous,
    /// Refuse writes (503 at the receiver) rather than grow the database past this.
    pub max_database_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub batch_per_repository: usize,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: u32,
    pub lease: Duration,
    pub test_handler_delay: Option<Duration>,
    pub test_effect_audit: bool,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub role: Role,
    pub poll: bool,
    pub shutdown_grace: Duration,
    /// Recorded on every claim (`worker` in `deliveries --json`) and in the instances
    /// list: `--instance`, `FUTURNAL_INSTANCE`, `[serve] instance`, else host:pid.
    pub instance: String,
    /// The singletons move to another instance within about this long of the leader's
    /// last heartbeat.
    pub leader_lease: Duration,
    /// `[serve] admin_token` or `FUTURNAL_ADMIN_TOKEN`.
    pub admin_token: Option<AdminToken>,
}

/// The admin listener's bearer token. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Raises this process's soft limit of open files to its hard limit (many idle
/// connections are normal for a receiver); a failure only means the lower limit holds.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum.map(|m| m.min(1 << 20)) {
        if limit.current.is_some_and(|c| c < max) {
            let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(max), maximum: limit.maximum });
        }
    }
}

/// Open webhook connections at most by default: three quarters of the file descriptors
/// this process may open, the rest left to the admin listener, the database and git.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    // `serve` raises its soft limit to the hard one at start (`raise_fd_limit`).
    let limit = limit.maximum.or(limit.current).unwrap_or(1024).min(1 << 20);
    ((limit as usize) / 4 * 3).clamp(64, 1 << 20)
}

impl Config {
    /// Loads the file named by `--config`/`FUTURNAL_CONFIG` (or the default location when
    /// it exists) and layers environment variables and flags over it.
    pub fn load(global: &GlobalArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let file = match &global.config {
            Some(path) => read_file(path)?,
            None => match dirs::config_dir().map(|d| d.join("futurnal").join("config.toml")) {
                Some(path) if path.exists() => read_file(&path)?,
                _ => FileConfig::default(),
            },
        };
        Self::resolve(global, serve, file, |name| std::env::var(name).ok())
    }

    /// The pure part of [`Config::load`]: `env` stands in for the process environment so
    /// tests can layer without touching it. Flags and their `env =` twins already arrive
    /// merged in `global` and `serve` (clap gives flags precedence over the environment).
    pub fn resolve(
        global: &GlobalArgs,
        serve: Option<&ServeArgs>,
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let data_dir = match global.data_dir.clone().or(file.data_dir) {
            Some(dir) => dir,
            None => dirs::data_dir()
                .context("no platform data directory; pass --data-dir or set FUTURNAL_DATA_DIR")?
                .join("futurnal"),
        };
        let data_dir = absolute(&data_dir)?;
        // Empty means unset (`FUTURNAL_DATABASE_URL=` left blank in a compose file).
        let given = global.database_url.clone().filter(|u| !u.trim().is_empty());
        let database = match given.or(file.database_url) {
            None => DatabaseUrl::Sqlite(data_dir.join("futurnal.db")),
            Some(url) => DatabaseUrl::parse(&url)?,
        };
        let github_api_url = global
            .github_api_url
            .clone()
            .or(file.github_api_url)
            .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();

        let w = file.webhook;
        let mut hook_secrets = BTreeMap::new();
        for (id, secret) in w.hook_secrets {
            let id: u64 =
                id.parse().with_context(|| format!("webhook.hook_secrets: '{id}' is not a numeric hook id"))?;
            hook_secrets.insert(id, secret);
        }
        let events = match w.events {
            None => WebhookEventType::HANDLED.to_vec(),
            Some(names) => {
                let mut events = Vec::new();
                for name in names {
                    let kind = WebhookEventType::parse(&name);
                    if !kind.is_handled() {
                        bail!("webhook.events: '{name}' is not an event futurnal handles");
                    }
                    events.push(kind);
                }
                events
            }
        };
        let webhook = WebhookConfig {
            secret: env("FUTURNAL_WEBHOOK_SECRET").filter(|s| !s.is_empty()).or(w.secret),
            previous_secret: env("FUTURNAL_WEBHOOK_PREVIOUS_SECRET").filter(|s| !s.is_empty()).or(w.previous_secret),
            hook_secrets,
            events,
            verify_signatures: w.verify_signatures.unwrap_or(true),
            max_body_bytes: w.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            header_read_timeout: Duration::from_secs(w.header_read_timeout_secs.unwrap_or(10)),
            body_read_timeout: Duration::from_secs(w.body_read_timeout_secs.unwrap_or(30)),
            unverified_rate_per_sec: w.unverified_rate_per_sec.unwrap_or(10).max(1),
            unverified_burst: w.unverified_burst.unwrap_or(30).max(1),
            allow_loopback_hook_urls: w.allow_loopback_hook_urls.unwrap_or(false),
            secret_store: match env("FUTURNAL_SECRET_STORE").filter(|s| !s.is_empty()) {
                Some(value) => value.parse().context("FUTURNAL_SECRET_STORE")?,
                None => w.secret_store.unwrap_or_default(),
            },
            trusted_proxies: w
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|t| parse_net(t, "webhook.trusted_proxies"))
                .collect::<anyhow::Result<_>>()?,
            allow_sources: match w.allow_sources {
                None => None,
                Some(FileAllowSources::Named(name)) if name == "github" => Some(AllowSources::GitHub),
                Some(FileAllowSources::Named(name)) => {
                    bail!("webhook.allow_sources: '{name}' is neither \"github\" nor a list of CIDR ranges")
                }
                Some(FileAllowSources::Ranges(ranges)) => Some(AllowSources::Ranges(
                    ranges.iter().map(|t| parse_net(t, "webhook.allow_sources")).collect::<anyhow::Result<_>>()?,
                )),
            },
            max_connections: match w.max_connections {
                Some(0) => bail!("webhook.max_connections must be at least 1"),
                Some(n) => n,
                None => default_max_connections(),
            },
        };
        let q = file.queue;
        let queue = QueueConfig {
            max_queued: q.max_queued.unwrap_or(1_000_000),
            compression: q.compression.unwrap_or(Compression::Lz4),
            retention: Duration::from_secs(
                q.retention_days.unwrap_or(14).checked_mul(86_400).context("queue.retention_days is too large")?,
            ),
        };
        let sq = file.sqlite;
        if (sq.synchronous.is_some() && q.synchronous.is_some())
            || (sq.max_database_mb.is_some() && q.max_database_mb.is_some())
        {
            bail!("[queue] synchronous and max_database_mb moved to [sqlite]: set them there only");
        }
        let postgres = PostgresConfig {
            schema: file.postgres.schema.filter(|s| !s.is_empty()),
            pool_size: file.postgres.pool_size.unwrap_or(16).clamp(2, 512),
        };
        let sqlite = SqliteConfig {
            synchronous: sq.synchronous.or(q.synchronous).unwrap_or(Synchronous::Full),
            max_database_bytes: sq
                .max_database_mb
                .or(q.max_database_mb)
                .map(|mb| mb.checked_mul(1024 * 1024).context("sqlite.max_database_mb is too large"))
                .transpose()?,
        };
        let wk = file.workers;
        let workers = WorkerConfig {
            concurrency: wk.concurrency.unwrap_or(4).max(1),
            batch_per_repository: wk.batch_per_repository.unwrap_or(64).max(1),
            retry_base: Duration::from_millis(wk.retry_base_ms.unwrap_or(1_000)),
            retry_cap: Duration::from_millis(wk.retry_cap_ms.unwrap_or(300_000)),
            max_attempts: wk.max_attempts.unwrap_or(8).max(1),
            lease: Duration::from_secs(wk.lease_secs.unwrap_or(30).max(1)),
            test_handler_delay: wk.test_handler_delay_ms.map(Duration::from_millis),
            test_effect_audit: wk.test_effect_audit.unwrap_or(false),
        };
        let s = file.serve;
        let serve = ServeConfig {
            listen: serve
                .and_then(|a| a.listen)
                .or(env_addr(&env, "FUTURNAL_LISTEN")?)
                .or(s.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            admin_listen: serve
                .and_then(|a| a.admin_listen)
                .or(env_addr(&env, "FUTURNAL_ADMIN_LISTEN")?)
                .or(s.admin_listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default")),
            role: serve.and_then(|a| a.role).or(s.role).unwrap_or(Role::All),
            poll: !serve.is_some_and(|a| a.no_poll),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs.unwrap_or(30)),
            instance: match serve.and_then(|a| a.instance.clone()).or(env("FUTURNAL_INSTANCE")).or(s.instance) {
                Some(name) if !name.trim().is_empty() => crate::instance::checked_name(name.trim())?,
                _ => crate::instance::default_name(),
            },
            leader_lease: Duration::from_secs(s.leader_lease_secs.unwrap_or(10).max(1)),
            admin_token: env("FUTURNAL_ADMIN_TOKEN").or(s.admin_token).filter(|t| !t.is_empty()).map(AdminToken),
        };
        if let Some(token) = &serve.admin_token {
            if token.0.len() < 16 || token.0.chars().any(char::is_whitespace) {
                bail!("the admin token (FUTURNAL_ADMIN_TOKEN or serve.admin_token) must be at least 16 characters, without spaces");
            }
        }
        if serve.admin_token.is_none() && !serve.admin_listen.ip().is_loopback() {
            bail!(
                "the admin listener ({}) is not on loopback, so it needs a token: set FUTURNAL_ADMIN_TOKEN (or \
                 serve.admin_token) to a random string of 16 characters or more, and send it as \
                 `Authorization: Bearer …`",
                serve.admin_listen
            );
        }
        if !webhook.verify_signatures && !serve.listen.ip().is_loopback() {
            bail!(
                "webhook.verify_signatures = false is only allowed when the webhook listener is on loopback (it is {})",
                serve.listen
            );
        }
        let reconcile_secs = file.poll.reconcile_secs.unwrap_or(3600).max(1);
        let mut per_repository = BTreeMap::new();
        for (name, repo) in &file.poll.repositories {
            if crate::domain::RepoName::parse(name).is_err() {
                bail!("poll.repositories: '{name}' is not OWNER/NAME");
            }
            if let Some(secs) = repo.interval_secs {
                per_repository.insert(name.to_lowercase(), Duration::from_secs(secs.max(1)));
            }
        }
        let poll = PollConfig {
            interval: Duration::from_secs(file.poll.interval_secs.unwrap_or(300).max(1)),
            reconcile: Duration::from_secs(reconcile_secs),
            quiet: Duration::from_secs(file.poll.webhook_quiet_secs.unwrap_or(2 * reconcile_secs).max(1)),
            per_repository,
        };
        let changes = ChangesConfig {
            retention: match file.changes.retention_days.unwrap_or(30) {
                0 => None,
                days => {
                    Some(Duration::from_secs(days.checked_mul(86_400).context("changes.retention_days is too large")?))
                }
            },
            heartbeat: Duration::from_secs(file.changes.heartbeat_secs.unwrap_or(15).clamp(1, 3600)),
        };
        let tunnel = TunnelConfig {
            ngrok_api_url: file
                .tunnel
                .ngrok_api_url
                .unwrap_or_else(|| "http://127.0.0.1:4040".into())
                .trim_end_matches('/')
                .to_owned(),
            check: Duration::from_secs(file.tunnel.check_secs.unwrap_or(10).max(1)),
        };
        Ok(Self {
            data_dir,
            database,
            github_api_url,
            json: global.json,
            webhook,
            queue,
            sqlite,
            postgres,
            workers,
            serve,
            poll,
            tunnel,
            changes,
        })
    }
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            bail!("unsupported database URL: expected sqlite:PATH, a file path, or postgres://…");
        }
        Ok(Self::Sqlite(absolute(Path::new(path))?))
    }
}

fn env_addr(env: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Option<SocketAddr>> {
    env(name)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().with_context(|| format!("{name}: '{v}' is not an address like 127.0.0.1:8765")))
        .transpose()
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses the text of a configuration file (what [`Config::load`] reads from `--config`).
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("invalid path {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> GlobalArgs {
        GlobalArgs {
            data_dir: Some("/tmp/fut".into()),
            config: None,
            database_url: None,
            github_api_url: None,
            json: false,
        }
    }

    #[test]
    fn an_empty_database_url_means_the_default() {
        let blank = GlobalArgs { database_url: Some(String::new()), ..global() };
        let c = Config::resolve(&blank, None, FileConfig::default(), |_| None).unwrap();
        assert!(matches!(&c.database, DatabaseUrl::Sqlite(p) if p.ends_with("futurnal.db")), "{:?}", c.database);
    }

    #[test]
    fn debug_output_shows_no_secret_and_no_database_password() {
        let file: FileConfig = toml::from_str(
            r#"
            database_url = "postgres://futurnal:db-pass-1@db.example:5432/futurnal"
            [webhook]
            secret = "file-secret-1"
            previous_secret = "file-secret-2"
            hook_secrets = { "42" = "hook-secret-3" }
            "#,
        )
        .unwrap();
        let printed = format!("{file:?}");
        let c = Config::resolve(&global(), None, file, |_| None).unwrap();
        let printed = format!("{printed} {c:?} {:#?}", c.webhook);
        for secret in ["db-pass-1", "file-secret-1", "file-secret-2", "hook-secret-3"] {
            assert!(!printed.contains(secret), "{secret} shows in {printed}");
        }
        assert!(printed.contains("<redacted>") && printed.contains("db.example"), "{printed}");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://u:p@h/db?x=@"), "postgres://u:<redacted>@h/db?x=@");
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=p2&x=1"),
            "postgres://u@h/db?sslmode=disable&password=<redacted>&x=1"
        );
        assert_eq!(redact_url("postgres://u:p@h?password=p2"), "postgres://u:<redacted>@h?password=<redacted>");
    }

    #[test]
    fn sqlite_settings_live_under_sqlite_and_the_old_queue_keys_still_work() {
        let parse = |toml_text: &str| {
            let file: FileConfig = toml::from_str(toml_text).unwrap();
            Config::resolve(&global(), None, file, |_| None)
        };
        let c = parse("[sqlite]\nsynchronous = \"normal\"\nmax_database_mb = 2\n").unwrap();
        assert_eq!((c.sqlite.synchronous, c.sqlite.max_database_bytes), (Synchronous::Normal, Some(2 << 20)));
        let old = parse("[queue]\nsynchronous = \"normal\"\nmax_database_mb = 3\n").unwrap();
        assert_eq!((old.sqlite.synchronous, old.sqlite.max_database_bytes), (Synchronous::Normal, Some(3 << 20)));
        let both = parse("[queue]\nsynchronous = \"normal\"\n[sqlite]\nsynchronous = \"full\"\n").unwrap_err();
        assert!(format!("{both:#}").contains("moved to [sqlite]"), "{both:#}");
        // Found by fuzzing: these overflowed (a panic in debug builds, a wrapped value in
        // release ones: a short retention, a small cap).
        let huge = parse("[queue]\nretention_days = 300000000000000\n").unwrap_err();
        assert!(format!("{huge:#}").contains("retention_days is too large"), "{huge:#}");
        let huge = parse("[changes]\nretention_days = 300000000000000\n").unwrap_err();
        assert!(format!("{huge:#}").contains("changes.retention_days is too large"), "{huge:#}");
        let huge = parse("[sqlite]\nmax_database_mb = 30000000000000\n").unwrap_err();
        assert!(format!("{huge:#}").contains("max_database_mb is too large"), "{huge:#}");
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(&global(), None, FileConfig::default(), |_| None).unwrap();
        assert_eq!(c.database, DatabaseUrl::Sqlite("/tmp/fut/futurnal.db".into()));
        assert_eq!(c.github_api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(c.serve.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.serve.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.webhook.events.len(), 13);
        for event in ["pull_request_review", "pull_request_review_comment", "label", "milestone"] {
            assert!(c.webhook.events.iter().any(|e| e.as_str() == event), "{event} is enabled by default");
        }
        assert_eq!(c.webhook.max_body_bytes, 25 * 1024 * 1024);
        assert_eq!(c.sqlite.synchronous, Synchronous::Full);
        assert!(c.webhook.verify_signatures);
        assert_eq!(c.changes.retention, Some(Duration::from_secs(30 * 86_400)));
        let forever: FileConfig = toml::from_str("[changes]\nretention_days = 0\n").unwrap();
        let forever = Config::resolve(&global(), None, forever, |_| None).unwrap();
        assert_eq!(forever.changes.retention, None);
    }

    #[test]
    fn file_then_env_then_flags() {
        let file: FileConfig = toml::from_str(
            r#"
            database_url = "sqlite:/tmp/file.db"
            [serve]
            listen = "127.0.0.1:1000"
            admin_listen = "127.0.0.1:1001"
            [webhook]
            secret = "from-file"
            events = ["push", "ping"]
            hook_secrets = { "42" = "hook-secret" }
            "#,
        )
        .unwrap();
        let env = |name: &str| match name {
            "FUTURNAL_WEBHOOK_SECRET" => Some("from-env".to_owned()),
            "FUTURNAL_LISTEN" => Some("127.0.0.1:2000".to_owned()),
            _ => None,
        };
        let serve = ServeArgs {
            listen: None,
            admin_listen: Some("127.0.0.1:3001".parse().unwrap()),
            role: None,
            no_poll: true,
            instance: None,
        };
        let c = Config::resolve(&global(), Some(&serve), file, env).unwrap();
        assert_eq!(c.database, DatabaseUrl::Sqlite("/tmp/file.db".into()));
        assert_eq!(c.webhook.secret.as_deref(), Some("from-env"));
        assert_eq!(c.serve.listen.to_string(), "127.0.0.1:2000");
        assert_eq!(c.serve.admin_listen.to_string(), "127.0.0.1:3001");
        assert_eq!(c.webhook.events, vec![WebhookEventType::Push, WebhookEventType::Ping]);
        assert_eq!(c.webhook.hook_secrets.get(&42).map(String::as_str), Some("hook-secret"));
        assert!(!c.serve.poll);
    }

    #[test]
    fn refuses_bad_settings() {
        let unknown_key = toml::from_str::<FileConfig>("[webhook]\nsecrett = \"x\"");
        assert!(unknown_key.is_err());
        let file: FileConfig = toml::from_str("[webhook]\nevents = [\"workflow_run\"]").unwrap();
        assert!(Config::resolve(&global(), None, file, |_| None).is_err());
        let file: FileConfig =
            toml::from_str("[webhook]\nverify_signatures = false\n[serve]\nlisten = \"0.0.0.0:8765\"").unwrap();
        let err = Config::resolve(&global(), None, file, |_| None).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(matches!(DatabaseUrl::parse("postgres://u@h/db").unwrap(), DatabaseUrl::Postgres(_)));
        let file: FileConfig = toml::from_str("[poll.repositories]\n\"not-a-repo\" = { interval_secs = 5 }").unwrap();
        let err = Config::resolve(&global(), None, file, |_| None).unwrap_err();
        assert!(err.to_string().contains("OWNER/NAME"), "{err}");
        assert!(toml::from_str::<FileConfig>("[poll.repositories]\n\"o/r\" = { intervall_secs = 5 }").is_err());
        assert!(
            toml::from_str::<FileConfig>("[webhook]\nsecret_store = \"vault\"").is_err(),
            "an unknown secret store does not parse"
        );
        assert!(toml::from_str::<FileConfig>("[webhook]\nsecret_store = \"keychain\"").is_ok());
        let err = Config::resolve(&global(), None, FileConfig::default(), |n| {
            (n == "FUTURNAL_SECRET_STORE").then(|| "vault".to_owned())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("auto, keychain or file"), "{err:#}");
    }

    #[test]
    fn polling_intervals_per_repository_and_the_quiet_window() {
        let file: FileConfig = toml::from_str(
            "[poll]\ninterval_secs = 300\nreconcile_secs = 600\n\
             [poll.repositories]\n\"Octo/Hello\" = { interval_secs = 30 }\n\"octo/other\" = {}\n",
        )
        .unwrap();
        let c = Config::resolve(&global(), None, file, |_| None).unwrap();
        assert_eq!(c.poll.interval_for("octo/hello"), Duration::from_secs(30), "names match case-insensitively");
        assert_eq!(c.poll.interval_for("OCTO/HELLO"), Duration::from_secs(30));
        assert_eq!(c.poll.interval_for("octo/other"), Duration::from_secs(300), "no interval: the default");
        assert_eq!(c.poll.interval_for("someone/else"), Duration::from_secs(300));
        assert_eq!(c.poll.quiet, Duration::from_secs(1200), "twice the reconcile interval by default");
        assert_eq!(c.webhook.secret_store, SecretStore::Auto);
        let c = Config::resolve(&global(), None, FileConfig::default(), |n| {
            (n == "FUTURNAL_SECRET_STORE").then(|| "file".to_owned())
        })
        .unwrap();
        assert_eq!(c.webhook.secret_store, SecretStore::File);
    }
}
