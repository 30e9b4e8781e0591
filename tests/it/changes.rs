//! The change log: every effect that changed the local copy appends one change in its
//! own transaction (kind, key, op, the query's JSON state, its cause); one that changed
//! nothing appends nothing. The storage tests run on every backend (`backends()` of the
//! contract); the end-to-end one goes through signed deliveries and the real workers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futurnal::output;
use futurnal::storage::changes::{Cause, ChangeBounds, ChangeFilter, ChangeOp, ChangeRecord};
use futurnal::storage::copy::{
    CommentRecord, CopyStore, Effect, LabelNaming, LabelRecord, Membership, MilestoneRecord, MilestoneState,
    PullRecord, PullState, ReleaseRecord, ReviewCommentRecord, ReviewRecord,
};
use futurnal::storage::queue::{Changes, Claimer, Completion, DeliveryStatus, Report};
use futurnal::storage::registry::RepoRef;
use futurnal::storage::StoreError;
use futurnal::sync::git::CommitInfo;
use serde_json::{json, Value};

use crate::contract::{backends, queued};
use crate::helpers::*;

fn commit(sha: &str, committed_at: i64) -> CommitInfo {
    CommitInfo {
        sha: sha.into(),
        parents: vec![],
        author_name: "A".into(),
        author_email: "a@example.com".into(),
        authored_at: committed_at,
        committer_name: "C".into(),
        committer_email: "c@example.com".into(),
        committed_at,
        message: format!("commit {sha}"),
        paths: vec![("README.md".into(), 'M')],
    }
}

fn branch(name: &str, head: &str, new: &[&str], members: &[&str]) -> Effect {
    Effect::Branch {
        name: name.into(),
        head_sha: head.into(),
        new_commits: new.iter().enumerate().map(|(i, s)| commit(s, 1_000 - i as i64)).collect(),
        membership: Membership::Replace(members.iter().map(|s| (s.to_string(), 1)).collect()),
    }
}

fn pull(number: u64, updated_at: i64, title: &str) -> PullRecord {
    PullRecord {
        number,
        title: title.into(),
        body: None,
        state: "open".into(),
        draft: false,
        merged: false,
        author: Some("mona".into()),
        labels: vec!["bug".into()],
        assignees: vec![],
        milestone: None,
        base_ref: "main".into(),
        base_sha: "b".repeat(40),
        head_ref: "feature".into(),
        head_sha: "f".repeat(40),
        created_at: Some(1_000),
        updated_at,
        closed_at: None,
        merged_at: None,
    }
}

fn comment(id: u64, updated_at: i64, deleted: bool) -> CommentRecord {
    CommentRecord {
        id,
        issue_number: 7,
        body: Some(format!("comment v{updated_at}")),
        author: Some("mona".into()),
        created_at: Some(1_000),
        updated_at,
        deleted,
    }
}

fn release(id: u64, name: &str, deleted: bool) -> ReleaseRecord {
    ReleaseRecord {
        id,
        tag_name: "v1".into(),
        name: Some(name.into()),
        draft: false,
        prerelease: false,
        created_at: Some(1_000),
        published_at: Some(2_000),
        deleted,
    }
}

fn review(id: u64, submitted_at: i64, state: &str, body: &str) -> Effect {
    Effect::Review(ReviewRecord {
        id,
        pull_number: 42,
        author: Some("mona".into()),
        state: state.into(),
        body: Some(body.into()),
        commit_id: Some("f".repeat(40)),
        submitted_at: Some(submitted_at),
        html_url: None,
    })
}

fn review_comment(id: u64, updated_at: i64, deleted: bool) -> Effect {
    Effect::ReviewComment(ReviewCommentRecord {
        id,
        review_id: Some(1),
        pull_number: 42,
        path: Some("src/lib.rs".into()),
        line: Some(10),
        side: Some("RIGHT".into()),
        body: Some(format!("review comment v{updated_at}")),
        author: Some("mona".into()),
        in_reply_to: None,
        commit_id: None,
        html_url: None,
        created_at: Some(1_000),
        updated_at,
        deleted,
    })
}

fn label(name: &str, id: u64, color: &str, deleted: bool, naming: LabelNaming) -> Effect {
    Effect::Label {
        label: LabelRecord {
            name: name.into(),
            github_id: Some(id),
            color: Some(color.into()),
            description: None,
            deleted,
        },
        naming,
    }
}

