//! The queue on SQLite. Every write goes through the database's group-committing writer
//! thread; the claim walks `queue_domains` (ordering domains with pending work, in turn
//! order) and takes each one's head run through the `deliveries_pending` index, so its
//! cost follows the number of busy domains, not the length of the queue.
//!
//! Acknowledgement order is `seq` order here: every insert goes through the one writer
//! thread, which assigns `seq` and commits in that order, so no delivery with a lower
//! `seq` can commit after one with a higher `seq`. (A backend with concurrent writers,
//! such as PostgreSQL's sequences, needs a per-domain counter bumped inside the enqueue
//! transaction instead.) The claim handle wraps `seq`, which only this module reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::domain::{ordering_domain, repo_key};
use crate::storage::changes::Cause;
use crate::storage::queue::{
    AttemptRecord, ClaimHandle, ClaimedDelivery, Claimer, Completion, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    EnqueueOutcome, InitialStatus, Lane, NewDelivery, Queue, QueueStats, Report, RepositoryBacklog, StoredBody,
    LOST_ATTEMPT_ERROR,
};
use crate::storage::sqlite::SqliteDb;
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::time::now_ms;

const PENDING: &str = "('queued', 'processing', 'retrying')";

pub struct SqliteQueue {
    db: Arc<SqliteDb>,
    pending: Arc<AtomicU64>,
}

impl SqliteQueue {
    pub fn new(db: Arc<SqliteDb>) -> Self {
        Self { db, pending: Arc::new(AtomicU64::new(0)) }
    }
}

fn status_from_db(s: &str) -> StoreResult<DeliveryStatus> {
    s.parse().map_err(StoreError::Unavailable)
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<(DeliveryRecord, String)> {
    let status: String = row.get(7)?;
    let record = DeliveryRecord {
        delivery_id: row.get(0)?,
        event: row.get(1)?,
        action: row.get(2)?,
        repository: row.get(3)?,
        repository_github_id: row.get::<_, Option<u64>>(4)?,
        hook_id: row.get::<_, Option<u64>>(5)?,
        received_at_ms: row.get(6)?,
        status: DeliveryStatus::Queued,
        attempts: row.get::<_, u32>(8)?,
        next_attempt_at_ms: row.get::<_, i64>(9).map(|v| (v > 0).then_some(v))?,
        last_error: row.get(10)?,
        started_at_ms: row.get(11)?,
        finished_at_ms: row.get(12)?,
        worker: row.get(13)?,
    };
    Ok((record, status))
}

const RECORD_COLUMNS: &str = "delivery_id, event, action, repository, repository_github_id, hook_id, received_at, \
     status, attempts, next_attempt_at, last_error, started_at, finished_at, worker";

fn finish_record((mut record, status): (DeliveryRecord, String)) -> StoreResult<DeliveryRecord> {
    record.status = status_from_db(&status)?;
    if record.status != DeliveryStatus::Retrying {
        record.next_attempt_at_ms = None;
    }
    Ok(record)
}

fn get_record(c: &Connection, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM deliveries WHERE delivery_id = ?1");
    c.prepare_cached(&sql)?.query_row([delivery_id], record_from_row).optional()?.map(finish_record).transpose()
}

fn insert(c: &Connection, d: &NewDelivery) -> StoreResult<EnqueueOutcome> {
    let now = d.received_at_ms;
    let key = repo_key(d.repository_github_id, d.repository.as_deref());
    let domain = key.as_deref().map(|k| ordering_domain(k, &d.event));
    let (status, note, finished_at) = match &d.initial {
        InitialStatus::Queued => ("queued", None, None),
        InitialStatus::Ignored(reason) => ("ignored", Some(reason.as_str()), Some(now)),
        InitialStatus::Done => ("done", None, Some(now)),
    };
    // No savepoint (see `write_unguarded`): each statement is harmless on its own if a
    // later one fails. A `queue_domains` row without pending work is dropped by the next
    // claim; a delivery stored although the job failed is answered 503 and recognised as
    // a duplicate when GitHub sends it again.
    if d.initial == InitialStatus::Queued {
        let domain =
            domain.as_deref().ok_or_else(|| StoreError::Conflict("a queued delivery needs a repository".into()))?;
        enter_domain(c, domain)?;
    }
    let inserted = c
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, event, action, repository, repository_github_id, repo_key, \
             hook_id, received_at, status, last_error, finished_at, body_codec, body, domain) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )?
        .execute(params![
            d.delivery_id.as_str(),
            d.event,
            d.action,
            d.repository,
            d.repository_github_id,
            key,
            d.hook_id,
            now,
            status,
            note,
            finished_at,
            d.body.codec(),
            d.body.bytes(),
            domain,
        ])?;
    if inserted == 0 {
        return Ok(EnqueueOutcome::Duplicate);
    }
    Ok(EnqueueOutcome::Stored)
}

