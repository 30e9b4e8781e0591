//! The change log: one row per change an effect made to the local copy, appended in the
//! transaction that applies the effect, so that a change is stored if and only if its
//! effect is.
//!
//! A change is appended only when the entity's state, as its query shows it (the
//! `--json` shape of [`crate::output`]), differs before and after the effect: a replayed
//! delivery, or an update older than the stored one (refused by the `updated_at` guards),
//! appends nothing. Branches compare their head only (not when they were synced); each
//! commit stored for the first time is a change of its own; an entity that leaves its
//! query (a branch or tag deleted, an issue deleted or transferred, a comment, release,
//! review comment, label or milestone deleted, a label renamed away from a name) is a
//! `delete` with no state.
//!
//! Kinds and keys: `commit` (`commit:<sha>`), `branch` (`branch:<name>`), `tag`
//! (`tag:<name>`), `pull_request` (`pull_request#<number>`), `issue` (`issue#<number>`),
//! `comment` (`comment#<id>`), `release` (`release#<id>`), `review` (`review#<id>`),
//! `review_comment` (`review_comment#<id>`), `label` (`label:<name>`: a rename is a
//! `delete` of the old name and an `upsert` of the new), `milestone`
//! (`milestone#<number>`), `repository` (`repository`).
//!
//! Sequence numbers start at 1 and only grow. A reader that has read every change up to
//! `seq` N never later finds one below N: on SQLite every write goes through one writer
//! thread, which commits in `seq` order; on PostgreSQL see `postgres::copy::append_changes`.

use serde_json::Value;

/// Kinds of entity a change is about.
pub const KINDS: [&str; 12] = [
    "commit",
    "branch",
    "tag",
    "pull_request",
    "issue",
    "comment",
    "release",
    "review",
    "review_comment",
    "label",
    "milestone",
    "repository",
];

/// What caused a change: a webhook delivery (by its id), a poll, or a sync run by hand
/// (`sources github add` / `sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Delivery(String),
    Poll,
    Sync,
}

impl Cause {
    /// As the `cause` column stores it: the delivery id, `poll` or `sync`.
    pub fn as_str(&self) -> &str {
        match self {
            Cause::Delivery(id) => id,
            Cause::Poll => "poll",
            Cause::Sync => "sync",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }

    pub(crate) fn parse(s: &str) -> ChangeOp {
        if s == "delete" {
            ChangeOp::Delete
        } else {
            ChangeOp::Upsert
        }
    }
}

/// Which changes to read: those after `since`, oldest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Changes with a sequence number above this one (0: from the start).
    pub since: i64,
    pub limit: u32,
    /// Only this repository's (by its id).
    pub repository: Option<i64>,
    /// Only this kind's (one of [`KINDS`]).
    pub kind: Option<String>,
}

/// A stored change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub seq: i64,
    /// When it was appended (ms; the database's clock on PostgreSQL).
    pub at_ms: i64,
    pub repo_id: i64,
    /// The repository's full name when the change was made.
    pub repository: String,
    pub kind: String,
    /// `pull_request#42`, `issue#7`, `comment#123`, `release#<id>`, `review#<id>`,
    /// `review_comment#<id>`, `label:<name>`, `milestone#<number>`, `branch:main`,
    /// `tag:v1`, `commit:<sha>`, `repository`.
    pub key: String,
    pub op: ChangeOp,
    /// The entity's new state (the `--json` shape of its query); `None` for a delete.
    pub state: Option<Value>,
    /// The delivery id, or `poll` / `sync`.
    pub cause: String,
}

/// The range of sequence numbers kept: `oldest` is the lowest stored (`newest + 1` when
/// none is), `newest` the highest ever handed out (0 before the first change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeBounds {
    pub oldest: i64,
    pub newest: i64,
}

