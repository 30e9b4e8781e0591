//! Command dispatch: turns a parsed [`Cli`] into work. Every command returns
//! `anyhow::Result`; `main` prints a failure as one line and exits 1.

use std::io::Write;

use anyhow::{bail, Context};
use futurnal_github::{WebhookEventType, WebhookSecret};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Purpose};
use crate::cli::{AddArgs, Cli, Command, DeliveriesArgs, GithubCommand, SimulateArgs, SourceCommand, WebhookCommand};
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName};
use crate::output::{self, print_json, print_table};
use crate::queue::DeliveryFilter;
use crate::store::{NewRepository, RepoRef};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let serve_args = match &cli.command {
        Command::Serve(args) => Some(args),
        Command::Sources { .. } => None,
    };
    let config = Config::load(&cli.global, serve_args)?;
    init_logging(serve_args.is_some());
    match cli.command {
        Command::Serve(_) => runtime(true)?.block_on(serve(config)),
        Command::Sources { source: SourceCommand::Github { command } } => {
            runtime(false)?.block_on(github(config, command))
        }
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let backend = Backend::open(&config, Purpose::Daemon)?;
    let listeners = crate::serve::Listeners::bind(&config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", listeners.banner())?;
        stdout.flush()?;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    crate::serve::run(config, backend, listeners, Default::default(), shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("Could not install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; draining"),
        _ = int.recv() => tracing::info!("SIGINT received; draining"),
    }
    shutdown.cancel();
}

async fn github(config: Config, command: GithubCommand) -> anyhow::Result<()> {
    if let GithubCommand::Webhook { command: WebhookCommand::Simulate(args) } = command {
        return simulate(&config, args).await;
    }
    let backend = Backend::open(&config, Purpose::Command)?;
    let result = github_with_backend(&config, &backend, command).await;
    backend.close();
    result
}

async fn github_with_backend(config: &Config, backend: &Backend, command: GithubCommand) -> anyhow::Result<()> {
    match command {
        GithubCommand::Add(args) => add(config, backend, args).await,
        GithubCommand::List => {
            let repos = backend.registry.list().await?;
            if config.json {
                print_json(&Value::Array(repos.iter().map(output::repository_json).collect()));
            } else if repos.is_empty() {
                println!("No repositories tracked. Add one with: futurnal sources github add OWNER/NAME");
            } else {
                print_table(&output::REPOSITORY_HEADERS, &repos.iter().map(output::repository_row).collect::<Vec<_>>());
            }
            Ok(())
        }
        GithubCommand::Show { repo } => {
            let reference = RepoRef::parse(&repo)?;
            let Some(found) = backend.registry.find(reference).await? else {
                bail!("repository {repo} is not tracked");
            };
            if config.json {
                print_json(&output::repository_json(&found));
            } else {
                print_table(&output::REPOSITORY_HEADERS, &[output::repository_row(&found)]);
            }
            Ok(())
        }
        GithubCommand::Remove { repo } => {
            let removed = backend.registry.remove(RepoRef::parse(&repo)?).await?;
            if config.json {
                print_json(&output::repository_json(&removed));
            } else {
                println!("Stopped tracking {} (id {})", removed.full_name, removed.id);
            }
            Ok(())
        }
        GithubCommand::Webhook { command } => match command {
            WebhookCommand::Deliveries(args) => deliveries(config, backend, args).await,
            WebhookCommand::Replay { delivery_id } => {
                let record = backend.queue.replay(&delivery_id).await?;
                if config.json {
                    print_json(&output::delivery_json(&record));
                } else {
                    println!(
                        "Queued delivery {} ({} {}) again; a running `futurnal serve` picks it up within a second",
                        record.delivery_id,
                        record.event,
                        record.repository.as_deref().unwrap_or("-")
                    );
                }
                Ok(())
            }
            WebhookCommand::Simulate(_) => unreachable!("handled before the database is opened"),
        },
    }
}

async fn add(config: &Config, backend: &Backend, args: AddArgs) -> anyhow::Result<()> {
    let name = RepoName::parse(&args.repo)?;
    if !args.no_sync {
        bail!(
            "mirroring and syncing are not available in this build yet; track the repository with --no-sync \
             (deliveries are received and queued for it)"
        );
    }
    for pattern in &args.branches {
        if pattern.trim().is_empty() {
            bail!("--branch needs a non-empty pattern");
        }
    }
    let repo = backend
        .registry
        .add(NewRepository {
            full_name: name.to_string(),
            github_id: None,
            branches: args.branches,
            clone_url: args.clone_url,
        })
        .await?;
    if config.json {
        print_json(&output::repository_json(&repo));
    } else {
        println!("Tracking {} (id {})", repo.full_name, repo.id);
    }
    Ok(())
}

async fn deliveries(config: &Config, backend: &Backend, args: DeliveriesArgs) -> anyhow::Result<()> {
    let status = args.status.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    let mut filter = DeliveryFilter { status, limit: args.limit.clamp(1, 10_000), ..Default::default() };
    if let Some(repo) = &args.repo {
        match RepoRef::parse(repo)? {
            RepoRef::Name(name) => filter.repository_name = Some(name),
            RepoRef::Id(id) => {
                let Some(found) = backend.registry.find(RepoRef::Id(id)).await? else {
                    bail!("no tracked repository with id {id}");
                };
                filter.repository_name = Some(found.full_name);
                filter.repository_github_id = found.github_id;
            }
        }
    }
    let records = backend.queue.list(filter).await?;
    if config.json {
        print_json(&Value::Array(records.iter().map(output::delivery_json).collect()));
    } else if records.is_empty() {
        println!("No deliveries.");
    } else {
        print_table(&output::DELIVERY_HEADERS, &records.iter().map(output::delivery_row).collect::<Vec<_>>());
    }
    Ok(())
}

async fn simulate(config: &Config, args: SimulateArgs) -> anyhow::Result<()> {
    let kind = WebhookEventType::parse(&args.event);
    let mut payload = match &args.payload {
        Some(path) => crate::simulate::read_payload(path)?,
        None => {
            let Some(text) = crate::simulate::example(&kind) else {
                bail!(
                    "no built-in example for event '{}'; known: push, pull_request, issues, issue_comment, release, \
                     create, delete, repository, ping (or pass --payload FILE)",
                    args.event
                );
            };
            serde_json::from_str(text).expect("built-in examples are valid JSON")
        }
    };
    if let Some(repo) = &args.repo {
        crate::simulate::retarget(&mut payload, &RepoName::parse(repo)?)?;
    }
    let secret = match &args.secret_env {
        Some(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => WebhookSecret::new(value),
            _ => bail!("environment variable {var} is not set or empty"),
        },
        None => match crate::secrets::global_secret(config, false)? {
            (Some(secret), _) => secret,
            (None, _) => bail!(
                "no webhook secret found: set FUTURNAL_WEBHOOK_SECRET, webhook.secret in the config, or start \
                 `futurnal serve` once to generate {}",
                config.data_dir.join(crate::secrets::SECRET_FILE).display()
            ),
        },
    };
    let url = args.url.clone().unwrap_or_else(|| format!("http://{}/webhook/github", config.serve.listen));
    let delivery = crate::simulate::SimulatedDelivery {
        url,
        event: args.event.clone(),
        delivery_id: DeliveryId::random(),
        hook_id: args.hook_id,
        body: serde_json::to_vec(&payload).expect("JSON values serialize"),
    };
    let response = crate::simulate::send(&delivery, &secret).await?;
    let answer: Value = serde_json::from_str(&response.body).unwrap_or(Value::String(response.body.clone()));
    if config.json {
        print_json(&serde_json::json!({
            "delivery_id": delivery.delivery_id.as_str(),
            "event": delivery.event,
            "url": delivery.url,
            "http_status": response.status,
            "response": answer,
        }));
    } else {
        println!(
            "Sent {} delivery {} to {}: HTTP {} {}",
            delivery.event,
            delivery.delivery_id,
            delivery.url,
            response.status,
            serde_json::to_string(&answer).unwrap_or_default()
        );
    }
    if !(200..300).contains(&response.status) {
        bail!("the receiver answered HTTP {}", response.status);
    }
    Ok(())
}
