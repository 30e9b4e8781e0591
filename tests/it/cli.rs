//! The command line as a user meets it: the real binary, its output and exit codes.

use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn repositories_are_added_listed_shown_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let added = futurnal(
        d,
        &["--json", "sources", "github", "add", "octo/hello", "--no-sync", "--branch", "main", "--branch", "release/*"],
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let repo = added.json();
    assert_eq!(repo["repository"], "octo/hello");
    assert_eq!(repo["branches"], serde_json::json!(["main", "release/*"]));
    let id = repo["id"].as_i64().unwrap().to_string();

    let again = futurnal(d, &["sources", "github", "add", "octo/hello", "--no-sync"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already tracked"), "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1, "{}", again.stderr);

    let list = futurnal(d, &["--json", "sources", "github", "list"]).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    for key in ["id", "repository", "github_id", "branches", "clone_url", "mode"] {
        assert!(list[0].get(key).is_some(), "list lacks {key}");
    }
    assert_eq!(list[0]["mode"], "polling");

    let table = futurnal(d, &["sources", "github", "list"]);
    assert!(table.stdout.starts_with("ID") && table.stdout.contains("octo/hello"), "{}", table.stdout);

    assert_eq!(futurnal(d, &["--json", "sources", "github", "show", &id]).json()["repository"], "octo/hello");
    assert_eq!(futurnal(d, &["--json", "sources", "github", "show", "OCTO/hello"]).json()["id"].to_string(), id);
    assert_eq!(futurnal(d, &["sources", "github", "remove", "octo/hello"]).code, 0);
    let gone = futurnal(d, &["sources", "github", "show", &id]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("not tracked"));
}

/// `futurnal … | head` (or `| grep -q`): the reader is gone before the command writes.
/// The command ends quietly with status 0, as `git log | head` does; it used to panic
/// ("failed printing to stdout: Broken pipe") with a backtrace on stderr.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(futurnal(d, &["sources", "github", "add", "octo/hello", "--no-sync"]).code, 0);
    for args in [
        &["--json", "sources", "github", "list"][..],
        &["sources", "github", "list"],
        &["sources", "github", "show", "octo/hello"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = bin_in(d).args(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} printed on stderr: {stderr}");
    }
}

#[test]
fn bad_input_is_a_clear_one_line_error_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (&["sources", "github", "add", "not-a-repo", "--no-sync"], "OWNER/NAME"),
        (&["sources", "github", "add", "octo/hello", "--clone-url", "/nonexistent/remote.git"], "does not exist"),
        (&["sources", "github", "webhook", "deliveries", "--status", "weird"], "unknown delivery status"),
        (&["sources", "github", "webhook", "replay", "nope"], "no stored delivery"),
        (&["--database-url", "postgres://localhost/x", "sources", "github", "list"], "PostgreSQL"),
        (&["sources", "github", "webhook", "simulate", "workflow_run"], "no built-in example"),
    ];
    for (args, expected) in cases {
        let out = futurnal(d, args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: ") && out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{args:?}: {}", out.stderr);
    }
    assert_eq!(futurnal(d, &["sources", "github", "frobnicate"]).code, 2);
    assert_eq!(futurnal(d, &["serve", "--listen", "not-an-address"]).code, 2);
    let config = d.join("bad.toml");
    std::fs::write(&config, "[webhook]\nsecrett = 1\n").unwrap();
    let out = futurnal(d, &["--config", config.to_str().unwrap(), "sources", "github", "list"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid config file"), "{}", out.stderr);
}

#[test]
fn simulate_every_event_against_a_running_daemon_then_list_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = GitRemote::new(d, "hello-world");
    let added = futurnal(d, &["sources", "github", "add", "Codertocat/Hello-World", "--clone-url", &remote.url()]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let mut daemon = start_daemon(d, &[]);
    let url = daemon.url();
    let events = [
        "push",
        "pull_request",
        "issues",
        "issue_comment",
        "release",
        "create",
        "delete",
        "repository",
        "pull_request_review",
        "pull_request_review_comment",
        "label",
        "milestone",
        "ping",
    ];
    for event in events {
        let out = futurnal(d, &["--json", "sources", "github", "webhook", "simulate", event, "--url", &url]);
        assert_eq!(out.code, 0, "{event}: {} {}", out.stdout, out.stderr);
        let sent = out.json();
        let expected = if event == "ping" { 200 } else { 202 };
        assert_eq!(sent["http_status"], expected, "{event}: {sent}");
        if event != "ping" {
            assert_eq!(sent["response"]["status"], "queued", "{event}: {sent}");
        }
    }
    // Our own payload, retargeted at a repository nobody tracks: ignored.
    let payload = d.join("custom.json");
    std::fs::write(&payload, push_body("octo/custom", 77)).unwrap();
    let out = futurnal(
        d,
        &[
            "--json",
            "sources",
            "github",
            "webhook",
            "simulate",
            "push",
            "--payload",
            payload.to_str().unwrap(),
            "--url",
            &url,
        ],
    );
    assert_eq!(out.json()["response"]["status"], "ignored");

    // Wait for the workers, reading what a user would read.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let deliveries = loop {
        let list = futurnal(d, &["--json", "sources", "github", "webhook", "deliveries"]).json();
        let done = list.as_array().unwrap().iter().filter(|r| r["status"] == "done").count();
        if done == events.len() {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "not all done: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = deliveries.as_array().unwrap();
    assert_eq!(rows.len(), events.len() + 1);
    for key in
        ["delivery_id", "event", "action", "repository", "hook_id", "received_at", "status", "attempts", "last_error"]
    {
        assert!(rows[0].get(key).is_some(), "deliveries lacks {key}");
    }
    assert_eq!(rows[0]["event"], "push", "newest first");
    assert!(rows[0]["received_at"].as_str().unwrap().ends_with('Z'));
    let ignored = futurnal(d, &["--json", "sources", "github", "webhook", "deliveries", "--status", "ignored"]).json();
    assert_eq!(ignored.as_array().unwrap().len(), 1);
    let for_repo = futurnal(
        d,
        &["--json", "sources", "github", "webhook", "deliveries", "Codertocat/Hello-World", "--limit", "3"],
    )
    .json();
    assert_eq!(for_repo.as_array().unwrap().len(), 3);
    assert!(for_repo.as_array().unwrap().iter().all(|r| r["repository"] == "Codertocat/Hello-World"));
    // The built-in examples are in the local copy, as the queries show it.
    for (query, key, expected) in [
        (&["reviews", "Codertocat/Hello-World"][..], "id", serde_json::json!(237895671)),
        (&["review-comments", "Codertocat/Hello-World", "--pull", "2"], "id", serde_json::json!(284312630)),
        (&["labels", "Codertocat/Hello-World"], "name", serde_json::json!(":bug: Bugfix")),
        (&["milestones", "Codertocat/Hello-World"], "title", serde_json::json!("v1.0")),
    ] {
        let mut args = vec!["--json", "sources", "github"];
        args.extend_from_slice(query);
        let listed = futurnal(d, &args).json();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{query:?}: {listed}");
        assert_eq!(listed[0][key], expected, "{query:?}: {listed}");
    }

    // Replay from the CLI while the daemon runs: processed again.
    let replay_id =
        rows.iter().find(|r| r["event"] == "pull_request").unwrap()["delivery_id"].as_str().unwrap().to_owned();
    let replay = futurnal(d, &["--json", "sources", "github", "webhook", "replay", &replay_id]);
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert_eq!(replay.json()["status"], "queued");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = futurnal(d, &["--json", "sources", "github", "webhook", "deliveries", "--limit", "100"]).json();
        let row = list.as_array().unwrap().iter().find(|r| r["delivery_id"] == replay_id.as_str()).cloned().unwrap();
        if row["status"] == "done" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replay never processed: {row}");
        std::thread::sleep(Duration::from_millis(100));
    }

    daemon.signal("INT");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    let human = futurnal(d, &["sources", "github", "webhook", "deliveries"]);
    assert!(human.stdout.starts_with("DELIVERY"), "{}", human.stdout);
}

/// `sync` beside another process syncing the same repository (here: this test holding the
/// lock, as a daemon handling a push would) waits for it instead of racing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waits_for_another_process_syncing_the_same_repository() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let remote = GitRemote::new(&d, "hello");
    let added = futurnal(
        &d,
        &["--json", "sources", "github", "add", "octo/hello", "--clone-url", remote.bare.to_str().unwrap()],
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let id = added.json()["id"].as_i64().unwrap();
    let newer = remote.commit("n.txt", "n\n", "Newer");
    remote.push("main");

    let held = futurnal::sync::lock_repository_everywhere(&d, id).await.unwrap();
    let mut child = bin_in(&d)
        .args(["sources", "github", "sync", "octo/hello"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The kernel lists a process waiting for a file lock in /proc/locks ("->" lines).
    let pid = child.id();
    wait_until(Duration::from_secs(10), "sync to wait for the repository's lock", || async move {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        locks.lines().any(|l| l.contains("->") && l.split_whitespace().any(|f| f == pid.to_string()))
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "sync waits while another process holds the repository");
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "sync did not finish once the lock was released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let commits = futurnal(&d, &["--json", "sources", "github", "commits", "octo/hello", "--limit", "1"]).json();
    assert_eq!(commits[0]["sha"], newer.as_str());
}

#[test]
fn deliveries_honour_any_limit_and_page_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 10,010 deliveries, written concurrently (the writer commits them in batches).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let config = config_for(d, "[sqlite]\nsynchronous = \"normal\"\n");
        let backend = futurnal::storage::backend::Backend::open(&config, futurnal::storage::backend::Purpose::Command)
            .await
            .unwrap();
        let mut writes = tokio::task::JoinSet::new();
        for _ in 0..10_010 {
            let queue = backend.queue.clone();
            writes.spawn(async move {
                let delivery = futurnal::storage::queue::NewDelivery {
                    delivery_id: futurnal::domain::DeliveryId::random(),
                    event: "issues".into(),
                    action: None,
                    repository: Some("octo/hello".into()),
                    repository_github_id: Some(1),
                    hook_id: None,
                    received_at_ms: futurnal::time::now_ms(),
                    body: futurnal::storage::queue::StoredBody::Raw(b"{}".to_vec()),
                    initial: futurnal::storage::queue::InitialStatus::Ignored("not tracked".into()),
                };
                queue.enqueue(delivery).await.unwrap();
            });
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap();
        }
        backend.close();
    });

    let page = futurnal(d, &["--json", "sources", "github", "webhook", "deliveries", "--limit", "10005"]);
    assert_eq!(page.code, 0, "{}", page.stderr);
    let rows = page.json();
    assert_eq!(rows.as_array().unwrap().len(), 10_005);
    let last = rows[10_004]["delivery_id"].as_str().unwrap().to_owned();
    assert!(page.stderr.contains(&format!("--before {last}")), "says more exist: {}", page.stderr);

    let rest =
        futurnal(d, &["--json", "sources", "github", "webhook", "deliveries", "--limit", "10", "--before", &last]);
    assert_eq!(rest.code, 0, "{}", rest.stderr);
    assert_eq!(rest.json().as_array().unwrap().len(), 5);
    assert!(!rest.stderr.contains("More deliveries"), "{}", rest.stderr);

    let all = futurnal(d, &["--json", "sources", "github", "webhook", "deliveries", "--limit", "20000"]);
    assert_eq!(all.json().as_array().unwrap().len(), 10_010);
    assert_eq!(futurnal(d, &["sources", "github", "webhook", "deliveries", "--limit", "0"]).code, 2);
    let unknown = futurnal(d, &["sources", "github", "webhook", "deliveries", "--before", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("no stored delivery"), "{}", unknown.stderr);
}

/// A server that does not answer; servers that answer "no" (wrong password, unknown
/// database, TLS refused) are `pg_faults::postgresql_startup_errors_…`, on a server of
/// their own.
#[test]
fn a_postgresql_that_cannot_be_used_is_one_clear_line_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unreachable =
        futurnal(d, &["--database-url", "postgres://u:pw-7c1e@127.0.0.1:9/x", "sources", "github", "list"]);
    assert_eq!(unreachable.code, 1, "{}", unreachable.stderr);
    assert!(unreachable.stderr.contains("cannot connect to PostgreSQL"), "{}", unreachable.stderr);
    assert!(
        !unreachable.stderr.contains("pw-7c1e") && unreachable.stderr.lines().count() == 1,
        "{}",
        unreachable.stderr
    );
}
