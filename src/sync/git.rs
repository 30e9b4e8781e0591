//! The git mirror, with gitoxide: a bare repository per tracked repository under the
//! data dir, fetched through an anonymous remote (so neither the URL's credentials nor a
//! token are ever written into the mirror's config), walked and diffed locally.
//! Everything here blocks; callers run it on the blocking pool.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, Context};
use gix::bstr::ByteSlice;
use gix::ObjectId;

/// Where to fetch from, and how to authenticate (https with a token only).
#[derive(Clone)]
pub struct RemoteSpec {
    pub url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSpec")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What the remote advertises.
#[derive(Debug, Default, Clone)]
pub struct RemoteRefs {
    /// The branch HEAD points to (the default branch), without `refs/heads/`.
    pub default_branch: Option<String>,
    pub branches: Vec<(String, ObjectId)>,
    pub tags: Vec<(String, ObjectId)>,
}

/// One commit as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub authored_at: i64,
    pub committer_name: String,
    pub committer_email: String,
    pub committed_at: i64,
    pub message: String,
    /// (path, change) with change one of A, D, M, relative to the first parent.
    pub paths: Vec<(String, char)>,
}

/// Opens the mirror at `path`, creating an empty bare repository when there is none.
pub fn open_or_init(path: &Path) -> anyhow::Result<gix::Repository> {
    if path.join("HEAD").exists() || path.join("objects").exists() {
        return gix::open(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("git mirror {} is unreadable", path.display()));
    }
    std::fs::create_dir_all(path).with_context(|| format!("failed to create {}", path.display()))?;
    gix::init_bare(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to create git mirror {}", path.display()))
}

/// Each fetch adds a pack, and every object lookup pays for every pack: measured, a push
/// took 13 ms on a fresh mirror and 76 ms after 600 pushes. gitoxide (0.90) cannot repack,
/// so this one job goes to git when it is installed: past `MAX_PACKS` packs,
/// `git repack -d --geometric=2` rolls the small packs up (the large first one stays) and
/// packs loose objects. Readers are safe meanwhile (git writes the new pack before it
/// deletes the old ones). Returns the pack count after, or an error saying why not.
pub fn repack_if_needed(path: &Path) -> anyhow::Result<Option<usize>> {
    let count = pack_count(path);
    if count <= MAX_PACKS {
        return Ok(None);
    }
    let output = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["-c", "gc.auto=0", "repack", "-d", "-q", "--geometric=2"])
        .env_remove("GIT_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow!("git is needed to repack the mirror's {count} packs and could not run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(anyhow!("git repack failed: {}", stderr.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    Ok(Some(pack_count(path)))
}

/// Packs past which a mirror is repacked (git's own `gc.autoPackLimit` is 50).
pub const MAX_PACKS: usize = 32;

pub fn pack_count(path: &Path) -> usize {
    std::fs::read_dir(path.join("objects").join("pack"))
        .map(|entries| entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pack")).count())
        .unwrap_or(0)
}

/// Deletes the mirror and starts an empty one (after corruption was detected).
pub fn recreate(path: &Path) -> anyhow::Result<gix::Repository> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("failed to remove corrupt mirror {}", path.display()))?;
    }
    open_or_init(path)
}

/// Whether every ref of the mirror resolves to an object it has: the check that decides
/// a failed sync was the mirror's fault (then it is re-cloned) and not the remote's.
pub fn is_healthy(path: &Path) -> bool {
    let Ok(repo) = gix::open(path) else { return false };
    let Ok(platform) = repo.references() else { return false };
    let Ok(all) = platform.all() else { return false };
    for reference in all {
        let Ok(mut reference) = reference else { return false };
        match reference.peel_to_id() {
            Ok(id) => {
                if repo.find_object(id.detach()).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn connect<'r>(repo: &'r gix::Repository, remote: &RemoteSpec, refspecs: &[String]) -> anyhow::Result<gix::Remote<'r>> {
    let url = gix::url::parse(remote.url.as_bytes().as_bstr()).map_err(|e| anyhow!("invalid clone URL: {e}"))?;
    repo.remote_at(url)
        .map_err(|e| anyhow!("{e}"))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(refspecs.iter().map(|s| s.as_bytes().as_bstr()), gix::remote::Direction::Fetch)
        .map_err(|e| anyhow!("invalid refspec: {e}"))
}

fn credentials(
    token: Option<String>,
) -> impl FnMut(gix::credentials::helper::Action) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| match (action, &token) {
        (gix::credentials::helper::Action::Get(context), Some(token)) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: "x-access-token".into(),
                    password: token.clone(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            }))
        }
        _ => Ok(None),
    }
}

