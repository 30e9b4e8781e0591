//! The instances sharing a database, and which one leads: the leader runs the
//! singletons (polling, catch-up, tunnel followers, retention pruning) that must run on
//! one instance at a time.
//!
//! Leadership is a lease in the database (by its clock): the leader renews it with every
//! heartbeat; when it stops (crashed, stopped, cut off), the lease runs out and the next
//! instance whose heartbeat finds it over takes it, with a new term. A clean stop gives it
//! up at once.

use crate::storage::{BoxFuture, StoreResult};

/// What an instance says about itself with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub name: String,
    /// `all`, `receiver` or `worker`.
    pub role: String,
    pub version: String,
    pub started_at_ms: i64,
    /// Whether it may lead (it runs workers).
    pub may_lead: bool,
}

/// An instance as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub name: String,
    pub role: String,
    pub version: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    pub leader: bool,
}

pub trait Cluster: Send + Sync {
    /// Records `me` as alive, and takes or keeps the leadership when `me` may lead and it
    /// is free or already mine: `Some(term)` while I lead (the term grows with each new
    /// leader), for `lease_ms` from now unless renewed.
    fn heartbeat(&self, me: &InstanceInfo, lease_ms: i64) -> BoxFuture<'_, StoreResult<Option<i64>>>;
    /// A clean stop: leadership given up (another takes it at its next heartbeat), and
    /// `me` no longer listed.
    fn leave(&self, name: &str) -> BoxFuture<'_, StoreResult<()>>;
    /// The instances seen within `within_ms`, the leader marked.
    fn instances(&self, within_ms: i64) -> BoxFuture<'_, StoreResult<Vec<InstanceRecord>>>;
}

/// SQLite: one process owns the database, so it is the only instance and it leads.
pub struct SingleInstance {
    me: std::sync::Mutex<Option<(InstanceInfo, i64)>>,
}

impl SingleInstance {
    pub fn new() -> Self {
        Self { me: std::sync::Mutex::new(None) }
    }
}

impl Default for SingleInstance {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster for SingleInstance {
    fn heartbeat(&self, me: &InstanceInfo, _lease_ms: i64) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        *self.me.lock().unwrap_or_else(|p| p.into_inner()) = Some((me.clone(), crate::time::now_ms()));
        let leads = me.may_lead.then_some(1);
        Box::pin(async move { Ok(leads) })
    }

    fn leave(&self, _name: &str) -> BoxFuture<'_, StoreResult<()>> {
        *self.me.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Box::pin(async { Ok(()) })
    }

    fn instances(&self, _within_ms: i64) -> BoxFuture<'_, StoreResult<Vec<InstanceRecord>>> {
        let me = self.me.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            Ok(me
                .into_iter()
                .map(|(info, seen)| InstanceRecord {
                    leader: info.may_lead,
                    name: info.name,
                    role: info.role,
                    version: info.version,
                    started_at_ms: info.started_at_ms,
                    seen_at_ms: seen,
                })
                .collect())
        })
    }
}