fn milestone(number: u64, updated_at: i64, state: &str, deleted: bool) -> Effect {
    Effect::Milestone(MilestoneRecord {
        number,
        github_id: Some(900 + number),
        title: format!("v{updated_at}"),
        state: state.into(),
        description: None,
        due_on: Some(86_400_000),
        created_at: Some(1_000),
        updated_at,
        closed_at: (state == "closed").then_some(updated_at),
        html_url: None,
        deleted,
    })
}

fn rename(full_name: &str) -> Effect {
    Effect::Repository {
        full_name: Some(full_name.into()),
        github_id: None,
        archived: None,
        deleted: None,
        visibility: None,
        default_branch: None,
    }
}

fn all(since: i64) -> ChangeFilter {
    ChangeFilter { since, limit: 10_000, repository: None, kind: None }
}

/// Every change after `since`.
async fn after(copy: &Arc<dyn CopyStore>, since: i64) -> Vec<ChangeRecord> {
    copy.changes(all(since)).await.unwrap()
}

/// (kind, key, op) of each change, for comparing at a glance.
fn summary(changes: &[ChangeRecord]) -> Vec<(String, String, ChangeOp)> {
    changes.iter().map(|c| (c.kind.clone(), c.key.clone(), c.op)).collect()
}

fn s(kind: &str, key: &str, op: ChangeOp) -> (String, String, ChangeOp) {
    (kind.into(), key.into(), op)
}

