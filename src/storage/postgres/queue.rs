//! The queue on PostgreSQL, for one process or several sharing the database.
//!
//! Order: a delivery's place in its domain is taken from the domain's counter
//! (`queue_domains.next_position`) in the enqueue transaction. The counter's row stays
//! locked until that transaction commits, so a later enqueue to the same domain (from this
//! process or another) waits and gets a higher number: number order is commit order,
//! whatever the `id` sequence does (with concurrent writers, id 11 can commit before id
//! 10). Enqueues are batched: every delivery waiting when a transaction starts goes into
//! it, and each is answered after the commit, so a wave of concurrent deliveries to one
//! repository costs one commit and one turn on its counter's row, not one each.
//!
//! Claims lock the domains they take (`FOR UPDATE SKIP LOCKED`), so two claimers never
//! take one domain; `queue_domains.pending` counts each domain's pending deliveries so the
//! claim reads only domains with work, in turn order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use super::error::{from_db, to_db};
use super::{PgDb, NOW_MS};
use crate::domain::{ordering_domain, repo_key};
use crate::storage::changes::Cause;
use crate::storage::queue::{
    AttemptRecord, ClaimHandle, ClaimedDelivery, Claimer, Completion, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    EnqueueOutcome, InitialStatus, Lane, NewDelivery, Queue, QueueStats, Report, RepositoryBacklog, StoredBody,
    LOST_ATTEMPT_ERROR,
};
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::time::now_ms;

const PENDING: &str = "('queued', 'processing', 'retrying')";

pub struct PgQueue {
    db: Arc<PgDb>,
    pending: AtomicU64,
    writer: mpsc::Sender<Job>,
    /// Fault tests: record every stored set of changes in `effect_audit`.
    audit: bool,
}

impl PgQueue {
    /// Starts the batch writer on the current tokio runtime.
    pub fn new(db: Arc<PgDb>) -> Self {
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(batch_writer(db.clone(), jobs));
        Self { db, pending: AtomicU64::new(0), writer, audit: false }
    }

    /// For fault tests: every stored set of changes also leaves a row in `effect_audit`
    /// (delivery, domain, position, worker, token, database time), in the same transaction.
    pub fn with_effect_audit(mut self, audit: bool) -> Self {
        self.audit = audit;
        self
    }

    async fn insert(&self, delivery: NewDelivery) -> StoreResult<EnqueueOutcome> {
        // Refused alone, before it joins a batch whose statement it would fail.
        if delivery.initial == InitialStatus::Queued
            && repo_key(delivery.repository_github_id, delivery.repository.as_deref()).is_none()
        {
            return Err(StoreError::Conflict("a queued delivery needs a repository".into()));
        }
        let (answer, outcome) = oneshot::channel();
        let gone = || StoreError::Unavailable("the database writer stopped".into());
        self.writer.send(Job { delivery, answer }).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

const RECORD_COLUMNS: &str = "delivery_id, event, action, repository, repository_github_id, hook_id, received_at, \
     status, attempts, next_attempt_at, last_error, started_at, finished_at, worker";

fn record(row: &Row) -> StoreResult<DeliveryRecord> {
    let status: DeliveryStatus = row.get::<_, String>(7).parse().map_err(StoreError::Unavailable)?;
    let next: i64 = row.get(9);
    Ok(DeliveryRecord {
        delivery_id: row.get(0),
        event: row.get(1),
        action: row.get(2),
        repository: row.get(3),
        repository_github_id: row.get::<_, Option<i64>>(4).map(from_db).transpose()?,
        hook_id: row.get::<_, Option<i64>>(5).map(from_db).transpose()?,
        received_at_ms: row.get(6),
        status,
        attempts: u32::try_from(row.get::<_, i32>(8)).unwrap_or(0),
        next_attempt_at_ms: (status == DeliveryStatus::Retrying && next > 0).then_some(next),
        last_error: row.get(10),
        started_at_ms: row.get(11),
        finished_at_ms: row.get(12),
        worker: row.get(13),
    })
}

/// Takes `$2` numbers from a domain's counter (returns the last) and counts them pending;
/// a domain that gains work after having none goes to the back of the line.
const ENTER_DOMAIN: &str = "INSERT INTO queue_domains (domain, next_position, pending, turn) \
     VALUES ($1, $2, $2, nextval('queue_turns')) \
     ON CONFLICT (domain) DO UPDATE SET next_position = queue_domains.next_position + $2, \
     pending = queue_domains.pending + $2, \
     turn = CASE WHEN queue_domains.pending = 0 THEN nextval('queue_turns') ELSE queue_domains.turn END \
     RETURNING next_position";

/// Ready domains in turn order: those whose oldest pending delivery is queued, waits for
/// a retry that is due, or is processing under a lease that expired. Domains another
/// claimer (or an enqueue) holds right now are skipped, not waited for.
static READY_DOMAINS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT q.domain, {NOW_MS} FROM queue_domains q WHERE q.pending > 0 AND EXISTS ( \
           SELECT 1 FROM (SELECT d.status, d.next_attempt_at, d.lease_until FROM deliveries d \
             WHERE d.domain = q.domain AND d.status IN {PENDING} ORDER BY d.position LIMIT 1) h \
           WHERE h.status = 'queued' OR (h.status = 'retrying' AND h.next_attempt_at <= {NOW_MS}) \
             OR (h.status = 'processing' AND COALESCE(h.lease_until, 0) < {NOW_MS})) \
         ORDER BY q.turn LIMIT $1 FOR UPDATE OF q SKIP LOCKED"
    )
});

