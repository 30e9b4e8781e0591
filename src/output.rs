//! What commands print: `--json` documents with PRODUCT.md's keys, or plain tables.

use serde_json::{json, Value};

use crate::storage::queue::DeliveryRecord;
use crate::storage::registry::TrackedRepository;
use crate::time::{rfc3339, rfc3339_opt};

pub fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "event": d.event,
        "action": d.action,
        "repository": d.repository,
        "repository_github_id": d.repository_github_id,
        "hook_id": d.hook_id,
        "received_at": rfc3339(d.received_at_ms),
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": rfc3339_opt(d.next_attempt_at_ms),
        "last_error": d.last_error,
        "started_at": rfc3339_opt(d.started_at_ms),
        "finished_at": rfc3339_opt(d.finished_at_ms),
        "worker": d.worker,
    })
}

pub fn attempt_json(a: &crate::storage::queue::AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "started_at": rfc3339_opt(a.started_at_ms),
        "finished_at": rfc3339(a.finished_at_ms),
        // The times above are whole seconds; how long it took, to the millisecond.
        "took_ms": a.started_at_ms.map(|s| (a.finished_at_ms - s).max(0)),
        "worker": a.worker,
        "outcome": a.outcome,
        "error": a.error,
    })
}

/// `quiet`: how long without hearing from GitHub before webhook mode reads polling.
pub fn repository_json(r: &TrackedRepository, quiet: std::time::Duration) -> Value {
    json!({
        "id": r.id,
        "repository": r.full_name,
        "github_id": r.github_id,
        "branches": r.branches,
        "clone_url": r.clone_url,
        "mode": r.mode(quiet),
        "added_at": rfc3339(r.added_at_ms),
        "last_delivery_at": rfc3339_opt(r.last_delivery_at_ms),
        "default_branch": r.default_branch,
        "archived": r.archived,
        "deleted": r.deleted,
        "visibility": r.visibility,
        "synced_at": rfc3339_opt(r.synced_at_ms),
    })
}

pub fn print_json(value: &Value) {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    write_stdout(&text);
}

/// Writes a command's output. A reader that went away (`futurnal … | head`) ends the
/// command quietly with status 0, as `git log | head` does, instead of a panic with a
/// backtrace (the Rust runtime ignores SIGPIPE, so a closed pipe is an error here);
/// any other failure to write is one line on stderr and status 1.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            std::process::exit(1)
        }
    }
}

/// `println!` for command output, through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// A left-aligned table with a header row; empty cells print as `-`.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let cell = |s: &str| if s.is_empty() { "-".to_owned() } else { s.replace(['\n', '\t'], " ") };
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = *w));
            }
        }
        outln!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn delivery_row(d: &DeliveryRecord) -> Vec<String> {
    vec![
        d.delivery_id.clone(),
        d.event.clone(),
        d.action.clone().unwrap_or_default(),
        d.repository.clone().unwrap_or_default(),
        rfc3339(d.received_at_ms),
        d.status.to_string(),
        d.attempts.to_string(),
        d.worker.clone().unwrap_or_default(),
        d.last_error.clone().unwrap_or_default(),
    ]
}

pub const DELIVERY_HEADERS: [&str; 9] =
    ["DELIVERY", "EVENT", "ACTION", "REPOSITORY", "RECEIVED", "STATUS", "ATTEMPTS", "WORKER", "ERROR"];

pub fn repository_row(r: &TrackedRepository, quiet: std::time::Duration) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.full_name.clone(),
        r.github_id.map(|v| v.to_string()).unwrap_or_default(),
        if r.branches.is_empty() { "(default branch)".into() } else { r.branches.join(",") },
        r.mode(quiet).to_owned(),
        rfc3339_opt(r.last_delivery_at_ms).unwrap_or_default(),
    ]
}

pub const REPOSITORY_HEADERS: [&str; 6] = ["ID", "REPOSITORY", "GITHUB ID", "BRANCHES", "MODE", "LAST DELIVERY"];

pub fn branch_json(b: &crate::storage::copy::BranchRow) -> Value {
    json!({ "name": b.name, "head_sha": b.head_sha, "synced_at": rfc3339(b.synced_at) })
}

pub fn commit_json(c: &crate::sync::git::CommitInfo) -> Value {
    json!({
        "sha": c.sha,
        "parents": c.parents,
        "author_name": c.author_name,
        "author_email": c.author_email,
        "authored_at": rfc3339(c.authored_at * 1000),
        "committer_name": c.committer_name,
        "committer_email": c.committer_email,
        "committed_at": rfc3339(c.committed_at * 1000),
        "message": c.message,
        "paths": c.paths.iter().map(|(p, k)| json!({ "path": p, "change": k.to_string() })).collect::<Vec<_>>(),
    })
}

