//! Following the change feed: JSON pages from a cursor across a daemon restart, the
//! long-poll, Server-Sent Events with `Last-Event-ID`, the 410 past the retention and the
//! snapshot to resync from, and `sources github changes [--follow] --json`. On every
//! backend of the run.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::copy::IssueState;
use futurnal::storage::queue::DeliveryStatus;
use futurnal::storage::registry::RepoRef;
use serde_json::Value;

use crate::helpers::*;

/// Delivers issue `number` and waits until it is processed; returns the delivery id.
async fn deliver_issue(app: &TestApp, number: u64) -> String {
    let d = Delivery::new("issues", issue_payload(number, &format!("Issue {number}")));
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 202, "{answer}");
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    id
}

async fn get(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let response = app.client.get(format!("http://{}{path_and_query}", app.admin)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Reads the feed from `since` in pages of `limit` until a page is empty; returns the
/// changes and the cursor to go on from.
async fn read_all(app: &TestApp, mut since: i64, limit: u32) -> (Vec<Value>, i64) {
    let mut all = Vec::new();
    loop {
        let (status, page) = get(app, &format!("/api/changes?since={since}&limit={limit}")).await;
        assert_eq!(status, 200, "{page}");
        let changes = page["changes"].as_array().unwrap().clone();
        assert!(changes.len() <= limit as usize);
        since = page["next"].as_i64().unwrap();
        if changes.is_empty() {
            return (all, since);
        }
        all.extend(changes);
    }
}

fn seqs(changes: &[Value]) -> Vec<i64> {
    changes.iter().map(|c| c["seq"].as_i64().unwrap()).collect()
}

fn keys(changes: &[Value]) -> BTreeSet<String> {
    changes.iter().map(|c| c["key"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_a_cursor_resume_after_a_restart_with_no_gap_and_no_duplicate() {
    let app = spawn_app(AppOptions::default()).await;
    let first = deliver_issue(&app, 1).await;
    deliver_issue(&app, 2).await;
    deliver_issue(&app, 3).await;
    let (before, cursor) = read_all(&app, 0, 2).await;
    assert_eq!(seqs(&before), (1..=before.len() as i64).collect::<Vec<_>>(), "numbered from 1 without a gap");
    assert!(["issue#1", "issue#2", "issue#3"].iter().all(|k| keys(&before).contains(*k)), "{before:?}");
    let one = before.iter().find(|c| c["key"] == "issue#1").unwrap();
    assert_eq!((one["kind"].as_str(), one["op"].as_str()), (Some("issue"), Some("upsert")));
    assert_eq!(one["state"]["title"], "Issue 1");
    assert_eq!(one["cause"], first.as_str());
    assert_eq!(one["repository"], "octo/hello");
    assert!(one["at"].as_str().unwrap().ends_with('Z'), "{one}");
    assert_eq!(cursor, *seqs(&before).last().unwrap());

    // The daemon restarts; the consumer goes on from its cursor.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, AppOptions::default()).await;
    deliver_issue(&app, 4).await;
    deliver_issue(&app, 5).await;
    let (after, _) = read_all(&app, cursor, 1).await;
    assert_eq!(keys(&after), BTreeSet::from(["issue#4".to_owned(), "issue#5".to_owned()]));
    assert_eq!(seqs(&after), [cursor + 1, cursor + 2], "no gap, nothing twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_with_the_next_change_and_an_idle_one_with_an_empty_page() {
    let app = spawn_app(AppOptions::default()).await;
    deliver_issue(&app, 1).await;
    let newest = app.copy.changes_bounds().await.unwrap().newest;

    let (status, idle) = get(&app, &format!("/api/changes?since={newest}&wait=1")).await;
    assert_eq!(status, 200);
    assert_eq!((idle["changes"].as_array().unwrap().len(), idle["next"].as_i64()), (0, Some(newest)));

    let url = format!("http://{}/api/changes?since={newest}&wait=30", app.admin);
    let client = app.client.clone();
    let started = Instant::now();
    let waiting = tokio::spawn(async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() });
    deliver_issue(&app, 2).await;
    let page = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("the long poll answered").unwrap();
    assert!(started.elapsed() < Duration::from_secs(25));
    let changes = page["changes"].as_array().unwrap();
    assert_eq!(keys(changes), BTreeSet::from(["issue#2".to_owned()]), "{page}");
    assert_eq!(page["next"].as_i64(), Some(newest + 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_filters_get_clear_errors() {
    let app = spawn_app(AppOptions::default()).await;
    deliver_issue(&app, 1).await;
    for (query, status, says) in [
        ("since=abc", 400, "since must be a whole number"),
        ("since=-1", 400, "since must be a whole number"),
        ("limit=0", 400, "limit must be at least 1"),
        ("kind=widget", 400, "unknown kind 'widget'"),
        ("repository=octo/nope", 404, "repository octo/nope is not tracked"),
        ("since=999999", 410, "past the newest change"),
    ] {
        let (got, body) = get(&app, &format!("/api/changes?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    // Filters: only the repository's, only the kind's; `next` moves past what they leave out.
    let newest = app.copy.changes_bounds().await.unwrap().newest;
    let (status, page) = get(&app, "/api/changes?repository=octo/hello&kind=issue").await;
    assert_eq!(status, 200);
    assert!(page["changes"].as_array().unwrap().iter().all(|c| c["kind"] == "issue"), "{page}");
    assert_eq!(page["next"].as_i64(), Some(newest));
    let (_, snapshot) = get(&app, "/api/snapshot").await;
    assert!(snapshot["error"].as_str().unwrap().contains("repository is required"), "{snapshot}");
    app.stop().await;
}

/// Reads Server-Sent Events from a response until `until` says stop or 20 s pass.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Sse {
    Change { id: i64, data: Value },
    Named { event: String, data: Value },
    Comment(String),
}

impl Events {
    async fn next(&mut self) -> Sse {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data, mut comment) = (None, None, String::new(), None);
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        comment = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("id:") {
                        id = Some(rest.trim().parse::<i64>().unwrap());
                    } else if let Some(rest) = line.strip_prefix("event:") {
                        event = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push_str(rest.trim_start());
                    }
                }
                return match (id, event, comment) {
                    (_, Some(event), _) => Sse::Named { event, data: serde_json::from_str(&data).unwrap() },
                    (Some(id), None, _) => Sse::Change { id, data: serde_json::from_str(&data).unwrap() },
                    (None, None, Some(comment)) => Sse::Comment(comment),
                    _ => panic!("an event with neither id nor comment: {block:?}"),
                };
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within 20 s")
                .unwrap()
                .expect("the stream is still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next_change(&mut self) -> (i64, Value) {
        loop {
            match self.next().await {
                Sse::Change { id, data } => return (id, data),
                Sse::Comment(_) => continue,
                other => panic!("expected a change, got {other:?}"),
            }
        }
    }
}

async fn stream(app: &TestApp, query: &str, last_event_id: Option<i64>) -> Events {
    let mut request =
        app.client.get(format!("http://{}/api/changes?{query}", app.admin)).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    Events { response, buffer: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_each_change_with_its_number_and_resume_from_last_event_id() {
    let app = spawn_app(AppOptions { toml: "[changes]\nheartbeat_secs = 1\n".into(), ..Default::default() }).await;
    deliver_issue(&app, 1).await;
    deliver_issue(&app, 2).await;
    let newest = app.copy.changes_bounds().await.unwrap().newest;

    let mut events = stream(&app, "since=0", None).await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&(id, _)| id < newest) {
        let (id, data) = events.next_change().await;
        assert_eq!(data["seq"].as_i64(), Some(id), "{data}");
        seen.push((id, data));
    }
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..=newest).collect::<Vec<_>>());
    // Idle: heartbeat comments keep the connection open.
    assert_eq!(events.next().await, Sse::Comment("heartbeat".into()));
    // Live: a change made while connected arrives.
    deliver_issue(&app, 3).await;
    let (live, data) = events.next_change().await;
    assert_eq!((live, data["key"].as_str()), (newest + 1, Some("issue#3")));
    drop(events);

    // Reconnect, as EventSource does, with the last id seen: on from the one after it.
    deliver_issue(&app, 4).await;
    let mut resumed = stream(&app, "since=0", Some(live - 1)).await;
    assert_eq!(resumed.next_change().await.0, live, "Last-Event-ID wins over since");
    let (next, data) = resumed.next_change().await;
    assert_eq!((next, data["key"].as_str()), (live + 1, Some("issue#4")));

    // Filtered: only issue changes of the repository.
    let mut issues = stream(&app, &format!("since={}&kind=issue&repository=octo/hello", live - 1), None).await;
    assert_eq!(issues.next_change().await.1["key"], "issue#3");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_the_retention_gets_410_and_a_snapshot_then_the_feed_rebuild_the_copy() {
    let app = spawn_app(AppOptions::default()).await;
    deliver_issue(&app, 1).await;
    deliver_issue(&app, 2).await;
    let kept_from = app.copy.changes(futurnal::storage::changes::ChangeFilter {
        since: 0,
        limit: 100,
        repository: None,
        kind: Some("issue".into()),
    });
    let second = kept_from.await.unwrap().into_iter().find(|c| c.key == "issue#2").unwrap();
    // Pruned up to (not including) the second issue's change.
    let pruned = app.copy.prune_changes(second.at_ms).await.unwrap();
    let bounds = app.copy.changes_bounds().await.unwrap();
    assert!(pruned >= 1 && bounds.oldest <= second.seq, "pruned {pruned}, {bounds:?}, second at {}", second.seq);
    let pruned_everything = app.copy.prune_changes(futurnal::time::now_ms() + 1).await.unwrap();
    assert!(pruned_everything >= 1);
    let bounds = app.copy.changes_bounds().await.unwrap();
    assert_eq!(bounds.oldest, bounds.newest + 1, "nothing kept: {bounds:?}");

    // A consumer that read nothing yet, or only the first change: 410, with how to resync.
    for since in [0, second.seq - 1] {
        let (status, body) = get(&app, &format!("/api/changes?since={since}")).await;
        assert_eq!(status, 410, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("resync from a snapshot, then follow from seq"), "{error}");
        assert_eq!(body["resume_from"].as_i64(), Some(bounds.newest));
        let sse = app
            .client
            .get(format!("http://{}/api/changes?since={since}", app.admin))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(sse.status(), 410, "a stream from a lost cursor does not start");
    }
    // One at the newest is fine: nothing was lost to it.
    let (status, _) = get(&app, &format!("/api/changes?since={}", bounds.newest)).await;
    assert_eq!(status, 200);

    // The snapshot: every entity as its change would carry it, and where to follow from.
    let (status, snapshot) = get(&app, "/api/snapshot?repository=octo/hello").await;
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["seq"].as_i64(), Some(bounds.newest));
    let repo = app.registry.find(RepoRef::Name("octo/hello".into())).await.unwrap().unwrap();
    let issues = app.copy.issues(repo.id, IssueState::All, 100).await.unwrap();
    let entities = snapshot["entities"].as_array().unwrap();
    for issue in &issues {
        let key = format!("issue#{}", issue.number);
        let entity = entities.iter().find(|e| e["key"] == key.as_str()).unwrap_or_else(|| panic!("{key}"));
        assert_eq!(entity["kind"], "issue");
        assert_eq!(entity["state"], futurnal::output::issue_json(issue));
    }
    assert!(entities.iter().any(|e| e["kind"] == "repository"), "{snapshot}");
    let (_, only_issues) = get(&app, "/api/snapshot?repository=octo/hello&kind=issue").await;
    assert!(only_issues["entities"].as_array().unwrap().iter().all(|e| e["kind"] == "issue"));
    assert_eq!(only_issues["entities"].as_array().unwrap().len(), issues.len());

    // Then the feed from the snapshot's seq: what happened after it, exactly.
    deliver_issue(&app, 3).await;
    let (after, _) = read_all(&app, bounds.newest, 100).await;
    assert_eq!(keys(&after), BTreeSet::from(["issue#3".to_owned()]));
    app.stop().await;
}

/// The signal followers wait on is bumped by every commit that appends changes: at once
/// on SQLite (the writer bumps it before the writer's caller hears back), through
/// PostgreSQL's NOTIFY from the committing transaction on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_wake_the_followers() {
    futurnal::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), "");
    let backend = Backend::open(&config, Purpose::Daemon).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    if let Some(listener) = backend.listener(None, None, true, shutdown.clone()) {
        tokio::spawn(listener);
    }
    let repo = backend
        .registry
        .add(
            futurnal::storage::registry::NewRepository {
                full_name: "octo/signal".into(),
                github_id: None,
                branches: vec![],
                clone_url: None,
                default_branch: Some("main".into()),
            },
            vec![],
        )
        .await
        .unwrap();
    let signal = backend.change_signal();
    // The listener may still be connecting: apply until one is heard (each apply is a
    // change: a different title).
    let heard = wait_for(Duration::from_secs(20), "a commit of changes to be signalled", || {
        let (backend, signal) = (&backend, &signal);
        async move {
            let mut woken = signal.subscribe();
            let effect = futurnal::storage::copy::Effect::Tag { name: new_id(), sha: None };
            backend.copy.apply(repo.id, vec![effect], futurnal::storage::changes::Cause::Sync).await.unwrap();
            tokio::time::timeout(Duration::from_secs(2), woken.changed()).await.ok().map(|_| ())
        }
    })
    .await;
    let () = heard;
    // Listening now (its start wakes followers too, for what it may have missed): each
    // commit of changes is heard.
    for _ in 0..3 {
        let mut woken = signal.subscribe();
        let effect = futurnal::storage::copy::Effect::Tag { name: new_id(), sha: None };
        backend.copy.apply(repo.id, vec![effect], futurnal::storage::changes::Cause::Sync).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), woken.changed())
            .await
            .expect("the commit was announced")
            .unwrap();
    }
    // A commit that changes nothing is not announced.
    let mut woken = signal.subscribe();
    backend.copy.apply(repo.id, vec![], futurnal::storage::changes::Cause::Sync).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), woken.changed()).await.is_err());
    shutdown.cancel();
    backend.close();
}

