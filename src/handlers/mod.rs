//! What a delivery does to the local copy, one function per event family.
//!
//! For now every handler checks that the payload has the shape its event needs and
//! records the delivery on the tracked repository (learning GitHub's repository id);
//! the effects on branches, commits, pull requests, issues and releases come next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futurnal_github::payload::{
    IssueCommentEvent, IssuesEvent, PingEvent, PullRequestEvent, PushEvent, RefEvent, ReleaseEvent, RepositoryEvent,
};
use futurnal_github::WebhookEventType;
use serde::de::DeserializeOwned;

use crate::db::BoxFuture;
use crate::queue::ClaimedDelivery;
use crate::store::Registry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    Done,
    /// Nothing to do, and why.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help (the payload lacks what the event needs): dead at once.
    #[error("{0}")]
    Permanent(String),
    /// May succeed later (database busy, remote down): retried with backoff.
    #[error("{0}")]
    Transient(String),
}

/// Processes one delivery. The worker pool calls it; tests substitute their own.
pub trait DeliveryHandler: Send + Sync {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<HandlerOutcome, HandlerError>>;
}

/// How long a "this repository is tracked" answer is trusted without asking the
/// registry again (a burst of deliveries for one repository then costs one lookup).
const TRACKED_ANSWER_TTL: Duration = Duration::from_secs(1);

/// A delivery's repository as it names it: GitHub id and full name.
type RepositoryKey = (Option<u64>, Option<String>);

/// The real handlers.
pub struct EventHandlers {
    registry: Arc<dyn Registry>,
    recently_tracked: Mutex<HashMap<RepositoryKey, Instant>>,
}

impl EventHandlers {
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self { registry, recently_tracked: Mutex::default() }
    }

    /// Whether the delivery's repository is tracked, recording the delivery on it.
    async fn tracked(&self, delivery: &ClaimedDelivery) -> Result<bool, HandlerError> {
        let key = (delivery.repository_github_id, delivery.repository.clone());
        let fresh = |at: &Instant| at.elapsed() < TRACKED_ANSWER_TTL;
        if self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner()).get(&key).is_some_and(fresh) {
            return Ok(true);
        }
        let found = self
            .registry
            .note_delivery(delivery.repository_github_id, delivery.repository.clone(), delivery.received_at_ms)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        let mut recent = self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, at| fresh(at));
        if found.is_some() {
            recent.insert(key, Instant::now());
        }
        Ok(found.is_some())
    }

    async fn dispatch(&self, delivery: &ClaimedDelivery) -> Result<HandlerOutcome, HandlerError> {
        let json = delivery.body.json().map_err(HandlerError::Permanent)?;
        let kind = WebhookEventType::parse(&delivery.event);
        // Shape first: a payload its event cannot use fails for good, before any effect.
        match &kind {
            WebhookEventType::Push => check::<PushEvent>(&json)?,
            WebhookEventType::PullRequest => check::<PullRequestEvent>(&json)?,
            WebhookEventType::Issues => check::<IssuesEvent>(&json)?,
            WebhookEventType::IssueComment => check::<IssueCommentEvent>(&json)?,
            WebhookEventType::Release => check::<ReleaseEvent>(&json)?,
            WebhookEventType::Create | WebhookEventType::Delete => check::<RefEvent>(&json)?,
            WebhookEventType::Repository => check::<RepositoryEvent>(&json)?,
            WebhookEventType::Ping => check::<PingEvent>(&json)?,
            WebhookEventType::Other(name) => {
                return Ok(HandlerOutcome::Ignored(format!("no handler for event '{name}'")))
            }
        }
        if self.tracked(delivery).await? {
            Ok(HandlerOutcome::Done)
        } else {
            Ok(HandlerOutcome::Ignored("repository is no longer tracked".into()))
        }
    }
}

impl DeliveryHandler for EventHandlers {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<HandlerOutcome, HandlerError>> {
        Box::pin(self.dispatch(delivery))
    }
}

fn check<T: DeserializeOwned>(json: &[u8]) -> Result<(), HandlerError> {
    serde_json::from_slice::<T>(json)
        .map(drop)
        .map_err(|e| HandlerError::Permanent(format!("payload does not fit its event: {e}")))
}
