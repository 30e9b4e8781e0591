//! The worker pool: claims lanes (one ordering domain's pending deliveries, in arrival
//! order), runs the handlers, and reports how each delivery ended. Domains run in
//! parallel, one lane per domain at a time; a failure is retried with exponential backoff
//! and jitter, holding back the later deliveries of its domain (only those) so order is
//! kept, until it succeeds or is marked dead. A run of git deliveries of one repository is
//! served by one sync when the handler can.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::handlers::{DeliveryHandler, HandlerError, HandlerOutcome};
use crate::metrics::{Metrics, ProcessOutcome};
use crate::storage::queue::{ClaimHandle, ClaimedDelivery, Completion, Lane, Queue};
use crate::time::now_ms;

/// How often idle workers look for work that no notification announced (retries that
/// came due, replays from another process).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub struct WorkerPool {
    pub queue: Arc<dyn Queue>,
    pub handler: Arc<dyn DeliveryHandler>,
    pub config: WorkerConfig,
    pub metrics: Arc<Metrics>,
    pub work_available: Arc<Notify>,
    /// How long in-flight lanes may run after shutdown starts.
    pub shutdown_grace: Duration,
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
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = permits.available_permits();
            let mut claimed_any = false;
            if free > 0 {
                match this.queue.claim(free, this.config.batch_per_repository).await {
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
        let mut results = Vec::with_capacity(lane.len());
        let mut held_back = false;
        let mut next = 0;
        while next < lane.len() {
            if held_back || shutdown.is_cancelled() {
                results.extend(lane[next..].iter().map(|d| (d.handle, Completion::Release)));
                break;
            }
            // Consecutive deliveries the handler can serve as one (a run of git deliveries:
            // one sync of the refs they name). If that fails, they go one by one as usual,
            // so order, retries and dead letters are exactly those of single deliveries.
            let together = self.handler.can_handle_together(&lane[next..]);
            if together > 1 {
                let run = &lane[next..next + together];
                let (handler, owned) = (self.handler.clone(), run.to_vec());
                // In a task of its own, like single deliveries: a panic fails only this try.
                let joined = tokio::spawn(async move { handler.handle_together(&owned).await }).await;
                let answer = joined.unwrap_or_else(|e| Err(HandlerError::Transient(panic_message(e))));
                match answer {
                    Ok(outcomes) if outcomes.len() == run.len() => {
                        for (delivery, outcome) in run.iter().zip(outcomes) {
                            results.push((delivery.handle, self.finish(delivery, Ok(outcome))));
                        }
                        next += together;
                        continue;
                    }
                    Ok(_) => tracing::error!("A handler answered for the wrong number of deliveries; one by one"),
                    Err(e) => tracing::debug!(
                        deliveries = together, error = %e, "Serving deliveries together failed; one by one"
                    ),
                }
            }
            let delivery = &lane[next];
            let completion = self.process(delivery).await;
            held_back = matches!(completion, Completion::Retry { .. });
            results.push((delivery.handle, completion));
            next += 1;
        }
        self.report(results, shutdown).await;
        let mut set = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for handle in handles {
            set.remove(&handle);
        }
    }

    async fn process(&self, delivery: &ClaimedDelivery) -> Completion {
        // Each delivery runs in a task of its own so a panicking handler fails only it.
        let handler = self.handler.clone();
        let owned = delivery.clone();
        let result = tokio::spawn(async move { handler.handle(&owned).await }).await.unwrap_or_else(|join_error| {
            let message = panic_message(join_error);
            Err(HandlerError::Transient(format!("handler panicked: {message}")))
        });
        self.finish(delivery, result)
    }

    /// Turns a handler's answer into the delivery's completion, counted and logged.
    fn finish(&self, delivery: &ClaimedDelivery, result: Result<HandlerOutcome, HandlerError>) -> Completion {
        let attempt = delivery.attempts + 1;
        let id = &delivery.delivery_id;
        let (completion, outcome) = match result {
            Ok(HandlerOutcome::Done) => (Completion::Done, ProcessOutcome::Done),
            Ok(HandlerOutcome::Ignored(reason)) => (Completion::Ignored(reason), ProcessOutcome::Ignored),
            Err(HandlerError::Permanent(error)) => (Completion::Dead { error }, ProcessOutcome::Dead),
            Err(HandlerError::Transient(error)) if attempt >= self.config.max_attempts => (
                Completion::Dead { error: format!("{error} (gave up after {attempt} attempts)") },
                ProcessOutcome::Dead,
            ),
            Err(HandlerError::Transient(error)) => {
                let delay = backoff_delay(attempt, self.config.retry_base, self.config.retry_cap, random_unit());
                let next_attempt_at_ms = now_ms() + delay.as_millis() as i64;
                (Completion::Retry { error, next_attempt_at_ms }, ProcessOutcome::Retry)
            }
        };
        self.metrics.processed(outcome);
        match &completion {
            Completion::Done => {
                tracing::info!(delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt, "Delivery processed")
            }
            Completion::Ignored(reason) => {
                tracing::info!(delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), reason = %reason, "Delivery ignored")
            }
            Completion::Retry { error, next_attempt_at_ms } => tracing::warn!(
                delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt,
                retry_in_ms = next_attempt_at_ms - now_ms(), error = %error, "Delivery failed; will retry"
            ),
            Completion::Dead { error } => tracing::error!(
                delivery_id = %id, event = %delivery.event, repository = delivery.repository.as_deref().unwrap_or("-"), attempt,
                error = %error, "Delivery failed for good; marked dead"
            ),
            Completion::Release => {}
        }
        completion
    }

    /// Reports results, retrying while the database is unavailable (a restart or a
    /// failover of PostgreSQL can take a while) until it answers or shutdown starts; a
    /// result never recorded leaves its deliveries `processing`, queued again by the
    /// next start.
    async fn report(&self, results: Vec<(ClaimHandle, Completion)>, shutdown: &CancellationToken) {
        let mut pause = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match self.queue.complete(results.clone()).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(deliveries = results.len(), failures, "Delivery results recorded after all");
                    }
                    return;
                }
                // The first failure, then one line in ten: a long outage is not a flood.
                Err(e) if failures.is_multiple_of(10) => {
                    tracing::error!(error = %e, deliveries = results.len(), "Recording delivery results failed; retrying")
                }
                Err(_) => {}
            }
            failures += 1;
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {
                    // One last try: the database may be back by now.
                    if self.queue.complete(results.clone()).await.is_ok() {
                        return;
                    }
                    tracing::error!(
                        deliveries = results.len(),
                        "Shutting down before delivery results could be recorded; the next start processes them again"
                    );
                    return;
                }
            }
            pause = (pause * 2).min(Duration::from_secs(5));
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
