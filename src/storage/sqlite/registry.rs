//! The registry on SQLite.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::copy::apply_effects;
use crate::storage::copy::Effect;
use crate::storage::registry::{
    matches_by_name, HookRef, NewRepository, PollWatermarks, Registry, RepoRef, TrackedRepository,
};
use crate::storage::sqlite::SqliteDb;
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::time::now_ms;

pub struct SqliteRegistry {
    db: Arc<SqliteDb>,
}

impl SqliteRegistry {
    pub fn new(db: Arc<SqliteDb>) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, full_name, github_id, branches, clone_url, mode, added_at, last_delivery_at, \
     default_branch, archived, deleted, visibility, synced_at, hook_id, hook_url, hook_tunnel, \
     (SELECT last_ping_at FROM hooks WHERE hooks.hook_id = repositories.hook_id)";

fn from_row(r: &Row<'_>) -> rusqlite::Result<TrackedRepository> {
    let branches: String = r.get(3)?;
    Ok(TrackedRepository {
        id: r.get(0)?,
        full_name: r.get(1)?,
        github_id: r.get::<_, Option<u64>>(2)?,
        branches: serde_json::from_str(&branches).unwrap_or_default(),
        clone_url: r.get(4)?,
        mode: r.get(5)?,
        added_at_ms: r.get(6)?,
        last_delivery_at_ms: r.get(7)?,
        default_branch: r.get(8)?,
        archived: r.get(9)?,
        deleted: r.get(10)?,
        visibility: r.get(11)?,
        synced_at_ms: r.get(12)?,
        hook_id: r.get::<_, Option<u64>>(13)?,
        hook_url: r.get(14)?,
        hook_tunnel: r.get(15)?,
        last_ping_at_ms: r.get(16)?,
    })
}

fn find(c: &Connection, repo: &RepoRef) -> StoreResult<Option<TrackedRepository>> {
    let found = match repo {
        RepoRef::Id(id) => c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM repositories WHERE id = ?1"))?
            .query_row([id], from_row)
            .optional()?,
        RepoRef::Name(name) => c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM repositories WHERE full_name = ?1"))?
            .query_row([name], from_row)
            .optional()?,
    };
    Ok(found)
}

/// `last_delivery_at` is kept to this resolution, so a burst costs one write a second.
const LAST_DELIVERY_RESOLUTION_MS: i64 = 1_000;

/// The tracked repository a delivery is about: by GitHub id, else by name while the
/// stored repository's id is unknown (so a new repository that reuses a renamed one's
/// old name is not mistaken for it).
fn match_delivery(
    c: &Connection,
    github_id: Option<u64>,
    full_name: Option<String>,
) -> StoreResult<Option<TrackedRepository>> {
    if let Some(id) = github_id {
        let by_id = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM repositories WHERE github_id = ?1"))?
            .query_row([id], from_row)
            .optional()?;
        if by_id.is_some() {
            return Ok(by_id);
        }
    }
    match full_name {
        Some(name) => Ok(find(c, &RepoRef::Name(name))?.filter(|r| matches_by_name(r, github_id))),
        None => Ok(None),
    }
}

impl Registry for SqliteRegistry {
    fn add(&self, repo: NewRepository, initial: Vec<Effect>) -> BoxFuture<'_, StoreResult<TrackedRepository>> {
        Box::pin(self.db.write(move |c| {
            if let Some(existing) = find(c, &RepoRef::Name(repo.full_name.clone()))? {
                return Err(StoreError::Conflict(format!(
                    "{} is already tracked (id {})",
                    existing.full_name, existing.id
                )));
            }
            let branches = serde_json::to_string(&repo.branches).expect("strings serialize");
            c.execute(
                "INSERT INTO repositories (full_name, github_id, branches, clone_url, added_at, default_branch) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![repo.full_name, repo.github_id, branches, repo.clone_url, now_ms(), repo.default_branch],
            )?;
            let id = c.last_insert_rowid();
            if !initial.is_empty() {
                apply_effects(c, id, &initial, &crate::storage::changes::Cause::Sync)?;
            }
            find(c, &RepoRef::Id(id))?.ok_or_else(|| StoreError::Unavailable("inserted repository vanished".into()))
        }))
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TrackedRepository>>> {
        Box::pin(self.db.read(|c| {
            Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM repositories ORDER BY full_name"))?
                .query_map([], from_row)?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn find(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(self.db.read(move |c| find(c, &repo)))
    }

    fn remove(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<TrackedRepository>> {
        Box::pin(self.db.write(move |c| {
            let found = find(c, &repo)?.ok_or_else(|| StoreError::NotFound(repo.not_tracked()))?;
            c.execute("DELETE FROM repositories WHERE id = ?1", [found.id])?;
            Ok(found)
        }))
    }

    fn set_hook(&self, repo_id: i64, hook: Option<HookRef>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.db.write(move |c| {
            let (id, url, tunnel, mode) = match hook {
                Some(h) => (Some(h.id), Some(h.url), h.tunnel, "webhook"),
                None => (None, None, None, "polling"),
            };
            c.execute(
                "UPDATE repositories SET hook_id = ?2, hook_url = ?3, hook_tunnel = ?4, mode = ?5 WHERE id = ?1",
                params![repo_id, id, url, tunnel, mode],
            )?;
            Ok(())
        }))
    }

    fn poll_watermarks(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<PollWatermarks>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.query_row("SELECT pulls_seen, issues_since FROM poll_watermarks WHERE repo_id = ?1", [repo_id], |r| {
                Ok(PollWatermarks { pulls_seen: r.get(0)?, issues_since: r.get(1)? })
            })
            .optional()?
            .unwrap_or_default())
        }))
    }

