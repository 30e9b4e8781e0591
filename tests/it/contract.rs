//! The storage contract: what every backend behind `Queue`, `Registry` and `CopyStore`
//! must do, the same tests for each. `backends()` opens a fresh, empty one of every kind:
//! the embedded SQLite, and PostgreSQL in a schema of its own when
//! `FUTURNAL_TEST_DATABASE_URL` names a server (`.ci/run` sets it; under `CI=true` a
//! missing one fails, elsewhere the tests say loudly that they skipped it).

use futurnal::domain::DeliveryId;
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::changes::Cause;
use futurnal::storage::copy::{Effect, IssueState, PullState};
use futurnal::storage::queue::Queue;
use futurnal::storage::queue::{
    Completion, DeliveryFilter, DeliveryStatus, EnqueueOutcome, InitialStatus, NewDelivery, StoredBody,
};
use futurnal::storage::registry::{HookRef, PollWatermarks, RepoRef};
use futurnal::storage::StoreError;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;

/// A fresh backend, and what keeps it alive (its directory).
pub struct Fresh {
    pub name: &'static str,
    pub backend: Backend,
    _dir: tempfile::TempDir,
    schema: Option<PgSchema>,
}

impl Fresh {
    pub async fn done(self) {
        self.backend.close();
        if let Some(schema) = self.schema {
            schema.drop_schema().await;
        }
    }
}

pub async fn backends() -> Vec<Fresh> {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&sqlite_config_for(dir.path(), ""), Purpose::Command).await.unwrap();
    let mut all = vec![Fresh { name: "sqlite", backend, _dir: dir, schema: None }];
    if let Some(schema) = PgSchema::new().await {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite_config_for(dir.path(), "");
        config.database = futurnal::config::DatabaseUrl::Postgres(schema.url.clone());
        config.postgres.schema = Some(schema.schema.clone());
        let backend = Backend::open(&config, Purpose::Command).await.unwrap();
        all.push(Fresh { name: "postgres", backend, _dir: dir, schema: Some(schema) });
    }
    all
}

/// A PostgreSQL schema of its own for one test, dropped by `drop_schema`.
pub struct PgSchema {
    pub url: String,
    pub schema: String,
}

impl PgSchema {
    /// A fresh schema on the test server, or `None` (said loudly) without one.
    pub async fn new() -> Option<Self> {
        let Some(url) = std::env::var("FUTURNAL_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but FUTURNAL_TEST_DATABASE_URL is not set: the PostgreSQL tests must run in CI"
            );
            eprintln!("NOTE: FUTURNAL_TEST_DATABASE_URL is not set: the PostgreSQL half of this test did NOT run");
            return None;
        };
        let schema = format!("futurnal_test_{}", &futurnal::secrets::generate_secret()[..12]);
        Some(Self { url, schema })
    }

    pub async fn drop_schema(self) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await.unwrap();
    }
}

