//! The local copy on SQLite.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::output;
use crate::storage::changes::{
    branch_key, comment_key, comment_state, commit_key, issue_key, issue_state, parse_state, pull_key, release_key,
    release_state, tag_key, Cause, ChangeBounds, ChangeFilter, ChangeLog, ChangeOp, ChangeRecord, NewChange,
    REPOSITORY_KEY,
};
use crate::storage::copy::{from_json_text as from_json, to_json_text as json};
use crate::storage::copy::{
    BranchRow, CommentRecord, CopyStore, Effect, IssueRecord, IssueState, LabelRecord, Membership, MilestoneRecord,
    MilestoneState, PullRecord, PullState, ReleaseRecord, RepositoryRow, ReviewCommentRecord, ReviewRecord, TagRow,
};
use crate::storage::sqlite::{entities, SqliteDb};
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

/// Applies `effects` inside the caller's transaction, and appends what they changed to
/// the change log (caused by `cause`) in it too.
///
/// Each entity's state is read before its statement and read back after it (`RETURNING`,
/// through the row mappers the queries use); a change is appended only when its query's
/// `--json` shape differs. A statement a guard refuses returns no row: nothing changed.
pub fn apply_effects(c: &Connection, repo_id: i64, effects: &[Effect], cause: &Cause) -> StoreResult<()> {
    let now = now_ms();
    let name: Option<String> = c
        .prepare_cached("SELECT full_name FROM repositories WHERE id = ?1")?
        .query_row([repo_id], |r| r.get(0))
        .optional()?;
    let mut log = ChangeLog::new(repo_id, name.unwrap_or_default(), cause);
    for effect in effects {
        match effect {
            Effect::Branch { name, head_sha, new_commits, membership } => {
                for commit in new_commits {
                    let paths: Vec<(&str, String)> =
                        commit.paths.iter().map(|(p, k)| (p.as_str(), k.to_string())).collect();
                    let stored = c
                        .prepare_cached(&format!(
                            "INSERT OR IGNORE INTO commits (repo_id, sha, parents, author_name, author_email, authored_at, \
                             committer_name, committer_email, committed_at, message, paths) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING {RETURNED_COMMIT}"
                        ))?
                        .query_row(
                            params![
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
                            ],
                            commit_from_row,
                        )
                        .optional()?;
                    if let Some(stored) = stored {
                        log.record("commit", commit_key(&stored.sha), None, Some(output::commit_json(&stored)));
                    }
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
                let before: Option<String> = c
                    .prepare_cached("SELECT head_sha FROM branches WHERE repo_id = ?1 AND name = ?2")?
                    .query_row(params![repo_id, name], |r| r.get(0))
                    .optional()?;
                let after = c
                    .prepare_cached(
                        "INSERT INTO branches (repo_id, name, head_sha, synced_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET head_sha = excluded.head_sha, synced_at = excluded.synced_at \
                         RETURNING name, head_sha, synced_at",
                    )?
                    .query_row(params![repo_id, name, head_sha, now], branch_from_row)?;
                // The head is what moved; a sync that finds it where it was changes nothing.
                if before.as_deref() != Some(after.head_sha.as_str()) {
                    log.record("branch", branch_key(name), None, Some(output::branch_json(&after)));
                }
            }
            Effect::DeleteBranch { name } => {
                c.prepare_cached("DELETE FROM branch_commits WHERE repo_id = ?1 AND branch = ?2")?
                    .execute(params![repo_id, name])?;
                let deleted = c
                    .prepare_cached(
                        "DELETE FROM branches WHERE repo_id = ?1 AND name = ?2 RETURNING name, head_sha, synced_at",
                    )?
                    .query_row(params![repo_id, name], branch_from_row)
                    .optional()?;
                log.record("branch", branch_key(name), deleted.as_ref().map(output::branch_json), None);
            }
            Effect::Tag { name, sha } => {
                let before = c
                    .prepare_cached("SELECT name, sha FROM tags WHERE repo_id = ?1 AND name = ?2")?
                    .query_row(params![repo_id, name], tag_from_row)
                    .optional()?;
                let after = c
                    .prepare_cached(
                        "INSERT INTO tags (repo_id, name, sha, synced_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET sha = COALESCE(excluded.sha, tags.sha), synced_at = excluded.synced_at \
                         RETURNING name, sha",
                    )?
                    .query_row(params![repo_id, name, sha, now], tag_from_row)?;
                log.record("tag", tag_key(name), before.as_ref().map(output::tag_json), Some(output::tag_json(&after)));
            }
            Effect::DeleteTag { name } => {
                let deleted = c
                    .prepare_cached("DELETE FROM tags WHERE repo_id = ?1 AND name = ?2 RETURNING name, sha")?
                    .query_row(params![repo_id, name], tag_from_row)
                    .optional()?;
                log.record("tag", tag_key(name), deleted.as_ref().map(output::tag_json), None);
            }
            Effect::Pull(p) => {
                let before = c
                    .prepare_cached(&format!("SELECT {PULL_COLUMNS} FROM pulls WHERE repo_id = ?1 AND number = ?2"))?
                    .query_row(params![repo_id, p.number], pull_from_row)
                    .optional()?;
                let written = c
                    .prepare_cached(&format!(
                        "INSERT INTO pulls (repo_id, number, title, body, state, draft, merged, author, labels, assignees, \
                         base_ref, base_sha, head_ref, head_sha, created_at, updated_at, closed_at, merged_at, milestone) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
                         ON CONFLICT (repo_id, number) DO UPDATE SET title = excluded.title, body = excluded.body, \
                         state = excluded.state, draft = excluded.draft, merged = excluded.merged, author = excluded.author, \
                         labels = excluded.labels, assignees = excluded.assignees, milestone = excluded.milestone, \
                         base_ref = excluded.base_ref, \
                         base_sha = excluded.base_sha, head_ref = excluded.head_ref, head_sha = excluded.head_sha, \
                         created_at = excluded.created_at, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
                         merged_at = excluded.merged_at \
                         WHERE excluded.updated_at >= pulls.updated_at RETURNING {PULL_COLUMNS}"
                    ))?
                    .query_row(
                        params![
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
                            p.milestone,
                        ],
                        pull_from_row,
                    )
                    .optional()?;
                // No row back: the stored one is newer and stays.
                let (before, after) = (before.as_ref().map(output::pull_json), written.as_ref().map(output::pull_json));
                let after = after.or_else(|| before.clone());
                log.record("pull_request", pull_key(p.number), before, after);
            }
            Effect::Issue(i) => {
                let before = c
                    .prepare_cached(&format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE repo_id = ?1 AND number = ?2"))?
                    .query_row(params![repo_id, i.number], issue_from_row)
                    .optional()?;
                // Newer wins; deletion and transfer stick once seen, whatever arrives after.
                let after = c
                    .prepare_cached(&format!(
                        "INSERT INTO issues (repo_id, number, title, body, state, author, labels, assignees, comments, \
                         created_at, updated_at, closed_at, deleted, transferred_to, milestone) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                         ON CONFLICT (repo_id, number) DO UPDATE SET \
                         title = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.title ELSE issues.title END, \
                         body = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.body ELSE issues.body END, \
                         state = CASE WHEN excluded.updated_at >= issues.updated_at AND excluded.state <> '' THEN excluded.state ELSE issues.state END, \
                         author = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.author ELSE issues.author END, \
                         labels = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.labels ELSE issues.labels END, \
                         assignees = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.assignees ELSE issues.assignees END, \
                         milestone = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.milestone ELSE issues.milestone END, \
                         comments = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.comments ELSE issues.comments END, \
                         created_at = COALESCE(issues.created_at, excluded.created_at), \
                         closed_at = CASE WHEN excluded.updated_at >= issues.updated_at THEN excluded.closed_at ELSE issues.closed_at END, \
                         updated_at = MAX(issues.updated_at, excluded.updated_at), \
                         deleted = MAX(issues.deleted, excluded.deleted), \
                         transferred_to = COALESCE(excluded.transferred_to, issues.transferred_to) \
                         RETURNING {ISSUE_COLUMNS}"
                    ))?
                    .query_row(
                        params![
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
                            i.milestone,
                        ],
                        issue_from_row,
                    )?;
                log.record("issue", issue_key(i.number), issue_state(before.as_ref()), issue_state(Some(&after)));
            }
            Effect::Comment(cm) => {
                let before = c
                    .prepare_cached(&format!(
                        "SELECT {COMMENT_COLUMNS} FROM issue_comments WHERE repo_id = ?1 AND id = ?2"
                    ))?
                    .query_row(params![repo_id, cm.id], comment_from_row)
                    .optional()?;
                let after = c
                    .prepare_cached(&format!(
                        "INSERT INTO issue_comments (repo_id, id, issue_number, body, author, created_at, updated_at, deleted) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (repo_id, id) DO UPDATE SET \
                         body = CASE WHEN excluded.updated_at >= issue_comments.updated_at THEN excluded.body ELSE issue_comments.body END, \
                         updated_at = MAX(issue_comments.updated_at, excluded.updated_at), \
                         deleted = MAX(issue_comments.deleted, excluded.deleted) RETURNING {COMMENT_COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            repo_id,
                            cm.id,
                            cm.issue_number,
                            cm.body,
                            cm.author,
                            cm.created_at,
                            cm.updated_at,
                            cm.deleted
                        ],
                        comment_from_row,
                    )?;
                log.record("comment", comment_key(cm.id), comment_state(before.as_ref()), comment_state(Some(&after)));
            }
            Effect::Release(r) => {
                let before = c
                    .prepare_cached(&format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE repo_id = ?1 AND id = ?2"))?
                    .query_row(params![repo_id, r.id], release_from_row)
                    .optional()?;
                let after = c
                    .prepare_cached(&format!(
                        "INSERT INTO releases (repo_id, id, tag_name, name, draft, prerelease, created_at, published_at, deleted) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                         ON CONFLICT (repo_id, id) DO UPDATE SET \
                         tag_name = CASE WHEN releases.deleted = 0 THEN excluded.tag_name ELSE releases.tag_name END, \
                         name = CASE WHEN releases.deleted = 0 THEN excluded.name ELSE releases.name END, \
                         draft = CASE WHEN releases.deleted = 0 THEN excluded.draft ELSE releases.draft END, \
                         prerelease = CASE WHEN releases.deleted = 0 THEN excluded.prerelease ELSE releases.prerelease END, \
                         published_at = CASE WHEN releases.deleted = 0 THEN COALESCE(excluded.published_at, releases.published_at) ELSE releases.published_at END, \
                         deleted = MAX(releases.deleted, excluded.deleted) RETURNING {RELEASE_COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            repo_id,
                            r.id,
                            r.tag_name,
                            r.name,
                            r.draft,
                            r.prerelease,
                            r.created_at,
                            r.published_at,
                            r.deleted
                        ],
                        release_from_row,
                    )?;
                log.record("release", release_key(r.id), release_state(before.as_ref()), release_state(Some(&after)));
            }
            Effect::Review(review) => entities::apply_review(c, repo_id, review, &mut log)?,
            Effect::ReviewComment(comment) => entities::apply_review_comment(c, repo_id, comment, &mut log)?,
            Effect::Label { label, naming } => entities::apply_label(c, repo_id, label, naming, &mut log)?,
            Effect::Milestone(milestone) => entities::apply_milestone(c, repo_id, milestone, &mut log)?,
            Effect::Repository { full_name, github_id, archived, deleted, visibility, default_branch } => {
                let before = c
                    .prepare_cached(&format!("SELECT {REPOSITORY_COLUMNS} FROM repositories WHERE id = ?1"))?
                    .query_row([repo_id], repository_from_row)
                    .optional()?;
                let after = c
                    .prepare_cached(&format!(
                        "UPDATE repositories SET full_name = COALESCE(?2, full_name), github_id = COALESCE(github_id, ?3), \
                         archived = COALESCE(?4, archived), deleted = COALESCE(?5, deleted), \
                         visibility = COALESCE(?6, visibility), default_branch = COALESCE(?7, default_branch) WHERE id = ?1 \
                         RETURNING {REPOSITORY_COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            repo_id,
                            full_name,
                            github_id,
                            archived,
                            deleted,
                            visibility,
                            default_branch
                        ],
                        repository_from_row,
                    )
                    .optional()
                    .map_err(|e| match e {
                        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                            StoreError::Conflict(format!(
                                "another tracked repository is already named {}",
                                full_name.as_deref().unwrap_or("?")
                            ))
                        }
                        other => other.into(),
                    })?;
                if let Some(after) = &after {
                    log.renamed(after.full_name.clone());
                }
                log.record(
                    "repository",
                    REPOSITORY_KEY.to_owned(),
                    before.as_ref().map(output::repository_state_json),
                    after.as_ref().map(output::repository_state_json),
                );
            }
        }
    }
    c.prepare_cached("UPDATE repositories SET synced_at = ?2 WHERE id = ?1")?.execute(params![repo_id, now])?;
    append_changes(c, &log.entries, now)
}

/// Appends changes in order. Every write goes through the one writer thread, which
/// commits in order: `seq` order is commit order, with no counter of our own.
/// (`AUTOINCREMENT`: a number is never handed out twice, even once older rows are gone.)
fn append_changes(c: &Connection, changes: &[NewChange], now: i64) -> StoreResult<()> {
    if !changes.is_empty() {
        super::note_changes_appended();
    }
    for change in changes {
        c.prepare_cached(
            "INSERT INTO changes (at, repo_id, repository, kind, key, op, state, cause) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            now,
            change.repo_id,
            change.repository,
            change.kind,
            change.key,
            change.op.as_str(),
            change.state,
            change.cause
        ])?;
    }
    Ok(())
}

/// The commit columns of `COMMIT_COLUMNS`, unqualified (as `RETURNING` names them).
const RETURNED_COMMIT: &str = "sha, parents, author_name, author_email, authored_at, committer_name, \
     committer_email, committed_at, message, paths";

const PULL_COLUMNS: &str = "number, title, body, state, draft, merged, author, labels, assignees, base_ref, \
     base_sha, head_ref, head_sha, created_at, updated_at, closed_at, merged_at, milestone";

const ISSUE_COLUMNS: &str = "number, title, body, state, author, labels, assignees, comments, created_at, \
     updated_at, closed_at, deleted, transferred_to, milestone";

const COMMENT_COLUMNS: &str = "id, issue_number, body, author, created_at, updated_at, deleted";

const RELEASE_COLUMNS: &str = "id, tag_name, name, draft, prerelease, created_at, published_at, deleted";

const REPOSITORY_COLUMNS: &str = "id, full_name, github_id, default_branch, archived, deleted, visibility";

fn branch_from_row(r: &Row<'_>) -> rusqlite::Result<BranchRow> {
    Ok(BranchRow { name: r.get(0)?, head_sha: r.get(1)?, synced_at: r.get(2)? })
}

fn tag_from_row(r: &Row<'_>) -> rusqlite::Result<TagRow> {
    Ok((r.get(0)?, r.get(1)?))
}

fn comment_from_row(r: &Row<'_>) -> rusqlite::Result<CommentRecord> {
    Ok(CommentRecord {
        id: r.get::<_, u64>(0)?,
        issue_number: r.get::<_, u64>(1)?,
        body: r.get(2)?,
        author: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        deleted: r.get(6)?,
    })
}

fn release_from_row(r: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
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
}

fn repository_from_row(r: &Row<'_>) -> rusqlite::Result<RepositoryRow> {
    Ok(RepositoryRow {
        id: r.get(0)?,
        full_name: r.get(1)?,
        github_id: r.get::<_, Option<u64>>(2)?,
        default_branch: r.get(3)?,
        archived: r.get(4)?,
        deleted: r.get(5)?,
        visibility: r.get(6)?,
    })
}

fn change_from_row(r: &Row<'_>) -> rusqlite::Result<ChangeRecord> {
    Ok(ChangeRecord {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        repo_id: r.get(2)?,
        repository: r.get(3)?,
        kind: r.get(4)?,
        key: r.get(5)?,
        op: ChangeOp::parse(&r.get::<_, String>(6)?),
        state: parse_state(r.get(7)?),
        cause: r.get(8)?,
    })
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
        milestone: r.get(17)?,
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
        milestone: r.get(13)?,
    })
}

