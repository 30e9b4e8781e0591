//! Several instances on one PostgreSQL: what they share through the database beyond the
//! queue's own rules (those are in `contract`).

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futurnal::storage::postgres::{PgDb, PostgresOptions, Wake, WakeFn};
use tokio_util::sync::CancellationToken;

use crate::contract::PgSchema;
use crate::helpers::wait_until;

/// A hint from one instance wakes another's workers at once, and after the listening
/// connection is killed it is opened again by itself: the workers are woken then (a hint
/// may have been lost meanwhile), and later hints arrive as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_from_another_instance_wakes_the_workers_and_the_listener_comes_back() {
    let Some(schema) = PgSchema::new().await else { return };
    let options = PostgresOptions { schema: Some(schema.schema.clone()), pool_size: 2 };
    let listening = Arc::new(PgDb::open(&schema.url, options.clone()).await.unwrap());
    let other = PgDb::open(&schema.url, options).await.unwrap();
    let (listens, hints) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let wake: WakeFn = {
        let (listens, hints) = (listens.clone(), hints.clone());
        Arc::new(move |why| {
            let counter = if why == Wake::Listening { &listens } else { &hints };
            counter.fetch_add(1, Ordering::SeqCst);
        })
    };
    let shutdown = CancellationToken::new();
    let listener = tokio::spawn({
        let (db, shutdown) = (listening.clone(), shutdown.clone());
        async move { db.listen_for_work(wake, shutdown).await }
    });
    let count = |counter: &Arc<AtomicUsize>, n: usize| {
        let counter = counter.clone();
        move || {
            let counter = counter.clone();
            async move { counter.load(Ordering::SeqCst) >= n }
        }
    };
    let limit = Duration::from_secs(10);
    wait_until(limit, "the listener to listen", count(&listens, 1)).await;
    other.hint_work().await;
    wait_until(limit, "a hint from the other instance", count(&hints, 1)).await;

    let (admin, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let channel = format!("LISTEN \"futurnal_work_{}\";%", schema.schema);
    let killed = admin
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE $1", &[&channel])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1, "one listening session");
    wait_until(limit, "the listener to listen again", count(&listens, 2)).await;
    assert_eq!(hints.load(Ordering::SeqCst), 1, "no hint was sent meanwhile");
    other.hint_work().await;
    wait_until(limit, "a hint after the reconnection", count(&hints, 2)).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), listener).await.unwrap().unwrap();
    schema.drop_schema().await;
}

