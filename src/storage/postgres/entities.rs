//! Reviews, review comments, labels and milestones on PostgreSQL: the same reads, rules
//! (`storage::entities`) and writes as SQLite's (`sqlite::entities`). The rows an apply
//! reads stay as read until it commits: the apply holds its repository's row lock (see
//! `copy.rs`), and every writer of these tables is such an apply.

use deadpool_postgres::Transaction;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::error::{from_db, to_db};
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

const UPSERT_REVIEW: &str = "INSERT INTO reviews (repo_id, id, pull_number, author, state, body, commit_id, \
     submitted_at, html_url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (repo_id, id) DO UPDATE SET pull_number = excluded.pull_number, author = excluded.author, \
     state = excluded.state, body = excluded.body, commit_id = excluded.commit_id, \
     submitted_at = excluded.submitted_at, html_url = excluded.html_url \
     RETURNING id, pull_number, author, state, body, commit_id, submitted_at, html_url";

const UPSERT_REVIEW_COMMENT: &str = "INSERT INTO review_comments (repo_id, id, review_id, pull_number, path, line, \
     side, body, author, in_reply_to, commit_id, html_url, created_at, updated_at, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (repo_id, id) DO UPDATE SET review_id = excluded.review_id, pull_number = excluded.pull_number, \
     path = excluded.path, line = excluded.line, side = excluded.side, body = excluded.body, \
     author = excluded.author, in_reply_to = excluded.in_reply_to, commit_id = excluded.commit_id, \
     html_url = excluded.html_url, created_at = excluded.created_at, updated_at = excluded.updated_at, \
     deleted = excluded.deleted \
     RETURNING id, review_id, pull_number, path, line, side, body, author, in_reply_to, commit_id, html_url, \
     created_at, updated_at, deleted";

const UPSERT_LABEL: &str = "INSERT INTO labels (repo_id, name, github_id, color, description, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (repo_id, name) DO UPDATE SET github_id = excluded.github_id, color = excluded.color, \
     description = excluded.description, deleted = excluded.deleted \
     RETURNING name, github_id, color, description, deleted";

const UPSERT_MILESTONE: &str = "INSERT INTO milestones (repo_id, number, github_id, title, state, description, \
     due_on, created_at, updated_at, closed_at, html_url, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (repo_id, number) DO UPDATE SET github_id = excluded.github_id, title = excluded.title, \
     state = excluded.state, description = excluded.description, due_on = excluded.due_on, \
     created_at = excluded.created_at, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
     html_url = excluded.html_url, deleted = excluded.deleted \
     RETURNING number, github_id, title, state, description, due_on, created_at, updated_at, closed_at, \
     html_url, deleted";

fn opt_from_db(value: Option<i64>) -> StoreResult<Option<u64>> {
    value.map(from_db).transpose()
}

fn opt_to_db(value: Option<u64>) -> StoreResult<Option<i64>> {
    value.map(to_db).transpose()
}

pub(super) fn review_from_row(r: &Row) -> StoreResult<ReviewRecord> {
    Ok(ReviewRecord {
        id: from_db(r.try_get(0)?)?,
        pull_number: from_db(r.try_get(1)?)?,
        author: r.try_get(2)?,
        state: r.try_get(3)?,
        body: r.try_get(4)?,
        commit_id: r.try_get(5)?,
        submitted_at: r.try_get(6)?,
        html_url: r.try_get(7)?,
    })
}

pub(super) fn review_comment_from_row(r: &Row) -> StoreResult<ReviewCommentRecord> {
    Ok(ReviewCommentRecord {
        id: from_db(r.try_get(0)?)?,
        review_id: opt_from_db(r.try_get(1)?)?,
        pull_number: from_db(r.try_get(2)?)?,
        path: r.try_get(3)?,
        line: opt_from_db(r.try_get(4)?)?,
        side: r.try_get(5)?,
        body: r.try_get(6)?,
        author: r.try_get(7)?,
        in_reply_to: opt_from_db(r.try_get(8)?)?,
        commit_id: r.try_get(9)?,
        html_url: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
        deleted: r.try_get(13)?,
    })
}

pub(super) fn label_from_row(r: &Row) -> StoreResult<LabelRecord> {
    Ok(LabelRecord {
        name: r.try_get(0)?,
        github_id: opt_from_db(r.try_get(1)?)?,
        color: r.try_get(2)?,
        description: r.try_get(3)?,
        deleted: r.try_get(4)?,
    })
}

