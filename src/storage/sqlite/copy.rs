//! The local copy on SQLite.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::{params, Connection, Row};

use crate::storage::copy::{from_json_text as from_json, to_json_text as json};
use crate::storage::copy::{
    BranchRow, CopyStore, Effect, IssueRecord, IssueState, Membership, PullRecord, PullState, ReleaseRecord, TagRow,
};
use crate::storage::sqlite::SqliteDb;
use crate::storage::{BoxFuture, StoreError, StoreResult};
use crate::sync::git::CommitInfo;
use crate::time::now_ms;

pub struct SqliteCopyStore {
    db: Arc<SqliteDb>,
}

impl SqliteCopyStore {
    pub fn new(db: Arc<SqliteDb>) -> Self {
        Self { db }
    }
}

/// Applies `effects` inside the caller's transaction.
pub fn apply_effects(c: &Connection, repo_id: i64, effects: &[Effect]) -> StoreResult<()> {
    let now = now_ms();
    for effect in effects {
        match effect {
            Effect::Branch { name, head_sha, new_commits, membership } => {
                for commit in new_commits {
                    let paths: Vec<(&str, String)> =
                        commit.paths.iter().map(|(p, k)| (p.as_str(), k.to_string())).collect();
                    c.prepare_cached(
                        "INSERT OR IGNORE INTO commits (repo_id, sha, parents, author_name, author_email, authored_at, \
                         committer_name, committer_email, committed_at, message, paths) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?
                    .execute(params![
                        repo_id,
                        commit.sha,
                        json(&commit.parents),
                        commit.author_name,
                        commit.author_email,
                        commit.authored_at,
                        commit.committer_name,
                        commit.committer_email,
                        commit.committed_at,
                        commit.message,
                        json(&paths),
                    ])?;
                }
                // Members come newest first; positions grow towards the head.
                let (members, base) = match membership {
                    Membership::Append(m) => {
                        let base: i64 = c
                            .prepare_cached(
                                "SELECT COALESCE(MAX(position), 0) FROM branch_commits WHERE repo_id = ?1 AND branch = ?2",
                            )?
                            .query_row(params![repo_id, name], |r| r.get(0))?;
                        (m, base)
                    }
                    Membership::Replace(m) => {
                        c.prepare_cached("DELETE FROM branch_commits WHERE repo_id = ?1 AND branch = ?2")?
                            .execute(params![repo_id, name])?;
                        (m, 0)
                    }
                };
                let count = members.len() as i64;
                for (index, (sha, committed_at)) in members.iter().enumerate() {
                    c.prepare_cached(
                        "INSERT OR IGNORE INTO branch_commits (repo_id, branch, sha, committed_at, position) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        repo_id,
                        name,
                        sha,
                        committed_at,
                        base + count - index as i64
                    ])?;
                }
                c.prepare_cached(
                    "INSERT INTO branches (repo_id, name, head_sha, synced_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (repo_id, name) DO UPDATE SET head_sha = excluded.head_sha, synced_at = excluded.synced_at",
                )?
                .execute(params![repo_id, name, head_sha, now])?;
            }
            Effect::DeleteBranch { name } => {
                c.prepare_cached("DELETE FROM branch_commits WHERE repo_id = ?1 AND branch = ?2")?
                    .execute(params![repo_id, name])?;
                c.prepare_cached("DELETE FROM branches WHERE repo_id = ?1 AND name = ?2")?
                    .execute(params![repo_id, name])?;
            }
            Effect::Tag { name, sha } => {
                c.prepare_cached(
                    "INSERT INTO tags (repo_id, name, sha, synced_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (repo_id, name) DO UPDATE SET sha = COALESCE(excluded.sha, tags.sha), synced_at = excluded.synced_at",
                )?
                .execute(params![repo_id, name, sha, now])?;
            }
            Effect::DeleteTag { name } => {
                c.prepare_cached("DELETE FROM tags WHERE repo_id = ?1 AND name = ?2")?
                    .execute(params![repo_id, name])?;
            }
            Effect::Pull(p) => {
                c.prepare_cached(
                    "INSERT INTO pulls (repo_id, number, title, body, state, draft, merged, author, labels, assignees, \
                     base_ref, base_sha, head_ref, head_sha, created_at, updated_at, closed_at, merged_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
                     ON CONFLICT (repo_id, number) DO UPDATE SET title = excluded.title, body = excluded.body, \
                     state = excluded.state, draft = excluded.draft, merged = excluded.merged, author = excluded.author, \
                     labels = excluded.labels, assignees = excluded.assignees, base_ref = excluded.base_ref, \
                     base_sha = excluded.base_sha, head_ref = excluded.head_ref, head_sha = excluded.head_sha, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
                     merged_at = excluded.merged_at \
                     WHERE excluded.updated_at >= pulls.updated_at",
                )?
                .execute(params![
                    repo_id,
                    p.number,
                    p.title,
                    p.body,
                    p.state,
                    p.draft,
                    p.merged,
                    p.author,
                    json(&p.labels),
                    json(&p.assignees),
                    p.base_ref,
                    p.base_sha,
                    p.head_ref,
                    p.head_sha,
                    p.created_at,
                    p.updated_at,
                    p.closed_at,
                    p.merged_at,
                ])?;
            }
            Effect::Issue(i) => {
                // Newer wins; deletion and transfer stick once seen, whatever arrives after.
                c.prepare_cached(
                    "INSERT INTO issues (repo_id, number, title, body, state, author, labels, assignees, comments, \
                     created_at, updated_at, closed_at, deleted, transferred_to) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                     ON CONFLICT (repo_id, number) DO UPDATE SET \
                     title = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.title ELSE issues.title END, \
                     body = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.body ELSE issues.body END, \
                     state = CASE WHEN excluded.updated_at >= issues.updated_at AND excluded.state <> '' THEN excluded.state ELSE issues.state END, \
                     author = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.author ELSE issues.author END, \
                     labels = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.labels ELSE issues.labels END, \
                     assignees = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.assignees ELSE issues.assignees END, \
                     comments = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.comments ELSE issues.comments END, \
                     created_at = COALESCE(issues.created_at, excluded.created_at), \
                     closed_at = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.closed_at ELSE issues.closed_at END, \
                     updated_at = MAX(issues.updated_at, excluded.updated_at), \
                     deleted = MAX(issues.deleted, excluded.deleted), \
                     transferred_to = COALESCE(excluded.transferred_to, issues.transferred_to)",
                )?
                .execute(params![
                    repo_id,
                    i.number,
                    i.title,
                    i.body,
                    i.state,
                    i.author,
                    json(&i.labels),
                    json(&i.assignees),
                    i.comments,
                    i.created_at,
                    i.updated_at,
                    i.closed_at,
                    i.deleted,
                    i.transferred_to,
                ])?;
            }
            Effect::Comment(cm) => {
                c.prepare_cached(
                    "INSERT INTO issue_comments (repo_id, id, issue_number, body, author, created_at, updated_at, deleted) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (repo_id, id) DO UPDATE SET \
                     body = CASE WHEN excluded.updated_at >= issue_comments.updated_at THEN excluded.body ELSE issue_comments.body END, \
                     updated_at = MAX(issue_comments.updated_at, excluded.updated_at), \
                     deleted = MAX(issue_comments.deleted, excluded.deleted)",
                )?
                .execute(params![
                    repo_id,
                    cm.id,
                    cm.issue_number,
                    cm.body,
                    cm.author,
                    cm.created_at,
                    cm.updated_at,
                    cm.deleted
                ])?;
            }
            Effect::Release(r) => {
                c.prepare_cached(
                    "INSERT INTO releases (repo_id, id, tag_name, name, draft, prerelease, created_at, published_at, deleted) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (repo_id, id) DO UPDATE SET \
                     tag_name = CASE WHEN releases.deleted = 0 THEN excluded.tag_name ELSE releases.tag_name END, \
                     name = CASE WHEN releases.deleted = 0 THEN excluded.name ELSE releases.name END, \
                     draft = CASE WHEN releases.deleted = 0 THEN excluded.draft ELSE releases.draft END, \
                     prerelease = CASE WHEN releases.deleted = 0 THEN excluded.prerelease ELSE releases.prerelease END, \
                     published_at = CASE WHEN releases.deleted = 0 THEN COALESCE(excluded.published_at, releases.published_at) ELSE releases.published_at END, \
                     deleted = MAX(releases.deleted, excluded.deleted)",
                )?
                .execute(params![
                    repo_id,
                    r.id,
                    r.tag_name,
                    r.name,
                    r.draft,
                    r.prerelease,
                    r.created_at,
                    r.published_at,
                    r.deleted
                ])?;
            }
            Effect::Repository { full_name, github_id, archived, deleted, visibility, default_branch } => {
                c.prepare_cached(
                    "UPDATE repositories SET full_name = COALESCE(?2, full_name), github_id = COALESCE(github_id, ?3), \
                     archived = COALESCE(?4, archived), deleted = COALESCE(?5, deleted), \
                     visibility = COALESCE(?6, visibility), default_branch = COALESCE(?7, default_branch) WHERE id = ?1",
                )?
                .execute(params![
                    repo_id,
                    full_name,
                    github_id,
                    archived,
                    deleted,
                    visibility,
                    default_branch
                ])
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        StoreError::Conflict(format!(
                            "another tracked repository is already named {}",
                            full_name.as_deref().unwrap_or("?")
                        ))
                    }
                    other => other.into(),
                })?;
            }
        }
    }
    c.prepare_cached("UPDATE repositories SET synced_at = ?2 WHERE id = ?1")?.execute(params![repo_id, now])?;
    Ok(())
}

