//! `futurnal serve`: the listeners, the workers and the maintenance tasks under one
//! cancellation token. [`run`] takes bound listeners and the token, so tests bind port 0
//! and stop it at will.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::Role;
use crate::config::Config;
use crate::github::client::GitHubClient;
use crate::handlers::{DeliveryHandler, EventHandlers};
use crate::http::{self, AppState, Refresh, ServerOptions};
use crate::metrics::Metrics;
use crate::storage::backend::Backend;
use crate::sync::SyncEngine;
use crate::time::now_ms;
use crate::worker::WorkerPool;

pub struct Listeners {
    /// Absent for `--role worker`.
    pub webhook: Option<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds what the role needs.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let webhook = match config.serve.role {
            Role::Worker => None,
            Role::All | Role::Receiver => Some(
                http::bind(config.serve.listen)
                    .with_context(|| format!("failed to listen on {}", config.serve.listen))?,
            ),
        };
        let admin = http::bind(config.serve.admin_listen)
            .with_context(|| format!("failed to listen on {}", config.serve.admin_listen))?;
        Ok(Self { webhook, admin })
    }

    /// `listening webhook=ADDR admin=ADDR`, the first line `serve` prints.
    pub fn banner(&self) -> String {
        let webhook = self
            .webhook
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "none".to_owned(), |a| a.to_string());
        let admin = self.admin.local_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
        format!("listening webhook={webhook} admin={admin}")
    }
}

/// Parts a test may replace.
#[derive(Default)]
pub struct Overrides {
    pub handler: Option<Arc<dyn DeliveryHandler>>,
    pub metrics: Option<Arc<Metrics>>,
    /// The GitHub client of the poller and the tunnel watcher (tests point it at a fake);
    /// default: one made from the token, when there is one.
    pub github: Option<Arc<GitHubClient>>,
    /// Tasks run beside the daemon's own, under the same supervision (a test checks that
    /// a task that panics stops the daemon with an error).
    pub extra_tasks: Vec<crate::storage::BoxFuture<'static, ()>>,
}

