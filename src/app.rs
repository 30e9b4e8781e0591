//! Command dispatch: turns a parsed [`Cli`] into work. Every command returns
//! `anyhow::Result`; `main` prints a failure as one line and exits 1.

use std::io::Write;

use anyhow::{bail, Context};
use futurnal_github::{WebhookEventType, WebhookSecret};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cli::{AddArgs, Cli, Command, DeliveriesArgs, GithubCommand, SimulateArgs, SourceCommand, WebhookCommand};
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName};
use crate::output::{self, print_json, print_table};
use crate::storage::backend::{Backend, Purpose};
use crate::storage::queue::DeliveryFilter;
use crate::storage::registry::{NewRepository, RepoRef, TrackedRepository};
use crate::sync::{Progress as SyncProgress, SyncEngine};

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
    // Generate the secret (if needed) before anything is served, so `simulate` can read it.
    crate::secrets::global_secret(&config, true)?;
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
    if let GithubCommand::Token { command } = command {
        // The token needs no database.
        return token(&config, command);
    }
    let backend = Backend::open(&config, Purpose::Command)?;
    let result = github_with_backend(&config, &backend, command).await;
    backend.close();
    result
}

/// `sources github token`: the keychain entry, with nothing printed of the token.
fn token(config: &Config, command: crate::cli::TokenCommand) -> anyhow::Result<()> {
    use crate::cli::TokenCommand;
    use crate::keychain::TOKEN_ACCOUNT;
    let keychain = || {
        crate::keychain::get().map_err(|why| {
            anyhow::anyhow!("there is no OS keychain here ({why}); set GITHUB_TOKEN in the environment instead")
        })
    };
    let message = match command {
        TokenCommand::Set => {
            let mut input = String::new();
            let stdin = std::io::stdin();
            if std::io::IsTerminal::is_terminal(&stdin) {
                // One line from a terminal (it echoes: prefer `gh auth token | …` or a file).
                eprint!("GitHub token (one line): ");
                stdin.read_line(&mut input).context("failed to read standard input")?;
            } else {
                std::io::Read::read_to_string(&mut stdin.lock(), &mut input)
                    .context("failed to read standard input")?;
            }
            let token = input.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                bail!("expected one token on standard input (for example `gh auth token | futurnal sources github token set`)");
            }
            keychain()?.set(TOKEN_ACCOUNT, token)?;
            "stored in the OS keychain".to_owned()
        }
        TokenCommand::Remove => {
            keychain()?.delete(TOKEN_ACCOUNT)?;
            "removed from the OS keychain".to_owned()
        }
        TokenCommand::Status => match crate::github::client::Token::discover() {
            Some((_, source)) => format!("from {source}"),
            None => "none: set GITHUB_TOKEN or run `futurnal sources github token set`".to_owned(),
        },
    };
    if config.json {
        print_json(&serde_json::json!({ "token": message }));
    } else {
        println!("GitHub token: {message}");
    }
    Ok(())
}

async fn github_with_backend(config: &Config, backend: &Backend, command: GithubCommand) -> anyhow::Result<()> {
    match command {
        GithubCommand::Token { command } => token(config, command),
        GithubCommand::Add(args) => add(config, backend, args).await,
        GithubCommand::List => {
            let repos = backend.registry.list().await?;
            if config.json {
                print_json(&Value::Array(
                    repos.iter().map(|r| output::repository_json(r, config.poll.quiet)).collect(),
                ));
            } else if repos.is_empty() {
                println!("No repositories tracked. Add one with: futurnal sources github add OWNER/NAME");
            } else {
                print_table(
                    &output::REPOSITORY_HEADERS,
                    &repos.iter().map(|r| output::repository_row(r, config.poll.quiet)).collect::<Vec<_>>(),
                );
            }
            Ok(())
        }
        GithubCommand::Show { repo } => {
            let reference = RepoRef::parse(&repo)?;
            let Some(found) = backend.registry.find(reference).await? else {
                bail!("repository {repo} is not tracked");
            };
            if config.json {
                print_json(&output::repository_json(&found, config.poll.quiet));
            } else {
                print_table(&output::REPOSITORY_HEADERS, &[output::repository_row(&found, config.poll.quiet)]);
            }
            Ok(())
        }
        GithubCommand::Remove { repo } => {
            let removed = backend.registry.remove(RepoRef::parse(&repo)?).await?;
            SyncEngine::new(config, backend.copy.clone()).delete_mirror(removed.id)?;
            if config.json {
                print_json(&output::repository_json(&removed, config.poll.quiet));
            } else {
                println!("Stopped tracking {} (id {})", removed.full_name, removed.id);
            }
            Ok(())
        }
        command @ (GithubCommand::Sync { .. }
        | GithubCommand::Branches { .. }
        | GithubCommand::Commits { .. }
        | GithubCommand::Pulls { .. }
        | GithubCommand::Issues { .. }
        | GithubCommand::Releases { .. }) => query(config, backend, command).await,
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
            WebhookCommand::Enable(args) => crate::hooks_cli::enable(config, backend, args).await,
            WebhookCommand::Disable { repo } => crate::hooks_cli::disable(config, backend, &repo).await,
            WebhookCommand::Status { repo } => crate::hooks_cli::status(config, backend, repo.as_deref()).await,
            WebhookCommand::RotateSecret { repo } => crate::hooks_cli::rotate_secret(config, backend, &repo).await,
            WebhookCommand::CatchUp { repo } => crate::hooks_cli::catch_up(config, backend, repo.as_deref()).await,
        },
    }
}