fn commit_from_row(r: &Row<'_>) -> rusqlite::Result<CommitInfo> {
    let paths: Vec<(String, String)> = from_json(r.get(9)?);
    Ok(CommitInfo {
        sha: r.get(0)?,
        parents: from_json(r.get(1)?),
        author_name: r.get(2)?,
        author_email: r.get(3)?,
        authored_at: r.get(4)?,
        committer_name: r.get(5)?,
        committer_email: r.get(6)?,
        committed_at: r.get(7)?,
        message: r.get(8)?,
        paths: paths.into_iter().map(|(p, k)| (p, k.chars().next().unwrap_or('M'))).collect(),
    })
}

const COMMIT_COLUMNS: &str = "c.sha, c.parents, c.author_name, c.author_email, c.authored_at, c.committer_name, \
     c.committer_email, c.committed_at, c.message, c.paths";

fn pull_from_row(r: &Row<'_>) -> rusqlite::Result<PullRecord> {
    Ok(PullRecord {
        number: r.get::<_, u64>(0)?,
        title: r.get(1)?,
        body: r.get(2)?,
        state: r.get(3)?,
        draft: r.get(4)?,
        merged: r.get(5)?,
        author: r.get(6)?,
        labels: from_json(r.get(7)?),
        assignees: from_json(r.get(8)?),
        base_ref: r.get(9)?,
        base_sha: r.get(10)?,
        head_ref: r.get(11)?,
        head_sha: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        closed_at: r.get(15)?,
        merged_at: r.get(16)?,
    })
}

