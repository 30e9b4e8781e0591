//! The change feed on the admin listener (see [`crate::feed`]):
//!
//! - `GET /api/changes?since=SEQ&limit=N&repository=R&kind=K&wait=S`: a JSON page
//!   `{"changes": […], "next": …, "oldest": …, "newest": …}`; with `wait` it answers as
//!   soon as there is a change after `since` (or after S seconds, at most 60, with none).
//! - The same with `Accept: text/event-stream`: Server-Sent Events, one event per change
//!   (`id:` its number, `data:` the change), `Last-Event-ID` resumes after that number,
//!   a comment every 15 s (`[changes] heartbeat_secs`) keeps idle connections open. Events are read a page at a time,
//!   only as fast as the client takes them: a slow follower holds one page here, never
//!   more.
//! - `GET /api/snapshot?repository=R[&kind=K]`: the repository as the changes that would
//!   build it, and the `seq` to follow from.
//!
//! A cursor older than what is kept (or past the newest) is answered 410 with how to
//! resync; on a stream that falls behind the retention, an `event: gone` says the same
//! and the stream ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::feed::{self, Read};
use crate::storage::changes::{ChangeFilter, ChangeRecord};
use crate::storage::copy::CopyStore;
use crate::storage::registry::{RepoRef, TrackedRepository};

#[derive(Debug, Default, Deserialize)]
pub struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
    repository: Option<String>,
    kind: Option<String>,
    wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SnapshotQuery {
    repository: Option<String>,
    kind: Option<String>,
}

use super::json_error as error;

fn unavailable(e: &crate::storage::StoreError) -> Response {
    super::json_unavailable("Reading the change log", e)
}

/// 410 for a cursor the feed cannot continue from.
fn resync(read: &Read) -> Response {
    let message = read.resync_message().unwrap_or_default();
    let (oldest, newest) = match *read {
        Read::Gone { oldest, newest, .. } => (Some(oldest), newest),
        Read::Ahead { newest, .. } => (None, newest),
        Read::Page(ref page) => (Some(page.oldest), page.newest),
    };
    let body = json!({
        "status": "error",
        "error": message,
        "oldest": oldest,
        "resume_from": newest,
        "snapshot": "/api/snapshot?repository=OWNER/NAME",
    });
    (StatusCode::GONE, Json(body)).into_response()
}

/// A request refused: its status and why.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn bad(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

fn number<T: std::str::FromStr>(value: Option<&str>, name: &str, default: T) -> Result<T, Refused> {
    match value {
        None | Some("") => Ok(default),
        Some(text) => {
            text.trim().parse().map_err(|_| bad(format!("{name} must be a whole number of at least 0, not '{text}'")))
        }
    }
}

/// The repository a consumer named (`owner/name` or `id:N`).
async fn repository(state: &AppState, name: &str) -> Result<TrackedRepository, Refused> {
    let reference = RepoRef::parse(name).map_err(|e| bad(e.to_string()))?;
    match state.registry.find(reference).await {
        Ok(Some(repo)) => Ok(repo),
        Ok(None) => Err(Refused(StatusCode::NOT_FOUND, format!("repository {name} is not tracked"))),
        Err(e) => {
            tracing::error!(error = %e, "Reading the tracked repositories failed");
            Err(Refused(StatusCode::SERVICE_UNAVAILABLE, "database unavailable".into()))
        }
    }
}

/// The filter a request asks for, checked.
async fn filter(state: &AppState, q: &ChangesQuery, headers: &HeaderMap) -> Result<ChangeFilter, Refused> {
    let mut since: i64 = number(q.since.as_deref(), "since", 0)?;
    // A reconnecting EventSource says where it was; that wins over the URL it reuses.
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("?");
        since = number(Some(text), "Last-Event-ID", 0)?;
    }
    if since < 0 {
        return Err(bad("since must be a whole number of at least 0"));
    }
    let limit: u32 = number(q.limit.as_deref(), "limit", feed::DEFAULT_LIMIT)?;
    if limit == 0 {
        return Err(bad("limit must be at least 1"));
    }
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(kind) => {
            feed::check_kind(kind).map_err(bad)?;
            Some(kind.to_owned())
        }
        None => None,
    };
    let repository = match q.repository.as_deref().filter(|r| !r.is_empty()) {
        Some(name) => Some(repository(state, name).await?.id),
        None => None,
    };
    Ok(ChangeFilter { since, limit: limit.min(feed::MAX_LIMIT), repository, kind })
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream")))
}

