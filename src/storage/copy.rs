//! The local copy of a repository: normalized records, the effects a delivery or a sync
//! has on them, and the trait that applies effects and answers queries.
//!
//! Effects are applied in one transaction and are idempotent: a pull request or issue
//! whose `updated_at` is older than the stored one never overwrites it (GitHub does not
//! promise delivery order), a deleted comment or release stays deleted, and branch
//! updates come from the mirror, which is the truth, not from the payload. Reviews,
//! review comments, labels and milestones follow the rules of
//! [`crate::storage::entities`]. What each apply changed is appended to the change log
//! in the same transaction (see [`crate::storage::changes`]).

use crate::storage::changes::{Cause, ChangeBounds, ChangeFilter, ChangeRecord};
pub use crate::storage::entities::{
    LabelNaming, LabelRecord, MilestoneRecord, MilestoneState, ReviewCommentRecord, ReviewRecord,
};
use crate::storage::{BoxFuture, StoreResult};
use crate::sync::git::CommitInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRecord {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub state: String,
    pub draft: bool,
    pub merged: bool,
    pub author: Option<String>,
    pub labels: Vec<String>,
    pub assignees: Vec<String>,
    /// The milestone's number.
    pub milestone: Option<u64>,
    pub base_ref: String,
    pub base_sha: String,
    pub head_ref: String,
    pub head_sha: String,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub merged_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRecord {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub state: String,
    pub author: Option<String>,
    pub labels: Vec<String>,
    pub assignees: Vec<String>,
    /// The milestone's number.
    pub milestone: Option<u64>,
    pub comments: u64,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub deleted: bool,
    pub transferred_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRecord {
    pub id: u64,
    pub issue_number: u64,
    pub body: Option<String>,
    pub author: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub id: u64,
    pub tag_name: String,
    pub name: Option<String>,
    pub draft: bool,
    pub prerelease: bool,
    pub created_at: Option<i64>,
    pub published_at: Option<i64>,
    pub deleted: bool,
}

/// How a sync changes which commits a branch contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Fast-forward: these commits (sha, committed_at) join the branch.
    Append(Vec<(String, i64)>),
    /// Rewrite (forced push, first sync): the branch contains exactly these.
    Replace(Vec<(String, i64)>),
}

/// One change to the local copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A branch synced from the mirror: its head, commits not stored before, membership.
    Branch {
        name: String,
        head_sha: String,
        new_commits: Vec<CommitInfo>,
        membership: Membership,
    },
    /// The branch is gone; its commits stay while another branch contains them.
    DeleteBranch {
        name: String,
    },
    Tag {
        name: String,
        sha: Option<String>,
    },
    DeleteTag {
        name: String,
    },
    Pull(PullRecord),
    /// Deletion and transfer are flags on the record, and they stick.
    Issue(IssueRecord),
    Comment(CommentRecord),
    Release(ReleaseRecord),
    /// A review submitted, edited or dismissed.
    Review(ReviewRecord),
    /// A review comment created, edited or deleted (a flag that sticks).
    ReviewComment(ReviewCommentRecord),
    /// A label created, edited, renamed or deleted (a flag that sticks), and how the
    /// effect names it.
    Label {
        label: LabelRecord,
        naming: LabelNaming,
    },
    /// A milestone created, edited, closed, opened or deleted (a flag that sticks).
    Milestone(MilestoneRecord),
    /// Renamed or transferred (`full_name`), archived, deleted, visibility, default branch.
    Repository {
        full_name: Option<String>,
        github_id: Option<u64>,
        archived: Option<bool>,
        deleted: Option<bool>,
        visibility: Option<String>,
        default_branch: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRow {
    pub name: String,
    pub head_sha: String,
    pub synced_at: i64,
}

/// A tag's name and the sha recorded for it (unknown for a tag seen only by name).
pub type TagRow = (String, Option<String>);

/// What a repository's effects change, as the change log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRow {
    pub id: i64,
    pub full_name: String,
    pub github_id: Option<u64>,
    pub default_branch: Option<String>,
    pub archived: bool,
    pub deleted: bool,
    pub visibility: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueState {
    Open,
    Closed,
    All,
}

/// Held while a repository's git sync runs (see [`CopyStore::lock_repository`]).
pub type RepositoryGuard = Box<dyn Send + Sync>;

pub trait CopyStore: Send + Sync {
    /// The database's part of a repository's git sync lock, for instances on other hosts
    /// (their lock files are not ours): `None` where one host owns the database (SQLite,
    /// where the lock file suffices). Released when the guard is dropped.
    fn lock_repository(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Option<RepositoryGuard>>> {
        let _ = repo_id;
        Box::pin(async { Ok(None) })
    }
    /// Applies effects to repository `repo_id` in one transaction, which also appends
    /// what they changed to the change log, caused by `cause`.
    fn apply(&self, repo_id: i64, effects: Vec<Effect>, cause: Cause) -> BoxFuture<'_, StoreResult<()>>;
    fn branches(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<BranchRow>>>;
    /// Each tag's name and the sha recorded for it.
    fn tags(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<TagRow>>>;
    /// Which of the repository's commits are already stored (to skip reading them again).
    fn commit_shas(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<std::collections::HashSet<String>>>;
    /// Newest first; only those on `branch` when given.
    fn commits(&self, repo_id: i64, branch: Option<String>, limit: u32) -> BoxFuture<'_, StoreResult<Vec<CommitInfo>>>;
    fn pulls(&self, repo_id: i64, state: PullState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<PullRecord>>>;
    fn issues(&self, repo_id: i64, state: IssueState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<IssueRecord>>>;
    fn releases(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReleaseRecord>>>;
    /// Newest submitted first; only those of pull request `pull` when given.
    fn reviews(&self, repo_id: i64, pull: Option<u64>, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReviewRecord>>>;
    /// Review comments, newest first (only pull request `pull`'s when given); deleted ones
    /// are not listed.
    fn review_comments(
        &self,
        repo_id: i64,
        pull: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<ReviewCommentRecord>>>;
    /// By name; deleted ones are not listed.
    fn labels(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<LabelRecord>>>;
    /// Newest (highest number) first; deleted ones are not listed.
    fn milestones(
        &self,
        repo_id: i64,
        state: MilestoneState,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MilestoneRecord>>>;
    /// The change log after `filter.since`, in sequence order.
    fn changes(&self, filter: ChangeFilter) -> BoxFuture<'_, StoreResult<Vec<ChangeRecord>>>;
    /// The sequence numbers kept, and the newest handed out.
    fn changes_bounds(&self) -> BoxFuture<'_, StoreResult<ChangeBounds>>;
    /// The changes a delivery (or `poll`, `sync`) caused, in order, at most `limit`.
    fn changes_caused_by(&self, cause: &str, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ChangeRecord>>>;
    /// Drops the changes appended before `before_ms` (the oldest first, in steps that
    /// keep each transaction short) and says how many went. Numbers are never handed out
    /// again.
    fn prune_changes(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;
    /// The repository's comments, deleted ones left out, oldest first.
    fn comments(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<CommentRecord>>>;
    /// What the change log shows of the repository itself (`None`: not stored).
    fn repository_row(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Option<RepositoryRow>>>;
}

/// Changes pruned per statement (see [`CopyStore::prune_changes`]).
pub(crate) const PRUNE_STEP: i64 = 5_000;

/// Lists (parents, paths, labels) as both backends store them: JSON text.
pub(crate) fn to_json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain values serialize")
}

/// The inverse of [`to_json_text`]; what does not parse reads as empty.
pub(crate) fn from_json_text<T: serde::de::DeserializeOwned + Default>(text: String) -> T {
    serde_json::from_str(&text).unwrap_or_default()
}
