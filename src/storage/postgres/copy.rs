//! The local copy on PostgreSQL: the rules and the answers of SQLite's (`sqlite::copy`),
//! on the same columns.
//!
//! What differs is only how PostgreSQL is spoken to: commits and branch membership go in
//! as arrays (`UNNEST`), a chunk per statement, not a row per round trip; names sort in
//! byte order (`COLLATE "C"`, as SQLite's BINARY does, whatever the database's collation);
//! missing release dates sort last, as SQLite's NULLs do in a descending order.
//!
//! An apply starts by updating its repository's row (`synced_at`), which locks it: two
//! applies to one repository run one after the other (SQLite runs every write that way),
//! so a fast-forward's positions never interleave with another's and the rows an apply
//! touches are never locked in two orders.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::error::{from_db, to_db};
use super::PgDb;
use crate::storage::copy::{
    BranchRow, CopyStore, Effect, IssueRecord, IssueState, Membership, PullRecord, PullState, ReleaseRecord, TagRow,
};
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::sync::git::CommitInfo;
use crate::time::now_ms;

/// Rows per multi-row insert: a first sync's 10,000 commits are ten statements, and one
/// statement's parameters stay far from the protocol's limits even with long messages.
const CHUNK: usize = 1_000;

pub struct PgCopyStore {
    db: Arc<PgDb>,
}

impl PgCopyStore {
    pub fn new(db: Arc<PgDb>) -> Self {
        Self { db }
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain values serialize")
}

fn from_json<T: serde::de::DeserializeOwned + Default>(text: String) -> T {
    serde_json::from_str(&text).unwrap_or_default()
}

fn length(n: usize) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::Conflict(format!("{n} rows do not fit a BIGINT position")))
}

const INSERT_COMMITS: &str = "INSERT INTO commits (repo_id, sha, parents, author_name, author_email, authored_at, \
     committer_name, committer_email, committed_at, message, paths) \
     SELECT $1::bigint, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
     $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[]) \
     ON CONFLICT (repo_id, sha) DO NOTHING";

const INSERT_MEMBERS: &str = "INSERT INTO branch_commits (repo_id, branch, sha, committed_at, position) \
     SELECT $1::bigint, $2::text, * FROM UNNEST($3::text[], $4::bigint[], $5::bigint[]) \
     ON CONFLICT (repo_id, branch, sha) DO NOTHING";

const UPSERT_PULL: &str = "INSERT INTO pulls (repo_id, number, title, body, state, draft, merged, author, labels, \
     assignees, base_ref, base_sha, head_ref, head_sha, created_at, updated_at, closed_at, merged_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     ON CONFLICT (repo_id, number) DO UPDATE SET title = excluded.title, body = excluded.body, \
     state = excluded.state, draft = excluded.draft, merged = excluded.merged, author = excluded.author, \
     labels = excluded.labels, assignees = excluded.assignees, base_ref = excluded.base_ref, \
     base_sha = excluded.base_sha, head_ref = excluded.head_ref, head_sha = excluded.head_sha, \
     created_at = excluded.created_at, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
     merged_at = excluded.merged_at \
     WHERE excluded.updated_at >= pulls.updated_at";

/// Newer wins; deletion and transfer stick once seen, whatever arrives after.
const UPSERT_ISSUE: &str = "INSERT INTO issues (repo_id, number, title, body, state, author, labels, assignees, \
     comments, created_at, updated_at, closed_at, deleted, transferred_to) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (repo_id, number) DO UPDATE SET \
     title = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.title ELSE issues.title END, \
     body = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.body ELSE issues.body END, \
     state = CASE WHEN excluded.updated_at >= issues.updated_at AND excluded.state <> '' \
       THEN excluded.state ELSE issues.state END, \
     author = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.author ELSE issues.author END, \
     labels = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.labels ELSE issues.labels END, \
     assignees = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.assignees ELSE issues.assignees END, \
     comments = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.comments ELSE issues.comments END, \
     created_at = COALESCE(issues.created_at, excluded.created_at), \
     closed_at = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.closed_at ELSE issues.closed_at END, \
     updated_at = GREATEST(issues.updated_at, excluded.updated_at), \
     deleted = issues.deleted OR excluded.deleted, \
     transferred_to = COALESCE(excluded.transferred_to, issues.transferred_to)";

