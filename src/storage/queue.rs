//! The durable delivery queue: one trait, one implementation per database.
//!
//! The receiver enqueues verified deliveries; workers claim them in lanes: the pending
//! deliveries of one ordering domain (a repository's git state, or its metadata; see
//! [`crate::domain::DomainKind`]) in acknowledgement order, never two lanes of one domain
//! at once, domains in fair turns. Workers report a [`Completion`] per delivery.

use std::fmt;
use std::str::FromStr;

use crate::domain::DeliveryId;
use crate::storage::{BoxFuture, StoreResult};

/// A verified delivery, ready to be written. Only the receiver's verification step and
/// the replay path build these.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub delivery_id: DeliveryId,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    pub repository_github_id: Option<u64>,
    pub hook_id: Option<u64>,
    pub received_at_ms: i64,
    pub body: StoredBody,
    pub initial: InitialStatus,
}

/// What a new delivery starts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialStatus {
    /// Waiting for a worker.
    Queued,
    /// Kept for the record only (event not enabled, repository not tracked).
    Ignored(String),
    /// Needs no processing (a ping); recorded as done.
    Done,
}

/// A payload body as stored: raw JSON or LZ4-compressed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredBody {
    Raw(Vec<u8>),
    Lz4(Vec<u8>),
}

impl StoredBody {
    pub fn codec(&self) -> &'static str {
        match self {
            StoredBody::Raw(_) => "raw",
            StoredBody::Lz4(_) => "lz4",
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            StoredBody::Raw(b) | StoredBody::Lz4(b) => b,
        }
    }

    pub fn from_parts(codec: &str, bytes: Vec<u8>) -> Self {
        match codec {
            "lz4" => StoredBody::Lz4(bytes),
            _ => StoredBody::Raw(bytes),
        }
    }

    pub fn compress(json: &[u8]) -> Self {
        StoredBody::Lz4(lz4_flex::compress_prepend_size(json))
    }

    /// The JSON document, decompressed when needed.
    pub fn json(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            StoredBody::Raw(b) => Ok(std::borrow::Cow::Borrowed(b)),
            StoredBody::Lz4(b) => lz4_flex::decompress_size_prepended(b)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| format!("stored payload is corrupt: {e}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Newly stored (queued, ignored or done as asked).
    Stored,
    /// A delivery with this id is already stored; nothing changed.
    Duplicate,
}

/// What a worker reports a claimed delivery's end with: opaque, only the backend that
/// handed it out knows what it stands for. Order is the queue's business, never a number
/// a caller compares. It carries the claim's fencing token: a write made with a handle
/// whose claim is no longer current (its lease expired and another worker claimed the
/// delivery) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimHandle {
    id: i64,
    fence: i64,
}

impl ClaimHandle {
    /// For backends: wraps their own row identity and the claim's token.
    pub(crate) fn new(id: i64, fence: i64) -> Self {
        Self { id, fence }
    }

    /// For backends: the row identity they wrapped.
    pub(crate) fn raw(self) -> i64 {
        self.id
    }

    /// For backends: the claim's fencing token.
    pub(crate) fn fence(self) -> i64 {
        self.fence
    }
}

/// Who claims, and for how long: the instance's name is recorded on what it claims
/// (`deliveries --json` shows it as `worker`), and the claim holds for `lease_ms` of the
/// database's clock unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimer {
    pub instance: String,
    pub lease_ms: i64,
}

/// The default lease: long enough for a slow git fetch between two renewals.
pub const DEFAULT_LEASE_MS: i64 = 30_000;

impl Default for Claimer {
    fn default() -> Self {
        Self { instance: "local".into(), lease_ms: DEFAULT_LEASE_MS }
    }
}

/// Changes a handler made to one repository's local copy, stored in the same transaction
/// as the result of the delivery that caused them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub repo_id: i64,
    pub effects: Vec<crate::storage::copy::Effect>,
}

/// A claimed delivery's result, with what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub handle: ClaimHandle,
    pub completion: Completion,
    pub changes: Option<Changes>,
}

impl From<(ClaimHandle, Completion)> for Report {
    fn from((handle, completion): (ClaimHandle, Completion)) -> Self {
        Self { handle, completion, changes: None }
    }
}

