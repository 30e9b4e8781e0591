//! Scheduling: ordering domains (a repository's git state apart from its metadata), fair
//! turns between ready domains, and a run of git deliveries served by one sync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futurnal::domain::DeliveryId;
use futurnal::handlers::{DeliveryHandler, Handled, HandlerError, HandlerOutcome};
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::queue::{ClaimedDelivery, Completion, DeliveryStatus, InitialStatus, NewDelivery, StoredBody};
use futurnal::storage::registry::RepoRef;
use futurnal::storage::BoxFuture;
use serde_json::Value;

use crate::helpers::*;

fn queued(repo: &str, github_id: u64, event: &str) -> NewDelivery {
    NewDelivery {
        delivery_id: DeliveryId::random(),
        event: event.into(),
        action: None,
        repository: Some(repo.into()),
        repository_github_id: Some(github_id),
        hook_id: None,
        received_at_ms: futurnal::time::now_ms(),
        body: StoredBody::compress(&push_body(repo, github_id)),
        initial: InitialStatus::Queued,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_domain_is_claimed_within_one_round_whatever_its_key_sorts_to() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&config_for(dir.path(), ""), Purpose::Command).await.unwrap();
    // Eight busy repositories (keys id:10 .. id:17), then one delivery of a ninth whose
    // key sorts after all of them (id:99).
    for _ in 0..200 {
        for r in 0..8u64 {
            backend.queue.enqueue(queued(&format!("octo/busy-{r}"), 10 + r, "push")).await.unwrap();
        }
    }
    let probe = queued("octo/zz-probe", 99, "issues");
    let probe_id = probe.delivery_id.to_string();
    backend.queue.enqueue(probe).await.unwrap();

    // Four workers' worth of lanes per claim, each finished before the next claim.
    let mut claimed_before = 0;
    let mut claims = 0;
    loop {
        claims += 1;
        assert!(claims < 100, "the probe was never claimed");
        let lanes = backend.queue.claim(4, 64).await.unwrap();
        assert!(!lanes.is_empty());
        if lanes.iter().flatten().any(|d| d.delivery_id == probe_id) {
            break;
        }
        let done: Vec<_> = lanes.iter().flatten().map(|d| (d.handle, Completion::Done)).collect();
        claimed_before += done.len();
        backend.queue.complete(done).await.unwrap();
    }
    // One round of the other eight domains at most, while most of the backlog still waits.
    assert!(claimed_before <= 8 * 64, "{claimed_before} deliveries went first");
    assert!(claims <= 3, "{claims} claims");
    assert!(backend.queue.stats().await.unwrap().depth > 1000);
    backend.close();
}

/// Fails the deliveries it is told to, always; records the others.
#[derive(Default)]
struct Failing {
    fail: Mutex<Vec<String>>,
    done: Mutex<Vec<String>>,
}

