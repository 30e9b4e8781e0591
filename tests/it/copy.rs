//! The local copy end to end: a local bare repository plays GitHub's git side, signed
//! deliveries in GitHub's shape play its webhooks, and the store is read back.

use std::time::Duration;

use futurnal::storage::copy::{IssueState, PullState};
use futurnal::storage::queue::DeliveryStatus;
use futurnal::storage::registry::{RepoRef, TrackedRepository};
use serde_json::Value;

use crate::helpers::*;

const REPO: &str = "octo/hello";
const ID: u64 = 4242;
const ZERO: &str = "0000000000000000000000000000000000000000";

async fn tracked(app: &TestApp) -> TrackedRepository {
    app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap()
}

fn remote_of(app: &TestApp) -> GitRemote {
    GitRemote::existing(app.dir.path(), REPO)
}

async fn branch_shas(app: &TestApp, branch: &str) -> Vec<String> {
    let repo = tracked(app).await;
    app.copy.commits(repo.id, Some(branch.into()), 1000).await.unwrap().into_iter().map(|c| c.sha).collect()
}

async fn deliver(app: &TestApp, event: &str, body: Vec<u8>) -> String {
    let d = Delivery::new(event, body);
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 202, "{answer}");
    id
}

async fn push(app: &TestApp, git_ref: &str, before: &str, after: &str) -> String {
    deliver(app, "push", push_payload(REPO, ID, git_ref, before, after)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_forced_pushes_skipped_deliveries_and_branch_and_tag_lifecycle() {
    let app = spawn_app(AppOptions { toml: "[workers]\nretry_base_ms = 20\n".into(), ..Default::default() }).await;
    let remote = remote_of(&app);
    let first = remote.head();

    // A push to main: its commit becomes queryable, with paths and parents.
    let second = remote.commit("src/lib.rs", "fn main() {}\n", "Add lib");
    remote.push("main");
    let id = push(&app, "refs/heads/main", &first, &second).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(branch_shas(&app, "main").await, vec![second.clone(), first.clone()]);
    let repo = tracked(&app).await;
    let newest = &app.copy.commits(repo.id, Some("main".into()), 1).await.unwrap()[0];
    assert_eq!(newest.parents, vec![first.clone()]);
    assert_eq!(newest.message, "Add lib");
    assert_eq!(newest.author_name, "Mona Lisa");
    assert_eq!(newest.paths, vec![("src/lib.rs".to_owned(), 'A')]);

    // Two pushes, only the second delivered: both commits appear (the mirror is the truth).
    let third = remote.commit("a.txt", "a\n", "Third");
    remote.push("main");
    let fourth = remote.commit("a.txt", "b\n", "Fourth");
    remote.push("main");
    let id = push(&app, "refs/heads/main", &third, &fourth).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(branch_shas(&app, "main").await, vec![fourth.clone(), third.clone(), second.clone(), first.clone()]);

    // A forced push back to `second` plus a new commit: third and fourth leave main.
    git(&remote.work, &["reset", "-q", "--hard", &second]);
    let rewritten = remote.commit("b.txt", "rewritten\n", "Rewritten");
    remote.force_push("main");
    let mut body: Value =
        serde_json::from_slice(&push_payload(REPO, ID, "refs/heads/main", &fourth, &rewritten)).unwrap();
    body["forced"] = true.into();
    let id = deliver(&app, "push", serde_json::to_vec(&body).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(branch_shas(&app, "main").await, vec![rewritten.clone(), second.clone(), first.clone()]);

    // Branch created (only tracked branches are mirrored), then deleted.
    remote.checkout("feature", true);
    let feature = remote.commit("f.txt", "f\n", "Feature work");
    remote.push("feature");
    let id = push(&app, "refs/heads/feature", ZERO, &feature).await;
    assert_eq!(
        app.wait_for_status(&id, DeliveryStatus::Ignored).await.last_error.as_deref(),
        Some("nothing tracked changed")
    );
    // Track feature/* and main explicitly, then the branch appears.
    set_tracked_branches_by_hand(app.dir.path(), REPO, &["main", "feature"]).await;
    // The handlers trust a "tracked" answer for a second: a push sent again until one is
    // handled with the new patterns (each attempt is a full delivery; none may fail).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let id = push(&app, "refs/heads/feature", ZERO, &feature).await;
        let handled = loop {
            let record = app.delivery(&id).await.unwrap();
            if !record.status.is_pending() {
                break record;
            }
            assert!(std::time::Instant::now() < deadline, "push {id} never handled: {record:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match handled.status {
            DeliveryStatus::Done => break,
            DeliveryStatus::Ignored => {}
            other => panic!("the push ended {other}: {handled:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the new branch patterns were never used");
    }
    assert_eq!(branch_shas(&app, "feature").await[0], feature);
    git(&remote.work, &["push", "-q", "origin", "--delete", "feature"]);
    let id = push(&app, "refs/heads/feature", &feature, ZERO).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let branches: Vec<String> = app.copy.branches(repo.id).await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(branches, vec!["main".to_owned()]);
    assert!(branch_shas(&app, "feature").await.is_empty());
    assert_eq!(branch_shas(&app, "main").await.len(), 3, "commits on other branches stay");
    // A late delivery of the branch's creation: the remote no longer has it (one fetch
    // connection finds that out), so it does not come back.
    let id = push(&app, "refs/heads/feature", ZERO, &feature).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let branches: Vec<String> = app.copy.branches(repo.id).await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(branches, vec!["main".to_owned()], "a branch gone from the remote stays gone");

    // Tags: created via push, then deleted via a delete event.
    git(&remote.work, &["tag", "v1.0", &second]);
    git(&remote.work, &["push", "-q", "origin", "v1.0"]);
    let id = push(&app, "refs/tags/v1.0", ZERO, &second).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let tags = app.copy.tags(repo.id).await.unwrap();
    assert_eq!(tags, vec![("v1.0".to_owned(), Some(second.clone()))]);
    let mut delete: Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/delete/payload.json")).unwrap()).unwrap();
    delete["ref"] = "v1.0".into();
    delete["ref_type"] = "tag".into();
    delete["repository"]["id"] = ID.into();
    delete["repository"]["full_name"] = REPO.into();
    let id = deliver(&app, "delete", serde_json::to_vec(&delete).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert!(app.copy.tags(repo.id).await.unwrap().is_empty());
    // The tag deleted on the remote too, then a late push delivery of its creation.
    git(&remote.work, &["push", "-q", "origin", "--delete", "v1.0"]);
    let id = push(&app, "refs/tags/v1.0", ZERO, &second).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert!(app.copy.tags(repo.id).await.unwrap().is_empty(), "a tag gone from the remote stays gone");

    // The same delivery again changes nothing.
    let before = branch_shas(&app, "main").await;
    let replayed = app.queue.replay(&id).await.unwrap();
    assert_eq!(replayed.status, DeliveryStatus::Queued);
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(branch_shas(&app, "main").await, before);
    app.stop().await;
}

fn pull_payload(file: &str, updated_at: &str) -> Vec<u8> {
    let mut value: Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("payloads/pull_request/{file}"))).unwrap()).unwrap();
    value["repository"]["id"] = ID.into();
    value["repository"]["full_name"] = REPO.into();
    value["pull_request"]["updated_at"] = updated_at.into();
    serde_json::to_vec(&value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_issues_comments_releases_and_renames() {
    let app = spawn_app(AppOptions::default()).await;

    // Opened, edited, closed-and-merged: delivered newest first; the merged state wins.
    let mut merged: Value =
        serde_json::from_slice(&pull_payload("closed.payload.json", "2026-01-03T00:00:00Z")).unwrap();
    merged["pull_request"]["merged"] = true.into();
    merged["pull_request"]["merged_at"] = "2026-01-03T00:00:00Z".into();
    let mut edited: Value =
        serde_json::from_slice(&pull_payload("opened.payload.json", "2026-01-02T00:00:00Z")).unwrap();
    edited["action"] = "edited".into();
    edited["pull_request"]["title"] = "Edited title".into();
    for body in [
        serde_json::to_vec(&merged).unwrap(),
        serde_json::to_vec(&edited).unwrap(),
        pull_payload("opened.payload.json", "2026-01-01T00:00:00Z"),
    ] {
        let id = deliver(&app, "pull_request", body).await;
        app.wait_for_status(&id, DeliveryStatus::Done).await;
    }
    let repo = tracked(&app).await;
    let pulls = app.copy.pulls(repo.id, PullState::All, 10).await.unwrap();
    assert_eq!(pulls.len(), 1);
    assert!(pulls[0].merged && pulls[0].state == "closed", "{:?}", pulls[0]);
    assert_eq!(app.copy.pulls(repo.id, PullState::Merged, 10).await.unwrap().len(), 1);
    assert!(app.copy.pulls(repo.id, PullState::Open, 10).await.unwrap().is_empty());

    // An issue, a comment on it (the count follows), then transferred away.
    let load = |path: &str| -> Value {
        let mut v: Value = serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap();
        v["repository"]["id"] = ID.into();
        v["repository"]["full_name"] = REPO.into();
        v
    };
    let opened = load("payloads/issues/opened.payload.json");
    let number = opened["issue"]["number"].as_u64().unwrap();
    let id = deliver(&app, "issues", serde_json::to_vec(&opened).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let mut comment = load("payloads/issue_comment/created.payload.json");
    comment["issue"]["number"] = number.into();
    comment["issue"]["comments"] = 1.into();
    comment["issue"]["updated_at"] = "2030-01-01T00:00:00Z".into();
    let id = deliver(&app, "issue_comment", serde_json::to_vec(&comment).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let issues = app.copy.issues(repo.id, IssueState::All, 10).await.unwrap();
    assert_eq!((issues.len(), issues[0].comments), (1, 1));
    let mut transferred = load("payloads/issues/transferred.payload.json");
    transferred["issue"]["number"] = number.into();
    transferred["issue"]["updated_at"] = "2030-01-02T00:00:00Z".into();
    let id = deliver(&app, "issues", serde_json::to_vec(&transferred).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert!(
        app.copy.issues(repo.id, IssueState::All, 10).await.unwrap().is_empty(),
        "transferred issues leave the list"
    );

    // Release published, then deleted.
    let release = load("payloads/release/published.payload.json");
    let id = deliver(&app, "release", serde_json::to_vec(&release).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(
        app.copy.releases(repo.id, 10).await.unwrap()[0].tag_name,
        release["release"]["tag_name"].as_str().unwrap()
    );
    let mut deleted = release.clone();
    deleted["action"] = "deleted".into();
    let id = deliver(&app, "release", serde_json::to_vec(&deleted).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert!(app.copy.releases(repo.id, 10).await.unwrap().is_empty());

    // Renamed: the same repository (by GitHub id) under its new name, history kept.
    let before_rename = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    assert_eq!(before_rename.github_id, Some(ID), "learned from the first delivery");
    let mut renamed = load("payloads/repository/renamed.payload.json");
    renamed["repository"]["full_name"] = "octo/hello-renamed".into();
    let id = deliver(&app, "repository", serde_json::to_vec(&renamed).unwrap()).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let after =
        app.registry.find(RepoRef::Name("octo/hello-renamed".into())).await.unwrap().expect("found by new name");
    assert_eq!(after.id, repo.id);
    assert_eq!(app.copy.pulls(after.id, PullState::All, 10).await.unwrap().len(), 1);
    // Deliveries under the new name are still routed (by GitHub id).
    let d = Delivery::new("pull_request", {
        let mut v: Value =
            serde_json::from_slice(&pull_payload("opened.payload.json", "2026-02-01T00:00:00Z")).unwrap();
        v["repository"]["full_name"] = "octo/hello-renamed".into();
        v["number"] = 99.into();
        v["pull_request"]["number"] = 99.into();
        serde_json::to_vec(&v).unwrap()
    });
    let id = d.id.clone();
    assert_eq!(app.post(d).await.1["status"], "queued");
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(app.copy.pulls(after.id, PullState::All, 10).await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_disappears_goes_dead_with_the_git_error_and_a_corrupt_mirror_is_recloned() {
    let app = spawn_app(AppOptions {
        toml: "[workers]\nretry_base_ms = 10\nretry_cap_ms = 50\nmax_attempts = 3\n".into(),
        ..Default::default()
    })
    .await;
    let remote = remote_of(&app);
    let first = remote.head();
    let second = remote.commit("x.txt", "x\n", "Second");
    remote.push("main");
    let id = push(&app, "refs/heads/main", &first, &second).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;

    // Corrupt the mirror: its objects vanish. The next sync notices and re-clones.
    let repo = tracked(&app).await;
    let mirror = app.dir.path().join("mirrors").join(format!("{}.git", repo.id));
    std::fs::remove_dir_all(mirror.join("objects")).unwrap();
    std::fs::create_dir_all(mirror.join("objects")).unwrap();
    let third = remote.commit("y.txt", "y\n", "Third");
    remote.push("main");
    let id = push(&app, "refs/heads/main", &second, &third).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(branch_shas(&app, "main").await, vec![third.clone(), second.clone(), first.clone()]);

    // The remote disappears: retries, then dead, with git's error kept.
    std::fs::remove_dir_all(&remote.bare).unwrap();
    let id = push(&app, "refs/heads/main", &third, &first).await;
    let dead = app.wait_for_status(&id, DeliveryStatus::Dead).await;
    assert_eq!(dead.attempts, 3);
    let error = dead.last_error.unwrap();
    assert!(error.contains("failed to reach") || error.contains("fetch"), "{error}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_more_than_2048_commits_yields_the_exact_history() {
    let app = spawn_app(AppOptions::default()).await;
    let remote = remote_of(&app);
    let before = remote.head();
    let after = remote.bulk_commits(2100);
    remote.push("main");
    // GitHub's payload would list at most 2048 commits; ours lists none at all.
    let id = push(&app, "refs/heads/main", &before, &after).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    let shas = branch_shas(&app, "main").await;
    assert_eq!(shas.len(), 1000, "the query's limit");
    let repo = tracked(&app).await;
    let all = app.copy.commits(repo.id, Some("main".into()), 100_000).await.unwrap();
    assert_eq!(all.len(), 2101);
    assert_eq!(all[0].sha, after);
    assert_eq!(all[2100].sha, before);
    assert_eq!(all[0].paths, vec![("bulk/file49.txt".to_owned(), 'M')]);
    // Every commit's changed paths, as `git log --name-status` reports them (this long
    // read goes through the delta-base-caching pack reader).
    let log = git(&remote.bare, &["log", "--name-status", "--no-renames", "--format=@%H", "main"]);
    let mut expected: Vec<(String, Vec<(String, char)>)> = Vec::new();
    for line in log.lines().filter(|l| !l.is_empty()) {
        match line.strip_prefix('@') {
            Some(sha) => expected.push((sha.to_owned(), Vec::new())),
            None => {
                let (kind, path) = line.split_once('\t').unwrap();
                expected.last_mut().unwrap().1.push((path.to_owned(), kind.chars().next().unwrap()));
            }
        }
    }
    let stored: Vec<(String, Vec<(String, char)>)> = all
        .iter()
        .map(|c| {
            let mut paths = c.paths.clone();
            paths.sort();
            (c.sha.clone(), paths)
        })
        .collect();
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(sha, mut paths)| {
            (sha, {
                paths.sort();
                paths
            })
        })
        .collect();
    assert_eq!(stored, expected);
    app.stop().await;
}

#[test]
fn add_mirrors_and_syncs_and_a_bad_clone_url_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = GitRemote::new(d, "upstream");
    remote.commit("b.txt", "b\n", "Second");
    remote.push("main");
    remote.checkout("release/1.0", true);
    remote.commit("c.txt", "c\n", "Release work");
    remote.push("release/1.0");

    let out = futurnal(
        d,
        &[
            "--json",
            "sources",
            "github",
            "add",
            "octo/up",
            "--clone-url",
            &remote.url(),
            "--branch",
            "main",
            "--branch",
            "release/*",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("recording commits"), "plain progress lines off a terminal: {}", out.stderr);
    let branches = futurnal(d, &["--json", "sources", "github", "branches", "octo/up"]).json();
    let names: Vec<&str> = branches.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["main", "release/1.0"]);
    for key in ["name", "head_sha", "synced_at"] {
        assert!(branches[0].get(key).is_some());
    }
    let commits = futurnal(d, &["--json", "sources", "github", "commits", "octo/up", "--branch", "release/1.0"]).json();
    let commits = commits.as_array().unwrap();
    assert_eq!(commits.len(), 3);
    assert_eq!(commits[0]["message"], "Release work");
    for key in [
        "sha",
        "parents",
        "author_name",
        "author_email",
        "authored_at",
        "committer_name",
        "committed_at",
        "message",
        "paths",
    ] {
        assert!(commits[0].get(key).is_some(), "commits lacks {key}");
    }
    let limited = futurnal(d, &["--json", "sources", "github", "commits", "octo/up", "--limit", "1"]).json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    for query in ["pulls", "issues", "releases"] {
        let out = futurnal(d, &["--json", "sources", "github", query, "octo/up"]);
        assert_eq!(out.code, 0, "{query}: {}", out.stderr);
        assert_eq!(out.json(), serde_json::json!([]));
    }

    // `sync` picks up what moved on the remote since, without any delivery.
    remote.checkout("main", false);
    let newest = remote.commit("d.txt", "d\n", "After add");
    remote.push("main");
    let synced = futurnal(d, &["sources", "github", "sync", "octo/up"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    let main =
        futurnal(d, &["--json", "sources", "github", "commits", "octo/up", "--branch", "main", "--limit", "1"]).json();
    assert_eq!(main[0]["sha"], newest.as_str());

    // A clone URL that does not exist: a clear error, nothing half-created.
    let out = futurnal(d, &["sources", "github", "add", "octo/nope", "--clone-url", "file:///nonexistent/repo.git"]);
    assert_eq!(out.code, 1);
    let last = out.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: failed to mirror"), "{}", out.stderr);
    let list = futurnal(d, &["--json", "sources", "github", "list"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(d.join("mirrors")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // remove deletes rows and the mirror.
    assert_eq!(futurnal(d, &["sources", "github", "remove", "octo/up"]).code, 0);
    assert_eq!(std::fs::read_dir(d.join("mirrors")).unwrap().count(), 0);
}

/// Every fetch adds a pack to the mirror and every lookup pays for each pack (measured:
/// 13 ms per push on a fresh mirror, 76 ms after 600 pushes); past 32 packs the mirror is
/// repacked in the background, and the history stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pushes_do_not_pile_up_packs_in_the_mirror() {
    let app = spawn_app(AppOptions::default()).await;
    let remote = remote_of(&app);
    let repo = tracked(&app).await;
    let mirror = app.dir.path().join("mirrors").join(format!("{}.git", repo.id));
    let mut expected = vec![remote.head()];
    let mut most = 0;
    for i in 0..45 {
        let before = remote.head();
        let after = remote.commit(&format!("f{}.txt", i % 5), &format!("{i}\n"), &format!("Push {i}"));
        remote.push("main");
        let id = push(&app, "refs/heads/main", &before, &after).await;
        app.wait_for_status(&id, DeliveryStatus::Done).await;
        expected.insert(0, after);
        most = most.max(futurnal::sync::git::pack_count(&mirror));
    }
    assert!(most >= futurnal::sync::git::MAX_PACKS, "the fetches did add packs ({most})");
    wait_until(Duration::from_secs(20), "the repack", || async {
        futurnal::sync::git::pack_count(&mirror) < most - 10
    })
    .await;
    // And the mirror still answers: one more push reads through the repacked packs.
    let before = remote.head();
    let after = remote.commit("last.txt", "last\n", "After the repack");
    remote.push("main");
    let id = push(&app, "refs/heads/main", &before, &after).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    expected.insert(0, after);
    assert_eq!(branch_shas(&app, "main").await, expected);
    let newest = &app.copy.commits(repo.id, Some("main".into()), 1).await.unwrap()[0];
    assert_eq!(newest.paths, vec![("last.txt".to_owned(), 'A')]);
    app.stop().await;
}