fn issue_from_row(r: &Row<'_>) -> rusqlite::Result<IssueRecord> {
    Ok(IssueRecord {
        number: r.get::<_, u64>(0)?,
        title: r.get(1)?,
        body: r.get(2)?,
        state: r.get(3)?,
        author: r.get(4)?,
        labels: from_json(r.get(5)?),
        assignees: from_json(r.get(6)?),
        comments: r.get::<_, u64>(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        closed_at: r.get(10)?,
        deleted: r.get(11)?,
        transferred_to: r.get(12)?,
    })
}

impl CopyStore for SqliteCopyStore {
    fn apply(&self, repo_id: i64, effects: Vec<Effect>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.db.write(move |c| apply_effects(c, repo_id, &effects)))
    }

    fn branches(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<BranchRow>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT name, head_sha, synced_at FROM branches WHERE repo_id = ?1 ORDER BY name")?
                .query_map([repo_id], |r| Ok(BranchRow { name: r.get(0)?, head_sha: r.get(1)?, synced_at: r.get(2)? }))?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn tags(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<TagRow>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT name, sha FROM tags WHERE repo_id = ?1 ORDER BY name")?
                .query_map([repo_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn commit_shas(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<HashSet<String>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT sha FROM commits WHERE repo_id = ?1")?
                .query_map([repo_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn commits(&self, repo_id: i64, branch: Option<String>, limit: u32) -> BoxFuture<'_, StoreResult<Vec<CommitInfo>>> {
        Box::pin(self.db.read(move |c| {
            let rows = match branch {
                Some(branch) => c
                    .prepare_cached(&format!(
                        "SELECT {COMMIT_COLUMNS} FROM branch_commits b JOIN commits c ON c.repo_id = b.repo_id AND c.sha = b.sha \
                         WHERE b.repo_id = ?1 AND b.branch = ?2 ORDER BY b.position DESC LIMIT ?3"
                    ))?
                    .query_map(params![repo_id, branch, limit], commit_from_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                None => c
                    .prepare_cached(&format!(
                        "SELECT {COMMIT_COLUMNS} FROM commits c JOIN (SELECT sha, MAX(position) AS position \
                         FROM branch_commits WHERE repo_id = ?1 GROUP BY sha) b ON b.sha = c.sha \
                         WHERE c.repo_id = ?1 ORDER BY c.committed_at DESC, b.position DESC LIMIT ?2"
                    ))?
                    .query_map(params![repo_id, limit], commit_from_row)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        }))
    }

    fn pulls(&self, repo_id: i64, state: PullState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<PullRecord>>> {
        Box::pin(self.db.read(move |c| {
            let filter = match state {
                PullState::Open => "AND state = 'open'",
                PullState::Closed => "AND state = 'closed'",
                PullState::Merged => "AND merged = 1",
                PullState::All => "",
            };
            Ok(c.prepare_cached(&format!(
                "SELECT number, title, body, state, draft, merged, author, labels, assignees, base_ref, base_sha, \
                 head_ref, head_sha, created_at, updated_at, closed_at, merged_at FROM pulls \
                 WHERE repo_id = ?1 {filter} ORDER BY updated_at DESC, number DESC LIMIT ?2"
            ))?
            .query_map(params![repo_id, limit], pull_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn issues(&self, repo_id: i64, state: IssueState, limit: u32) -> BoxFuture<'_, StoreResult<Vec<IssueRecord>>> {
        Box::pin(self.db.read(move |c| {
            let filter = match state {
                IssueState::Open => "AND state = 'open'",
                IssueState::Closed => "AND state = 'closed'",
                IssueState::All => "",
            };
            Ok(c.prepare_cached(&format!(
                "SELECT number, title, body, state, author, labels, assignees, comments, created_at, updated_at, \
                 closed_at, deleted, transferred_to FROM issues \
                 WHERE repo_id = ?1 AND deleted = 0 AND transferred_to IS NULL {filter} \
                 ORDER BY updated_at DESC, number DESC LIMIT ?2"
            ))?
            .query_map(params![repo_id, limit], issue_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn releases(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReleaseRecord>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, tag_name, name, draft, prerelease, created_at, published_at, deleted FROM releases \
                 WHERE repo_id = ?1 AND deleted = 0 ORDER BY COALESCE(published_at, created_at) DESC, id DESC LIMIT ?2",
            )?
            .query_map(params![repo_id, limit], |r| {
                Ok(ReleaseRecord {
                    id: r.get::<_, u64>(0)?,
                    tag_name: r.get(1)?,
                    name: r.get(2)?,
                    draft: r.get(3)?,
                    prerelease: r.get(4)?,
                    created_at: r.get(5)?,
                    published_at: r.get(6)?,
                    deleted: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        }))
    }
}
