//! Several `serve` processes on one PostgreSQL schema, under faults: one killed with
//! SIGKILL in the middle of a burst and started again, every session of the instances
//! terminated in the middle of a burst, one domain's head failing over and over while the
//! other domains flow, and enqueues for one domain racing from three receivers.
//!
//! Each test reads what happened from the database: `deliveries` (status, attempts, place
//! in its domain, the last claim's token and times) and `effect_audit`
//! (`[workers] test_effect_audit`: one row per stored set of changes, written in the
//! transaction that stores them, with the database's clock).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::burst::{acknowledged_ids, assert_only_2xx_or_503, Answer, Burst};
use crate::contract::PgSchema;
use crate::helpers::*;

const CLUSTER_SECRET: &str = "cluster-faults-secret-5e21";
/// Repositories of a burst: `faults/repo-N`, GitHub id `GITHUB_ID + N`.
const REPOS: usize = 20;
const GITHUB_ID: u64 = 93_000;
/// A clone URL whose fetch fails (no git needed for metadata deliveries).
const NO_REMOTE: &str = "file:///nonexistent.git";

fn repo_name(repo: usize) -> String {
    format!("faults/repo-{repo}")
}

fn repository_json(repo: usize) -> serde_json::Value {
    serde_json::json!({"id": GITHUB_ID + repo as u64, "full_name": repo_name(repo), "name": format!("repo-{repo}")})
}

fn meta_domain(repo: usize) -> String {
    format!("id:{}/meta", GITHUB_ID + repo as u64)
}

fn git_domain(repo: usize) -> String {
    format!("id:{}/git", GITHUB_ID + repo as u64)
}

/// An `issues` delivery (the metadata domain) for `repo`; `seq` varies the issue and its
/// `updated_at`.
fn issue_body(repo: usize, seq: u64) -> Vec<u8> {
    let updated_at = format!("2026-05-01T{:02}:{:02}:{:02}Z", (seq / 3600) % 24, (seq / 60) % 60, seq % 60);
    serde_json::to_vec(&serde_json::json!({
        "action": "edited",
        "issue": {"number": seq % 40 + 1, "title": format!("Issue edit {seq}"), "state": "open",
                  "updated_at": updated_at, "user": {"login": "mona"}},
        "repository": repository_json(repo),
    }))
    .unwrap()
}

/// The `n`-th delivery of a burst over all the repositories, round-robin.
fn spread_issue(n: u64) -> (&'static str, Vec<u8>) {
    ("issues", issue_body((n % REPOS as u64) as usize, n))
}

/// A push of `main` for `repo` (the git domain).
fn push_of(repo: usize, after: &str) -> Vec<u8> {
    push_payload(&repo_name(repo), GITHUB_ID + repo as u64, "refs/heads/main", &"1".repeat(40), after)
}

/// Sends one delivery signed with the cluster's secret.
async fn send(client: &reqwest::Client, url: &str, event: &str, id: &str, body: &[u8]) -> Result<u16, String> {
    crate::burst::send(client, url, CLUSTER_SECRET, event, id, body).await
}

/// One `serve` process of the cluster: its name, data dir and config file.
struct Instance {
    name: String,
    dir: tempfile::TempDir,
    config: String,
    daemon: Option<Daemon>,
    /// Earlier processes under this name (killed), kept for their logs.
    gone: Vec<Daemon>,
}

/// Instances sharing one fresh schema, and a connection of the test's own to read it.
struct Cluster {
    schema: PgSchema,
    /// The instances' URL: with an `application_name` of this schema's own, so their
    /// sessions are told apart from every other on the shared server.
    url: String,
    application_name: String,
    instances: Vec<Instance>,
    db: tokio_postgres::Client,
}

