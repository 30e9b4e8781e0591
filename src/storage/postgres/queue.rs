//! The queue on PostgreSQL, for one process or several sharing the database.
//!
//! Order: a delivery's place in its domain is taken from the domain's counter
//! (`queue_domains.next_position`) in the enqueue transaction. The counter's row stays
//! locked until that transaction commits, so a later enqueue to the same domain waits and
//! gets a higher number: number order is commit order, whatever the `id` sequence does
//! (with concurrent writers, id 11 can commit before id 10). A duplicate rolls back, and
//! the number it took with it.
//!
//! Claims lock the domains they take (`FOR UPDATE SKIP LOCKED`), so two claimers never
//! take one domain; `queue_domains.pending` counts each domain's pending deliveries so the
//! claim reads only domains with work, in turn order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_postgres::Row;

use super::error::{from_db, to_db};
use super::PgDb;
use crate::domain::{ordering_domain, repo_key};
use crate::storage::queue::{
    ClaimHandle, ClaimedDelivery, Completion, DeliveryFilter, DeliveryRecord, DeliveryStatus, EnqueueOutcome,
    InitialStatus, Lane, NewDelivery, Queue, QueueStats, RepositoryBacklog, StoredBody,
};
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::time::now_ms;

const PENDING: &str = "('queued', 'processing', 'retrying')";

pub struct PgQueue {
    db: Arc<PgDb>,
    pending: AtomicU64,
}

impl PgQueue {
    pub fn new(db: Arc<PgDb>) -> Self {
        Self { db, pending: AtomicU64::new(0) }
    }
}

const RECORD_COLUMNS: &str = "delivery_id, event, action, repository, repository_github_id, hook_id, received_at, \
     status, attempts, next_attempt_at, last_error";

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
    })
}

/// Moves a domain to the back of the line when it gains work after having none.
const ENTER_DOMAIN: &str = "INSERT INTO queue_domains (domain, next_position, pending, turn) \
     VALUES ($1, 1, 1, nextval('queue_turns')) \
     ON CONFLICT (domain) DO UPDATE SET next_position = queue_domains.next_position + 1, \
     pending = queue_domains.pending + 1, \
     turn = CASE WHEN queue_domains.pending = 0 THEN nextval('queue_turns') ELSE queue_domains.turn END \
     RETURNING next_position";

impl PgQueue {
    async fn insert(&self, d: NewDelivery) -> StoreResult<EnqueueOutcome> {
        let key = repo_key(d.repository_github_id, d.repository.as_deref());
        let domain = key.as_deref().map(|k| ordering_domain(k, &d.event));
        let (status, note, finished_at) = match &d.initial {
            InitialStatus::Queued => ("queued", None, None),
            InitialStatus::Ignored(reason) => ("ignored", Some(reason.clone()), Some(d.received_at_ms)),
            InitialStatus::Done => ("done", None, Some(d.received_at_ms)),
        };
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let position: Option<i64> = if d.initial == InitialStatus::Queued {
            let domain =
                domain.as_deref().ok_or_else(|| StoreError::Conflict("a queued delivery needs a repository".into()))?;
            Some(tx.query_one(ENTER_DOMAIN, &[&domain]).await?.get(0))
        } else {
            None
        };
        let inserted = tx
            .query_opt(
                "INSERT INTO deliveries (delivery_id, event, action, repository, repository_github_id, repo_key, \
                 domain, position, hook_id, received_at, status, last_error, finished_at, body_codec, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
                &[
                    &d.delivery_id.as_str(),
                    &d.event,
                    &d.action,
                    &d.repository,
                    &d.repository_github_id.map(to_db).transpose()?,
                    &key,
                    &domain,
                    &position,
                    &d.hook_id.map(to_db).transpose()?,
                    &d.received_at_ms,
                    &status,
                    &note,
                    &finished_at,
                    &d.body.codec(),
                    &d.body.bytes(),
                ],
            )
            .await?;
        if inserted.is_none() {
            // Also takes back the domain's counter and pending count.
            tx.rollback().await?;
            return Ok(EnqueueOutcome::Duplicate);
        }
        tx.commit().await?;
        Ok(EnqueueOutcome::Stored)
    }

