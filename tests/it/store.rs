//! Order and idempotence of the local copy: GitHub does not promise delivery order, and
//! at-least-once delivery means duplicates. Whatever the order and however often each
//! update is applied, the stored state is the newest one.

use std::sync::Arc;

use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::changes::Cause;
use futurnal::storage::copy::{Effect, IssueRecord, IssueState, PullRecord, PullState};
use futurnal::storage::registry::NewRepository;
use proptest::prelude::*;

use crate::helpers::config_for;

fn pull_version(i: usize) -> PullRecord {
    PullRecord {
        number: 7,
        title: format!("version {i}"),
        body: Some(format!("body {i}")),
        state: if i.is_multiple_of(2) { "open".into() } else { "closed".into() },
        draft: i.is_multiple_of(3),
        merged: i % 4 == 3,
        author: Some("octocat".into()),
        labels: (0..i).map(|l| format!("label-{l}")).collect(),
        assignees: vec![],
        milestone: (i % 3 == 1).then_some(i as u64),
        base_ref: "main".into(),
        base_sha: "a".repeat(40),
        head_ref: "feature".into(),
        head_sha: format!("{i:040}"),
        created_at: Some(1_000),
        updated_at: 10_000 + i as i64 * 1_000,
        closed_at: (i % 2 == 1).then_some(10_000 + i as i64 * 1_000),
        merged_at: None,
    }
}

fn issue_version(i: usize) -> IssueRecord {
    IssueRecord {
        number: 3,
        title: format!("issue version {i}"),
        body: None,
        state: if i.is_multiple_of(2) { "open".into() } else { "closed".into() },
        author: Some("octocat".into()),
        labels: vec![format!("l{i}")],
        assignees: vec![format!("user{i}")],
        milestone: i.is_multiple_of(2).then_some(i as u64),
        comments: i as u64,
        created_at: Some(1_000),
        updated_at: 10_000 + i as i64 * 1_000,
        closed_at: None,
        deleted: false,
        transferred_to: None,
    }
}

/// How many versions, and the order they arrive in: every version at least once, some
/// again, all shuffled.
fn arrivals() -> impl Strategy<Value = (usize, Vec<usize>)> {
    (2usize..7).prop_flat_map(|n| {
        proptest::collection::vec(0..n, 0..n).prop_flat_map(move |extra| {
            let mut all: Vec<usize> = (0..n).collect();
            all.extend(extra);
            (Just(n), Just(all).prop_shuffle())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_order_with_duplicates_ends_at_the_newest((n, order) in arrivals()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let backend = Backend::open(&config_for(dir.path(), ""), Purpose::Command).await.unwrap();
            let repo = backend
                .registry
                .add(
                    NewRepository { full_name: "o/r".into(), github_id: Some(1), branches: vec![], clone_url: None, default_branch: None },
                    vec![],
                )
                .await
                .unwrap();
            let copy = Arc::clone(&backend.copy);
            for &i in &order {
                copy.apply(repo.id, vec![Effect::Pull(pull_version(i)), Effect::Issue(issue_version(i))], Cause::Sync).await.unwrap();
            }
            let pulls = copy.pulls(repo.id, PullState::All, 10).await.unwrap();
            assert_eq!(pulls, vec![pull_version(n - 1)], "order {order:?}");
            let issues = copy.issues(repo.id, IssueState::All, 10).await.unwrap();
            assert_eq!(issues, vec![issue_version(n - 1)], "order {order:?}");
            backend.close();
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_sticks_even_when_a_newer_update_arrives_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&config_for(dir.path(), ""), Purpose::Command).await.unwrap();
    let repo = backend
        .registry
        .add(
            NewRepository {
                full_name: "o/r".into(),
                github_id: None,
                branches: vec![],
                clone_url: None,
                default_branch: None,
            },
            vec![],
        )
        .await
        .unwrap();
    backend.copy.apply(repo.id, vec![Effect::Issue(issue_version(1))], Cause::Sync).await.unwrap();
    assert_eq!(backend.copy.issues(repo.id, IssueState::All, 10).await.unwrap().len(), 1);
    let mut deleted = issue_version(2);
    deleted.deleted = true;
    backend.copy.apply(repo.id, vec![Effect::Issue(deleted)], Cause::Sync).await.unwrap();
    // An update newer than the deletion (a delivery GitHub sent before it deleted the
    // issue, with a later timestamp, or a clock skew) passes the newer-wins guard: only
    // the deletion rule keeps the issue gone.
    backend.copy.apply(repo.id, vec![Effect::Issue(issue_version(3))], Cause::Sync).await.unwrap();
    assert!(backend.copy.issues(repo.id, IssueState::All, 10).await.unwrap().is_empty());
    backend.close();
}