/// `changes --json` prints one object per line; `--follow` prints changes as they are
/// made, through a daemon restart, with no gap and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changes_command_prints_ndjson_and_follows_through_a_daemon_restart() {
    let app = spawn_app(AppOptions::default()).await;
    deliver_issue(&app, 1).await;
    deliver_issue(&app, 9).await;
    let once = futurnal(app.dir.path(), &["sources", "github", "changes", "--json"]);
    assert_eq!(once.code, 0, "{}", once.stderr);
    let lines: Vec<Value> = once.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|c| c["key"] == "issue#1"), "{}", once.stdout);
    assert_eq!(seqs(&lines), (1..=lines.len() as i64).collect::<Vec<_>>());
    let table = futurnal(app.dir.path(), &["sources", "github", "changes", "octo/hello", "--kind", "issue"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("     SEQ") && table.stdout.contains("issue#1"), "{}", table.stdout);
    let first = futurnal(app.dir.path(), &["sources", "github", "changes", "--json", "--limit", "1"]);
    assert_eq!(first.stdout.lines().count(), 1, "{}", first.stdout);
    assert!(first.stderr.contains("More changes follow: --since 1"), "{}", first.stderr);
    let bad = futurnal(app.dir.path(), &["sources", "github", "changes", "--kind", "widget"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("unknown kind 'widget'"), "{}", bad.stderr);

    let since = *seqs(&lines).last().unwrap();
    let mut follower = bin_in(app.dir.path())
        .args(["sources", "github", "changes", "--follow", "--json", "--since", &since.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let next_line = || rx.recv_timeout(Duration::from_secs(20)).expect("a change within 20 s");

    deliver_issue(&app, 2).await;
    let two = next_line();
    assert_eq!((two["seq"].as_i64(), two["key"].as_str()), (Some(since + 1), Some("issue#2")));
    let dir = app.stop().await;
    let app = spawn_app_in(dir, AppOptions::default()).await;
    deliver_issue(&app, 3).await;
    let three = next_line();
    assert_eq!((three["seq"].as_i64(), three["key"].as_str()), (Some(since + 2), Some("issue#3")));
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing twice");
    let _ = follower.kill();
    let _ = follower.wait();
    app.stop().await;
}