/// Applies `effects` and returns the changes they appended (checking nothing else did).
async fn apply(copy: &Arc<dyn CopyStore>, repo_id: i64, effects: Vec<Effect>, cause: Cause) -> Vec<ChangeRecord> {
    let newest = copy.changes_bounds().await.unwrap().newest;
    copy.apply(repo_id, effects, cause).await.unwrap();
    let appended = after(copy, newest).await;
    let bounds = copy.changes_bounds().await.unwrap();
    assert_eq!(bounds.newest, newest + appended.len() as i64, "numbers follow each other: {appended:?}");
    for (i, change) in appended.iter().enumerate() {
        assert_eq!(change.seq, newest + 1 + i as i64);
        assert_eq!(change.repo_id, repo_id);
    }
    appended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_effect_appends_one_change_with_its_kind_key_op_state_and_cause_and_a_repeat_appends_nothing() {
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let copy = backend.copy.clone();
        assert_eq!(copy.changes_bounds().await.unwrap(), ChangeBounds { oldest: 1, newest: 0 }, "{name}");
        let repo = backend.registry.add(new_repo("o/r", Some(1)), vec![]).await.unwrap();
        let other = backend.registry.add(new_repo("o/other", Some(2)), vec![]).await.unwrap();
        let id = repo.id;

        // A branch synced with two new commits: each commit, then the branch.
        let changes = apply(&copy, id, vec![branch("main", "c2", &["c2", "c1"], &["c2", "c1"])], Cause::Sync).await;
        assert_eq!(
            summary(&changes),
            [
                s("commit", "commit:c2", ChangeOp::Upsert),
                s("commit", "commit:c1", ChangeOp::Upsert),
                s("branch", "branch:main", ChangeOp::Upsert)
            ],
            "{name}"
        );
        assert_eq!(changes[0].seq, 1, "{name}: numbers start at 1");
        let stored = copy.commits(id, Some("main".into()), 10).await.unwrap();
        assert_eq!(changes[0].state.as_ref(), Some(&output::commit_json(&stored[0])), "{name}");
        assert_eq!(changes[1].state.as_ref(), Some(&output::commit_json(&stored[1])), "{name}");
        let main = copy.branches(id).await.unwrap().remove(0);
        assert_eq!(changes[2].state.as_ref(), Some(&output::branch_json(&main)), "{name}");
        for change in &changes {
            assert_eq!((change.repository.as_str(), change.cause.as_str()), ("o/r", "sync"), "{name}");
            assert!(change.at_ms > 1_700_000_000_000, "{name}: {change:?}");
        }
        // Synced again with the head where it was (synced_at moves): nothing.
        assert!(apply(&copy, id, vec![branch("main", "c2", &[], &["c2", "c1"])], Cause::Poll).await.is_empty());
        // Moved, with a commit stored already (another branch had it) and a new one.
        let changes =
            apply(&copy, id, vec![branch("main", "c3", &["c3", "c1"], &["c3", "c2", "c1"])], Cause::Poll).await;
        assert_eq!(
            summary(&changes),
            [s("commit", "commit:c3", ChangeOp::Upsert), s("branch", "branch:main", ChangeOp::Upsert)],
            "{name}"
        );
        assert_eq!(changes[1].state.as_ref().unwrap()["head_sha"], "c3", "{name}");
        assert_eq!(changes[1].cause, "poll", "{name}");

        // Tags: created, the same again, again without a sha (the stored one stays), moved.
        let tag = |sha: Option<&str>| Effect::Tag { name: "v1".into(), sha: sha.map(str::to_owned) };
        let changes = apply(&copy, id, vec![tag(Some("c1"))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("tag", "tag:v1", ChangeOp::Upsert)], "{name}");
        assert_eq!(changes[0].state, Some(json!({"name": "v1", "sha": "c1"})), "{name}");
        assert!(apply(&copy, id, vec![tag(Some("c1")), tag(None)], Cause::Sync).await.is_empty(), "{name}");
        let changes = apply(&copy, id, vec![tag(Some("c2"))], Cause::Sync).await;
        assert_eq!(changes[0].state, Some(json!({"name": "v1", "sha": "c2"})), "{name}");

        // A pull request: new, the same again, an older update, a newer one.
        let changes = apply(&copy, id, vec![Effect::Pull(pull(42, 2_000, "first"))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("pull_request", "pull_request#42", ChangeOp::Upsert)], "{name}");
        let listed = copy.pulls(id, PullState::All, 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::pull_json(&listed)), "{name}");
        let again = vec![Effect::Pull(pull(42, 2_000, "first")), Effect::Pull(pull(42, 1_000, "older"))];
        assert!(apply(&copy, id, again, Cause::Sync).await.is_empty(), "{name}: a repeat and an older update");
        let changes = apply(&copy, id, vec![Effect::Pull(pull(42, 3_000, "newer"))], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["title"], "newer", "{name}");

        // An issue: new, an older update, deleted (a delete, no state), then nothing sticks back.
        let changes = apply(&copy, id, vec![Effect::Issue(issue(7, 2_000, "first"))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("issue", "issue#7", ChangeOp::Upsert)], "{name}");
        let listed = copy.issues(id, futurnal::storage::copy::IssueState::All, 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::issue_json(&listed)), "{name}");
        assert!(apply(&copy, id, vec![Effect::Issue(issue(7, 1_000, "older"))], Cause::Sync).await.is_empty());
        let mut deleted = issue(7, 3_000, "deleted");
        deleted.deleted = true;
        let changes = apply(&copy, id, vec![Effect::Issue(deleted)], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("issue", "issue#7", ChangeOp::Delete)], "{name}");
        assert_eq!(changes[0].state, None, "{name}");
        assert!(apply(&copy, id, vec![Effect::Issue(issue(7, 4_000, "after"))], Cause::Sync).await.is_empty());

        // A comment: new, edited, deleted.
        let changes = apply(&copy, id, vec![Effect::Comment(comment(123, 1_000, false))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("comment", "comment#123", ChangeOp::Upsert)], "{name}");
        let expected = json!({
            "id": 123, "issue_number": 7, "body": "comment v1000", "author": "mona",
            "created_at": "1970-01-01T00:00:01Z", "updated_at": "1970-01-01T00:00:01Z",
        });
        assert_eq!(changes[0].state, Some(expected), "{name}");
        assert!(apply(&copy, id, vec![Effect::Comment(comment(123, 1_000, false))], Cause::Sync).await.is_empty());
        let changes = apply(&copy, id, vec![Effect::Comment(comment(123, 2_000, false))], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["body"], "comment v2000", "{name}");
        let changes = apply(&copy, id, vec![Effect::Comment(comment(123, 3_000, true))], Cause::Sync).await;
        assert_eq!(
            (summary(&changes), changes[0].state.clone()),
            (vec![s("comment", "comment#123", ChangeOp::Delete)], None)
        );

        // A release: published, renamed, deleted; a deleted one stays deleted.
        let changes = apply(&copy, id, vec![Effect::Release(release(5, "one", false))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("release", "release#5", ChangeOp::Upsert)], "{name}");
        let listed = copy.releases(id, 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::release_json(&listed)), "{name}");
        let changes = apply(&copy, id, vec![Effect::Release(release(5, "renamed", false))], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["name"], "renamed", "{name}");
        let changes = apply(&copy, id, vec![Effect::Release(release(5, "renamed", true))], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("release", "release#5", ChangeOp::Delete)], "{name}");
        assert!(apply(&copy, id, vec![Effect::Release(release(5, "back", false))], Cause::Sync).await.is_empty());

        // The repository renamed: its change, and the changes after it, carry the new name.
        let changes = apply(&copy, id, vec![rename("o/renamed"), tag(Some("c3"))], Cause::Sync).await;
        assert_eq!(
            summary(&changes),
            [s("repository", "repository", ChangeOp::Upsert), s("tag", "tag:v1", ChangeOp::Upsert)],
            "{name}"
        );
        let expected = json!({
            "id": id, "repository": "o/renamed", "github_id": 1, "default_branch": "main",
            "archived": false, "deleted": false, "visibility": null,
        });
        assert_eq!(changes[0].state, Some(expected), "{name}");
        assert!(changes.iter().all(|c| c.repository == "o/renamed"), "{name}: {changes:?}");
        assert!(apply(&copy, id, vec![rename("o/renamed")], Cause::Sync).await.is_empty(), "{name}");
        let archived = Effect::Repository {
            full_name: None,
            github_id: Some(99),
            archived: Some(true),
            deleted: Some(true),
            visibility: None,
            default_branch: None,
        };
        let changes = apply(&copy, id, vec![archived], Cause::Sync).await;
        let state = changes[0].state.as_ref().unwrap();
        assert_eq!(
            (&state["archived"], &state["deleted"], &state["github_id"]),
            (&json!(true), &json!(true), &json!(1))
        );

        // One of each of the other kinds (their rules: the test below).
        let others = vec![
            review(1, 5_000, "approved", "ok"),
            review_comment(2, 5_000, false),
            label("bug", 3, "d73a4a", false, LabelNaming::AsSent),
            milestone(4, 5_000, "open", false),
        ];
        let changes = apply(&copy, id, others, Cause::Sync).await;
        assert_eq!(
            summary(&changes),
            [
                s("review", "review#1", ChangeOp::Upsert),
                s("review_comment", "review_comment#2", ChangeOp::Upsert),
                s("label", "label:bug", ChangeOp::Upsert),
                s("milestone", "milestone#4", ChangeOp::Upsert)
            ],
            "{name}"
        );

        // Deletions: a tag and a branch; deleting what is not there appends nothing.
        let gone = vec![Effect::DeleteTag { name: "v1".into() }, Effect::DeleteBranch { name: "main".into() }];
        let changes = apply(&copy, id, gone.clone(), Cause::Sync).await;
        assert_eq!(
            summary(&changes),
            [s("tag", "tag:v1", ChangeOp::Delete), s("branch", "branch:main", ChangeOp::Delete)],
            "{name}"
        );
        assert!(changes.iter().all(|c| c.state.is_none()), "{name}");
        assert!(apply(&copy, id, gone, Cause::Sync).await.is_empty(), "{name}");

        // No change without its effect: an apply that fails stores neither.
        let newest = copy.changes_bounds().await.unwrap().newest;
        let failing = vec![tag(Some("c1")), rename("O/OTHER")];
        assert!(matches!(copy.apply(id, failing, Cause::Sync).await, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(copy.changes_bounds().await.unwrap().newest, newest, "{name}");
        assert!(copy.tags(id).await.unwrap().is_empty(), "{name}");

        // Reading: by repository, by kind, in pages.
        apply(&copy, other.id, vec![Effect::Pull(pull(1, 1_000, "elsewhere"))], Cause::Sync).await;
        let everything = after(&copy, 0).await;
        let seqs: Vec<i64> = everything.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=everything.len() as i64).collect::<Vec<_>>(), "{name}");
        let bounds = copy.changes_bounds().await.unwrap();
        assert_eq!(bounds, ChangeBounds { oldest: 1, newest: everything.len() as i64 }, "{name}");
        let mine = copy.changes(ChangeFilter { repository: Some(id), ..all(0) }).await.unwrap();
        assert_eq!(mine.len(), everything.len() - 1, "{name}");
        let theirs = copy.changes(ChangeFilter { repository: Some(other.id), ..all(0) }).await.unwrap();
        assert_eq!(summary(&theirs), [s("pull_request", "pull_request#1", ChangeOp::Upsert)], "{name}");
        assert_eq!(theirs[0].repository, "o/other", "{name}");
        let pulls = copy.changes(ChangeFilter { kind: Some("pull_request".into()), ..all(0) }).await.unwrap();
        assert_eq!(pulls.len(), 3, "{name}");
        let pulls_here =
            ChangeFilter { kind: Some("pull_request".into()), repository: Some(id), since: pulls[0].seq, limit: 10 };
        assert_eq!(copy.changes(pulls_here).await.unwrap(), pulls[1..2], "{name}");
        let mut paged = Vec::new();
        let mut since = 0;
        loop {
            let page = copy.changes(ChangeFilter { since, limit: 4, ..all(0) }).await.unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 4, "{name}");
            since = last.seq;
            paged.extend(page);
        }
        assert_eq!(paged, everything, "{name}");
        let kinds: BTreeSet<&str> = everything.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(
            kinds,
            futurnal::storage::changes::KINDS.into_iter().collect(),
            "{name}: every kind appeared, and only those"
        );
        fresh.done().await;
    }
}