/// `git ls-remote`: branches, tags and the default branch, without fetching objects.
pub fn list_remote(repo: &gix::Repository, remote: &RemoteSpec) -> anyhow::Result<RemoteRefs> {
    let specs = ["+refs/heads/*:refs/heads/*".to_owned(), "+refs/tags/*:refs/tags/*".to_owned(), "HEAD".to_owned()];
    let remote_handle = connect(repo, remote, &specs)?;
    let connection = remote_handle
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to reach {}", remote.url))?
        .with_credentials(credentials(remote.token.clone()));
    let (ref_map, _handshake) = connection
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to list refs of {}", remote.url))?;
    let mut refs = RemoteRefs::default();
    for r in &ref_map.remote_refs {
        use gix::protocol::handshake::Ref;
        let (name, object, target) = match r {
            Ref::Peeled { full_ref_name, object, .. } => (full_ref_name, Some(*object), None),
            Ref::Direct { full_ref_name, object } => (full_ref_name, Some(*object), None),
            Ref::Symbolic { full_ref_name, target, object, .. } => (full_ref_name, Some(*object), Some(target)),
            Ref::Unborn { full_ref_name, target } => (full_ref_name, None, Some(target)),
        };
        let name = name.to_str_lossy();
        if name == "HEAD" {
            refs.default_branch = target.and_then(|t| t.to_str_lossy().strip_prefix("refs/heads/").map(str::to_owned));
        } else if let (Some(branch), Some(id)) = (name.strip_prefix("refs/heads/"), object) {
            refs.branches.push((branch.to_owned(), id));
        } else if let (Some(tag), Some(id)) = (name.strip_prefix("refs/tags/"), object) {
            refs.tags.push((tag.to_owned(), id));
        }
    }
    Ok(refs)
}

/// When the remote is a repository on this machine, do what `git clone --local` does:
/// hard-link (or copy) its pack files into the mirror and point the wanted refs at
/// objects that are now present, so the fetch that follows transfers nothing it already
/// has. Returns how many packs were linked. Anything unusual just skips the shortcut.
pub fn seed_from_local(repo: &gix::Repository, remote_url: &str, refs: &[(String, ObjectId)]) -> usize {
    let source = Path::new(remote_url.strip_prefix("file://").unwrap_or(remote_url));
    let pack_dir = [source.join("objects").join("pack"), source.join(".git").join("objects").join("pack")]
        .into_iter()
        .find(|p| p.is_dir());
    let Some(pack_dir) = pack_dir else { return 0 };
    let target = repo.objects.store_ref().path().join("pack");
    if std::fs::create_dir_all(&target).is_err() {
        return 0;
    }
    let mut linked = 0;
    let Ok(entries) = std::fs::read_dir(&pack_dir) else { return 0 };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_pack_file = name.to_str().is_some_and(|n| n.ends_with(".pack") || n.ends_with(".idx"));
        if !is_pack_file {
            continue;
        }
        let destination = target.join(&name);
        if std::fs::hard_link(entry.path(), &destination).is_ok() || std::fs::copy(entry.path(), &destination).is_ok() {
            linked += 1;
        }
    }
    for (name, id) in refs {
        if repo.has_object(*id) {
            let _ = repo.reference(
                name.as_str(),
                *id,
                gix::refs::transaction::PreviousValue::Any,
                "futurnal: seeded from a local clone",
            );
        }
    }
    linked
}

/// Fetches exactly `refspecs` into the mirror.
pub fn fetch(repo: &gix::Repository, remote: &RemoteSpec, refspecs: &[String]) -> anyhow::Result<()> {
    fetch_inner(repo, remote, refspecs, None).map(drop)
}