impl CopyStore for SqliteCopyStore {
    fn apply(&self, repo_id: i64, effects: Vec<Effect>, cause: Cause) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.db.write(move |c| apply_effects(c, repo_id, &effects, &cause)))
    }

    fn branches(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<BranchRow>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT name, head_sha, synced_at FROM branches WHERE repo_id = ?1 ORDER BY name")?
                .query_map([repo_id], branch_from_row)?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn tags(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<TagRow>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached("SELECT name, sha FROM tags WHERE repo_id = ?1 ORDER BY name")?
                .query_map([repo_id], tag_from_row)?
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
                "SELECT {PULL_COLUMNS} FROM pulls \
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
                "SELECT {ISSUE_COLUMNS} FROM issues \
                 WHERE repo_id = ?1 AND deleted = 0 AND transferred_to IS NULL {filter} \
                 ORDER BY updated_at DESC, number DESC LIMIT ?2"
            ))?
            .query_map(params![repo_id, limit], issue_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn releases(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReleaseRecord>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases \
                 WHERE repo_id = ?1 AND deleted = 0 ORDER BY COALESCE(published_at, created_at) DESC, id DESC LIMIT ?2",
            ))?
            .query_map(params![repo_id, limit], release_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn reviews(&self, repo_id: i64, pull: Option<u64>, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ReviewRecord>>> {
        Box::pin(self.db.read(move |c| entities::reviews(c, repo_id, pull, limit)))
    }

    fn review_comments(
        &self,
        repo_id: i64,
        pull: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<ReviewCommentRecord>>> {
        Box::pin(self.db.read(move |c| entities::review_comments(c, repo_id, pull, limit)))
    }

    fn labels(&self, repo_id: i64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<LabelRecord>>> {
        Box::pin(self.db.read(move |c| entities::labels(c, repo_id, limit)))
    }

    fn milestones(
        &self,
        repo_id: i64,
        state: MilestoneState,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MilestoneRecord>>> {
        Box::pin(self.db.read(move |c| entities::milestones(c, repo_id, state, limit)))
    }

    fn changes(&self, filter: ChangeFilter) -> BoxFuture<'_, StoreResult<Vec<ChangeRecord>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT seq, at, repo_id, repository, kind, key, op, state, cause FROM changes \
                 WHERE seq > ?1 AND (?2 IS NULL OR repo_id = ?2) AND (?3 IS NULL OR kind = ?3) \
                 ORDER BY seq LIMIT ?4",
            )?
            .query_map(params![filter.since, filter.repository, filter.kind, filter.limit], change_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn changes_bounds(&self) -> BoxFuture<'_, StoreResult<ChangeBounds>> {
        Box::pin(self.db.read(|c| {
            // `sqlite_sequence` remembers the highest number handed out, deleted rows too.
            let (oldest, newest): (Option<i64>, i64) = c
                .prepare_cached(
                    "SELECT (SELECT MIN(seq) FROM changes), \
                     COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(ChangeBounds { oldest: oldest.unwrap_or(newest + 1), newest })
        }))
    }

    fn changes_caused_by(&self, cause: &str, limit: u32) -> BoxFuture<'_, StoreResult<Vec<ChangeRecord>>> {
        let cause = cause.to_owned();
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT seq, at, repo_id, repository, kind, key, op, state, cause FROM changes \
                 WHERE cause = ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![cause, limit], change_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn prune_changes(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut pruned = 0u64;
            loop {
                // Oldest first: numbers grow with time, so the scan stops at the first
                // step's worth it finds.
                let n = self
                    .db
                    .write(move |c| {
                        Ok(c.prepare_cached(
                            "DELETE FROM changes WHERE seq IN \
                             (SELECT seq FROM changes WHERE at < ?1 ORDER BY seq LIMIT ?2)",
                        )?
                        .execute(params![before_ms, crate::storage::copy::PRUNE_STEP])?)
                    })
                    .await?;
                pruned += n as u64;
                if (n as i64) < crate::storage::copy::PRUNE_STEP {
                    return Ok(pruned);
                }
            }
        })
    }

    fn comments(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Vec<CommentRecord>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COMMENT_COLUMNS} FROM issue_comments WHERE repo_id = ?1 AND deleted = 0 \
                 ORDER BY created_at, id"
            ))?
            .query_map([repo_id], comment_from_row)?
            .collect::<Result<_, _>>()?)
        }))
    }

    fn repository_row(&self, repo_id: i64) -> BoxFuture<'_, StoreResult<Option<RepositoryRow>>> {
        Box::pin(self.db.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {REPOSITORY_COLUMNS} FROM repositories WHERE id = ?1"))?
                .query_row([repo_id], repository_from_row)
                .optional()?)
        }))
    }
}