/// Reviews, review comments, labels and milestones append a change only when what their
/// query shows changed: a repeat, an older update, or anything after a deletion appends
/// nothing; a deletion is a `delete`; a label's rename is the old name's `delete` and the
/// new name's `upsert`. The state is the query's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_review_comments_labels_and_milestones_append_a_change_only_when_their_query_changes() {
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let copy = backend.copy.clone();
        let id = backend.registry.add(new_repo("o/r", Some(1)), vec![]).await.unwrap().id;

        // A review: submitted, the same again, one submitted earlier, edited, dismissed.
        let changes = apply(&copy, id, vec![review(7, 2_000, "approved", "first")], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("review", "review#7", ChangeOp::Upsert)], "{name}");
        let listed = copy.reviews(id, Some(42), 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::review_json(&listed)), "{name}");
        let expected = json!({
            "id": 7, "pull_number": 42, "author": "mona", "state": "approved", "body": "first",
            "commit_id": "f".repeat(40), "submitted_at": "1970-01-01T00:00:02Z", "html_url": null,
        });
        assert_eq!(changes[0].state, Some(expected), "{name}");
        let stale = vec![review(7, 2_000, "approved", "first"), review(7, 1_000, "commented", "older")];
        assert!(apply(&copy, id, stale, Cause::Sync).await.is_empty(), "{name}: a repeat and an older one");
        let changes = apply(&copy, id, vec![review(7, 2_000, "approved", "edited")], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["body"], "edited", "{name}");
        let changes = apply(&copy, id, vec![review(7, 2_000, "dismissed", "edited")], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["state"], "dismissed", "{name}");
        assert!(apply(&copy, id, vec![review(7, 2_000, "approved", "edited")], Cause::Sync).await.is_empty());

        // A review comment: new, the same, older, newer, deleted, then nothing after that.
        let changes = apply(&copy, id, vec![review_comment(8, 2_000, false)], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("review_comment", "review_comment#8", ChangeOp::Upsert)], "{name}");
        let listed = copy.review_comments(id, Some(42), 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::review_comment_json(&listed)), "{name}");
        let stale = vec![review_comment(8, 2_000, false), review_comment(8, 1_000, false)];
        assert!(apply(&copy, id, stale, Cause::Sync).await.is_empty(), "{name}");
        let changes = apply(&copy, id, vec![review_comment(8, 3_000, false)], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["body"], "review comment v3000", "{name}");
        let changes = apply(&copy, id, vec![review_comment(8, 3_000, true)], Cause::Sync).await;
        assert_eq!(
            (summary(&changes), changes[0].state.clone()),
            (vec![s("review_comment", "review_comment#8", ChangeOp::Delete)], None),
            "{name}"
        );
        assert!(apply(&copy, id, vec![review_comment(8, 4_000, false)], Cause::Sync).await.is_empty(), "{name}");

        // A label: new, the same, renamed, an edit from before the rename, deleted, recreated late.
        let changes = apply(&copy, id, vec![label("bug", 5, "d73a4a", false, LabelNaming::AsSent)], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("label", "label:bug", ChangeOp::Upsert)], "{name}");
        assert_eq!(
            changes[0].state,
            Some(json!({"name": "bug", "color": "d73a4a", "description": null, "id": 5})),
            "{name}"
        );
        let listed = copy.labels(id, 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::label_json(&listed)), "{name}");
        let same = label("bug", 5, "d73a4a", false, LabelNaming::Current);
        assert!(apply(&copy, id, vec![same], Cause::Poll).await.is_empty(), "{name}");
        let renamed = label("defect", 5, "d73a4a", false, LabelNaming::RenamedFrom("bug".into()));
        let changes = apply(&copy, id, vec![renamed], Cause::Sync).await;
        assert_eq!(
            summary(&changes),
            [s("label", "label:bug", ChangeOp::Delete), s("label", "label:defect", ChangeOp::Upsert)],
            "{name}"
        );
        let before_rename = label("bug", 5, "ffffff", false, LabelNaming::AsSent);
        assert!(apply(&copy, id, vec![before_rename], Cause::Sync).await.is_empty(), "{name}");
        let deleted = label("defect", 5, "d73a4a", true, LabelNaming::AsSent);
        let changes = apply(&copy, id, vec![deleted.clone()], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("label", "label:defect", ChangeOp::Delete)], "{name}");
        let late = vec![deleted, label("defect", 5, "d73a4a", false, LabelNaming::AsSent)];
        assert!(apply(&copy, id, late, Cause::Sync).await.is_empty(), "{name}: a deleted label stays deleted");
        assert!(copy.labels(id, 10).await.unwrap().is_empty(), "{name}");

        // A milestone: new, the same, older, closed, deleted, then nothing after that.
        let changes = apply(&copy, id, vec![milestone(3, 2_000, "open", false)], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("milestone", "milestone#3", ChangeOp::Upsert)], "{name}");
        let listed = copy.milestones(id, MilestoneState::Open, 10).await.unwrap().remove(0);
        assert_eq!(changes[0].state.as_ref(), Some(&output::milestone_json(&listed)), "{name}");
        assert_eq!(changes[0].state.as_ref().unwrap()["due_on"], "1970-01-02T00:00:00Z", "{name}");
        let stale = vec![milestone(3, 2_000, "open", false), milestone(3, 1_000, "closed", false)];
        assert!(apply(&copy, id, stale, Cause::Sync).await.is_empty(), "{name}");
        let changes = apply(&copy, id, vec![milestone(3, 3_000, "closed", false)], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["state"], "closed", "{name}");
        let changes = apply(&copy, id, vec![milestone(3, 3_000, "closed", true)], Cause::Sync).await;
        assert_eq!(summary(&changes), [s("milestone", "milestone#3", ChangeOp::Delete)], "{name}");
        assert!(apply(&copy, id, vec![milestone(3, 9_000, "open", false)], Cause::Sync).await.is_empty(), "{name}");

        // An issue's milestone is part of the issue's state.
        let mut with_milestone = issue(9, 2_000, "milestoned");
        with_milestone.milestone = Some(3);
        let changes = apply(&copy, id, vec![Effect::Issue(with_milestone.clone())], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["milestone"], 3, "{name}");
        with_milestone.updated_at = 3_000;
        with_milestone.milestone = None;
        let changes = apply(&copy, id, vec![Effect::Issue(with_milestone)], Cause::Sync).await;
        assert_eq!(changes[0].state.as_ref().unwrap()["milestone"], Value::Null, "{name}");
        fresh.done().await;
    }
}