/// Runs until `shutdown` is cancelled, then stops accepting, lets in-flight requests and
/// handlers finish (or queues their deliveries again), flushes the database and returns.
pub async fn run(
    config: Config,
    backend: Backend,
    listeners: Listeners,
    overrides: Overrides,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let vault = Arc::new(crate::vault::Vault::new(&config, &backend)?);
    let receives = listeners.webhook.is_some() && config.webhook.verify_signatures;
    let (secrets, source) = vault.load(true).await?;
    if config.webhook.verify_signatures {
        if let Some(source) = &source {
            tracing::info!(source = %source, "Webhook signatures are verified with the global secret");
        }
    } else {
        tracing::warn!("Webhook signature verification is OFF (allowed on loopback only)");
    }
    let recovered = backend.queue.recover(&config.serve.instance).await?;
    if recovered > 0 {
        tracing::warn!(deliveries = recovered, "Deliveries left processing by a previous run were queued again");
    }
    let metrics = overrides.metrics.unwrap_or_default();
    let work_available = Arc::new(Notify::new());
    let mut state = AppState::new(
        &config,
        backend.queue.clone(),
        backend.registry.clone(),
        vault.clone(),
        secrets,
        metrics.clone(),
        work_available.clone(),
    );
    state.cluster = backend.cluster.clone();
    state.copy = Some(backend.copy.clone());
    state.changes = backend.change_signal();
    state.shutdown = shutdown.clone();
    let activity = Arc::new(crate::activity::Activity {
        queue: backend.queue.clone(),
        metrics: metrics.clone(),
        instance: config.serve.instance.clone(),
    });
    state.activity = Some(activity.clone());
    let github: Option<Arc<GitHubClient>> = overrides.github.clone().or_else(|| {
        crate::github::client::Token::from_env()
            .and_then(|t| GitHubClient::new(&config.github_api_url, Some(t)).ok())
            .map(Arc::new)
    });
    state.github = github.clone();
    if config.serve.role != Role::Receiver {
        state.sync = Some(Arc::new(SyncEngine::new(&config, backend.copy.clone()).with_metrics(metrics.clone())));
    }
    let state = Arc::new(state);
    state.sources.load_github().await?;
    if let Err(e) = state.tracked.reload().await {
        tracing::warn!(error = %e, "Could not load tracked repositories yet");
    }
    let server_options = ServerOptions {
        header_read_timeout: config.webhook.header_read_timeout,
        shutdown_grace: config.serve.shutdown_grace,
        max_connections: Some(config.webhook.max_connections),
    };
    let admin_options = ServerOptions { max_connections: None, ..server_options };

    let webhook_port = listeners.webhook.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
    let mut tasks = JoinSet::new();
    if let Some(listener) = listeners.webhook {
        tasks.spawn(http::serve(listener, http::webhook_router(state.clone()), server_options, shutdown.clone()));
    }
    tasks.spawn(http::sources::refresh_daily(state.sources.clone(), shutdown.clone()));
    tasks.spawn(activity.run(shutdown.clone()));
    tasks.spawn(http::serve(listeners.admin, http::admin_router(state.clone()), admin_options, shutdown.clone()));
    let wake_workers = (config.serve.role != Role::Receiver).then(|| work_available.clone());
    let secrets_changed = if receives { vault.on_change() } else { None };
    if let Some(listener) = backend.listener(wake_workers, secrets_changed, true, shutdown.clone()) {
        tasks.spawn(listener);
    }
    if config.serve.role != Role::Receiver {
        let pool = WorkerPool {
            queue: backend.queue.clone(),
            handler: overrides.handler.unwrap_or_else(|| {
                let sync = Arc::new(SyncEngine::new(&config, backend.copy.clone()).with_metrics(metrics.clone()));
                Arc::new(EventHandlers::new(backend.registry.clone(), sync))
            }),
            config: config.workers.clone(),
            metrics: metrics.clone(),
            work_available,
            shutdown_grace: config.serve.shutdown_grace,
            instance: config.serve.instance.clone(),
        };
        tasks.spawn(pool.run(shutdown.clone()));
    }
    // The singletons: on one instance at a time, the leader (always this one on SQLite).
    let singletons = {
        let (state, config, github) = (state.clone(), config.clone(), github.clone());
        let (registry, copy, metrics) = (backend.registry.clone(), backend.copy.clone(), metrics.clone());
        move |stop: CancellationToken| {
            let mut set = JoinSet::new();
            if let (Some(github), Some(port)) = (github.clone(), webhook_port) {
                set.spawn(follow_ngrok(state.clone(), github, config.clone(), port, stop.clone()));
            }
            if let Some(port) = webhook_port {
                set.spawn(follow_smee(state.clone(), config.clone(), port, stop.clone()));
            }
            set.spawn(catch_up_loop(state.clone(), github.clone(), stop.clone()));
            if config.serve.poll {
                let poller = crate::poll::Poller {
                    registry: registry.clone(),
                    copy: copy.clone(),
                    sync: Arc::new(SyncEngine::new(&config, copy.clone()).with_metrics(metrics.clone())),
                    github: github.clone(),
                    config: config.poll.clone(),
                    metrics: metrics.clone(),
                };
                set.spawn(poller.run(stop.clone()));
            }
            set.spawn(crate::feed::prune_loop(copy.clone(), config.changes.retention, stop.clone()));
            set.spawn(prune_loop(state.clone(), config.queue.retention, stop));
            set
        }
    };
    let leadership = crate::leader::Leadership {
        cluster: backend.cluster.clone(),
        me: crate::storage::cluster::InstanceInfo {
            name: config.serve.instance.clone(),
            role: state.role.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: now_ms(),
            // The singletons poll and sync: an instance with workers leads.
            may_lead: config.serve.role != Role::Receiver,
        },
        lease: config.serve.leader_lease,
        leading: state.leading.clone(),
    };
    tasks.spawn(leadership.run(singletons, shutdown.clone()));
    tasks.spawn(maintenance(state, shutdown.clone()));
    for task in overrides.extra_tasks {
        tasks.spawn(task);
    }

    // A task that panicked stops the daemon with an error (a non-zero exit, so that a
    // supervisor such as systemd's `Restart=on-failure` starts it again).
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "A daemon task failed; stopping");
            failed.get_or_insert_with(|| e.to_string());
            shutdown.cancel();
        }
    }
    backend.close();
    match failed {
        None => {
            tracing::info!("Stopped");
            Ok(())
        }
        Some(why) => anyhow::bail!("stopped because a daemon task failed: {why}"),
    }
}

/// Runs a smee forwarder for every hook made with `--tunnel smee` (new ones are picked
/// up at each tunnel check).
async fn follow_smee(state: Arc<AppState>, config: Config, port: u16, shutdown: CancellationToken) {
    let mut running: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        if let Ok(repos) = state.registry.list().await {
            for repo in repos.into_iter().filter(|r| r.hook_tunnel.as_deref() == Some("smee")) {
                let (Some(hook_id), Some(channel)) = (repo.hook_id, repo.hook_url) else { continue };
                if running.insert(channel.clone()) {
                    let receiver = format!("http://127.0.0.1:{port}/webhook/github");
                    tokio::spawn(crate::tunnel::smee_forward(channel, receiver, hook_id, shutdown.clone()));
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.tunnel.check) => {}
        }
    }
}

