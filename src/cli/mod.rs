//! The command-line layer: turns a parsed [`Cli`] into work. Every command returns
//! `anyhow::Result`; `main` prints a failure as one line and exits 1. This file sets up
//! the runtime and logging and dispatches; each command lives in its own file.

pub mod args;
mod changes;
mod db;
mod deliveries;
mod enable;
mod hooks;
mod progress;
mod queries;
mod repos;
mod serve;
mod simulate;
mod token;

use anyhow::Context;

pub use args::*;

use crate::config::Config;
use crate::storage::backend::{Backend, Purpose};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let serve_args = match &cli.command {
        Command::Serve(args) => Some(args),
        Command::Sources { .. } | Command::Db { .. } => None,
    };
    let config = Config::load(&cli.global, serve_args)?;
    init_logging(serve_args.is_some());
    match cli.command {
        Command::Serve(_) => runtime(true)?.block_on(serve::serve(config)),
        Command::Sources { source: SourceCommand::Github { command } } => {
            runtime(false)?.block_on(github(config, command))
        }
        Command::Db { command } => runtime(false)?.block_on(db::db(config, cli.global.config.as_deref(), command)),
    }
}

fn runtime(daemon: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !daemon {
        builder.worker_threads(1);
    }
    builder.enable_all().build().context("failed to start the async runtime")
}

/// Logs go to stderr, with fields; `FUTURNAL_LOG` (or `RUST_LOG`) sets the filter, for
/// example `futurnal=debug,info`. Commands other than `serve` log warnings only.
fn init_logging(daemon: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = if daemon { "info" } else { "warn" };
    let spec = std::env::var("FUTURNAL_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.into());
    let filter: Targets = spec.parse().unwrap_or_else(|_| default.parse().expect("valid default filter"));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}

async fn github(config: Config, command: GithubCommand) -> anyhow::Result<()> {
    if let GithubCommand::Webhook { command: WebhookCommand::Simulate(args) } = command {
        return simulate::simulate(&config, args).await;
    }
    if let GithubCommand::Token { command } = command {
        // The token needs no database.
        return token::token(&config, command);
    }
    let backend = Backend::open(&config, Purpose::Command).await?;
    let result = github_with_backend(&config, &backend, command).await;
    backend.close();
    result
}

async fn github_with_backend(config: &Config, backend: &Backend, command: GithubCommand) -> anyhow::Result<()> {
    match command {
        GithubCommand::Token { command } => token::token(config, command),
        GithubCommand::Add(args) => repos::add(config, backend, args).await,
        GithubCommand::List => repos::list(config, backend).await,
        GithubCommand::Show { repo } => repos::show(config, backend, &repo).await,
        GithubCommand::Remove { repo } => repos::remove(config, backend, &repo).await,
        GithubCommand::Sync { repo } => repos::sync(config, backend, &repo).await,
        command @ (GithubCommand::Branches { .. }
        | GithubCommand::Commits { .. }
        | GithubCommand::Pulls { .. }
        | GithubCommand::Issues { .. }
        | GithubCommand::Releases { .. }
        | GithubCommand::Reviews { .. }
        | GithubCommand::ReviewComments { .. }
        | GithubCommand::Labels { .. }
        | GithubCommand::Milestones { .. }) => queries::query(config, backend, command).await,
        GithubCommand::Changes(args) => changes::changes(config, backend, args).await,
        GithubCommand::Webhook { command } => match command {
            WebhookCommand::Deliveries(args) => deliveries::deliveries(config, backend, args).await,
            WebhookCommand::Replay { delivery_id } => deliveries::replay(config, backend, &delivery_id).await,
            WebhookCommand::Simulate(_) => unreachable!("handled before the database is opened"),
            WebhookCommand::Enable(args) => enable::enable(config, backend, args).await,
            WebhookCommand::Disable { repo } => hooks::disable(config, backend, &repo).await,
            WebhookCommand::Status { repo } => hooks::status(config, backend, repo.as_deref()).await,
            WebhookCommand::RotateSecret { repo } => hooks::rotate_secret(config, backend, &repo).await,
            WebhookCommand::CatchUp { repo } => hooks::catch_up(config, backend, repo.as_deref()).await,
        },
    }
}
