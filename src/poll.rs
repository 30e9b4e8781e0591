//! The polling fallback, so the copy is never silently stale: repositories without a
//! working webhook are polled every interval (jittered), and those in webhook mode are
//! reconciled hourly. A poll reads refs with `git ls-remote` (no API quota) and syncs only
//! what moved, and lists pull requests and issues with conditional requests (a 304 costs
//! no quota); for each pull request changed since the last poll, its reviews and review
//! comments; and the repository's labels and milestones, every page conditionally (those
//! lists do not put what changed first). An unchanged repository therefore costs no
//! quota at all. Its effects go through the same normalizers and store as webhook
//! deliveries. A reconcile also checks the hook: gone or inactive on GitHub means back to
//! polling.
//!
//! Polling does not notice deletions of reviews, review comments, labels or milestones
//! (a list only shows what exists, and a row missing from a list read a moment ago may be
//! one a webhook just stored); webhooks do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futurnal_github::payload::{Issue, Label, Milestone, PullRequest, Review, ReviewComment};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::PollConfig;
use crate::github::client::GitHubClient;
use crate::github::hooks;
use crate::handlers::normalize;
use crate::storage::copy::{CopyStore, Effect, LabelNaming};
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
            // What the conditional reads remember (ETags, pages) is forgotten unless what
            // they read is stored: else the next poll's 304s would skip what was lost.
            let mut read = Vec::new();
            let stored = self.poll_api(github, repo, &marks, &mut read).await;
            let (applied, moved) = match stored {
                Ok(done) => done,
                Err(e) => {
                    for path in &read {
                        github.forget_conditional(path);
                    }
                    return Err(e);
                }
            };
            count += applied;
            if moved != marks {
                self.registry.set_poll_watermarks(repo.id, moved.clone()).await?;
            }
            state.marks = Some(moved);
        }
        Ok(count)
    }

    /// The API half of a poll: reads and stores what changed (`read` collects the paths
    /// read conditionally). Returns how many effects it applied and the watermarks to keep.
    async fn poll_api(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        marks: &PollWatermarks,
        read: &mut Vec<String>,
    ) -> anyhow::Result<(usize, PollWatermarks)> {
        let pulls = self.pulls(github, repo, marks.pulls_seen.as_deref(), read).await?;
        let mut effects = pulls.effects;
        for number in pulls.changed {
            effects.extend(self.reviews(github, repo, number, read).await?);
        }
        let (issues, issues_since) = self.issues(github, repo, marks.issues_since.as_deref(), read).await?;
        effects.extend(issues);
        effects.extend(self.labels(github, repo, read).await?);
        effects.extend(self.milestones(github, repo, read).await?);
        let count = effects.len();
        if !effects.is_empty() {
            self.copy.apply(repo.id, effects, crate::storage::changes::Cause::Poll).await?;
        }
        // Moved on only once what was read is stored.
        let moved = PollWatermarks {
            pulls_seen: pulls.newest.max(marks.pulls_seen.clone()),
            issues_since: issues_since.max(marks.issues_since.clone()),
        };
        Ok((count, moved))
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
    /// poll saw (the first poll reads them all). `changed`: those updated at or after what
    /// the last poll saw (every one at the first poll), whose reviews are read next (a
    /// review or review comment moves its pull request's `updated_at`).
    async fn pulls(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        seen: Option<&str>,
        read: &mut Vec<String>,
    ) -> anyhow::Result<PolledPulls> {
        let path = format!("/repos/{}/pulls?state=all&sort=updated&direction=desc&per_page=100", repo.full_name);
        let more = |page: &[serde_json::Value]| match (seen, page.last().and_then(|p| p["updated_at"].as_str())) {
            (Some(seen), Some(oldest_on_page)) => oldest_on_page >= seen,
            _ => true,
        };
        read.push(path.clone());
        let mut polled = PolledPulls::default();
        let Some(list) = github.get_conditional_list(&path, more).await? else { return Ok(polled) };
        for item in &list {
            match serde_json::from_value::<PullRequest>(item.clone())
                .map_err(|e| e.to_string())
                .and_then(|pr| normalize::pull_record(&pr).map(|record| (pr.updated_at.clone(), record)))
            {
                Ok((updated_at, record)) => {
                    if seen.is_none_or(|seen| updated_at.as_str() >= seen) {
                        polled.changed.push(record.number);
                    }
                    if polled.newest.as_deref().is_none_or(|n| updated_at.as_str() > n) {
                        polled.newest = Some(updated_at);
                    }
                    polled.effects.push(Effect::Pull(record));
                }
                Err(e) => {
                    tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a pull request the API sent")
                }
            }
        }
        Ok(polled)
    }

    /// One pull request's reviews and review comments, every page, each conditionally.
    /// Pending reviews (only their author sees them; webhooks never tell of them) are
    /// left out. A pull request the API no longer knows (404) has none.
    async fn reviews(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        number: u64,
        read: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Effect>> {
        let mut effects = Vec::new();
        let reviews = format!("/repos/{}/pulls/{number}/reviews?per_page=100", repo.full_name);
        read.push(reviews.clone());
        for item in list_unless_gone(github, &reviews).await?.unwrap_or_default() {
            match serde_json::from_value::<Review>(item) {
                Ok(review) if review.state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("pending")) => {}
                Ok(review) => effects.push(Effect::Review(normalize::review_record(&review, number))),
                Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a review the API sent"),
            }
        }
        let comments = format!("/repos/{}/pulls/{number}/comments?per_page=100", repo.full_name);
        read.push(comments.clone());
        for item in list_unless_gone(github, &comments).await?.unwrap_or_default() {
            let record = serde_json::from_value::<ReviewComment>(item)
                .map_err(|e| e.to_string())
                .and_then(|c| normalize::review_comment_record(&c, number, false));
            match record {
                Ok(record) => effects.push(Effect::ReviewComment(record)),
                Err(e) => {
                    tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a review comment the API sent")
                }
            }
        }
        Ok(effects)
    }

    /// The repository's labels, when any page of them changed.
    async fn labels(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        read: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Effect>> {
        let path = format!("/repos/{}/labels?per_page=100", repo.full_name);
        read.push(path.clone());
        let Some(list) = github.get_conditional_all(&path).await? else { return Ok(Vec::new()) };
        let mut effects = Vec::new();
        for item in list {
            match serde_json::from_value::<Label>(item) {
                // The list shows each label under its name now: elsewhere, it was renamed.
                Ok(label) => effects.push(Effect::Label {
                    label: normalize::label_record(&label, false),
                    naming: LabelNaming::Current,
                }),
                Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a label the API sent"),
            }
        }
        Ok(effects)
    }

    /// The repository's milestones, open and closed, when any page of them changed.
    async fn milestones(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        read: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Effect>> {
        let path = format!("/repos/{}/milestones?state=all&per_page=100", repo.full_name);
        read.push(path.clone());
        let Some(list) = github.get_conditional_all(&path).await? else { return Ok(Vec::new()) };
        let mut effects = Vec::new();
        for item in list {
            let record = serde_json::from_value::<Milestone>(item)
                .map_err(|e| e.to_string())
                .and_then(|m| normalize::milestone_record(&m, false));
            match record {
                Ok(record) => effects.push(Effect::Milestone(record)),
                Err(e) => tracing::warn!(repository = %repo.full_name, error = %e, "Skipping a milestone the API sent"),
            }
        }
        Ok(effects)
    }

    /// Issues updated since the last poll (`since`), every page of them.
    async fn issues(
        &self,
        github: &GitHubClient,
        repo: &TrackedRepository,
        since: Option<&str>,
        read: &mut Vec<String>,
    ) -> anyhow::Result<(Vec<Effect>, Option<String>)> {
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        let path =
            format!("/repos/{}/issues?state=all&sort=updated&direction=desc&per_page=100{since}", repo.full_name);
        read.push(path.clone());
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

/// What a poll read of the pull requests.
#[derive(Default)]
struct PolledPulls {
    effects: Vec<Effect>,
    /// The newest `updated_at` read.
    newest: Option<String>,
    /// Those changed since the last poll, by number.
    changed: Vec<u64>,
}

/// A whole list, conditionally (`None`: unchanged), or `None` too when GitHub answers 404.
async fn list_unless_gone(github: &GitHubClient, path: &str) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    match github.get_conditional_all(path).await {
        Ok(list) => Ok(list),
        Err(e) if e.status() == Some(404) => {
            tracing::warn!(path, error = %e, "A pull request's list is gone; skipping it");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// ±10 % so that many repositories do not poll in lockstep.
fn jitter(interval: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    interval.mul_f64(0.9 + 0.2 * f64::from(byte[0]) / 255.0)
}
