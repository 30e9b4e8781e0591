//! The polling fallback, so the copy is never silently stale: repositories without a
//! working webhook are polled every interval (jittered), and those in webhook mode are
//! reconciled hourly. A poll reads refs with `git ls-remote` (no API quota) and syncs only
//! what moved, and lists pull requests and issues with conditional requests (a 304 costs
//! no quota). Its effects go through the same normalizers and store as webhook deliveries.
//! A reconcile also checks the hook: gone or inactive on GitHub means back to polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futurnal_github::payload::{Issue, PullRequest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::PollConfig;
use crate::github::client::GitHubClient;
use crate::github::hooks;
use crate::handlers::normalize;
use crate::storage::copy::{CopyStore, Effect};
use crate::storage::registry::{PollWatermarks, Registry, TrackedRepository};
use crate::sync::SyncEngine;

/// How often the poller looks for repositories that are due.
const TICK: Duration = Duration::from_millis(500);

pub struct Poller {
    pub registry: Arc<dyn Registry>,
    pub copy: Arc<dyn CopyStore>,
    pub sync: Arc<SyncEngine>,
    /// `None` without a token: then only the git half runs.
    pub github: Option<Arc<GitHubClient>>,
    pub config: PollConfig,
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Default)]
struct RepoState {
    next_due: Option<Instant>,
    /// When this poller last asked GitHub to ping the repository's hook.
    pinged_at: Option<Instant>,
    /// The mode seen at the last poll, to log changes.
    mode: Option<&'static str>,
    /// `issues_since`: `since` for the issue listing, kept until something changes, so the
    /// request (and its ETag) stays the same and an unchanged repository answers 304.
    /// `pulls_seen`: the newest `updated_at` among the pull requests stored so far; the
    /// paged read stops once a page reaches it. Both persist across restarts; `None`
    /// until loaded.
    marks: Option<PollWatermarks>,
}