impl Cluster {
    async fn new(names: &[&str], workers_toml: &str) -> Option<Self> {
        let schema = PgSchema::new().await?;
        let application_name = format!("futurnal_{}", schema.schema.to_ascii_lowercase());
        let separator = if schema.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}application_name={application_name}", schema.url);
        let instances = names
            .iter()
            .map(|name| {
                let dir = tempfile::tempdir().unwrap();
                let config = dir.path().join("config.toml");
                let toml = format!("[postgres]\nschema = \"{}\"\n[workers]\n{workers_toml}", schema.schema);
                std::fs::write(&config, toml).unwrap();
                let config = config.to_string_lossy().into_owned();
                Instance { name: (*name).to_owned(), dir, config, daemon: None, gone: Vec::new() }
            })
            .collect();
        let (db, connection) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        Some(Self { schema, url, application_name, instances, db })
    }

    fn env(&self, i: usize) -> [(&str, &str); 4] {
        let instance = &self.instances[i];
        [
            ("FUTURNAL_DATABASE_URL", self.url.as_str()),
            ("FUTURNAL_CONFIG", instance.config.as_str()),
            ("FUTURNAL_WEBHOOK_SECRET", CLUSTER_SECRET),
            ("FUTURNAL_INSTANCE", instance.name.as_str()),
        ]
    }

    /// Tracks `name` with `clone_url` as its remote: registered only, no first sync.
    fn track(&self, name: &str, clone_url: &str) {
        let output = bin()
            .arg("--data-dir")
            .arg(self.instances[0].dir.path())
            .args(["sources", "github", "add", name, "--no-sync", "--clone-url", clone_url])
            .envs(self.env(0))
            .output()
            .unwrap();
        assert!(output.status.success(), "add {name}: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    fn start_with(&mut self, i: usize, args: &[&str]) {
        let args: Vec<&str> = ["--no-poll"].iter().chain(args).copied().collect();
        let daemon = start_daemon_with(self.instances[i].dir.path(), &self.env(i), &args);
        self.instances[i].daemon = Some(daemon);
    }

    /// SIGKILL, waited for.
    fn kill(&mut self, i: usize) {
        let mut daemon = self.instances[i].daemon.take().expect("the instance runs");
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        self.instances[i].gone.push(daemon);
    }

    fn url(&self, i: usize) -> String {
        self.instances[i].daemon.as_ref().expect("the instance runs").url()
    }

    /// Everything instance `i` logged, in all its processes.
    fn log(&self, i: usize) -> String {
        let instance = &self.instances[i];
        instance.gone.iter().chain(&instance.daemon).map(Daemon::stderr).collect::<Vec<_>>().join("\n")
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema.schema)
    }

    async fn stored(&self) -> Vec<Stored> {
        let sql = format!(
            "SELECT delivery_id, domain, position, status, attempts, worker, fence, started_at, finished_at \
             FROM {} ORDER BY id",
            self.table("deliveries")
        );
        let rows = self.db.query(&sql, &[]).await.unwrap();
        rows.iter()
            .map(|r| Stored {
                delivery_id: r.get(0),
                domain: r.get(1),
                position: r.get(2),
                status: r.get(3),
                attempts: r.get(4),
                worker: r.get(5),
                fence: r.get(6),
                started_at: r.get(7),
                finished_at: r.get(8),
            })
            .collect()
    }

    async fn stored_by_id(&self) -> HashMap<String, Stored> {
        self.stored().await.into_iter().map(|d| (d.delivery_id.clone(), d)).collect()
    }

    async fn audit(&self) -> Vec<Applied> {
        let sql = format!(
            "SELECT delivery_id, domain, position, worker, fence, applied_at FROM {} ORDER BY id",
            self.table("effect_audit")
        );
        let rows = self.db.query(&sql, &[]).await.unwrap();
        rows.iter()
            .map(|r| Applied {
                delivery_id: r.get(0),
                domain: r.get(1),
                position: r.get(2),
                worker: r.get(3),
                fence: r.get(4),
                applied_at: r.get(5),
            })
            .collect()
    }

    /// The deliveries `worker` holds claimed right now.
    async fn processing_by(&self, worker: &str) -> Vec<String> {
        let sql =
            format!("SELECT delivery_id FROM {} WHERE status = 'processing' AND worker = $1", self.table("deliveries"));
        self.db.query(&sql, &[&worker]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }

    /// Terminates every session of the instances (the pools' and the work listeners'):
    /// how many, and how many of them were listening.
    async fn terminate_sessions(&self) -> (usize, usize) {
        let rows = self
            .db
            .query(
                "SELECT query, pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.application_name],
            )
            .await
            .unwrap();
        let killed: Vec<&str> = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
        (killed.len(), killed.iter().filter(|q| q.starts_with("LISTEN ")).count())
    }

    /// How many of the instances' sessions listen for work hints now (the work channel
    /// is one of the LISTENs the session sent, not always the first: the change feed's
    /// comes before it).
    async fn listening(&self) -> usize {
        let listen = format!("%LISTEN \"futurnal_work_{}\";%", self.schema.schema);
        let row = self
            .db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2",
                &[&self.application_name, &listen],
            )
            .await
            .unwrap();
        usize::try_from(row.get::<_, i64>(0)).unwrap()
    }

    /// Waits until every stored delivery is done (failing at once should an acknowledged
    /// one be missing: a 2xx comes only after the commit).
    async fn wait_all_done(&self, acknowledged: &[String], limit: Duration) {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE delivery_id = ANY($1)), count(*) FILTER (WHERE status <> 'done'), \
             count(*) FILTER (WHERE status = 'processing'), count(*) FROM {}",
            self.table("deliveries")
        );
        settle(limit, "every stored delivery to be done", || async {
            let row = self.db.query_one(&sql, &[&acknowledged]).await.unwrap();
            let (found, pending, processing, all): (i64, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            assert_eq!(found as usize, acknowledged.len(), "acknowledged deliveries missing from the database");
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} of {all} not done ({processing} processing)"))
            }
        })
        .await;
    }

    async fn finish(mut self) {
        for instance in &mut self.instances {
            drop(instance.daemon.take());
        }
        self.schema.drop_schema().await;
    }
}