/// Puts a domain in line for the claim, at the back, unless it is already waiting.
fn enter_domain(c: &Connection, domain: &str) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO queue_domains (domain, turn) \
         VALUES (?1, (SELECT COALESCE(MAX(turn), 0) + 1 FROM queue_domains)) ON CONFLICT (domain) DO NOTHING",
    )?
    .execute([domain])?;
    Ok(())
}

/// Fair turns: domains are visited in the order of their turn (when they last got work,
/// or joined the line), and each one that yields a lane goes to the back. A ready domain
/// therefore waits at most one round of the others, whatever its key sorts to.
fn claim_lanes(
    c: &Connection,
    claimer: &Claimer,
    max_lanes: usize,
    per_lane: usize,
    now: i64,
) -> StoreResult<Vec<Lane>> {
    let domains: Vec<String> = c
        .prepare_cached("SELECT domain FROM queue_domains ORDER BY turn, domain")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut lanes = Vec::new();
    let mut drained = Vec::new();
    let head_sql = format!(
        "SELECT seq, status, next_attempt_at, COALESCE(lease_until, 0) FROM deliveries \
         WHERE domain = ?1 AND status IN {PENDING} ORDER BY seq LIMIT ?2"
    );
    for domain in domains {
        if lanes.len() >= max_lanes {
            break;
        }
        let run: Vec<(i64, String, i64, i64)> = c
            .prepare_cached(&head_sql)?
            .query_map(params![domain, per_lane as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let Some((_, head_status, head_next, head_lease)) = run.first() else {
            drained.push(domain);
            continue;
        };
        let abandoned = |status: &str, lease_until: i64| status == "processing" && lease_until < now;
        let ready = match head_status.as_str() {
            "queued" => true,
            "retrying" => *head_next <= now,
            status => abandoned(status, *head_lease),
        };
        if !ready {
            continue;
        }
        // The run: the head, then the queued (or abandoned) deliveries right behind it.
        // Between the first and the last there is no other pending delivery of this
        // domain, so one range update claims exactly the run.
        let first = run[0].0;
        let last = run[1..]
            .iter()
            .take_while(|(_, s, _, lease)| s == "queued" || abandoned(s, *lease))
            .last()
            .map_or(first, |(seq, ..)| *seq);
        let fence: i64 = c
            .prepare_cached("UPDATE claim_counter SET fence = fence + 1 RETURNING fence")?
            .query_row([], |r| r.get(0))?;
        // An abandoned delivery's cut-short attempt is one of its attempts too: recorded
        // (outcome `lost`) before the claim below counts it and takes the row over.
        c.prepare_cached(&format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, worker, outcome, error) \
             SELECT delivery_id, attempts + 1, started_at, ?4, worker, 'lost', {LOST_ATTEMPT_ERROR} FROM deliveries \
             WHERE domain = ?1 AND seq BETWEEN ?2 AND ?3 AND status = 'processing'"
        ))?
        .execute(params![domain, first, last, now])?;
        let mut lane: Vec<ClaimedDelivery> = c
            .prepare_cached(&format!(
                "UPDATE deliveries SET status = 'processing', fence = ?4, lease_until = ?5 + ?6, worker = ?7, \
                 started_at = ?5, \
                 attempts = CASE WHEN status = 'processing' THEN attempts + 1 ELSE attempts END, \
                 last_error = CASE WHEN status = 'processing' THEN {LOST_ATTEMPT_ERROR} ELSE last_error END \
                 WHERE domain = ?1 AND seq BETWEEN ?2 AND ?3 AND status IN {PENDING} \
                 RETURNING seq, delivery_id, event, action, repository, repository_github_id, hook_id, \
                 received_at, attempts, body_codec, body"
            ))?
            .query_map(params![domain, first, last, fence, now, claimer.lease_ms, claimer.instance], |r| {
                let codec: String = r.get(9)?;
                Ok(ClaimedDelivery {
                    handle: ClaimHandle::new(r.get(0)?, fence),
                    delivery_id: r.get(1)?,
                    event: r.get(2)?,
                    action: r.get(3)?,
                    repository: r.get(4)?,
                    repository_github_id: r.get::<_, Option<u64>>(5)?,
                    hook_id: r.get::<_, Option<u64>>(6)?,
                    received_at_ms: r.get(7)?,
                    attempts: r.get::<_, u32>(8)?,
                    body: StoredBody::from_parts(&codec, r.get::<_, Option<Vec<u8>>>(10)?.unwrap_or_default()),
                })
            })?
            .collect::<Result<_, _>>()?;
        // RETURNING gives no order guarantee.
        lane.sort_unstable_by_key(|d| d.handle.raw());
        c.prepare_cached(
            "UPDATE queue_domains SET turn = (SELECT MAX(turn) + 1 FROM queue_domains) WHERE domain = ?1",
        )?
        .execute([&domain])?;
        lanes.push(lane);
    }
    for domain in drained {
        c.prepare_cached("DELETE FROM queue_domains WHERE domain = ?1")?.execute([domain])?;
    }
    Ok(lanes)
}

