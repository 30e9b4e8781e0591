//! The local copy's tables behind one trait per database. For now: the registry of
//! tracked repositories, which is what "tracked" means to the receiver.

use crate::storage::{BoxFuture, StoreResult};

/// A tracked repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedRepository {
    /// Local id, printed by `add`, usable wherever a command takes REPO.
    pub id: i64,
    pub full_name: String,
    /// GitHub's numeric id, learned from the first delivery (or the API); it survives
    /// renames and transfers.
    pub github_id: Option<u64>,
    pub branches: Vec<String>,
    pub clone_url: Option<String>,
    pub mode: String,
    pub added_at_ms: i64,
    pub last_delivery_at_ms: Option<i64>,
    /// Learned from the remote's HEAD at `add`, or from payloads.
    pub default_branch: Option<String>,
    pub archived: bool,
    pub deleted: bool,
    pub visibility: Option<String>,
    pub synced_at_ms: Option<i64>,
    /// The hook `webhook enable` made on GitHub, and its URL.
    pub hook_id: Option<u64>,
    pub hook_url: Option<String>,
    /// `ngrok` when the hook URL is an ngrok tunnel's (the daemon follows its changes).
    pub hook_tunnel: Option<String>,
    /// When the hook's last verified ping arrived.
    pub last_ping_at_ms: Option<i64>,
}

impl TrackedRepository {
    /// When GitHub was last heard from through the hook: a verified delivery or ping.
    pub fn last_heard_ms(&self) -> Option<i64> {
        self.last_delivery_at_ms.max(self.last_ping_at_ms)
    }

    /// `webhook` while futurnal's hook is set up and GitHub was heard from within `quiet`
    /// (the poller asks GitHub for a ping when a repository is quiet), else `polling`.
    pub fn mode_at(&self, now_ms: i64, quiet: std::time::Duration) -> &'static str {
        let recent = self.last_heard_ms().is_some_and(|at| now_ms - at <= quiet.as_millis() as i64);
        if self.hook_id.is_some() && recent {
            "webhook"
        } else {
            "polling"
        }
    }

    pub fn mode(&self, quiet: std::time::Duration) -> &'static str {
        self.mode_at(crate::time::now_ms(), quiet)
    }
}

/// A repository's hook on GitHub as recorded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRef {
    pub id: u64,
    pub url: String,
    pub tunnel: Option<String>,
}

impl HookRef {
    pub fn new(id: u64, url: impl Into<String>) -> Self {
        Self { id, url: url.into(), tunnel: None }
    }
}

/// The newest `updated_at` polling has stored, of pull requests and of issues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollWatermarks {
    pub pulls_seen: Option<String>,
    pub issues_since: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRepository {
    pub full_name: String,
    pub github_id: Option<u64>,
    pub branches: Vec<String>,
    pub clone_url: Option<String>,
    pub default_branch: Option<String>,
}

/// How a command names a repository: the local id or OWNER/NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRef {
    Id(i64),
    Name(String),
}

impl RepoRef {
    /// What to say when no tracked repository answers to this.
    pub fn not_tracked(&self) -> String {
        match self {
            RepoRef::Id(id) => format!("no tracked repository with id {id}"),
            RepoRef::Name(name) => format!("repository {name} is not tracked"),
        }
    }

    pub fn parse(value: &str) -> anyhow::Result<Self> {
        if let Ok(id) = value.trim().parse::<i64>() {
            return Ok(RepoRef::Id(id));
        }
        Ok(RepoRef::Name(crate::domain::RepoName::parse(value)?.as_str().to_owned()))
    }
}

/// Whether a delivery that names `stored` by name is about it: while the stored
/// repository's GitHub id is unknown, or the delivery carries none, or the two agree; so a
/// new repository that reuses a renamed one's old name is not taken for it. "The two
/// agree" is not redundant with the lookup by id that comes first: those are two queries,
/// and a concurrent delivery can learn the id between them (seen on PostgreSQL: an
/// `issues` delivery processed beside the first `push` was ignored as "no longer tracked").
pub fn matches_by_name(stored: &TrackedRepository, delivery_github_id: Option<u64>) -> bool {
    stored.github_id.is_none() || delivery_github_id.is_none() || stored.github_id == delivery_github_id
}

pub trait Registry: Send + Sync {
    /// Starts tracking, applying the first sync's effects in the same transaction (so a
    /// failure leaves nothing half-created); a repository already tracked under that name
    /// is a `Conflict`.
    fn add(
        &self,
        repo: NewRepository,
        initial: Vec<crate::storage::copy::Effect>,
    ) -> BoxFuture<'_, StoreResult<TrackedRepository>>;
    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TrackedRepository>>>;
    fn find(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>>;
    /// Stops tracking; returns what was removed.
    fn remove(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<TrackedRepository>>;
    /// The tracked repository a delivery names (by GitHub id, else by name), read only.
    fn lookup(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>>;
    /// Records (or with `None` clears) the repository's hook, and sets its mode to
    /// `webhook` (or back to `polling`).
    fn set_hook(&self, repo_id: i64, hook: Option<HookRef>) -> BoxFuture<'_, StoreResult<()>>;
    /// A verified ping from the hook arrived: the hook is alive (webhook mode counts it).
    fn note_ping(&self, hook_id: u64, at_ms: i64) -> BoxFuture<'_, StoreResult<()>>;
    /// How far polling has read a repository's pull requests and issues.
    fn poll_watermarks(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<PollWatermarks>>;
    fn set_poll_watermarks(&self, repo_id: i64, marks: PollWatermarks) -> BoxFuture<'_, StoreResult<()>>;
    /// Finds the tracked repository a delivery is about (by GitHub id, else by name),
    /// learns its GitHub id when it was unknown, and records the delivery time.
    /// `None` when the repository is not tracked.
    fn note_delivery(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
        received_at_ms: i64,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(github_id: Option<u64>) -> TrackedRepository {
        TrackedRepository {
            id: 1,
            full_name: "octo/hello".into(),
            github_id,
            branches: vec![],
            clone_url: None,
            mode: "polling".into(),
            added_at_ms: 0,
            last_delivery_at_ms: None,
            default_branch: None,
            archived: false,
            deleted: false,
            visibility: None,
            synced_at_ms: None,
            hook_id: None,
            hook_url: None,
            hook_tunnel: None,
            last_ping_at_ms: None,
        }
    }

    #[test]
    fn a_name_matches_unless_both_ids_are_known_and_differ() {
        assert!(matches_by_name(&stored(None), Some(7)));
        assert!(matches_by_name(&stored(Some(7)), None));
        // Learned by a concurrent delivery between the lookup by id and this one by name.
        assert!(matches_by_name(&stored(Some(7)), Some(7)));
        // A new repository under a renamed one's old name.
        assert!(!matches_by_name(&stored(Some(7)), Some(8)));
    }
}