/// A delivery's row.
#[derive(Debug, Clone)]
struct Stored {
    delivery_id: String,
    domain: Option<String>,
    position: Option<i64>,
    status: String,
    attempts: i32,
    worker: Option<String>,
    fence: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

/// A row of `effect_audit`: one stored set of changes.
#[derive(Debug, Clone)]
struct Applied {
    delivery_id: String,
    domain: Option<String>,
    position: Option<i64>,
    worker: Option<String>,
    fence: i64,
    applied_at: i64,
}

/// Polls `probe` until it answers `Ok`, or fails after `limit` with what it said last.
async fn settle<F, Fut>(limit: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let state = match probe().await {
            Ok(()) => return,
            Err(state) => state,
        };
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every stored delivery is done and every acknowledged one stored; each stored its
/// changes exactly once, under the claim that finished it (the token and place on the
/// audit row are the delivery's), and nothing else stored any.
fn assert_each_stored_once(stored: &[Stored], audit: &[Applied], acknowledged: &[String]) {
    let by_id: HashMap<&str, &Stored> = stored.iter().map(|d| (d.delivery_id.as_str(), d)).collect();
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !by_id.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged deliveries not stored: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let not_done: Vec<&Stored> = stored.iter().filter(|d| d.status != "done").collect();
    assert!(not_done.is_empty(), "{} deliveries not done: {:?}", not_done.len(), &not_done[..not_done.len().min(5)]);
    let mut applied: HashMap<&str, Vec<&Applied>> = HashMap::new();
    for row in audit {
        applied.entry(row.delivery_id.as_str()).or_default().push(row);
    }
    let strangers: Vec<&&str> = applied.keys().filter(|id| !by_id.contains_key(**id)).collect();
    assert!(strangers.is_empty(), "changes stored for deliveries that do not exist: {strangers:?}");
    let not_once: Vec<(&str, usize)> = stored
        .iter()
        .map(|d| (d.delivery_id.as_str(), applied.get(d.delivery_id.as_str()).map_or(0, Vec::len)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        not_once.is_empty(),
        "{} deliveries did not store their changes exactly once (delivery, times): {:?}",
        not_once.len(),
        &not_once[..not_once.len().min(5)]
    );
    for d in stored {
        let row = applied[d.delivery_id.as_str()][0];
        assert!(
            row.fence == d.fence.unwrap_or(-1) && row.domain == d.domain && row.position == d.position,
            "changes stored under another claim than the one that finished the delivery: {row:?} vs {d:?}"
        );
        assert_eq!(row.worker, d.worker, "{row:?} vs {d:?}");
    }
}

/// Within each domain, one delivery after another in acknowledgement order, whatever
/// instance took them: places are 1..n; a claim (one token: one lane, stored in one
/// transaction) starts at or after the previous claim's finish and has a greater token;
/// and the changes were stored in place order, each claim's strictly after the previous
/// one's by the database's clock.
fn assert_domains_one_at_a_time(stored: &[Stored], audit: &[Applied]) {
    let mut domains: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for d in stored {
        domains.entry(d.domain.as_deref().expect("a queued delivery has a domain")).or_default().push(d);
    }
    for (domain, deliveries) in &mut domains {
        deliveries.sort_by_key(|d| d.position);
        let positions: Vec<i64> = deliveries.iter().map(|d| d.position.expect("a place in the domain")).collect();
        let expected: Vec<i64> = (1..=positions.len() as i64).collect();
        assert_eq!(positions, expected, "{domain}: places are not 1..n");
        for pair in deliveries.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (a_fence, b_fence) = (a.fence.expect("claimed"), b.fence.expect("claimed"));
            if a_fence == b_fence {
                assert_eq!(a.started_at, b.started_at, "{domain}: one claim, one start: {a:?} {b:?}");
                continue;
            }
            assert!(b_fence > a_fence, "{domain}: a later place claimed under an older token: {a:?} then {b:?}");
            assert!(
                b.started_at.expect("started") >= a.finished_at.expect("finished"),
                "{domain}: overlapping deliveries: {a:?} then {b:?}"
            );
        }
    }
    let mut applied: BTreeMap<&str, Vec<&Applied>> = BTreeMap::new();
    for row in audit {
        applied.entry(row.domain.as_deref().expect("a domain")).or_default().push(row);
    }
    for (domain, rows) in &mut applied {
        rows.sort_by_key(|r| r.position);
        for pair in rows.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.fence == b.fence {
                assert!(b.applied_at >= a.applied_at, "{domain}: one transaction's rows out of order: {a:?} {b:?}");
            } else {
                assert!(
                    b.applied_at > a.applied_at && b.fence > a.fence,
                    "{domain}: changes stored out of place order: {a:?} then {b:?}"
                );
            }
        }
    }
}

/// kill -9 of one of three instances mid-burst. Its claims are taken over by the others
/// once their leases run out (2 s), the burst goes on to the two left, and the instance is
/// started again under its name. Afterwards every acknowledged delivery is done, each
/// delivery's changes were stored exactly once, every domain ran one delivery after
/// another in place order across the instances, only the dead instance's claims were
/// taken over (their attempt counted), and the live ones never lost a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_burst_loses_nothing_and_every_domain_stays_in_order() {
    let begun = Instant::now();
    // Each handler waits 5 ms: lanes last long enough to be caught holding claims, and
    // two claims of one domain are always milliseconds apart on the audit's clock.
    let workers = "lease_secs = 2\ntest_effect_audit = true\ntest_handler_delay_ms = 5\n";
    let Some(mut cluster) = Cluster::new(&["fault-a", "fault-b", "fault-c"], workers).await else { return };
    for repo in 0..REPOS {
        cluster.track(&repo_name(repo), NO_REMOTE);
    }
    for i in 0..3 {
        cluster.start(i);
    }
    let targets = Arc::new(Mutex::new((0..3).map(|i| cluster.url(i)).collect::<Vec<_>>()));
    let burst = Burst::start(targets.clone(), 32, u64::MAX, CLUSTER_SECRET, spread_issue);
    let limit = Duration::from_secs(30);
    burst.wait_for("acknowledgements before the kill", limit, 300, Answer::acknowledged).await;
    wait_until(limit, "fault-c to hold claims", || async { !cluster.processing_by("fault-c").await.is_empty() }).await;
    cluster.kill(2);
    let killed_at = Instant::now();
    let held: HashSet<String> = cluster.processing_by("fault-c").await.into_iter().collect();
    assert!(!held.is_empty(), "fault-c held claims when it was killed");