/// A delivery handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub handle: ClaimHandle,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    pub repository_github_id: Option<u64>,
    pub hook_id: Option<u64>,
    pub received_at_ms: i64,
    /// Attempts finished before this one.
    pub attempts: u32,
    pub body: StoredBody,
}

/// One ordering domain's pending deliveries, in arrival order, to be handled one after
/// another (consecutive git deliveries may be served by one sync).
pub type Lane = Vec<ClaimedDelivery>;

/// How a claimed delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Done,
    /// Handled, but there was nothing to do (repository no longer tracked, say).
    Ignored(String),
    /// Failed; try again after this long (by the database's clock).
    Retry {
        error: String,
        delay_ms: i64,
    },
    /// Failed for good; kept for inspection and `replay`.
    Dead {
        error: String,
    },
    /// Not attempted (shutdown, or an earlier delivery of its lane failed): queue it again
    /// as it was.
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Queued,
    Processing,
    Retrying,
    Done,
    Ignored,
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Processing,
        DeliveryStatus::Retrying,
        DeliveryStatus::Done,
        DeliveryStatus::Ignored,
        DeliveryStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Processing => "processing",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Done => "done",
            DeliveryStatus::Ignored => "ignored",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn is_pending(self) -> bool {
        matches!(self, DeliveryStatus::Queued | DeliveryStatus::Processing | DeliveryStatus::Retrying)
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown delivery status '{s}': expected queued, processing, retrying, done, ignored or dead")
        })
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored delivery as `webhook deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    pub repository_github_id: Option<u64>,
    pub hook_id: Option<u64>,
    pub received_at_ms: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// When the latest attempt started, by whom, and when the delivery finished.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub worker: Option<String>,
}

/// Why an abandoned delivery's attempt ended: an SQL expression over its row as it was
/// (both backends), for the attempt row (outcome `lost`) and the delivery's `last_error`.
pub const LOST_ATTEMPT_ERROR: &str = "'the lease of worker ' || COALESCE(worker, '?') || ' expired'";

/// One attempt at a delivery: when, by whom, how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: i64,
    pub worker: Option<String>,
    /// done, ignored, retry, dead, or lost (the worker's lease expired mid-attempt).
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Deliveries whose repository has this GitHub id or (case-insensitively) this name.
    pub repository_name: Option<String>,
    pub repository_github_id: Option<u64>,
    pub status: Option<DeliveryStatus>,
    /// Only deliveries stored before this one (a page's cursor).
    pub before: Option<String>,
    pub limit: u32,
    /// Only this event's (`push`, `issues`, …).
    pub event: Option<String>,
    /// Only this action's (`opened`, …).
    pub action: Option<String>,
    /// Only those received at or after / before these times (ms).
    pub received_since_ms: Option<i64>,
    pub received_until_ms: Option<i64>,
    /// Only those whose delivery id starts with this.
    pub id_prefix: Option<String>,
}

impl DeliveryFilter {
    /// `id_prefix` as a `LIKE` pattern: `%` and `_` in it match only themselves.
    pub(crate) fn id_pattern(&self) -> Option<String> {
        self.id_prefix.as_ref().map(|p| {
            let escaped: String = p
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("{escaped}%")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Deliveries queued, processing or retrying.
    pub depth: u64,
    pub oldest_pending_received_at_ms: Option<i64>,
}

/// A repository's deliveries that are not done yet, for `webhook status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepositoryBacklog {
    /// Dead, or waiting for a retry.
    pub failures: u64,
    /// Queued, processing or retrying.
    pub queue_depth: u64,
}