    fn set_poll_watermarks(&self, repo_id: i64, marks: PollWatermarks) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.db.write(move |c| {
            // A repository removed meanwhile has no row to point at: nothing to keep.
            c.execute(
                "INSERT INTO poll_watermarks (repo_id, pulls_seen, issues_since) \
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM repositories WHERE id = ?1) \
                 ON CONFLICT (repo_id) DO UPDATE SET pulls_seen = excluded.pulls_seen, issues_since = excluded.issues_since",
                params![repo_id, marks.pulls_seen, marks.issues_since],
            )?;
            Ok(())
        }))
    }

    fn note_ping(&self, hook_id: u64, at_ms: i64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.db.write(move |c| {
            c.prepare_cached(
                "INSERT INTO hooks (hook_id, last_ping_at) VALUES (?1, ?2) \
                 ON CONFLICT (hook_id) DO UPDATE SET last_ping_at = MAX(COALESCE(last_ping_at, 0), excluded.last_ping_at)",
            )?
            .execute(params![hook_id, at_ms])?;
            Ok(())
        }))
    }

    fn lookup(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(self.db.read(move |c| match_delivery(c, github_id, full_name)))
    }

    fn note_delivery(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
        received_at_ms: i64,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(async move {
            // Read first: under a flood of deliveries for one repository, most need no
            // write, and a write waits for a group commit.
            let name = full_name.clone();
            let Some(found) = self.db.read(move |c| match_delivery(c, github_id, name)).await? else {
                return Ok(None);
            };
            let learns_id = found.github_id.is_none() && github_id.is_some();
            let stale = found.last_delivery_at_ms.is_none_or(|at| received_at_ms - at >= LAST_DELIVERY_RESOLUTION_MS);
            if !learns_id && !stale {
                return Ok(Some(found));
            }
            self.db
                .write(move |c| {
                    let Some(found) = match_delivery(c, github_id, full_name)? else { return Ok(None) };
                    c.prepare_cached(
                        "UPDATE repositories SET github_id = COALESCE(github_id, ?2), \
                         last_delivery_at = MAX(COALESCE(last_delivery_at, 0), ?3) WHERE id = ?1",
                    )?
                    .execute(params![found.id, github_id, received_at_ms])?;
                    find(c, &RepoRef::Id(found.id))
                })
                .await
        })
    }
}
