//! The receiver's eight steps, over real HTTP against the server on port 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futurnal::storage::queue::DeliveryStatus;
use serde_json::Value;

use crate::helpers::*;

const REPO: &str = "octo/hello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_delivery_is_queued_durably_then_processed() {
    let app = spawn_app(AppOptions::default()).await;
    let d = Delivery::new("push", push_body(REPO, 4242));
    let id = d.id.clone();
    let (status, body) = app.post(d).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["delivery_id"], id.as_str());
    let record = app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!((record.event.as_str(), record.attempts), ("push", 1));
    assert_eq!(record.repository.as_deref(), Some(REPO));
    // The handler learned GitHub's id for the tracked repository.
    let repo = app.registry.find(futurnal::storage::registry::RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    assert_eq!(repo.github_id, Some(4242));
    assert!(repo.last_delivery_at_ms.is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_headers_are_400() {
    let app = spawn_app(AppOptions::default()).await;
    let body = push_body(REPO, 1);
    for missing in ["x-github-event", "x-github-delivery"] {
        let mut request = app
            .client
            .post(app.url())
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature(SECRET, &body))
            .body(body.clone());
        if missing != "x-github-event" {
            request = request.header("x-github-event", "push");
        }
        if missing != "x-github-delivery" {
            request = request.header("x-github-delivery", new_id());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "missing {missing}");
        let text = response.text().await.unwrap();
        assert!(text.to_lowercase().contains(missing), "{text}");
    }
    assert!(app.deliveries(None).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_401_and_nothing_is_stored() {
    let app = spawn_app(AppOptions { toml: "unverified_burst = 100\n".into(), ..Default::default() }).await;
    let body = push_body(REPO, 1);
    let good = signature(SECRET, &body);
    let hex = good.trim_start_matches("sha256=").to_owned();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("wrong secret", Some(signature("not-the-secret", &body))),
        ("short", Some(good[..good.len() - 1].to_owned())),
        ("uppercase hex", Some(format!("sha256={}", hex.to_uppercase()))),
        ("uppercase prefix", Some(format!("SHA256={hex}"))),
        ("sha1", Some(format!("sha1={}", &hex[..40]))),
        ("empty", Some(String::new())),
    ];
    for (name, header) in cases {
        let mut request = app
            .client
            .post(app.url())
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", new_id())
            .body(body.clone());
        if let Some(h) = header {
            request = request.header("x-hub-signature-256", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let text = response.text().await.unwrap();
        assert!(!text.contains(SECRET), "{name}: {text}");
    }
    // A body altered after signing fails too.
    let mut d = Delivery::new("push", body.clone());
    d.secret = None;
    let response = app
        .client
        .post(app.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", &d.id)
        .header("x-hub-signature-256", &good)
        .body([&body[..], b" "].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(app.deliveries(None).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_valid_json_objects_are_400_after_verification() {
    let app = spawn_app(AppOptions::default()).await;
    for (name, body) in [("empty", &b""[..]), ("invalid", b"{\"ref\": "), ("array", b"[1,2,3]"), ("trailing", b"{} x")]
    {
        let (status, answer) = app.post(Delivery::new("push", body.to_vec())).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["status"], "error");
    }
    // Unsigned invalid JSON is refused as unsigned, before any parsing.
    let mut d = Delivery::new("push", b"{".to_vec());
    d.secret = None;
    assert_eq!(app.post(d).await.0, 401);
    assert!(app.deliveries(None).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_types_json_and_form_are_accepted_others_are_415() {
    let app = spawn_app(AppOptions::default()).await;
    let json = push_body(REPO, 7);
    let form = format!("payload={}", url_encode(&json)).into_bytes();

    let mut d = Delivery::new("push", form);
    d.content_type = "application/x-www-form-urlencoded";
    let id = d.id.clone();
    let (status, body) = app.post(d).await;
    assert_eq!(status, 202, "{body}");
    let record = app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(record.repository.as_deref(), Some(REPO));

    let mut d = Delivery::new("push", b"other=1".to_vec());
    d.content_type = "application/x-www-form-urlencoded";
    let (status, body) = app.post(d).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("payload"));

    let mut d = Delivery::new("push", json.clone());
    d.content_type = "text/plain";
    assert_eq!(app.post(d).await.0, 415);

    let mut d = Delivery::new("push", json);
    d.content_type = "application/json; charset=utf-8";
    assert_eq!(app.post(d).await.0, 202);
    app.stop().await;
}

/// Requests one reading could take one way and another reading another: refused, and
/// nothing stored. Each one correctly signed, so only the rule refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_fields_and_headers_bad_escapes_and_encoded_bodies_are_refused() {
    let app = spawn_app(AppOptions::default()).await;
    let json = push_body(REPO, 7);
    let other = push_body("octo/other", 8);
    for (form, why) in [
        (format!("payload={}&payload={}", url_encode(&json), url_encode(&other)), "more than one payload"),
        (format!("payload={}&pay%6Coad={}", url_encode(&json), url_encode(&other)), "more than one payload"),
        (format!("payload={}%ZZ", url_encode(&json)), "malformed escape"),
    ] {
        let mut d = Delivery::new("push", form.into_bytes());
        d.content_type = "application/x-www-form-urlencoded";
        let (status, body) = app.post(d).await;
        assert_eq!(status, 400, "{why}: {body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    // Two values of a header that says what the delivery is.
    let client = reqwest::Client::new();
    for (name, first, second) in [
        ("x-github-delivery", new_id(), new_id()),
        ("x-github-event", "push".to_owned(), "issues".to_owned()),
        ("x-github-hook-id", "1".to_owned(), "2".to_owned()),
        ("x-github-delivery", "same".to_owned(), "same".to_owned()),
    ] {
        let mut request = client
            .post(app.url())
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature(SECRET, &json))
            .body(json.clone());
        for required in ["x-github-event", "x-github-delivery"] {
            if required != name {
                request =
                    request.header(required, if required == "x-github-event" { "push".to_owned() } else { new_id() });
            }
        }
        let response = request.header(name, &first).header(name, &second).send().await.unwrap();
        assert_eq!(response.status(), 400, "{name} twice");
        assert!(response.text().await.unwrap().contains("repeated"));
    }
    // GitHub never compresses a delivery.
    for encoding in ["gzip", "identity", "br"] {
        let response = client
            .post(app.url())
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .header("x-github-event", "push")
            .header("x-github-delivery", new_id())
            .header("x-hub-signature-256", signature(SECRET, &json))
            .body(json.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "Content-Encoding: {encoding}");
    }
    assert!(app.deliveries(None).await.is_empty(), "nothing stored");
    app.stop().await;
}

fn url_encode(bytes: &[u8]) -> String {
    form_urlencoded::byte_serialize(bytes).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_200_and_recorded_for_its_hook() {
    let app = spawn_app(AppOptions::default()).await;
    let body = std::fs::read(fixture("payloads/ping/payload.json")).unwrap();
    let mut d = Delivery::new("ping", body);
    d.hook_id = Some(109948940);
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event"], "ping");
    let record = app.delivery(&id).await.unwrap();
    assert_eq!((record.status, record.hook_id), (DeliveryStatus::Done, Some(109948940)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_repositories_disabled_and_unknown_events_are_202_ignored() {
    let app = spawn_app(AppOptions { toml: "events = [\"push\", \"ping\"]\n".into(), ..Default::default() }).await;
    let untracked = Delivery::new("push", push_body("someone/else", 99));
    let untracked_id = untracked.id.clone();
    let issues = std::fs::read(fixture("payloads/issues/opened.payload.json")).unwrap();
    let cases = [
        ("untracked", untracked, "repository not tracked"),
        ("disabled", Delivery::new("issues", issues), "event not enabled"),
        ("unknown event", Delivery::new("workflow_run", push_body(REPO, 1)), "event not enabled"),
        (
            "no repository",
            Delivery::new("push", br#"{"ref":"refs/heads/main","zen":"x"}"#.to_vec()),
            "payload names no repository",
        ),
    ];
    for (name, delivery, reason) in cases {
        let (status, body) = app.post(delivery).await;
        assert_eq!(status, 202, "{name}: {body}");
        assert_eq!(body["status"], "ignored", "{name}");
        assert_eq!(body["reason"], reason, "{name}");
    }
    let ignored = app.deliveries(Some(DeliveryStatus::Ignored)).await;
    assert_eq!(ignored.len(), 4);
    assert_eq!(app.delivery(&untracked_id).await.unwrap().last_error.as_deref(), Some("repository not tracked"));
    assert!(app.deliveries(Some(DeliveryStatus::Queued)).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_id_seen_before_is_200_duplicate_and_not_queued_again() {
    let app = spawn_app(AppOptions::default()).await;
    let body = push_body(REPO, 5);
    let id = new_id();
    let make = || Delivery { id: id.clone(), ..Delivery::new("push", body.clone()) };
    assert_eq!(app.post(make()).await.0, 202);
    let (status, answer) = app.post(make()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "duplicate");
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(app.post(make()).await.1["status"], "duplicate");
    assert_eq!(app.deliveries(None).await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_whether_announced_or_streamed() {
    let app = spawn_app(AppOptions { toml: "max_body_bytes = 2048\n".into(), ..Default::default() }).await;
    // Exactly at the limit passes the size check (and then fails as invalid JSON).
    let mut at_limit = push_body(REPO, 1);
    at_limit.resize(2048, b' ');
    assert_eq!(app.post(Delivery::new("push", at_limit.clone())).await.0, 202);
    let mut over = at_limit.clone();
    over.push(b' ');
    assert_eq!(app.post(Delivery::new("push", over.clone())).await.0, 413);

    // Chunked, with no Content-Length: cut off once the limit is passed.
    let mut stream = TcpStream::connect(app.webhook).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /webhook/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: {}\r\nX-Hub-Signature-256: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        new_id(),
        signature(SECRET, &over)
    );
    // One write: the server stops reading once past the limit and answers at once, so
    // writes after that point could hit a closed socket.
    let mut request = head.into_bytes();
    for chunk in over.chunks(512) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(app.deliveries(None).await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_announced_body_is_refused_without_reading_it() {
    let app = spawn_app(AppOptions::default()).await;
    let mut stream = TcpStream::connect(app.webhook).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // 26 MiB announced, none sent: the answer must come at once.
    let head = format!(
        "POST /webhook/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: {}\r\nContent-Length: {}\r\n\r\n",
        new_id(),
        26 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off() {
    let app = spawn_app(AppOptions {
        toml: "header_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    // Headers started, never finished: the connection is closed.
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.webhook).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n").unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "header stall held the connection for {waited:?}");
    let text = String::from_utf8_lossy(&response);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // Headers complete, body stalls: 408.
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.webhook).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /webhook/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: {}\r\nContent-Length: 100\r\n\r\n{{\"ref\":",
        new_id()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    assert!(started.elapsed() < Duration::from_secs(5));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_traffic_is_rate_limited_per_client_but_verified_traffic_is_not() {
    let app = spawn_app(AppOptions {
        toml: "unverified_rate_per_sec = 1\nunverified_burst = 3\n".into(),
        ..Default::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let mut d = Delivery::new("push", push_body(REPO, 1));
        d.secret = Some("wrong");
        statuses.push(app.post(d).await.0);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    for _ in 0..5 {
        assert_eq!(app.post(Delivery::new("push", push_body(REPO, 1))).await.0, 202);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_hook_secrets_win_and_a_rotation_accepts_old_and_new() {
    let toml = "previous_secret = \"old-global\"\nhook_secrets = { \"42\" = \"hook-42-secret\" }\n";
    let app = spawn_app(AppOptions { toml: toml.into(), ..Default::default() }).await;
    let send = |secret: &'static str, hook: Option<u64>| {
        let mut d = Delivery::new("push", push_body(REPO, 1));
        d.secret = Some(secret);
        d.hook_id = hook;
        d
    };
    assert_eq!(app.post(send("hook-42-secret", Some(42))).await.0, 202);
    assert_eq!(app.post(send(SECRET, Some(42))).await.0, 401, "the global secret is not valid for hook 42");
    assert_eq!(app.post(send(SECRET, Some(7))).await.0, 202, "a hook without its own secret uses the global");
    assert_eq!(app.post(send(SECRET, None)).await.0, 202);
    assert_eq!(app.post(send("old-global", None)).await.0, 202, "the previous secret passes during rotation");
    assert_eq!(app.post(send("hook-42-secret", None)).await.0, 401);
    let mut bad_hook = send(SECRET, None);
    bad_hook.hook_id = None;
    let response = app
        .client
        .post(app.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", new_id())
        .header("x-github-hook-id", "not-a-number")
        .header("x-hub-signature-256", signature(SECRET, &bad_hook.body))
        .body(bad_hook.body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_503_but_duplicates_are_still_recognised() {
    let app = spawn_app(AppOptions {
        toml: "[serve]\nrole = \"receiver\"\n[queue]\nmax_queued = 2\n".into(),
        ..Default::default()
    })
    .await;
    let first = Delivery::new("push", push_body(REPO, 1));
    let first_id = first.id.clone();
    assert_eq!(app.post(first).await.0, 202);
    assert_eq!(app.post(Delivery::new("push", push_body(REPO, 1))).await.0, 202);
    let (status, body) = app.post(Delivery::new("push", push_body(REPO, 1))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "queue is full");
    let again = Delivery { id: first_id, ..Delivery::new("push", push_body(REPO, 1)) };
    assert_eq!(app.post(again).await.1["status"], "duplicate");
    assert_eq!(app.deliveries(None).await.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_written_gets_503_never_2xx() {
    if crate::pg_mode::skip_unless_sqlite("the cap is [sqlite] max_database_mb (pg_faults covers a PostgreSQL away)") {
        return;
    }
    // The database may not grow past 1 MiB; incompressible bodies fill it quickly.
    let app = spawn_app(AppOptions {
        toml: "max_body_bytes = 300000\n[queue]\ncompression = \"none\"\n[sqlite]\nmax_database_mb = 1\n[serve]\nrole = \"receiver\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..40u64 {
        let mut value: Value = serde_json::from_slice(&push_body(REPO, 1)).unwrap();
        let noise: String = (0..100_000u64).map(|j| char::from(b'a' + ((j * 7919 + i * 31) % 26) as u8)).collect();
        value["padding"] = Value::from(noise);
        let d = Delivery::new("push", serde_json::to_vec(&value).unwrap());
        let id = d.id.clone();
        let (status, body) = app.post(d).await;
        match status {
            202 => accepted.push(id),
            503 => {
                assert_eq!(body["error"], "temporarily unable to store deliveries");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "the size cap never refused a write");
    assert!(!accepted.is_empty());
    let stored = app.deliveries(None).await;
    assert_eq!(stored.len(), accepted.len(), "every 2xx is stored, and nothing else");
    for id in &accepted {
        assert!(stored.iter().any(|r| &r.delivery_id == id));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_both_listeners_and_metrics_on_admin() {
    let app = spawn_app(AppOptions::default()).await;
    for addr in [app.webhook, app.admin] {
        let response = app.client.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["database"], "reachable");
        assert_eq!(body["queue_depth"], 0);
        assert_eq!(body["queue_cap"], 1_000_000);
        assert!(body.get("oldest_queued_age_seconds").is_some());
    }
    app.post(Delivery::new("push", push_body(REPO, 1))).await;
    let metrics = app.client.get(format!("http://{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("futurnal_webhook_requests_total{outcome=\"queued\"} 1"), "{metrics}");
    // The admin routes are not on the public listener.
    let response = app.client.get(format!("http://{}/metrics", app.webhook)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let api: Value = app
        .client
        .get(format!("http://{}/api/deliveries?limit=5", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.as_array().unwrap().len(), 1);
    // The status page (the page without script; `/` is the dashboard): repositories and
    // recent deliveries, escaped, no secret.
    let page = app.client.get(format!("http://{}/status", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("octo/hello") && page.contains("Recent deliveries") && page.contains("push"), "{page}");
    assert!(!page.contains(SECRET));
    // Alone on its database, this instance leads: /health, /metrics and the page say so.
    let health = || async {
        let url = format!("http://{}/health", app.admin);
        app.client.get(url).send().await.unwrap().json::<Value>().await.unwrap()
    };
    wait_until(Duration::from_secs(10), "the one instance to lead", || async { health().await["leader"] == true })
        .await;
    let h = health().await;
    let me = h["instance"].as_str().unwrap().to_owned();
    assert_eq!(h["instances"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(
        (h["instances"][0]["name"].as_str(), &h["instances"][0]["leader"]),
        (Some(me.as_str()), &Value::Bool(true))
    );
    let metrics = app.client.get(format!("http://{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("futurnal_leader{{instance=\"{me}\"}} 1")), "{metrics}");
    let page = app.client.get(format!("http://{}/status", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Instances") && page.contains(&format!("{me} (this one)")) && page.contains(">leader<"),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_stored_by_the_cli_verifies_at_once_and_unknown_hook_ids_read_nothing() {
    let toml = "unverified_rate_per_sec = 1000\nunverified_burst = 1000\n";
    let app = spawn_app(AppOptions { toml: toml.into(), ..Default::default() }).await;
    let mut cli_config = config_for(app.dir.path(), "");
    cli_config.webhook.secret_store = futurnal::config::SecretStore::File;
    let send = |secret: &'static str, hook: u64| {
        let mut d = Delivery::new("push", push_body(REPO, 1));
        d.secret = Some(secret);
        d.hook_id = Some(hook);
        d
    };
    async fn unknown_hooks(app: &TestApp) {
        for i in 0..50u64 {
            let mut d = Delivery::new("push", push_body(REPO, 1));
            d.secret = Some("not-a-secret");
            d.hook_id = Some(900_000 + i);
            assert_eq!(app.post(d).await.0, 401);
        }
    }
    // Those the receiver made because of requests (the maintenance tick's backstop aside).
    let reloads = || app.metric("futurnal_secret_reloads_total{cause=\"changed\"}");
    let at_start = reloads().await;
    unknown_hooks(&app).await;
    assert_eq!(reloads().await, at_start, "unknown hook ids read nothing");

    // Stored by another process (as `webhook enable` does): the very next delivery verifies.
    futurnal::secrets::store_hook_secrets(&cli_config, 555, &["cli-secret"]).unwrap();
    assert_eq!(app.post(send("cli-secret", 555)).await.0, 202);
    assert_eq!(reloads().await, at_start + 1.0);
    unknown_hooks(&app).await;
    assert_eq!(reloads().await, at_start + 1.0, "one read per change, not per request");

    // Rotated, then removed: seen at once too.
    futurnal::secrets::store_hook_secrets(&cli_config, 555, &["cli-secret-2", "cli-secret"]).unwrap();
    assert_eq!(app.post(send("cli-secret-2", 555)).await.0, 202);
    assert_eq!(app.post(send("cli-secret", 555)).await.0, 202, "the old one during the rotation");
    futurnal::secrets::remove_hook_secrets(app.dir.path(), 555).unwrap();
    assert_eq!(app.post(send("cli-secret-2", 555)).await.0, 401);
    assert_eq!(app.post(send(SECRET, 555)).await.0, 202, "back to the global secret");
    app.stop().await;
}
