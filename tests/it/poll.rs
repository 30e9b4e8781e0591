//! The polling fallback against the fake GitHub and a local git remote: changes are
//! picked up within one interval, an unchanged repository costs no API quota, and a hook
//! deleted on GitHub sends the repository back to polling.

use std::time::Duration;

use futurnal::github::client::{GitHubClient, Token};
use futurnal::store::copy::PullState;
use futurnal::store::RepoRef;
use serde_json::json;

use crate::fake_github::FakeGitHub;
use crate::helpers::*;

const REPO: &str = "octo/hello";
const FAST: &str = "[poll]\ninterval_secs = 1\nreconcile_secs = 1\n";

fn pull(number: u64, title: &str, updated_at: &str) -> serde_json::Value {
    json!({
        "number": number, "title": title, "state": "open", "updated_at": updated_at, "created_at": "2026-01-01T00:00:00Z",
        "user": {"login": "mona"}, "labels": [], "assignees": [],
        "base": {"ref": "main", "sha": "a".repeat(40)}, "head": {"ref": "feature", "sha": "b".repeat(40)}
    })
}

async fn app_polling(fake: &FakeGitHub) -> TestApp {
    let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    spawn_app(AppOptions { toml: FAST.into(), github: Some(client), ..Default::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_commits_and_pull_requests_and_costs_no_quota_when_nothing_changes() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    fake.set_pulls(REPO, vec![pull(1, "First", "2026-02-01T00:00:00Z")]);
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    let remote =
        GitRemote { bare: app.dir.path().join("remotes/octo_hello.git"), work: app.dir.path().join("work/octo_hello") };

    // No delivery at all: the poll finds the branch, its commit, and the pull request.
    let head = remote.head();
    wait_until(Duration::from_secs(10), "the first poll", || async {
        let commits = app.copy.commits(repo.id, Some("main".into()), 10).await.unwrap();
        let pulls = app.copy.pulls(repo.id, PullState::All, 10).await.unwrap();
        commits.first().is_some_and(|c| c.sha == head) && pulls.len() == 1
    })
    .await;

    // Nothing changes for a few intervals: requests are made, no quota is spent.
    let (requests, quota) = (fake.requests(), fake.quota_used());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(fake.requests() >= requests + 4, "the poller kept asking");
    assert_eq!(fake.quota_used(), quota, "304s and ls-remote cost no quota");

    // A push and an edited pull request, without any webhook: picked up within an interval.
    let newer = remote.commit("p.txt", "p\n", "Pushed while webhooks were down");
    remote.push("main");
    fake.set_pulls(REPO, vec![pull(1, "First, edited", "2026-02-02T00:00:00Z")]);
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "the change to be polled", || async {
        let commits = app.copy.commits(repo.id, Some("main".into()), 1).await.unwrap();
        let pulls = app.copy.pulls(repo.id, PullState::All, 10).await.unwrap();
        commits.first().is_some_and(|c| c.sha == newer) && pulls[0].title == "First, edited"
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(3), "within about one interval: {:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_deleted_on_github_sends_the_repository_back_to_polling() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    let hook = fake.add_hook(REPO, &app.url(), Some("s3cret"), &["*"]);
    app.registry.set_hook(repo.id, Some(futurnal::store::HookRef::new(hook, app.url()))).await.unwrap();
    assert_eq!(app.registry.find(RepoRef::Id(repo.id)).await.unwrap().unwrap().mode, "webhook");

    assert!(fake.delete_hook(REPO, hook));
    wait_until(Duration::from_secs(10), "the fall back to polling", || async {
        let now = app.registry.find(RepoRef::Id(repo.id)).await.unwrap().unwrap();
        now.mode == "polling" && now.hook_id.is_none()
    })
    .await;
    // And a change made on GitHub is picked up by the next poll.
    fake.set_pulls(REPO, vec![pull(5, "Made while the hook was gone", "2026-03-01T00:00:00Z")]);
    wait_until(Duration::from_secs(10), "the pull request", || async {
        app.copy.pulls(repo.id, PullState::All, 10).await.unwrap().iter().any(|p| p.number == 5)
    })
    .await;
    app.stop().await;
}