/// A fresh queue of every kind, and what to clean up after.
/// Every backend's queue, and the backends to clean up after.
async fn queues() -> (Vec<(&'static str, Arc<dyn Queue>)>, Vec<Fresh>) {
    let all = backends().await;
    let queues = all.iter().map(|f| (f.name, f.backend.queue.clone())).collect();
    (queues, all)
}

async fn cleanup(keep: Vec<Fresh>) {
    for fresh in keep {
        fresh.done().await;
    }
}

fn delivery(repo: &str, github_id: u64, event: &str, initial: InitialStatus) -> NewDelivery {
    NewDelivery {
        delivery_id: DeliveryId::random(),
        event: event.into(),
        action: Some("opened".into()),
        repository: Some(repo.into()),
        repository_github_id: Some(github_id),
        hook_id: Some(9),
        received_at_ms: futurnal::time::now_ms(),
        body: StoredBody::compress(br#"{"zen":"x"}"#),
        initial,
    }
}

pub fn queued(repo: &str, github_id: u64, event: &str) -> NewDelivery {
    delivery(repo, github_id, event, InitialStatus::Queued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_enqueue_dedup_claim_complete_and_statuses() {
    let (queues, keep) = queues().await;
    for (name, q) in &queues {
        let first = queued("o/r", 1, "push");
        let id = first.delivery_id.to_string();
        assert_eq!(q.enqueue(first.clone()).await.unwrap(), EnqueueOutcome::Stored, "{name}");
        assert_eq!(q.enqueue(first).await.unwrap(), EnqueueOutcome::Duplicate, "{name}: dedup by delivery id");
        let ignored = delivery("o/r", 1, "push", InitialStatus::Ignored("not tracked".into()));
        q.enqueue(ignored.clone()).await.unwrap();
        let ping = delivery("o/r", 1, "ping", InitialStatus::Done);
        q.enqueue(ping.clone()).await.unwrap();
        assert_eq!(q.stats().await.unwrap().depth, 1, "{name}: only the queued one is pending");

        let lanes = q.claim(4, 8).await.unwrap();
        assert_eq!(lanes.len(), 1, "{name}");
        assert_eq!(lanes[0][0].delivery_id, id);
        assert_eq!(q.get(&id).await.unwrap().unwrap().status, DeliveryStatus::Processing);
        assert!(q.claim(4, 8).await.unwrap().is_empty(), "{name}: a claimed domain yields nothing more");
        q.complete(vec![(lanes[0][0].handle, Completion::Done)]).await.unwrap();
        let done = q.get(&id).await.unwrap().unwrap();
        assert_eq!((done.status, done.attempts), (DeliveryStatus::Done, 1), "{name}");
        assert_eq!(q.get(ignored.delivery_id.as_str()).await.unwrap().unwrap().status, DeliveryStatus::Ignored);
        assert_eq!(q.get(ping.delivery_id.as_str()).await.unwrap().unwrap().status, DeliveryStatus::Done);
        assert_eq!(q.stats().await.unwrap().depth, 0, "{name}");
        // A completion for a delivery no longer processing changes nothing.
        q.complete(vec![(lanes[0][0].handle, Completion::Dead { error: "late".into() })]).await.unwrap();
        assert_eq!(q.get(&id).await.unwrap().unwrap().status, DeliveryStatus::Done, "{name}");
    }
    cleanup(keep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_order_per_domain_retry_holds_back_its_domain_dead_lets_it_go_replay_requeues() {
    let (queues, keep) = queues().await;
    for (name, q) in &queues {
        let mut git = Vec::new();
        for _ in 0..3 {
            let d = queued("o/r", 1, "push");
            git.push(d.delivery_id.to_string());
            q.enqueue(d).await.unwrap();
        }
        let meta = queued("o/r", 1, "issues");
        let meta_id = meta.delivery_id.to_string();
        q.enqueue(meta).await.unwrap();

        let lanes = q.claim(4, 1).await.unwrap();
        assert_eq!(lanes.len(), 2, "{name}: the git and the metadata domain of one repository at once");
        let git_lane = lanes.iter().find(|l| l[0].event == "push").unwrap();
        assert_eq!(git_lane[0].delivery_id, git[0], "{name}: the oldest first");
        let meta_lane = lanes.iter().find(|l| l[0].event == "issues").unwrap();
        assert_eq!(meta_lane[0].delivery_id, meta_id);
        let hour = 3_600_000;
        let before = futurnal::time::now_ms();
        q.complete(vec![
            (git_lane[0].handle, Completion::Retry { error: "remote down".into(), delay_ms: hour }),
            (meta_lane[0].handle, Completion::Done),
        ])
        .await
        .unwrap();
        let retrying = q.get(&git[0]).await.unwrap().unwrap();
        assert_eq!(retrying.status, DeliveryStatus::Retrying, "{name}");
        // By the database's clock, which is this host's here (give or take a second).
        let at = retrying.next_attempt_at_ms.unwrap();
        assert!((before + hour - 1_000..=futurnal::time::now_ms() + hour + 1_000).contains(&at), "{name}: {at}");
        assert_eq!(retrying.last_error.as_deref(), Some("remote down"));
        assert!(q.claim(4, 8).await.unwrap().is_empty(), "{name}: a retry not due holds back its domain");

        // Replay puts the head back at once; then dead lets the rest go, in order.
        assert_eq!(q.replay(&git[0]).await.unwrap().status, DeliveryStatus::Queued, "{name}");
        let lane = q.claim(4, 8).await.unwrap().remove(0);
        let ids: Vec<_> = lane.iter().map(|d| d.delivery_id.clone()).collect();
        assert_eq!(ids, git, "{name}: the whole domain, in acknowledgement order");
        assert!(matches!(q.replay(&git[1]).await, Err(StoreError::Conflict(_))), "{name}: not while processing");
        q.complete(vec![
            (lane[0].handle, Completion::Dead { error: "gave up".into() }),
            (lane[1].handle, Completion::Done),
            (lane[2].handle, Completion::Release),
        ])
        .await
        .unwrap();
        assert_eq!(q.get(&git[0]).await.unwrap().unwrap().status, DeliveryStatus::Dead, "{name}");
        assert_eq!(q.get(&git[2]).await.unwrap().unwrap().status, DeliveryStatus::Queued, "{name}: released");
        let dead = q.list(DeliveryFilter { status: Some(DeliveryStatus::Dead), limit: 10, ..Default::default() });
        assert_eq!(dead.await.unwrap().len(), 1, "{name}");
        assert!(matches!(q.replay("no-such-delivery").await, Err(StoreError::NotFound(_))), "{name}");
    }
    cleanup(keep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_recover_prune_backlog_paging_and_redelivery_records() {
    let (queues, keep) = queues().await;
    for (name, q) in &queues {
        let mut ids = Vec::new();
        for _ in 0..5 {
            let d = queued("o/r", 1, "issues");
            ids.push(d.delivery_id.to_string());
            q.enqueue(d).await.unwrap();
        }
        let lanes = q.claim(4, 2).await.unwrap();
        assert_eq!(lanes[0].len(), 2, "{name}");
        // A crash: what was processing is queued again at the next start.
        assert_eq!(q.recover("local").await.unwrap(), 2, "{name}");
        let requeued = q.get(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (requeued.status, requeued.attempts),
            (DeliveryStatus::Queued, 1),
            "{name}: the cut-short attempt counts"
        );
        assert!(requeued.last_error.unwrap_or_default().contains("worker local stopped"), "{name}");
        let backlog = q.repository_backlog(Some(1), "o/r").await.unwrap();
        assert_eq!((backlog.queue_depth, backlog.failures), (5, 0), "{name}");

        // Newest first, a page at a time.
        let page = |before: Option<String>| q.list(DeliveryFilter { limit: 2, before, ..Default::default() });
        let first: Vec<_> = page(None).await.unwrap().into_iter().map(|r| r.delivery_id).collect();
        assert_eq!(first, vec![ids[4].clone(), ids[3].clone()], "{name}");
        let second: Vec<_> = page(Some(ids[3].clone())).await.unwrap().into_iter().map(|r| r.delivery_id).collect();
        assert_eq!(second, vec![ids[2].clone(), ids[1].clone()], "{name}");

        // Finished deliveries older than the cutoff are pruned; pending ones never are.
        let lane = q.claim(4, 8).await.unwrap().remove(0);
        q.complete(lane.iter().take(3).map(|d| (d.handle, Completion::Done)).collect()).await.unwrap();
        q.complete(lane.iter().skip(3).map(|d| (d.handle, Completion::Release)).collect()).await.unwrap();
        assert_eq!(q.prune(futurnal::time::now_ms() + 1).await.unwrap(), 3, "{name}");
        assert_eq!(q.stats().await.unwrap().depth, 2, "{name}");

        // Asked once per window, by whichever process comes first.
        let now = futurnal::time::now_ms();
        assert!(q.reserve_redelivery("g-1", 9, now, now - 1000).await.unwrap(), "{name}");
        assert!(!q.reserve_redelivery("g-1", 9, now, now - 1000).await.unwrap(), "{name}: once");
        assert!(q.reserve_redelivery("g-1", 9, now + 5000, now + 1).await.unwrap(), "{name}: again after the window");
        q.release_redelivery("g-1").await.unwrap();
        assert!(q.reserve_redelivery("g-1", 9, now, now - 1000).await.unwrap(), "{name}: taken back, asked again");
    }
    cleanup(keep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_add_find_rename_by_github_id_hooks_pings_watermarks_remove() {
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let r = &backend.registry;
        let added = r.add(new_repo("Octo/Hello", None), vec![]).await.unwrap();
        assert!(matches!(r.add(new_repo("octo/hello", None), vec![]).await, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(r.find(RepoRef::Name("OCTO/hello".into())).await.unwrap().unwrap().id, added.id, "{name}");
        // The first delivery teaches the GitHub id; a rename is then followed by id.
        let noted = r.note_delivery(Some(77), Some("octo/hello".into()), 1_000).await.unwrap().unwrap();
        assert_eq!((noted.github_id, noted.last_delivery_at_ms), (Some(77), Some(1_000)), "{name}");
        let renamed = vec![Effect::Repository {
            full_name: Some("octo/renamed".into()),
            github_id: Some(77),
            archived: Some(true),
            deleted: None,
            visibility: Some("private".into()),
            default_branch: None,
        }];
        backend.copy.apply(added.id, renamed, Cause::Sync).await.unwrap();
        let found = r.lookup(Some(77), Some("octo/whatever".into())).await.unwrap().unwrap();
        assert_eq!((found.full_name.as_str(), found.archived), ("octo/renamed", true), "{name}");
        assert!(r.lookup(None, Some("octo/hello".into())).await.unwrap().is_none(), "{name}: the old name is gone");

        r.set_hook(added.id, Some(HookRef::new(9, "https://example.com/hook"))).await.unwrap();
        r.note_ping(9, 5_000).await.unwrap();
        r.note_ping(9, 4_000).await.unwrap();
        let hooked = r.find(RepoRef::Id(added.id)).await.unwrap().unwrap();
        assert_eq!((hooked.hook_id, hooked.last_ping_at_ms), (Some(9), Some(5_000)), "{name}: the newest ping");

        let marks = PollWatermarks { pulls_seen: Some("2026-01-01T00:00:00Z".into()), issues_since: None };
        r.set_poll_watermarks(added.id, marks.clone()).await.unwrap();
        assert_eq!(r.poll_watermarks(added.id).await.unwrap(), marks, "{name}");
        assert_eq!(r.remove(RepoRef::Id(added.id)).await.unwrap().id, added.id, "{name}");
        assert!(r.list().await.unwrap().is_empty(), "{name}");
        fresh.done().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_newer_wins_deletion_sticks_and_unknown_state_keeps_the_stored_one() {
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let repo = backend.registry.add(new_repo("o/r", Some(1)), vec![]).await.unwrap();
        let copy = &backend.copy;
        copy.apply(repo.id, vec![Effect::Issue(issue(1, 2_000, "newer"))], Cause::Sync).await.unwrap();
        copy.apply(repo.id, vec![Effect::Issue(issue(1, 1_000, "older"))], Cause::Sync).await.unwrap();
        let stored = copy.issues(repo.id, IssueState::All, 10).await.unwrap();
        assert_eq!(stored[0].title, "newer", "{name}: an older update never overwrites");
        // A payload without a state (`state` empty) keeps the known one.
        let mut stateless = issue(1, 3_000, "stateless");
        stateless.state = String::new();
        copy.apply(repo.id, vec![Effect::Issue(stateless)], Cause::Sync).await.unwrap();
        let stored = copy.issues(repo.id, IssueState::All, 10).await.unwrap();
        assert_eq!((stored[0].title.as_str(), stored[0].state.as_str()), ("stateless", "open"), "{name}");
        let mut deleted = issue(1, 4_000, "deleted");
        deleted.deleted = true;
        copy.apply(repo.id, vec![Effect::Issue(deleted)], Cause::Sync).await.unwrap();
        copy.apply(repo.id, vec![Effect::Issue(issue(1, 5_000, "after the deletion"))], Cause::Sync).await.unwrap();
        assert!(copy.issues(repo.id, IssueState::All, 10).await.unwrap().is_empty(), "{name}: deletion sticks");
        assert!(copy.pulls(repo.id, PullState::All, 10).await.unwrap().is_empty(), "{name}");
        fresh.done().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_concurrent_enqueues_with_duplicates_store_each_delivery_once_in_order() {
    let (queues, keep) = queues().await;
    for (name, q) in &queues {
        let originals: Vec<NewDelivery> = (0..200).map(|_| queued("o/r", 1, "push")).collect();
        let mut tasks = tokio::task::JoinSet::new();
        // Every delivery twice, at the same moment (GitHub redelivering while the first
        // answer is on its way), plus deliveries for a second domain.
        for d in originals.iter().chain(originals.iter().take(50)) {
            let (q, d) = (q.clone(), d.clone());
            tasks.spawn(async move { q.enqueue(d).await.unwrap() });
        }
        for _ in 0..20 {
            let q = q.clone();
            tasks.spawn(async move { q.enqueue(queued("o/other", 2, "issues")).await.unwrap() });
        }
        let mut stored = 0;
        let mut duplicates = 0;
        while let Some(outcome) = tasks.join_next().await {
            match outcome.unwrap() {
                EnqueueOutcome::Stored => stored += 1,
                EnqueueOutcome::Duplicate => duplicates += 1,
            }
        }
        assert_eq!((stored, duplicates), (220, 50), "{name}");
        assert_eq!(q.stats().await.unwrap().depth, 220, "{name}");
        // Sequential enqueues after that come out after them, in their order.
        let mut later = Vec::new();
        for _ in 0..5 {
            let d = queued("o/r", 1, "push");
            later.push(d.delivery_id.to_string());
            q.enqueue(d).await.unwrap();
        }
        let lanes = q.claim(4, 1000).await.unwrap();
        let git = lanes.iter().find(|l| l[0].event == "push").unwrap();
        assert_eq!(git.len(), 205, "{name}");
        let tail: Vec<String> = git[200..].iter().map(|d| d.delivery_id.clone()).collect();
        assert_eq!(tail, later, "{name}");
        let unique: std::collections::HashSet<_> = git.iter().map(|d| d.delivery_id.clone()).collect();
        assert_eq!(unique.len(), 205, "{name}");
    }
    cleanup(keep).await;
}

/// Leases and fencing: a claim whose lease ran out is claimed again by another worker
/// under a higher token; from then on every write made with the old claim (renewal,
/// result, changes) is refused, and changes it carried are not stored. A worker's own
/// live claim is renewed and finished as usual, with its changes, in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_to_another_worker_and_the_old_claim_writes_nothing() {
    use futurnal::storage::queue::{Changes, Claimer, Report};
    for fresh in backends().await {
        let (name, backend) = (fresh.name, &fresh.backend);
        let (q, copy) = (&backend.queue, &backend.copy);
        let repo = backend.registry.add(new_repo("o/r", Some(1)), vec![]).await.unwrap();
        let first = queued("o/r", 1, "issues");
        let second = queued("o/r", 1, "issues");
        let (first_id, second_id) = (first.delivery_id.to_string(), second.delivery_id.to_string());
        q.enqueue(first).await.unwrap();
        q.enqueue(second).await.unwrap();

        // Worker a claims both under a lease that is over at once.
        let a = Claimer { instance: "worker-a".into(), lease_ms: 0 };
        let a_lane = q.claim_as(&a, 4, 8).await.unwrap().remove(0);
        assert_eq!(a_lane.len(), 2, "{name}");
        let record = q.get(&first_id).await.unwrap().unwrap();
        assert_eq!((record.status, record.worker.as_deref()), (DeliveryStatus::Processing, Some("worker-a")), "{name}");
        assert!(record.started_at_ms.is_some() && record.finished_at_ms.is_none(), "{name}");
        // Wait until the database's clock has moved past a's lease (same millisecond at first).
        let b = Claimer { instance: "worker-b".into(), lease_ms: 60_000 };
        let b_lane = wait_for(Duration::from_secs(10), "the expired lease to be claimed again", || async {
            q.claim_as(&b, 4, 8).await.unwrap().into_iter().next()
        })
        .await;
        assert_eq!(
            b_lane.iter().map(|d| d.delivery_id.clone()).collect::<Vec<_>>(),
            [first_id.clone(), second_id.clone()]
        );
        assert_eq!(b_lane[0].attempts, 1, "{name}: the abandoned attempt counts");
        let record = q.get(&first_id).await.unwrap().unwrap();
        assert_eq!(record.worker.as_deref(), Some("worker-b"), "{name}");
        assert!(record.last_error.as_deref().unwrap_or("").contains("lease of worker worker-a expired"), "{record:?}");
        // a's cut-short attempt is on record: its number, worker, start and why it ended.
        let attempts = q.attempts(&first_id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{name}: {attempts:?}");
        let lost = &attempts[0];
        assert_eq!(
            (lost.attempt, lost.outcome.as_str(), lost.worker.as_deref()),
            (1, "lost", Some("worker-a")),
            "{name}"
        );
        assert!(lost.error.as_deref().unwrap_or("").contains("lease of worker worker-a expired"), "{name}: {lost:?}");
        assert!(lost.started_at_ms.is_some_and(|at| at <= lost.finished_at_ms), "{name}: {lost:?}");
        assert!(q.claim_as(&a, 4, 8).await.unwrap().is_empty(), "{name}: b's live lease holds the domain");

        // a wakes up: its renewal holds nothing, its changes and results are refused.
        let handles = |lane: &[futurnal::storage::queue::ClaimedDelivery]| lane.iter().map(|d| d.handle).collect();
        assert_eq!(q.renew(handles(&a_lane), 60_000).await.unwrap(), 0, "{name}: a's renewal is refused");
        let stale = Report {
            handle: a_lane[0].handle,
            completion: Completion::Done,
            changes: Some(Changes { repo_id: repo.id, effects: vec![Effect::Issue(issue(1, 1_000, "from a"))] }),
        };
        let refused = q.finish(vec![stale, Report::from((a_lane[1].handle, Completion::Done))]).await;
        assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "{name}: {refused:?}");
        assert!(copy.issues(repo.id, IssueState::All, 10).await.unwrap().is_empty(), "{name}: a's change rolled back");
        assert_eq!(q.get(&second_id).await.unwrap().unwrap().status, DeliveryStatus::Processing, "{name}: rolled back");
        // A result alone with the old token changes nothing either.
        q.complete(vec![(a_lane[1].handle, Completion::Dead { error: "from a".into() })]).await.unwrap();
        assert_eq!(q.get(&second_id).await.unwrap().unwrap().status, DeliveryStatus::Processing, "{name}");

        // b renews and finishes, with its changes, under its own token.
        assert_eq!(q.renew(handles(&b_lane), 60_000).await.unwrap(), 2, "{name}");
        let mine = Report {
            handle: b_lane[0].handle,
            completion: Completion::Done,
            changes: Some(Changes { repo_id: repo.id, effects: vec![Effect::Issue(issue(1, 2_000, "from b"))] }),
        };
        q.finish(vec![mine, Report::from((b_lane[1].handle, Completion::Done))]).await.unwrap();
        let stored = copy.issues(repo.id, IssueState::All, 10).await.unwrap();
        assert_eq!(stored.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(), ["from b"], "{name}");
        let record = q.get(&first_id).await.unwrap().unwrap();
        assert_eq!((record.status, record.attempts), (DeliveryStatus::Done, 2), "{name}");
        assert!(record.finished_at_ms >= record.started_at_ms, "{name}: {record:?}");
        assert_eq!(q.stats().await.unwrap().depth, 0, "{name}");
        fresh.done().await;
    }
}
