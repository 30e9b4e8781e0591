//! The polling fallback against the fake GitHub and a local git remote: changes are
//! picked up within one interval, an unchanged repository costs no API quota, and a hook
//! deleted on GitHub sends the repository back to polling.

use std::time::Duration;

use futurnal::github::client::{GitHubClient, Token};
use futurnal::storage::copy::PullState;
use futurnal::storage::registry::RepoRef;
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
    let remote = GitRemote::existing(app.dir.path(), REPO);

    // No delivery at all: the poll finds the branch, its commit, and the pull request.
    let head = remote.head();
    wait_until(Duration::from_secs(10), "the first poll", || async {
        let commits = app.copy.commits(repo.id, Some("main".into()), 10).await.unwrap();
        let pulls = app.copy.pulls(repo.id, PullState::All, 10).await.unwrap();
        commits.first().is_some_and(|c| c.sha == head) && pulls.len() == 1
    })
    .await;

    // Nothing changes for a few intervals: requests are made, no quota is spent, and the
    // 304s apply nothing (read off the admin listener's metrics, as an operator would).
    let metric = |text: &str, name: &str| metric_in(text, name).unwrap_or_else(|| panic!("no {name}"));
    let scrape = || app.scrape_metrics();
    // The poll that applied the first changes counts them as it returns: start counting
    // after a later poll has finished.
    let first = metric(&scrape().await, "futurnal_polls_total");
    wait_until(Duration::from_secs(10), "a later poll", || async {
        metric(&scrape().await, "futurnal_polls_total") > first
    })
    .await;
    let before = scrape().await;
    let (requests, quota) = (fake.requests(), fake.quota_used());
    let polls_before = metric(&before, "futurnal_polls_total");
    wait_until(Duration::from_secs(10), "two more polls", || async {
        fake.requests() >= requests + 4 && metric(&scrape().await, "futurnal_polls_total") >= polls_before + 2.0
    })
    .await;
    assert_eq!(fake.quota_used(), quota, "304s and ls-remote cost no quota");
    let after = scrape().await;
    assert!(metric(&after, "futurnal_polls_total") >= metric(&before, "futurnal_polls_total") + 2.0, "{after}");
    assert_eq!(
        metric(&after, "futurnal_poll_effects_total"),
        metric(&before, "futurnal_poll_effects_total"),
        "unchanged polls (304s) re-apply nothing"
    );

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
    // The interval is 1 s; the margin is for a loaded two-core CI machine (3.3 s seen),
    // well below anything slower than polling (reconciles, the quiet window).
    assert!(started.elapsed() < Duration::from_secs(6), "within a few intervals: {:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_deleted_on_github_sends_the_repository_back_to_polling() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    let hook = fake.add_hook(REPO, &app.url(), Some("s3cret"), &["*"]);
    app.registry.set_hook(repo.id, Some(futurnal::storage::registry::HookRef::new(hook, app.url()))).await.unwrap();
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

/// Webhook mode means GitHub was heard from lately: a quiet repository's hook is asked for
/// pings, which keep it in webhook mode; when GitHub can no longer reach the receiver
/// (here: the hook's URL changed to a dead port on GitHub's side), the repository falls
/// back to polling, and it returns to webhook mode once pings arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_needs_recent_pings_or_deliveries() {
    // Four reconciles (each asks for a ping) fit in the window, so a slow ping on a loaded
    // machine does not end webhook mode.
    const QUIET_SECS: u64 = 8;
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let new_client = || GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    let client = new_client();
    let toml = format!("[poll]\ninterval_secs = 1\nreconcile_secs = 2\nwebhook_quiet_secs = {QUIET_SECS}\n");
    let app = spawn_app(AppOptions { toml, github: Some(new_client()), ..Default::default() }).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    let hook = fake.add_hook(REPO, &app.url(), Some("quiet-hook-secret"), &["*"]);
    std::fs::create_dir_all(app.dir.path().join("hook-secrets")).unwrap();
    std::fs::write(app.dir.path().join("hook-secrets").join(hook.to_string()), "quiet-hook-secret\n").unwrap();
    app.registry.set_hook(repo.id, Some(futurnal::storage::registry::HookRef::new(hook, app.url()))).await.unwrap();
    let quiet = Duration::from_secs(QUIET_SECS);
    let mode = || async { app.registry.find(RepoRef::Id(repo.id)).await.unwrap().unwrap().mode(quiet) };
    assert_eq!(mode().await, "polling", "a hook never heard from is not trusted yet");

    // The poller asks GitHub for a ping; it arrives, verified: webhook mode.
    wait_until(Duration::from_secs(15), "webhook mode after a ping", || async { mode().await == "webhook" }).await;
    // No events for longer than the quiet window: pings keep it in webhook mode.
    let until = std::time::Instant::now() + quiet + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(mode().await, "webhook", "a quiet but healthy hook stays in webhook mode");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pings = |log: &[serde_json::Value]| log.iter().filter(|d| d["event"] == "ping" && d["status"] == "OK").count();
    assert!(pings(&fake.deliveries(hook)) >= 2, "{:?}", fake.deliveries(hook));

    // GitHub can no longer reach us: back to polling within the quiet window.
    let path = format!("/repos/{REPO}/hooks/{hook}/config");
    client.patch(&path, json!({"url": "http://127.0.0.1:9/webhook/github"})).await.unwrap();
    wait_until(Duration::from_secs(30), "polling mode", || async { mode().await == "polling" }).await;
    assert!(fake.deliveries(hook).iter().any(|d| d["event"] == "ping" && d["status"] != "OK"), "a ping failed");

    // Reachable again: the next ping puts it back in webhook mode.
    client.patch(&path, json!({"url": app.url()})).await.unwrap();
    wait_until(Duration::from_secs(20), "webhook mode again", || async { mode().await == "webhook" }).await;
    app.stop().await;
}