pub fn pull_json(p: &crate::storage::copy::PullRecord) -> Value {
    json!({
        "number": p.number,
        "title": p.title,
        "state": p.state,
        "merged": p.merged,
        "draft": p.draft,
        "author": p.author,
        "labels": p.labels,
        "assignees": p.assignees,
        "milestone": p.milestone,
        "base_ref": p.base_ref,
        "head_ref": p.head_ref,
        "head_sha": p.head_sha,
        "created_at": rfc3339_opt(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "closed_at": rfc3339_opt(p.closed_at),
        "merged_at": rfc3339_opt(p.merged_at),
    })
}

pub fn issue_json(i: &crate::storage::copy::IssueRecord) -> Value {
    json!({
        "number": i.number,
        "title": i.title,
        "state": i.state,
        "author": i.author,
        "labels": i.labels,
        "assignees": i.assignees,
        "milestone": i.milestone,
        "comments": i.comments,
        "created_at": rfc3339_opt(i.created_at),
        "updated_at": rfc3339(i.updated_at),
        "closed_at": rfc3339_opt(i.closed_at),
    })
}

pub fn release_json(r: &crate::storage::copy::ReleaseRecord) -> Value {
    json!({
        "tag_name": r.tag_name,
        "name": r.name,
        "draft": r.draft,
        "prerelease": r.prerelease,
        "created_at": rfc3339_opt(r.created_at),
        "published_at": rfc3339_opt(r.published_at),
    })
}

pub fn review_json(r: &crate::storage::entities::ReviewRecord) -> Value {
    json!({
        "id": r.id,
        "pull_number": r.pull_number,
        "author": r.author,
        "state": r.state,
        "body": r.body,
        "commit_id": r.commit_id,
        "submitted_at": rfc3339_opt(r.submitted_at),
        "html_url": r.html_url,
    })
}

pub fn review_comment_json(c: &crate::storage::entities::ReviewCommentRecord) -> Value {
    json!({
        "id": c.id,
        "review_id": c.review_id,
        "pull_number": c.pull_number,
        "path": c.path,
        "line": c.line,
        "side": c.side,
        "body": c.body,
        "author": c.author,
        "in_reply_to": c.in_reply_to,
        "commit_id": c.commit_id,
        "html_url": c.html_url,
        "created_at": rfc3339_opt(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    })
}

pub fn label_json(l: &crate::storage::entities::LabelRecord) -> Value {
    json!({
        "name": l.name,
        "color": l.color,
        "description": l.description,
        "id": l.github_id,
    })
}

pub fn milestone_json(m: &crate::storage::entities::MilestoneRecord) -> Value {
    json!({
        "number": m.number,
        "title": m.title,
        "state": m.state,
        "description": m.description,
        "due_on": rfc3339_opt(m.due_on),
        "created_at": rfc3339_opt(m.created_at),
        "updated_at": rfc3339(m.updated_at),
        "closed_at": rfc3339_opt(m.closed_at),
        "html_url": m.html_url,
    })
}

/// A comment as the change log shows it (no query lists comments yet): its id, the issue
/// or pull request it is on, and what GitHub says of it. Stable: keys are only added.
pub fn comment_json(c: &crate::storage::copy::CommentRecord) -> Value {
    json!({
        "id": c.id,
        "issue_number": c.issue_number,
        "body": c.body,
        "author": c.author,
        "created_at": rfc3339_opt(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    })
}

/// A tag as the change log shows it (no query lists tags yet): its name and the sha it
/// points at (`null` for a tag seen only by name). Stable: keys are only added.
pub fn tag_json(t: &crate::storage::copy::TagRow) -> Value {
    json!({ "name": t.0, "sha": t.1 })
}

/// A repository as the change log shows it: the keys of [`repository_json`] that its
/// effects (rename or transfer, archive, deletion, visibility, default branch) change,
/// under the same names; not the ones that move on every sync or delivery.
pub fn repository_state_json(r: &crate::storage::copy::RepositoryRow) -> Value {
    json!({
        "id": r.id,
        "repository": r.full_name,
        "github_id": r.github_id,
        "default_branch": r.default_branch,
        "archived": r.archived,
        "deleted": r.deleted,
        "visibility": r.visibility,
    })
}
