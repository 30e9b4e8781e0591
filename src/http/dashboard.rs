//! The dashboard's JSON API on the admin listener (`docs/dashboard-api.md`): the overview,
//! repositories with their actions (sync, ping, catch-up), deliveries with filters and a
//! page each, replaying a filtered set, and the local copy per repository. Everything
//! here is behind `admin::guard` (token, Host check, CSRF for POSTs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::output;
use crate::storage::changes::ChangeFilter;
use crate::storage::copy::{IssueState, PullState};
use crate::storage::entities::MilestoneState;
use crate::storage::queue::{DeliveryFilter, DeliveryRecord, DeliveryStatus};
use crate::storage::registry::{RepoRef, TrackedRepository};
use crate::storage::StoreError;
use crate::time::{now_ms, rfc3339_opt};

/// How long GitHub's view of a hook is reused: the dashboard re-reads every 1.5 s, and
/// each look would cost an API request per repository.
const HOOK_CACHE: Duration = Duration::from_secs(60);

use super::{json_error as error, json_unavailable as unavailable};

/// GitHub's web address for an API base: `https://api.github.com` → `https://github.com`,
/// GitHub Enterprise's `https://host/api/v3` → `https://host`.
pub fn web_url(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.") {
        return format!("https://{rest}");
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_owned()
}

/// GitHub's view of hooks, reused for [`HOOK_CACHE`].
#[derive(Default)]
pub struct HookCache {
    entries: std::sync::Mutex<HashMap<u64, (Instant, Option<crate::github::hooks::Hook>)>>,
}

impl HookCache {
    async fn get(&self, state: &AppState, repo: &TrackedRepository) -> Option<crate::github::hooks::Hook> {
        let (github, id) = (state.github.as_ref()?, repo.hook_id?);
        if let Some((at, hook)) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            if at.elapsed() < HOOK_CACHE {
                return hook.clone();
            }
        }
        let hook = match crate::github::hooks::get(github, &repo.full_name, id).await {
            Ok(hook) => hook,
            Err(e) => {
                tracing::debug!(repository = %repo.full_name, error = %e, "Could not read the hook from GitHub");
                None
            }
        };
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (Instant::now(), hook.clone()));
        hook
    }
}

/// `GET /api/overview`.
pub async fn overview(State(state): State<Arc<AppState>>) -> Response {
    let health = super::health::health_json(&state).await;
    let stats = state.queue.stats().await.ok();
    let charts = match &state.activity {
        Some(activity) => activity.charts(now_ms()).await,
        None => Value::Null,
    };
    Json(json!({
        "health": health,
        "queue": {
            "depth": stats.map_or(state.queue.approximate_depth(), |s| s.depth),
            "cap": state.max_queued,
            "oldest_age_seconds": stats.and_then(|s| s.oldest_pending_received_at_ms)
                .map(|at| (now_ms() - at).max(0) as f64 / 1000.0),
        },
        "github_web_url": state.github_web_url,
        "charts": charts,
    }))
    .into_response()
}

fn mirror_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

