//! The worker pool: claims lanes (one ordering domain's pending deliveries, in arrival
//! order), runs the handlers, and reports how each delivery ended. Domains run in
//! parallel, one lane per domain at a time; a failure is retried with exponential backoff
//! and jitter, holding back the later deliveries of its domain (only those) so order is
//! kept, until it succeeds or is marked dead. A run of git deliveries of one repository is
//! served by one sync when the handler can.
//!
//! Every claim holds a lease, renewed while the lane runs; the changes a handler makes
//! are stored with the delivery's result, in one transaction that first checks the claim
//! is still current. A worker that lost its lease (it was stopped, or cut off from the
//! database, for longer than the lease) stops its lane and stores nothing more.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::handlers::{DeliveryHandler, Handled, HandlerError, HandlerOutcome, Hold};
use crate::metrics::{Metrics, ProcessOutcome};
use crate::storage::queue::{ClaimHandle, ClaimedDelivery, Claimer, Completion, Lane, Queue, Report};
use crate::storage::StoreError;

/// How often idle workers look for work that no hint announced (retries that came due,
/// leases that expired, a hint lost while the listener reconnected).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub struct WorkerPool {
    pub queue: Arc<dyn Queue>,
    pub handler: Arc<dyn DeliveryHandler>,
    pub config: WorkerConfig,
    pub metrics: Arc<Metrics>,
    pub work_available: Arc<Notify>,
    /// How long in-flight lanes may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// This instance's name, recorded on what it claims.
    pub instance: String,
}

/// Deliveries claimed by this process and not yet reported, so a forced stop can
/// release them.
type InFlight = Arc<Mutex<HashSet<ClaimHandle>>>;