const UPSERT_COMMENT: &str = "INSERT INTO issue_comments (repo_id, id, issue_number, body, author, created_at, \
     updated_at, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (repo_id, id) DO UPDATE SET \
     body = CASE WHEN excluded.updated_at >= issue_comments.updated_at THEN excluded.body ELSE issue_comments.body END, \
     updated_at = GREATEST(issue_comments.updated_at, excluded.updated_at), \
     deleted = issue_comments.deleted OR excluded.deleted";

/// A deleted release stays as it was when deleted.
const UPSERT_RELEASE: &str = "INSERT INTO releases (repo_id, id, tag_name, name, draft, prerelease, created_at, \
     published_at, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (repo_id, id) DO UPDATE SET \
     tag_name = CASE WHEN NOT releases.deleted THEN excluded.tag_name ELSE releases.tag_name END, \
     name = CASE WHEN NOT releases.deleted THEN excluded.name ELSE releases.name END, \
     draft = CASE WHEN NOT releases.deleted THEN excluded.draft ELSE releases.draft END, \
     prerelease = CASE WHEN NOT releases.deleted THEN excluded.prerelease ELSE releases.prerelease END, \
     published_at = CASE WHEN NOT releases.deleted \
       THEN COALESCE(excluded.published_at, releases.published_at) ELSE releases.published_at END, \
     deleted = releases.deleted OR excluded.deleted";

const UPDATE_REPOSITORY: &str = "UPDATE repositories SET full_name = COALESCE($2, full_name), \
     github_id = COALESCE(github_id, $3), archived = COALESCE($4, archived), deleted = COALESCE($5, deleted), \
     visibility = COALESCE($6, visibility), default_branch = COALESCE($7, default_branch) WHERE id = $1";

/// Applies `effects` inside the caller's transaction.
pub(super) async fn apply_effects(tx: &Transaction<'_>, repo_id: i64, effects: &[Effect]) -> StoreResult<()> {
    let now = now_ms();
    // First, so that the repository's row is locked for the rest of the transaction.
    tx.execute(&tx.prepare_cached("UPDATE repositories SET synced_at = $2 WHERE id = $1").await?, &[&repo_id, &now])
        .await?;
    for effect in effects {
        match effect {
            Effect::Branch { name, head_sha, new_commits, membership } => {
                insert_commits(tx, repo_id, new_commits).await?;
                // Members come newest first; positions grow towards the head.
                let (members, base) = match membership {
                    Membership::Append(m) => {
                        let max = tx
                            .prepare_cached(
                                "SELECT COALESCE(MAX(position), 0) FROM branch_commits WHERE repo_id = $1 AND branch = $2",
                            )
                            .await?;
                        let base: i64 = tx.query_one(&max, &[&repo_id, name]).await?.try_get(0)?;
                        (m, base)
                    }
                    Membership::Replace(m) => {
                        let delete =
                            tx.prepare_cached("DELETE FROM branch_commits WHERE repo_id = $1 AND branch = $2").await?;
                        tx.execute(&delete, &[&repo_id, name]).await?;
                        (m, 0)
                    }
                };
                insert_members(tx, repo_id, name, members, base).await?;
                let upsert = tx
                    .prepare_cached(
                        "INSERT INTO branches (repo_id, name, head_sha, synced_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET head_sha = excluded.head_sha, \
                         synced_at = excluded.synced_at",
                    )
                    .await?;
                tx.execute(&upsert, &[&repo_id, name, head_sha, &now]).await?;
            }
            Effect::DeleteBranch { name } => {
                let members =
                    tx.prepare_cached("DELETE FROM branch_commits WHERE repo_id = $1 AND branch = $2").await?;
                tx.execute(&members, &[&repo_id, name]).await?;
                let branch = tx.prepare_cached("DELETE FROM branches WHERE repo_id = $1 AND name = $2").await?;
                tx.execute(&branch, &[&repo_id, name]).await?;
            }
            Effect::Tag { name, sha } => {
                let upsert = tx
                    .prepare_cached(
                        "INSERT INTO tags (repo_id, name, sha, synced_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET sha = COALESCE(excluded.sha, tags.sha), \
                         synced_at = excluded.synced_at",
                    )
                    .await?;
                tx.execute(&upsert, &[&repo_id, name, sha, &now]).await?;
            }
            Effect::DeleteTag { name } => {
                let delete = tx.prepare_cached("DELETE FROM tags WHERE repo_id = $1 AND name = $2").await?;
                tx.execute(&delete, &[&repo_id, name]).await?;
            }
            Effect::Pull(p) => {
                let upsert = tx.prepare_cached(UPSERT_PULL).await?;
                tx.execute(
                    &upsert,
                    &[
                        &repo_id,
                        &to_db(p.number)?,
                        &p.title,
                        &p.body,
                        &p.state,
                        &p.draft,
                        &p.merged,
                        &p.author,
                        &json(&p.labels),
                        &json(&p.assignees),
                        &p.base_ref,
                        &p.base_sha,
                        &p.head_ref,
                        &p.head_sha,
                        &p.created_at,
                        &p.updated_at,
                        &p.closed_at,
                        &p.merged_at,
                    ],
                )
                .await?;
            }
            Effect::Issue(i) => {
                let upsert = tx.prepare_cached(UPSERT_ISSUE).await?;
                tx.execute(
                    &upsert,
                    &[
                        &repo_id,
                        &to_db(i.number)?,
                        &i.title,
                        &i.body,
                        &i.state,
                        &i.author,
                        &json(&i.labels),
                        &json(&i.assignees),
                        &to_db(i.comments)?,
                        &i.created_at,
                        &i.updated_at,
                        &i.closed_at,
                        &i.deleted,
                        &i.transferred_to,
                    ],
                )
                .await?;
            }
            Effect::Comment(cm) => {
                let upsert = tx.prepare_cached(UPSERT_COMMENT).await?;
                tx.execute(
                    &upsert,
                    &[
                        &repo_id,
                        &to_db(cm.id)?,
                        &to_db(cm.issue_number)?,
                        &cm.body,
                        &cm.author,
                        &cm.created_at,
                        &cm.updated_at,
                        &cm.deleted,
                    ],
                )
                .await?;
            }
            Effect::Release(r) => {
                let upsert = tx.prepare_cached(UPSERT_RELEASE).await?;
                tx.execute(
                    &upsert,
                    &[
                        &repo_id,
                        &to_db(r.id)?,
                        &r.tag_name,
                        &r.name,
                        &r.draft,
                        &r.prerelease,
                        &r.created_at,
                        &r.published_at,
                        &r.deleted,
                    ],
                )
                .await?;
            }
            Effect::Repository { full_name, github_id, archived, deleted, visibility, default_branch } => {
                let update = tx.prepare_cached(UPDATE_REPOSITORY).await?;
                tx.execute(
                    &update,
                    &[
                        &repo_id,
                        full_name,
                        &github_id.map(to_db).transpose()?,
                        archived,
                        deleted,
                        visibility,
                        default_branch,
                    ],
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if code.code().starts_with("23") => StoreError::Conflict(format!(
                        "another tracked repository is already named {}",
                        full_name.as_deref().unwrap_or("?")
                    )),
                    _ => e.into(),
                })?;
            }
        }
    }
    Ok(())
}