async fn repository_view(state: &AppState, repo: &TrackedRepository) -> Result<Value, StoreError> {
    let backlog = state.queue.repository_backlog(repo.github_id, &repo.full_name).await?;
    let watermarks = state.registry.poll_watermarks(repo.id).await?;
    let hook = state.hooks.get(state, repo).await;
    let now = now_ms();
    let heard = repo.last_heard_ms().is_some_and(|at| now - at <= state.webhook_quiet.as_millis() as i64);
    let (mode, reason) = match (repo.hook_id, &hook) {
        (None, _) => ("polling", "no webhook set up (webhook enable)".to_owned()),
        (Some(_), Some(h)) if !h.active => ("polling", "the hook is inactive on GitHub".to_owned()),
        (Some(_), _) if heard => ("webhook", "verified deliveries or pings arriving".to_owned()),
        (Some(_), _) => (
            "polling",
            format!("nothing heard from GitHub for over {} s (polling until it is)", state.webhook_quiet.as_secs()),
        ),
    };
    let mirror = state.sync.as_ref().map(|s| mirror_bytes(&s.mirror_path(repo.id)));
    Ok(json!({
        "id": repo.id,
        "repository": repo.full_name,
        "html_url": format!("{}/{}", state.github_web_url, repo.full_name),
        "mode": mode,
        "mode_reason": reason,
        "hook_id": repo.hook_id,
        "url": repo.hook_url,
        "active": hook.as_ref().map(|h| h.active),
        "last_ping_at": rfc3339_opt(repo.last_ping_at_ms),
        "last_delivery_at": rfc3339_opt(repo.last_delivery_at_ms),
        "last_response": hook.map(|h| h.last_response).unwrap_or(Value::Null),
        "failures": backlog.failures,
        "queue_depth": backlog.queue_depth,
        "poll_watermark": watermarks.pulls_seen.or(watermarks.issues_since),
        "mirror_bytes": mirror,
        "last_sync_at": rfc3339_opt(repo.synced_at_ms),
        "branches": repo.branches,
        "default_branch": repo.default_branch,
    }))
}

/// `GET /api/repositories`.
pub async fn repositories(State(state): State<Arc<AppState>>) -> Response {
    let repos = match state.registry.list().await {
        Ok(repos) => repos,
        Err(e) => return unavailable("Listing repositories", &e),
    };
    let mut out = Vec::with_capacity(repos.len());
    for repo in &repos {
        match repository_view(&state, repo).await {
            Ok(view) => out.push(view),
            Err(e) => return unavailable("Reading a repository", &e),
        }
    }
    Json(out).into_response()
}

async fn find(state: &AppState, id: i64) -> Result<TrackedRepository, Response> {
    match state.registry.find(RepoRef::Id(id)).await {
        Ok(Some(repo)) => Ok(repo),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no tracked repository with id {id}"))),
        Err(e) => Err(unavailable("Finding a repository", &e)),
    }
}

/// `POST /api/repositories/{id}/sync`: as `sources github sync`.
pub async fn sync(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    let repo = match find(&state, id).await {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let (Some(sync), Some(copy)) = (state.sync.clone(), state.copy.clone()) else {
        return error(StatusCode::CONFLICT, "this instance does not sync repositories (role receiver)");
    };
    let before = copy.changes_bounds().await.map(|b| b.newest).unwrap_or(0);
    let result = async {
        let _lock = sync.lock(repo.id).await?;
        let effects = sync.sync_all(&repo).await?;
        copy.apply(repo.id, effects, crate::storage::changes::Cause::Sync).await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let filter = ChangeFilter { since: before, limit: 1000, repository: Some(repo.id), kind: None };
            let changes = copy.changes(filter).await.map(|c| c.len()).unwrap_or(0);
            tracing::info!(repository = %repo.full_name, changes, "Synced from the dashboard");
            Json(json!({ "status": "done", "changes": changes })).into_response()
        }
        Err(e) => {
            tracing::warn!(repository = %repo.full_name, error = %format!("{e:#}"), "Sync from the dashboard failed");
            error(StatusCode::BAD_GATEWAY, format!("sync failed: {e:#}"))
        }
    }
}

