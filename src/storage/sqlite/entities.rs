//! Reviews, review comments, labels and milestones on SQLite: each effect reads the stored
//! row, writes what `storage::entities` decides, and records the change the query sees.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::storage::changes::{
    label_key, label_state, milestone_key, milestone_state, review_comment_key, review_comment_state, review_key,
    review_state, ChangeLog,
};
use crate::storage::entities::{
    label_writes, merge_milestone, merge_review, merge_review_comment, LabelNaming, LabelRecord, LabelWrite,
    MilestoneRecord, MilestoneState, ReviewCommentRecord, ReviewRecord, StoredLabels,
};
use crate::storage::StoreResult;

const REVIEW_COLUMNS: &str = "id, pull_number, author, state, body, commit_id, submitted_at, html_url";

const REVIEW_COMMENT_COLUMNS: &str = "id, review_id, pull_number, path, line, side, body, author, in_reply_to, \
     commit_id, html_url, created_at, updated_at, deleted";

const LABEL_COLUMNS: &str = "name, github_id, color, description, deleted";

const MILESTONE_COLUMNS: &str = "number, github_id, title, state, description, due_on, created_at, updated_at, \
     closed_at, html_url, deleted";

fn review_from_row(r: &Row<'_>) -> rusqlite::Result<ReviewRecord> {
    Ok(ReviewRecord {
        id: r.get(0)?,
        pull_number: r.get(1)?,
        author: r.get(2)?,
        state: r.get(3)?,
        body: r.get(4)?,
        commit_id: r.get(5)?,
        submitted_at: r.get(6)?,
        html_url: r.get(7)?,
    })
}

fn review_comment_from_row(r: &Row<'_>) -> rusqlite::Result<ReviewCommentRecord> {
    Ok(ReviewCommentRecord {
        id: r.get(0)?,
        review_id: r.get(1)?,
        pull_number: r.get(2)?,
        path: r.get(3)?,
        line: r.get(4)?,
        side: r.get(5)?,
        body: r.get(6)?,
        author: r.get(7)?,
        in_reply_to: r.get(8)?,
        commit_id: r.get(9)?,
        html_url: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        deleted: r.get(13)?,
    })
}

fn label_from_row(r: &Row<'_>) -> rusqlite::Result<LabelRecord> {
    Ok(LabelRecord {
        name: r.get(0)?,
        github_id: r.get(1)?,
        color: r.get(2)?,
        description: r.get(3)?,
        deleted: r.get(4)?,
    })
}

fn milestone_from_row(r: &Row<'_>) -> rusqlite::Result<MilestoneRecord> {
    Ok(MilestoneRecord {
        number: r.get(0)?,
        github_id: r.get(1)?,
        title: r.get(2)?,
        state: r.get(3)?,
        description: r.get(4)?,
        due_on: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        closed_at: r.get(8)?,
        html_url: r.get(9)?,
        deleted: r.get(10)?,
    })
}