/// Stores the commits not stored before; the first of a sha given twice is the one kept.
async fn insert_commits(tx: &Transaction<'_>, repo_id: i64, commits: &[CommitInfo]) -> StoreResult<()> {
    if commits.is_empty() {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(commits.len());
    let unique: Vec<&CommitInfo> = commits.iter().filter(|c| seen.insert(c.sha.as_str())).collect();
    let insert = tx.prepare_cached(INSERT_COMMITS).await?;
    for chunk in unique.chunks(CHUNK) {
        let column = |f: fn(&CommitInfo) -> &str| chunk.iter().map(|c| f(c)).collect::<Vec<&str>>();
        let shas = column(|c| &c.sha);
        let author_names = column(|c| &c.author_name);
        let author_emails = column(|c| &c.author_email);
        let committer_names = column(|c| &c.committer_name);
        let committer_emails = column(|c| &c.committer_email);
        let messages = column(|c| &c.message);
        let parents: Vec<String> = chunk.iter().map(|c| json(&c.parents)).collect();
        let paths: Vec<String> = chunk
            .iter()
            .map(|c| json(&c.paths.iter().map(|(p, k)| (p.as_str(), k.to_string())).collect::<Vec<_>>()))
            .collect();
        let authored_at: Vec<i64> = chunk.iter().map(|c| c.authored_at).collect();
        let committed_at: Vec<i64> = chunk.iter().map(|c| c.committed_at).collect();
        tx.execute(
            &insert,
            &[
                &repo_id,
                &shas,
                &parents,
                &author_names,
                &author_emails,
                &authored_at,
                &committer_names,
                &committer_emails,
                &committed_at,
                &messages,
                &paths,
            ],
        )
        .await?;
    }
    Ok(())
}

/// `members` (newest first) join `branch` at positions `base + len` down to `base + 1`; a
/// sha already on the branch, or given twice, keeps the position it had first.
async fn insert_members(
    tx: &Transaction<'_>,
    repo_id: i64,
    branch: &str,
    members: &[(String, i64)],
    base: i64,
) -> StoreResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let count = length(members.len())?;
    let mut seen = HashSet::with_capacity(members.len());
    let rows: Vec<(&str, i64, i64)> = members
        .iter()
        .zip((base + 1..=base + count).rev())
        .filter(|((sha, _), _)| seen.insert(sha.as_str()))
        .map(|((sha, committed_at), position)| (sha.as_str(), *committed_at, position))
        .collect();
    let insert = tx.prepare_cached(INSERT_MEMBERS).await?;
    for chunk in rows.chunks(CHUNK) {
        let shas: Vec<&str> = chunk.iter().map(|r| r.0).collect();
        let committed_at: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let positions: Vec<i64> = chunk.iter().map(|r| r.2).collect();
        tx.execute(&insert, &[&repo_id, &branch, &shas, &committed_at, &positions]).await?;
    }
    Ok(())
}

