//! The command line, as clap types only. Parsing and dispatch live in `cli/mod.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "futurnal",
    version,
    about = "Keeps a local, queryable copy of GitHub repositories up to date from webhooks."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Where the database, git mirrors and generated secrets live.
    #[arg(long, global = true, env = "FUTURNAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (optional).
    #[arg(long, global = true, env = "FUTURNAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `sqlite:PATH` or a path (the default: futurnal.db in the data dir), or postgres://…
    #[arg(long, global = true, env = "FUTURNAL_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// GitHub REST API base URL (GitHub Enterprise and tests point elsewhere).
    #[arg(long, global = true, env = "FUTURNAL_GITHUB_API_URL", value_name = "URL")]
    pub github_api_url: Option<String>,
    /// Print one JSON document instead of human tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver, the workers and the admin endpoints until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Manage tracked sources.
    Sources {
        #[command(subcommand)]
        source: SourceCommand,
    },
    /// The database itself.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the embedded SQLite database into an empty PostgreSQL database, verify the copy,
    /// and say what to change in the configuration.
    Migrate(MigrateArgs),
    /// FUTURNAL_SECRET_KEY, which seals the hook secrets shared through PostgreSQL: keep
    /// it in the OS keychain instead of the environment, or see where it comes from.
    SecretKey {
        #[command(subcommand)]
        command: SecretKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretKeyCommand {
    /// Store the key read from standard input (64 hex characters, the same on every
    /// instance; for example made with `openssl rand -hex 32`) in the OS keychain.
    Set,
    /// Delete the key from the OS keychain.
    Remove,
    /// Say where the key comes from and how many of the database's sealed secrets it
    /// opens (never the key).
    Status,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy into (postgres://…); it must hold no futurnal data.
    /// Its tables go in the `[postgres] schema` of the configuration, when one is set.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// By hand: the URL may carry a password.
impl std::fmt::Debug for MigrateArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateArgs").field("to", &crate::config::redact_url(&self.to)).finish()
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Webhook listener address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listener address (health, metrics); never meant to face the internet.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Which parts of the daemon run in this process.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Do not poll GitHub for repositories without a working webhook.
    #[arg(long)]
    pub no_poll: bool,
    /// This process's name among the instances sharing a database (default host:pid).
    #[arg(long, value_name = "NAME", env = "FUTURNAL_INSTANCE")]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Only this repository's changes.
    pub repo: Option<String>,
    /// Changes after this sequence number (0: from the start).
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub since: i64,
    /// Only changes of this kind (commit, branch, tag, pull_request, issue, comment,
    /// release, repository, …).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// At most this many (without --follow).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Keep printing changes as they are made (through daemon restarts) until
    /// interrupted.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receiver, workers and admin endpoints.
    All,
    /// Only the webhook receiver (and admin endpoints).
    Receiver,
    /// Only the workers (and admin endpoints).
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// GitHub repositories.
    Github {
        #[command(subcommand)]
        command: GithubCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum GithubCommand {
    /// Track a repository.
    Add(AddArgs),
    /// List tracked repositories.
    List,
    /// Show one tracked repository.
    Show { repo: String },
    /// Stop tracking a repository and delete what is stored for it (rows and mirror).
    Remove { repo: String },
    /// Fetch and record every tracked branch and tag now.
    Sync { repo: String },
    /// Branches of the local copy.
    Branches { repo: String },
    /// Commits of the local copy, newest first.
    Commits {
        repo: String,
        /// Only commits on this branch.
        #[arg(long)]
        branch: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Pull requests of the local copy, most recently updated first.
    Pulls {
        repo: String,
        /// open, closed, merged or all.
        #[arg(long, default_value = "open")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Issues of the local copy, most recently updated first.
    Issues {
        repo: String,
        /// open, closed or all.
        #[arg(long, default_value = "open")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Releases of the local copy, newest first.
    Releases {
        repo: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Pull request reviews of the local copy, newest submitted first.
    Reviews {
        repo: String,
        /// Only the reviews of this pull request.
        #[arg(long, value_name = "N")]
        pull: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Review comments (comments on the diff) of one pull request, newest first.
    ReviewComments {
        repo: String,
        /// The pull request.
        #[arg(long, value_name = "N")]
        pull: u64,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Labels of the local copy, by name.
    Labels {
        repo: String,
        #[arg(long, default_value_t = 500)]
        limit: u32,
    },
    /// Milestones of the local copy, newest (highest number) first.
    Milestones {
        repo: String,
        #[arg(long, value_enum, default_value_t = MilestoneStateArg::Open)]
        state: MilestoneStateArg,
        #[arg(long, default_value_t = 500)]
        limit: u32,
    },
    /// The change feed: every change to the local copy, oldest first, from a cursor.
    /// With --json, one JSON object per line.
    Changes(ChangesArgs),
    /// Webhook deliveries and hooks.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// The GitHub token kept in the OS keychain (GITHUB_TOKEN and GH_TOKEN win over it).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Store the token read from standard input (for example `gh auth token | futurnal
    /// sources github token set`); never from an argument, which ps and shell history see.
    Set,
    /// Delete the stored token.
    Remove,
    /// Say where the token in use comes from (never the token).
    Status,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// OWNER/NAME on GitHub.
    pub repo: String,
    /// Branch glob to track (repeatable); default: the default branch.
    #[arg(long = "branch", value_name = "PATTERN")]
    pub branches: Vec<String>,
    /// Git URL to mirror from instead of GitHub's (any git URL or a local path).
    #[arg(long, value_name = "URL")]
    pub clone_url: Option<String>,
    /// Register the repository without mirroring or syncing it now (deliveries are still
    /// received; `sync` mirrors it later).
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// List received deliveries, newest first.
    Deliveries(DeliveriesArgs),
    /// Process a stored delivery again, on purpose.
    Replay { delivery_id: String },
    /// Send one correctly signed delivery to a running receiver.
    Simulate(SimulateArgs),
    /// Create (or update) the repository's hook on GitHub with a new secret, and ping it.
    Enable(EnableArgs),
    /// Delete the repository's hook on GitHub and its secret; back to polling.
    Disable { repo: String },
    /// Mode, hook and delivery health per repository.
    Status { repo: Option<String> },
    /// Ask GitHub to redeliver what its delivery log shows never reached us.
    CatchUp { repo: Option<String> },
    /// Give the hook a new secret without refusing deliveries signed with the old one.
    RotateSecret { repo: String },
}

/// Which milestones `milestones` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MilestoneStateArg {
    Open,
    Closed,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tunnel {
    Ngrok,
    Smee,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    pub repo: String,
    /// The public URL GitHub will POST to (it must reach this machine's webhook listener);
    /// `/webhook/github` is appended when the URL has no path.
    #[arg(long, value_name = "URL", required_unless_present = "tunnel", conflicts_with = "tunnel")]
    pub public_url: Option<String>,
    /// Use a development tunnel's public URL instead (ngrok: read from the local agent,
    /// and followed by `serve` when it changes).
    #[arg(long, value_enum)]
    pub tunnel: Option<Tunnel>,
    /// The smee.io channel URL, with `--tunnel smee`.
    #[arg(long, value_name = "URL", required_if_eq("tunnel", "smee"))]
    pub smee_url: Option<String>,
    /// Events to subscribe to (comma separated); default: all that futurnal handles.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub events: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only deliveries for this repository (id or OWNER/NAME).
    pub repo: Option<String>,
    /// queued, processing, retrying, done, ignored or dead.
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// How many to list, newest first (more pages: `--before` the last one listed).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Only deliveries received before this one (the last of the previous page).
    #[arg(long, value_name = "DELIVERY_ID")]
    pub before: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// push, pull_request, issues, issue_comment, release, create, delete, repository,
    /// pull_request_review, pull_request_review_comment, label, milestone or ping.
    pub event: String,
    /// Send this JSON file instead of the built-in example.
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Receiver URL; default: the configured webhook listener's /webhook/github.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Name of the environment variable holding the secret; default: the configured secret.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Rewrite the payload's repository to OWNER/NAME (a tracked one, say).
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Set X-GitHub-Hook-ID (selects a per-hook secret on the receiver).
    #[arg(long, value_name = "ID")]
    pub hook_id: Option<u64>,
}