/// The delivery's id when `handle`'s claim is the current one.
fn holds(c: &Connection, handle: ClaimHandle) -> StoreResult<Option<String>> {
    Ok(c.prepare_cached("SELECT delivery_id FROM deliveries WHERE seq = ?1 AND fence = ?2 AND status = 'processing'")?
        .query_row(params![handle.raw(), handle.fence()], |r| r.get(0))
        .optional()?)
}

/// Applies reports (changes first, each under its claim's token); returns how many
/// deliveries left the pending states. Called inside one transaction.
fn apply_reports(c: &Connection, reports: &[Report], now: i64) -> StoreResult<u64> {
    for report in reports {
        if let Some(changes) = &report.changes {
            let Some(delivery_id) = holds(c, report.handle)? else {
                return Err(StoreError::LeaseLost(format!(
                    "delivery {} was claimed again after this worker's lease expired; its changes were not stored",
                    report.handle.raw()
                )));
            };
            let cause = Cause::Delivery(delivery_id);
            crate::storage::sqlite::copy::apply_effects(c, changes.repo_id, &changes.effects, &cause)?;
        }
    }
    let mut finished = 0;
    for Report { handle, completion, .. } in reports {
        let (seq, fence) = (handle.raw(), handle.fence());
        // (rows updated, whether that finished the delivery, the attempt's outcome)
        let (updated, finishes, outcome) = match completion {
            Completion::Done => (
                c.prepare_cached(
                    "UPDATE deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, \
                     finished_at = ?2, lease_until = NULL WHERE seq = ?1 AND fence = ?3 AND status = 'processing'",
                )?
                .execute(params![seq, now, fence])?,
                true,
                Some("done"),
            ),
            Completion::Ignored(reason) => (
                c.prepare_cached(
                    "UPDATE deliveries SET status = 'ignored', attempts = attempts + 1, last_error = ?3, \
                     finished_at = ?2, lease_until = NULL WHERE seq = ?1 AND fence = ?4 AND status = 'processing'",
                )?
                .execute(params![seq, now, reason, fence])?,
                true,
                Some("ignored"),
            ),
            Completion::Dead { error } => (
                c.prepare_cached(
                    "UPDATE deliveries SET status = 'dead', attempts = attempts + 1, last_error = ?3, \
                     finished_at = ?2, lease_until = NULL WHERE seq = ?1 AND fence = ?4 AND status = 'processing'",
                )?
                .execute(params![seq, now, error, fence])?,
                true,
                Some("dead"),
            ),
            Completion::Retry { error, delay_ms } => (
                c.prepare_cached(
                    "UPDATE deliveries SET status = 'retrying', attempts = attempts + 1, last_error = ?2, \
                     next_attempt_at = ?3, lease_until = NULL WHERE seq = ?1 AND fence = ?4 AND status = 'processing'",
                )?
                .execute(params![seq, error, now + delay_ms, fence])?,
                false,
                Some("retry"),
            ),
            // Handed back unprocessed: not an attempt.
            Completion::Release => (
                c.prepare_cached(
                    "UPDATE deliveries SET status = 'queued', lease_until = NULL \
                     WHERE seq = ?1 AND fence = ?2 AND status = 'processing'",
                )?
                .execute(params![seq, fence])?,
                false,
                None,
            ),
        };
        if let (1, Some(outcome)) = (updated, outcome) {
            record_attempt(c, seq, now, outcome)?;
        }
        if finishes {
            finished += updated as u64;
        }
    }
    Ok(finished)
}