/// Fetches refs (`refs/heads/x`, `refs/tags/x`) into the same names, in one connection:
/// the handshake's ref listing says which of them the remote still has, and returns those
/// (nothing is fetched when it has none). Saves the separate `ls-remote` round trip a push
/// would otherwise cost, and serves a run of pushes to several refs with one fetch.
pub fn fetch_refs_if_present(
    repo: &gix::Repository,
    remote: &RemoteSpec,
    full_names: &[String],
) -> anyhow::Result<HashSet<String>> {
    let specs: Vec<String> = full_names.iter().map(|name| format!("+{name}:{name}")).collect();
    fetch_inner(repo, remote, &specs, Some(full_names))
}

/// One fetch connection; with `wanted`, returns which of those refs the remote's listing
/// has, and fetches nothing when it has none of them.
fn fetch_inner(
    repo: &gix::Repository,
    remote: &RemoteSpec,
    specs: &[String],
    wanted: Option<&[String]>,
) -> anyhow::Result<HashSet<String>> {
    let remote_handle = connect(repo, remote, specs)?;
    let prepared = remote_handle
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to reach {}", remote.url))?
        .with_credentials(credentials(remote.token.clone()))
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to fetch from {}", remote.url))?;
    let present: HashSet<String> = prepared
        .ref_map()
        .mappings
        .iter()
        .filter_map(|m| {
            use gix::remote::fetch::refmap::Source;
            match &m.remote {
                Source::Ref(r) => std::str::from_utf8(r.unpack().0).ok().map(str::to_owned),
                Source::ObjectId(_) => None,
            }
        })
        .filter(|name| wanted.is_some_and(|w| w.contains(name)))
        .collect();
    if wanted.is_some() && present.is_empty() {
        return Ok(present);
    }
    let interrupt = AtomicBool::new(false);
    prepared
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("failed to fetch from {}", remote.url))?;
    Ok(present)
}

/// The object a local ref points to, peeled to a commit when it is an annotated tag.
pub fn ref_target(repo: &gix::Repository, full_name: &str) -> anyhow::Result<Option<ObjectId>> {
    match repo.try_find_reference(full_name).map_err(|e| anyhow!("{e}"))? {
        None => Ok(None),
        Some(mut reference) => Ok(Some(reference.peel_to_id().map_err(|e| anyhow!("{e}"))?.detach())),
    }
}

/// Whether `ancestor` is reachable from `descendant` (or equal to it).
pub fn is_ancestor(repo: &gix::Repository, ancestor: ObjectId, descendant: ObjectId) -> anyhow::Result<bool> {
    if ancestor == descendant {
        return Ok(true);
    }
    if repo.find_object(ancestor).is_err() {
        return Ok(false);
    }
    match repo.merge_base(ancestor, descendant) {
        Ok(base) => Ok(base.is_some_and(|b| b.detach() == ancestor)),
        Err(_) => Ok(false),
    }
}

/// Commits reachable from `tip` and not from `hidden`, newest first.
pub fn walk(repo: &gix::Repository, tip: ObjectId, hidden: Option<ObjectId>) -> anyhow::Result<Vec<ObjectId>> {
    let mut platform = repo.rev_walk([tip]);
    if let Some(hidden) = hidden {
        platform = platform.with_hidden([hidden]);
    }
    let walk = platform.all().map_err(|e| anyhow!("{e}"))?;
    let mut ids = Vec::new();
    for info in walk {
        ids.push(info.map_err(|e| anyhow!("walking history failed: {e}"))?.id);
    }
    Ok(ids)
}

/// State for reading a run of commits: the diff state, buffers, and the last root tree
/// loaded as some commit's parent tree, which (walking newest first) is the next commit's own.
#[derive(Default)]
pub struct HistoryReader {
    state: gix::diff::tree::State,
    commit_buf: Vec<u8>,
    parent_buf: Vec<u8>,
    /// (commit whose root tree this is, the tree's raw data)
    last_parent_tree: Option<(ObjectId, Vec<u8>)>,
}

/// The raw data of object `id`, which must be of `kind`.
fn find_kind<'a>(
    objects: &impl gix::objs::Find,
    id: ObjectId,
    kind: gix::objs::Kind,
    buf: &'a mut Vec<u8>,
) -> anyhow::Result<&'a [u8]> {
    let data =
        objects.try_find(&id, buf).map_err(|e| anyhow!("{e}"))?.ok_or_else(|| anyhow!("{kind} {id} is missing"))?;
    if data.kind != kind {
        return Err(anyhow!("object {id} is a {}, not a {kind}", data.kind));
    }
    Ok(data.data)
}