/// `POST /api/repositories/{id}/ping`: GitHub pings the hook.
pub async fn ping(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    let repo = match find(&state, id).await {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let Some(hook) = repo.hook_id else {
        return error(StatusCode::CONFLICT, "this repository has no webhook (webhook enable)");
    };
    let Some(github) = state.github.clone() else {
        return error(StatusCode::CONFLICT, "no GitHub token: set GITHUB_TOKEN or `sources github token set`");
    };
    match crate::github::hooks::ping(&github, &repo.full_name, hook).await {
        Ok(()) => Json(json!({ "status": "sent" })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("GitHub refused the ping: {e}")),
    }
}

/// `POST /api/repositories/{id}/catch-up`.
pub async fn catch_up(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    let repo = match find(&state, id).await {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let Some(hook) = repo.hook_id else {
        return error(StatusCode::CONFLICT, "this repository has no webhook (webhook enable)");
    };
    let Some(github) = state.github.clone() else {
        return error(StatusCode::CONFLICT, "no GitHub token: set GITHUB_TOKEN or `sources github token set`");
    };
    match crate::github::catch_up::catch_up(&github, state.queue.as_ref(), &repo.full_name, hook, now_ms()).await {
        Ok(report) => Json(json!({ "status": "done", "redelivered": report.redelivered.len() })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("catch-up failed: {e:#}")),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    repository: Option<String>,
    event: Option<String>,
    action: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The filter a deliveries query asks for, or why it is refused.
fn delivery_filter(q: &DeliveriesQuery) -> Result<DeliveryFilter, String> {
    let time = |value: &Option<String>, name: &str| -> Result<Option<i64>, String> {
        non_empty(value)
            .map(|v| crate::time::parse_ms(&v).ok_or_else(|| format!("{name} must be an RFC 3339 time, not '{v}'")))
            .transpose()
    };
    Ok(DeliveryFilter {
        repository_name: non_empty(&q.repository),
        repository_github_id: None,
        status: non_empty(&q.status).map(|s| s.parse()).transpose()?,
        before: non_empty(&q.before),
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
        event: non_empty(&q.event),
        action: non_empty(&q.action),
        received_since_ms: time(&q.since, "since")?,
        received_until_ms: time(&q.until, "until")?,
        id_prefix: non_empty(&q.q),
    })
}

/// `GET /api/deliveries?…`: what `webhook deliveries --json` prints, filtered.
pub async fn deliveries(State(state): State<Arc<AppState>>, Query(q): Query<DeliveriesQuery>) -> Response {
    let filter = match delivery_filter(&q) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.queue.list(filter).await {
        Ok(records) => Json(records.iter().map(output::delivery_json).collect::<Vec<_>>()).into_response(),
        Err(e) => unavailable("Listing deliveries", &e),
    }
}

fn kept_headers(d: &DeliveryRecord) -> Value {
    let mut headers = serde_json::Map::new();
    headers.insert("x-github-event".into(), d.event.clone().into());
    headers.insert("x-github-delivery".into(), d.delivery_id.clone().into());
    if let Some(hook) = d.hook_id {
        headers.insert("x-github-hook-id".into(), hook.to_string().into());
    }
    Value::Object(headers)
}

/// `GET /api/deliveries/{id}`.
pub async fn delivery(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let record = match state.queue.get(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such delivery"),
        Err(e) => return unavailable("Reading a delivery", &e),
    };
    let (payload, payload_bytes) = match state.queue.payload(&id).await {
        Ok(Some(body)) => match body.json() {
            Ok(bytes) => {
                let size = bytes.len();
                let value = serde_json::from_slice::<Value>(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
                (value, Some(size))
            }
            Err(message) => (Value::String(message), None),
        },
        Ok(None) => (Value::Null, None),
        Err(e) => return unavailable("Reading a payload", &e),
    };
    let attempts = match state.queue.attempts(&id).await {
        Ok(list) => list,
        Err(e) => return unavailable("Reading a delivery's attempts", &e),
    };
    let changes = match &state.copy {
        Some(copy) => copy.changes_caused_by(&id, 1000).await.unwrap_or_default(),
        None => Vec::new(),
    };
    Json(json!({
        "delivery": output::delivery_json(&record),
        "headers": kept_headers(&record),
        "payload": payload,
        "payload_bytes": payload_bytes,
        "attempts": attempts.iter().map(output::attempt_json).collect::<Vec<_>>(),
        "changes": changes.iter().map(crate::feed::change_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /api/deliveries/replay?…`: replays every delivery the filter matches (its status
/// must be dead or done: replaying what is still pending would do it twice).
pub async fn replay_matching(State(state): State<Arc<AppState>>, Query(q): Query<DeliveriesQuery>) -> Response {
    let mut filter = match delivery_filter(&q) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if !matches!(filter.status, Some(DeliveryStatus::Dead | DeliveryStatus::Done)) {
        return error(StatusCode::BAD_REQUEST, "status=dead or status=done is required");
    }
    filter.limit = 1000;
    filter.before = None;
    let mut replayed = 0u64;
    // Each replay takes its delivery out of the filter's status, so the first page is
    // read again until it is empty (bounded: a delivery that finishes dead again while
    // this runs could be seen twice, so at most 100 rounds).
    for _ in 0..100 {
        let page = match state.queue.list(filter.clone()).await {
            Ok(page) => page,
            Err(e) => return unavailable("Listing deliveries to replay", &e),
        };
        if page.is_empty() {
            break;
        }
        for record in page {
            match state.queue.replay(&record.delivery_id).await {
                Ok(_) => replayed += 1,
                Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
                Err(e) => return unavailable("Replaying a delivery", &e),
            }
        }
        state.work_available.notify_one();
    }
    tracing::info!(replayed, "Deliveries queued again from the dashboard");
    Json(json!({ "status": "queued", "replayed": replayed })).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct CopyQuery {
    branch: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    pull: Option<u64>,
}

/// `GET /api/repositories/{id}/{what}`: the local copy, in the query commands' shapes.
pub async fn copy(
    State(state): State<Arc<AppState>>,
    Path((id, what)): Path<(i64, String)>,
    Query(q): Query<CopyQuery>,
) -> Response {
    let repo = match find(&state, id).await {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let Some(copy) = state.copy.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the local copy is not available on this listener");
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows: Result<Vec<Value>, StoreError> = match what.as_str() {
        "branches" => copy.branches(repo.id).await.map(|r| r.iter().map(output::branch_json).collect()),
        "commits" => copy
            .commits(repo.id, non_empty(&q.branch), limit)
            .await
            .map(|r| r.iter().map(output::commit_json).collect()),
        "pulls" => {
            let pull_state = match q.state.as_deref().unwrap_or("all") {
                "open" => PullState::Open,
                "closed" => PullState::Closed,
                "merged" => PullState::Merged,
                "all" => PullState::All,
                other => return error(StatusCode::BAD_REQUEST, format!("unknown state '{other}'")),
            };
            copy.pulls(repo.id, pull_state, limit).await.map(|r| r.iter().map(output::pull_json).collect())
        }
        "issues" => {
            let issue_state = match q.state.as_deref().unwrap_or("all") {
                "open" => IssueState::Open,
                "closed" => IssueState::Closed,
                "all" => IssueState::All,
                other => return error(StatusCode::BAD_REQUEST, format!("unknown state '{other}'")),
            };
            copy.issues(repo.id, issue_state, limit).await.map(|r| r.iter().map(output::issue_json).collect())
        }
        "releases" => copy.releases(repo.id, limit).await.map(|r| r.iter().map(output::release_json).collect()),
        "reviews" => copy.reviews(repo.id, q.pull, limit).await.map(|r| r.iter().map(output::review_json).collect()),
        "review-comments" => copy
            .review_comments(repo.id, q.pull, limit)
            .await
            .map(|r| r.iter().map(output::review_comment_json).collect()),
        "labels" => copy.labels(repo.id, limit).await.map(|r| r.iter().map(output::label_json).collect()),
        "milestones" => {
            let milestone_state = match q.state.as_deref().unwrap_or("all") {
                "open" => MilestoneState::Open,
                "closed" => MilestoneState::Closed,
                "all" => MilestoneState::All,
                other => return error(StatusCode::BAD_REQUEST, format!("unknown state '{other}'")),
            };
            copy.milestones(repo.id, milestone_state, limit)
                .await
                .map(|r| r.iter().map(output::milestone_json).collect())
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown view '{other}': branches, commits, pulls, issues, releases, reviews, review-comments, \
                     labels or milestones"
                ),
            )
        }
    };
    match rows {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => unavailable("Reading the local copy", &e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn github_web_addresses() {
        assert_eq!(super::web_url("https://api.github.com"), "https://github.com");
        assert_eq!(super::web_url("https://ghe.example/api/v3/"), "https://ghe.example");
        assert_eq!(super::web_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }
}
