//! The dashboard's JSON API (`docs/dashboard-api.md`) against the real server: overview
//! charts from the activity counts, repositories, deliveries filtered and paged, a
//! delivery's page with its payload, attempts and changes, replaying a filtered set, and
//! the local copy per repository. On every backend of the run.

use std::time::Duration;

use futurnal::storage::queue::DeliveryStatus;
use serde_json::Value;

use crate::helpers::*;

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.client.get(format!("http://{}{path}", app.admin)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn csrf(app: &TestApp) -> String {
    get(app, "/api/csrf").await.1["token"].as_str().unwrap().to_owned()
}

async fn post(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.client.post(format!("http://{}{path}", app.admin));
    if let Some(token) = token {
        request = request.header("x-futurnal-csrf", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|d| d["delivery_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_filter_page_and_open_with_payload_attempts_and_changes_and_the_dead_replay() {
    let app = spawn_app(AppOptions {
        toml: "[workers]\nretry_base_ms = 10\nretry_cap_ms = 20\nmax_attempts = 2\n".into(),
        ..Default::default()
    })
    .await;
    // Three issues (done, each a change), then a push whose remote is gone (dead after two attempts).
    let mut issue_ids = Vec::new();
    for n in 1..=3 {
        let d = Delivery::new("issues", issue_payload(n, &format!("<img src=x onerror=alert({n})>")));
        issue_ids.push(d.id.clone());
        assert_eq!(app.post(d).await.0, 202);
    }
    for id in &issue_ids {
        app.wait_for_status(id, DeliveryStatus::Done).await;
    }
    let bare = GitRemote::existing(app.dir.path(), "octo/hello").bare;
    let away = bare.with_extension("away");
    std::fs::rename(&bare, &away).unwrap();
    let push = Delivery::new("push", push_body("octo/hello", 4242));
    let push_id = push.id.clone();
    assert_eq!(app.post(push).await.0, 202);
    let dead = app.wait_for_status(&push_id, DeliveryStatus::Dead).await;
    assert_eq!(dead.attempts, 2);

    // Filters.
    let (status, all) = get(&app, "/api/deliveries").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all).len(), 4);
    let (_, pushes) = get(&app, "/api/deliveries?event=push").await;
    assert_eq!(ids(&pushes), std::slice::from_ref(&push_id));
    let (_, opened) = get(&app, "/api/deliveries?event=issues&action=opened&status=done").await;
    assert_eq!(ids(&opened).len(), 3);
    let (_, dead_list) = get(&app, "/api/deliveries?status=dead&repository=octo/hello").await;
    assert_eq!(ids(&dead_list), std::slice::from_ref(&push_id));
    let (_, by_prefix) = get(&app, &format!("/api/deliveries?q={}", &issue_ids[1][..8])).await;
    assert_eq!(ids(&by_prefix), [issue_ids[1].clone()]);
    let (_, none_yet) = get(&app, "/api/deliveries?until=2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&none_yet).len(), 0);
    let (_, recent) = get(&app, "/api/deliveries?since=2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&recent).len(), 4);
    let (status, bad) = get(&app, "/api/deliveries?since=yesterday").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("RFC 3339"));
    let (status, _) = get(&app, "/api/deliveries?status=lost").await;
    assert_eq!(status, 400);
    // Paging through all of them, two at a time, newest first.
    let (_, first) = get(&app, "/api/deliveries?limit=2").await;
    let last = ids(&first).pop().unwrap();
    let (_, second) = get(&app, &format!("/api/deliveries?limit=2&before={last}")).await;
    let mut paged = ids(&first);
    paged.extend(ids(&second));
    assert_eq!(paged, ids(&all));

    // A delivery's page: kept headers, the payload as sent, every attempt, its changes.
    let (status, page) = get(&app, &format!("/api/deliveries/{}", issue_ids[0])).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["delivery"]["status"], "done");
    assert_eq!(page["headers"]["x-github-event"], "issues");
    assert_eq!(page["headers"]["x-github-delivery"], issue_ids[0].as_str());
    assert_eq!(page["payload"]["issue"]["title"], "<img src=x onerror=alert(1)>");
    assert_eq!(page["payload_bytes"].as_u64(), Some(issue_payload(1, "<img src=x onerror=alert(1)>").len() as u64));
    let attempts = page["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{page}");
    assert_eq!((attempts[0]["attempt"].as_u64(), attempts[0]["outcome"].as_str()), (Some(1), Some("done")));
    assert!(attempts[0]["worker"].is_string() && attempts[0]["started_at"].is_string(), "{page}");
    assert!(attempts[0]["took_ms"].as_i64().is_some_and(|ms| (0..10_000).contains(&ms)), "{page}");
    let changes = page["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["key"] == "issue#1" && c["cause"] == issue_ids[0].as_str()), "{page}");

    let (_, dead_page) = get(&app, &format!("/api/deliveries/{push_id}")).await;
    let attempts = dead_page["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "dead"], "{dead_page}");
    assert!(attempts.iter().all(|a| a["error"].as_str().is_some_and(|e| !e.is_empty())), "{dead_page}");
    assert_eq!(dead_page["changes"].as_array().unwrap().len(), 0);
    let (status, _) = get(&app, "/api/deliveries/no-such-delivery").await;
    assert_eq!(status, 404);

    // Replaying the dead ones of the repository: CSRF first, then a status is required.
    let (status, _) = post(&app, "/api/deliveries/replay?status=dead", None).await;
    assert_eq!(status, 403);
    let token = csrf(&app).await;
    let (status, body) = post(&app, "/api/deliveries/replay?repository=octo/hello", Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    // The remote is back: the replayed push goes through.
    std::fs::rename(&away, &bare).unwrap();
    let (status, body) = post(&app, "/api/deliveries/replay?repository=octo/hello&status=dead", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 1);
    app.wait_for_status(&push_id, DeliveryStatus::Done).await;
    let (_, replayed) = get(&app, &format!("/api/deliveries/{push_id}")).await;
    let outcomes: Vec<&str> =
        replayed["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "dead", "done"], "{replayed}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_what_arrived_and_what_was_processed_and_survive_a_restart() {
    let app = spawn_app(AppOptions::default()).await;
    let mut sent = Vec::new();
    for n in 1..=3 {
        let d = Delivery::new("issues", issue_payload(n, "chart"));
        sent.push(d.id.clone());
        assert_eq!(app.post(d).await.0, 202);
    }
    // Refused (bad signature) and a duplicate.
    let mut forged = Delivery::new("issues", issue_payload(9, "forged"));
    forged.secret = Some("wrong");
    assert_eq!(app.post(forged).await.0, 401);
    let mut again = Delivery::new("issues", issue_payload(1, "chart"));
    again.id = sent[0].clone();
    assert_eq!(app.post(again).await.0, 200);
    for id in &sent {
        app.wait_for_status(id, DeliveryStatus::Done).await;
    }
    let totals = |overview: &Value| {
        let buckets = overview["charts"]["hour"]["buckets"].as_array().unwrap().clone();
        let sum = |group: &str, name: &str| buckets.iter().map(|b| b[group][name].as_u64().unwrap()).sum::<u64>();
        (sum("received", "queued"), sum("received", "refused"), sum("received", "duplicate"), sum("processed", "done"))
    };
    let (status, overview) = get(&app, "/api/overview").await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["charts"]["hour"]["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(overview["charts"]["day"]["buckets"].as_array().unwrap().len(), 24);
    assert_eq!(totals(&overview), (3, 1, 1, 3), "{}", overview["charts"]["hour"]);
    let with_latency = overview["charts"]["hour"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| !b["ack_ms"].is_null())
        .cloned()
        .expect("a bucket with acknowledgement latencies");
    assert!(with_latency["ack_ms"]["p99"].as_f64().unwrap() >= with_latency["ack_ms"]["p50"].as_f64().unwrap());
    assert_eq!(overview["health"]["status"], "ok");
    assert_eq!(overview["queue"]["depth"], 0);
    assert_eq!(overview["github_web_url"], "http://127.0.0.1:9");

    // Restarted: the counts are still there (written to the database).
    let dir = app.stop().await;
    let app = spawn_app_in(dir, AppOptions::default()).await;
    let (_, after) = get(&app, "/api/overview").await;
    assert_eq!(totals(&after), (3, 1, 1, 3), "{}", after["charts"]["hour"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_their_local_copy_and_the_sync_action() {
    let app = spawn_app(AppOptions::default()).await;
    let d = Delivery::new("issues", issue_payload(7, "In the copy"));
    let id = d.id.clone();
    assert_eq!(app.post(d).await.0, 202);
    app.wait_for_status(&id, DeliveryStatus::Done).await;

    let (status, repos) = get(&app, "/api/repositories").await;
    assert_eq!(status, 200, "{repos}");
    let repo = &repos.as_array().unwrap()[0];
    assert_eq!(repo["repository"], "octo/hello");
    assert_eq!(repo["mode"], "polling");
    assert!(repo["mode_reason"].as_str().unwrap().contains("no webhook"), "{repo}");
    assert_eq!(repo["html_url"], "http://127.0.0.1:9/octo/hello");
    let repo_id = repo["id"].as_i64().unwrap();

    let (_, issues) = get(&app, &format!("/api/repositories/{repo_id}/issues")).await;
    assert_eq!(issues.as_array().unwrap()[0]["title"], "In the copy");
    let (status, _) = get(&app, &format!("/api/repositories/{repo_id}/widgets")).await;
    assert_eq!(status, 404);
    for view in ["branches", "commits", "pulls", "releases", "reviews", "review-comments", "labels", "milestones"] {
        let (status, rows) = get(&app, &format!("/api/repositories/{repo_id}/{view}")).await;
        assert_eq!(status, 200, "{view}: {rows}");
        assert!(rows.is_array(), "{view}: {rows}");
    }
    let (status, _) = get(&app, "/api/repositories/999/issues").await;
    assert_eq!(status, 404);

    // Sync now: the remote's new commit is recorded, and the mirror has a size.
    let remote = GitRemote::existing(app.dir.path(), "octo/hello");
    let head = remote.commit("NEW.md", "new\n", "Synced from the dashboard");
    remote.push("main");
    let token = csrf(&app).await;
    let (status, body) = post(&app, &format!("/api/repositories/{repo_id}/sync"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["changes"].as_u64().unwrap() >= 2, "{body}");
    let (_, commits) = get(&app, &format!("/api/repositories/{repo_id}/commits?branch=main&limit=1")).await;
    assert_eq!(commits[0]["sha"], head.as_str());
    let (_, repos) = get(&app, "/api/repositories").await;
    assert!(repos[0]["mirror_bytes"].as_u64().unwrap() > 0, "{repos}");
    assert!(repos[0]["last_sync_at"].is_string());
    // No hook, no token: ping and catch-up say why.
    let (status, body) = post(&app, &format!("/api/repositories/{repo_id}/ping"), Some(&token)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no webhook"));
    app.stop().await;
}

/// The repository card's two GitHub actions against the fake GitHub: "Ping hook" has
/// GitHub ping the hook (the ping arrives, verified, and is the card's last ping), and
/// "Run catch-up" has GitHub redeliver what the receiver missed while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_and_catch_up_buttons_reach_github_and_what_it_sends_arrives() {
    use futurnal::github::client::{GitHubClient, Token};
    let fake = crate::fake_github::FakeGitHub::start().await;
    fake.add_repo("octo/hello", 4242);
    let client = || GitHubClient::new(&fake.url(), Some(Token::new("test-token"))).unwrap();
    let app = spawn_app(AppOptions { github: Some(client()), ..Default::default() }).await;
    let (dir, api, url) = (app.dir.path().to_owned(), fake.url(), app.url());
    let enabled = crate::hooks::cli(
        &dir,
        &api,
        &["--json", "sources", "github", "webhook", "enable", "octo/hello", "--public-url", &url],
    )
    .await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    let (_, repos) = get(&app, "/api/repositories").await;
    let repo_id = repos[0]["id"].as_i64().unwrap();
    assert_eq!(repos[0]["hook_id"].as_u64(), Some(hook_id), "{repos}");
    let pings = |fake: &crate::fake_github::FakeGitHub| {
        fake.deliveries(hook_id).iter().filter(|d| d["event"] == "ping" && d["status_code"] == 200).count()
    };
    assert_eq!(pings(&fake), 1, "the ping GitHub sends when it creates a hook");

    let token = csrf(&app).await;
    let (status, body) = post(&app, &format!("/api/repositories/{repo_id}/ping"), Some(&token)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("sent")), "{body}");
    wait_for(Duration::from_secs(10), "the second ping to be answered 200", || async {
        (pings(&fake) == 2).then_some(())
    })
    .await;
    let (_, repos) = get(&app, "/api/repositories").await;
    assert!(repos[0]["last_ping_at"].is_string(), "{repos}");

    // GitHub cannot reach the receiver for a while (the hook's URL moved, as when a tunnel
    // goes down): two issues fail to arrive. The daemon stays up, so only the button asks.
    let hook_url = fake.hooks("octo/hello")[0].url.clone();
    let set_url = |to: String| {
        let request = app
            .client
            .patch(format!("{api}/repos/octo/hello/hooks/{hook_id}/config"))
            .bearer_auth("test-token")
            .json(&serde_json::json!({ "url": to }));
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    set_url("http://127.0.0.1:9/webhook/github".into()).await;
    let mut missed = Vec::new();
    for n in [7, 8] {
        let payload: Value = serde_json::from_slice(&issue_payload(n, "Sent while unreachable")).unwrap();
        missed.extend(fake.trigger("octo/hello", "issues", payload).await);
    }
    assert_eq!(missed.len(), 2);
    for guid in &missed {
        assert!(app.delivery(guid).await.is_none(), "{guid} never reached the receiver");
    }
    set_url(hook_url).await;
    let token = csrf(&app).await;
    let (status, body) = post(&app, &format!("/api/repositories/{repo_id}/catch-up"), Some(&token)).await;
    assert_eq!((status, body["redelivered"].as_u64()), (200, Some(2)), "{body}");
    for guid in &missed {
        app.wait_for_status(guid, DeliveryStatus::Done).await;
    }
    // Without the CSRF token, neither button does anything.
    let (status, _) = post(&app, &format!("/api/repositories/{repo_id}/ping"), None).await;
    assert_eq!(status, 403);
    assert_eq!(pings(&fake), 2);
    app.stop().await;
}