    // The others take its claims over once the lease is over, while the burst goes on.
    wait_until(limit, "the others to take over the dead instance's claims", || async {
        cluster.processing_by("fault-c").await.is_empty()
    })
    .await;
    let taken_over = killed_at.elapsed();
    burst.wait_for("acknowledgements after the kill", limit, 200, |a| a.sent >= killed_at && a.acknowledged()).await;
    cluster.start(2);
    targets.lock().unwrap()[2] = cluster.url(2);
    let restarted_at = Instant::now();
    burst
        .wait_for("acknowledgements by the restarted instance", limit, 50, |a| {
            a.receiver == 2 && a.sent >= restarted_at && a.acknowledged()
        })
        .await;
    let answers = burst.finish().await;
    let sent_at = begun.elapsed();

    // The live receivers answered 202 to everything; only the dead one failed requests.
    let odd: Vec<&Answer> = answers
        .iter()
        .filter(|a| match &a.status {
            Ok(status) => *status != 202,
            Err(_) => a.receiver != 2 || a.sent >= restarted_at,
        })
        .collect();
    assert!(odd.is_empty(), "{} unexpected answers: {:?}", odd.len(), &odd[..odd.len().min(5)]);
    let acknowledged = acknowledged_ids(&answers);
    cluster.wait_all_done(&acknowledged, Duration::from_secs(60)).await;

