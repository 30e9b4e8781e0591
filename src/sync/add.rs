//! Adding a repository: registering it, or mirroring it and storing the repository and
//! its first sync in one transaction before the mirror moves into place. No printing:
//! the caller reports progress and the result.

use anyhow::{bail, Context};

use super::{Progress, SyncEngine};
use crate::config::Config;
use crate::domain::RepoName;
use crate::storage::backend::Backend;
use crate::storage::registry::{NewRepository, RepoRef, TrackedRepository};

/// What to add.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub name: RepoName,
    /// Branch globs to track (none empty); none: the default branch.
    pub branches: Vec<String>,
    /// Git URL (or local path) to mirror from instead of GitHub's.
    pub clone_url: Option<String>,
    /// Mirror and sync now (otherwise the repository is only registered).
    pub sync: bool,
}

/// What was added.
#[derive(Debug, Clone)]
pub struct Added {
    pub repo: TrackedRepository,
    /// The first sync, when there was one.
    pub synced: Option<FirstSync>,
}

/// What the first sync recorded.
#[derive(Debug, Clone, Copy)]
pub struct FirstSync {
    pub branches: usize,
    pub commits: usize,
}

/// Registers the repository, mirroring it and storing its first sync with it when
/// `request.sync` (the mirror and the rows are removed again when a later step fails).
/// `progress` hears the first sync's progress, then [`Progress::Mirrored`].
pub async fn add_repository(
    config: &Config,
    backend: &Backend,
    request: AddRequest,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<Added> {
    let AddRequest { name, branches, clone_url, sync: sync_now } = request;
    if let Some(existing) = backend.registry.find(RepoRef::Name(name.to_string())).await? {
        bail!("{} is already tracked (id {})", existing.full_name, existing.id);
    }
    let clone_url = clone_url.as_deref().map(normalize_clone_url).transpose()?;
    let new = NewRepository {
        full_name: name.to_string(),
        github_id: None,
        branches: branches.clone(),
        clone_url: clone_url.clone(),
        default_branch: None,
    };
    if !sync_now {
        let repo = backend.registry.add(new, Vec::new()).await?;
        return Ok(Added { repo, synced: None });
    }
    let sync = SyncEngine::new(config, backend.copy.clone());
    let url = sync.clone_url(name.as_str(), clone_url.as_deref());
    let prepared =
        sync.prepare_add(&url, &branches, progress).await.with_context(|| format!("failed to mirror {url}"))?;
    progress(Progress::Mirrored);
    let started = std::time::Instant::now();
    let staging = prepared.staging.clone();
    let added =
        backend.registry.add(NewRepository { default_branch: prepared.default_branch, ..new }, prepared.effects).await;
    let repo = match added {
        Ok(repo) => repo,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "Repository and its copy stored");
    if let Err(e) = std::fs::rename(&staging, sync.mirror_path(repo.id)) {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = backend.registry.remove(RepoRef::Id(repo.id)).await;
        bail!("failed to move the new mirror into place: {e}");
    }
    Ok(Added { repo, synced: Some(FirstSync { branches: prepared.branches, commits: prepared.commits }) })
}

/// A local path becomes absolute (and must exist); URLs pass through.
fn normalize_clone_url(url: &str) -> anyhow::Result<String> {
    if url.contains("://") || url.contains('@') {
        return Ok(url.to_owned());
    }
    let path = std::path::Path::new(url);
    let absolute = std::fs::canonicalize(path).with_context(|| format!("clone URL {url} does not exist"))?;
    Ok(absolute.to_string_lossy().into_owned())
}
