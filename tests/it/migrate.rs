//! `db migrate`: a SQLite data dir made by the product, copied into PostgreSQL (a schema
//! of its own per test, on `FUTURNAL_TEST_DATABASE_URL`) by the real binary, then read
//! through both backends.

use std::path::Path;

use futurnal::config::DatabaseUrl;
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::changes::{Cause, ChangeFilter};
use futurnal::storage::queue::{Completion, DeliveryFilter, DeliveryStatus, InitialStatus, NewDelivery, StoredBody};
use futurnal::storage::registry::{HookRef, NewRepository, PollWatermarks, RepoRef};
use serde_json::Value;

use crate::contract::PgSchema;
use crate::helpers::*;

const REPO: &str = "octo/hello";
const ID: u64 = 4242;
const GONE: &str = "octo/gone";
const GONE_ID: u64 = 4343;
const ZERO: &str = "0000000000000000000000000000000000000000";

/// Every table `db migrate` copies.
const TABLES: [&str; 21] = [
    "repositories",
    "hooks",
    "poll_watermarks",
    "branches",
    "tags",
    "commits",
    "branch_commits",
    "pulls",
    "issues",
    "issue_comments",
    "releases",
    "reviews",
    "review_comments",
    "labels",
    "milestones",
    "deliveries",
    "queue_domains",
    "redelivery_requests",
    "changes",
    "delivery_attempts",
    "activity",
];

/// A fixture payload retargeted at `repo` (GitHub id `id`).
/// Why these run in the SQLite pass only: the source is a SQLite data dir by definition,
/// and the target is PostgreSQL in that pass already.
const SQLITE_SOURCE: &str = "db migrate moves a SQLite data dir to PostgreSQL; both sides run in the SQLite pass";

fn payload(path: &str, repo: &str, id: u64) -> Value {
    let mut value: Value = serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap();
    value["repository"]["id"] = id.into();
    value["repository"]["full_name"] = repo.into();
    value
}

async fn deliver(app: &TestApp, event: &str, body: &Value) -> String {
    let d = Delivery::new(event, serde_json::to_vec(body).unwrap());
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 202, "{event}: {answer}");
    id
}

async fn processed(app: &TestApp, event: &str, body: &Value) -> String {
    let id = deliver(app, event, body).await;
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    id
}