/// Reads a commit object through `objects`.
fn read_commit<'a>(
    objects: &impl gix::objs::Find,
    id: ObjectId,
    buf: &'a mut Vec<u8>,
) -> anyhow::Result<gix::objs::CommitRef<'a>> {
    let data = find_kind(objects, id, gix::objs::Kind::Commit, buf)?;
    gix::objs::CommitRef::from_bytes(data, id.kind()).map_err(|e| anyhow!("commit {id} is unreadable: {e}"))
}

impl HistoryReader {
    fn root_tree(
        &mut self,
        objects: &impl gix::objs::Find,
        commit: ObjectId,
        tree: Option<ObjectId>,
    ) -> anyhow::Result<Vec<u8>> {
        if let Some((cached_commit, data)) = self.last_parent_tree.take() {
            if cached_commit == commit {
                return Ok(data);
            }
        }
        let tree = match tree {
            Some(tree) => tree,
            None => read_commit(objects, commit, &mut self.parent_buf)?.tree(),
        };
        let mut data = Vec::new();
        find_kind(objects, tree, gix::objs::Kind::Tree, &mut data)?;
        Ok(data)
    }
}

/// The committer time of a commit.
pub fn commit_time(objects: &impl gix::objs::Find, id: ObjectId, reader: &mut HistoryReader) -> anyhow::Result<i64> {
    let commit = read_commit(objects, id, &mut reader.commit_buf)?;
    Ok(commit.committer().map_err(|e| anyhow!("commit {id}: {e}"))?.seconds())
}

/// Reads a commit and the paths it changed relative to its first parent.
pub fn commit_info(
    objects: &impl gix::objs::Find,
    id: ObjectId,
    reader: &mut HistoryReader,
) -> anyhow::Result<CommitInfo> {
    let mut commit_buf = std::mem::take(&mut reader.commit_buf);
    let decoded = read_commit(objects, id, &mut commit_buf)?;
    let author = decoded.author().map_err(|e| anyhow!("commit {id}: {e}"))?;
    let committer = decoded.committer().map_err(|e| anyhow!("commit {id}: {e}"))?;
    let parents: Vec<ObjectId> = decoded.parents().collect();
    let tree_id = decoded.tree();
    let message = decoded.message.to_str_lossy().trim_end().to_owned();
    let info = CommitInfo {
        sha: id.to_string(),
        parents: parents.iter().map(ToString::to_string).collect(),
        author_name: author.name.trim().to_str_lossy().into_owned(),
        author_email: author.email.trim().to_str_lossy().into_owned(),
        authored_at: author.seconds(),
        committer_name: committer.name.trim().to_str_lossy().into_owned(),
        committer_email: committer.email.trim().to_str_lossy().into_owned(),
        committed_at: committer.seconds(),
        message,
        paths: Vec::new(),
    };
    drop(decoded);
    reader.commit_buf = commit_buf;
    let new_tree = reader.root_tree(objects, id, Some(tree_id))?;
    let old_tree = match parents.first() {
        Some(parent) => reader.root_tree(objects, *parent, None)?,
        None => Vec::new(),
    };
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&old_tree, id.kind()),
        gix::objs::TreeRefIter::from_bytes(&new_tree, id.kind()),
        &mut reader.state,
        objects,
        &mut recorder,
    )
    .map_err(|e| anyhow!("diffing commit {id} failed: {e}"))?;
    if let Some(parent) = parents.first() {
        reader.last_parent_tree = Some((*parent, old_tree));
    }
    let mut paths = Vec::new();
    for change in recorder.records {
        use gix::diff::tree::recorder::Change;
        let (path, kind, mode) = match change {
            Change::Addition { path, entry_mode, .. } => (path, 'A', entry_mode),
            Change::Deletion { path, entry_mode, .. } => (path, 'D', entry_mode),
            Change::Modification { path, entry_mode, .. } => (path, 'M', entry_mode),
        };
        if !mode.is_tree() {
            paths.push((path.to_str_lossy().into_owned(), kind));
        }
    }
    Ok(CommitInfo { paths, ..info })
}