/// The attempt a claim just ended, as the delivery's row now says it (its number, who
/// made it and when it started, its error).
fn record_attempt(c: &Connection, seq: i64, now: i64, outcome: &str) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, worker, outcome, error) \
         SELECT delivery_id, attempts, started_at, ?2, worker, ?3, CASE WHEN ?3 = 'done' THEN NULL ELSE last_error END \
         FROM deliveries WHERE seq = ?1",
    )?
    .execute(params![seq, now, outcome])?;
    Ok(())
}

fn renew_leases(c: &Connection, handles: &[ClaimHandle], lease_ms: i64, now: i64) -> StoreResult<usize> {
    let mut held = 0;
    for handle in handles {
        held += c
            .prepare_cached(
                "UPDATE deliveries SET lease_until = ?3 WHERE seq = ?1 AND fence = ?2 AND status = 'processing'",
            )?
            .execute(params![handle.raw(), handle.fence(), now + lease_ms])?;
    }
    Ok(held)
}

fn count_pending(c: &Connection) -> StoreResult<u64> {
    let sql = format!("SELECT COUNT(*) FROM deliveries WHERE status IN {PENDING}");
    Ok(c.prepare_cached(&sql)?.query_row([], |r| r.get::<_, i64>(0))? as u64)
}

impl Queue for SqliteQueue {
    fn enqueue(&self, delivery: NewDelivery) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        Box::pin(async move {
            let queued = delivery.initial == InitialStatus::Queued;
            let outcome = self.db.write_unguarded(move |c| insert(c, &delivery)).await?;
            if queued && outcome == EnqueueOutcome::Stored {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
            Ok(outcome)
        })
    }