/// Keeps hooks made with `--tunnel ngrok` pointing at the tunnel's current public URL.
async fn follow_ngrok(
    state: Arc<AppState>,
    github: Arc<GitHubClient>,
    config: Config,
    port: u16,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.tunnel.check) => {}
        }
        let Ok(repos) = state.registry.list().await else { continue };
        let followed: Vec<_> = repos.into_iter().filter(|r| r.hook_tunnel.as_deref() == Some("ngrok")).collect();
        if followed.is_empty() {
            continue;
        }
        let current = match crate::tunnel::ngrok_public_url(&config.tunnel.ngrok_api_url, port).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read the ngrok tunnel's URL");
                continue;
            }
        };
        for repo in followed {
            let (Some(hook_id), Some(old)) = (repo.hook_id, repo.hook_url.as_deref()) else { continue };
            if old == current {
                continue;
            }
            let Some(secret) = state.vault.current_hook_secret(hook_id).await else {
                tracing::warn!(repository = %repo.full_name, hook_id, "The hook's secret file is missing; run `webhook enable` again");
                continue;
            };
            match crate::github::hooks::set_secret(&github, &repo.full_name, hook_id, &current, &secret).await {
                Ok(()) => {
                    let hook = crate::storage::registry::HookRef {
                        id: hook_id,
                        url: current.clone(),
                        tunnel: Some("ngrok".into()),
                    };
                    if let Err(e) = state.registry.set_hook(repo.id, Some(hook)).await {
                        tracing::warn!(repository = %repo.full_name, error = %e, "Could not record the new hook URL");
                    } else {
                        tracing::info!(repository = %repo.full_name, hook_id, url = %current, "The ngrok URL changed; hook updated");
                    }
                }
                Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Could not update the hook's URL"),
            }
        }
    }
}

/// An old secret stays accepted at most this long after a rotation nobody confirmed.
const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How often the delivery log is checked for deliveries that never reached us.
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Catch-up at start and every six hours, for every repository with a hook, when a
/// GitHub client is available. At start the listeners are bound, so the redeliveries it
/// asks for wait in the listen queue until the receiver accepts them.
async fn catch_up_loop(state: Arc<AppState>, github: Option<Arc<GitHubClient>>, shutdown: CancellationToken) {
    let Some(client) = github else {
        tracing::info!("No GitHub token: catch-up from GitHub's delivery log is off");
        return;
    };
    loop {
        match state.registry.list().await {
            Ok(repos) => {
                for repo in repos.into_iter().filter(|r| r.hook_id.is_some()) {
                    let hook = repo.hook_id.expect("filtered");
                    match crate::github::catch_up::catch_up(
                        &client,
                        state.queue.as_ref(),
                        &repo.full_name,
                        hook,
                        now_ms(),
                    )
                    .await
                    {
                        Ok(report) if !report.redelivered.is_empty() => tracing::info!(
                            repository = %repo.full_name, redelivered = report.redelivered.len(), "Catch-up asked for missed deliveries"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Catch-up failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Catch-up could not list repositories"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CATCH_UP_INTERVAL) => {}
        }
    }
}

/// Keeps the tracked-repository set and the queue depth fresh, prunes old deliveries and
/// forgets idle rate-limit entries.
async fn maintenance(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks += 1;
        if let Err(e) = state.tracked.reload().await {
            tracing::warn!(error = %e, "Refreshing tracked repositories failed");
        }
        // Rotations GitHub confirmed (or that outlived their grace period) end here.
        let confirmed: Vec<u64> = state.rotation_confirmed.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        let stale =
            if ticks.is_multiple_of(30) { state.vault.stale_rotations(ROTATION_GRACE).await } else { Vec::new() };
        for hook in confirmed.into_iter().chain(stale) {
            match state.vault.finish_rotation(hook).await {
                Ok(()) => {
                    tracing::info!(hook_id = hook, "Secret rotation finished; the old secret is no longer accepted")
                }
                Err(e) => {
                    tracing::warn!(hook_id = hook, error = %format!("{e:#}"), "Could not finish a secret rotation")
                }
            }
        }
        if ticks.is_multiple_of(30) {
            state.vault.forget_expired_pending().await;
        }
        // Deliveries reload what the CLI changed as soon as they arrive; this reads
        // everything again as a backstop (secret files written by hand, keychain entries
        // that became readable). Keychain entries are read only when their file changed.
        state.refresh_secrets(Refresh::Periodic).await;
        if ticks.is_multiple_of(5) {
            if let Err(e) = state.queue.stats().await {
                tracing::warn!(error = %e, "Counting the queue failed");
            }
            state.unverified_limiter.retain_recent();
        }
    }
}

/// Deliveries received before this were received longer ago than `retention` (none, for
/// a retention longer than the clock goes back).
pub(crate) fn retention_cutoff(now_ms: i64, retention: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

/// Prunes finished deliveries past the retention period: at the start of each term,
/// then hourly.
async fn prune_loop(state: Arc<AppState>, retention: Duration, stop: CancellationToken) {
    loop {
        let cutoff = retention_cutoff(now_ms(), retention);
        match state.queue.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "Pruned finished deliveries past the retention period"),
            Err(e) => tracing::warn!(error = %e, "Pruning old deliveries failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_cutoff_never_wraps() {
        let now = 1_700_000_000_000;
        assert_eq!(retention_cutoff(now, Duration::from_secs(86_400)), now - 86_400_000);
        // 10^12 days: its milliseconds do not fit an i64 (cast with `as`, they wrapped to a
        // cutoff in the future, and every finished delivery was pruned).
        assert!(retention_cutoff(now, Duration::from_secs(1_000_000_000_000 * 86_400)) < 0);
        assert!(retention_cutoff(now, Duration::MAX) < 0);
    }
}