    async fn claim_lanes(&self, max_lanes: usize, per_lane: usize) -> StoreResult<Vec<Lane>> {
        let now = now_ms();
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        // Ready domains in turn order: those whose oldest pending delivery is queued, or
        // waits for a retry that is due. Domains another claimer (or an enqueue) holds
        // right now are skipped, not waited for.
        let domains = tx
            .query(
                &format!(
                    "SELECT q.domain FROM queue_domains q WHERE q.pending > 0 AND EXISTS ( \
                       SELECT 1 FROM (SELECT d.status, d.next_attempt_at FROM deliveries d \
                         WHERE d.domain = q.domain AND d.status IN {PENDING} ORDER BY d.position LIMIT 1) h \
                       WHERE h.status = 'queued' OR (h.status = 'retrying' AND h.next_attempt_at <= $1)) \
                     ORDER BY q.turn LIMIT $2 FOR UPDATE OF q SKIP LOCKED"
                ),
                &[&now, &(max_lanes as i64)],
            )
            .await?;
        let mut lanes = Vec::new();
        for row in domains {
            let domain: String = row.get(0);
            // Read again under the domain's lock: the run is the head and the queued
            // deliveries right behind it.
            let run = tx
                .query(
                    &format!(
                        "SELECT id, status, next_attempt_at FROM deliveries \
                         WHERE domain = $1 AND status IN {PENDING} ORDER BY position LIMIT $2"
                    ),
                    &[&domain, &(per_lane as i64)],
                )
                .await?;
            let Some(head) = run.first() else { continue };
            let ready = match head.get::<_, &str>(1) {
                "queued" => true,
                "retrying" => head.get::<_, i64>(2) <= now,
                _ => false,
            };
            if !ready {
                continue;
            }
            let mut ids: Vec<i64> = vec![head.get(0)];
            ids.extend(run[1..].iter().take_while(|r| r.get::<_, &str>(1) == "queued").map(|r| r.get::<_, i64>(0)));
            let claimed = tx
                .query(
                    "UPDATE deliveries SET status = 'processing' WHERE id = ANY($1) \
                     RETURNING id, delivery_id, event, action, repository, repository_github_id, hook_id, \
                     received_at, attempts, body_codec, body, position",
                    &[&ids],
                )
                .await?;
            let mut lane: Vec<(i64, ClaimedDelivery)> = Vec::with_capacity(claimed.len());
            for r in claimed {
                let codec: String = r.get(9);
                lane.push((
                    r.get(11),
                    ClaimedDelivery {
                        handle: ClaimHandle::new(r.get(0)),
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
            tx.execute("UPDATE queue_domains SET turn = nextval('queue_turns') WHERE domain = $1", &[&domain]).await?;
            lanes.push(lane.into_iter().map(|(_, d)| d).collect());
        }
        tx.commit().await?;
        Ok(lanes)
    }

    async fn apply_completions(&self, mut results: Vec<(ClaimHandle, Completion)>) -> StoreResult<u64> {
        let now = now_ms();
        // One lock order for every writer: deliveries by id, then their domains.
        results.sort_unstable_by_key(|(handle, _)| handle.raw());
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let mut finished: Vec<String> = Vec::new();
        for (handle, completion) in &results {
            let id = handle.raw();
            let finishes = |status: &str| {
                format!(
                    "UPDATE deliveries SET status = '{status}', attempts = attempts + 1, last_error = $3, \
                     finished_at = $2 WHERE id = $1 AND status = 'processing' RETURNING domain"
                )
            };
            let changed = match completion {
                Completion::Done => tx.query_opt(&finishes("done"), &[&id, &now, &None::<String>]).await?,
                Completion::Ignored(reason) => tx.query_opt(&finishes("ignored"), &[&id, &now, reason]).await?,
                Completion::Dead { error } => tx.query_opt(&finishes("dead"), &[&id, &now, error]).await?,
                Completion::Retry { error, next_attempt_at_ms } => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'retrying', attempts = attempts + 1, last_error = $3, \
                         next_attempt_at = $2 WHERE id = $1 AND status = 'processing'",
                        &[&id, next_attempt_at_ms, error],
                    )
                    .await?;
                    None
                }
                Completion::Release => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'queued' WHERE id = $1 AND status = 'processing'",
                        &[&id],
                    )
                    .await?;
                    None
                }
            };
            if let Some(domain) = changed.and_then(|row| row.get::<_, Option<String>>(0)) {
                finished.push(domain);
            }
        }
        finished.sort();
        for domain in &finished {
            tx.execute("UPDATE queue_domains SET pending = pending - 1 WHERE domain = $1", &[domain]).await?;
        }
        tx.commit().await?;
        Ok(finished.len() as u64)
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
            (false, None) => Some(tx.query_one(ENTER_DOMAIN, &[&domain]).await?.get(0)),
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
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &filter.status.map(DeliveryStatus::as_str),
                    &filter.repository_github_id.map(to_db).transpose()?,
                    &filter.repository_name,
                    &i64::from(filter.limit.max(1)),
                    &filter.before,
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

    fn claim(&self, max_lanes: usize, per_lane: usize) -> BoxFuture<'_, StoreResult<Vec<Lane>>> {
        Box::pin(self.claim_lanes(max_lanes, per_lane.max(1)))
    }

    fn complete(&self, results: Vec<(ClaimHandle, Completion)>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let finished = self.apply_completions(results).await?;
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(finished)));
            Ok(())
        })
    }

    fn recover(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let requeued =
                tx.execute("UPDATE deliveries SET status = 'queued' WHERE status = 'processing'", &[]).await?;
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
                let deleted = client
                    .execute(
                        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                         WHERE received_at < $1 AND status IN ('done', 'ignored', 'dead') LIMIT 2000)",
                        &[&received_before_ms],
                    )
                    .await?;
                total += deleted;
                if deleted == 0 {
                    break;
                }
            }
            let window_start = now_ms() - crate::github::catch_up::REDELIVERY_WINDOW_MS;
            client.execute("DELETE FROM redelivery_requests WHERE asked_at < $1", &[&window_start]).await?;
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