    let stored = cluster.stored().await;
    let audit = cluster.audit().await;
    assert_each_stored_once(&stored, &audit, &acknowledged);
    assert_domains_one_at_a_time(&stored, &audit);
    // The dead instance's claims were taken over (their attempt counted), nothing else.
    let recounted: Vec<&Stored> =
        stored.iter().filter(|d| d.attempts != if held.contains(&d.delivery_id) { 2 } else { 1 }).collect();
    assert!(
        recounted.is_empty(),
        "{} deliveries with unexpected attempts (held by the dead instance: {}): {:?}",
        recounted.len(),
        held.len(),
        &recounted[..recounted.len().min(5)]
    );
    for d in stored.iter().filter(|d| held.contains(&d.delivery_id)) {
        assert!(d.worker.as_deref().is_some_and(|w| w != "fault-c"), "taken over by another instance: {d:?}");
    }
    for i in 0..2 {
        assert!(!cluster.log(i).contains("lease was lost"), "a live instance lost a lease: {}", cluster.log(i));
    }
    let by_worker = stored.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, d| {
        *m.entry(d.worker.as_deref().unwrap_or("-")).or_default() += 1;
        m
    });
    eprintln!(
        "{} answers, {} acknowledged, {} stored, by worker {by_worker:?}; {} claims of fault-c taken over after \
         {taken_over:?}; burst over at {sent_at:?}, all done at {:?}",
        answers.len(),
        acknowledged.len(),
        stored.len(),
        held.len(),
        begun.elapsed()
    );
    cluster.finish().await;
}

/// Every session of two instances (their pools' and their work listeners') terminated
/// five times during a burst of signed deliveries. The receivers answer 2xx or 503 and
/// nothing else, never 2xx for a delivery not stored; afterwards every acknowledged
/// delivery is done, none stored its changes twice, nothing is left processing, every
/// domain ran in order, and both instances listen for hints again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_two_instances_killed_mid_burst_lose_nothing_and_apply_nothing_twice() {
    let begun = Instant::now();
    let workers = "lease_secs = 2\ntest_effect_audit = true\nretry_base_ms = 20\nretry_cap_ms = 200\n";
    let Some(mut cluster) = Cluster::new(&["sessions-a", "sessions-b"], workers).await else { return };
    for repo in 0..REPOS {
        cluster.track(&repo_name(repo), NO_REMOTE);
    }
    cluster.start(0);
    cluster.start(1);
    let limit = Duration::from_secs(20);
    wait_until(limit, "both instances to listen", || async { cluster.listening().await == 2 }).await;
    let targets = Arc::new(Mutex::new(vec![cluster.url(0), cluster.url(1)]));
    let burst = Burst::start(targets, 16, u64::MAX, CLUSTER_SECRET, spread_issue);
    burst.wait_for("acknowledgements before the first kill", limit, 100, Answer::acknowledged).await;
    let (mut killed, mut listeners) = (0, 0);
    for round in 0..5 {
        let (sessions, listening) = cluster.terminate_sessions().await;
        killed += sessions;
        listeners += listening;
        let after = Instant::now();
        burst
            .wait_for(&format!("acknowledgements after kill {round}"), limit, 30, |a| {
                a.sent >= after && a.acknowledged()
            })
            .await;
        wait_until(limit, &format!("both instances to listen again after kill {round}"), || async {
            cluster.listening().await == 2
        })
        .await;
    }
    let answers = burst.finish().await;
    assert_eq!(listeners, 10, "every kill ended both listening sessions ({killed} sessions in all)");

    assert_only_2xx_or_503(&answers);
    let acknowledged = acknowledged_ids(&answers);
    cluster.wait_all_done(&acknowledged, Duration::from_secs(60)).await;
    let stored = cluster.stored().await;
    let audit = cluster.audit().await;
    assert_each_stored_once(&stored, &audit, &acknowledged);
    assert_domains_one_at_a_time(&stored, &audit);
    let refused = answers.len() - acknowledged.len();
    eprintln!(
        "{} answers: {} acknowledged, {refused} refused with 503, {} stored; {killed} sessions killed \
         ({listeners} listening); done at {:?}",
        answers.len(),
        acknowledged.len(),
        stored.len(),
        begun.elapsed()
    );
    cluster.finish().await;
}