async fn add(config: &Config, backend: &Backend, args: AddArgs) -> anyhow::Result<()> {
    let name = RepoName::parse(&args.repo)?;
    for pattern in &args.branches {
        if pattern.trim().is_empty() {
            bail!("--branch needs a non-empty pattern");
        }
    }
    if let Some(existing) = backend.registry.find(RepoRef::Name(name.to_string())).await? {
        bail!("{} is already tracked (id {})", existing.full_name, existing.id);
    }
    let clone_url = args.clone_url.as_deref().map(normalize_clone_url).transpose()?;
    let new = NewRepository {
        full_name: name.to_string(),
        github_id: None,
        branches: args.branches.clone(),
        clone_url: clone_url.clone(),
        default_branch: None,
    };
    if args.no_sync {
        let repo = backend.registry.add(new, Vec::new()).await?;
        if config.json {
            print_json(&output::repository_json(&repo, config.poll.quiet));
        } else {
            println!("Tracking {} (id {}), not synced yet", repo.full_name, repo.id);
        }
        return Ok(());
    }
    let sync = SyncEngine::new(config, backend.copy.clone());
    let url = sync.clone_url(name.as_str(), clone_url.as_deref());
    let reporter = ProgressReporter::new();
    let prepared = sync
        .prepare_add(&url, &args.branches, &|p| reporter.report(p))
        .await
        .with_context(|| format!("failed to mirror {url}"))?;
    reporter.finish();
    let started = std::time::Instant::now();
    let staging = prepared.staging.clone();
    let added =
        backend.registry.add(NewRepository { default_branch: prepared.default_branch, ..new }, prepared.effects).await;
    let repo = match added {
        Ok(repo) => repo,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "Repository and its copy stored");
    if let Err(e) = std::fs::rename(&staging, sync.mirror_path(repo.id)) {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = backend.registry.remove(RepoRef::Id(repo.id)).await;
        bail!("failed to move the new mirror into place: {e}");
    }
    if config.json {
        print_json(&output::repository_json(&repo, config.poll.quiet));
    } else {
        println!(
            "Tracking {} (id {}): {} branch(es), {} commit(s) recorded",
            repo.full_name, repo.id, prepared.branches, prepared.commits
        );
    }
    Ok(())
}

/// A local path becomes absolute (and must exist); URLs pass through.
fn normalize_clone_url(url: &str) -> anyhow::Result<String> {
    if url.contains("://") || url.contains('@') {
        return Ok(url.to_owned());
    }
    let path = std::path::Path::new(url);
    let absolute = std::fs::canonicalize(path).with_context(|| format!("clone URL {url} does not exist"))?;
    Ok(absolute.to_string_lossy().into_owned())
}

/// A progress bar on a terminal, plain lines otherwise (both on stderr).
struct ProgressReporter {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::sync::Mutex<std::time::Instant>,
}

impl ProgressReporter {
    fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            // The spinner turns while a long fetch reports nothing, so it never looks stuck.
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar, last_line: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    fn report(&self, progress: SyncProgress) {
        let message = match progress {
            SyncProgress::Listing => "listing remote refs and fetching".to_owned(),
            SyncProgress::Fetching { refs } => format!("fetched {refs} refs"),
            SyncProgress::Commits { done, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.set_message("recording commits");
                    return;
                }
                let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
                if done < total && last.elapsed() < std::time::Duration::from_secs(1) {
                    return;
                }
                *last = std::time::Instant::now();
                format!("recording commits {done}/{total}")
            }
        };
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) async fn find_repo(backend: &Backend, repo: &str) -> anyhow::Result<TrackedRepository> {
    match backend.registry.find(RepoRef::parse(repo)?).await? {
        Some(found) => Ok(found),
        None => bail!("repository {repo} is not tracked"),
    }
}

fn print_rows<T>(config: &Config, rows: &[T], to_json: fn(&T) -> Value, headers: &[&str], row: fn(&T) -> Vec<String>) {
    if config.json {
        print_json(&Value::Array(rows.iter().map(to_json).collect()));
    } else if rows.is_empty() {
        println!("Nothing recorded yet.");
    } else {
        print_table(headers, &rows.iter().map(row).collect::<Vec<_>>());
    }
}

