//! The singletons' leader: each instance sends a heartbeat every fifth of the leader
//! lease; the one holding the lease runs the singletons (polling, catch-up, tunnel
//! followers, retention pruning), and stops them as soon as it no longer leads, or can
//! no longer renew in time. On SQLite the one instance always leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::storage::cluster::{Cluster, InstanceInfo};

/// How long stopped singletons may take to finish before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Leadership {
    pub cluster: Arc<dyn Cluster>,
    pub me: InstanceInfo,
    pub lease: Duration,
    /// Whether this instance leads right now (for `/health` and the maintenance tick).
    pub leading: Arc<AtomicBool>,
}

/// The singletons running under one term.
struct Term {
    number: i64,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Leadership {
    /// Runs until `shutdown`, starting the singletons with `start` whenever this instance
    /// becomes the leader, then gives the leadership up.
    pub async fn run<F>(self, start: F, shutdown: CancellationToken)
    where
        F: Fn(CancellationToken) -> JoinSet<()> + Send + 'static,
    {
        let tick = (self.lease / 5).max(Duration::from_millis(100));
        let lease_ms = self.lease.as_millis() as i64;
        let mut term: Option<Term> = None;
        let mut renewed = Instant::now();
        let mut failures = 0u32;
        loop {
            match self.cluster.heartbeat(&self.me, lease_ms).await {
                Ok(Some(number)) => {
                    renewed = Instant::now();
                    failures = 0;
                    if term.as_ref().is_some_and(|t| t.number != number) {
                        stop(term.take()).await;
                    }
                    if term.is_none() {
                        tracing::info!(term = number, "Leading: polling, catch-up, tunnels and pruning run here");
                        let token = shutdown.child_token();
                        term = Some(Term { number, tasks: start(token.clone()), stop: token });
                    }
                }
                Ok(None) => {
                    failures = 0;
                    if term.is_some() {
                        tracing::warn!("Another instance leads now; the singletons stop here");
                        stop(term.take()).await;
                    }
                }
                Err(e) => {
                    if failures.is_multiple_of(10) {
                        tracing::warn!(error = %e, "Heartbeat failed");
                    }
                    failures += 1;
                    // Stop before the lease can have run out: another may lead by then.
                    if term.is_some() && renewed.elapsed() + tick >= self.lease {
                        tracing::warn!("Cannot renew the leadership in time; the singletons stop here");
                        stop(term.take()).await;
                    }
                }
            }
            self.leading.store(term.is_some(), Ordering::Relaxed);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
                Some(joined) = async {
                    match term.as_mut() {
                        Some(t) if !t.tasks.is_empty() => t.tasks.join_next().await,
                        _ => std::future::pending().await,
                    }
                } => {
                    // A singleton that panicked takes the daemon down (a supervisor
                    // restarts it), as any other task's panic does.
                    if let Err(e) = joined {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
            }
        }
        stop(term.take()).await;
        self.leading.store(false, Ordering::Relaxed);
        match tokio::time::timeout(Duration::from_secs(5), self.cluster.leave(&self.me.name)).await {
            Ok(Ok(())) => {}
            _ => tracing::warn!("Could not give up the leadership; another instance takes it when the lease ends"),
        }
    }
}

async fn stop(term: Option<Term>) {
    let Some(mut term) = term else { return };
    term.stop.cancel();
    let drained = tokio::time::timeout(STOP_GRACE, async { while term.tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        term.tasks.abort_all();
        while term.tasks.join_next().await.is_some() {}
    }
}