pub(super) fn milestone_from_row(r: &Row) -> StoreResult<MilestoneRecord> {
    Ok(MilestoneRecord {
        number: from_db(r.try_get(0)?)?,
        github_id: opt_from_db(r.try_get(1)?)?,
        title: r.try_get(2)?,
        state: r.try_get(3)?,
        description: r.try_get(4)?,
        due_on: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        closed_at: r.try_get(8)?,
        html_url: r.try_get(9)?,
        deleted: r.try_get(10)?,
    })
}

pub(super) async fn apply_review(
    tx: &Transaction<'_>,
    repo_id: i64,
    review: &ReviewRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let id = to_db(review.id)?;
    let sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE repo_id = $1 AND id = $2");
    let before = tx.query_typed(&sql, &[(&repo_id, Type::INT8), (&id, Type::INT8)]).await?;
    let before = before.first().map(review_from_row).transpose()?;
    let Some(m) = merge_review(before.as_ref(), review) else { return Ok(()) };
    let upsert = tx.prepare_cached(UPSERT_REVIEW).await?;
    let after = tx
        .query_one(
            &upsert,
            &[
                &repo_id,
                &id,
                &to_db(m.pull_number)?,
                &m.author,
                &m.state,
                &m.body,
                &m.commit_id,
                &m.submitted_at,
                &m.html_url,
            ],
        )
        .await?;
    let after = review_from_row(&after)?;
    log.record("review", review_key(review.id), review_state(before.as_ref()), review_state(Some(&after)));
    Ok(())
}

pub(super) async fn apply_review_comment(
    tx: &Transaction<'_>,
    repo_id: i64,
    comment: &ReviewCommentRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let id = to_db(comment.id)?;
    let sql = format!("SELECT {REVIEW_COMMENT_COLUMNS} FROM review_comments WHERE repo_id = $1 AND id = $2");
    let before = tx.query_typed(&sql, &[(&repo_id, Type::INT8), (&id, Type::INT8)]).await?;
    let before = before.first().map(review_comment_from_row).transpose()?;
    let Some(m) = merge_review_comment(before.as_ref(), comment) else { return Ok(()) };
    let upsert = tx.prepare_cached(UPSERT_REVIEW_COMMENT).await?;
    let after = tx
        .query_one(
            &upsert,
            &[
                &repo_id,
                &id,
                &opt_to_db(m.review_id)?,
                &to_db(m.pull_number)?,
                &m.path,
                &opt_to_db(m.line)?,
                &m.side,
                &m.body,
                &m.author,
                &opt_to_db(m.in_reply_to)?,
                &m.commit_id,
                &m.html_url,
                &m.created_at,
                &m.updated_at,
                &m.deleted,
            ],
        )
        .await?;
    let after = review_comment_from_row(&after)?;
    log.record(
        "review_comment",
        review_comment_key(comment.id),
        review_comment_state(before.as_ref()),
        review_comment_state(Some(&after)),
    );
    Ok(())
}

async fn label_named(tx: &Transaction<'_>, repo_id: i64, name: &str) -> StoreResult<Option<LabelRecord>> {
    let sql = format!("SELECT {LABEL_COLUMNS} FROM labels WHERE repo_id = $1 AND name = $2");
    let rows = tx.query_typed(&sql, &[(&repo_id, Type::INT8), (&name, Type::TEXT)]).await?;
    rows.first().map(label_from_row).transpose()
}