/// The queue, whatever database holds it.
pub trait Queue: Send + Sync {
    /// Writes a delivery durably. Returns only once it is committed.
    fn enqueue(&self, delivery: NewDelivery) -> BoxFuture<'_, StoreResult<EnqueueOutcome>>;
    /// Claims up to `max_lanes` lanes of up to `per_lane` deliveries each, in the order
    /// they were acknowledged within each domain (whatever order commits reach the
    /// database in, for a backend with concurrent writers), marking them processing
    /// under a lease of `claimer.lease_ms` and a fencing token that grows with every
    /// claim. A domain with a delivery processing under a live lease, or whose oldest
    /// pending delivery waits for a retry, yields no lane; one whose lease expired is
    /// claimed again (its attempt counted, its error saying so). Ready domains take
    /// turns: one that got a lane goes to the back of the line.
    fn claim_as(&self, claimer: &Claimer, max_lanes: usize, per_lane: usize) -> BoxFuture<'_, StoreResult<Vec<Lane>>>;
    /// `claim_as` with the default claimer.
    fn claim(&self, max_lanes: usize, per_lane: usize) -> BoxFuture<'_, StoreResult<Vec<Lane>>> {
        Box::pin(async move { self.claim_as(&Claimer::default(), max_lanes, per_lane).await })
    }
    /// Extends the lease of these claimed deliveries to `lease_ms` from now. Returns how
    /// many are still held under their token (fewer: the others finished, or their lease
    /// was lost to another worker).
    fn renew(&self, handles: Vec<ClaimHandle>, lease_ms: i64) -> BoxFuture<'_, StoreResult<usize>>;
    /// Records how claimed deliveries ended, and applies the changes they made to the
    /// local copy, in one transaction, in order. A report whose claim is no longer
    /// current changes nothing; if any report that carries changes is in that state, the
    /// whole transaction is rolled back and the answer is [`StoreError::LeaseLost`].
    fn finish(&self, reports: Vec<Report>) -> BoxFuture<'_, StoreResult<()>>;
    /// `finish` for results that changed nothing in the local copy.
    fn complete(&self, results: Vec<(ClaimHandle, Completion)>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.finish(results.into_iter().map(Report::from).collect()).await })
    }
    /// Queues again what a previous process left `processing` (it crashed or was
    /// killed), at the start of `instance`, counting the attempt it never finished (as
    /// an expired lease does), with `last_error` saying so. Where one process owns the database (SQLite):
    /// everything processing. Where several instances share it: what this instance left
    /// under its own name, or a stopped process of this host (see
    /// [`crate::instance::is_gone`]); the rest is claimed again when its lease expires.
    fn recover(&self, instance: &str) -> BoxFuture<'_, StoreResult<u64>>;
    /// Queues a stored delivery again on purpose, whatever its status (unless it is
    /// being processed right now).
    fn replay(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<DeliveryRecord>>;
    fn get(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<DeliveryRecord>>>;
    /// A stored delivery's payload as stored (`None`: no such delivery, or pruned).
    fn payload(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<StoredBody>>>;
    /// Every attempt at a delivery that ended (done, ignored, retry, dead), oldest first
    /// (a replay numbers its attempts from 1 again).
    fn attempts(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Vec<AttemptRecord>>>;
    /// Writes this instance's activity rows (`minute`, JSON), replacing what it wrote
    /// for those minutes before.
    fn put_activity(&self, instance: &str, rows: Vec<(i64, String)>) -> BoxFuture<'_, StoreResult<()>>;
    /// Every instance's activity rows from `since_ms` on (`prune` drops those older than
    /// `crate::activity::KEEP_MS`).
    fn activity(&self, since_ms: i64) -> BoxFuture<'_, StoreResult<Vec<(i64, String)>>>;
    fn list(&self, filter: DeliveryFilter) -> BoxFuture<'_, StoreResult<Vec<DeliveryRecord>>>;
    fn stats(&self) -> BoxFuture<'_, StoreResult<QueueStats>>;
    /// Deletes finished deliveries (done, ignored, dead) received before this time, with
    /// their attempts, and activity rows past `crate::activity::KEEP_MS`.
    fn prune(&self, received_before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;
    /// Pending deliveries as last counted by this process: cheap, for the queue cap.
    fn approximate_depth(&self) -> u64;
    /// The failing and pending deliveries of one repository (by GitHub id or name).
    fn repository_backlog(
        &self,
        github_id: Option<u64>,
        full_name: &str,
    ) -> BoxFuture<'_, StoreResult<RepositoryBacklog>>;
    /// Records that catch-up asks GitHub to redeliver `guid`: `true` for the first caller,
    /// `false` when it was asked for since `window_start_ms`, by this process or another
    /// (a CLI `catch-up` beside the daemon's own), so GitHub is asked once per window.
    fn reserve_redelivery(
        &self,
        guid: &str,
        hook_id: u64,
        now_ms: i64,
        window_start_ms: i64,
    ) -> BoxFuture<'_, StoreResult<bool>>;
    /// Takes a reservation back after GitHub refused the request, so a later run asks again.
    fn release_redelivery(&self, guid: &str) -> BoxFuture<'_, StoreResult<()>>;
}