/// A domain's pending deliveries from its head, read under the domain's lock.
static DOMAIN_RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT id, status, next_attempt_at, COALESCE(lease_until, 0) FROM deliveries \
         WHERE domain = $1 AND status IN {PENDING} ORDER BY position LIMIT $2"
    )
});

/// Claims a run under a new token; an abandoned delivery (its lease expired) has that
/// attempt counted, recorded (outcome `lost`, in the same statement: the insert reads the
/// rows as they were before the update) and says why.
static CLAIM_RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH lost AS ( \
           INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, worker, outcome, error) \
           SELECT delivery_id, attempts + 1, started_at, {NOW_MS}, worker, 'lost', {LOST_ATTEMPT_ERROR} FROM deliveries \
           WHERE id = ANY($1) AND status = 'processing') \
         UPDATE deliveries SET status = 'processing', fence = $2, lease_until = {NOW_MS} + $3, worker = $4, \
           started_at = {NOW_MS}, \
           attempts = CASE WHEN status = 'processing' THEN attempts + 1 ELSE attempts END, \
           last_error = CASE WHEN status = 'processing' THEN {LOST_ATTEMPT_ERROR} ELSE last_error END \
         WHERE id = ANY($1) \
         RETURNING id, delivery_id, event, action, repository, repository_github_id, hook_id, \
         received_at, attempts, body_codec, body, position"
    )
});

/// Every result of a lane in one statement (its own transaction, or part of the one that
/// stores the lane's changes): each claimed delivery takes its new status, only if it is
/// still `processing` under the same token (a result never lands twice, nor after
/// another worker took over); a release puts it back as it was, without counting an
/// attempt; each domain's pending count goes down by its deliveries that finished.
/// Returns how many finished.
static COMPLETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH changed AS ( \
           UPDATE deliveries d SET status = u.status, \
             attempts = CASE WHEN u.status = 'queued' THEN d.attempts ELSE d.attempts + 1 END, \
             last_error = CASE WHEN u.status = 'queued' THEN d.last_error ELSE u.error END, \
             next_attempt_at = CASE WHEN u.status = 'retrying' THEN {NOW_MS} + u.delay ELSE d.next_attempt_at END, \
             finished_at = CASE WHEN u.status IN ('done', 'ignored', 'dead') THEN {NOW_MS} ELSE d.finished_at END, \
             lease_until = NULL \
           FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[]) \
             AS u(id, fence, status, error, delay) \
           WHERE d.id = u.id AND d.fence = u.fence AND d.status = 'processing' \
           RETURNING d.domain, u.status, d.delivery_id, d.attempts, d.started_at, d.worker, d.last_error), \
         recorded AS ( \
           INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, worker, outcome, error) \
           SELECT delivery_id, attempts, started_at, {NOW_MS}, worker, \
             CASE status WHEN 'retrying' THEN 'retry' ELSE status END, \
             CASE WHEN status = 'done' THEN NULL ELSE last_error END \
           FROM changed WHERE status <> 'queued'), \
         finished AS ( \
           SELECT domain, count(*) AS n FROM changed \
           WHERE status IN ('done', 'ignored', 'dead') AND domain IS NOT NULL GROUP BY domain), \
         counted AS ( \
           UPDATE queue_domains q SET pending = q.pending - f.n FROM finished f WHERE q.domain = f.domain RETURNING f.n) \
         SELECT COALESCE(SUM(n), 0)::BIGINT FROM counted"
    )
});

/// The least time between two "work is ready" hints from one receiver.
const HINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// How many enqueues one transaction takes at most.
const MAX_BATCH: usize = 512;

