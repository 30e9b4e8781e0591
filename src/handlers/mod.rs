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

use crate::storage::copy::{CopyStore, Effect};
use crate::storage::queue::ClaimedDelivery;
use crate::storage::registry::{Registry, TrackedRepository};
use crate::storage::BoxFuture;
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

/// Processes deliveries. The worker pool calls it; tests substitute their own.
pub trait DeliveryHandler: Send + Sync {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<HandlerOutcome, HandlerError>>;

    /// How many of the first deliveries of a lane `handle_together` can serve as one
    /// (0 or 1: none, handle them one by one).
    fn can_handle_together(&self, _lane: &[ClaimedDelivery]) -> usize {
        0
    }

    /// Serves consecutive deliveries of one domain at once, with one outcome per delivery
    /// and the same end state as handling them one by one. An error means "not served":
    /// nothing was stored, and the worker handles them one by one instead.
    fn handle_together<'a>(
        &'a self,
        deliveries: &'a [ClaimedDelivery],
    ) -> BoxFuture<'a, Result<Vec<HandlerOutcome>, HandlerError>> {
        let _ = deliveries;
        Box::pin(async { Err(HandlerError::Transient("this handler serves deliveries one by one".into())) })
    }
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
            Parsed::Push(event) => git::sync_run(&self.sync, &repo, &[git::push_ref(&event)]).await?,
            Parsed::Create(event) => git::sync_run(&self.sync, &repo, &[git::created_ref(&event)]).await?,
            Parsed::Delete(event) => git::sync_run(&self.sync, &repo, &[git::deleted_ref(&event)]).await?,
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
            crate::storage::StoreError::Conflict(message) => HandlerError::Permanent(message),
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

impl EventHandlers {
    /// A run of git deliveries of one repository, served by one sync: every ref they name
    /// is fetched in one connection, and the last delivery naming a ref decides what
    /// happens to it (a deletion as the payload says, else the mirror's state), as if each
    /// had been handled in turn. All effects are stored in one transaction.
    async fn dispatch_git_run(&self, run: &[ClaimedDelivery]) -> Result<Vec<HandlerOutcome>, HandlerError> {
        let mut named = Vec::with_capacity(run.len());
        for delivery in run {
            let json = delivery.body.json().map_err(HandlerError::Permanent)?;
            named.push(match delivery.event.as_str() {
                "push" => git::push_ref(&parse::<PushEvent>(&json)?),
                "create" => git::created_ref(&parse::<RefEvent>(&json)?),
                "delete" => git::deleted_ref(&parse::<RefEvent>(&json)?),
                other => return Err(HandlerError::Permanent(format!("'{other}' is not a git event"))),
            });
        }
        let newest = run.last().expect("a run is never empty");
        let Some(repo) = self.tracked(newest).await? else {
            return Ok(vec![HandlerOutcome::Ignored("repository is no longer tracked".into()); run.len()]);
        };
        let _git_sync = self.sync.lock(repo.id).await.map_err(HandlerError::transient)?;
        let effects = git::sync_run(&self.sync, &repo, &named).await?;
        if !effects.is_empty() {
            self.copy.apply(repo.id, effects).await.map_err(HandlerError::transient)?;
        }
        Ok(named
            .iter()
            .map(|r| {
                if git::RefChange::relevant(r.as_ref(), &repo) {
                    HandlerOutcome::Done
                } else {
                    HandlerOutcome::Ignored("nothing tracked changed".into())
                }
            })
            .collect())
    }
}

impl DeliveryHandler for EventHandlers {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<HandlerOutcome, HandlerError>> {
        Box::pin(self.dispatch(delivery))
    }

    /// A lane is one ordering domain: a git domain's lane is one repository's git
    /// deliveries, all of which one sync can serve.
    fn can_handle_together(&self, lane: &[ClaimedDelivery]) -> usize {
        match lane.first() {
            Some(first) if crate::domain::DomainKind::of_event(&first.event) == crate::domain::DomainKind::Git => {
                lane.len()
            }
            _ => 0,
        }
    }

    fn handle_together<'a>(
        &'a self,
        deliveries: &'a [ClaimedDelivery],
    ) -> BoxFuture<'a, Result<Vec<HandlerOutcome>, HandlerError>> {
        Box::pin(self.dispatch_git_run(deliveries))
    }
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, HandlerError> {
    serde_json::from_slice::<T>(json)
        .map_err(|e| HandlerError::Permanent(format!("payload does not fit its event: {e}")))
}