    fn claim_as(&self, claimer: &Claimer, max_lanes: usize, per_lane: usize) -> BoxFuture<'_, StoreResult<Vec<Lane>>> {
        let claimer = claimer.clone();
        Box::pin(self.db.write(move |c| claim_lanes(c, &claimer, max_lanes, per_lane.max(1), now_ms())))
    }

    fn renew(&self, handles: Vec<ClaimHandle>, lease_ms: i64) -> BoxFuture<'_, StoreResult<usize>> {
        Box::pin(self.db.write(move |c| renew_leases(c, &handles, lease_ms, now_ms())))
    }

    fn finish(&self, reports: Vec<Report>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let finished = self.db.write(move |c| apply_reports(c, &reports, now_ms())).await?;
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(finished)));
            Ok(())
        })
    }

    fn recover(&self, _instance: &str) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let (requeued, pending) = self
                .db
                .write(|c| {
                    let requeued = c.execute(
                        "UPDATE deliveries SET status = 'queued', lease_until = NULL, attempts = attempts + 1, \
                         last_error = 'worker ' || COALESCE(worker, '?') || ' stopped before it finished' \
                         WHERE status = 'processing'",
                        [],
                    )?;
                    let domains: Vec<String> = c
                        .prepare(&format!(
                            "SELECT DISTINCT domain FROM deliveries WHERE status IN {PENDING} AND domain IS NOT NULL"
                        ))?
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for domain in domains {
                        enter_domain(c, &domain)?;
                    }
                    Ok((requeued as u64, count_pending(c)?))
                })
                .await?;
            self.pending.store(pending, Ordering::Relaxed);
            Ok(requeued)
        })
    }

    fn replay(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<DeliveryRecord>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(async move {
            let record = self
                .db
                .write(move |c| {
                    let row: Option<(i64, String, Option<String>)> = c
                        .query_row(
                            "SELECT seq, status, domain FROM deliveries WHERE delivery_id = ?1",
                            [&delivery_id],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .optional()?;
                    let Some((seq, status, domain)) = row else {
                        return Err(StoreError::NotFound(format!("no stored delivery with id '{delivery_id}'")));
                    };
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
                    c.execute(
                        "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = 0, \
                         last_error = NULL, finished_at = NULL WHERE seq = ?1",
                        [seq],
                    )?;
                    enter_domain(c, &domain)?;
                    get_record(c, &delivery_id)?.ok_or_else(|| StoreError::NotFound(delivery_id.clone()))
                })
                .await?;
            self.pending.fetch_add(1, Ordering::Relaxed);
            Ok(record)
        })
    }

    fn get(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<DeliveryRecord>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(self.db.read(move |c| get_record(c, &delivery_id)))
    }

    fn payload(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Option<StoredBody>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT body_codec, body FROM deliveries WHERE delivery_id = ?1")?
                .query_row([&delivery_id], |r| {
                    let (codec, body): (String, Option<Vec<u8>>) = (r.get(0)?, r.get(1)?);
                    Ok(body.map(|b| StoredBody::from_parts(&codec, b)))
                })
                .optional()?
                .flatten())
        }))
    }

    fn attempts(&self, delivery_id: &str) -> BoxFuture<'_, StoreResult<Vec<AttemptRecord>>> {
        let delivery_id = delivery_id.to_owned();
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT attempt, started_at, finished_at, worker, outcome, error FROM delivery_attempts \
                 WHERE delivery_id = ?1 ORDER BY finished_at, rowid",
            )?
            .query_map([&delivery_id], |r| {
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    finished_at_ms: r.get(2)?,
                    worker: r.get(3)?,
                    outcome: r.get(4)?,
                    error: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn put_activity(&self, instance: &str, rows: Vec<(i64, String)>) -> BoxFuture<'_, StoreResult<()>> {
        let instance = instance.to_owned();
        Box::pin(self.db.write(move |c| {
            for (minute, data) in &rows {
                c.prepare_cached(
                    "INSERT INTO activity (minute, instance, data) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (minute, instance) DO UPDATE SET data = excluded.data",
                )?
                .execute(params![minute, instance, data])?;
            }
            Ok(())
        }))
    }

    fn activity(&self, since_ms: i64) -> BoxFuture<'_, StoreResult<Vec<(i64, String)>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT minute, data FROM activity WHERE minute >= ?1")?
                .query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn list(&self, filter: DeliveryFilter) -> BoxFuture<'_, StoreResult<Vec<DeliveryRecord>>> {
        Box::pin(self.db.read(move |c| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM deliveries \
                 WHERE (?1 IS NULL OR status = ?1) \
                 AND ((?2 IS NULL AND ?3 IS NULL) OR repository_github_id = ?2 OR repository = ?3 COLLATE NOCASE) \
                 AND (?5 IS NULL OR seq < (SELECT seq FROM deliveries WHERE delivery_id = ?5)) \
                 AND (?6 IS NULL OR event = ?6) AND (?7 IS NULL OR action = ?7) \
                 AND (?8 IS NULL OR received_at >= ?8) AND (?9 IS NULL OR received_at < ?9) \
                 AND (?10 IS NULL OR delivery_id LIKE ?10 ESCAPE '\\') \
                 ORDER BY seq DESC LIMIT ?4"
            );
            let pattern = filter.id_pattern();
            let rows = c
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        filter.status.map(DeliveryStatus::as_str),
                        filter.repository_github_id,
                        filter.repository_name,
                        filter.limit.max(1) as i64,
                        filter.before,
                        filter.event,
                        filter.action,
                        filter.received_since_ms,
                        filter.received_until_ms,
                        pattern,
                    ],
                    record_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_record).collect()
        }))
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(async move {
            let stats = self
                .db
                .read(|c| {
                    let depth = count_pending(c)?;
                    let oldest = c
                        .prepare_cached(&format!(
                            "SELECT MIN(d.received_at) FROM queue_domains q JOIN deliveries d ON d.seq = \
                             (SELECT e.seq FROM deliveries e WHERE e.domain = q.domain AND e.status IN {PENDING} \
                             ORDER BY e.seq LIMIT 1)"
                        ))?
                        .query_row([], |r| r.get::<_, Option<i64>>(0))?;
                    Ok(QueueStats { depth, oldest_pending_received_at_ms: oldest })
                })
                .await?;
            self.pending.store(stats.depth, Ordering::Relaxed);
            Ok(stats)
        })
    }

    fn prune(&self, received_before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut total = 0;
            loop {
                let deleted = self
                    .db
                    .write(move |c| {
                        let ids = c
                            .prepare_cached(
                                "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries \
                                 WHERE received_at < ?1 AND status IN ('done', 'ignored', 'dead') LIMIT 2000) \
                                 RETURNING delivery_id",
                            )?
                            .query_map([received_before_ms], |r| r.get::<_, String>(0))?
                            .collect::<Result<Vec<String>, _>>()?;
                        // Their attempts go with them.
                        let mut forget = c.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?;
                        for id in &ids {
                            forget.execute([id])?;
                        }
                        Ok(ids.len() as u64)
                    })
                    .await?;
                total += deleted;
                if deleted == 0 {
                    // Redelivery records outlive GitHub's window by nothing.
                    let window_start = now_ms() - crate::github::catch_up::REDELIVERY_WINDOW_MS;
                    self.db
                        .write(move |c| {
                            c.prepare_cached("DELETE FROM redelivery_requests WHERE asked_at < ?1")?
                                .execute([window_start])?;
                            c.prepare_cached("DELETE FROM activity WHERE minute < ?1")?
                                .execute([now_ms() - crate::activity::KEEP_MS])?;
                            Ok(())
                        })
                        .await?;
                    return Ok(total);
                }
            }
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
        Box::pin(self.db.read(move |c| {
            let (failures, queue_depth): (i64, i64) = c
                .prepare_cached(
                    "SELECT COALESCE(SUM(status IN ('dead', 'retrying')), 0), \
                     COALESCE(SUM(status IN ('queued', 'processing', 'retrying')), 0) \
                     FROM deliveries WHERE repo_key = ?1 OR (?2 IS NOT NULL AND repository_github_id = ?2)",
                )?
                .query_row(params![key, github_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(RepositoryBacklog { failures: failures as u64, queue_depth: queue_depth as u64 })
        }))
    }

    fn reserve_redelivery(
        &self,
        guid: &str,
        hook_id: u64,
        now_ms: i64,
        window_start_ms: i64,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let guid = guid.to_owned();
        Box::pin(self.db.write(move |c| {
            // One statement under the database's write lock: of two processes asking at the
            // same moment, one inserts (or renews an expired record) and the other changes
            // nothing.
            let changed = c
                .prepare_cached(
                    "INSERT INTO redelivery_requests (guid, hook_id, asked_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (guid) DO UPDATE SET hook_id = excluded.hook_id, asked_at = excluded.asked_at \
                     WHERE redelivery_requests.asked_at < ?4",
                )?
                .execute(params![guid, hook_id, now_ms, window_start_ms])?;
            Ok(changed == 1)
        }))
    }

    fn release_redelivery(&self, guid: &str) -> BoxFuture<'_, StoreResult<()>> {
        let guid = guid.to_owned();
        Box::pin(self.db.write(move |c| {
            c.prepare_cached("DELETE FROM redelivery_requests WHERE guid = ?1")?.execute([guid])?;
            Ok(())
        }))
    }
}
