//! PostgreSQL failing under the daemon, on a server of the test's own (`pg_server`):
//! stopped and started again mid-burst, its sessions killed mid-burst, and the startup
//! errors of a server that cannot be used (wrong password, wrong database, TLS refused).
//!
//! While the database is away the receiver answers 503, never 2xx; once it is back 2xx
//! resume by themselves; every delivery answered 2xx is stored and processed, none twice.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futurnal::handlers::{DeliveryHandler, Handled, HandlerError, HandlerOutcome};
use futurnal::storage::queue::{ClaimedDelivery, DeliveryStatus};
use futurnal::storage::BoxFuture;
use serde_json::Value;

use crate::burst::{assert_only_2xx_or_503, Answer, Burst};
use crate::helpers::*;
use crate::pg_server::{Auth, PrivatePostgres};

const REPO: &str = "octo/hello";
/// Fast worker retries, so work held back by the outage goes on soon after it.
const TOML: &str = "[workers]\nretry_base_ms = 20\nretry_cap_ms = 200\n";

/// Counts how often each delivery reached the handler.
#[derive(Default)]
struct Counting {
    calls: Mutex<HashMap<String, u32>>,
}

impl DeliveryHandler for Counting {
    fn handle<'a>(&'a self, d: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            *self.calls.lock().unwrap().entry(d.delivery_id.clone()).or_default() += 1;
            Ok(HandlerOutcome::Done.into())
        })
    }
}

/// Signed pushes from four clients at once to the app, until stopped.
fn burst(app: &TestApp) -> Burst {
    Burst::start(Arc::new(Mutex::new(vec![app.url()])), 4, u64::MAX, SECRET, |_| ("push", push_body(REPO, 1)))
}