impl DeliveryHandler for Failing {
    fn handle<'a>(&'a self, d: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            if self.fail.lock().unwrap().contains(&d.delivery_id) {
                return Err(HandlerError::Transient("scripted failure".into()));
            }
            self.done.lock().unwrap().push(d.delivery_id.clone());
            Ok(HandlerOutcome::Done.into())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_holds_back_only_its_own_domain_and_order_within_a_domain_is_kept() {
    let handler = Arc::new(Failing::default());
    let app = spawn_app(AppOptions {
        // Retries every 0.5-1 s, 4 attempts: the failing deliveries stay retrying for seconds.
        toml: "[workers]\nretry_base_ms = 1000\nretry_cap_ms = 1000\nmax_attempts = 4\n".into(),
        handler: Some(handler.clone()),
        track: vec!["octo/a", "octo/b"],
        ..Default::default()
    })
    .await;
    let send = |event: &'static str, repo: &'static str, id: u64, fails: bool| {
        let d = Delivery::new(event, push_body(repo, id));
        if fails {
            handler.fail.lock().unwrap().push(d.id.clone());
        }
        let app = &app;
        async move {
            let id = d.id.clone();
            assert_eq!(app.post(d).await.0, 202);
            id
        }
    };
    // octo/a: its git domain fails; its metadata goes on.
    let push_fails = send("push", "octo/a", 1, true).await;
    let issue = send("issues", "octo/a", 1, false).await;
    let push_after = send("push", "octo/a", 1, false).await;
    let pull = send("pull_request", "octo/a", 1, false).await;
    // octo/b: its metadata fails; its git state goes on.
    let issue_fails = send("issues", "octo/b", 2, true).await;
    let push_b = send("push", "octo/b", 2, false).await;
    let comment_after = send("issue_comment", "octo/b", 2, false).await;

    for id in [&issue, &pull, &push_b] {
        app.wait_for_status(id, DeliveryStatus::Done).await;
    }
    // The failing ones are retrying, and what came after them in their domain waits.
    assert_eq!(app.delivery(&push_fails).await.unwrap().status, DeliveryStatus::Retrying);
    assert_eq!(app.delivery(&issue_fails).await.unwrap().status, DeliveryStatus::Retrying);
    assert_eq!(app.delivery(&push_after).await.unwrap().status, DeliveryStatus::Queued);
    assert_eq!(app.delivery(&comment_after).await.unwrap().status, DeliveryStatus::Queued);

    // Dead after its attempts, a failure lets its domain go on, in order.
    let dead = app.wait_for_status(&push_fails, DeliveryStatus::Dead).await;
    assert_eq!(dead.attempts, 4);
    app.wait_for_status(&push_after, DeliveryStatus::Done).await;
    app.wait_for_status(&issue_fails, DeliveryStatus::Dead).await;
    app.wait_for_status(&comment_after, DeliveryStatus::Done).await;
    let done = handler.done.lock().unwrap().clone();
    let at = |id: &str| done.iter().position(|d| d == id).unwrap();
    assert!(at(&issue) < at(&push_after) && at(&pull) < at(&push_after), "{done:?}");
    app.stop().await;
}

/// One of GitHub's example payloads, about `repo`.
fn example_for(path: &str, repo: &str, github_id: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap();
    v["repository"]["id"] = github_id.into();
    v["repository"]["full_name"] = repo.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_whose_remote_is_gone_still_gets_its_pull_requests_and_issues() {
    let app = spawn_app(AppOptions {
        toml: "[workers]\nretry_base_ms = 1000\nretry_cap_ms = 2000\nmax_attempts = 8\n".into(),
        ..Default::default()
    })
    .await;
    let remote = GitRemote::existing(app.dir.path(), "octo/hello");
    let head = remote.head();
    std::fs::remove_dir_all(&remote.bare).unwrap();
    let post = |event: &'static str, body: Vec<u8>| {
        let app = &app;
        async move {
            let d = Delivery::new(event, body);
            let id = d.id.clone();
            assert_eq!(app.post(d).await.0, 202);
            id
        }
    };
    let push = post("push", push_payload("octo/hello", 4242, "refs/heads/main", &head, &head)).await;
    app.wait_for_status(&push, DeliveryStatus::Retrying).await;
    let pull = post("pull_request", example_for("payloads/pull_request/opened.payload.json", "octo/hello", 4242)).await;
    let issue = post("issues", example_for("payloads/issues/opened.payload.json", "octo/hello", 4242)).await;
    app.wait_for_status(&pull, DeliveryStatus::Done).await;
    app.wait_for_status(&issue, DeliveryStatus::Done).await;
    let repo = app.registry.find(RepoRef::Name("octo/hello".into())).await.unwrap().unwrap();
    assert_eq!(app.copy.pulls(repo.id, futurnal::storage::copy::PullState::All, 10).await.unwrap().len(), 1);
    assert_eq!(app.copy.issues(repo.id, futurnal::storage::copy::IssueState::All, 10).await.unwrap().len(), 1);
    let still = app.delivery(&push).await.unwrap();
    assert!(still.status == DeliveryStatus::Retrying || still.status == DeliveryStatus::Processing, "{still:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_git_deliveries_is_served_by_one_fetch_with_the_same_result() {
    // Queued first (a receiver only), processed afterwards: the whole run waits at once.
    let receiver = spawn_app(AppOptions { role: futurnal::cli::Role::Receiver, ..Default::default() }).await;
    let remote = GitRemote::existing(receiver.dir.path(), "octo/hello");
    let zero = "0000000000000000000000000000000000000000";
    let mut before = remote.head();
    let ids = Mutex::new(Vec::new());
    let post = |body: Vec<u8>, event: &'static str| {
        let d = Delivery::new(event, body);
        ids.lock().unwrap().push(d.id.clone());
        let receiver = &receiver;
        async move { assert_eq!(receiver.post(d).await.0, 202) }
    };
    for i in 0..30 {
        let after = remote.commit("counter.txt", &format!("{i}\n"), &format!("Commit {i}"));
        remote.push("main");
        post(push_payload("octo/hello", 4242, "refs/heads/main", &before, &after), "push").await;
        before = after;
    }
    // A tag created, and a tag created then deleted, in the same run; a branch that is
    // not tracked (only the default branch is) created, then deleted.
    git(&remote.work, &["tag", "v1"]);
    git(&remote.work, &["push", "-q", "origin", "v1"]);
    post(push_payload("octo/hello", 4242, "refs/tags/v1", zero, &before), "push").await;
    git(&remote.work, &["tag", "v0"]);
    git(&remote.work, &["push", "-q", "origin", "v0"]);
    post(push_payload("octo/hello", 4242, "refs/tags/v0", zero, &before), "push").await;
    git(&remote.work, &["push", "-q", "origin", ":refs/tags/v0"]);
    post(push_payload("octo/hello", 4242, "refs/tags/v0", &before, zero), "push").await;
    remote.push("elsewhere");
    post(push_payload("octo/hello", 4242, "refs/heads/elsewhere", zero, &before), "push").await;
    let untracked = ids.lock().unwrap().last().unwrap().clone();
    git(&remote.work, &["push", "-q", "origin", ":refs/heads/elsewhere"]);
    post(push_payload("octo/hello", 4242, "refs/heads/elsewhere", &before, zero), "push").await;
    let ids = ids.into_inner().unwrap();
    let dir = receiver.stop().await;

    let app = spawn_app_in(dir, AppOptions::default()).await;
    for id in &ids {
        // As one by one: the push creating a branch that is not tracked changes nothing.
        let status = if *id == untracked { DeliveryStatus::Ignored } else { DeliveryStatus::Done };
        let record = app.wait_for_status(id, status).await;
        assert_eq!(record.attempts, 1);
    }
    let fetches = app.metric("futurnal_git_fetches_total").await;
    assert!(fetches <= 2.0, "{fetches} fetches for {} git deliveries", ids.len());

    // The same copy as a full sync from the remote.
    let repo = app.registry.find(RepoRef::Name("octo/hello".into())).await.unwrap().unwrap();
    let stored: Vec<String> =
        app.copy.commits(repo.id, Some("main".into()), 1000).await.unwrap().into_iter().map(|c| c.sha).collect();
    let expected: Vec<String> = git(&remote.bare, &["rev-list", "main"]).lines().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(stored, expected);
    let branches: HashMap<String, String> =
        app.copy.branches(repo.id).await.unwrap().into_iter().map(|b| (b.name, b.head_sha)).collect();
    assert_eq!(branches, HashMap::from([("main".to_owned(), before.clone())]));
    let tags: HashMap<String, Option<String>> = app.copy.tags(repo.id).await.unwrap().into_iter().collect();
    assert_eq!(tags, HashMap::from([("v1".to_owned(), Some(before.clone()))]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_many_repositories_lets_a_late_one_through_at_once() {
    // 8 repositories x 150 queued pushes and one issue of a ninth, whose key sorts last;
    // then one worker process takes them all on.
    let busy: Vec<&'static str> = (0..8).map(|i| &*Box::leak(format!("octo/busy-{i}").into_boxed_str())).collect();
    let mut track = busy.clone();
    track.push("octo/zz-probe");
    let handler = Arc::new(Failing::default());
    let receiver = spawn_app(AppOptions {
        role: futurnal::cli::Role::Receiver,
        track: track.clone(),
        handler: Some(handler.clone()),
        ..Default::default()
    })
    .await;
    for _ in 0..150 {
        for (i, repo) in busy.iter().enumerate() {
            assert_eq!(receiver.post(Delivery::new("push", push_body(repo, 10 + i as u64))).await.0, 202);
        }
    }
    let probe = Delivery::new("issues", push_body("octo/zz-probe", 99));
    let probe_id = probe.id.clone();
    assert_eq!(receiver.post(probe).await.0, 202);
    let dir = receiver.stop().await;

    let app = spawn_app_in(dir, AppOptions { track, handler: Some(handler.clone()), ..Default::default() }).await;
    app.wait_for_status(&probe_id, DeliveryStatus::Done).await;
    let done = handler.done.lock().unwrap().clone();
    let before = done.iter().position(|d| *d == probe_id).unwrap();
    // The probe's lane is claimed after at most one round of the eight other domains (64
    // deliveries a lane); while it runs, the other three workers may already run lanes of
    // the next round. (In key order, all 1,200 went first.)
    assert!(before <= 8 * 64 + 3 * 64, "{before} of 1200 went first");
    wait_until(Duration::from_secs(30), "the backlog drains", || async { handler.done.lock().unwrap().len() == 1201 })
        .await;
    app.stop().await;
}