/// A delivery's changes carry its id; a worker whose claim was taken over appends
/// nothing (its whole report is rolled back); the same effects delivered again append
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_s_changes_carry_its_id_a_fenced_out_worker_appends_nothing_and_a_replay_nothing() {
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let (q, copy) = (&backend.queue, &backend.copy);
        let repo = backend.registry.add(new_repo("o/r", Some(1)), vec![]).await.unwrap();
        let first = queued("o/r", 1, "issues");
        let first_id = first.delivery_id.to_string();
        q.enqueue(first).await.unwrap();
        let a = Claimer { instance: "worker-a".into(), lease_ms: 0 };
        let a_lane = q.claim_as(&a, 4, 8).await.unwrap().remove(0);
        let b = Claimer { instance: "worker-b".into(), lease_ms: 60_000 };
        let b_lane = wait_for(Duration::from_secs(10), "the expired lease to be claimed again", || async {
            q.claim_as(&b, 4, 8).await.unwrap().into_iter().next()
        })
        .await;
        let effects = vec![Effect::Issue(issue(1, 1_000, "one")), Effect::Pull(pull(2, 1_000, "two"))];
        let report = |handle| Report {
            handle,
            completion: Completion::Done,
            changes: Some(Changes { repo_id: repo.id, effects: effects.clone() }),
        };
        let refused = q.finish(vec![report(a_lane[0].handle)]).await;
        assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "{name}: {refused:?}");
        assert!(after(copy, 0).await.is_empty(), "{name}: the fenced-out worker appended nothing");
        assert_eq!(copy.changes_bounds().await.unwrap().newest, 0, "{name}: no number was used");

        q.finish(vec![report(b_lane[0].handle)]).await.unwrap();
        let changes = after(copy, 0).await;
        assert_eq!(
            summary(&changes),
            [s("issue", "issue#1", ChangeOp::Upsert), s("pull_request", "pull_request#2", ChangeOp::Upsert)],
            "{name}"
        );
        assert!(changes.iter().all(|c| c.cause == first_id && c.repository == "o/r"), "{name}: {changes:?}");
        assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2], "{name}");

        // Replayed: handled again with the same effects, it appends nothing.
        q.replay(&first_id).await.unwrap();
        let lane = q.claim(4, 8).await.unwrap().remove(0);
        q.finish(vec![report(lane[0].handle)]).await.unwrap();
        assert_eq!(q.get(&first_id).await.unwrap().unwrap().status, DeliveryStatus::Done, "{name}");
        assert_eq!(after(copy, 0).await, changes, "{name}: a replay appends nothing");
        fresh.done().await;
    }
}

