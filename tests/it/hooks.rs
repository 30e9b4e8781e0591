//! `webhook enable`, `disable` and `status` against the fake GitHub, with the receiver
//! running: the hook is created once, updated on a second enable, pinged, and deliveries
//! GitHub really sends are verified with the hook's own secret and processed.

use std::path::Path;
use std::time::Duration;

use futurnal::storage::queue::DeliveryStatus;
use serde_json::json;

use futurnal::github::client::{GitHubClient, Token};

use crate::fake_github::{FakeGitHub, FakeNgrok, FakeSmee};
use crate::helpers::*;

const REPO: &str = "octo/hello";

fn futurnal_with(dir: &Path, api: &str, token: &str, args: &[&str]) -> CliOutput {
    futurnal_with_toml(dir, api, token, "", args)
}

fn futurnal_with_toml(dir: &Path, api: &str, token: &str, extra_toml: &str, args: &[&str]) -> CliOutput {
    let config = dir.join("cli.toml");
    write_config(dir, &config, &format!("[webhook]\nallow_loopback_hook_urls = true\n{extra_toml}"));
    let output = bin_in(dir)
        .arg("--config")
        .arg(&config)
        .args(["--github-api-url", api])
        .env("GITHUB_TOKEN", token)
        .env_remove("GH_TOKEN")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `futurnal_with` off the async threads (the daemon under test shares the runtime).
pub(crate) async fn cli(dir: &Path, api: &str, args: &[&str]) -> CliOutput {
    // The dir's PostgreSQL schema (in that run) belongs to the test's thread, not the blocking one.
    crate::pg_mode::schema_for(dir);
    let (dir, api) = (dir.to_owned(), api.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        futurnal_with(&dir, &api, "test-token", &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_creates_once_pings_delivers_and_disable_returns_to_polling() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = spawn_app(AppOptions::default()).await;
    let dir = app.dir.path().to_owned();
    let api = fake.url();
    let url = app.url();

    let first =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let enabled = first.json();
    assert_eq!(enabled["created"], true);
    assert_eq!(enabled["ping_received"], true, "{enabled}");
    let secret = fake.hooks(REPO)[0].secret.clone().expect("the hook has a secret");
    assert_eq!(secret.len(), 64);
    assert!(!first.stdout.contains(&secret) && !first.stderr.contains(&secret), "the secret is never printed");
    let hook_id = enabled["hook_id"].as_u64().unwrap();

    // Enabling again updates the same hook: never a duplicate.
    let second =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.json()["created"], false);
    assert_eq!(fake.hooks(REPO).len(), 1);
    assert_eq!(second.json()["hook_id"].as_u64(), Some(hook_id));

    // A delivery GitHub sends, signed with the hook's (new) secret, is accepted and applied.
    let issue = json!({
        "action": "opened",
        "issue": {"number": 12, "title": "From the fake", "state": "open", "updated_at": "2026-05-01T00:00:00Z", "user": {"login": "mona"}}
    });
    let guids = fake.trigger(REPO, "issues", issue).await;
    assert_eq!(guids.len(), 1);
    let record = app.wait_for_status(&guids[0], DeliveryStatus::Done).await;
    assert_eq!(record.hook_id, Some(hook_id));
    let log = fake.deliveries(hook_id);
    assert!(log.iter().any(|d| d["guid"] == guids[0].as_str() && d["status"] == "OK"), "{log:?}");

    let status = cli(&dir, &api, &["--json", "sources", "github", "webhook", "status", REPO]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let row = &status.json()[0];
    assert_eq!(row["mode"], "webhook");
    assert_eq!(row["hook_id"].as_u64(), Some(hook_id));
    assert_eq!(row["active"], true);
    assert!(row["last_ping_at"].is_string(), "{row}");
    for key in ["repository", "url", "last_delivery_at", "failures", "queue_depth"] {
        assert!(row.get(key).is_some(), "status lacks {key}");
    }

    let disabled = cli(&dir, &api, &["sources", "github", "webhook", "disable", REPO]).await;
    assert_eq!(disabled.code, 0, "{}", disabled.stderr);
    assert!(fake.hooks(REPO).is_empty());
    assert!(!dir.join("hook-secrets").join(hook_id.to_string()).exists());
    let status = cli(&dir, &api, &["--json", "sources", "github", "webhook", "status", REPO]).await;
    assert_eq!(status.json()[0]["mode"], "polling");
    app.stop().await;
}

/// A hook made before futurnal handled reviews, labels and milestones (or narrowed by
/// hand) gets every event futurnal handles on the next `enable`, the new ones included,
/// and GitHub's deliveries of them are then processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_again_subscribes_an_existing_hook_to_every_handled_event() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = spawn_app(AppOptions::default()).await;
    let (dir, api, url) = (app.dir.path().to_owned(), fake.url(), app.url());
    let old = fake.add_hook(REPO, &url, Some("an-old-secret"), &["push", "pull_request", "issues"]);

    let out = cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.json()["created"].as_bool(), out.json()["hook_id"].as_u64()), (Some(false), Some(old)));
    let mut events = fake.hooks(REPO)[0].events.clone();
    events.sort();
    let mut expected: Vec<String> = futurnal_github::WebhookEventType::HANDLED
        .iter()
        .filter(|e| e.as_str() != "ping")
        .map(|e| e.as_str().to_owned())
        .collect();
    expected.sort();
    assert_eq!(events, expected);
    for event in ["pull_request_review", "pull_request_review_comment", "label", "milestone"] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }

    // GitHub now sends a label event, signed with the new secret: processed.
    let label: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/label/created.payload.json")).unwrap()).unwrap();
    let guids = fake.trigger(REPO, "label", label).await;
    assert_eq!(guids.len(), 1);
    app.wait_for_status(&guids[0], DeliveryStatus::Done).await;
    let repo = app.registry.find(futurnal::storage::registry::RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    assert_eq!(app.copy.labels(repo.id, 10).await.unwrap()[0].name, ":bug: Bugfix");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_one_clear_line() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let remote = GitRemote::new(&d, "hello");
    assert_eq!(futurnal(&d, &["sources", "github", "add", REPO, "--clone-url", &remote.url()]).code, 0);
    assert_eq!(futurnal(&d, &["sources", "github", "add", "octo/missing", "--no-sync"]).code, 0);
    let api = fake.url();
    let run = move |token: &'static str, args: Vec<&'static str>| {
        let (d, api) = (d.clone(), api.clone());
        tokio::task::spawn_blocking(move || futurnal_with(&d, &api, token, &args))
    };
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "wrong-token",
            vec!["sources", "github", "webhook", "enable", REPO, "--public-url", "http://127.0.0.1:9/webhook/github"],
            "401 Bad credentials",
        ),
        (
            "test-token",
            vec![
                "sources",
                "github",
                "webhook",
                "enable",
                "octo/missing",
                "--public-url",
                "http://127.0.0.1:9/webhook/github",
            ],
            "404",
        ),
        ("test-token", vec!["sources", "github", "webhook", "disable", REPO], "no webhook enabled"),
    ];
    for (token, args, expected) in cases {
        let out = run(token, args.clone()).await.unwrap();
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        let line = out.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
        assert!(line.starts_with("error: ") && line.contains(expected), "{args:?}: {line}");
        assert!(!line.contains("wrong-token") && !line.contains("test-token"), "token leaked: {line}");
    }
    // GitHub refusing the hook (422): GitHub's own reason, on one line.
    fake.allow_loopback_hooks(false);
    let out = run(
        "test-token",
        vec!["sources", "github", "webhook", "enable", REPO, "--public-url", "http://127.0.0.1:9/webhook/github"],
    )
    .await
    .unwrap();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("422") && line.contains("isn't reachable over the public Internet"), "{line}");
    // A loopback URL is refused before any request when loopback hooks are not allowed.
    let before = fake.requests();
    let out = futurnal(
        dir.path(),
        &["sources", "github", "webhook", "enable", REPO, "--public-url", "http://localhost:8765"],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--tunnel"), "{}", out.stderr);
    assert_eq!(fake.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_redelivers_exactly_what_was_missed_while_the_receiver_was_down() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = spawn_app(AppOptions::default()).await;
    let (dir, api, url, listen) = (app.dir.path().to_owned(), fake.url(), app.url(), app.webhook);
    let enabled =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    // One delivery arrives while the receiver is up.
    let arrived = fake.trigger(REPO, "issues", issue_payload(1)).await;
    app.wait_for_status(&arrived[0], DeliveryStatus::Done).await;

    // The receiver goes down; GitHub sends three more, which fail to connect.
    let kept = app.stop().await;
    let mut missed = Vec::new();
    for n in 2..5 {
        missed.extend(fake.trigger(REPO, "issues", issue_payload(n)).await);
    }
    assert_eq!(missed.len(), 3);
    assert!(fake.deliveries(hook_id).iter().filter(|d| d["status_code"] == 0).count() == 3);

    // Back up on the same address: catch-up asks for exactly those three.
    let app = spawn_app_in(kept, AppOptions { listen: Some(listen), track: vec![], ..Default::default() }).await;
    let catch_up = ["--json", "sources", "github", "webhook", "catch-up", REPO];
    let out = cli(&dir, &api, &catch_up).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut redelivered: Vec<String> =
        out.json()[0]["redelivered"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()).collect();
    redelivered.sort();
    missed.sort();
    assert_eq!(redelivered, missed);
    for guid in &missed {
        app.wait_for_status(guid, DeliveryStatus::Done).await;
    }
    // Nothing is asked twice.
    let again = cli(&dir, &api, &catch_up).await;
    assert_eq!(again.json()[0]["redelivered"], json!([]));
    app.stop().await;
}

/// Every delivery of the hook that reached the receiver, with the answer it got.
fn answered(fake: &FakeGitHub, hook_id: u64) -> Vec<(String, u64)> {
    fake.deliveries(hook_id)
        .iter()
        .filter(|d| d["status_code"] != 0)
        .map(|d| (d["event"].as_str().unwrap().to_owned(), d["status_code"].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_github_sends_when_it_creates_the_hook_is_accepted() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    // As GitHub: a new hook is pinged the moment it exists, signed with the new secret.
    fake.ping_on_create(true);
    let app = spawn_app(AppOptions::default()).await;
    let (dir, api, url) = (app.dir.path().to_owned(), fake.url(), app.url());
    let enabled =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    assert_eq!(enabled.json()["ping_received"], true);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    // The creation ping (sent in the background) and the one `enable` asked for.
    wait_until(Duration::from_secs(10), "both pings answered", || async { answered(&fake, hook_id).len() == 2 }).await;
    assert_eq!(answered(&fake, hook_id), vec![("ping".to_owned(), 200), ("ping".to_owned(), 200)]);
    // The pending secret is gone; the hook's own file has it.
    let names: Vec<String> = std::fs::read_dir(dir.join("hook-secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, vec![hook_id.to_string()]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_every_delivery_verifies_and_catch_up_asks_once_for_each_missed_one() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    fake.ping_on_create(true);
    let client = || Some(GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap());
    let app = spawn_app(AppOptions::default()).await;
    let (dir, api, url, listen) = (app.dir.path().to_owned(), fake.url(), app.url(), app.webhook);
    let enabled =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    wait_until(Duration::from_secs(10), "both pings answered", || async { answered(&fake, hook_id).len() == 2 }).await;

    // Down: three deliveries and a ping fail to connect.
    let kept = app.stop().await;
    let mut missed = Vec::new();
    for n in 2..5 {
        missed.extend(fake.trigger(REPO, "issues", issue_payload(n)).await);
    }
    futurnal::github::hooks::ping(&client().unwrap(), REPO, hook_id).await.unwrap();
    assert_eq!(fake.deliveries(hook_id).iter().filter(|d| d["status_code"] == 0).count(), 4);

    // Up again: serve's own catch-up at start, and a CLI catch-up while the redeliveries
    // it asked for are still on their way (GitHub sends them a little later).
    fake.hold_redeliveries();
    let app = spawn_app_in(kept, AppOptions { listen: Some(listen), github: client(), ..Default::default() }).await;
    let right_after = fake.trigger(REPO, "issues", issue_payload(5)).await;
    wait_until(Duration::from_secs(10), "serve's catch-up to ask", || async { fake.redelivery_requests() == 3 }).await;
    let catch_up = cli(&dir, &api, &["--json", "sources", "github", "webhook", "catch-up", REPO]).await;
    assert_eq!(catch_up.code, 0, "{}", catch_up.stderr);
    assert_eq!(catch_up.json()[0]["already_asked"], 3, "{}", catch_up.stdout);
    fake.release_redeliveries().await;
    assert_eq!(fake.redelivery_requests(), 3);
    for guid in missed.iter().chain(&right_after) {
        app.wait_for_status(guid, DeliveryStatus::Done).await;
    }
    let again = cli(&dir, &api, &["--json", "sources", "github", "webhook", "catch-up", REPO]).await;
    assert_eq!(again.json()[0]["redelivered"], json!([]), "{}", again.stdout);

    // GitHub was asked once for each missed delivery, never for the ping, and refused nothing.
    let mut redelivered: Vec<String> = fake
        .deliveries(hook_id)
        .iter()
        .filter(|d| d["redelivery"] == true)
        .map(|d| d["guid"].as_str().unwrap().to_owned())
        .collect();
    redelivered.sort();
    missed.sort();
    assert_eq!(redelivered, missed);
    let refused: Vec<_> = answered(&fake, hook_id).into_iter().filter(|(_, code)| !(200..300).contains(code)).collect();
    assert!(refused.is_empty(), "{refused:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_refuses_nothing_in_flight_then_drops_the_old_one() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let app = spawn_app(AppOptions::default()).await;
    let (dir, api, url) = (app.dir.path().to_owned(), fake.url(), app.url());
    let enabled =
        cli(&dir, &api, &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &url]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    let old = fake.hooks(REPO)[0].secret.clone().unwrap();

    let rotated = cli(&dir, &api, &["sources", "github", "webhook", "rotate-secret", REPO]).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let new = fake.hooks(REPO)[0].secret.clone().unwrap();
    assert_ne!(old, new);

    // A delivery GitHub signed with the old secret just before the switch: accepted.
    let signed_with = |secret: String| {
        let mut d = Delivery::new("issues", serde_json::to_vec(&with_repo(issue_payload(7))).unwrap());
        d.hook_id = Some(hook_id);
        d.secret = Some(Box::leak(secret.into_boxed_str()));
        d
    };
    assert_eq!(app.post(signed_with(old.clone())).await.0, 202, "in flight under the old secret");
    // GitHub now signs with the new one; once seen, the old one is dropped.
    let guids = fake.trigger(REPO, "issues", issue_payload(8)).await;
    app.wait_for_status(&guids[0], DeliveryStatus::Done).await;
    wait_until(Duration::from_secs(10), "the old secret to be dropped", || {
        let d = signed_with(old.clone());
        let app = &app;
        async move { app.post(d).await.0 == 401 }
    })
    .await;
    assert_eq!(app.post(signed_with(new.clone())).await.0, 202);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ngrok_tunnel_url_is_used_and_followed_when_it_changes() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let ngrok = FakeNgrok::start("https://first.ngrok.app", "http://localhost:8765").await;
    let tunnel = format!("[tunnel]\nngrok_api_url = \"{}\"\ncheck_secs = 1\n", ngrok.url());
    let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    let app = spawn_app(AppOptions { toml: tunnel.clone(), github: Some(client), ..Default::default() }).await;
    let (dir, api) = (app.dir.path().to_owned(), fake.url());
    let out = tokio::task::spawn_blocking(move || {
        futurnal_with_toml(
            &dir,
            &api,
            "test-token",
            &tunnel,
            &["--json", "sources", "github", "webhook", "enable", REPO, "--tunnel", "ngrok"],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["url"], "https://first.ngrok.app/webhook/github");
    assert_eq!(fake.hooks(REPO)[0].url, "https://first.ngrok.app/webhook/github");

    // The agent restarts with a new URL: the daemon updates the hook by itself.
    ngrok.set_public_url("https://second.ngrok.app");
    let second = "https://second.ngrok.app/webhook/github";
    wait_until(Duration::from_secs(10), "the hook and its record to follow the tunnel", || async {
        let recorded =
            app.registry.find(futurnal::storage::registry::RepoRef::Name(REPO.into())).await.unwrap().unwrap();
        fake.hooks(REPO)[0].url == second && recorded.hook_url.as_deref() == Some(second)
    })
    .await;
    assert!(fake.hooks(REPO)[0].secret.is_some(), "the secret survives the URL change");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smee_channel_is_forwarded_and_re_serialized_bodies_that_no_longer_verify_are_refused() {
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let smee = FakeSmee::start().await;
    let app = spawn_app(AppOptions { toml: "[tunnel]\ncheck_secs = 1\n".into(), ..Default::default() }).await;
    let (dir, api, channel) = (app.dir.path().to_owned(), fake.url(), smee.channel_url());
    let out = cli(
        &dir,
        &api,
        &["--json", "sources", "github", "webhook", "enable", REPO, "--tunnel", "smee", "--smee-url", &channel],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let enabled = out.json();
    assert_eq!(enabled["url"], smee.channel_url().as_str());
    assert_eq!(enabled["ping_received"], true, "the ping came through the channel: {enabled}");
    let secret = fake.hooks(REPO)[0].secret.clone().unwrap();

    // Signed over the compact body the forwarder re-creates: verified and processed.
    let payload = with_repo(issue_payload(21));
    let compact = serde_json::to_vec(&payload).unwrap();
    let good = new_id();
    smee.send("issues", &good, payload.clone(), Some(signature(&secret, &compact)));
    app.wait_for_status(&good, DeliveryStatus::Done).await;
    // Signed over bytes smee did not keep (pretty-printed): refused, never stored.
    let pretty = serde_json::to_vec_pretty(&payload).unwrap();
    let bad = new_id();
    smee.send("issues", &bad, payload, Some(signature(&secret, &pretty)));
    let marker = new_id();
    let marker_payload = with_repo(issue_payload(22));
    smee.send(
        "issues",
        &marker,
        marker_payload.clone(),
        Some(signature(&secret, &serde_json::to_vec(&marker_payload).unwrap())),
    );
    app.wait_for_status(&marker, DeliveryStatus::Done).await;
    assert!(app.delivery(&bad).await.is_none(), "a body whose signature no longer matches is refused");
    app.stop().await;
}

fn with_repo(mut payload: serde_json::Value) -> serde_json::Value {
    payload["repository"] = json!({"id": 4242, "full_name": REPO, "name": "hello"});
    payload
}

fn issue_payload(number: u64) -> serde_json::Value {
    json!({
        "action": "opened",
        "issue": {"number": number, "title": format!("Issue {number}"), "state": "open",
                  "updated_at": "2026-05-01T00:00:00Z", "user": {"login": "mona"}}
    })
}

mod client {
    use std::time::{Duration, Instant};

    use futurnal::github::client::{Conditional, GitHubClient, Token};
    use serde_json::json;

    use crate::fake_github::FakeGitHub;

    async fn setup() -> (FakeGitHub, GitHubClient) {
        let fake = FakeGitHub::start().await;
        fake.add_repo("octo/hello", 4242);
        let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
        (fake, client)
    }

    /// Under paused time: the fake and the client share this test's runtime, and tokio
    /// advances the clock only when every task waits on a timer, so the client's wait for
    /// the reset takes no real time, and a busy loop would show as extra requests.
    #[tokio::test(start_paused = true)]
    async fn an_exhausted_rate_limit_is_waited_out_not_failed_and_not_busy_looped() {
        let (fake, client) = setup().await;
        let now = fake.use_tokio_clock();
        fake.set_rate_limit(0, now + 120);
        let (virtual_start, real_start) = (tokio::time::Instant::now(), Instant::now());
        let repo = client.get("/repos/octo/hello").await.expect("waited, not failed");
        assert_eq!(repo["id"], 4242);
        let waited = virtual_start.elapsed();
        assert!(
            waited >= Duration::from_secs(119) && waited <= Duration::from_secs(125),
            "waited {waited:?} for the reset"
        );
        assert!(real_start.elapsed() < Duration::from_secs(5), "paused time: the wait cost no real time");
        assert_eq!(fake.requests(), 2, "one refused request, then one after the reset: no busy loop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secondary_limits_and_server_errors_are_retried() {
        let (fake, client) = setup().await;
        fake.fail_next_with_retry_after(429, 1);
        let started = Instant::now();
        assert_eq!(client.get("/repos/octo/hello").await.unwrap()["full_name"], "octo/hello");
        assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After honoured");
        fake.fail_next_with_status(502);
        assert_eq!(client.get("/repos/octo/hello").await.unwrap()["id"], 4242);
        assert_eq!(fake.requests(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_requests_cost_no_quota_and_pages_are_followed() {
        let (fake, client) = setup().await;
        let pulls: Vec<_> = (1..=120)
            .map(|n| json!({"number": n, "title": format!("PR {n}"), "state": "open", "updated_at": "2026-01-01T00:00:00Z"}))
            .collect();
        fake.set_pulls("octo/hello", pulls);
        let all = client.get_all("/repos/octo/hello/pulls?state=all&per_page=50").await.unwrap();
        assert_eq!(all.len(), 120);
        let path = "/repos/octo/hello/pulls?state=all&per_page=100";
        assert!(matches!(client.get_conditional(path).await.unwrap(), Conditional::Modified(_)));
        let quota = fake.quota_used();
        assert_eq!(client.get_conditional(path).await.unwrap(), Conditional::NotModified);
        assert_eq!(fake.quota_used(), quota, "a 304 costs no quota");
        fake.set_pulls("octo/hello", vec![]);
        assert!(matches!(client.get_conditional(path).await.unwrap(), Conditional::Modified(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_one_line_with_githubs_message_and_no_token() {
        let (fake, _) = setup().await;
        let bad = GitHubClient::new(&fake.url(), Some(Token::new("nope-secret-token"))).unwrap();
        let err = bad.get("/repos/octo/hello").await.unwrap_err().to_string();
        assert!(err.contains("401 Bad credentials") && !err.contains("nope-secret-token"), "{err}");
        let client = GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
        let err = client.get("/repos/octo/nothing").await.unwrap_err().to_string();
        assert!(err.contains("404") && err.contains("check OWNER/NAME"), "{err}");
        assert!(!err.contains('\n'));
        let none = GitHubClient::new(&fake.url(), None).unwrap();
        assert!(none.get("/repos/octo/hello").await.unwrap_err().to_string().contains("GITHUB_TOKEN"));
    }
}
