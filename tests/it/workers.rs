//! Workers: order per repository, parallel repositories, retries with backoff, dead
//! letters, replay, panics, and recovery of work a crash left behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futurnal::domain::DeliveryId;
use futurnal::handlers::{DeliveryHandler, Handled, HandlerError, HandlerOutcome};
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::queue::{ClaimedDelivery, Claimer, DeliveryStatus, InitialStatus, NewDelivery, StoredBody};
use futurnal::storage::BoxFuture;

use crate::helpers::*;

const FAST_RETRIES: &str = "[workers]\nretry_base_ms = 20\nretry_cap_ms = 100\nmax_attempts = 3\nconcurrency = 4\n";

/// Records the order deliveries were handled in; fails or panics on request.
#[derive(Default)]
struct Scripted {
    seen: Mutex<Vec<(String, String)>>,
    /// delivery id -> how many more times to fail transiently
    fail: Mutex<HashMap<String, u32>>,
    /// delivery id -> how many more times to panic
    panic: Mutex<HashMap<String, u32>>,
    calls: AtomicU32,
}

impl Scripted {
    fn take(map: &Mutex<HashMap<String, u32>>, id: &str) -> bool {
        let mut map = map.lock().unwrap();
        match map.get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn order_for(&self, repo: &str) -> Vec<String> {
        self.seen.lock().unwrap().iter().filter(|(r, _)| r == repo).map(|(_, id)| id.clone()).collect()
    }
}

impl DeliveryHandler for Scripted {
    fn handle<'a>(&'a self, d: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if Self::take(&self.panic, &d.delivery_id) {
                panic!("scripted panic for {}", d.delivery_id);
            }
            if Self::take(&self.fail, &d.delivery_id) {
                return Err(HandlerError::Transient("scripted failure".into()));
            }
            self.seen.lock().unwrap().push((d.repository.clone().unwrap_or_default(), d.delivery_id.clone()));
            Ok(HandlerOutcome::Done.into())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_one_repository_are_handled_in_arrival_order_even_around_a_retry() {
    let handler = Arc::new(Scripted::default());
    let app = spawn_app(AppOptions {
        toml: FAST_RETRIES.into(),
        handler: Some(handler.clone()),
        track: vec!["octo/a", "octo/b"],
        ..Default::default()
    })
    .await;
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..60u64 {
        let repo = if i % 3 == 0 { "octo/b" } else { "octo/a" };
        let d = Delivery::new("push", push_body(repo, if repo == "octo/a" { 1 } else { 2 }));
        if i == 10 {
            // The 7th delivery of octo/a fails twice; everything after it must wait.
            handler.fail.lock().unwrap().insert(d.id.clone(), 2);
        }
        sent.entry(repo).or_default().push(d.id.clone());
        assert_eq!(app.post(d).await.0, 202);
    }
    wait_until(Duration::from_secs(15), "all 60 handled", || async { handler.seen.lock().unwrap().len() == 60 }).await;
    assert_eq!(handler.order_for("octo/a"), sent["octo/a"]);
    assert_eq!(handler.order_for("octo/b"), sent["octo/b"]);
    let flaky = app.wait_for_status(&sent["octo/a"][6], DeliveryStatus::Done).await;
    assert_eq!(flaky.attempts, 3);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 62);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_delivery_which_is_retried() {
    let handler = Arc::new(Scripted::default());
    let app =
        spawn_app(AppOptions { toml: FAST_RETRIES.into(), handler: Some(handler.clone()), ..Default::default() }).await;
    let d = Delivery::new("push", push_body("octo/hello", 1));
    let id = d.id.clone();
    handler.panic.lock().unwrap().insert(id.clone(), 1);
    assert_eq!(app.post(d).await.0, 202);
    let record = app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(record.attempts, 2, "one panic, then success");
    // The pool survived: new work is still processed.
    let d = Delivery::new("push", push_body("octo/hello", 1));
    let next = d.id.clone();
    app.post(d).await;
    app.wait_for_status(&next, DeliveryStatus::Done).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_then_go_dead_and_replay_processes_them_again() {
    let handler = Arc::new(Scripted::default());
    let app =
        spawn_app(AppOptions { toml: FAST_RETRIES.into(), handler: Some(handler.clone()), ..Default::default() }).await;
    let d = Delivery::new("push", push_body("octo/hello", 1));
    let id = d.id.clone();
    handler.fail.lock().unwrap().insert(id.clone(), 3);
    app.post(d).await;
    let dead = app.wait_for_status(&id, DeliveryStatus::Dead).await;
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.as_deref().unwrap().contains("scripted failure"), "{dead:?}");
    assert_eq!(app.deliveries(Some(DeliveryStatus::Dead)).await.len(), 1);
    // A dead delivery does not hold its repository back.
    let d = Delivery::new("push", push_body("octo/hello", 1));
    let later = d.id.clone();
    app.post(d).await;
    app.wait_for_status(&later, DeliveryStatus::Done).await;

    let replayed = app.queue.replay(&id).await.unwrap();
    assert_eq!(replayed.status, DeliveryStatus::Queued);
    let done = app.wait_for_status(&id, DeliveryStatus::Done).await;
    assert_eq!(done.attempts, 1);
    assert!(done.last_error.is_none());
    assert!(app.queue.replay("no-such-delivery").await.is_err());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_fit_its_event_goes_dead_at_once() {
    let app = spawn_app(AppOptions::default()).await;
    // Valid JSON with a repository, but no `ref`/`before`/`after`: no retry can help.
    let body = br#"{"repository":{"id":1,"full_name":"octo/hello"}}"#.to_vec();
    let d = Delivery::new("push", body);
    let id = d.id.clone();
    assert_eq!(app.post(d).await.0, 202);
    let dead = app.wait_for_status(&id, DeliveryStatus::Dead).await;
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.unwrap().contains("missing field"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_processing_by_a_crash_is_queued_again_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), "");
    let backend = Backend::open(&config, Purpose::Command).await.unwrap();
    let id = DeliveryId::random();
    backend
        .queue
        .enqueue(NewDelivery {
            delivery_id: id.clone(),
            event: "push".into(),
            action: None,
            repository: Some("octo/hello".into()),
            repository_github_id: Some(1),
            hook_id: None,
            received_at_ms: futurnal::time::now_ms(),
            body: StoredBody::compress(&push_body("octo/hello", 1)),
            initial: InitialStatus::Queued,
        })
        .await
        .unwrap();
    // Claimed by a process of this host that has exited since (as a crashed daemon's
    // claims are), under a lease far longer than the test: the next start must queue it
    // again at once, not wait for the lease.
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let pid = exited.id();
    exited.wait().unwrap();
    let claimer = Claimer { instance: format!("{}:{pid}", futurnal::instance::hostname()), lease_ms: 3_600_000 };
    let lanes = backend.queue.claim_as(&claimer, 4, 8).await.unwrap();
    assert_eq!(lanes.len(), 1);
    assert_eq!(backend.queue.get(id.as_str()).await.unwrap().unwrap().status, DeliveryStatus::Processing);
    backend.close();
    drop(backend);

    let app = spawn_app_in(dir, AppOptions::default()).await;
    let record = app.wait_for_status(id.as_str(), DeliveryStatus::Done).await;
    assert_eq!(record.attempts, 2, "the attempt the crash cut short counts, as an expired lease's does");
    app.stop().await;
}
