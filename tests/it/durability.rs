//! Whole-process behaviour: kill -9 loses nothing acknowledged, SIGTERM drains and exits
//! 0, and logs carry no secrets or payload bodies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::queue::{DeliveryFilter, DeliveryStatus};

use crate::helpers::*;

const REPO: &str = "octo/hello";

async fn send(client: &reqwest::Client, url: &str, id: &str, body: &[u8]) -> Option<u16> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature(SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let remote = GitRemote::new(&d, REPO);
    assert_eq!(futurnal(&d, &["sources", "github", "add", REPO, "--clone-url", &remote.url()]).code, 0);
    let mut daemon = start_daemon(&d, &[("FUTURNAL_WEBHOOK_SECRET", SECRET)]);
    let url = daemon.url();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let body = Arc::new(push_body(REPO, 1));
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (url, acked, body) = (url.clone(), acked.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            futurnal::install_tls_provider();
            let client = reqwest::Client::new();
            for _ in 0..400 {
                let id = new_id();
                match send(&client, &url, &id, &body).await {
                    Some(status) if (200..300).contains(&status) => acked.lock().unwrap().push(id),
                    Some(status) => panic!("unexpected status {status}"),
                    None => return, // the server is gone
                }
            }
        }));
    }
    wait_until(Duration::from_secs(30), "a few hundred acknowledgements", || async {
        acked.lock().unwrap().len() >= 300
    })
    .await;
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Restart: every acknowledged delivery is there, and all get processed.
    let _daemon = start_daemon(&d, &[("FUTURNAL_WEBHOOK_SECRET", SECRET)]);
    let config = config_for(&d, "");
    let backend = Backend::open(&config, Purpose::Command).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = backend.queue.list(DeliveryFilter { limit: 100_000, ..Default::default() }).await.unwrap();
        let missing = acked.iter().filter(|id| !all.iter().any(|r| &r.delivery_id == *id)).count();
        assert_eq!(missing, 0, "acknowledged deliveries lost after kill -9");
        let pending = all.iter().filter(|r| r.status != DeliveryStatus::Done).count();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} deliveries never processed after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    backend.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0_and_logs_hold_no_secrets_or_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let remote = GitRemote::new(&d, REPO);
    assert_eq!(futurnal(&d, &["sources", "github", "add", REPO, "--clone-url", &remote.url()]).code, 0);
    let mut daemon = start_daemon(&d, &[("FUTURNAL_WEBHOOK_SECRET", SECRET), ("FUTURNAL_LOG", "debug")]);
    futurnal::install_tls_provider();
    let client = reqwest::Client::new();
    let body = push_body(REPO, 1);
    let mut acked = Vec::new();
    for _ in 0..50 {
        let id = new_id();
        assert_eq!(send(&client, &daemon.url(), &id, &body).await, Some(202));
        acked.push(id);
    }
    // A forged delivery and a malformed one, which get logged as refusals.
    let forged = client
        .post(daemon.url())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", new_id())
        .header("x-hub-signature-256", signature("guess", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let health = client.get(format!("http://{}/health", daemon.admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));

    let log = daemon.stderr();
    assert!(log.contains("SIGTERM received") && log.contains("Stopped"), "{log}");
    assert!(log.contains(&acked[0]), "logs carry delivery ids");
    assert!(!log.contains(SECRET), "the secret leaked into the logs");
    assert!(!log.contains("PAYLOAD-MARKER-5d1c"), "a payload body leaked into the logs");

    // Nothing acknowledged was lost by the shutdown.
    let config = config_for(&d, "");
    let backend = Backend::open(&config, Purpose::Command).await.unwrap();
    let all = backend.queue.list(DeliveryFilter { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), acked.len());
    assert!(all.iter().all(|r| matches!(r.status, DeliveryStatus::Done | DeliveryStatus::Queued)), "{all:?}");
    backend.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_hook_secret_verifies_from_the_first_request_after_the_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let mut config = config_for(&d, "");
    config.webhook.secret_store = futurnal::config::SecretStore::File;
    futurnal::secrets::store_hook_secrets(&config, 31337, &["stored-hook-secret"]).unwrap();
    let mut daemon = start_daemon(&d, &[("FUTURNAL_SECRET_STORE", "file")]);
    futurnal::install_tls_provider();
    let client = reqwest::Client::new();
    // Sent the moment the banner is read, as GitHub's redeliveries after a restart are.
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":31337}"#.to_vec();
    let ping = |secret: &str| {
        client
            .post(daemon.url())
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", new_id())
            .header("x-github-hook-id", "31337")
            .header("x-hub-signature-256", signature(secret, &body))
            .body(body.clone())
            .send()
    };
    assert_eq!(ping("stored-hook-secret").await.unwrap().status(), 200);
    assert_eq!(ping("another-secret").await.unwrap().status(), 401);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_task_that_panics_stops_serve_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), "");
    let backend = Backend::open(&config, Purpose::Daemon).await.unwrap();
    let listeners = futurnal::serve::Listeners::bind(&config).await.unwrap();
    let overrides = futurnal::serve::Overrides {
        extra_tasks: vec![Box::pin(async { panic!("a task broke") })],
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = futurnal::serve::run(config, backend, listeners, overrides, shutdown);
    let result = tokio::time::timeout(Duration::from_secs(30), run).await.expect("serve stops");
    let error = format!("{:#}", result.expect_err("serve reports the failure"));
    assert!(error.contains("daemon task failed"), "{error}");
}