/// On PostgreSQL, writers on several connections append at once; a reader that follows
/// the log never finds a number below one it has read: every page it reads goes on from
/// exactly where the last one ended (numbers have no gaps, so a change committed late
/// below a number already read would show as a gap first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers_changes_become_visible_in_sequence_order() {
    let Some(fresh) = backends().await.into_iter().find(|f| f.name == "postgres") else {
        eprintln!("NOTE: no PostgreSQL server: the commit order test did NOT run");
        return;
    };
    const WRITERS: usize = 6;
    const APPLIES: u64 = 25;
    let copy = fresh.backend.copy.clone();
    let mut repos = Vec::new();
    for n in 0..WRITERS {
        repos.push(fresh.backend.registry.add(new_repo(&format!("o/r{n}"), None), vec![]).await.unwrap().id);
    }
    // Several writers per repository too: those take turns on the repository's row.
    let writers: Vec<_> = (0..WRITERS * 2)
        .map(|w| {
            let (copy, repo_id) = (copy.clone(), repos[w % WRITERS]);
            tokio::spawn(async move {
                for n in 0..APPLIES {
                    let number = (w as u64) * 1_000 + n;
                    let effects = vec![
                        Effect::Pull(pull(number, 1_000, "p")),
                        Effect::Issue(issue(number, 1_000, "i")),
                        Effect::Tag { name: format!("t{number}"), sha: Some("c".into()) },
                    ];
                    copy.apply(repo_id, effects, Cause::Poll).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let expected = (WRITERS * 2) as i64 * APPLIES as i64 * 3;
    let mut last = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut reads = 0;
    while last < expected {
        let page = copy.changes(ChangeFilter { since: last, limit: 50, ..Default::default() }).await.unwrap();
        for change in &page {
            assert_eq!(change.seq, last + 1, "after {last}, the next visible change is {}", change.seq);
            last = change.seq;
        }
        // What the bounds say is committed is readable, and never behind what was read.
        let bounds = copy.changes_bounds().await.unwrap();
        assert!(bounds.newest >= last, "{bounds:?} behind {last}");
        reads += 1;
        assert!(std::time::Instant::now() < deadline, "only {last} of {expected} changes after 60 s");
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(copy.changes_bounds().await.unwrap(), ChangeBounds { oldest: 1, newest: expected });
    assert!(after(&copy, expected).await.is_empty());
    eprintln!("read {expected} changes in {reads} reads while they were written");
    fresh.done().await;
}

/// End to end: label and review comment deliveries append their changes with their
/// delivery ids, and replays of them append nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_label_and_review_comment_deliveries_append_once() {
    let app = spawn_app(AppOptions::default()).await;
    let load = |path: &str| -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap();
        v["repository"]["id"] = 4242.into();
        v["repository"]["full_name"] = "octo/hello".into();
        serde_json::to_vec(&v).unwrap()
    };
    let deliver = |event: &'static str, body: Vec<u8>| {
        let app = &app;
        async move {
            let d = Delivery::new(event, body);
            let id = d.id.clone();
            let (status, answer) = app.post(d).await;
            assert_eq!(status, 202, "{answer}");
            app.wait_for_status(&id, DeliveryStatus::Done).await;
            id
        }
    };
    let created = deliver("label", load("payloads/label/created.payload.json")).await;
    let changes = after(&app.copy, 0).await;
    assert_eq!(summary(&changes), [s("label", "label::bug: Bugfix", ChangeOp::Upsert)]);
    assert_eq!(changes[0].cause, created);
    assert_eq!(changes[0].state.as_ref().unwrap()["color"], "cb1f00");
    let comment =
        deliver("pull_request_review_comment", load("payloads/pull_request_review_comment/created.payload.json")).await;
    let newest = app.copy.changes_bounds().await.unwrap().newest;
    assert_eq!(after(&app.copy, newest - 1).await[0].cause, comment);
    app.queue.replay(&created).await.unwrap();
    app.wait_for_status(&created, DeliveryStatus::Done).await;
    app.queue.replay(&comment).await.unwrap();
    app.wait_for_status(&comment, DeliveryStatus::Done).await;
    assert_eq!(after(&app.copy, newest).await, [], "replays append nothing");
    app.stop().await;
}

fn pull_payload(updated_at: &str, title: &str) -> Vec<u8> {
    let mut value: Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/pull_request/opened.payload.json")).unwrap()).unwrap();
    value["repository"]["id"] = 4242.into();
    value["repository"]["full_name"] = "octo/hello".into();
    value["pull_request"]["updated_at"] = updated_at.into();
    value["pull_request"]["title"] = title.into();
    serde_json::to_vec(&value).unwrap()
}

/// End to end: signed deliveries through the receiver and the workers append their
/// changes with their delivery ids; a replayed delivery and an older update append
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_append_their_changes_and_a_replay_or_an_older_update_appends_nothing() {
    let app = spawn_app(AppOptions::default()).await;
    let repo = app.registry.find(RepoRef::Name("octo/hello".into())).await.unwrap().unwrap();
    let remote = GitRemote::existing(app.dir.path(), "octo/hello");
    let deliver = |event: &'static str, body: Vec<u8>| {
        let app = &app;
        async move {
            let d = Delivery::new(event, body);
            let id = d.id.clone();
            let (status, answer) = app.post(d).await;
            assert_eq!(status, 202, "{answer}");
            app.wait_for_status(&id, DeliveryStatus::Done).await;
            id
        }
    };

    // A push: the new commit, the branch (and what the first delivery taught: the github id).
    let first = remote.head();
    let second = remote.commit("src/lib.rs", "fn main() {}\n", "Add lib");
    remote.push("main");
    let push = deliver("push", push_payload("octo/hello", 4242, "refs/heads/main", &first, &second)).await;
    let changes = after(&app.copy, 0).await;
    assert!(changes.iter().all(|c| c.cause == push && c.repo_id == repo.id), "{changes:?}");
    let keys: BTreeSet<String> = changes.iter().map(|c| c.key.clone()).collect();
    assert!(keys.contains(&format!("commit:{second}")), "{keys:?}");
    assert!(keys.contains("branch:main"), "{keys:?}");
    let main = changes.iter().find(|c| c.key == "branch:main").unwrap();
    assert_eq!(main.state.as_ref().unwrap()["head_sha"], second.as_str());
    let commit = changes.iter().find(|c| c.key == format!("commit:{second}")).unwrap();
    assert_eq!(commit.state.as_ref().unwrap()["message"], "Add lib");

    // A pull request: one change with the query's state.
    let newest = app.copy.changes_bounds().await.unwrap().newest;
    let opened = deliver("pull_request", pull_payload("2026-01-02T00:00:00Z", "Second version")).await;
    let changes = after(&app.copy, newest).await;
    let pr = app.copy.pulls(repo.id, PullState::All, 10).await.unwrap().remove(0);
    assert_eq!(summary(&changes), [s("pull_request", &format!("pull_request#{}", pr.number), ChangeOp::Upsert)]);
    assert_eq!(changes[0].state.as_ref(), Some(&output::pull_json(&pr)));
    assert_eq!(changes[0].cause, opened);

    // Replayed: handled again, nothing appended. An older update: nothing either.
    let newest = app.copy.changes_bounds().await.unwrap().newest;
    app.queue.replay(&opened).await.unwrap();
    app.wait_for_status(&opened, DeliveryStatus::Done).await;
    let replayed_push = app.queue.replay(&push).await.unwrap();
    assert_eq!(replayed_push.status, DeliveryStatus::Queued);
    app.wait_for_status(&push, DeliveryStatus::Done).await;
    deliver("pull_request", pull_payload("2026-01-01T00:00:00Z", "First version")).await;
    assert_eq!(after(&app.copy, newest).await, [], "a replay or an older update appends nothing");
    assert_eq!(app.copy.pulls(repo.id, PullState::All, 10).await.unwrap()[0].title, "Second version");
    app.stop().await;
}