async fn query(config: &Config, backend: &Backend, command: GithubCommand) -> anyhow::Result<()> {
    use crate::storage::copy::{IssueState, PullState};
    use crate::time::{rfc3339, rfc3339_opt};
    match command {
        GithubCommand::Sync { repo } => {
            let repo = find_repo(backend, &repo).await?;
            let sync = SyncEngine::new(config, backend.copy.clone());
            let _git_sync = sync.lock(repo.id).await?;
            let effects = sync.sync_all(&repo).await.with_context(|| format!("failed to sync {}", repo.full_name))?;
            let count = effects.len();
            backend.copy.apply(repo.id, effects).await?;
            let branches = backend.copy.branches(repo.id).await?;
            if config.json {
                print_json(&Value::Array(branches.iter().map(output::branch_json).collect()));
            } else {
                println!("Synced {} ({count} changes): {} branch(es)", repo.full_name, branches.len());
            }
        }
        GithubCommand::Branches { repo } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.branches(repo.id).await?;
            print_rows(config, &rows, output::branch_json, &["BRANCH", "HEAD", "SYNCED"], |b| {
                vec![b.name.clone(), b.head_sha.clone(), rfc3339(b.synced_at)]
            });
        }
        GithubCommand::Commits { repo, branch, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.commits(repo.id, branch, limit.clamp(1, 100_000)).await?;
            print_rows(config, &rows, output::commit_json, &["SHA", "AUTHOR", "COMMITTED", "MESSAGE"], |c| {
                vec![
                    c.sha[..12.min(c.sha.len())].to_owned(),
                    c.author_name.clone(),
                    rfc3339(c.committed_at * 1000),
                    c.message.lines().next().unwrap_or("").to_owned(),
                ]
            });
        }
        GithubCommand::Pulls { repo, state, limit } => {
            let state = match state.as_str() {
                "open" => PullState::Open,
                "closed" => PullState::Closed,
                "merged" => PullState::Merged,
                "all" => PullState::All,
                other => bail!("unknown state '{other}': expected open, closed, merged or all"),
            };
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.pulls(repo.id, state, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::pull_json,
                &["#", "STATE", "MERGED", "AUTHOR", "UPDATED", "TITLE"],
                |p| {
                    vec![
                        p.number.to_string(),
                        p.state.clone(),
                        p.merged.to_string(),
                        p.author.clone().unwrap_or_default(),
                        rfc3339(p.updated_at),
                        p.title.clone(),
                    ]
                },
            );
        }
        GithubCommand::Issues { repo, state, limit } => {
            let state = match state.as_str() {
                "open" => IssueState::Open,
                "closed" => IssueState::Closed,
                "all" => IssueState::All,
                other => bail!("unknown state '{other}': expected open, closed or all"),
            };
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.issues(repo.id, state, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::issue_json,
                &["#", "STATE", "COMMENTS", "AUTHOR", "UPDATED", "TITLE"],
                |i| {
                    vec![
                        i.number.to_string(),
                        i.state.clone(),
                        i.comments.to_string(),
                        i.author.clone().unwrap_or_default(),
                        rfc3339(i.updated_at),
                        i.title.clone(),
                    ]
                },
            );
        }
        GithubCommand::Releases { repo, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.releases(repo.id, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::release_json,
                &["TAG", "NAME", "DRAFT", "PRERELEASE", "PUBLISHED"],
                |r| {
                    vec![
                        r.tag_name.clone(),
                        r.name.clone().unwrap_or_default(),
                        r.draft.to_string(),
                        r.prerelease.to_string(),
                        rfc3339_opt(r.published_at).unwrap_or_default(),
                    ]
                },
            );
        }
        _ => unreachable!("only query commands reach here"),
    }
    Ok(())
}

async fn deliveries(config: &Config, backend: &Backend, args: DeliveriesArgs) -> anyhow::Result<()> {
    let status = args.status.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    if let Some(before) = &args.before {
        if backend.queue.get(before).await?.is_none() {
            bail!("no stored delivery with id '{before}' (--before takes a delivery id that `deliveries` listed)");
        }
    }
    // One more than asked for says whether another page exists.
    let mut filter = DeliveryFilter {
        status,
        before: args.before.clone(),
        limit: args.limit.saturating_add(1),
        ..Default::default()
    };
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
    let mut records = backend.queue.list(filter).await?;
    let more = records.len() > args.limit as usize;
    records.truncate(args.limit as usize);
    if more {
        // On stderr, so that `--json` stays one JSON document.
        let last = records.last().map_or("", |r| r.delivery_id.as_str());
        eprintln!("More deliveries exist: add --before {last} for the next {} (or raise --limit)", args.limit);
    }
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
