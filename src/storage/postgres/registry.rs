//! The registry on PostgreSQL: the same answers as SQLite's (names case-insensitive,
//! deliveries matched by GitHub id first), with a repository and its first sync stored in
//! one transaction.

use std::sync::Arc;

use tokio_postgres::{GenericClient, Row};

use super::copy::{append_changes, apply_effects};
use super::error::{from_db, to_db};
use super::PgDb;
use crate::storage::copy::Effect;
use crate::storage::registry::{
    matches_by_name, HookRef, NewRepository, PollWatermarks, Registry, RepoRef, TrackedRepository,
};
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::time::now_ms;

pub struct PgRegistry {
    db: Arc<PgDb>,
}

impl PgRegistry {
    pub fn new(db: Arc<PgDb>) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, full_name, github_id, branches, clone_url, mode, added_at, last_delivery_at, \
     default_branch, archived, deleted, visibility, synced_at, hook_id, hook_url, hook_tunnel, \
     (SELECT last_ping_at FROM hooks WHERE hooks.hook_id = repositories.hook_id)";

fn from_row(r: &Row) -> StoreResult<TrackedRepository> {
    let branches: String = r.get(3);
    Ok(TrackedRepository {
        id: r.get(0),
        full_name: r.get(1),
        github_id: r.get::<_, Option<i64>>(2).map(from_db).transpose()?,
        branches: serde_json::from_str(&branches).unwrap_or_default(),
        clone_url: r.get(4),
        mode: r.get(5),
        added_at_ms: r.get(6),
        last_delivery_at_ms: r.get(7),
        default_branch: r.get(8),
        archived: r.get(9),
        deleted: r.get(10),
        visibility: r.get(11),
        synced_at_ms: r.get(12),
        hook_id: r.get::<_, Option<i64>>(13).map(from_db).transpose()?,
        hook_url: r.get(14),
        hook_tunnel: r.get(15),
        last_ping_at_ms: r.get(16),
    })
}

async fn find(c: &impl GenericClient, repo: &RepoRef) -> StoreResult<Option<TrackedRepository>> {
    let row = match repo {
        RepoRef::Id(id) => c.query_opt(&format!("SELECT {COLUMNS} FROM repositories WHERE id = $1"), &[id]).await?,
        RepoRef::Name(name) => {
            let sql = format!("SELECT {COLUMNS} FROM repositories WHERE lower(full_name) = lower($1)");
            c.query_opt(&sql, &[name]).await?
        }
    };
    row.as_ref().map(from_row).transpose()
}

/// `last_delivery_at` is kept to this resolution, so a burst costs one write a second.
const LAST_DELIVERY_RESOLUTION_MS: i64 = 1_000;

/// By GitHub id, else by name while the stored repository's id is unknown (a new
/// repository reusing a renamed one's old name is not mistaken for it).
async fn match_delivery(
    c: &impl GenericClient,
    github_id: Option<u64>,
    full_name: Option<&str>,
) -> StoreResult<Option<TrackedRepository>> {
    if let Some(id) = github_id {
        let sql = format!("SELECT {COLUMNS} FROM repositories WHERE github_id = $1");
        if let Some(row) = c.query_opt(&sql, &[&to_db(id)?]).await? {
            return Ok(Some(from_row(&row)?));
        }
    }
    match full_name {
        Some(name) => Ok(find(c, &RepoRef::Name(name.to_owned())).await?.filter(|r| matches_by_name(r, github_id))),
        None => Ok(None),
    }
}

impl Registry for PgRegistry {
    fn add(&self, repo: NewRepository, initial: Vec<Effect>) -> BoxFuture<'_, StoreResult<TrackedRepository>> {
        Box::pin(async move {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            if let Some(existing) = find(&*tx, &RepoRef::Name(repo.full_name.clone())).await? {
                return Err(StoreError::Conflict(format!(
                    "{} is already tracked (id {})",
                    existing.full_name, existing.id
                )));
            }
            let branches = serde_json::to_string(&repo.branches).expect("strings serialize");
            let id: i64 = tx
                .query_one(
                    "INSERT INTO repositories (full_name, github_id, branches, clone_url, added_at, default_branch) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &repo.full_name,
                        &repo.github_id.map(to_db).transpose()?,
                        &branches,
                        &repo.clone_url,
                        &now_ms(),
                        &repo.default_branch,
                    ],
                )
                .await?
                .get(0);
            if !initial.is_empty() {
                let mut changes = Vec::new();
                apply_effects(&tx, id, &initial, &crate::storage::changes::Cause::Sync, &mut changes).await?;
                append_changes(&tx, &changes, &self.db.changes_channel).await?;
            }
            let added = find(&*tx, &RepoRef::Id(id))
                .await?
                .ok_or_else(|| StoreError::Unavailable("inserted repository vanished".into()))?;
            tx.commit().await?;
            Ok(added)
        })
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TrackedRepository>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let sql = format!("SELECT {COLUMNS} FROM repositories ORDER BY lower(full_name)");
            client.query(&sql, &[]).await?.iter().map(from_row).collect()
        })
    }

    fn find(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(async move { find(&**self.db.client().await?, &repo).await })
    }

    fn remove(&self, repo: RepoRef) -> BoxFuture<'_, StoreResult<TrackedRepository>> {
        Box::pin(async move {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let found = find(&*tx, &repo).await?.ok_or_else(|| StoreError::NotFound(repo.not_tracked()))?;
            tx.execute("DELETE FROM repositories WHERE id = $1", &[&found.id]).await?;
            tx.commit().await?;
            Ok(found)
        })
    }

    fn lookup(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(async move { match_delivery(&**self.db.client().await?, github_id, full_name.as_deref()).await })
    }

    fn set_hook(&self, repo_id: i64, hook: Option<HookRef>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let (id, url, tunnel, mode) = match hook {
                Some(h) => (Some(to_db(h.id)?), Some(h.url), h.tunnel, "webhook"),
                None => (None, None, None, "polling"),
            };
            self.db
                .client()
                .await?
                .execute(
                    "UPDATE repositories SET hook_id = $2, hook_url = $3, hook_tunnel = $4, mode = $5 WHERE id = $1",
                    &[&repo_id, &id, &url, &tunnel, &mode],
                )
                .await?;
            Ok(())
        })
    }

    fn note_ping(&self, hook_id: u64, at_ms: i64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            self.db
                .client()
                .await?
                .execute(
                    "INSERT INTO hooks (hook_id, last_ping_at) VALUES ($1, $2) ON CONFLICT (hook_id) \
                     DO UPDATE SET last_ping_at = GREATEST(COALESCE(hooks.last_ping_at, 0), excluded.last_ping_at)",
                    &[&to_db(hook_id)?, &at_ms],
                )
                .await?;
            Ok(())
        })
    }

    fn poll_watermarks(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<PollWatermarks>> {
        Box::pin(async move {
            let row = self
                .db
                .client()
                .await?
                .query_opt("SELECT pulls_seen, issues_since FROM poll_watermarks WHERE repo_id = $1", &[&repo_id])
                .await?;
            Ok(row.map(|r| PollWatermarks { pulls_seen: r.get(0), issues_since: r.get(1) }).unwrap_or_default())
        })
    }

    fn set_poll_watermarks(&self, repo_id: i64, marks: PollWatermarks) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            // A repository removed meanwhile has no row to point at: nothing to keep.
            self.db
                .client()
                .await?
                .execute(
                    "INSERT INTO poll_watermarks (repo_id, pulls_seen, issues_since) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM repositories WHERE id = $1) \
                     ON CONFLICT (repo_id) DO UPDATE SET pulls_seen = excluded.pulls_seen, \
                     issues_since = excluded.issues_since",
                    &[&repo_id, &marks.pulls_seen, &marks.issues_since],
                )
                .await?;
            Ok(())
        })
    }

    fn note_delivery(
        &self,
        github_id: Option<u64>,
        full_name: Option<String>,
        received_at_ms: i64,
    ) -> BoxFuture<'_, StoreResult<Option<TrackedRepository>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            // Read first: under a flood of deliveries for one repository, most need no write.
            let Some(found) = match_delivery(&**client, github_id, full_name.as_deref()).await? else {
                return Ok(None);
            };
            let learns_id = found.github_id.is_none() && github_id.is_some();
            let stale = found.last_delivery_at_ms.is_none_or(|at| received_at_ms - at >= LAST_DELIVERY_RESOLUTION_MS);
            if !learns_id && !stale {
                return Ok(Some(found));
            }
            client
                .execute(
                    "UPDATE repositories SET github_id = COALESCE(github_id, $2), \
                     last_delivery_at = GREATEST(COALESCE(last_delivery_at, 0), $3) WHERE id = $1",
                    &[&found.id, &github_id.map(to_db).transpose()?, &received_at_ms],
                )
                .await?;
            find(&**client, &RepoRef::Id(found.id)).await
        })
    }
}