/// However often the listening connection is killed, it is opened again at once (the
/// backoff is for attempts that keep failing, not for a session that worked): the
/// workers are woken within a moment every time, not after the longest pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_comes_back_at_once_however_often_its_connection_is_killed() {
    let Some(schema) = PgSchema::new().await else { return };
    let options = PostgresOptions { schema: Some(schema.schema.clone()), pool_size: 2 };
    let listening = Arc::new(PgDb::open(&schema.url, options).await.unwrap());
    let listens = Arc::new(AtomicUsize::new(0));
    let wake: WakeFn = {
        let listens = listens.clone();
        Arc::new(move |why| {
            if why == Wake::Listening {
                listens.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let shutdown = CancellationToken::new();
    let listener = tokio::spawn({
        let (db, shutdown) = (listening.clone(), shutdown.clone());
        async move { db.listen_for_work(wake, shutdown).await }
    });
    let (admin, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let channel = format!("LISTEN \"futurnal_work_{}\";%", schema.schema);
    wait_until(Duration::from_secs(10), "the listener to listen", || async { listens.load(Ordering::SeqCst) >= 1 })
        .await;
    // A backoff kept from one drop to the next would reach 1.6 s at the fifth and 3.2 s
    // at the sixth; opened again at once, each takes a few milliseconds.
    for kill in 1..=8 {
        let killed = admin
            .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE $1", &[&channel])
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(killed, 1, "one listening session");
        let what = format!("the listener to listen again after kill {kill}");
        wait_until(Duration::from_secs(2), &what, || async { listens.load(Ordering::SeqCst) > kill }).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), listener).await.unwrap().unwrap();
    schema.drop_schema().await;
}

const REPO: &str = "octo/hello";
const ZOMBIE_SECRET: &str = "zombie-test-secret";

/// The binary on data dir `dir` with `env`, its success checked: what it printed.
fn run_cli(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let output =
        crate::helpers::bin().arg("--data-dir").arg(dir).args(args).envs(env.iter().copied()).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `run_cli` with `--json`, its document parsed.
fn cli_json(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = std::iter::once("--json").chain(args.iter().copied()).collect();
    serde_json::from_str(&run_cli(dir, env, &args)).unwrap()
}

/// A delivery's record as `deliveries --json` prints it, read from the database.
fn delivery_json(dir: &std::path::Path, env: &[(&str, &str)], id: &str) -> Option<serde_json::Value> {
    let all = cli_json(dir, env, &["sources", "github", "webhook", "deliveries", "--limit", "100"]);
    all.as_array().unwrap().iter().find(|d| d["delivery_id"] == id).cloned()
}

/// A worker stopped (SIGSTOP) while it holds a lease: once the lease is over another
/// instance claims the delivery. The first one runs again while the second still works
/// on it (both see it `processing`, so only the token tells them apart): every write the
/// first attempts is refused, it stops, and the second finishes undisturbed; the
/// delivery has the second's result, and the local copy has no change from the first
/// (the repository's `synced_at`, which every stored change moves, stays as the second
/// worker left it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_loses_its_lease_and_can_write_nothing_when_it_runs_again() {
    use crate::helpers::*;
    let Some(schema) = PgSchema::new().await else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path, extra: &str| {
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!("[postgres]\nschema = \"{}\"\n[workers]\nlease_secs = 1\n{extra}", schema.schema),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    // Each waits 3 s before a handler: long enough to be stopped, or resumed, while the
    // other holds the delivery.
    let delay = "test_handler_delay_ms = 3000\n";
    let (config_a, config_b) = (config(dir_a.path(), delay), config(dir_b.path(), delay));
    fn env<'a>(url: &'a str, config: &'a str, instance: &'a str) -> [(&'static str, &'a str); 4] {
        [
            ("FUTURNAL_DATABASE_URL", url),
            ("FUTURNAL_CONFIG", config),
            ("FUTURNAL_WEBHOOK_SECRET", ZOMBIE_SECRET),
            ("FUTURNAL_INSTANCE", instance),
        ]
    }
    let (env_a, env_b) = (env(&schema.url, &config_a, "worker-a"), env(&schema.url, &config_b, "worker-b"));
    run_cli(
        dir_a.path(),
        &env_a,
        &["sources", "github", "add", REPO, "--no-sync", "--clone-url", "file:///nonexistent.git"],
    );
    let a = start_daemon(dir_a.path(), &env_a);

    let id = new_id();
    let body = serde_json::to_vec(&serde_json::json!({
        "action": "opened",
        "issue": {"number": 7, "title": "Seen by one worker", "state": "open",
                  "updated_at": "2026-05-01T00:00:00Z", "user": {"login": "mona"}},
        "repository": {"id": 4242, "full_name": REPO, "name": "hello"},
    }))
    .unwrap();
    futurnal::install_tls_provider();
    let answer = reqwest::Client::new()
        .post(a.url())
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", &id)
        .header("x-hub-signature-256", signature(ZOMBIE_SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let limit = Duration::from_secs(20);
    let dir = dir_a.path().to_owned();
    wait_until(limit, "worker-a to claim the delivery", || {
        let record = delivery_json(&dir, &env_a, &id);
        async move { record.is_some_and(|r| r["status"] == "processing" && r["worker"] == "worker-a") }
    })
    .await;
    a.signal("STOP");

    // B claims it once A's lease is over; A runs again while B works on it.
    let b = start_daemon(dir_b.path(), &env_b);
    let dir = dir_b.path().to_owned();
    wait_until(limit, "worker-b to claim the delivery", || {
        let record = delivery_json(&dir, &env_b, &id);
        async move { record.is_some_and(|r| r["status"] == "processing" && r["worker"] == "worker-b") }
    })
    .await;
    a.signal("CONT");
    wait_until(limit, "worker-a to find its lease lost", || {
        let log = a.stderr();
        async move { log.contains("lease was lost") }
    })
    .await;
    let done = wait_for(limit, "worker-b to finish the delivery", || {
        let record = delivery_json(&dir, &env_b, &id);
        async move { record.filter(|r| r["status"] == "done") }
    })
    .await;
    assert_eq!(done["worker"], "worker-b", "{done}");
    assert_eq!(done["attempts"], 2, "A's abandoned attempt counts: {done}");
    assert!(!b.stderr().contains("lease was lost"), "B kept its lease: {}", b.stderr());
    let show = |dir: &std::path::Path, env: &[(&str, &str)]| cli_json(dir, env, &["sources", "github", "show", REPO]);
    let synced_by_b = show(dir_b.path(), &env_b)["synced_at"].clone();
    assert!(synced_by_b.is_string(), "B stored the change");
    // Nothing from A afterwards either (its lane stopped when the lease was lost).
    let again = delivery_json(dir_b.path(), &env_b, &id).unwrap();
    assert_eq!(again, done, "the delivery keeps B's result");
    assert_eq!(show(dir_b.path(), &env_b)["synced_at"], synced_by_b, "no change from A reached the local copy");
    let issues = cli_json(dir_b.path(), &env_b, &["sources", "github", "issues", REPO]);
    assert_eq!(issues.as_array().map(Vec::len), Some(1), "{issues}");
    assert!(!a.stderr().contains(ZOMBIE_SECRET) && !b.stderr().contains(ZOMBIE_SECRET));
    assert!(!a.stderr().contains("Delivery processed"), "A claims nothing it did not store: {}", a.stderr());
    drop((a, b));
    schema.drop_schema().await;
}

/// `/health` of one instance, or `None` while it does not answer.
async fn health(admin: std::net::SocketAddr) -> Option<serde_json::Value> {
    let response = reqwest::get(format!("http://{admin}/health")).await.ok()?;
    response.json().await.ok()
}

/// The leader killed (kill -9): another instance takes the lease within one lease period
/// (plus one heartbeat) and its singletons run there: polling syncs a commit pushed after
/// the kill. Both instances list each other on `/health`, one of them as the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_instance_leads_within_one_lease_and_polls() {
    use crate::helpers::*;
    let Some(schema) = PgSchema::new().await else { return };
    futurnal::install_tls_provider();
    let lease = Duration::from_secs(3);
    let root = tempfile::tempdir().unwrap();
    let remote = GitRemote::new(root.path(), REPO);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let configs: Vec<String> = dirs
        .iter()
        .map(|dir| {
            let path = dir.path().join("config.toml");
            std::fs::write(
                &path,
                format!(
                    "[postgres]\nschema = \"{}\"\n[serve]\nleader_lease_secs = {}\n[poll]\ninterval_secs = 1\n",
                    schema.schema,
                    lease.as_secs()
                ),
            )
            .unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    let env = |i: usize| {
        [
            ("FUTURNAL_DATABASE_URL", schema.url.clone()),
            ("FUTURNAL_CONFIG", configs[i].clone()),
            ("FUTURNAL_INSTANCE", format!("node-{i}")),
        ]
    };
    let envs: Vec<Vec<(&str, String)>> = (0..2).map(|i| env(i).to_vec()).collect();
    let refs = |i: usize| envs[i].iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>();
    run_cli(dirs[0].path(), &refs(0), &["sources", "github", "add", REPO, "--clone-url", &remote.url()]);
    let mut daemons: Vec<Option<Daemon>> = (0..2).map(|i| Some(start_daemon(dirs[i].path(), &refs(i)))).collect();
    let admins: Vec<_> = daemons.iter().map(|d| d.as_ref().unwrap().admin).collect();
    let limit = Duration::from_secs(20);

    // One leader, and each instance lists both.
    let leader = wait_for(limit, "one leader among two listed instances", || async {
        let (a, b) = (health(admins[0]).await?, health(admins[1]).await?);
        let listed = |h: &serde_json::Value| h["instances"].as_array().map_or(0, Vec::len) == 2;
        match (a["leader"].as_bool()?, b["leader"].as_bool()?) {
            (true, false) if listed(&a) && listed(&b) => Some(0),
            (false, true) if listed(&a) && listed(&b) => Some(1),
            _ => None,
        }
    })
    .await;
    let follower = 1 - leader;
    let follower_log = daemons[follower].as_ref().unwrap().stderr_path.clone();
    assert!(!std::fs::read_to_string(&follower_log).unwrap().contains("Leading:"), "the follower runs no singleton");

    let mut dead = daemons[leader].take().unwrap();
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let killed = std::time::Instant::now();
    wait_until(limit, "the follower to lead", || async {
        health(admins[follower]).await.is_some_and(|h| h["leader"] == true)
    })
    .await;
    let took = killed.elapsed();
    assert!(took <= lease + lease / 5 + Duration::from_millis(700), "took over after {took:?} (lease {lease:?})");
    assert!(std::fs::read_to_string(&follower_log).unwrap().contains("Leading:"));

    // Its poller runs: a commit pushed now reaches the local copy.
    let head = remote.commit("after.txt", "after the failover\n", "Pushed after the leader died");
    remote.push("main");
    let dir = dirs[follower].path().to_owned();
    let follower_env = refs(follower);
    wait_until(limit, "the new leader's poller to sync the new commit", || {
        let branches = run_cli(&dir, &follower_env, &["--json", "sources", "github", "branches", REPO]);
        let head = head.clone();
        async move { branches.contains(&head) }
    })
    .await;
    eprintln!("leader failover took {took:?} with a {lease:?} lease");
    drop(daemons);
    schema.drop_schema().await;
}

/// The git sync lock across hosts: a repository's advisory lock in the database, taken by
/// one instance's store, refused to everyone else while held, handed to the next taker
/// when the guard is dropped, and released by it in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_git_sync_lock_lives_in_the_database_for_every_host() {
    use futurnal::storage::backend::{Backend, Purpose};
    let Some(schema) = PgSchema::new().await else { return };
    let open = || {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::helpers::sqlite_config_for(dir.path(), "");
        config.database = futurnal::config::DatabaseUrl::Postgres(schema.url.clone());
        config.postgres.schema = Some(schema.schema.clone());
        async move { (Backend::open(&config, Purpose::Command).await.unwrap(), dir) }
    };
    let ((host_a, _dir_a), (host_b, _dir_b)) = (open().await, open().await);
    let (admin, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let held_elsewhere = || async {
        // Granted to some session right now.
        let key = "SELECT objid::INT FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = 7";
        !admin.query(key, &[]).await.unwrap().is_empty()
    };
    let guard_a = host_a.copy.lock_repository(7).await.unwrap().expect("PostgreSQL locks in the database");
    assert!(held_elsewhere().await, "the lock is in the database");
    let copy_b = host_b.copy.clone();
    let waiting = tokio::spawn(async move { copy_b.lock_repository(7).await.unwrap() });
    let limit = Duration::from_secs(10);
    // B keeps trying while A holds it; once A lets go, B has it.
    assert!(!waiting.is_finished(), "B cannot have it while A holds it");
    drop(guard_a);
    let guard_b = tokio::time::timeout(limit, waiting).await.expect("B takes it once A let go").unwrap();
    assert!(held_elsewhere().await, "now B holds it");
    drop(guard_b);
    wait_until(limit, "B's lock to be released", || async { !held_elsewhere().await }).await;
    host_a.close();
    host_b.close();
    schema.drop_schema().await;
}

/// Instances started at the same moment on a schema that does not exist yet all open it
/// (`CREATE SCHEMA IF NOT EXISTS` alone races: found starting two by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_at_once_on_a_new_schema_all_open_it() {
    for _ in 0..3 {
        let Some(schema) = PgSchema::new().await else { return };
        let options = PostgresOptions { schema: Some(schema.schema.clone()), pool_size: 2 };
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let (url, options) = (schema.url.clone(), options.clone());
                tokio::spawn(async move { PgDb::open(&url, options).await.map(|_| ()).map_err(|e| format!("{e:#}")) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
        schema.drop_schema().await;
    }
}