pub(super) fn apply_review(
    c: &Connection,
    repo_id: i64,
    review: &ReviewRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let before = c
        .prepare_cached(&format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE repo_id = ?1 AND id = ?2"))?
        .query_row(params![repo_id, review.id], review_from_row)
        .optional()?;
    let Some(merged) = merge_review(before.as_ref(), review) else { return Ok(()) };
    let after = c
        .prepare_cached(&format!(
            "INSERT INTO reviews (repo_id, id, pull_number, author, state, body, commit_id, submitted_at, html_url) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (repo_id, id) DO UPDATE SET pull_number = excluded.pull_number, author = excluded.author, \
             state = excluded.state, body = excluded.body, commit_id = excluded.commit_id, \
             submitted_at = excluded.submitted_at, html_url = excluded.html_url RETURNING {REVIEW_COLUMNS}"
        ))?
        .query_row(
            params![
                repo_id,
                merged.id,
                merged.pull_number,
                merged.author,
                merged.state,
                merged.body,
                merged.commit_id,
                merged.submitted_at,
                merged.html_url
            ],
            review_from_row,
        )?;
    log.record("review", review_key(review.id), review_state(before.as_ref()), review_state(Some(&after)));
    Ok(())
}

pub(super) fn apply_review_comment(
    c: &Connection,
    repo_id: i64,
    comment: &ReviewCommentRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let before = c
        .prepare_cached(&format!(
            "SELECT {REVIEW_COMMENT_COLUMNS} FROM review_comments WHERE repo_id = ?1 AND id = ?2"
        ))?
        .query_row(params![repo_id, comment.id], review_comment_from_row)
        .optional()?;
    let Some(m) = merge_review_comment(before.as_ref(), comment) else { return Ok(()) };
    let after = c
        .prepare_cached(&format!(
            "INSERT INTO review_comments (repo_id, id, review_id, pull_number, path, line, side, body, author, \
             in_reply_to, commit_id, html_url, created_at, updated_at, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (repo_id, id) DO UPDATE SET review_id = excluded.review_id, \
             pull_number = excluded.pull_number, path = excluded.path, line = excluded.line, side = excluded.side, \
             body = excluded.body, author = excluded.author, in_reply_to = excluded.in_reply_to, \
             commit_id = excluded.commit_id, html_url = excluded.html_url, created_at = excluded.created_at, \
             updated_at = excluded.updated_at, deleted = excluded.deleted RETURNING {REVIEW_COMMENT_COLUMNS}"
        ))?
        .query_row(
            params![
                repo_id,
                m.id,
                m.review_id,
                m.pull_number,
                m.path,
                m.line,
                m.side,
                m.body,
                m.author,
                m.in_reply_to,
                m.commit_id,
                m.html_url,
                m.created_at,
                m.updated_at,
                m.deleted
            ],
            review_comment_from_row,
        )?;
    log.record(
        "review_comment",
        review_comment_key(comment.id),
        review_comment_state(before.as_ref()),
        review_comment_state(Some(&after)),
    );
    Ok(())
}

fn label_named(c: &Connection, repo_id: i64, name: &str) -> StoreResult<Option<LabelRecord>> {
    Ok(c.prepare_cached(&format!("SELECT {LABEL_COLUMNS} FROM labels WHERE repo_id = ?1 AND name = ?2"))?
        .query_row(params![repo_id, name], label_from_row)
        .optional()?)
}

pub(super) fn apply_label(
    c: &Connection,
    repo_id: i64,
    label: &LabelRecord,
    naming: &LabelNaming,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let same_name = label_named(c, repo_id, &label.name)?;
    let same_id: Vec<LabelRecord> = match label.github_id {
        Some(id) => c
            .prepare_cached(&format!(
                "SELECT {LABEL_COLUMNS} FROM labels WHERE repo_id = ?1 AND github_id = ?2 AND name <> ?3 ORDER BY name"
            ))?
            .query_map(params![repo_id, id, label.name], label_from_row)?
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let renamed_from = match naming {
        LabelNaming::RenamedFrom(old) if *old != label.name => label_named(c, repo_id, old)?,
        _ => None,
    };
    let stored = StoredLabels { same_name: same_name.as_ref(), same_id: &same_id, renamed_from: renamed_from.as_ref() };
    for write in label_writes(label, naming, stored) {
        match write {
            LabelWrite::Upsert(row) => {
                let before = label_named(c, repo_id, &row.name)?;
                let after = c
                    .prepare_cached(&format!(
                        "INSERT INTO labels (repo_id, name, github_id, color, description, deleted) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET github_id = excluded.github_id, \
                         color = excluded.color, description = excluded.description, deleted = excluded.deleted \
                         RETURNING {LABEL_COLUMNS}"
                    ))?
                    .query_row(
                        params![repo_id, row.name, row.github_id, row.color, row.description, row.deleted],
                        label_from_row,
                    )?;
                log.record("label", label_key(&row.name), label_state(before.as_ref()), label_state(Some(&after)));
            }
            LabelWrite::Remove(name) => {
                let removed = c
                    .prepare_cached(&format!(
                        "DELETE FROM labels WHERE repo_id = ?1 AND name = ?2 RETURNING {LABEL_COLUMNS}"
                    ))?
                    .query_row(params![repo_id, name], label_from_row)
                    .optional()?;
                log.record("label", label_key(&name), label_state(removed.as_ref()), None);
            }
        }
    }
    Ok(())
}

pub(super) fn apply_milestone(
    c: &Connection,
    repo_id: i64,
    milestone: &MilestoneRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let before = c
        .prepare_cached(&format!("SELECT {MILESTONE_COLUMNS} FROM milestones WHERE repo_id = ?1 AND number = ?2"))?
        .query_row(params![repo_id, milestone.number], milestone_from_row)
        .optional()?;
    let Some(m) = merge_milestone(before.as_ref(), milestone) else { return Ok(()) };
    let after = c
        .prepare_cached(&format!(
            "INSERT INTO milestones (repo_id, number, github_id, title, state, description, due_on, created_at, \
             updated_at, closed_at, html_url, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (repo_id, number) DO UPDATE SET github_id = excluded.github_id, title = excluded.title, \
             state = excluded.state, description = excluded.description, due_on = excluded.due_on, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
             html_url = excluded.html_url, deleted = excluded.deleted RETURNING {MILESTONE_COLUMNS}"
        ))?
        .query_row(
            params![
                repo_id,
                m.number,
                m.github_id,
                m.title,
                m.state,
                m.description,
                m.due_on,
                m.created_at,
                m.updated_at,
                m.closed_at,
                m.html_url,
                m.deleted
            ],
            milestone_from_row,
        )?;
    log.record(
        "milestone",
        milestone_key(milestone.number),
        milestone_state(before.as_ref()),
        milestone_state(Some(&after)),
    );
    Ok(())
}

pub(super) fn reviews(c: &Connection, repo_id: i64, pull: Option<u64>, limit: u32) -> StoreResult<Vec<ReviewRecord>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {REVIEW_COLUMNS} FROM reviews WHERE repo_id = ?1 AND (?2 IS NULL OR pull_number = ?2) \
         ORDER BY submitted_at IS NULL, submitted_at DESC, id DESC LIMIT ?3"
    ))?
    .query_map(params![repo_id, pull, limit], review_from_row)?
    .collect::<Result<_, _>>()?)
}