/// `[poll.repositories]` gives one repository its own interval: with the default at an
/// hour, this one is still polled every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_can_have_its_own_polling_interval() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    let toml = "[poll]\ninterval_secs = 3600\n[poll.repositories]\n\"Octo/Hello\" = { interval_secs = 1 }\n";
    let app = spawn_app(AppOptions { toml: toml.into(), github: Some(client), ..Default::default() }).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    let remote = GitRemote::existing(app.dir.path(), REPO);
    let head = remote.head();
    wait_until(Duration::from_secs(10), "the first poll", || async {
        app.copy.commits(repo.id, Some("main".into()), 1).await.unwrap().first().is_some_and(|c| c.sha == head)
    })
    .await;
    let newer = remote.commit("q.txt", "q\n", "Between polls");
    remote.push("main");
    wait_until(Duration::from_secs(5), "the second poll, a second later", || async {
        app.copy.commits(repo.id, Some("main".into()), 1).await.unwrap().first().is_some_and(|c| c.sha == newer)
    })
    .await;
    app.stop().await;
}

/// More than a page of changes between polls (here: the first poll of a repository with
/// 250 pull requests and 150 issues): every page is read, nothing is left behind; later
/// polls read only what changed, and an unchanged list is one 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_beyond_the_first_page_are_all_picked_up() {
    use futurnal::storage::copy::IssueState;
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let stamp = |n: u64| format!("2026-03-{:02}T{:02}:{:02}:00Z", 1 + n / 600, (n / 60) % 10, n % 60);
    let pulls: Vec<_> = (1..=250).map(|n| pull(n, &format!("PR {n}"), &stamp(n))).collect();
    fake.set_pulls(REPO, pulls.clone());
    let issue = |n: u64, title: &str, at: &str| {
        json!({"number": 1000 + n, "title": title, "state": "open", "updated_at": at, "created_at": "2026-01-01T00:00:00Z",
               "user": {"login": "mona"}, "labels": [], "assignees": [], "comments": 0})
    };
    fake.set_issues(REPO, (1..=150).map(|n| issue(n, &format!("Issue {n}"), &stamp(n))).collect());
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    wait_until(Duration::from_secs(15), "every pull request and issue", || async {
        app.copy.pulls(repo.id, PullState::All, 1000).await.unwrap().len() == 250
            && app.copy.issues(repo.id, IssueState::All, 1000).await.unwrap().len() == 150
    })
    .await;

    // The oldest pull request changes: only it is newer than what the last poll saw, but
    // it comes first in the newest-updated order, so one page finds it.
    let mut changed = pulls;
    changed[0] = pull(1, "PR 1, edited", "2026-04-01T00:00:00Z");
    fake.set_pulls(REPO, changed);
    wait_until(Duration::from_secs(10), "the edit", || async {
        app.copy
            .pulls(repo.id, PullState::All, 1000)
            .await
            .unwrap()
            .iter()
            .any(|p| p.number == 1 && p.title == "PR 1, edited")
    })
    .await;

    // A restart goes on from what was read: its first poll reads one page of each list
    // (new ETags, so not 304s), not all five pages again; the reviews and review comments
    // of the one pull request at the watermark (updated when the last poll saw it); and the
    // labels and milestones (one page each).
    let dir = app.stop().await;
    let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    let toml = "[poll]\ninterval_secs = 3600\nreconcile_secs = 3600\n";
    let before = fake.requests();
    let app = spawn_app_in(dir, AppOptions { toml: toml.into(), github: Some(client), ..Default::default() }).await;
    let polls = || async {
        let text = app.client.get(format!("http://{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix("futurnal_polls_total")?.trim().parse::<u64>().ok()).unwrap()
    };
    wait_until(Duration::from_secs(10), "the first poll after the restart", || async { polls().await >= 1 }).await;
    assert_eq!(
        fake.requests() - before,
        6,
        "one page of pull requests and one of issues, PR 1's reviews and review comments, labels, milestones"
    );
    app.stop().await;
}

/// A review as the REST API lists it (upper-case state, no pull request number).
fn rest_review(id: u64, state: &str, submitted_at: Option<&str>) -> serde_json::Value {
    json!({
        "id": id, "node_id": format!("PRR_{id}"), "user": {"login": "octocat", "id": 1}, "body": format!("review {id}"),
        "state": state, "html_url": format!("https://github.com/octo/hello/pull/1#pullrequestreview-{id}"),
        "pull_request_url": "https://api.github.com/repos/octo/hello/pulls/1", "author_association": "MEMBER",
        "submitted_at": submitted_at, "commit_id": "b".repeat(40)
    })
}

fn rest_review_comment(id: u64, updated_at: &str) -> serde_json::Value {
    json!({
        "id": id, "pull_request_review_id": 10, "path": "src/lib.rs", "line": id % 50 + 1, "side": "RIGHT",
        "body": format!("comment {id}"), "user": {"login": "octocat"}, "created_at": "2026-02-01T00:00:00Z",
        "updated_at": updated_at, "in_reply_to_id": null, "diff_hunk": "@@ -1 +1 @@", "subject_type": "line"
    })
}

fn rest_label(id: u64, name: &str, color: &str) -> serde_json::Value {
    json!({"id": id, "node_id": format!("LA_{id}"), "name": name, "color": color, "description": null, "default": false})
}

fn rest_milestone(number: u64, state: &str, updated_at: &str) -> serde_json::Value {
    json!({
        "id": 500 + number, "number": number, "title": format!("v{number}"), "description": "the plan", "state": state,
        "open_issues": 1, "closed_issues": 2, "created_at": "2026-01-01T00:00:00Z", "updated_at": updated_at,
        "closed_at": if state == "closed" { json!(updated_at) } else { json!(null) }, "due_on": "2026-06-01T07:00:00Z"
    })
}

/// Polling fills reviews, review comments, labels and milestones, every page of them:
/// for each pull request changed since the last poll, its reviews and review comments;
/// and the repository's labels and milestones. An unchanged repository then costs no
/// quota at all; a change on a later page of a list (whose first page is unchanged) is
/// still seen, for one request's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_fills_reviews_review_comments_labels_and_milestones_and_an_idle_poll_costs_no_quota() {
    use futurnal::storage::copy::MilestoneState;
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    fake.set_pulls(REPO, vec![pull(1, "Reviewed", "2026-02-01T00:00:00Z"), pull(2, "Quiet", "2026-02-01T00:00:00Z")]);
    // Pull request 1: a review, another not submitted yet (only its author sees it), and
    // 150 review comments (two pages).
    let submitted = "2026-02-01T00:00:00Z";
    fake.set_reviews(REPO, 1, vec![rest_review(10, "APPROVED", Some(submitted)), rest_review(11, "PENDING", None)]);
    fake.set_review_comments(REPO, 1, (1..=150).map(|n| rest_review_comment(n, "2026-02-01T00:00:00Z")).collect());
    fake.set_reviews(REPO, 2, vec![]);
    fake.set_review_comments(REPO, 2, vec![]);
    // 120 labels (two pages), and milestones open and closed.
    let labels: Vec<_> = (1..=120).map(|n| rest_label(n, &format!("label-{n:03}"), "ededed")).collect();
    fake.set_labels(REPO, labels.clone());
    fake.set_milestones(
        REPO,
        vec![rest_milestone(1, "closed", "2026-01-05T00:00:00Z"), rest_milestone(2, "open", "2026-01-06T00:00:00Z")],
    );
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    wait_until(Duration::from_secs(15), "reviews, review comments, labels and milestones", || async {
        app.copy.reviews(repo.id, None, 100).await.unwrap().len() == 1
            && app.copy.review_comments(repo.id, Some(1), 1000).await.unwrap().len() == 150
            && app.copy.labels(repo.id, 1000).await.unwrap().len() == 120
            && app.copy.milestones(repo.id, MilestoneState::All, 100).await.unwrap().len() == 2
    })
    .await;
    let review = app.copy.reviews(repo.id, None, 100).await.unwrap().remove(0);
    assert_eq!((review.id, review.pull_number, review.state.as_str()), (10, 1, "approved"), "pending left out");
    assert_eq!(review.submitted_at, futurnal::time::parse_ms(submitted));
    let newest = app.copy.review_comments(repo.id, Some(1), 1).await.unwrap().remove(0);
    assert_eq!((newest.pull_number, newest.review_id, newest.side.as_deref()), (1, Some(10), Some("RIGHT")));
    let open = app.copy.milestones(repo.id, MilestoneState::Open, 100).await.unwrap();
    assert_eq!(open.iter().map(|m| m.number).collect::<Vec<_>>(), [2]);
    let changes = app.copy.changes(futurnal::storage::changes::ChangeFilter {
        since: 0,
        limit: 10_000,
        repository: None,
        kind: Some("label".into()),
    });
    let changes = changes.await.unwrap();
    assert_eq!(changes.len(), 120);
    assert!(changes.iter().all(|c| c.cause == "poll"));

    // Idle: polls go on, each page is asked for again, and GitHub answers 304 to all.
    let polls = || async { metric_in(&app.scrape_metrics().await, "futurnal_polls_total").unwrap() };
    let first = polls().await;
    wait_until(Duration::from_secs(10), "a later poll", || async { polls().await > first }).await;
    let (requests, quota, polled) = (fake.requests(), fake.quota_used(), polls().await);
    wait_until(Duration::from_secs(10), "two more polls", || async {
        polls().await >= polled + 2.0 && fake.requests() >= requests + 2 * 5
    })
    .await;
    assert_eq!(fake.quota_used(), quota, "an unchanged repository costs no quota");

    // A label on the second page changes: the first page still answers 304, and the
    // change is found for the one request that did not.
    let quota = fake.quota_used();
    let mut changed = labels;
    changed[119] = rest_label(120, "label-120", "ff0000");
    fake.set_labels(REPO, changed);
    let recolored = || async {
        let labels = app.copy.labels(repo.id, 1000).await.unwrap();
        labels.iter().any(|l| l.name == "label-120" && l.color.as_deref() == Some("ff0000"))
    };
    wait_until(Duration::from_secs(10), "the label on the second page", recolored).await;
    let polled = polls().await;
    wait_until(Duration::from_secs(10), "a poll after that", || async { polls().await > polled }).await;
    assert_eq!(fake.quota_used(), quota + 1, "only the changed page cost quota");

    // Pull request 2 changes (a review submitted moves its updated_at): its reviews are read.
    fake.set_reviews(REPO, 2, vec![rest_review(20, "CHANGES_REQUESTED", Some("2026-02-03T00:00:00Z"))]);
    fake.set_pulls(REPO, vec![pull(1, "Reviewed", "2026-02-01T00:00:00Z"), pull(2, "Quiet", "2026-02-03T00:00:00Z")]);
    wait_until(Duration::from_secs(10), "the new review", || async {
        app.copy.reviews(repo.id, Some(2), 10).await.unwrap().iter().any(|r| r.state == "changes_requested")
    })
    .await;
    app.stop().await;
}

/// A poll that fails after some of its lists answered (here: the milestones, last) stores
/// nothing, and forgets what those lists' ETags said: the next poll reads them again
/// instead of taking a 304 for "nothing changed" and losing what was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_fails_part_way_reads_the_lists_again_next_time() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    fake.set_pulls(REPO, vec![pull(1, "First", "2026-02-01T00:00:00Z")]);
    fake.fail_next_request_to(&format!("/repos/{REPO}/milestones"), 403);
    let app = app_polling(&fake).await;
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    wait_until(Duration::from_secs(15), "the pull request, after the failed poll", || async {
        !app.copy.pulls(repo.id, PullState::All, 10).await.unwrap().is_empty()
    })
    .await;
    app.stop().await;
}
