//! What a delivery does to the local copy. Each event family turns its payload into
//! store effects (`normalize.rs` for the payload-is-the-data events, `git.rs` for the
//! events that move refs and are answered from the mirror), and the effects are applied
//! in one transaction, idempotently.

mod git;
pub mod normalize;

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
use crate::store::copy::{CopyStore, Effect};
use crate::store::{Registry, TrackedRepository};
use crate::sync::SyncEngine;

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

impl HandlerError {
    fn transient(e: impl std::fmt::Display) -> Self {
        HandlerError::Transient(e.to_string())
    }
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
    copy: Arc<dyn CopyStore>,
    sync: Arc<SyncEngine>,
    recently_tracked: Mutex<HashMap<RepositoryKey, (Instant, TrackedRepository)>>,
}

impl EventHandlers {
    pub fn new(registry: Arc<dyn Registry>, copy: Arc<dyn CopyStore>, sync: Arc<SyncEngine>) -> Self {
        Self { registry, copy, sync, recently_tracked: Mutex::default() }
    }

    /// The tracked repository the delivery is about, recording the delivery on it.
    async fn tracked(&self, delivery: &ClaimedDelivery) -> Result<Option<TrackedRepository>, HandlerError> {
        let key = (delivery.repository_github_id, delivery.repository.clone());
        {
            let recent = self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, repo)) = recent.get(&key) {
                if at.elapsed() < TRACKED_ANSWER_TTL {
                    return Ok(Some(repo.clone()));
                }
            }
        }
        let found = self
            .registry
            .note_delivery(delivery.repository_github_id, delivery.repository.clone(), delivery.received_at_ms)
            .await
            .map_err(HandlerError::transient)?;
        let mut recent = self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, (at, _)| at.elapsed() < TRACKED_ANSWER_TTL);
        if let Some(repo) = &found {
            recent.insert(key, (Instant::now(), repo.clone()));
        }
        Ok(found)
    }

    async fn dispatch(&self, delivery: &ClaimedDelivery) -> Result<HandlerOutcome, HandlerError> {
        let json = delivery.body.json().map_err(HandlerError::Permanent)?;
        let kind = WebhookEventType::parse(&delivery.event);
        // Shape first: a payload its event cannot use fails for good, before any effect.
        let parsed = match &kind {
            WebhookEventType::Push => Parsed::Push(parse::<PushEvent>(&json)?),
            WebhookEventType::PullRequest => Parsed::PullRequest(parse::<PullRequestEvent>(&json)?),
            WebhookEventType::Issues => Parsed::Issues(parse::<IssuesEvent>(&json)?),
            WebhookEventType::IssueComment => Parsed::IssueComment(parse::<IssueCommentEvent>(&json)?),
            WebhookEventType::Release => Parsed::Release(parse::<ReleaseEvent>(&json)?),
            WebhookEventType::Create => Parsed::Create(parse::<RefEvent>(&json)?),
            WebhookEventType::Delete => Parsed::Delete(parse::<RefEvent>(&json)?),
            WebhookEventType::Repository => Parsed::Repository(parse::<RepositoryEvent>(&json)?),
            WebhookEventType::Ping => {
                parse::<PingEvent>(&json)?;
                return Ok(HandlerOutcome::Done);
            }
            WebhookEventType::Other(name) => {
                return Ok(HandlerOutcome::Ignored(format!("no handler for event '{name}'")))
            }
        };
        let Some(repo) = self.tracked(delivery).await? else {
            return Ok(HandlerOutcome::Ignored("repository is no longer tracked".into()));
        };
        let permanent = HandlerError::Permanent;
        // Git events read the mirror and the stored heads: one such sync per repository
        // at a time, until its effects are stored (the poller takes the same lock).
        let _git_sync = match &parsed {
            Parsed::Push(_) | Parsed::Create(_) | Parsed::Delete(_) => {
                Some(self.sync.lock(repo.id).await.map_err(HandlerError::transient)?)
            }
            _ => None,
        };
        let effects: Vec<Effect> = match parsed {
            Parsed::Push(event) => git::push(&self.sync, &repo, &event).await?,
            Parsed::Create(event) => git::created(&self.sync, &repo, &event).await?,
            Parsed::Delete(event) => git::deleted(&repo, &event),
            Parsed::PullRequest(event) => vec![normalize::pull_request(&event).map_err(permanent)?],
            Parsed::Issues(event) => vec![normalize::issues(&event).map_err(permanent)?],
            Parsed::IssueComment(event) => normalize::issue_comment(&event).map_err(permanent)?,
            Parsed::Release(event) => vec![normalize::release(&event)],
            Parsed::Repository(event) => {
                // A rename changes what the cache keys on.
                self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner()).clear();
                vec![normalize::repository(&event)]
            }
        };
        if effects.is_empty() {
            return Ok(HandlerOutcome::Ignored("nothing tracked changed".into()));
        }
        self.copy.apply(repo.id, effects).await.map_err(|e| match e {
            crate::db::StoreError::Conflict(message) => HandlerError::Permanent(message),
            other => HandlerError::transient(other),
        })?;
        Ok(HandlerOutcome::Done)
    }
}

enum Parsed {
    Push(PushEvent),
    PullRequest(PullRequestEvent),
    Issues(IssuesEvent),
    IssueComment(IssueCommentEvent),
    Release(ReleaseEvent),
    Create(RefEvent),
    Delete(RefEvent),
    Repository(RepositoryEvent),
}

impl DeliveryHandler for EventHandlers {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<HandlerOutcome, HandlerError>> {
        Box::pin(self.dispatch(delivery))
    }
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, HandlerError> {
    serde_json::from_slice::<T>(json)
        .map_err(|e| HandlerError::Permanent(format!("payload does not fit its event: {e}")))
}