/// `GET /api/changes`: a page, a long-poll or a stream.
pub async fn changes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let Some(copy) = state.copy.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the change log is not available on this listener");
    };
    let filter = match filter(&state, &q, &headers).await {
        Ok(filter) => filter,
        Err(refused) => return refused.into_response(),
    };
    let wait: u64 = match number(q.wait.as_deref(), "wait", 0) {
        Ok(wait) => wait,
        Err(refused) => return refused.into_response(),
    };
    if wants_stream(&headers) {
        return stream(state, copy, filter).await;
    }
    let read = if wait == 0 {
        feed::read(&*copy, &filter).await
    } else {
        feed::read_waiting(&*copy, &state.changes, filter, Duration::from_secs(wait)).await
    };
    match read {
        Ok(Read::Page(page)) => Json(json!({
            "changes": page.changes.iter().map(feed::change_json).collect::<Vec<_>>(),
            "next": page.next,
            "oldest": page.oldest,
            "newest": page.newest,
        }))
        .into_response(),
        Ok(other) => resync(&other),
        Err(e) => unavailable(&e),
    }
}

/// Where a stream is: the cursor, the page read ahead, and whether it has ended.
struct Follower {
    copy: Arc<dyn CopyStore>,
    state: Arc<AppState>,
    filter: ChangeFilter,
    ready: VecDeque<ChangeRecord>,
    ended: bool,
}

impl Follower {
    /// The next event: a change, or, once, `gone` (then the stream ends). Waits while
    /// there is nothing new; ends at shutdown, so that a client reconnects elsewhere.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(change) = self.ready.pop_front() {
                self.filter.since = self.filter.since.max(change.seq);
                return Some(Event::default().id(change.seq.to_string()).data(feed::change_json(&change).to_string()));
            }
            let read = tokio::select! {
                () = self.state.shutdown.cancelled() => return None,
                read = feed::read_waiting(&*self.copy, &self.state.changes, self.filter.clone(), feed::MAX_WAIT) => read,
            };
            match read {
                Ok(Read::Page(page)) => {
                    self.filter.since = page.next.max(self.filter.since);
                    self.ready.extend(page.changes);
                }
                Ok(other) => {
                    self.ended = true;
                    let message = other.resync_message().unwrap_or_default();
                    return Some(Event::default().event("gone").data(json!({ "error": message }).to_string()));
                }
                Err(e) => {
                    // The client reconnects with its Last-Event-ID once we are back.
                    tracing::warn!(error = %e, "A change stream ended: the change log could not be read");
                    return None;
                }
            }
        }
    }
}

async fn stream(state: Arc<AppState>, copy: Arc<dyn CopyStore>, filter: ChangeFilter) -> Response {
    // A cursor that cannot be followed is a 410 before any stream starts: EventSource
    // does not reconnect after a non-200 answer, which is what the consumer needs.
    let first = match feed::read(&*copy, &filter).await {
        Ok(Read::Page(page)) => page,
        Ok(other) => return resync(&other),
        Err(e) => return unavailable(&e),
    };
    let heartbeat = state.heartbeat;
    let mut follower = Follower { copy, state, filter, ready: VecDeque::new(), ended: false };
    follower.filter.since = first.next.max(follower.filter.since);
    follower.ready.extend(first.changes);
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        follower.next().await.map(|event| (Ok::<_, Infallible>(event), follower))
    });
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")).into_response();
    // Proxies that buffer (nginx) would hold events back.
    response.headers_mut().insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}

/// `GET /api/snapshot?repository=R[&kind=K]`.
pub async fn snapshot(State(state): State<Arc<AppState>>, Query(q): Query<SnapshotQuery>) -> Response {
    let Some(copy) = state.copy.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the local copy is not available on this listener");
    };
    let Some(name) = q.repository.as_deref().filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "repository is required (?repository=OWNER/NAME)");
    };
    if let Some(kind) = q.kind.as_deref() {
        if let Err(message) = feed::check_kind(kind) {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    let repo = match repository(&state, name).await {
        Ok(repo) => repo,
        Err(refused) => return refused.into_response(),
    };
    match feed::snapshot(&*copy, repo.id, q.kind.as_deref()).await {
        Ok((seq, entities)) => {
            Json(json!({ "repository": repo.full_name, "seq": seq, "entities": entities })).into_response()
        }
        Err(e) => unavailable(&e),
    }
}
