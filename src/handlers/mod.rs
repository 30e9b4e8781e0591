//! What a delivery does to the local copy. Each event family turns its payload into
//! store effects (`normalize.rs` for the payload-is-the-data events, `git.rs` for the
//! events that move refs and are answered from the mirror). Handlers do not write the
//! effects themselves: they hand them back, and the worker stores them with the
//! delivery's result, in one transaction checked against the claim's fencing token.

pub mod git;
pub mod normalize;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futurnal_github::payload::{
    IssueCommentEvent, IssuesEvent, LabelEvent, MilestoneEvent, PingEvent, PullRequestEvent,
    PullRequestReviewCommentEvent, PullRequestReviewEvent, PushEvent, RefEvent, ReleaseEvent, RepositoryEvent,
};
use futurnal_github::WebhookEventType;
use serde::de::DeserializeOwned;

use crate::storage::copy::Effect;
use crate::storage::queue::{Changes, ClaimedDelivery};
use crate::storage::registry::{Registry, TrackedRepository};
use crate::storage::BoxFuture;
use crate::sync::SyncEngine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    Done,
    /// Nothing to do, and why.
    Ignored(String),
}

/// Something held until a delivery's changes are stored (a repository's git sync lock:
/// the next sync must plan from the heads this one stores).
pub type Hold = Box<dyn Send + Sync>;

/// What a handler did: its outcome (one per delivery, for a run), the changes to store
/// with it, and what to hold until they are stored.
pub struct Handled<T = HandlerOutcome> {
    pub outcome: T,
    pub changes: Option<Changes>,
    pub hold: Option<Hold>,
}

impl<T> From<T> for Handled<T> {
    fn from(outcome: T) -> Self {
        Self { outcome, changes: None, hold: None }
    }
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
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>>;

    /// How many of the first deliveries of a lane `handle_together` can serve as one
    /// (0 or 1: none, handle them one by one).
    fn can_handle_together(&self, _lane: &[ClaimedDelivery]) -> usize {
        0
    }

    /// Serves consecutive deliveries of one domain at once, with one outcome per delivery
    /// and the same end state as handling them one by one. An error means "not served",
    /// and the worker handles them one by one instead.
    fn handle_together<'a>(
        &'a self,
        deliveries: &'a [ClaimedDelivery],
    ) -> BoxFuture<'a, Result<Handled<Vec<HandlerOutcome>>, HandlerError>> {
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
    sync: Arc<SyncEngine>,
    recently_tracked: Mutex<HashMap<RepositoryKey, (Instant, TrackedRepository)>>,
}

impl EventHandlers {
    pub fn new(registry: Arc<dyn Registry>, sync: Arc<SyncEngine>) -> Self {
        Self { registry, sync, recently_tracked: Mutex::default() }
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

    async fn dispatch(&self, delivery: &ClaimedDelivery) -> Result<Handled, HandlerError> {
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
            WebhookEventType::PullRequestReview => Parsed::Review(parse::<PullRequestReviewEvent>(&json)?),
            WebhookEventType::PullRequestReviewComment => {
                Parsed::ReviewComment(parse::<PullRequestReviewCommentEvent>(&json)?)
            }
            WebhookEventType::Label => Parsed::Label(parse::<LabelEvent>(&json)?),
            WebhookEventType::Milestone => Parsed::Milestone(parse::<MilestoneEvent>(&json)?),
            WebhookEventType::Ping => {
                parse::<PingEvent>(&json)?;
                return Ok(HandlerOutcome::Done.into());
            }
            WebhookEventType::Other(name) => {
                return Ok(HandlerOutcome::Ignored(format!("no handler for event '{name}'")).into())
            }
        };
        let Some(repo) = self.tracked(delivery).await? else {
            return Ok(HandlerOutcome::Ignored("repository is no longer tracked".into()).into());
        };
        let permanent = HandlerError::Permanent;
        // Git events read the mirror and the stored heads: one such sync per repository
        // at a time, until its effects are stored (the poller takes the same lock).
        let git_sync: Option<Hold> = match &parsed {
            Parsed::Push(_) | Parsed::Create(_) | Parsed::Delete(_) => {
                Some(Box::new(self.sync.lock(repo.id).await.map_err(HandlerError::transient)?))
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
            Parsed::Review(event) => vec![normalize::pull_request_review(&event)],
            Parsed::ReviewComment(event) => vec![normalize::pull_request_review_comment(&event).map_err(permanent)?],
            Parsed::Label(event) => vec![normalize::label(&event)],
            Parsed::Milestone(event) => vec![normalize::milestone(&event).map_err(permanent)?],
            Parsed::Repository(event) => {
                // A rename changes what the cache keys on.
                self.recently_tracked.lock().unwrap_or_else(|p| p.into_inner()).clear();
                vec![normalize::repository(&event)]
            }
        };
        if effects.is_empty() {
            return Ok(HandlerOutcome::Ignored("nothing tracked changed".into()).into());
        }
        Ok(Handled {
            outcome: HandlerOutcome::Done,
            changes: Some(Changes { repo_id: repo.id, effects }),
            hold: git_sync,
        })
    }
}

enum Parsed {
    Push(PushEvent),
    PullRequest(PullRequestEvent),
    Issues(IssuesEvent),
    IssueComment(IssueCommentEvent),
    Release(ReleaseEvent),
    Review(PullRequestReviewEvent),
    ReviewComment(PullRequestReviewCommentEvent),
    Label(LabelEvent),
    Milestone(MilestoneEvent),
    Create(RefEvent),
    Delete(RefEvent),
    Repository(RepositoryEvent),
}

impl EventHandlers {
    /// A run of git deliveries of one repository, served by one sync: every ref they name
    /// is fetched in one connection, and the last delivery naming a ref decides what
    /// happens to it (a deletion as the payload says, else the mirror's state), as if each
    /// had been handled in turn. All effects are stored in one transaction.
    async fn dispatch_git_run(&self, run: &[ClaimedDelivery]) -> Result<Handled<Vec<HandlerOutcome>>, HandlerError> {
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
            return Ok(vec![HandlerOutcome::Ignored("repository is no longer tracked".into()); run.len()].into());
        };
        let git_sync = self.sync.lock(repo.id).await.map_err(HandlerError::transient)?;
        let effects = git::sync_run(&self.sync, &repo, &named).await?;
        let outcome = named
            .iter()
            .map(|r| {
                if git::RefChange::relevant(r.as_ref(), &repo) {
                    HandlerOutcome::Done
                } else {
                    HandlerOutcome::Ignored("nothing tracked changed".into())
                }
            })
            .collect();
        Ok(Handled {
            outcome,
            changes: (!effects.is_empty()).then_some(Changes { repo_id: repo.id, effects }),
            hold: Some(Box::new(git_sync)),
        })
    }
}

impl DeliveryHandler for EventHandlers {
    fn handle<'a>(&'a self, delivery: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>> {
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
    ) -> BoxFuture<'a, Result<Handled<Vec<HandlerOutcome>>, HandlerError>> {
        Box::pin(self.dispatch_git_run(deliveries))
    }
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, HandlerError> {
    serde_json::from_slice::<T>(json)
        .map_err(|e| HandlerError::Permanent(format!("payload does not fit its event: {e}")))
}