pub(super) fn review_comments(
    c: &Connection,
    repo_id: i64,
    pull: Option<u64>,
    limit: u32,
) -> StoreResult<Vec<ReviewCommentRecord>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {REVIEW_COMMENT_COLUMNS} FROM review_comments \
         WHERE repo_id = ?1 AND (?2 IS NULL OR pull_number = ?2) AND deleted = 0 \
         ORDER BY created_at IS NULL, created_at DESC, id DESC LIMIT ?3"
    ))?
    .query_map(params![repo_id, pull, limit], review_comment_from_row)?
    .collect::<Result<_, _>>()?)
}

pub(super) fn labels(c: &Connection, repo_id: i64, limit: u32) -> StoreResult<Vec<LabelRecord>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {LABEL_COLUMNS} FROM labels WHERE repo_id = ?1 AND deleted = 0 ORDER BY name LIMIT ?2"
    ))?
    .query_map(params![repo_id, limit], label_from_row)?
    .collect::<Result<_, _>>()?)
}

pub(super) fn milestones(
    c: &Connection,
    repo_id: i64,
    state: MilestoneState,
    limit: u32,
) -> StoreResult<Vec<MilestoneRecord>> {
    let filter = match state {
        MilestoneState::Open => "AND state = 'open'",
        MilestoneState::Closed => "AND state = 'closed'",
        MilestoneState::All => "",
    };
    Ok(c.prepare_cached(&format!(
        "SELECT {MILESTONE_COLUMNS} FROM milestones WHERE repo_id = ?1 AND deleted = 0 {filter} \
         ORDER BY number DESC LIMIT ?2"
    ))?
    .query_map(params![repo_id, limit], milestone_from_row)?
    .collect::<Result<_, _>>()?)
}