/// One repository's git head fails over and over (its remote does not exist: the fetch
/// fails, and with `max_attempts = 1000` it is retried every 25-200 ms) while three
/// instances serve 19 other repositories. The other repositories' deliveries (issues, and
/// pushes from working remotes for three of them) all finish, and so do the failing
/// repository's own issues (its metadata domain is not its git domain); its later pushes
/// stay queued behind the head, never tried, on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_head_holds_back_its_own_domain_only_on_every_instance() {
    const FAILING: usize = 0;
    const WITH_GIT: [usize; 3] = [1, 2, 3];
    let begun = Instant::now();
    let workers = "lease_secs = 2\nretry_base_ms = 50\nretry_cap_ms = 200\nmax_attempts = 1000\n";
    let Some(mut cluster) = Cluster::new(&["block-a", "block-b", "block-c"], workers).await else { return };
    let remotes_dir = tempfile::tempdir().unwrap();
    let remotes: HashMap<usize, GitRemote> =
        WITH_GIT.iter().map(|&repo| (repo, GitRemote::new(remotes_dir.path(), &repo_name(repo)))).collect();
    for repo in 0..REPOS {
        cluster.track(&repo_name(repo), &remotes.get(&repo).map_or(NO_REMOTE.to_owned(), GitRemote::url));
    }
    for i in 0..3 {
        cluster.start(i);
    }
    futurnal::install_tls_provider();
    let client = reqwest::Client::new();
    let head = new_id();
    assert_eq!(send(&client, &cluster.url(0), "push", &head, &push_of(FAILING, &"2".repeat(40))).await, Ok(202));
    let limit = Duration::from_secs(20);
    settle(limit, "the failing push to be tried again", || async {
        let row = cluster.stored_by_id().await.remove(&head).expect("stored");
        if row.attempts >= 2 {
            Ok(())
        } else {
            Err(format!("{row:?}"))
        }
    })
    .await;

    // From the three receivers in turn: the failing repository's later pushes and issues,
    // the others' issues, and pushes of new commits for those with a working remote.
    let mut deliveries: Vec<(usize, &str, Vec<u8>)> = Vec::new();
    for round in 0..10u64 {
        for repo in 0..REPOS {
            deliveries.push((repo, "issues", issue_body(repo, round)));
        }
        if round < 5 {
            deliveries.push((FAILING, "push", push_of(FAILING, &(round + 3).to_string().repeat(40))));
        }
        if round < 3 {
            for (&repo, remote) in &remotes {
                let after = remote.commit("NOTES.md", &format!("round {round}\n"), &format!("Round {round}"));
                remote.push("main");
                deliveries.push((repo, "push", push_of(repo, &after)));
            }
        }
    }
    let mut sent: Vec<(usize, &str, String)> = Vec::new();
    for (n, (repo, event, body)) in deliveries.iter().enumerate() {
        let id = new_id();
        assert_eq!(send(&client, &cluster.url(n % 3), event, &id, body).await, Ok(202));
        sent.push((*repo, event, id));
    }
    let later: Vec<&String> =
        sent.iter().filter(|(r, e, _)| *r == FAILING && *e == "push").map(|(_, _, id)| id).collect();
    let flowing: Vec<&String> =
        sent.iter().filter(|(r, e, _)| *r != FAILING || *e != "push").map(|(_, _, id)| id).collect();
    settle(Duration::from_secs(30), "every delivery but the failing repository's pushes to be done", || async {
        let stored = cluster.stored_by_id().await;
        let pending: Vec<&Stored> = flowing.iter().map(|id| &stored[*id]).filter(|d| d.status != "done").collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{} not done, e.g. {:?}", pending.len(), pending[0]))
        }
    })
    .await;
    let flowed = begun.elapsed();

    // Meanwhile the failing git domain is held back: its head waits for its next try, the
    // later pushes wait behind it, never tried (claimed with the head, they are put back
    // without an attempt when it fails).
    settle(limit, "the head waiting for a retry and the later pushes queued", || async {
        let stored = cluster.stored_by_id().await;
        let head_row = &stored[&head];
        let later_rows: Vec<&Stored> = later.iter().map(|id| &stored[*id]).collect();
        let never_tried = later_rows.iter().all(|d| d.attempts == 0 && d.finished_at.is_none());
        assert!(never_tried && head_row.status != "done", "the failing domain moved on: {head_row:?} {later_rows:?}");
        if head_row.status == "retrying" && later_rows.iter().all(|d| d.status == "queued") {
            Ok(())
        } else {
            Err(format!("{head_row:?} {later_rows:?}"))
        }
    })
    .await;
    let stored = cluster.stored_by_id().await;
    let head_row = &stored[&head];
    assert!(head_row.attempts >= 3, "the head keeps being tried: {head_row:?}");
    assert_eq!(head_row.domain.as_deref(), Some(git_domain(FAILING).as_str()));
    assert!(stored.values().filter(|d| d.domain.as_deref() == Some(&meta_domain(FAILING))).all(|d| d.status == "done"));
    let tried_by: Vec<&str> = (0..3)
        .filter(|&i| cluster.log(i).lines().any(|l| l.contains(&head) && l.contains("will retry")))
        .map(|i| cluster.instances[i].name.as_str())
        .collect();
    eprintln!(
        "{} deliveries flowed by {flowed:?}; the head was tried {} times (by {tried_by:?}), {} pushes held back; {:?}",
        flowing.len(),
        head_row.attempts,
        later.len(),
        begun.elapsed()
    );
    cluster.finish().await;
}