impl WorkerPool {
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.concurrency));
        let in_flight: InFlight = Arc::default();
        let mut lanes = JoinSet::new();
        let mut claim_failures = 0u32;
        let claimer = Claimer { instance: this.instance.clone(), lease_ms: this.config.lease.as_millis() as i64 };
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = permits.available_permits();
            let mut claimed_any = false;
            if free > 0 {
                match this.queue.claim_as(&claimer, free, this.config.batch_per_repository).await {
                    Ok(claimed) => {
                        claim_failures = 0;
                        claimed_any = !claimed.is_empty();
                        for lane in claimed {
                            let permit = permits.clone().acquire_owned().await.expect("semaphore never closes");
                            in_flight.lock().unwrap_or_else(|p| p.into_inner()).extend(lane.iter().map(|d| d.handle));
                            let (this, in_flight, shutdown) = (this.clone(), in_flight.clone(), shutdown.clone());
                            lanes.spawn(async move {
                                this.run_lane(lane, &in_flight, &shutdown).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        claim_failures += 1;
                        tracing::error!(error = %e, "Claiming deliveries failed");
                        let pause = Duration::from_millis(200 * u64::from(claim_failures.min(25)));
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(pause) => {}
                        }
                        continue;
                    }
                }
            }
            if claimed_any && permits.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = this.work_available.notified() => {}
                Some(_) = lanes.join_next(), if !lanes.is_empty() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        // Lanes stop between deliveries once shutdown starts; give the current ones time.
        let drained =
            tokio::time::timeout(this.shutdown_grace, async { while lanes.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            lanes.abort_all();
            while lanes.join_next().await.is_some() {}
            let left: Vec<ClaimHandle> = in_flight.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
            tracing::warn!(
                deliveries = left.len(),
                "Handlers still running after the grace period were stopped; their deliveries are queued again"
            );
            let releases = left.into_iter().map(|handle| (handle, Completion::Release)).collect();
            if let Err(e) = this.queue.complete(releases).await {
                tracing::error!(error = %e, "Could not queue interrupted deliveries again; the next start will");
            }
        }
    }

    async fn run_lane(&self, lane: Lane, in_flight: &InFlight, shutdown: &CancellationToken) {
        let handles: Vec<ClaimHandle> = lane.iter().map(|d| d.handle).collect();
        let lease = Lease::new(handles.clone());
        let renewal = tokio::spawn(lease.clone().keep(self.queue.clone(), self.config.lease));
        self.serve_lane(&lane, &lease, shutdown).await;
        renewal.abort();
        let mut set = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for handle in handles {
            set.remove(&handle);
        }
    }

    /// Handles a lane's deliveries in order, storing results (with their changes) at the
    /// end, or at once after a unit that holds a lock until its changes are stored.
    async fn serve_lane(&self, lane: &[ClaimedDelivery], lease: &Lease, shutdown: &CancellationToken) {
        let mut reports: Vec<Report> = Vec::with_capacity(lane.len());
        // What each stored report says, logged and counted once stored.
        let mut told: Vec<(&ClaimedDelivery, Completion)> = Vec::with_capacity(lane.len());
        let mut held_back = false;
        let mut next = 0;
        while next < lane.len() {
            if lease.lost.is_cancelled() {
                return;
            }
            if held_back || shutdown.is_cancelled() {
                reports.extend(lane[next..].iter().map(|d| Report::from((d.handle, Completion::Release))));
                break;
            }
            if let Some(delay) = self.config.test_handler_delay {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = lease.lost.cancelled() => return,
                }
            }
            // Consecutive deliveries the handler can serve as one (a run of git deliveries:
            // one sync of the refs they name). If that fails, they go one by one as usual,
            // so order, retries and dead letters are exactly those of single deliveries.
            let together = self.handler.can_handle_together(&lane[next..]);
            let mut hold: Option<Hold> = None;
            let mut served = false;
            if together > 1 {
                let run = &lane[next..next + together];
                let (handler, owned) = (self.handler.clone(), run.to_vec());
                // In a task of its own, like single deliveries: a panic fails only this try.
                let task = tokio::spawn(async move { handler.handle_together(&owned).await });
                let Some(joined) = lease.unless_lost(task).await else { return };
                let answer = joined.unwrap_or_else(|e| Err(HandlerError::Transient(panic_message(e))));
                match answer {
                    Ok(handled) if handled.outcome.len() == run.len() => {
                        let Handled { outcome, mut changes, hold: run_hold } = handled;
                        let last = run.len() - 1;
                        for (i, (delivery, outcome)) in run.iter().zip(outcome).enumerate() {
                            // The run's changes are stored with its newest delivery.
                            let changes = if i == last { changes.take() } else { None };
                            let completion = self.finish(delivery, Ok(outcome));
                            told.push((delivery, completion.clone()));
                            reports.push(Report { handle: delivery.handle, completion, changes });
                        }
                        next += together;
                        hold = run_hold;
                        served = true;
                    }
                    Ok(_) => tracing::error!("A handler answered for the wrong number of deliveries; one by one"),
                    Err(e) => tracing::debug!(
                        deliveries = together, error = %e, "Serving deliveries together failed; one by one"
                    ),
                }
            }
            if !served {
                let delivery = &lane[next];
                let Some((report, unit_hold)) = self.process(delivery, lease).await else { return };
                held_back = matches!(report.completion, Completion::Retry { .. });
                told.push((delivery, report.completion.clone()));
                reports.push(report);
                next += 1;
                hold = unit_hold;
            }
            if hold.is_some() {
                // Stored before the lock is let go: the next sync plans from these heads.
                if !self.report(std::mem::take(&mut reports), lease, shutdown).await {
                    return;
                }
                for (delivery, completion) in told.drain(..) {
                    self.told(delivery, &completion);
                }
                drop(hold);
            }
        }
        if !reports.is_empty() && self.report(reports, lease, shutdown).await {
            for (delivery, completion) in told {
                self.told(delivery, &completion);
            }
        }
    }

    /// Runs one delivery's handler; `None` when the lease was lost meanwhile.
    async fn process(&self, delivery: &ClaimedDelivery, lease: &Lease) -> Option<(Report, Option<Hold>)> {
        if delivery.attempts >= self.config.max_attempts {
            // Claimed again after leases that expired, attempt after attempt: whatever it
            // does stops its worker before it can report. Not tried again.
            let error = format!(
                "gave up after {} attempts: the last ones ended without a result (their worker stopped)",
                delivery.attempts
            );
            let completion = self.finish(delivery, Err(HandlerError::Permanent(error)));
            return Some((Report { handle: delivery.handle, completion, changes: None }, None));
        }
        // Each delivery runs in a task of its own so a panicking handler fails only it.
        let handler = self.handler.clone();
        let owned = delivery.clone();
        let task = tokio::spawn(async move { handler.handle(&owned).await });
        let result = lease.unless_lost(task).await?.unwrap_or_else(|join_error| {
            let message = panic_message(join_error);
            Err(HandlerError::Transient(format!("handler panicked: {message}")))
        });
        let (result, changes, hold) = match result {
            Ok(Handled { outcome, changes, hold }) => (Ok(outcome), changes, hold),
            Err(e) => (Err(e), None, None),
        };
        let completion = self.finish(delivery, result);
        Some((Report { handle: delivery.handle, completion, changes }, hold))
    }

    /// Turns a handler's answer into the delivery's completion.
    fn finish(&self, delivery: &ClaimedDelivery, result: Result<HandlerOutcome, HandlerError>) -> Completion {
        let attempt = delivery.attempts + 1;
        match result {
            Ok(HandlerOutcome::Done) => Completion::Done,
            Ok(HandlerOutcome::Ignored(reason)) => Completion::Ignored(reason),
            Err(HandlerError::Permanent(error)) => Completion::Dead { error },
            Err(HandlerError::Transient(error)) if attempt >= self.config.max_attempts => {
                Completion::Dead { error: format!("{error} (gave up after {attempt} attempts)") }
            }
            Err(HandlerError::Transient(error)) => {
                let delay = backoff_delay(attempt, self.config.retry_base, self.config.retry_cap, random_unit());
                Completion::Retry { error, delay_ms: delay.as_millis() as i64 }
            }
        }
    }

    /// Counts and logs what was stored for `delivery`: only once it is stored, so a
    /// worker whose lease was lost (its result refused) says nothing it did not do.
    fn told(&self, delivery: &ClaimedDelivery, completion: &Completion) {
        let attempt = delivery.attempts + 1;
        let id = &delivery.delivery_id;
        let outcome = match completion {
            Completion::Done => ProcessOutcome::Done,
            Completion::Ignored(_) => ProcessOutcome::Ignored,
            Completion::Retry { .. } => ProcessOutcome::Retry,
            Completion::Dead { .. } => ProcessOutcome::Dead,
            Completion::Release => return,
        };
        self.metrics.processed(outcome);
        if outcome == ProcessOutcome::Done {
            let waited = crate::time::now_ms() - delivery.received_at_ms;
            self.metrics.activity.queryable(waited.max(0) as f64);
        }
        match completion {
            Completion::Done => {
                tracing::info!(delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt, "Delivery processed")
            }
            Completion::Ignored(reason) => {
                tracing::info!(delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), reason = %reason, "Delivery ignored")
            }
            Completion::Retry { error, delay_ms } => tracing::warn!(
                delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt,
                retry_in_ms = delay_ms, error = %error, "Delivery failed; will retry"
            ),
            Completion::Dead { error } => tracing::error!(
                delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt,
                error = %error, "Delivery failed for good; marked dead"
            ),
            Completion::Release => {}
        }
    }

    /// Stores results, retrying while the database is unavailable (a restart or a
    /// failover of PostgreSQL can take a while) until it answers, the lease is lost, or
    /// shutdown starts; a result never recorded leaves its deliveries `processing`, claimed
    /// again when their lease expires (or queued again by the next start). Returns whether
    /// the results were stored.
    async fn report(&self, reports: Vec<Report>, lease: &Lease, shutdown: &CancellationToken) -> bool {
        let mut pause = Duration::from_millis(100);
        let mut failures = 0u32;
        let count = reports.len();
        loop {
            // One at a time with the renewal, so it never counts a delivery this is
            // finishing as lost.
            let stored = {
                let mut outstanding = lease.outstanding.lock().await;
                let stored = self.queue.finish(reports.clone()).await;
                if stored.is_ok() {
                    outstanding.retain(|h| !reports.iter().any(|r| r.handle == *h));
                }
                stored
            };
            match stored {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(deliveries = count, failures, "Delivery results recorded after all");
                    }
                    return true;
                }
                Err(StoreError::LeaseLost(why)) => {
                    lease.lose(&why);
                    return false;
                }
                // Changes the local copy refuses (a rename onto a name another tracked
                // repository has): retrying cannot help, so the delivery that made them
                // is dead, and the others are stored as they are.
                Err(StoreError::Conflict(_)) if reports.len() > 1 => {
                    for report in reports {
                        if !Box::pin(self.report(vec![report], lease, shutdown)).await {
                            return false;
                        }
                    }
                    return true;
                }
                Err(StoreError::Conflict(why)) if reports[0].changes.is_some() => {
                    let report = &reports[0];
                    tracing::error!(error = %why, "A delivery's changes were refused by the local copy; marked dead");
                    let dead =
                        Report { handle: report.handle, completion: Completion::Dead { error: why }, changes: None };
                    return Box::pin(self.report(vec![dead], lease, shutdown)).await;
                }
                // The first failure, then one line in ten: a long outage is not a flood.
                Err(e) if failures.is_multiple_of(10) => {
                    tracing::error!(error = %e, deliveries = count, "Recording delivery results failed; retrying")
                }
                Err(_) => {}
            }
            failures += 1;
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = lease.lost.cancelled() => return false,
                () = shutdown.cancelled() => {
                    // One last try: the database may be back by now.
                    if self.queue.finish(reports.clone()).await.is_ok() {
                        return true;
                    }
                    tracing::error!(
                        deliveries = count,
                        "Shutting down before delivery results could be recorded; they are processed again later"
                    );
                    return false;
                }
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// A lane's claim: the deliveries not reported yet, renewed every third of the lease,
/// and a token cancelled when the claim is found lost.
#[derive(Clone)]
struct Lease {
    outstanding: Arc<tokio::sync::Mutex<Vec<ClaimHandle>>>,
    lost: CancellationToken,
}

