//! Following the change log (`storage::changes`): pages read from a cursor, the answer
//! for a cursor older than what is kept, waiting for the next change, snapshots to resync
//! from, and pruning past the retention. The admin listener's `/api/changes` and
//! `/api/snapshot`, and `sources github changes`, are built on these.
//!
//! A cursor is the last sequence number a consumer has seen (0 before the first). A
//! consumer that keeps reading from the `next` it is given sees every change exactly once,
//! in order, across restarts of either side: numbers only grow and become visible in
//! commit order (see `storage::changes`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::output;
use crate::storage::changes::{
    branch_key, comment_key, commit_key, issue_key, issue_state, label_key, milestone_key, pull_key, release_key,
    release_state, review_comment_key, review_key, tag_key, ChangeFilter, ChangeRecord, ChangeSignal, KINDS,
    REPOSITORY_KEY,
};
use crate::storage::copy::{CopyStore, IssueState, MilestoneState, PullState};
use crate::storage::StoreResult;

/// Changes per page unless asked otherwise, and at most.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// The longest a long-poll waits (`wait=` above it waits this long).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Waiting followers read again at least this often, signal or not: changes another
/// process committed to the same SQLite file bump no signal here.
pub const RECHECK: Duration = Duration::from_secs(1);

/// One page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub changes: Vec<ChangeRecord>,
    /// Where to read from next: the last change's number, or, when the page is not full,
    /// the newest number there was when it was read (changes the filter left out are
    /// not read again).
    pub next: i64,
    /// The oldest number kept and the newest handed out, as the page was read.
    pub oldest: i64,
    pub newest: i64,
}

/// What a read from a cursor gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Page(Page),
    /// Changes after the cursor were pruned: resync from a snapshot, then follow from
    /// `newest` (or the snapshot's own `seq`).
    Gone {
        since: i64,
        oldest: i64,
        newest: i64,
    },
    /// The cursor is past the newest number ever handed out: it was not taken from this
    /// database (or the database was restored from an older backup). Resync too.
    Ahead {
        since: i64,
        newest: i64,
    },
}

impl Read {
    /// What a consumer is told when it must resync (`None`: it need not), the same words
    /// everywhere.
    pub fn resync_message(&self) -> Option<String> {
        match *self {
            Read::Page(_) => None,
            Read::Gone { since, oldest, newest } => Some(format!(
                "changes after seq {since} are no longer kept (the oldest kept is {oldest}): resync from a \
                 snapshot, then follow from seq {newest}"
            )),
            Read::Ahead { since, newest } => Some(format!(
                "seq {since} is past the newest change ({newest}): the cursor is not from this database (or \
                 it was restored from a backup); resync from a snapshot, then follow from seq {newest}"
            )),
        }
    }
}

/// Validates a filter's kind.
pub fn check_kind(kind: &str) -> Result<(), String> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(format!("unknown kind '{kind}': expected one of {}", KINDS.join(", ")))
    }
}

/// Reads one page after `filter.since`.
pub async fn read(copy: &dyn CopyStore, filter: &ChangeFilter) -> StoreResult<Read> {
    // The newest number first: every change up to it is visible to the read that follows
    // (numbers become visible in commit order), so a page that is not full covers it.
    let before = copy.changes_bounds().await?;
    let changes = copy.changes(filter.clone()).await?;
    // Pruning takes from the bottom: if anything after the cursor went before or during
    // the read, the oldest kept is now above the cursor's next.
    let after = copy.changes_bounds().await?;
    if filter.since < after.oldest - 1 {
        return Ok(Read::Gone { since: filter.since, oldest: after.oldest, newest: after.newest });
    }
    if filter.since > after.newest {
        return Ok(Read::Ahead { since: filter.since, newest: after.newest });
    }
    let last = changes.last().map_or(filter.since, |c| c.seq);
    let full = changes.len() >= filter.limit as usize;
    let next = if full { last } else { last.max(before.newest).max(filter.since) };
    Ok(Read::Page(Page { changes, next, oldest: after.oldest, newest: after.newest }))
}

/// Reads from `filter.since` until there is a change to give, the cursor is gone, or
/// `wait` has passed (then an empty page). Wakes at each commit of changes `signal`
/// hears of, and every [`RECHECK`] regardless.
pub async fn read_waiting(
    copy: &dyn CopyStore,
    signal: &ChangeSignal,
    mut filter: ChangeFilter,
    wait: Duration,
) -> StoreResult<Read> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    loop {
        // Subscribed before the read: a commit between the read and the wait wakes it.
        let mut signalled = signal.subscribe();
        let read = read(copy, &filter).await?;
        let page = match read {
            Read::Page(page) if page.changes.is_empty() => page,
            other => return Ok(other),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Read::Page(page));
        }
        // Changes the filter left out are not read again.
        filter.since = page.next;
        tokio::select! {
            _ = signalled.changed() => {}
            () = tokio::time::sleep(RECHECK.min(deadline - now)) => {}
        }
    }
}