async fn health(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(format!("http://{}/health", app.admin)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for_health_ok(app: &TestApp, limit: Duration) {
    wait_until(limit, "/health to be ok again", || async { health(app).await.0 == 200 }).await;
    let (_, body) = health(app).await;
    assert_eq!(body["database"], "reachable", "{body}");
}

async fn assert_health_unreachable(app: &TestApp) {
    let (status, body) = health(app).await;
    assert_eq!(status, 503, "/health while PostgreSQL is down: {body}");
    assert_eq!(body["database"], "unreachable", "{body}");
}

/// The answers were 2xx or 503 only; every 2xx'd delivery is stored and ends processed
/// (done), and no delivery reached the handler twice.
async fn assert_every_acknowledged_delivery_processed_once(app: &TestApp, handler: &Counting, answers: &[Answer]) {
    assert_only_2xx_or_503(answers);
    let acked: Vec<&str> = answers.iter().filter(|a| a.acknowledged()).map(|a| a.id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: HashMap<String, DeliveryStatus> =
            app.deliveries(None).await.into_iter().map(|r| (r.delivery_id, r.status)).collect();
        let missing: Vec<&&str> = acked.iter().filter(|id| !stored.contains_key(**id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged deliveries were not stored: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let pending: Vec<(&&str, DeliveryStatus)> = acked
            .iter()
            .map(|id| (id, stored[*id]))
            .filter(|(_, s)| !matches!(s, DeliveryStatus::Done | DeliveryStatus::Ignored))
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged deliveries never processed: {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = handler.calls.lock().unwrap().clone();
    let twice: Vec<(&String, &u32)> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} deliveries were processed more than once: {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    for id in &acked {
        assert_eq!(calls.get(*id), Some(&1), "acknowledged delivery {id} reached the handler once");
    }
    let refused = answers.len() - acked.len();
    let stored_anyway = answers.iter().filter(|a| !a.acknowledged() && calls.contains_key(&a.id)).count();
    eprintln!(
        "{} answers: {} acknowledged, {refused} refused ({stored_anyway} of them stored anyway)",
        answers.len(),
        acked.len()
    );
}

async fn app_on(pg: &PrivatePostgres, handler: &Arc<Counting>) -> TestApp {
    spawn_app(AppOptions {
        toml: TOML.into(),
        database_url: Some(pg.url()),
        handler: Some(handler.clone() as Arc<dyn DeliveryHandler>),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_during_a_burst_is_503_while_away_then_nothing_acknowledged_is_lost_or_doubled() {
    let Some(mut pg) = PrivatePostgres::start() else { return };
    let handler = Arc::new(Counting::default());
    let app = app_on(&pg, &handler).await;
    let burst = burst(&app);
    burst.wait_for("acknowledgements before the stop", Duration::from_secs(30), 100, Answer::acknowledged).await;

    pg.stop();
    let down = Instant::now();
    assert_health_unreachable(&app).await;
    burst.wait_for("answers while PostgreSQL is down", Duration::from_secs(30), 30, |a| a.sent >= down).await;
    assert_health_unreachable(&app).await;
    let up = Instant::now();
    pg.start_again();
    let back = Instant::now();
    burst
        .wait_for("acknowledgements after the restart", Duration::from_secs(60), 100, |a| {
            a.sent >= back && a.acknowledged()
        })
        .await;
    wait_for_health_ok(&app, Duration::from_secs(30)).await;
    let answers = burst.finish().await;

    // Sent after the server was down and answered before it was started again: 503 only.
    let while_down: Vec<&Answer> = answers.iter().filter(|a| a.sent >= down && a.answered <= up).collect();
    assert!(!while_down.is_empty());
    let not_503: Vec<&&Answer> = while_down.iter().filter(|a| a.status != Ok(503)).collect();
    assert!(not_503.is_empty(), "answered while PostgreSQL was down: {:?}", &not_503[..not_503.len().min(5)]);
    assert_every_acknowledged_delivery_processed_once(&app, &handler, &answers).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_killed_during_a_burst_lose_nothing_acknowledged_and_process_nothing_twice() {
    let Some(pg) = PrivatePostgres::start() else { return };
    let handler = Arc::new(Counting::default());
    let app = app_on(&pg, &handler).await;
    let burst = burst(&app);
    burst.wait_for("acknowledgements before the first kill", Duration::from_secs(30), 100, Answer::acknowledged).await;
    let mut killed = 0;
    for round in 0..5 {
        killed += pg.terminate_backends().await;
        let after = Instant::now();
        burst
            .wait_for(&format!("acknowledgements after kill {round}"), Duration::from_secs(30), 30, |a| {
                a.sent >= after && a.acknowledged()
            })
            .await;
    }
    assert!(killed >= 5, "the kills ended only {killed} sessions");
    wait_for_health_ok(&app, Duration::from_secs(30)).await;
    let answers = burst.finish().await;
    assert_every_acknowledged_delivery_processed_once(&app, &handler, &answers).await;
    app.stop().await;
}

/// The binary with `args` and `--database-url url` (a dir of its own, no backend of the
/// run's): its exit code and output; killed, and a failure, if it runs past `limit`.
fn run_against(dir: &std::path::Path, url: &str, args: &[&str], limit: Duration) -> CliOutput {
    let mut child = bin()
        .arg("--data-dir")
        .arg(dir)
        .args(["--database-url", url])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still running after {limit:?}: {} {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `cli::a_postgresql_that_cannot_be_used_is_one_clear_line_without_the_password` covers a
/// server that does not answer; these are servers that answer "no".
#[test]
fn postgresql_startup_errors_are_one_clear_line_exit_1_and_never_show_the_password() {
    let Some(pg) = PrivatePostgres::start_with(Auth::Password) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (port, password) = (pg.port(), PrivatePostgres::PASSWORD);
    let limit = Duration::from_secs(60);
    // The right URL works: each failure below is for its own reason.
    let fine = run_against(dir.path(), &pg.url(), &["sources", "github", "list"], limit);
    assert_eq!(fine.code, 0, "{}", fine.stderr);
    let user = PrivatePostgres::USER;
    let cases = [
        (
            "wrong password",
            format!("postgres://{user}:wrong-pw-51b2@127.0.0.1:{port}/{user}"),
            "wrong-pw-51b2",
            "password authentication failed",
        ),
        (
            "wrong database",
            format!("postgres://{user}:{password}@127.0.0.1:{port}/futurnal_no_such_database"),
            password,
            "database \"futurnal_no_such_database\" does not exist",
        ),
        ("TLS required but refused", format!("{}?sslmode=require", pg.url()), password, "server does not support TLS"),
    ];
    let serve = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    for (what, url, secret, expected) in &cases {
        for args in [&["sources", "github", "list"][..], &serve[..]] {
            let out = run_against(dir.path(), url, args, limit);
            let line = out.stderr.trim_end();
            eprintln!("{what}, {}: {line}", args[0]);
            assert_eq!(out.code, 1, "{what}, {args:?}: {line}");
            assert_eq!(line.lines().count(), 1, "{what}, {args:?}: one line: {line}");
            assert!(
                line.starts_with("error: cannot connect to PostgreSQL at ") && line.contains(expected),
                "{what}, {args:?}: {line}"
            );
            assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret), "{what}: the password shows: {line}");
            assert!(!out.stdout.contains("listening"), "{what}: serve started: {}", out.stdout);
        }
    }
}