const COMMIT_COLUMNS: &str = "c.sha, c.parents, c.author_name, c.author_email, c.authored_at, c.committer_name, \
     c.committer_email, c.committed_at, c.message, c.paths";

fn commit_from_row(r: &Row) -> StoreResult<CommitInfo> {
    let paths: Vec<(String, String)> = from_json(r.try_get(9)?);
    Ok(CommitInfo {
        sha: r.try_get(0)?,
        parents: from_json(r.try_get(1)?),
        author_name: r.try_get(2)?,
        author_email: r.try_get(3)?,
        authored_at: r.try_get(4)?,
        committer_name: r.try_get(5)?,
        committer_email: r.try_get(6)?,
        committed_at: r.try_get(7)?,
        message: r.try_get(8)?,
        paths: paths.into_iter().map(|(p, k)| (p, k.chars().next().unwrap_or('M'))).collect(),
    })
}

const PULL_COLUMNS: &str = "number, title, body, state, draft, merged, author, labels, assignees, base_ref, \
     base_sha, head_ref, head_sha, created_at, updated_at, closed_at, merged_at";

fn pull_from_row(r: &Row) -> StoreResult<PullRecord> {
    Ok(PullRecord {
        number: from_db(r.try_get(0)?)?,
        title: r.try_get(1)?,
        body: r.try_get(2)?,
        state: r.try_get(3)?,
        draft: r.try_get(4)?,
        merged: r.try_get(5)?,
        author: r.try_get(6)?,
        labels: from_json(r.try_get(7)?),
        assignees: from_json(r.try_get(8)?),
        base_ref: r.try_get(9)?,
        base_sha: r.try_get(10)?,
        head_ref: r.try_get(11)?,
        head_sha: r.try_get(12)?,
        created_at: r.try_get(13)?,
        updated_at: r.try_get(14)?,
        closed_at: r.try_get(15)?,
        merged_at: r.try_get(16)?,
    })
}

const ISSUE_COLUMNS: &str = "number, title, body, state, author, labels, assignees, comments, created_at, \
     updated_at, closed_at, deleted, transferred_to";

fn issue_from_row(r: &Row) -> StoreResult<IssueRecord> {
    Ok(IssueRecord {
        number: from_db(r.try_get(0)?)?,
        title: r.try_get(1)?,
        body: r.try_get(2)?,
        state: r.try_get(3)?,
        author: r.try_get(4)?,
        labels: from_json(r.try_get(5)?),
        assignees: from_json(r.try_get(6)?),
        comments: from_db(r.try_get(7)?)?,
        created_at: r.try_get(8)?,
        updated_at: r.try_get(9)?,
        closed_at: r.try_get(10)?,
        deleted: r.try_get(11)?,
        transferred_to: r.try_get(12)?,
    })
}

fn release_from_row(r: &Row) -> StoreResult<ReleaseRecord> {
    Ok(ReleaseRecord {
        id: from_db(r.try_get(0)?)?,
        tag_name: r.try_get(1)?,
        name: r.try_get(2)?,
        draft: r.try_get(3)?,
        prerelease: r.try_get(4)?,
        created_at: r.try_get(5)?,
        published_at: r.try_get(6)?,
        deleted: r.try_get(7)?,
    })
}

impl PgCopyStore {
    /// Runs a read-only query (cached per connection) and converts each row.
    async fn select<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        convert: impl Fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let client = self.db.client().await?;
        let statement = client.prepare_cached(sql).await?;
        client.query(&statement, params).await?.iter().map(convert).collect()
    }
}