impl Poller {
    pub async fn run(self, shutdown: CancellationToken) {
        if self.github.is_none() {
            tracing::info!("No GitHub token: polling reads refs with git only (pull requests and issues need a token)");
        }
        let mut states: HashMap<i64, RepoState> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let repos = match self.registry.list().await {
                Ok(repos) => repos,
                Err(e) => {
                    tracing::warn!(error = %e, "Polling could not list repositories");
                    continue;
                }
            };
            for repo in repos {
                if shutdown.is_cancelled() {
                    return;
                }
                let state = states.entry(repo.id).or_default();
                if state.next_due.is_some_and(|due| Instant::now() < due) {
                    continue;
                }
                let mode = repo.mode(self.config.quiet);
                if state.mode.is_some_and(|before| before != mode) {
                    if mode == "polling" {
                        tracing::warn!(repository = %repo.full_name, quiet_secs = self.config.quiet.as_secs(),
                            "Nothing verified heard from the hook lately (deliveries or pings); polling mode");
                    } else {
                        tracing::info!(repository = %repo.full_name, "The hook is heard from again; webhook mode");
                    }
                }
                state.mode = Some(mode);
                let webhook_mode = mode == "webhook";
                let result = self.poll(&repo, state).await;
                self.metrics.polled(*result.as_ref().unwrap_or(&0));
                match result {
                    Ok(changes) if changes > 0 => {
                        tracing::info!(repository = %repo.full_name, changes, webhook_mode, "Poll found changes")
                    }
                    Ok(_) => tracing::debug!(repository = %repo.full_name, "Poll: nothing changed"),
                    Err(e) => tracing::warn!(repository = %repo.full_name, error = %format!("{e:#}"), "Poll failed"),
                }
                let interval =
                    if webhook_mode { self.config.reconcile } else { self.config.interval_for(&repo.full_name) };
                state.next_due = Some(Instant::now() + jitter(interval));
            }
        }
    }

    /// One poll (or reconcile) of one repository; returns how many effects it applied.
    async fn poll(&self, repo: &TrackedRepository, state: &mut RepoState) -> anyhow::Result<usize> {
        if let (Some(github), Some(hook_id)) = (&self.github, repo.hook_id) {
            match hooks::get(github, &repo.full_name, hook_id).await? {
                Some(hook) if hook.active => self.ping_if_quiet(github, repo, hook_id, state).await,
                _ => {
                    tracing::warn!(repository = %repo.full_name, hook_id, "The hook is gone or inactive on GitHub; back to polling");
                    self.registry.set_hook(repo.id, None).await?;
                }
            }
        }
        let mut count = 0;
        {
            // The git half holds the repository's sync lock until its effects are stored;
            // the API half (which may wait out a rate limit) does not.
            let _git_sync = self.sync.lock(repo.id).await?;
            let effects = self.sync.sync_if_moved(repo).await?;
            count += effects.len();
            if !effects.is_empty() {
                self.copy.apply(repo.id, effects, crate::storage::changes::Cause::Poll).await?;
            }
        }
        if let Some(github) = &self.github {
            let marks = match &state.marks {
                Some(marks) => marks.clone(),
                None => self.registry.poll_watermarks(repo.id).await?,
            };
            let (mut effects, pulls_seen) = self.pulls(github, repo, marks.pulls_seen.as_deref()).await?;
            let (issues, issues_since) = self.issues(github, repo, marks.issues_since.as_deref()).await?;
            effects.extend(issues);
            count += effects.len();
            if !effects.is_empty() {
                self.copy.apply(repo.id, effects, crate::storage::changes::Cause::Poll).await?;
            }
            // Moved on only once what was read is stored.
            let moved = PollWatermarks {
                pulls_seen: pulls_seen.max(marks.pulls_seen.clone()),
                issues_since: issues_since.max(marks.issues_since.clone()),
            };
            if moved != marks {
                self.registry.set_poll_watermarks(repo.id, moved.clone()).await?;
            }
            state.marks = Some(moved);
        }
        Ok(count)
    }

    /// Webhook mode needs GitHub to have been heard from recently; a quiet repository may
    /// simply have had no events, so its hook is asked for a ping (one API request, at most
    /// every half reconcile interval). When the ping arrives the repository stays (or goes
    /// back) in webhook mode; when it does not, it is polled until one does.
    async fn ping_if_quiet(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        hook_id: u64,
        state: &mut RepoState,
    ) {
        let half = self.config.reconcile / 2;
        let heard_recently =
            repo.last_heard_ms().is_some_and(|at| crate::time::now_ms() - at <= half.as_millis() as i64);
        if heard_recently || state.pinged_at.is_some_and(|at| at.elapsed() < half) {
            return;
        }
        state.pinged_at = Some(Instant::now());
        match hooks::ping(github, &repo.full_name, hook_id).await {
            Ok(()) => tracing::debug!(repository = %repo.full_name, hook_id, "Quiet hook: asked GitHub for a ping"),
            Err(e) => {
                tracing::warn!(repository = %repo.full_name, hook_id, error = %e, "Could not ask GitHub for a ping")
            }
        }
    }

    /// Pull requests updated since the last poll. GitHub's list has no `since`, so it is
    /// read newest-updated first, page after page, until a page reaches what the last
    /// poll saw (the first poll reads them all).
    async fn pulls(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        seen: Option<&str>,
    ) -> anyhow::Result<(Vec<Effect>, Option<String>)> {
        let path = format!("/repos/{}/pulls?state=all&sort=updated&direction=desc&per_page=100", repo.full_name);
        let more = |page: &[serde_json::Value]| match (seen, page.last().and_then(|p| p["updated_at"].as_str())) {
            (Some(seen), Some(oldest_on_page)) => oldest_on_page >= seen,
            _ => true,
        };
        let Some(list) = github.get_conditional_list(&path, more).await? else { return Ok((Vec::new(), None)) };
        let mut effects = Vec::new();
        let mut newest: Option<String> = None;
        for item in &list {
            match serde_json::from_value::<PullRequest>(item.clone())
                .map_err(|e| e.to_string())
                .and_then(|pr| normalize::pull_record(&pr).map(|record| (pr.updated_at.clone(), record)))
            {
                Ok((updated_at, record)) => {
                    if newest.as_deref().is_none_or(|n| updated_at.as_str() > n) {
                        newest = Some(updated_at);
                    }
                    effects.push(Effect::Pull(record));
                }
                Err(e) => {
                    tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a pull request the API sent")
                }
            }
        }
        Ok((effects, newest))
    }

    /// Issues updated since the last poll (`since`), every page of them.
    async fn issues(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        since: Option<&str>,
    ) -> anyhow::Result<(Vec<Effect>, Option<String>)> {
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        let path =
            format!("/repos/{}/issues?state=all&sort=updated&direction=desc&per_page=100{since}", repo.full_name);
        let Some(list) = github.get_conditional_list(&path, |_| true).await? else { return Ok((Vec::new(), None)) };
        let mut effects = Vec::new();
        let mut newest: Option<String> = None;
        for item in list {
            let parsed = serde_json::from_value::<Issue>(item).map_err(|e| e.to_string());
            match parsed {
                Ok(issue) if issue.pull_request.is_some() => {}
                Ok(issue) => {
                    if newest.as_deref().is_none_or(|n| issue.updated_at.as_str() > n) {
                        newest = Some(issue.updated_at.clone());
                    }
                    match normalize::issue_record(&issue, false, None) {
                        Ok(record) => effects.push(Effect::Issue(record)),
                        Err(e) => {
                            tracing::warn!(repository = %repo.full_name, error = %e, "Skipping an issue the API sent")
                        }
                    }
                }
                Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Skipping an issue the API sent"),
            }
        }
        Ok((effects, newest))
    }
}

/// ±10 % so that many repositories do not poll in lockstep.
fn jitter(interval: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    interval.mul_f64(0.9 + 0.2 * f64::from(byte[0]) / 255.0)
}