/// Enqueues for one repository's domain racing from three receivers (24 clients): its
/// places are exactly 1..n, one per acknowledged delivery, and follow commit order as far
/// as the clients can see it: a delivery acknowledged before another was sent has the
/// lower place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_racing_for_one_domain_from_three_receivers_are_numbered_in_commit_order() {
    const DELIVERIES: u64 = 900;
    let Some(mut cluster) = Cluster::new(&["race-a", "race-b", "race-c"], "").await else { return };
    cluster.track(&repo_name(0), NO_REMOTE);
    for i in 0..3 {
        // Receivers only: the places are the point, not their processing.
        cluster.start_with(i, &["--role", "receiver"]);
    }
    let targets = Arc::new(Mutex::new((0..3).map(|i| cluster.url(i)).collect::<Vec<_>>()));
    let burst = Burst::start(targets, 24, DELIVERIES, CLUSTER_SECRET, |n| ("issues", issue_body(0, n)));
    burst.wait_for("answers", Duration::from_secs(30), DELIVERIES as usize, |_| true).await;
    let answers = burst.finish().await;
    let odd: Vec<&Answer> = answers.iter().filter(|a| a.status != Ok(202)).collect();
    assert!(odd.is_empty(), "{} answers not 202: {:?}", odd.len(), &odd[..odd.len().min(5)]);

    let stored = cluster.stored_by_id().await;
    assert_eq!(stored.len(), answers.len(), "one stored delivery per acknowledgement");
    let mut positions: Vec<i64> = Vec::with_capacity(answers.len());
    for answer in &answers {
        let d = stored.get(&answer.id).unwrap_or_else(|| panic!("acknowledged but not stored: {answer:?}"));
        assert_eq!(d.domain.as_deref(), Some(meta_domain(0).as_str()), "{d:?}");
        positions.push(d.position.unwrap_or_else(|| panic!("no place: {d:?}")));
    }
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    let expected: Vec<i64> = (1..=answers.len() as i64).collect();
    if sorted != expected {
        let mut seen = HashSet::new();
        let twice: Vec<i64> = sorted.iter().copied().filter(|p| !seen.insert(*p)).collect();
        let gaps: Vec<i64> = expected.iter().copied().filter(|p| !seen.contains(p)).collect();
        panic!(
            "places are not 1..{}: {} taken twice (e.g. {:?}), {} missing (e.g. {:?})",
            expected.len(),
            twice.len(),
            &twice[..twice.len().min(5)],
            gaps.len(),
            &gaps[..gaps.len().min(5)]
        );
    }
    // Acknowledged (so committed) before another was sent: a lower place.
    let mut by_answer: Vec<(Instant, i64)> =
        answers.iter().map(|a| a.answered).zip(positions.iter().copied()).collect();
    by_answer.sort_unstable_by_key(|(at, _)| *at);
    let mut highest_before: Vec<i64> = Vec::with_capacity(by_answer.len());
    for (_, position) in &by_answer {
        highest_before.push(highest_before.last().copied().unwrap_or(0).max(*position));
    }
    let mut compared = 0usize;
    for (answer, position) in answers.iter().zip(&positions) {
        let earlier = by_answer.partition_point(|(at, _)| *at < answer.sent);
        if earlier > 0 {
            compared += earlier;
            let highest = highest_before[earlier - 1];
            assert!(
                highest < *position,
                "{} got place {position}, but a delivery acknowledged before it was sent has place {highest}",
                answer.id
            );
        }
    }
    eprintln!(
        "{} deliveries over 3 receivers: places 1..{}, {compared} ordered pairs checked",
        answers.len(),
        answers.len()
    );
    cluster.finish().await;
}

