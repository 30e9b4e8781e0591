//! push, create and delete: the events that move refs. The payload names the ref; the
//! mirror says what it now contains (a payload's commit list is capped at 2048 and skips
//! nothing only if no delivery was lost, so it is never trusted for completeness).
//!
//! Because the mirror is the truth, a run of git deliveries of one repository needs one
//! fetch of the refs they name, not one per delivery: [`sync_run`] serves one delivery or
//! many the same way.

use std::collections::BTreeMap;

use futurnal_github::payload::{PushEvent, RefEvent};

use super::HandlerError;
use crate::storage::copy::Effect;
use crate::storage::registry::TrackedRepository;
use crate::sync::SyncEngine;

fn git_error(e: anyhow::Error) -> HandlerError {
    HandlerError::Transient(format!("{e:#}"))
}

/// What one git delivery says about one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    kind: RefKind,
    name: String,
    /// The payload says the ref is gone (a deletion sticks as the payload says; anything
    /// else is read from the remote).
    deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RefKind {
    Branch,
    Tag,
}

impl RefChange {
    /// Whether handling the change touches the local copy: a tracked branch, a tag, or a
    /// deletion (of whatever branch).
    pub fn relevant(change: Option<&RefChange>, repo: &TrackedRepository) -> bool {
        match change {
            None => false,
            Some(c) => c.deleted || c.kind == RefKind::Tag || SyncEngine::tracks_branch(repo, &c.name),
        }
    }
}

/// The ref a push names (`None`: neither a branch nor a tag).
pub fn push_ref(event: &PushEvent) -> Option<RefChange> {
    let (kind, name) = if let Some(branch) = event.git_ref.strip_prefix("refs/heads/") {
        (RefKind::Branch, branch)
    } else if let Some(tag) = event.git_ref.strip_prefix("refs/tags/") {
        (RefKind::Tag, tag)
    } else {
        return None;
    };
    Some(RefChange { kind, name: name.to_owned(), deleted: event.deleted })
}

fn ref_event(event: &RefEvent, deleted: bool) -> Option<RefChange> {
    let kind = match event.ref_type.as_str() {
        "branch" => RefKind::Branch,
        "tag" => RefKind::Tag,
        _ => return None,
    };
    Some(RefChange { kind, name: event.git_ref.clone(), deleted })
}

/// The ref a `create` names.
pub fn created_ref(event: &RefEvent) -> Option<RefChange> {
    ref_event(event, false)
}

/// The ref a `delete` names.
pub fn deleted_ref(event: &RefEvent) -> Option<RefChange> {
    ref_event(event, true)
}

/// The effects of git deliveries handled in order: for every ref, the last delivery that
/// names it decides (deleted as its payload says, or read from the mirror after one fetch
/// of every such ref). Untracked branches that are not deleted are left alone.
pub async fn sync_run(
    sync: &SyncEngine,
    repo: &TrackedRepository,
    changes: &[Option<RefChange>],
) -> Result<Vec<Effect>, HandlerError> {
    let mut last: BTreeMap<(RefKind, &str), bool> = BTreeMap::new();
    for change in changes.iter().flatten() {
        last.insert((change.kind, change.name.as_str()), change.deleted);
    }
    let (mut branches, mut tags, mut deletions) = (Vec::new(), Vec::new(), Vec::new());
    for ((kind, name), deleted) in last {
        match (kind, deleted) {
            (RefKind::Branch, true) => deletions.push(Effect::DeleteBranch { name: name.to_owned() }),
            (RefKind::Tag, true) => deletions.push(Effect::DeleteTag { name: name.to_owned() }),
            (RefKind::Branch, false) if SyncEngine::tracks_branch(repo, name) => branches.push(name.to_owned()),
            (RefKind::Branch, false) => {}
            (RefKind::Tag, false) => tags.push(name.to_owned()),
        }
    }
    let mut effects = if branches.is_empty() && tags.is_empty() {
        Vec::new()
    } else {
        sync.sync_refs(repo, &branches, &tags).await.map_err(git_error)?
    };
    effects.append(&mut deletions);
    Ok(effects)
}