/// An enqueue waiting for its batch.
struct Job {
    delivery: NewDelivery,
    answer: oneshot::Sender<StoreResult<EnqueueOutcome>>,
}

/// Takes every enqueue waiting, writes them in one transaction, answers each after the
/// commit: one commit (and one turn on each domain's counter row) for a whole wave of
/// concurrent deliveries. Ends when the queue is dropped.
async fn batch_writer(db: Arc<PgDb>, mut jobs: mpsc::Receiver<Job>) {
    let mut last_hint: Option<std::time::Instant> = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let deliveries: Vec<NewDelivery> = batch.iter().map(|j| j.delivery.clone()).collect();
        match insert_batch(&db, deliveries).await {
            Ok(outcomes) => {
                let mut new_work = false;
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    new_work |= job.delivery.initial == InitialStatus::Queued && outcome == EnqueueOutcome::Stored;
                    let _ = job.answer.send(Ok(outcome));
                }
                // After the answers, so no acknowledgement waits for it; at most one
                // hint per interval (busy workers claim again without one).
                if new_work && last_hint.is_none_or(|at| at.elapsed() >= HINT_INTERVAL) {
                    last_hint = Some(std::time::Instant::now());
                    db.hint_work().await;
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One statement for a whole batch, so one round trip and one commit (the statement is
/// its own transaction): deliveries stored before, or twice in the batch, are told apart;
/// each domain's counter moves once, by its number of new queued deliveries, in domain
/// order (one lock order for every writer), and they take its numbers in batch order;
/// one multi-row insert. Returns the deliveries inserted (`true`), and the new queued ones
/// with their domains (`false`): one of those not inserted was stored by another process
/// since the statement's snapshot. (Two lists, not a join of them: a join of two CTEs
/// is a nested loop over both, quadratic in the batch.)
const INSERT_BATCH: &str = "WITH input AS ( \
       SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], \
         $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::TEXT[], $12::BIGINT[], $13::TEXT[], $14::BYTEA[]) \
       WITH ORDINALITY AS i(delivery_id, event, action, repository, repository_github_id, repo_key, domain, \
         hook_id, received_at, status, last_error, finished_at, body_codec, body, ord)), \
     fresh AS ( \
       SELECT DISTINCT ON (i.delivery_id) i.* FROM input i \
       WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.delivery_id = i.delivery_id) \
       ORDER BY i.delivery_id, i.ord), \
     numbered AS ( \
       SELECT f.*, \
         CASE WHEN f.status = 'queued' \
           THEN row_number() OVER (PARTITION BY f.domain, f.status = 'queued' ORDER BY f.ord) END AS rank, \
         count(*) FILTER (WHERE f.status = 'queued') OVER (PARTITION BY f.domain) AS queued \
       FROM fresh f), \
     counters AS ( \
       INSERT INTO queue_domains AS q (domain, next_position, pending, turn) \
       SELECT g.domain, g.queued, g.queued, nextval('queue_turns') \
       FROM (SELECT DISTINCT domain, queued FROM numbered WHERE rank IS NOT NULL) g ORDER BY g.domain \
       ON CONFLICT (domain) DO UPDATE SET next_position = q.next_position + excluded.next_position, \
         pending = q.pending + excluded.pending, \
         turn = CASE WHEN q.pending = 0 THEN excluded.turn ELSE q.turn END \
       RETURNING q.domain, q.next_position), \
     stored AS ( \
       INSERT INTO deliveries (delivery_id, event, action, repository, repository_github_id, repo_key, domain, \
         position, hook_id, received_at, status, last_error, finished_at, body_codec, body) \
       SELECT n.delivery_id, n.event, n.action, n.repository, n.repository_github_id, n.repo_key, n.domain, \
         c.next_position - n.queued + n.rank, n.hook_id, n.received_at, n.status, n.last_error, n.finished_at, \
         n.body_codec, n.body \
       FROM numbered n LEFT JOIN counters c ON c.domain = n.domain AND n.rank IS NOT NULL \
       ORDER BY n.ord \
       ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id) \
     SELECT delivery_id, NULL, true FROM stored \
     UNION ALL SELECT delivery_id, domain, false FROM numbered WHERE rank IS NOT NULL";

/// Writes a batch with `INSERT_BATCH`: each delivery's outcome, in batch order.
async fn insert_batch(db: &PgDb, batch: Vec<NewDelivery>) -> StoreResult<Vec<EnqueueOutcome>> {
    let mut outcomes = vec![EnqueueOutcome::Duplicate; batch.len()];
    let client = db.client().await?;
    let statement = client.prepare_cached(INSERT_BATCH).await?;
    let keys: Vec<Option<String>> =
        batch.iter().map(|d| repo_key(d.repository_github_id, d.repository.as_deref())).collect();
    let domains: Vec<Option<String>> =
        batch.iter().zip(&keys).map(|(d, key)| key.as_deref().map(|k| ordering_domain(k, &d.event))).collect();
    let text = |f: &dyn Fn(&NewDelivery) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let number = |f: &dyn Fn(&NewDelivery) -> Option<u64>| -> StoreResult<Vec<Option<i64>>> {
        batch.iter().map(|d| f(d).map(to_db).transpose()).collect()
    };
    // Each delivery's status, reason and finish time, worked out once.
    let states: Vec<(&str, Option<&str>, Option<i64>)> = batch
        .iter()
        .map(|d| match &d.initial {
            InitialStatus::Queued => ("queued", None, None),
            InitialStatus::Ignored(reason) => ("ignored", Some(reason.as_str()), Some(d.received_at_ms)),
            InitialStatus::Done => ("done", None, Some(d.received_at_ms)),
        })
        .collect();
    let rows = client
        .query(
            &statement,
            &[
                &text(&|d| Some(d.delivery_id.as_str().to_owned())),
                &text(&|d| Some(d.event.clone())),
                &text(&|d| d.action.clone()),
                &text(&|d| d.repository.clone()),
                &number(&|d| d.repository_github_id)?,
                &keys,
                &domains,
                &number(&|d| d.hook_id)?,
                &batch.iter().map(|d| d.received_at_ms).collect::<Vec<_>>(),
                &states.iter().map(|s| s.0).collect::<Vec<_>>(),
                &states.iter().map(|s| s.1).collect::<Vec<_>>(),
                &states.iter().map(|s| s.2).collect::<Vec<_>>(),
                &text(&|d| Some(d.body.codec().to_owned())),
                &batch.iter().map(|d| d.body.bytes()).collect::<Vec<_>>(),
            ],
        )
        .await?;
    // A delivery's first place in the batch gets its outcome; a later copy is a duplicate.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, d) in batch.iter().enumerate() {
        first.entry(d.delivery_id.as_str()).or_insert(i);
    }
    let mut inserted: HashSet<&str> = HashSet::new();
    let mut queued: Vec<(&str, String)> = Vec::new();
    for row in &rows {
        if row.get::<_, bool>(2) {
            let id: &str = row.get(0);
            inserted.insert(id);
            if let Some(&i) = first.get(id) {
                outcomes[i] = EnqueueOutcome::Stored;
            }
        } else {
            queued.push((row.get(0), row.get(1)));
        }
    }
    // Another process stored these since this statement's snapshot: duplicates after
    // all, and the pending counts they added go back down.
    let mut lost: BTreeMap<String, i64> = BTreeMap::new();
    for (id, domain) in queued {
        if !inserted.contains(id) {
            *lost.entry(domain).or_default() += 1;
        }
    }
    for (domain, count) in lost {
        client.execute("UPDATE queue_domains SET pending = pending - $2 WHERE domain = $1", &[&domain, &count]).await?;
    }
    Ok(outcomes)
}

impl PgQueue {
    async fn claim_lanes(&self, claimer: &Claimer, max_lanes: usize, per_lane: usize) -> StoreResult<Vec<Lane>> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let domains = tx.query(&tx.prepare_cached(&READY_DOMAINS).await?, &[&(max_lanes as i64)]).await?;
        let (run_of, claim, next_turn, next_fence) = (
            tx.prepare_cached(&DOMAIN_RUN).await?,
            tx.prepare_cached(&CLAIM_RUN).await?,
            tx.prepare_cached("UPDATE queue_domains SET turn = nextval('queue_turns') WHERE domain = $1").await?,
            tx.prepare_cached("SELECT nextval('claim_fences')").await?,
        );
        let mut lanes = Vec::new();
        for row in domains {
            let (domain, now): (String, i64) = (row.get(0), row.get(1));
            // Read again under the domain's lock: the run is the head and the queued (or
            // abandoned) deliveries right behind it.
            let run = tx.query(&run_of, &[&domain, &(per_lane as i64)]).await?;
            let abandoned = |r: &Row| r.get::<_, &str>(1) == "processing" && r.get::<_, i64>(3) < now;
            let Some(head) = run.first() else { continue };
            let ready = match head.get::<_, &str>(1) {
                "queued" => true,
                "retrying" => head.get::<_, i64>(2) <= now,
                _ => abandoned(head),
            };
            if !ready {
                continue;
            }
            let mut ids: Vec<i64> = vec![head.get(0)];
            ids.extend(
                run[1..]
                    .iter()
                    .take_while(|r| r.get::<_, &str>(1) == "queued" || abandoned(r))
                    .map(|r| r.get::<_, i64>(0)),
            );
            let fence: i64 = tx.query_one(&next_fence, &[]).await?.get(0);
            let claimed = tx.query(&claim, &[&ids, &fence, &claimer.lease_ms, &claimer.instance]).await?;
            let mut lane: Vec<(i64, ClaimedDelivery)> = Vec::with_capacity(claimed.len());
            for r in claimed {
                let codec: String = r.get(9);
                lane.push((
                    r.get(11),
                    ClaimedDelivery {
                        handle: ClaimHandle::new(r.get(0), fence),
                        delivery_id: r.get(1),
                        event: r.get(2),
                        action: r.get(3),
                        repository: r.get(4),
                        repository_github_id: r.get::<_, Option<i64>>(5).map(from_db).transpose()?,
                        hook_id: r.get::<_, Option<i64>>(6).map(from_db).transpose()?,
                        received_at_ms: r.get(7),
                        attempts: u32::try_from(r.get::<_, i32>(8)).unwrap_or(0),
                        body: StoredBody::from_parts(&codec, r.get::<_, Option<Vec<u8>>>(10).unwrap_or_default()),
                    },
                ));
            }
            lane.sort_unstable_by_key(|(position, _)| *position);
            tx.execute(&next_turn, &[&domain]).await?;
            lanes.push(lane.into_iter().map(|(_, d)| d).collect());
        }
        tx.commit().await?;
        Ok(lanes)
    }

    /// Stores reports: when any carries changes, in one transaction that first locks the
    /// reported deliveries and checks each claim is still current, then applies the
    /// changes in order, then the results; else in the one `COMPLETE` statement, which
    /// checks each token itself.
    async fn apply_reports(&self, reports: Vec<Report>) -> StoreResult<u64> {
        let mut ids = Vec::with_capacity(reports.len());
        let mut fences = Vec::with_capacity(reports.len());
        let mut statuses = Vec::with_capacity(reports.len());
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(reports.len());
        let mut delays = Vec::with_capacity(reports.len());
        for Report { handle, completion, .. } in &reports {
            let (status, error, delay) = match completion {
                Completion::Done => ("done", None, 0),
                Completion::Ignored(reason) => ("ignored", Some(reason.as_str()), 0),
                Completion::Dead { error } => ("dead", Some(error.as_str()), 0),
                Completion::Retry { error, delay_ms } => ("retrying", Some(error.as_str()), *delay_ms),
                Completion::Release => ("queued", None, 0),
            };
            ids.push(handle.raw());
            fences.push(handle.fence());
            statuses.push(status);
            errors.push(error);
            delays.push(delay);
        }
        let mut client = self.db.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&ids, &fences, &statuses, &errors, &delays];
        if reports.iter().all(|r| r.changes.is_none()) {
            let statement = client.prepare_cached(&COMPLETE).await?;
            let finished: i64 = client.query_one(&statement, &params).await?.get(0);
            return Ok(u64::try_from(finished).unwrap_or(0));
        }
        let tx = client.transaction().await?;
        let (changing, changing_fences): (Vec<i64>, Vec<i64>) =
            reports.iter().filter(|r| r.changes.is_some()).map(|r| (r.handle.raw(), r.handle.fence())).unzip();
        // The domains first, then the deliveries: the order a claim takes them in (a
        // claim taking these over after their lease expired holds the domain and wants
        // the deliveries; the other order could deadlock with it).
        tx.execute(
            "SELECT 1 FROM queue_domains WHERE domain IN (SELECT domain FROM deliveries WHERE id = ANY($1)) \
             ORDER BY domain FOR UPDATE",
            &[&changing],
        )
        .await?;
        let held = tx
            .query(
                "SELECT d.id, d.delivery_id FROM deliveries d JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS u(id, fence) \
                 ON d.id = u.id AND d.fence = u.fence WHERE d.status = 'processing' ORDER BY d.id FOR UPDATE OF d",
                &[&changing, &changing_fences],
            )
            .await?;
        let held: HashMap<i64, String> = held.iter().map(|r| (r.get(0), r.get(1))).collect();
        if let Some(lost) = changing.iter().find(|id| !held.contains_key(id)) {
            return Err(StoreError::LeaseLost(format!(
                "delivery {lost} was claimed again after this worker's lease expired; its changes were not stored"
            )));
        }
        let mut appended = Vec::new();
        for report in &reports {
            if let Some(changes) = &report.changes {
                let cause = Cause::Delivery(held[&report.handle.raw()].clone());
                super::copy::apply_effects(&tx, changes.repo_id, &changes.effects, &cause, &mut appended).await?;
            }
        }
        if self.audit {
            tx.execute(
                "INSERT INTO effect_audit (delivery_id, domain, position, worker, fence, applied_at) \
                 SELECT delivery_id, domain, position, worker, fence, \
                   (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT \
                 FROM deliveries WHERE id = ANY($1) ORDER BY position",
                &[&changing],
            )
            .await?;
        }
        let statement = tx.prepare_cached(&COMPLETE).await?;
        let finished: i64 = tx.query_one(&statement, &params).await?.get(0);
        // Last: the change counter's lock is the last one taken and the shortest held.
        super::copy::append_changes(&tx, &appended, &self.db.changes_channel).await?;
        tx.commit().await?;
        Ok(u64::try_from(finished).unwrap_or(0))
    }

    async fn renew_leases(&self, handles: Vec<ClaimHandle>, lease_ms: i64) -> StoreResult<usize> {
        let (ids, fences): (Vec<i64>, Vec<i64>) = handles.iter().map(|h| (h.raw(), h.fence())).unzip();
        let client = self.db.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "UPDATE deliveries d SET lease_until = {NOW_MS} + $3 \
                 FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS u(id, fence) \
                 WHERE d.id = u.id AND d.fence = u.fence AND d.status = 'processing'"
            ))
            .await?;
        let held = client.execute(&statement, &[&ids, &fences, &lease_ms]).await?;
        Ok(usize::try_from(held).unwrap_or(0))
    }

    async fn replay_one(&self, delivery_id: String) -> StoreResult<DeliveryRecord> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT id, status, domain, position FROM deliveries WHERE delivery_id = $1 FOR UPDATE",
                &[&delivery_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no stored delivery with id '{delivery_id}'")))?;
        let (id, status, domain, position): (i64, String, Option<String>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if status == "processing" {
            return Err(StoreError::Conflict(format!(
                "delivery '{delivery_id}' is being processed right now; try again when it has finished"
            )));
        }
        let Some(domain) = domain else {
            return Err(StoreError::Conflict(format!(
                "delivery '{delivery_id}' names no repository, so there is nothing to process"
            )));
        };
        let was_pending = matches!(status.as_str(), "queued" | "retrying");
        // Back in its own place in its domain; one that never had one gets the next.
        let position = match (was_pending, position) {
            (true, _) => position,
            (false, Some(position)) => {
                tx.execute(
                    "INSERT INTO queue_domains (domain, next_position, pending, turn) \
                     VALUES ($1, $2, 1, nextval('queue_turns')) ON CONFLICT (domain) DO UPDATE SET \
                     pending = queue_domains.pending + 1, \
                     turn = CASE WHEN queue_domains.pending = 0 THEN nextval('queue_turns') ELSE queue_domains.turn END",
                    &[&domain, &position],
                )
                .await?;
                Some(position)
            }
            (false, None) => Some(tx.query_one(ENTER_DOMAIN, &[&domain, &1i64]).await?.get(0)),
        };
        tx.execute(
            "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = 0, last_error = NULL, \
             finished_at = NULL, position = $2 WHERE id = $1",
            &[&id, &position],
        )
        .await?;
        let record =
            record(&tx.query_one(&format!("SELECT {RECORD_COLUMNS} FROM deliveries WHERE id = $1"), &[&id]).await?)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_records(&self, filter: DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM deliveries \
                     WHERE ($1::TEXT IS NULL OR status = $1) \
                     AND (($2::BIGINT IS NULL AND $3::TEXT IS NULL) OR repository_github_id = $2 \
                          OR lower(repository) = lower($3)) \
                     AND ($5::TEXT IS NULL OR id < (SELECT id FROM deliveries WHERE delivery_id = $5)) \
                     AND ($6::TEXT IS NULL OR event = $6) AND ($7::TEXT IS NULL OR action = $7) \
                     AND ($8::BIGINT IS NULL OR received_at >= $8) AND ($9::BIGINT IS NULL OR received_at < $9) \
                     AND ($10::TEXT IS NULL OR delivery_id LIKE $10 ESCAPE '\\') \
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &filter.status.map(DeliveryStatus::as_str),
                    &filter.repository_github_id.map(to_db).transpose()?,
                    &filter.repository_name,
                    &i64::from(filter.limit.max(1)),
                    &filter.before,
                    &filter.event,
                    &filter.action,
                    &filter.received_since_ms,
                    &filter.received_until_ms,
                    &filter.id_pattern(),
                ],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    async fn count_stats(&self) -> StoreResult<QueueStats> {
        let client = self.db.client().await?;
        let depth: i64 =
            client.query_one("SELECT COALESCE(SUM(pending), 0)::BIGINT FROM queue_domains", &[]).await?.get(0);
        let oldest: Option<i64> = client
            .query_one(
                &format!(
                    "SELECT MIN(h.received_at) FROM queue_domains q CROSS JOIN LATERAL ( \
                       SELECT d.received_at FROM deliveries d WHERE d.domain = q.domain AND d.status IN {PENDING} \
                       ORDER BY d.position LIMIT 1) h WHERE q.pending > 0"
                ),
                &[],
            )
            .await?
            .get(0);
        let depth = u64::try_from(depth).unwrap_or(0);
        self.pending.store(depth, Ordering::Relaxed);
        Ok(QueueStats { depth, oldest_pending_received_at_ms: oldest })
    }
}

impl Queue for PgQueue {
    fn enqueue(&self, delivery: NewDelivery) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        Box::pin(async move {
            let queued = delivery.initial == InitialStatus::Queued;
            let outcome = self.insert(delivery).await?;
            if queued && outcome == EnqueueOutcome::Stored {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
            Ok(outcome)
        })
    }

    fn claim_as(&self, claimer: &Claimer, max_lanes: usize, per_lane: usize) -> BoxFuture<'_, StoreResult<Vec<Lane>>> {
        let claimer = claimer.clone();
        Box::pin(async move { self.claim_lanes(&claimer, max_lanes, per_lane.max(1)).await })
    }

    fn renew(&self, handles: Vec<ClaimHandle>, lease_ms: i64) -> BoxFuture<'_, StoreResult<usize>> {
        Box::pin(self.renew_leases(handles, lease_ms))
    }

    fn finish(&self, reports: Vec<Report>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let released = reports.iter().any(|r| r.completion == Completion::Release);
            let finished = self.apply_reports(reports).await?;
            if released {
                // Work put back (a worker shutting down): another instance may take it.
                self.db.hint_work().await;
            }
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(finished)));
            Ok(())
        })
    }

    fn recover(&self, instance: &str) -> BoxFuture<'_, StoreResult<u64>> {
        let instance = instance.to_owned();
        Box::pin(async move {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            // Every domain locked first, in domain order: then the count below reads every
            // enqueue committed to it, and the locks are taken as a claim takes them (the
            // domain, then its deliveries). Holding a delivery while waiting for its domain
            // would deadlock with another instance's claim of it (its lease expired), which
            // holds the domain and waits for the delivery.
            tx.execute("SELECT 1 FROM queue_domains ORDER BY domain FOR UPDATE", &[]).await?;
            // Other instances may be working: only what a stopped process of this host
            // (or this instance under its own name) left processing is queued again now;
            // the rest is claimed again when its lease runs out.
            let workers: Vec<String> = tx
                .query("SELECT DISTINCT worker FROM deliveries WHERE status = 'processing' AND worker IS NOT NULL", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let gone: Vec<String> = workers.into_iter().filter(|w| crate::instance::is_gone(w, &instance)).collect();
            let requeued = tx
                .execute(
                    "UPDATE deliveries SET status = 'queued', lease_until = NULL, attempts = attempts + 1, \
                     last_error = 'worker ' || worker || ' stopped before it finished' \
                     WHERE status = 'processing' AND worker = ANY($1)",
                    &[&gone],
                )
                .await?;
            // The counts are derived data: made exact again from the deliveries.
            tx.execute(
                &format!(
                    "UPDATE queue_domains q SET pending = (SELECT COUNT(*) FROM deliveries d \
                     WHERE d.domain = q.domain AND d.status IN {PENDING})"
                ),
                &[],
            )
            .await?;
            tx.commit().await?;
            self.count_stats().await?;
            Ok(requeued)
        })
    }

    fn replay(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<DeliveryRecord>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(async move {
            let record = self.replay_one(delivery_id).await?;
            self.pending.fetch_add(1, Ordering::Relaxed);
            self.db.hint_work().await;
            Ok(record)
        })
    }

    fn get(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<DeliveryRecord>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            let sql = format!("SELECT {RECORD_COLUMNS} FROM deliveries WHERE delivery_id = $1");
            client.query_opt(&sql, &[&delivery_id]).await?.as_ref().map(record).transpose()
        })
    }

    fn payload(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<StoredBody>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            let row = client
                .query_opt("SELECT body_codec, body FROM deliveries WHERE delivery_id = $1", &[&delivery_id])
                .await?;
            Ok(row.and_then(|r| {
                let (codec, body): (String, Option<Vec<u8>>) = (r.get(0), r.get(1));
                body.map(|b| StoredBody::from_parts(&codec, b))
            }))
        })
    }

    fn attempts(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Vec<AttemptRecord>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT attempt, started_at, finished_at, worker, outcome, error FROM delivery_attempts \
                     WHERE delivery_id = $1 ORDER BY finished_at, attempt",
                    &[&delivery_id],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(AttemptRecord {
                        attempt: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                        started_at_ms: r.get(1),
                        finished_at_ms: r.get(2),
                        worker: r.get(3),
                        outcome: r.get(4),
                        error: r.get(5),
                    })
                })
                .collect()
        })
    }

    fn put_activity(&self, instance: &str, rows: Vec<(i64, String)>) -> BoxFuture<'_, StoreResult<()>> {
        let instance = instance.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            let (minutes, data): (Vec<i64>, Vec<String>) = rows.into_iter().unzip();
            client
                .execute(
                    "INSERT INTO activity (minute, instance, data) SELECT m, $2, d FROM UNNEST($1::BIGINT[], $3::TEXT[]) \
                     AS u(m, d) ON CONFLICT (minute, instance) DO UPDATE SET data = excluded.data",
                    &[&minutes, &instance, &data],
                )
                .await?;
            Ok(())
        })
    }

    fn activity(&self, since_ms: i64) -> BoxFuture<'_, StoreResult<Vec<(i64, String)>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let rows = client.query("SELECT minute, data FROM activity WHERE minute >= $1", &[&since_ms]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn list(&self, filter: DeliveryFilter) -> BoxFuture<'_, StoreResult<Vec<DeliveryRecord>>> {
        Box::pin(self.list_records(filter))
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(self.count_stats())
    }

    fn prune(&self, received_before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let mut total = 0;
            // In batches, each its own short transaction: no long lock on the table.
            loop {
                let deleted: i64 = client
                    .query_one(
                        "WITH gone AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                           WHERE received_at < $1 AND status IN ('done', 'ignored', 'dead') LIMIT 2000) \
                           RETURNING delivery_id), \
                         attempts AS (DELETE FROM delivery_attempts a USING gone WHERE a.delivery_id = gone.delivery_id) \
                         SELECT count(*) FROM gone",
                        &[&received_before_ms],
                    )
                    .await?
                    .get(0);
                let deleted = u64::try_from(deleted).unwrap_or(0);
                total += deleted;
                if deleted == 0 {
                    break;
                }
            }
            let window_start = now_ms() - crate::github::catch_up::REDELIVERY_WINDOW_MS;
            client.execute("DELETE FROM redelivery_requests WHERE asked_at < $1", &[&window_start]).await?;
            let activity_cutoff = now_ms() - crate::activity::KEEP_MS;
            client.execute("DELETE FROM activity WHERE minute < $1", &[&activity_cutoff]).await?;
            Ok(total)
        })
    }

    fn approximate_depth(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn repository_backlog(
        &self,
        github_id: Option<u64>,
        full_name: &str,
    ) -> BoxFuture<'_, StoreResult<RepositoryBacklog>> {
        let key = repo_key(github_id, Some(full_name));
        Box::pin(async move {
            let client = self.db.client().await?;
            let row = client
                .query_one(
                    "SELECT COUNT(*) FILTER (WHERE status IN ('dead', 'retrying')), \
                     COUNT(*) FILTER (WHERE status IN ('queued', 'processing', 'retrying')) \
                     FROM deliveries WHERE repo_key = $1 OR ($2::BIGINT IS NOT NULL AND repository_github_id = $2)",
                    &[&key, &github_id.map(to_db).transpose()?],
                )
                .await?;
            Ok(RepositoryBacklog {
                failures: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                queue_depth: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            })
        })
    }

    fn reserve_redelivery(
        &self,
        guid: &str,
        hook_id: u64,
        now_ms: i64,
        window_start_ms: i64,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let guid = guid.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            // One statement: of two processes asking at once, one inserts (or renews an
            // expired record), the other changes nothing.
            let changed = client
                .execute(
                    "INSERT INTO redelivery_requests (guid, hook_id, asked_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (guid) DO UPDATE SET hook_id = excluded.hook_id, asked_at = excluded.asked_at \
                     WHERE redelivery_requests.asked_at < $4",
                    &[&guid, &to_db(hook_id)?, &now_ms, &window_start_ms],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    fn release_redelivery(&self, guid: &str) -> BoxFuture<'_, StoreResult<()>> {
        let guid = guid.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            client.execute("DELETE FROM redelivery_requests WHERE guid = $1", &[&guid]).await?;
            Ok(())
        })
    }
}
