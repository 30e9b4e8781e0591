//! The tracked repositories: `add`, `list`, `show`, `remove` and `sync`, and
//! [`find_repo`], which the other commands use to name one.

use anyhow::{bail, Context};
use serde_json::Value;

use super::args::AddArgs;
use super::progress::ProgressReporter;
use crate::config::Config;
use crate::domain::RepoName;
use crate::output::{self, print_json, print_table};
use crate::storage::backend::Backend;
use crate::storage::changes::Cause;
use crate::storage::registry::{RepoRef, TrackedRepository};
use crate::sync::add::{add_repository, AddRequest};
use crate::sync::SyncEngine;

pub(super) async fn add(config: &Config, backend: &Backend, args: AddArgs) -> anyhow::Result<()> {
    let name = RepoName::parse(&args.repo)?;
    for pattern in &args.branches {
        if pattern.trim().is_empty() {
            bail!("--branch needs a non-empty pattern");
        }
    }
    let request = AddRequest { name, branches: args.branches, clone_url: args.clone_url, sync: !args.no_sync };
    // Made at the first progress report: nothing is drawn unless a mirror is being made.
    let reporter = std::sync::OnceLock::new();
    let report = |p| reporter.get_or_init(ProgressReporter::new).report(p);
    let added = add_repository(config, backend, request, &report).await?;
    let repo = &added.repo;
    if config.json {
        print_json(&output::repository_json(repo, config.poll.quiet));
    } else if let Some(synced) = added.synced {
        crate::outln!(
            "Tracking {} (id {}): {} branch(es), {} commit(s) recorded",
            repo.full_name,
            repo.id,
            synced.branches,
            synced.commits
        );
    } else {
        crate::outln!("Tracking {} (id {}), not synced yet", repo.full_name, repo.id);
    }
    Ok(())
}

pub(super) async fn list(config: &Config, backend: &Backend) -> anyhow::Result<()> {
    let repos = backend.registry.list().await?;
    if config.json {
        print_json(&Value::Array(repos.iter().map(|r| output::repository_json(r, config.poll.quiet)).collect()));
    } else if repos.is_empty() {
        crate::outln!("No repositories tracked. Add one with: futurnal sources github add OWNER/NAME");
    } else {
        print_table(
            &output::REPOSITORY_HEADERS,
            &repos.iter().map(|r| output::repository_row(r, config.poll.quiet)).collect::<Vec<_>>(),
        );
    }
    Ok(())
}

pub(super) async fn show(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let reference = RepoRef::parse(repo)?;
    let Some(found) = backend.registry.find(reference).await? else {
        bail!("repository {repo} is not tracked");
    };
    if config.json {
        print_json(&output::repository_json(&found, config.poll.quiet));
    } else {
        print_table(&output::REPOSITORY_HEADERS, &[output::repository_row(&found, config.poll.quiet)]);
    }
    Ok(())
}

pub(super) async fn remove(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let removed = backend.registry.remove(RepoRef::parse(repo)?).await?;
    SyncEngine::new(config, backend.copy.clone()).delete_mirror(removed.id)?;
    if config.json {
        print_json(&output::repository_json(&removed, config.poll.quiet));
    } else {
        crate::outln!("Stopped tracking {} (id {})", removed.full_name, removed.id);
    }
    Ok(())
}

pub(super) async fn sync(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let repo = find_repo(backend, repo).await?;
    let sync = SyncEngine::new(config, backend.copy.clone());
    let _git_sync = sync.lock(repo.id).await?;
    let effects = sync.sync_all(&repo).await.with_context(|| format!("failed to sync {}", repo.full_name))?;
    let count = effects.len();
    backend.copy.apply(repo.id, effects, Cause::Sync).await?;
    let branches = backend.copy.branches(repo.id).await?;
    if config.json {
        print_json(&Value::Array(branches.iter().map(output::branch_json).collect()));
    } else {
        crate::outln!("Synced {} ({count} changes): {} branch(es)", repo.full_name, branches.len());
    }
    Ok(())
}

pub(super) async fn find_repo(backend: &Backend, repo: &str) -> anyhow::Result<TrackedRepository> {
    match backend.registry.find(RepoRef::parse(repo)?).await? {
        Some(found) => Ok(found),
        None => bail!("repository {repo} is not tracked"),
    }
}