impl Lease {
    fn new(handles: Vec<ClaimHandle>) -> Self {
        Self { outstanding: Arc::new(tokio::sync::Mutex::new(handles)), lost: CancellationToken::new() }
    }

    fn lose(&self, why: &str) {
        if !self.lost.is_cancelled() {
            tracing::warn!(reason = %why, "This worker's lease was lost; its lane stops and stores nothing more");
            self.lost.cancel();
        }
    }

    /// Waits for a handler's task, or abandons it (aborted) when the lease is lost.
    async fn unless_lost<T>(&self, mut task: tokio::task::JoinHandle<T>) -> Option<Result<T, tokio::task::JoinError>> {
        tokio::select! {
            joined = &mut task => Some(joined),
            () = self.lost.cancelled() => {
                task.abort();
                None
            }
        }
    }

    /// Renews until aborted or lost. A renewal that fails (the database away) is tried
    /// again at the next tick: the lease may still be held when it answers again.
    async fn keep(self, queue: Arc<dyn Queue>, lease: Duration) {
        let every = lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let outstanding = self.outstanding.lock().await;
            if outstanding.is_empty() {
                return;
            }
            match queue.renew(outstanding.clone(), lease.as_millis() as i64).await {
                Ok(held) if held < outstanding.len() => {
                    self.lose(&format!(
                        "{} of {} deliveries were claimed by another worker",
                        outstanding.len() - held,
                        outstanding.len()
                    ));
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Renewing a lease failed; trying again"),
            }
        }
    }
}

/// Exponential backoff with "equal jitter": the `attempt`-th retry waits between half
/// and all of `min(cap, base * 2^(attempt-1))`. `unit` is a random number in [0, 1).
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let ceiling = exponential.min(cap);
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn panic_message(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return "handler task was cancelled".into();
    }
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(backoff_delay(1, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(1, base, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(4, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(4, base, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(20, base, cap, 1.0), cap);
        assert_eq!(backoff_delay(u32::MAX, base, cap, 0.5), Duration::from_secs(45));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
    }
}