/// Tells this process's feed followers that changes were committed: bumped after every
/// commit that appended some (and, on PostgreSQL, when another instance says it did).
/// Only a hint that it is worth reading again; followers also look on a timer.
#[derive(Debug)]
pub struct ChangeSignal {
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for ChangeSignal {
    fn default() -> Self {
        Self { tx: tokio::sync::watch::Sender::new(0) }
    }
}

impl ChangeSignal {
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` completes at the next [`ChangeSignal::notify`]:
    /// subscribe before reading, so that a commit between the read and the wait is not
    /// missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// A change about to be appended (its number and time are the database's to give).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewChange {
    pub repo_id: i64,
    pub repository: String,
    pub kind: &'static str,
    pub key: String,
    pub op: ChangeOp,
    /// JSON text.
    pub state: Option<String>,
    pub cause: String,
}

/// The changes one apply makes to one repository, collected as its effects run.
pub(crate) struct ChangeLog {
    repo_id: i64,
    /// The repository's name as of the change being recorded (a rename changes it).
    repository: String,
    cause: String,
    pub entries: Vec<NewChange>,
}

impl ChangeLog {
    pub fn new(repo_id: i64, repository: String, cause: &Cause) -> Self {
        Self { repo_id, repository, cause: cause.as_str().to_owned(), entries: Vec::new() }
    }

    /// The repository's name from now on.
    pub fn renamed(&mut self, full_name: String) {
        self.repository = full_name;
    }

    /// What an effect did to one entity, seen through its query: `before` and `after`
    /// are its states (`None`: absent from the query). Nothing is recorded when nothing
    /// a reader sees changed.
    pub fn record(&mut self, kind: &'static str, key: String, before: Option<Value>, after: Option<Value>) {
        if before == after {
            return;
        }
        let (op, state) = match after {
            Some(state) => (ChangeOp::Upsert, Some(state.to_string())),
            None => (ChangeOp::Delete, None),
        };
        self.entries.push(NewChange {
            repo_id: self.repo_id,
            repository: self.repository.clone(),
            kind,
            key,
            op,
            state,
            cause: self.cause.clone(),
        });
    }
}

/// The state column read back: what does not parse reads as no state (never written so).
/// An issue as its query shows it: deleted and transferred ones are not listed.
pub(crate) fn issue_state(issue: Option<&crate::storage::copy::IssueRecord>) -> Option<Value> {
    issue.filter(|i| !i.deleted && i.transferred_to.is_none()).map(crate::output::issue_json)
}

/// A comment as the change log shows it: a deleted one is gone.
pub(crate) fn comment_state(comment: Option<&crate::storage::copy::CommentRecord>) -> Option<Value> {
    comment.filter(|c| !c.deleted).map(crate::output::comment_json)
}

/// A release as its query shows it: a deleted one is not listed.
pub(crate) fn release_state(release: Option<&crate::storage::copy::ReleaseRecord>) -> Option<Value> {
    release.filter(|r| !r.deleted).map(crate::output::release_json)
}

/// A review as its query shows it (a dismissed one is still listed, as `dismissed`).
pub(crate) fn review_state(review: Option<&crate::storage::entities::ReviewRecord>) -> Option<Value> {
    review.map(crate::output::review_json)
}

/// A review comment as its query shows it: a deleted one is not listed.
pub(crate) fn review_comment_state(comment: Option<&crate::storage::entities::ReviewCommentRecord>) -> Option<Value> {
    comment.filter(|c| !c.deleted).map(crate::output::review_comment_json)
}

/// A label as its query shows it: a deleted one is not listed.
pub(crate) fn label_state(label: Option<&crate::storage::entities::LabelRecord>) -> Option<Value> {
    label.filter(|l| !l.deleted).map(crate::output::label_json)
}

/// A milestone as its query shows it: a deleted one is not listed.
pub(crate) fn milestone_state(milestone: Option<&crate::storage::entities::MilestoneRecord>) -> Option<Value> {
    milestone.filter(|m| !m.deleted).map(crate::output::milestone_json)
}

pub(crate) fn parse_state(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

pub(crate) fn pull_key(number: u64) -> String {
    format!("pull_request#{number}")
}

pub(crate) fn issue_key(number: u64) -> String {
    format!("issue#{number}")
}

pub(crate) fn comment_key(id: u64) -> String {
    format!("comment#{id}")
}

pub(crate) fn release_key(id: u64) -> String {
    format!("release#{id}")
}

pub(crate) fn review_key(id: u64) -> String {
    format!("review#{id}")
}

pub(crate) fn review_comment_key(id: u64) -> String {
    format!("review_comment#{id}")
}

pub(crate) fn label_key(name: &str) -> String {
    format!("label:{name}")
}

pub(crate) fn milestone_key(number: u64) -> String {
    format!("milestone#{number}")
}

pub(crate) fn branch_key(name: &str) -> String {
    format!("branch:{name}")
}

pub(crate) fn tag_key(name: &str) -> String {
    format!("tag:{name}")
}

pub(crate) fn commit_key(sha: &str) -> String {
    format!("commit:{sha}")
}

pub(crate) const REPOSITORY_KEY: &str = "repository";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_states_are_no_change_and_a_vanished_one_is_a_delete() {
        let a = serde_json::json!({"n": 1});
        let mut log = ChangeLog::new(3, "o/r".into(), &Cause::Poll);
        log.record("issue", issue_key(1), Some(a.clone()), Some(a.clone()));
        log.record("issue", issue_key(1), None, None);
        assert!(log.entries.is_empty());
        log.record("issue", issue_key(1), None, Some(a.clone()));
        log.renamed("o/renamed".into());
        log.record("issue", issue_key(1), Some(a), None);
        let seen: Vec<_> = log
            .entries
            .iter()
            .map(|c| (c.repo_id, c.repository.as_str(), c.key.as_str(), c.op, c.state.as_deref(), c.cause.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (3, "o/r", "issue#1", ChangeOp::Upsert, Some(r#"{"n":1}"#), "poll"),
                (3, "o/renamed", "issue#1", ChangeOp::Delete, None, "poll")
            ]
        );
    }
}
