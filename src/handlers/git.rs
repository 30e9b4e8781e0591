//! push, create and delete: the events that move refs. The payload names the ref; the
//! mirror says what it now contains (a payload's commit list is capped at 2048 and skips
//! nothing only if no delivery was lost, so it is never trusted for completeness).

use futurnal_github::payload::{PushEvent, RefEvent};

use super::HandlerError;
use crate::store::copy::Effect;
use crate::store::TrackedRepository;
use crate::sync::SyncEngine;

fn git_error(e: anyhow::Error) -> HandlerError {
    HandlerError::Transient(format!("{e:#}"))
}

pub async fn push(sync: &SyncEngine, repo: &TrackedRepository, event: &PushEvent) -> Result<Vec<Effect>, HandlerError> {
    if let Some(branch) = event.git_ref.strip_prefix("refs/heads/") {
        if event.deleted {
            return Ok(vec![Effect::DeleteBranch { name: branch.to_owned() }]);
        }
        if !SyncEngine::tracks_branch(repo, branch) {
            return Ok(Vec::new());
        }
        return sync.sync_branch(repo, branch).await.map_err(git_error);
    }
    if let Some(tag) = event.git_ref.strip_prefix("refs/tags/") {
        if event.deleted {
            return Ok(vec![Effect::DeleteTag { name: tag.to_owned() }]);
        }
        return sync.sync_tag(repo, tag).await.map_err(git_error);
    }
    Ok(Vec::new())
}

pub async fn created(
    sync: &SyncEngine,
    repo: &TrackedRepository,
    event: &RefEvent,
) -> Result<Vec<Effect>, HandlerError> {
    match event.ref_type.as_str() {
        "branch" if SyncEngine::tracks_branch(repo, &event.git_ref) => {
            sync.sync_branch(repo, &event.git_ref).await.map_err(git_error)
        }
        "tag" => sync.sync_tag(repo, &event.git_ref).await.map_err(git_error),
        _ => Ok(Vec::new()),
    }
}

pub fn deleted(_repo: &TrackedRepository, event: &RefEvent) -> Vec<Effect> {
    match event.ref_type.as_str() {
        "branch" => vec![Effect::DeleteBranch { name: event.git_ref.clone() }],
        "tag" => vec![Effect::DeleteTag { name: event.git_ref.clone() }],
        _ => Vec::new(),
    }
}