/// An instance started again after its leases expired, while another instance takes one
/// of its claims over: the start's recovery and the claim each wait for the other's locks
/// in turn (the claim holds the domain's row and updates the delivery; the recovery
/// must not hold the delivery while it waits for the domain), and neither is refused as
/// a deadlock: the claim goes through, the start recovers, and the delivery stays with the
/// instance that took it over. Driven step by step: this test's session plays the
/// claimer, in the claim's own lock order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_recovering_while_another_instance_takes_over_its_claims_deadlocks_nobody() {
    use futurnal::domain::DeliveryId;
    use futurnal::storage::postgres::queue::PgQueue;
    use futurnal::storage::postgres::{PgDb, PostgresOptions};
    use futurnal::storage::queue::{Claimer, InitialStatus, NewDelivery, Queue, StoredBody};
    let Some(cluster) = Cluster::new(&[], "").await else { return };
    let options = PostgresOptions { schema: Some(cluster.schema.schema.clone()), pool_size: 2 };
    let queue = Arc::new(PgQueue::new(Arc::new(PgDb::open(&cluster.url, options).await.unwrap())));
    let delivery = NewDelivery {
        delivery_id: DeliveryId::random(),
        event: "issues".into(),
        action: Some("edited".into()),
        repository: Some(repo_name(0)),
        repository_github_id: Some(GITHUB_ID),
        hook_id: None,
        received_at_ms: futurnal::time::now_ms(),
        body: StoredBody::compress(&issue_body(0, 1)),
        initial: InitialStatus::Queued,
    };
    let id = delivery.delivery_id.to_string();
    queue.enqueue(delivery).await.unwrap();
    let old = Claimer { instance: "restarted".into(), lease_ms: 0 };
    assert_eq!(queue.claim_as(&old, 4, 8).await.unwrap().len(), 1);
    let (deliveries, domains) = (cluster.table("deliveries"), cluster.table("queue_domains"));
    let expired = format!(
        "SELECT lease_until < (extract(epoch FROM now()) * 1000)::BIGINT FROM {deliveries} WHERE delivery_id = $1"
    );
    wait_until(Duration::from_secs(10), "the lease to expire by the database's clock", || async {
        cluster.db.query_one(&expired, &[&id]).await.unwrap().get::<_, bool>(0)
    })
    .await;

    // Another instance's claim has found the domain ready and holds its row.
    let (mut claimer, connection) = tokio_postgres::connect(&cluster.schema.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let claim = claimer.transaction().await.unwrap();
    claim.execute(&format!("SELECT 1 FROM {domains} WHERE domain = $1 FOR UPDATE"), &[&meta_domain(0)]).await.unwrap();
    // The instance starts again and recovers: it waits for that row.
    let recovery = tokio::spawn({
        let queue = queue.clone();
        async move { queue.recover("restarted").await }
    });
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'";
    wait_until(Duration::from_secs(10), "the recovery to wait for the domain's row", || async {
        cluster.db.query_one(waiting, &[&cluster.application_name]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    // The claim takes the delivery over, and commits.
    let take_over = format!(
        "UPDATE {deliveries} SET worker = 'took-over', fence = nextval('{}'), \
         lease_until = (extract(epoch FROM now()) * 1000)::BIGINT + 60000 WHERE delivery_id = $1",
        cluster.table("claim_fences")
    );
    let taken = tokio::time::timeout(Duration::from_secs(20), claim.execute(&take_over, &[&id])).await.unwrap();
    assert_eq!(taken.map_err(|e| format!("{e:?}")), Ok(1), "the claim was refused");
    claim.commit().await.unwrap();
    let recovered = tokio::time::timeout(Duration::from_secs(20), recovery).await.unwrap().unwrap();
    assert_eq!(recovered.map_err(|e| e.to_string()), Ok(0), "the start's recovery failed, or took the delivery back");
    let row = cluster.stored_by_id().await.remove(&id).unwrap();
    assert_eq!((row.status.as_str(), row.worker.as_deref()), ("processing", Some("took-over")), "{row:?}");
    drop(queue);
    cluster.finish().await;
}