/// A change as the feed and `changes --json` show it.
pub fn change_json(c: &ChangeRecord) -> Value {
    json!({
        "seq": c.seq,
        "at": crate::time::rfc3339_millis(c.at_ms),
        "repository": c.repository,
        "kind": c.kind,
        "key": c.key,
        "op": c.op.as_str(),
        "state": c.state,
        "cause": c.cause,
    })
}

/// A repository's current state as the changes that would build it from nothing: one
/// `{kind, key, state}` per entity (only those of `kind` when given), and `seq`, the
/// newest change number when it was read. A consumer applies the entities, then follows
/// from `seq`: changes after it may already be in the snapshot, and applying one again
/// leaves the entity as its newest change says (each change carries the whole state).
pub async fn snapshot(copy: &dyn CopyStore, repo_id: i64, kind: Option<&str>) -> StoreResult<(i64, Vec<Value>)> {
    let seq = copy.changes_bounds().await?.newest;
    let wanted = |k: &str| kind.is_none_or(|want| want == k);
    let mut entities = Vec::new();
    let mut push = |kind: &str, key: String, state: Value| {
        entities.push(json!({ "kind": kind, "key": key, "state": state }));
    };
    if wanted("repository") {
        if let Some(row) = copy.repository_row(repo_id).await? {
            push("repository", REPOSITORY_KEY.to_owned(), output::repository_state_json(&row));
        }
    }
    if wanted("branch") {
        for b in copy.branches(repo_id).await? {
            push("branch", branch_key(&b.name), output::branch_json(&b));
        }
    }
    if wanted("tag") {
        for t in copy.tags(repo_id).await? {
            push("tag", tag_key(&t.0), output::tag_json(&t));
        }
    }
    if wanted("commit") {
        for c in copy.commits(repo_id, None, u32::MAX).await? {
            push("commit", commit_key(&c.sha), output::commit_json(&c));
        }
    }
    if wanted("pull_request") {
        for p in copy.pulls(repo_id, PullState::All, u32::MAX).await? {
            push("pull_request", pull_key(p.number), output::pull_json(&p));
        }
    }
    if wanted("issue") {
        for i in copy.issues(repo_id, IssueState::All, u32::MAX).await? {
            if let Some(state) = issue_state(Some(&i)) {
                push("issue", issue_key(i.number), state);
            }
        }
    }
    if wanted("comment") {
        for c in copy.comments(repo_id).await? {
            push("comment", comment_key(c.id), output::comment_json(&c));
        }
    }
    if wanted("release") {
        for r in copy.releases(repo_id, u32::MAX).await? {
            if let Some(state) = release_state(Some(&r)) {
                push("release", release_key(r.id), state);
            }
        }
    }
    // The queries list only what exists (deleted review comments, labels and milestones
    // are left out), as their changes' states show it.
    if wanted("review") {
        for r in copy.reviews(repo_id, None, u32::MAX).await? {
            push("review", review_key(r.id), output::review_json(&r));
        }
    }
    if wanted("review_comment") {
        for c in copy.review_comments(repo_id, None, u32::MAX).await? {
            push("review_comment", review_comment_key(c.id), output::review_comment_json(&c));
        }
    }
    if wanted("label") {
        for l in copy.labels(repo_id, u32::MAX).await? {
            push("label", label_key(&l.name), output::label_json(&l));
        }
    }
    if wanted("milestone") {
        for m in copy.milestones(repo_id, MilestoneState::All, u32::MAX).await? {
            push("milestone", milestone_key(m.number), output::milestone_json(&m));
        }
    }
    Ok((seq, entities))
}

/// Prunes the changes past `retention` (`None`: kept for ever) hourly, from the start of
/// each term as leader.
pub async fn prune_loop(
    copy: Arc<dyn CopyStore>,
    retention: Option<Duration>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(retention) = retention else { return };
    loop {
        let cutoff = crate::serve::retention_cutoff(crate::time::now_ms(), retention);
        match copy.prune_changes(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "Pruned changes past the retention period"),
            Err(e) => tracing::warn!(error = %e, "Pruning old changes failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
