//! Which repositories are tracked, as the receiver sees it: an in-memory set refreshed
//! from the registry, so the hot path does not query the database for tracked
//! repositories. A miss asks the registry about that one repository, so a repository
//! added a moment ago by another process (`futurnal sources github add`), or renamed,
//! is recognised at once.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::storage::registry::Registry;
use crate::storage::StoreResult;

const MISS_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct TrackedSet {
    github_ids: HashSet<u64>,
    names: HashSet<String>,
}

impl TrackedSet {
    fn contains(&self, github_id: Option<u64>, full_name: Option<&str>) -> bool {
        github_id.is_some_and(|id| self.github_ids.contains(&id))
            || full_name.is_some_and(|name| self.names.contains(&name.to_ascii_lowercase()))
    }
}

pub struct TrackedCache {
    registry: Arc<dyn Registry>,
    current: RwLock<(Arc<TrackedSet>, Option<Instant>)>,
    refreshing: tokio::sync::Mutex<()>,
}

impl TrackedCache {
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self { registry, current: RwLock::new((Arc::default(), None)), refreshing: tokio::sync::Mutex::new(()) }
    }

    pub async fn contains(&self, github_id: Option<u64>, full_name: Option<&str>) -> StoreResult<bool> {
        let (set, _) = self.snapshot();
        if set.contains(github_id, full_name) {
            return Ok(true);
        }
        // A miss asks the registry about this one repository (indexed): a repository added,
        // or whose GitHub id was learned, a moment ago is recognised at once.
        if self.registry.lookup(github_id, full_name.map(str::to_owned)).await?.is_none() {
            return Ok(false);
        }
        let _guard = self.refreshing.lock().await;
        if self.snapshot().1.is_none_or(|at| at.elapsed() >= MISS_REFRESH_INTERVAL) {
            self.refresh().await?;
        }
        Ok(true)
    }

    /// Reloads the set from the registry (also run on a timer, so removals show).
    pub async fn reload(&self) -> StoreResult<()> {
        let _guard = self.refreshing.lock().await;
        self.refresh().await.map(drop)
    }

    async fn refresh(&self) -> StoreResult<Arc<TrackedSet>> {
        let repos = self.registry.list().await?;
        let set = Arc::new(TrackedSet {
            github_ids: repos.iter().filter_map(|r| r.github_id).collect(),
            names: repos.iter().map(|r| r.full_name.to_ascii_lowercase()).collect(),
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (set.clone(), Some(Instant::now()));
        Ok(set)
    }

    fn snapshot(&self) -> (Arc<TrackedSet>, Option<Instant>) {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        (guard.0.clone(), guard.1)
    }
}
