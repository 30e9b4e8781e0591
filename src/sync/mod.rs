//! The git side of the local copy: one bare mirror per tracked repository, and the
//! branch sync that turns "the remote moved" into store effects. The mirror is the
//! truth: a push payload only says which branch to look at, never which commits exist.

pub mod add;
pub mod git;
pub mod glob;
pub mod packs;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use gix::ObjectId;

use crate::config::Config;
use crate::storage::copy::{CopyStore, Effect, Membership};
use crate::storage::registry::TrackedRepository;
use git::{CommitInfo, RemoteSpec};

/// Walks longer than this load the set of stored commits first, so that commits already
/// recorded (on another branch, or before a rewrite) are not read and diffed again.
const KNOWN_SET_THRESHOLD: usize = 64;

/// Holds one repository's git sync, from reading the stored heads to storing the result:
/// the worker (pushes), the poller and `serve`'s other tasks each plan from the stored
/// heads, so two at once could store an older head after a newer one. Within one process.
pub async fn lock_repository(repo_id: i64) -> tokio::sync::OwnedMutexGuard<()> {
    type Locks = std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(repo_id)
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// A repository's sync lock in this process and, through a lock file in the data dir,
/// across processes (a `sync` command next to a running daemon). Released on drop.
pub struct RepositoryLock {
    _in_process: tokio::sync::OwnedMutexGuard<()>,
    _file: std::fs::File,
    /// PostgreSQL's advisory lock, for instances on other hosts.
    _database: Option<crate::storage::copy::RepositoryGuard>,
}

fn lock_file_path(data_dir: &Path, repo_id: i64) -> PathBuf {
    data_dir.join("locks").join(format!("{repo_id}.lock"))
}

/// Takes `lock_repository`, then the lock file `<data dir>/locks/<id>.lock`, waiting for
/// another process that holds it.
pub async fn lock_repository_everywhere(data_dir: &Path, repo_id: i64) -> anyhow::Result<RepositoryLock> {
    let in_process = lock_repository(repo_id).await;
    let path = lock_file_path(data_dir, repo_id);
    let locks = path.parent().expect("a lock file is in a directory").to_owned();
    let file = tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        crate::storage::sqlite::create_private_dir(&locks)
            .with_context(|| format!("failed to create {}", locks.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("failed to open the lock file {}", path.display()))?;
        file.lock().with_context(|| format!("failed to lock {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("locking the repository failed")??;
    Ok(RepositoryLock { _in_process: in_process, _file: file, _database: None })
}

/// Progress of a long sync, for the CLI's progress bar. `Mirrored` ends `add`'s first
/// sync: the mirror is fetched and read, and what is left (storing it) is quick.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Listing,
    Fetching { refs: usize },
    Commits { done: usize, total: usize },
    Mirrored,
}

pub struct SyncEngine {
    data_dir: PathBuf,
    web_url: String,
    /// Looked up when an https remote first needs it (it may mean a keychain round trip).
    token: std::sync::OnceLock<Option<String>>,
    copy: Arc<dyn CopyStore>,
    /// Mirrors being repacked right now (one `git repack` per mirror at a time).
    repacking: Arc<std::sync::Mutex<HashSet<i64>>>,
    /// Where fetches are counted (the daemon's `/metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// What a first sync produced, before the repository is registered.
pub struct PreparedAdd {
    pub staging: PathBuf,
    pub default_branch: Option<String>,
    pub effects: Vec<Effect>,
    pub branches: usize,
    pub commits: usize,
}

impl SyncEngine {
    pub fn new(config: &Config, copy: Arc<dyn CopyStore>) -> Self {
        crate::install_tls_provider();
        let web_url = match config.github_api_url.as_str() {
            "https://api.github.com" => "https://github.com".to_owned(),
            other => other.trim_end_matches("/api/v3").trim_end_matches('/').to_owned(),
        };
        Self {
            data_dir: config.data_dir.clone(),
            web_url,
            token: Default::default(),
            copy,
            repacking: Default::default(),
            metrics: None,
        }
    }

    /// Counts this engine's fetches in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_fetch(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.git_fetched();
        }
    }

    /// One git sync of `repo_id` at a time, in this process, across processes of this
    /// host, and (on PostgreSQL) across hosts: hold it from reading the stored heads to
    /// storing the effects.
    pub async fn lock(&self, repo_id: i64) -> anyhow::Result<RepositoryLock> {
        let mut lock = lock_repository_everywhere(&self.data_dir, repo_id).await?;
        lock._database = self.copy.lock_repository(repo_id).await?;
        Ok(lock)
    }

    pub fn mirror_path(&self, repo_id: i64) -> PathBuf {
        self.data_dir.join("mirrors").join(format!("{repo_id}.git"))
    }

    /// The URL to mirror from: `--clone-url` when given, else GitHub's https URL.
    pub fn clone_url(&self, full_name: &str, clone_url: Option<&str>) -> String {
        match clone_url {
            Some(url) => url.to_owned(),
            None => format!("{}/{full_name}.git", self.web_url),
        }
    }

    fn remote(&self, url: String) -> RemoteSpec {
        // The token goes only to https remotes, through the credential callback.
        let token = if url.starts_with("https://") {
            self.token.get_or_init(|| crate::github::client::Token::from_env().map(|t| t.expose().to_owned())).clone()
        } else {
            None
        };
        RemoteSpec { url, token }
    }

    fn remote_for(&self, repo: &TrackedRepository) -> RemoteSpec {
        self.remote(self.clone_url(&repo.full_name, repo.clone_url.as_deref()))
    }

    /// The branch patterns of a repository: its own, else its default branch.
    pub fn patterns(repo: &TrackedRepository) -> Vec<String> {
        if repo.branches.is_empty() {
            vec![repo.default_branch.clone().unwrap_or_else(|| "main".into())]
        } else {
            repo.branches.clone()
        }
    }

    pub fn tracks_branch(repo: &TrackedRepository, branch: &str) -> bool {
        Self::patterns(repo).iter().any(|p| glob::matches(p, branch))
    }

    /// Fetches branches and tags in one connection and returns what changed: each
    /// branch's new commits and membership, each tag's target, and the deletion of those
    /// the remote no longer has. A run of pushes is served by one call.
    pub async fn sync_refs(
        &self,
        repo: &TrackedRepository,
        branches: &[String],
        tags: &[String],
    ) -> anyhow::Result<Vec<Effect>> {
        let stored: HashMap<String, String> = if branches.is_empty() {
            HashMap::new()
        } else {
            self.copy.branches(repo.id).await?.into_iter().map(|b| (b.name, b.head_sha)).collect()
        };
        let path = self.mirror_path(repo.id);
        let remote = self.remote_for(repo);
        let (branches_owned, tags_owned) = (branches.to_vec(), tags.to_vec());
        self.count_fetch();
        let (plans, tag_targets) = blocking(move || {
            with_repair(&path, |r| {
                let full_names: Vec<String> = branches_owned
                    .iter()
                    .map(|b| format!("refs/heads/{b}"))
                    .chain(tags_owned.iter().map(|t| format!("refs/tags/{t}")))
                    .collect();
                let present = git::fetch_refs_if_present(r, &remote, &full_names)?;
                let mut plans = Vec::new();
                for branch in &branches_owned {
                    let plan = if present.contains(&format!("refs/heads/{branch}")) {
                        local_plan(r, branch, stored.get(branch).map(String::as_str))?
                    } else {
                        None
                    };
                    plans.push((branch.clone(), plan));
                }
                let mut targets = Vec::new();
                for tag in &tags_owned {
                    let full_name = format!("refs/tags/{tag}");
                    let target = if present.contains(&full_name) {
                        git::ref_target(r, &full_name)?.map(|id| id.to_string())
                    } else {
                        None
                    };
                    targets.push((tag.clone(), target));
                }
                Ok((plans, targets))
            })
        })
        .await?;
        let mut deletions = Vec::new();
        let mut found = Vec::new();
        for (name, plan) in plans {
            match plan {
                Some(plan) => found.push((name, plan)),
                None => deletions.push(Effect::DeleteBranch { name }),
            }
        }
        let mut effects = if found.is_empty() { Vec::new() } else { self.effects_for(repo.id, found, |_| {}).await? };
        effects.append(&mut deletions);
        effects.extend(tag_targets.into_iter().map(|(name, target)| match target {
            Some(sha) => Effect::Tag { name, sha: Some(sha) },
            None => Effect::DeleteTag { name },
        }));
        self.repack_in_background(repo);
        Ok(effects)
    }

    /// Repacks the mirror off the sync's path when its fetches have piled up packs.
    fn repack_in_background(&self, repo: &TrackedRepository) {
        let path = self.mirror_path(repo.id);
        if git::pack_count(&path) <= git::MAX_PACKS
            || !self.repacking.lock().unwrap_or_else(|p| p.into_inner()).insert(repo.id)
        {
            return;
        }
        let (repacking, id, name) = (self.repacking.clone(), repo.id, repo.full_name.clone());
        let data_dir = self.data_dir.clone();
        tokio::spawn(async move {
            // Between syncs, not during one: the sync that asked for it holds the lock until
            // its effects are stored, and the next one waits for the repack.
            let _git_sync = lock_repository_everywhere(&data_dir, id).await;
            let _ = tokio::task::spawn_blocking(move || repack_now(&path, &name)).await;
            repacking.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }

    /// Polling's git half: `ls-remote` (no API quota), and a full sync only when a tracked
    /// branch or a tag moved, appeared or disappeared.
    pub async fn sync_if_moved(&self, repo: &TrackedRepository) -> anyhow::Result<Vec<Effect>> {
        let stored: HashMap<String, String> =
            self.copy.branches(repo.id).await?.into_iter().map(|b| (b.name, b.head_sha)).collect();
        let stored_tags: HashMap<String, Option<String>> = self.copy.tags(repo.id).await?.into_iter().collect();
        let path = self.mirror_path(repo.id);
        let remote = self.remote_for(repo);
        let refs = blocking(move || with_repair(&path, |r| git::list_remote(r, &remote))).await?;
        let patterns = Self::patterns(repo);
        let wanted: HashMap<String, String> = refs
            .branches
            .iter()
            .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name)))
            .map(|(name, id)| (name.clone(), id.to_string()))
            .collect();
        let tags: HashMap<String, Option<String>> =
            refs.tags.iter().map(|(name, id)| (name.clone(), Some(id.to_string()))).collect();
        if wanted == stored && tags == stored_tags {
            return Ok(Vec::new());
        }
        self.sync_all(repo).await
    }

    /// Brings every tracked branch and every tag up to date (the `sync` command).
    pub async fn sync_all(&self, repo: &TrackedRepository) -> anyhow::Result<Vec<Effect>> {
        let stored: HashMap<String, String> =
            self.copy.branches(repo.id).await?.into_iter().map(|b| (b.name, b.head_sha)).collect();
        let path = self.mirror_path(repo.id);
        let remote = self.remote_for(repo);
        let patterns = Self::patterns(repo);
        let stored_for_plan = stored.clone();
        self.count_fetch();
        let (plans, tags) = blocking(move || {
            with_repair(&path, |r| {
                let refs = git::list_remote(r, &remote)?;
                let wanted: Vec<&(String, ObjectId)> =
                    refs.branches.iter().filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name))).collect();
                let mut specs: Vec<String> =
                    wanted.iter().map(|(name, _)| format!("+refs/heads/{name}:refs/heads/{name}")).collect();
                specs.push("+refs/tags/*:refs/tags/*".into());
                git::fetch(r, &remote, &specs)?;
                let mut plans = Vec::new();
                for (name, _) in wanted {
                    if let Some(plan) = local_plan(r, name, stored_for_plan.get(name).map(String::as_str))? {
                        plans.push((name.clone(), plan));
                    }
                }
                Ok((plans, refs.tags))
            })
        })
        .await?;
        let remote_names: HashSet<&String> = plans.iter().map(|(n, _)| n).collect();
        let mut deletions: Vec<Effect> = stored
            .keys()
            .filter(|name| !remote_names.contains(name))
            .map(|name| Effect::DeleteBranch { name: name.clone() })
            .collect();
        // Tags gone from the remote are dropped here too, so `sync` and polling agree.
        let remote_tags: HashSet<&String> = tags.iter().map(|(n, _)| n).collect();
        deletions.extend(
            self.copy
                .tags(repo.id)
                .await?
                .into_iter()
                .filter(|(name, _)| !remote_tags.contains(name))
                .map(|(name, _)| Effect::DeleteTag { name }),
        );
        let mut effects = self.effects_for(repo.id, plans, |_| {}).await?;
        self.repack_in_background(repo);
        effects.append(&mut deletions);
        effects.extend(tags.into_iter().map(|(name, id)| Effect::Tag { name, sha: Some(id.to_string()) }));
        Ok(effects)
    }

    /// The first sync of a repository not yet registered: mirrors into a staging
    /// directory, which the caller moves into place once the repository has its id.
    pub async fn prepare_add(
        &self,
        clone_url: &str,
        branches: &[String],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> anyhow::Result<PreparedAdd> {
        let mirrors = self.data_dir.join("mirrors");
        crate::storage::sqlite::create_private_dir(&mirrors)
            .with_context(|| format!("failed to create {}", mirrors.display()))?;
        let staging = mirrors.join(format!(".adding-{}", crate::domain::DeliveryId::random()));
        let remote = self.remote(clone_url.to_owned());
        let patterns = branches.to_vec();
        progress(Progress::Listing);
        let started = std::time::Instant::now();
        let staging_for_fetch = staging.clone();
        let result = async {
            let (plans, tags, default_branch) = blocking(move || {
                let r = git::open_or_init(&staging_for_fetch)?;
                let mut refs = git::list_remote(&r, &remote)?;
                refs.default_branch = effective_default_branch(&refs);
                let patterns =
                    if patterns.is_empty() { refs.default_branch.clone().into_iter().collect() } else { patterns };
                let wanted: Vec<String> = refs
                    .branches
                    .iter()
                    .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name)))
                    .map(|(name, _)| name.clone())
                    .collect();
                let mut specs: Vec<String> = wanted.iter().map(|n| format!("+refs/heads/{n}:refs/heads/{n}")).collect();
                specs.push("+refs/tags/*:refs/tags/*".into());
                let seed: Vec<(String, ObjectId)> = refs
                    .branches
                    .iter()
                    .filter(|(name, _)| wanted.contains(name))
                    .map(|(name, id)| (format!("refs/heads/{name}"), *id))
                    .chain(refs.tags.iter().map(|(name, id)| (format!("refs/tags/{name}"), *id)))
                    .collect();
                git::seed_from_local(&r, &remote.url, &seed);
                git::fetch(&r, &remote, &specs)?;
                let mut plans = Vec::new();
                for name in wanted {
                    if let Some(plan) = local_plan(&r, &name, None)? {
                        plans.push((name, plan));
                    }
                }
                Ok::<_, anyhow::Error>((plans, refs.tags, refs.default_branch))
            })
            .await?;
            progress(Progress::Fetching { refs: plans.len() + tags.len() });
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "Mirror fetched");
            let branches = plans.len();
            let mut effects = self.read_commits(&staging, HashSet::new(), plans, progress).await?;
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "Commits read");
            let commits = effects
                .iter()
                .map(|e| match e {
                    Effect::Branch { new_commits, .. } => new_commits.len(),
                    _ => 0,
                })
                .sum();
            effects.extend(tags.into_iter().map(|(name, id)| Effect::Tag { name, sha: Some(id.to_string()) }));
            Ok(PreparedAdd { staging: staging.clone(), default_branch, effects, branches, commits })
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    async fn effects_for(
        &self,
        repo_id: i64,
        plans: Vec<(String, BranchPlan)>,
        progress: impl Fn(Progress) + Sync,
    ) -> anyhow::Result<Vec<Effect>> {
        let walked: usize = plans.iter().map(|(_, p)| p.ids.len()).sum();
        let known = if walked > KNOWN_SET_THRESHOLD { self.copy.commit_shas(repo_id).await? } else { HashSet::new() };
        self.read_commits(&self.mirror_path(repo_id), known, plans, &progress).await
    }

    /// Reads the walked commits (diffing only those not `known`) into branch effects.
    async fn read_commits(
        &self,
        path: &Path,
        known: HashSet<String>,
        plans: Vec<(String, BranchPlan)>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> anyhow::Result<Vec<Effect>> {
        let path = path.to_owned();
        let total: usize = plans.iter().map(|(_, p)| p.ids.len()).sum();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let work = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Effect>> {
            // Every distinct commit is read once: diffed when new, timed when known. The
            // diffs are independent, so they run on all cores, each thread with its own
            // repository handle and caches, over contiguous slices of the walk (a commit's
            // parent is usually next to it, and its trees are then in the same cache).
            let mut unique: Vec<ObjectId> = Vec::new();
            let mut queued: HashSet<ObjectId> = HashSet::new();
            for (_, plan) in &plans {
                unique.extend(plan.ids.iter().filter(|id| queued.insert(**id)));
            }
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
            let long = unique.len() >= 256;
            let threads = if long { threads } else { 1 };
            let done = std::sync::atomic::AtomicUsize::new(0);
            let chunk = unique.len().div_ceil(threads).max(1);
            let results: Vec<anyhow::Result<Vec<ReadCommit>>> = std::thread::scope(|scope| {
                let workers: Vec<_> = unique
                    .chunks(chunk)
                    .map(|slice| {
                        let (known, path, tx, done) = (&known, &path, tx.clone(), &done);
                        scope.spawn(move || {
                            let repo = git::open_or_init(path)?;
                            let report = |n: usize| {
                                if n.is_multiple_of(500) {
                                    let _ = tx.send(n);
                                }
                            };
                            if long {
                                // Long histories: a delta base cache over the packs (see packs.rs).
                                let cache = packs::CACHE_BYTES / threads;
                                read_slice(&packs::PackedObjects::new(&repo, cache), slice, known, done, report)
                            } else {
                                // A push's few commits: the object database, without opening every pack.
                                read_slice(&repo.objects, slice, known, done, report)
                            }
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reading commits panicked"))))
                    .collect()
            });
            drop(tx);
            let mut read: HashMap<ObjectId, (i64, Option<CommitInfo>)> = HashMap::with_capacity(unique.len());
            for result in results {
                for (id, time, info) in result? {
                    read.insert(id, (time, info));
                }
            }
            let mut effects = Vec::new();
            for (name, plan) in plans {
                let mut new_commits = Vec::new();
                let mut members = Vec::with_capacity(plan.ids.len());
                for id in &plan.ids {
                    let (time, info) = read.get_mut(id).expect("every walked commit was read");
                    if let Some(info) = info.take() {
                        new_commits.push(info);
                    }
                    members.push((id.to_string(), *time));
                }
                let membership = if plan.append { Membership::Append(members) } else { Membership::Replace(members) };
                effects.push(Effect::Branch { name, head_sha: plan.head.to_string(), new_commits, membership });
            }
            Ok(effects)
        });
        while let Some(done) = rx.recv().await {
            progress(Progress::Commits { done, total });
        }
        let effects = work.await.context("reading commits failed")??;
        progress(Progress::Commits { done: total, total });
        Ok(effects)
    }

    /// Deletes a repository's mirror (after `remove`).
    pub fn delete_mirror(&self, repo_id: i64) -> anyhow::Result<()> {
        let path = self.mirror_path(repo_id);
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("failed to delete {}", path.display()))?;
        }
        let _ = std::fs::remove_file(lock_file_path(&self.data_dir, repo_id));
        Ok(())
    }
}

/// The remote's HEAD branch when it exists; else `main`, `master`, or the only branch
/// (a bare repository made by `git init --bare` points HEAD at a branch it may not have).
fn effective_default_branch(refs: &git::RemoteRefs) -> Option<String> {
    let exists = |name: &str| refs.branches.iter().any(|(b, _)| b == name);
    if let Some(head) = refs.default_branch.as_deref().filter(|h| exists(h)) {
        return Some(head.to_owned());
    }
    ["main", "master"]
        .into_iter()
        .find(|n| exists(n))
        .map(str::to_owned)
        .or_else(|| (refs.branches.len() == 1).then(|| refs.branches[0].0.clone()))
        .or_else(|| refs.default_branch.clone())
}

/// Reads a slice of the walk: new commits in full, known ones for their time only.
fn read_slice(
    objects: &impl gix::objs::Find,
    slice: &[ObjectId],
    known: &HashSet<String>,
    done: &std::sync::atomic::AtomicUsize,
    report: impl Fn(usize),
) -> anyhow::Result<Vec<ReadCommit>> {
    let mut reader = git::HistoryReader::default();
    let mut out = Vec::with_capacity(slice.len());
    for id in slice {
        if known.contains(&id.to_string()) {
            out.push((*id, git::commit_time(objects, *id, &mut reader)?, None));
        } else {
            let info = git::commit_info(objects, *id, &mut reader)?;
            out.push((*id, info.committed_at, Some(info)));
        }
        report(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
    }
    Ok(out)
}

/// One commit as read for a sync: its commit time, and its record when it was new.
type ReadCommit = (ObjectId, i64, Option<CommitInfo>);

/// A branch's new head and the commits to walk.
struct BranchPlan {
    head: ObjectId,
    ids: Vec<ObjectId>,
    /// Fast-forward from the stored head: `ids` join the branch. Else they replace it.
    append: bool,
}

fn local_plan(repo: &gix::Repository, branch: &str, stored_head: Option<&str>) -> anyhow::Result<Option<BranchPlan>> {
    let Some(head) = git::ref_target(repo, &format!("refs/heads/{branch}"))? else { return Ok(None) };
    let stored = stored_head.and_then(|s| ObjectId::from_hex(s.as_bytes()).ok());
    let fast_forward = match stored {
        Some(old) => git::is_ancestor(repo, old, head)?,
        None => false,
    };
    let ids = if fast_forward { git::walk(repo, head, stored)? } else { git::walk(repo, head, None)? };
    Ok(Some(BranchPlan { head, ids, append: fast_forward }))
}

fn repack_now(path: &Path, name: &str) {
    let before = git::pack_count(path);
    match git::repack_if_needed(path) {
        Ok(Some(after)) => tracing::info!(repository = %name, before, after, "Mirror repacked"),
        Ok(None) => {}
        Err(e) => {
            // Said once per process: reads stay correct, they only slow down.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(repository = %name, packs = before, error = %format!("{e:#}"),
                    "Could not repack the mirror; syncs slow down as packs pile up")
            });
        }
    }
}

/// Runs `work` on the mirror; if it fails and the mirror turns out to be damaged, the
/// mirror is re-created from scratch and `work` runs once more.
fn with_repair<T>(path: &Path, work: impl Fn(&gix::Repository) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let first = git::open_or_init(path).and_then(|repo| work(&repo));
    match first {
        Ok(value) => Ok(value),
        Err(e) if !git::is_healthy(path) => {
            tracing::warn!(mirror = %path.display(), error = %format!("{e:#}"), "Git mirror is damaged; cloning it again");
            let repo = git::recreate(path)?;
            work(&repo)
        }
        Err(e) => Err(e),
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("git task failed")?
}

#[cfg(test)]
mod lock_tests {
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_sync_per_repository_at_a_time_and_repositories_in_parallel() {
        let first = super::lock_repository(-7).await;
        // Another repository is not held up.
        let other = tokio::time::timeout(Duration::from_secs(1), super::lock_repository(-8)).await;
        assert!(other.is_ok(), "a different repository locks at once");
        // The same repository waits for the first holder.
        let waiting = tokio::spawn(super::lock_repository(-7));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "the second sync of -7 waits");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(second.is_ok(), "and goes once the first is done");
    }
}