/// The test's config file: the schema the PostgreSQL side uses (SQLite ignores it).
fn config_file(dir: &Path, schema: &PgSchema) -> String {
    let path = dir.join("migrate-config.toml");
    std::fs::write(&path, format!("[postgres]\nschema = \"{}\"\n", schema.schema)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A backend on the test's PostgreSQL schema.
async fn pg_backend(dir: &Path, schema: &PgSchema) -> Backend {
    let mut config = config_for(dir, "");
    config.database = DatabaseUrl::Postgres(schema.url.clone());
    config.postgres.schema = Some(schema.schema.clone());
    Backend::open(&config, Purpose::Command).await.unwrap()
}

/// Rows of every futurnal table in the schema (and the schema version record).
async fn pg_counts(schema: &PgSchema) -> Vec<(String, i64)> {
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut counts = Vec::new();
    for table in TABLES.iter().chain(&["futurnal_schema"]) {
        let sql = format!("SELECT COUNT(*) FROM {}.{table}", schema.schema);
        counts.push((table.to_string(), client.query_one(&sql, &[]).await.unwrap().get(0)));
    }
    counts
}

/// A small SQLite source made through the storage API: one repository, one delivery.
async fn small_source(dir: &Path) {
    let backend = Backend::open(&config_for(dir, ""), Purpose::Command).await.unwrap();
    let repo = NewRepository {
        full_name: REPO.into(),
        github_id: Some(ID),
        branches: vec![],
        clone_url: None,
        default_branch: Some("main".into()),
    };
    backend.registry.add(repo, vec![]).await.unwrap();
    let delivery = NewDelivery {
        delivery_id: futurnal::domain::DeliveryId::random(),
        event: "push".into(),
        action: None,
        repository: Some(REPO.into()),
        repository_github_id: Some(ID),
        hook_id: None,
        received_at_ms: futurnal::time::now_ms(),
        body: StoredBody::compress(&push_body(REPO, ID)),
        initial: InitialStatus::Queued,
    };
    backend.queue.enqueue(delivery).await.unwrap();
    backend.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_database_answers_every_query_alike_and_its_queue_goes_on_in_order() {
    if crate::pg_mode::skip_unless_sqlite(SQLITE_SOURCE) {
        return;
    }
    let Some(schema) = PgSchema::new().await else { return };
    let toml = "[workers]\nretry_base_ms = 10\nretry_cap_ms = 50\nmax_attempts = 2\n";
    let app = spawn_app(AppOptions { toml: toml.into(), track: vec![REPO, GONE], ..Default::default() }).await;
    let remote = GitRemote::existing(app.dir.path(), REPO);

    // The local copy: a push (branches, commits, membership), a tag, a pull request, an
    // issue and a comment on it, a release.
    let first = remote.head();
    let second = remote.commit("src/lib.rs", "fn main() {}\n", "Add lib");
    remote.push("main");
    let push = |git_ref: &str, before: &str, after: &str| {
        serde_json::from_slice::<Value>(&push_payload(REPO, ID, git_ref, before, after)).unwrap()
    };
    processed(&app, "push", &push("refs/heads/main", &first, &second)).await;
    git(&remote.work, &["tag", "v1.0", &second]);
    git(&remote.work, &["push", "-q", "origin", "v1.0"]);
    processed(&app, "push", &push("refs/tags/v1.0", ZERO, &second)).await;
    processed(&app, "pull_request", &payload("payloads/pull_request/opened.payload.json", REPO, ID)).await;
    let issue = payload("payloads/issues/opened.payload.json", REPO, ID);
    let number = issue["issue"]["number"].as_u64().unwrap();
    processed(&app, "issues", &issue).await;
    let mut comment = payload("payloads/issue_comment/created.payload.json", REPO, ID);
    comment["issue"]["number"] = number.into();
    comment["issue"]["updated_at"] = "2030-01-01T00:00:00Z".into();
    processed(&app, "issue_comment", &comment).await;
    processed(&app, "release", &payload("payloads/release/published.payload.json", REPO, ID)).await;
    // A review, a review comment, labels (one deleted: its tombstone is copied too) and a
    // milestone.
    processed(&app, "pull_request_review", &payload("payloads/pull_request_review/submitted.payload.json", REPO, ID))
        .await;
    let review_comment = payload("payloads/pull_request_review_comment/created.payload.json", REPO, ID);
    processed(&app, "pull_request_review_comment", &review_comment).await;
    processed(&app, "label", &payload("payloads/label/created.payload.json", REPO, ID)).await;
    let mut other_label = payload("payloads/label/created.payload.json", REPO, ID);
    other_label["label"]["name"] = "wontfix".into();
    other_label["label"]["id"] = 77.into();
    processed(&app, "label", &other_label).await;
    other_label["action"] = "deleted".into();
    processed(&app, "label", &other_label).await;
    processed(&app, "milestone", &payload("payloads/milestone/created.payload.json", REPO, ID)).await;

    // The registry: a hook that was pinged, poll watermarks, a redelivery asked for.
    let repo = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    app.registry.set_hook(repo.id, Some(HookRef::new(777, "https://hooks.example/webhook/github"))).await.unwrap();
    let mut ping = Delivery::new("ping", std::fs::read(fixture("payloads/ping/payload.json")).unwrap());
    ping.hook_id = Some(777);
    assert_eq!(app.post(ping).await.0, 200);
    let marks =
        PollWatermarks { pulls_seen: Some("\"etag-1\"".into()), issues_since: Some("2030-01-01T00:00:00Z".into()) };
    app.registry.set_poll_watermarks(repo.id, marks).await.unwrap();
    let now = futurnal::time::now_ms();
    assert!(app.queue.reserve_redelivery("guid-1", 777, now, now - 1000).await.unwrap());

    // A dead delivery: the other repository's remote is gone.
    let gone = GitRemote::existing(app.dir.path(), GONE);
    let gone_head = gone.head();
    std::fs::remove_dir_all(&gone.bare).unwrap();
    let body = push_payload(GONE, GONE_ID, "refs/heads/main", &gone_head, &second);
    let dead = deliver(&app, "push", &serde_json::from_slice(&body).unwrap()).await;
    app.wait_for_status(&dead, DeliveryStatus::Dead).await;
    let dir = app.stop().await;

    // Pending work: a receiver only (nothing processed) queues pushes and an issue's edit,
    // interleaved; each domain must keep its own order.
    let app = spawn_app_in(
        dir,
        AppOptions { toml: toml.into(), track: vec![], role: futurnal::cli::Role::Receiver, ..Default::default() },
    )
    .await;
    let p1 = deliver(&app, "push", &push("refs/heads/main", &second, &second)).await;
    let mut edited = issue.clone();
    edited["action"] = "edited".into();
    let i1 = deliver(&app, "issues", &edited).await;
    let p2 = deliver(&app, "push", &push("refs/heads/main", &second, &second)).await;
    let p3 = deliver(&app, "push", &push("refs/tags/v1.0", &second, &second)).await;
    let dir = app.stop().await;
    let d = dir.path();

    let config = config_file(d, &schema);
    let out = futurnal(d, &["--config", &config, "--json", "db", "migrate", "--to", &schema.url]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    for table in TABLES {
        let counts = &report["tables"][table];
        assert!(counts["source"].as_u64().unwrap() > 0, "the source has data in {table}: {report}");
        assert_eq!(counts["source"], counts["target"], "{table}: {report}");
    }
    assert_eq!(report["verified"], true);
    assert_eq!(report["pending_deliveries"], 4, "{report}");
    assert_eq!(report["next_repository_id"], 3, "{report}");

    // Every query answers the same from both databases.
    let id = repo.id.to_string();
    let queries: Vec<Vec<&str>> = vec![
        vec!["sources", "github", "list"],
        vec!["sources", "github", "show", &id],
        vec!["sources", "github", "branches", &id],
        vec!["sources", "github", "commits", &id],
        vec!["sources", "github", "commits", &id, "--branch", "main"],
        vec!["sources", "github", "pulls", &id, "--state", "all"],
        vec!["sources", "github", "issues", &id, "--state", "all"],
        vec!["sources", "github", "releases", &id],
        vec!["sources", "github", "reviews", &id],
        vec!["sources", "github", "review-comments", &id, "--pull", "2"],
        vec!["sources", "github", "labels", &id],
        vec!["sources", "github", "milestones", &id, "--state", "all"],
        vec!["sources", "github", "webhook", "deliveries", "--limit", "1000"],
        vec!["sources", "github", "webhook", "deliveries", "--status", "dead"],
        vec!["sources", "github", "webhook", "status"],
    ];
    for query in &queries {
        let run = |database: &[&str]| {
            let mut args = vec!["--config", config.as_str(), "--json"];
            args.extend_from_slice(database);
            args.extend_from_slice(query);
            futurnal(d, &args)
        };
        let (sqlite, postgres) = (run(&[]), run(&["--database-url", &schema.url]));
        assert_eq!((sqlite.code, postgres.code), (0, 0), "{query:?}: {} {}", sqlite.stderr, postgres.stderr);
        let (sqlite, postgres) = (sqlite.json(), postgres.json());
        assert_ne!(sqlite, Value::Array(vec![]), "{query:?} has something to compare");
        assert_eq!(sqlite, postgres, "{query:?}");
    }

    // On PostgreSQL the queue goes on: the git domain first (its turn came first on
    // SQLite), in acknowledgement order; then the metadata domain.
    let backend = pg_backend(d, &schema).await;
    assert_eq!(backend.queue.stats().await.unwrap().depth, 4);
    let ids = |lanes: &Vec<Vec<futurnal::storage::queue::ClaimedDelivery>>| -> Vec<Vec<String>> {
        lanes.iter().map(|l| l.iter().map(|d| d.delivery_id.clone()).collect()).collect()
    };
    // A delivery enqueued now goes behind the copied ones of its domain.
    let newer = NewDelivery {
        delivery_id: futurnal::domain::DeliveryId::random(),
        event: "push".into(),
        action: None,
        repository: Some(REPO.into()),
        repository_github_id: Some(ID),
        hook_id: None,
        received_at_ms: futurnal::time::now_ms(),
        body: StoredBody::compress(&push_body(REPO, ID)),
        initial: InitialStatus::Queued,
    };
    let newer_id = newer.delivery_id.to_string();
    backend.queue.enqueue(newer).await.unwrap();
    let git_lane = backend.queue.claim(1, 64).await.unwrap();
    assert_eq!(ids(&git_lane), vec![vec![p1, p2, p3, newer_id.clone()]]);
    let meta_lane = backend.queue.claim(1, 64).await.unwrap();
    assert_eq!(ids(&meta_lane), vec![vec![i1]]);
    assert!(backend.queue.claim(8, 64).await.unwrap().is_empty(), "nothing else is pending (dead stays dead)");
    let done = git_lane.iter().chain(&meta_lane).flatten().map(|d| (d.handle, Completion::Done));
    backend.queue.complete(done.collect()).await.unwrap();
    assert_eq!(backend.queue.stats().await.unwrap().depth, 0);

    // New rows do not collide with copied ones: the delivery's id is past every copied
    // one, and a repository gets the id the report announced.
    let listed = backend.queue.list(DeliveryFilter { limit: 1, ..Default::default() });
    assert_eq!(listed.await.unwrap()[0].delivery_id, newer_id, "the newest id is past every copied one");
    let added = backend
        .registry
        .add(
            NewRepository {
                full_name: "octo/new".into(),
                github_id: None,
                branches: vec![],
                clone_url: None,
                default_branch: None,
            },
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(added.id, 3, "past both copied repositories");

    // The change log goes on past the copied changes, which read as they did on SQLite.
    let sqlite = futurnal::storage::backend::Backend::open(&config_for(d, ""), Purpose::Command).await.unwrap();
    let all = ChangeFilter { since: 0, limit: 10_000, repository: None, kind: None };
    let copied = sqlite.copy.changes(all.clone()).await.unwrap();
    let copied_bounds = sqlite.copy.changes_bounds().await.unwrap();
    sqlite.close();
    assert!(!copied.is_empty());
    assert_eq!(backend.copy.changes(all.clone()).await.unwrap(), copied);
    assert_eq!(backend.copy.changes_bounds().await.unwrap(), copied_bounds);
    let effect = futurnal::storage::copy::Effect::Tag { name: "after-migration".into(), sha: None };
    backend.copy.apply(repo.id, vec![effect], Cause::Sync).await.unwrap();
    let next = backend.copy.changes(ChangeFilter { since: copied_bounds.newest, ..all }).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].seq, next[0].key.as_str()), (copied_bounds.newest + 1, "tag:after-migration"));
    backend.close();
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_futurnal_data_is_refused_and_left_as_it_was() {
    if crate::pg_mode::skip_unless_sqlite(SQLITE_SOURCE) {
        return;
    }
    let Some(schema) = PgSchema::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_source(d).await;
    // The target holds one row, in a table the source has nothing in.
    let target = pg_backend(d, &schema).await;
    target.registry.note_ping(5, 1_700_000_000_000).await.unwrap();
    target.close();
    let before = pg_counts(&schema).await;

    let config = config_file(d, &schema);
    let out = futurnal(d, &["--config", &config, "db", "migrate", "--to", &schema.url]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: ") && out.stderr.contains("already holds futurnal data"), "{}", out.stderr);
    assert!(out.stderr.contains("hooks: 1 row"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(pg_counts(&schema).await, before, "nothing written");
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_target_refuses_leaves_it_empty() {
    if crate::pg_mode::skip_unless_sqlite(SQLITE_SOURCE) {
        return;
    }
    let Some(schema) = PgSchema::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_source(d).await;
    // An empty target at the current schema that refuses push deliveries: the failure
    // comes after the repositories were copied, in the same transaction.
    pg_backend(d, &schema).await.close();
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let sql = format!("ALTER TABLE {}.deliveries ADD CONSTRAINT no_pushes CHECK (event <> 'push')", schema.schema);
    client.batch_execute(&sql).await.unwrap();

    let config = config_file(d, &schema);
    let out = futurnal(d, &["--config", &config, "db", "migrate", "--to", &schema.url]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    let error = out.stderr.trim_end();
    assert!(error.contains("copying deliveries failed") && error.contains("no_pushes"), "{error}");
    assert!(error.contains("nothing was written"), "{error}");
    for (table, rows) in pg_counts(&schema).await {
        if table != "futurnal_schema" {
            assert_eq!(rows, 0, "{table} is empty after the failed copy");
        }
    }
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_in_the_url_is_never_printed() {
    if crate::pg_mode::skip_unless_sqlite(SQLITE_SOURCE) {
        return;
    }
    let Some(schema) = PgSchema::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_source(d).await;
    // Trust authentication ignores the password; the URL still carries it.
    let password = "pw-Zq83hT1";
    let (scheme, rest) = schema.url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').expect("FUTURNAL_TEST_DATABASE_URL names a user");
    let url = format!("{scheme}://{user}:{password}@{host}");
    let config = config_file(d, &schema);

    let runs = [
        futurnal(d, &["--config", &config, "db", "migrate", "--to", &url]),
        // Again: refused, the target is no longer empty.
        futurnal(d, &["--config", &config, "--json", "db", "migrate", "--to", &url]),
        // The source named as PostgreSQL: refused.
        futurnal(d, &["--config", &config, "--database-url", &url, "db", "migrate", "--to", &url]),
        futurnal(
            d,
            &["--config", &config, "db", "migrate", "--to", &with_parameter(&schema.url, "password", password)],
        ),
    ];
    assert_eq!(runs.iter().map(|r| r.code).collect::<Vec<_>>(), vec![0, 1, 1, 1], "{}", runs[0].stderr);
    for run in &runs {
        assert!(!run.stdout.contains(password) && !run.stderr.contains(password), "{}\n{}", run.stdout, run.stderr);
    }
    assert!(runs[0].stdout.contains("<redacted>"), "{}", runs[0].stdout);
    schema.drop_schema().await;
}

fn with_parameter(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}