impl CopyStore for PgCopyStore {
    fn apply(&self, repo_id: i64, effects: Vec<Effect>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            apply_effects(&tx, repo_id, &effects).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn branches(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<BranchRow>>> {
        Box::pin(async move {
            self.select(
                "SELECT name, head_sha, synced_at FROM branches WHERE repo_id = $1 ORDER BY name COLLATE \"C\"",
                &[&repo_id],
                |r| Ok(BranchRow { name: r.try_get(0)?, head_sha: r.try_get(1)?, synced_at: r.try_get(2)? }),
            )
            .await
        })
    }

    fn tags(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<TagRow>>> {
        Box::pin(async move {
            self.select("SELECT name, sha FROM tags WHERE repo_id = $1 ORDER BY name COLLATE \"C\"", &[&repo_id], |r| {
                Ok((r.try_get(0)?, r.try_get(1)?))
            })
            .await
        })
    }

    fn commit_shas(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<HashSet<String>>> {
        Box::pin(async move {
            let shas: Vec<String> =
                self.select("SELECT sha FROM commits WHERE repo_id = $1", &[&repo_id], |r| Ok(r.try_get(0)?)).await?;
            Ok(shas.into_iter().collect())
        })
    }

    fn commits(&self, repo_id: i64, branch: Option<String>, limit: u32) -> BoxFuture<'_, StoreResult<Vec<CommitInfo>>> {
        Box::pin(async move {
            let limit = i64::from(limit);
            match branch {
                Some(branch) => {
                    self.select(
                        &format!(
                            "SELECT {COMMIT_COLUMNS} FROM branch_commits b \
                             JOIN commits c ON c.repo_id = b.repo_id AND c.sha = b.sha \
                             WHERE b.repo_id = $1 AND b.branch = $2 ORDER BY b.position DESC LIMIT $3"
                        ),
                        &[&repo_id, &branch, &limit],
                        commit_from_row,
                    )
                    .await
                }
                // Every commit on some branch, once, at its highest position.
                None => {
                    self.select(
                        &format!(
                            "SELECT {COMMIT_COLUMNS} FROM commits c JOIN (SELECT sha, MAX(position) AS position \
                             FROM branch_commits WHERE repo_id = $1 GROUP BY sha) b ON b.sha = c.sha \
                             WHERE c.repo_id = $1 ORDER BY c.committed_at DESC, b.position DESC LIMIT $2"
                        ),
                        &[&repo_id, &limit],
                        commit_from_row,
                    )
                    .await
                }
            }
        })
    }

    fn pulls(&self, repo_id: i64, state: PullState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<PullRecord>>> {
        Box::pin(async move {
            let limit = i64::from(limit);
            let filter = match state {
                PullState::Open => "AND state = 'open'",
                PullState::Closed => "AND state = 'closed'",
                PullState::Merged => "AND merged",
                PullState::All => "",
            };
            self.select(
                &format!(
                    "SELECT {PULL_COLUMNS} FROM pulls WHERE repo_id = $1 {filter} \
                     ORDER BY updated_at DESC, number DESC LIMIT $2"
                ),
                &[&repo_id, &limit],
                pull_from_row,
            )
            .await
        })
    }

    fn issues(&self, repo_id: i64, state: IssueState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<IssueRecord>>> {
        Box::pin(async move {
            let limit = i64::from(limit);
            let filter = match state {
                IssueState::Open => "AND state = 'open'",
                IssueState::Closed => "AND state = 'closed'",
                IssueState::All => "",
            };
            self.select(
                &format!(
                    "SELECT {ISSUE_COLUMNS} FROM issues \
                     WHERE repo_id = $1 AND NOT deleted AND transferred_to IS NULL {filter} \
                     ORDER BY updated_at DESC, number DESC LIMIT $2"
                ),
                &[&repo_id, &limit],
                issue_from_row,
            )
            .await
        })
    }

    fn releases(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReleaseRecord>>> {
        Box::pin(async move {
            let limit = i64::from(limit);
            self.select(
                "SELECT id, tag_name, name, draft, prerelease, created_at, published_at, deleted FROM releases \
                 WHERE repo_id = $1 AND NOT deleted \
                 ORDER BY COALESCE(published_at, created_at) DESC NULLS LAST, id DESC LIMIT $2",
                &[&repo_id, &limit],
                release_from_row,
            )
            .await
        })
    }
}