pub(super) async fn apply_label(
    tx: &Transaction<'_>,
    repo_id: i64,
    label: &LabelRecord,
    naming: &LabelNaming,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let same_name = label_named(tx, repo_id, &label.name).await?;
    let same_id: Vec<LabelRecord> = match label.github_id {
        Some(id) => {
            let sql = format!(
                "SELECT {LABEL_COLUMNS} FROM labels WHERE repo_id = $1 AND github_id = $2 AND name <> $3 \
                 ORDER BY name COLLATE \"C\""
            );
            let id = to_db(id)?;
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 3] =
                [(&repo_id, Type::INT8), (&id, Type::INT8), (&label.name, Type::TEXT)];
            tx.query_typed(&sql, &params).await?.iter().map(label_from_row).collect::<StoreResult<_>>()?
        }
        None => Vec::new(),
    };
    let renamed_from = match naming {
        LabelNaming::RenamedFrom(old) if *old != label.name => label_named(tx, repo_id, old).await?,
        _ => None,
    };
    let stored = StoredLabels { same_name: same_name.as_ref(), same_id: &same_id, renamed_from: renamed_from.as_ref() };
    for write in label_writes(label, naming, stored) {
        match write {
            LabelWrite::Upsert(row) => {
                let before = label_named(tx, repo_id, &row.name).await?;
                let upsert = tx.prepare_cached(UPSERT_LABEL).await?;
                let after = tx
                    .query_one(
                        &upsert,
                        &[&repo_id, &row.name, &opt_to_db(row.github_id)?, &row.color, &row.description, &row.deleted],
                    )
                    .await?;
                let after = label_from_row(&after)?;
                log.record("label", label_key(&row.name), label_state(before.as_ref()), label_state(Some(&after)));
            }
            LabelWrite::Remove(name) => {
                let sql = format!("DELETE FROM labels WHERE repo_id = $1 AND name = $2 RETURNING {LABEL_COLUMNS}");
                let removed = tx.query_typed(&sql, &[(&repo_id, Type::INT8), (&name, Type::TEXT)]).await?;
                let removed = removed.first().map(label_from_row).transpose()?;
                log.record("label", label_key(&name), label_state(removed.as_ref()), None);
            }
        }
    }
    Ok(())
}

pub(super) async fn apply_milestone(
    tx: &Transaction<'_>,
    repo_id: i64,
    milestone: &MilestoneRecord,
    log: &mut ChangeLog,
) -> StoreResult<()> {
    let number = to_db(milestone.number)?;
    let sql = format!("SELECT {MILESTONE_COLUMNS} FROM milestones WHERE repo_id = $1 AND number = $2");
    let before = tx.query_typed(&sql, &[(&repo_id, Type::INT8), (&number, Type::INT8)]).await?;
    let before = before.first().map(milestone_from_row).transpose()?;
    let Some(m) = merge_milestone(before.as_ref(), milestone) else { return Ok(()) };
    let upsert = tx.prepare_cached(UPSERT_MILESTONE).await?;
    let after = tx
        .query_one(
            &upsert,
            &[
                &repo_id,
                &number,
                &opt_to_db(m.github_id)?,
                &m.title,
                &m.state,
                &m.description,
                &m.due_on,
                &m.created_at,
                &m.updated_at,
                &m.closed_at,
                &m.html_url,
                &m.deleted,
            ],
        )
        .await?;
    let after = milestone_from_row(&after)?;
    log.record(
        "milestone",
        milestone_key(milestone.number),
        milestone_state(before.as_ref()),
        milestone_state(Some(&after)),
    );
    Ok(())
}

pub(super) fn reviews_query(pull: Option<u64>) -> &'static str {
    match pull {
        // Missing submission times sort last, as SQLite's `submitted_at IS NULL` puts them.
        Some(_) => {
            "SELECT id, pull_number, author, state, body, commit_id, submitted_at, html_url FROM reviews \
                    WHERE repo_id = $1 AND pull_number = $2 ORDER BY submitted_at DESC NULLS LAST, id DESC LIMIT $3"
        }
        None => {
            "SELECT id, pull_number, author, state, body, commit_id, submitted_at, html_url FROM reviews \
                 WHERE repo_id = $1 ORDER BY submitted_at DESC NULLS LAST, id DESC LIMIT $2"
        }
    }
}

pub(super) const REVIEW_COMMENTS_QUERY: &str = "SELECT id, review_id, pull_number, path, line, side, body, author, \
     in_reply_to, commit_id, html_url, created_at, updated_at, deleted FROM review_comments \
     WHERE repo_id = $1 AND ($2::BIGINT IS NULL OR pull_number = $2) AND NOT deleted \
     ORDER BY created_at DESC NULLS LAST, id DESC LIMIT $3";

pub(super) const LABELS_QUERY: &str = "SELECT name, github_id, color, description, deleted FROM labels \
     WHERE repo_id = $1 AND NOT deleted ORDER BY name COLLATE \"C\" LIMIT $2";

pub(super) fn milestones_query(state: MilestoneState) -> String {
    let filter = match state {
        MilestoneState::Open => "AND state = 'open'",
        MilestoneState::Closed => "AND state = 'closed'",
        MilestoneState::All => "",
    };
    format!(
        "SELECT {MILESTONE_COLUMNS} FROM milestones WHERE repo_id = $1 AND NOT deleted {filter} \
         ORDER BY number DESC LIMIT $2"
    )
}
