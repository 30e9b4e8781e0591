//! `spawn_app()` and friends: a fresh data dir per test, port 0, typed helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futurnal::cli::{GlobalArgs, ServeArgs};
use futurnal::config::{Config, FileConfig};
use futurnal::handlers::DeliveryHandler;
use futurnal::serve::{Listeners, Overrides};
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::queue::{DeliveryFilter, DeliveryRecord, DeliveryStatus, Queue};
use futurnal::storage::registry::{NewRepository, Registry};
use futurnal_github::{sign_sha256, WebhookSecret};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-7f3a9c";

/// A file of the payload corpus kept in the repository (`tests/fixtures/github-webhooks/`,
/// see its SOURCES.md), e.g. `fixture("payloads/push/payload.json")`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-webhooks").join(path)
}

/// A push payload for `repo` (GitHub id `id`), with a marker string inside.
pub fn push_body(repo: &str, id: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "7a1b9c9e1c4f5d0e8a3b2c6d4e5f60718293a4b5",
        "created": false, "deleted": false, "forced": false,
        "commits": [{"id": "7a1b9c9e1c4f5d0e8a3b2c6d4e5f60718293a4b5", "message": "PAYLOAD-MARKER-5d1c", "added": [], "removed": [], "modified": ["README.md"]}],
        "repository": {"id": id, "full_name": repo, "name": repo.split('/').nth(1).unwrap()},
    }))
    .unwrap()
}

pub struct AppOptions {
    /// Extra TOML appended to the test config.
    pub toml: String,
    /// The webhook listener's address (a restarted app keeps its hook URL); port 0 if unset.
    pub listen: Option<SocketAddr>,
    /// Run the poller (and the tunnel watcher) with this client for GitHub's API.
    pub github: Option<futurnal::github::client::GitHubClient>,
    pub handler: Option<Arc<dyn DeliveryHandler>>,
    pub track: Vec<&'static str>,
    /// `receiver` queues without processing (a backlog for a later app in the same dir).
    pub role: futurnal::cli::Role,
    /// A database of the test's own (a `postgres://` URL, default schema) instead of the
    /// run's backend.
    pub database_url: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            toml: String::new(),
            listen: None,
            github: None,
            handler: None,
            track: vec!["octo/hello"],
            role: futurnal::cli::Role::All,
            database_url: None,
        }
    }
}

pub struct TestApp {
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub queue: Arc<dyn Queue>,
    pub registry: Arc<dyn Registry>,
    pub copy: Arc<dyn futurnal::storage::copy::CopyStore>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The test config for data dir `dir`, on the backend of this run: SQLite in the dir, or
/// (`FUTURNAL_TEST_BACKEND=postgres`) the dir's own PostgreSQL schema.
pub fn config_for(dir: &Path, extra_toml: &str) -> Config {
    let mut config = sqlite_config_for(dir, extra_toml);
    if let Some(pg) = crate::pg_mode::schema_for(dir) {
        config.database = futurnal::config::DatabaseUrl::Postgres(pg.url.clone());
        config.postgres.schema = Some(pg.schema.clone());
    }
    config
}

/// The test config for data dir `dir` with the SQLite file in it, whatever the run.
pub fn sqlite_config_for(dir: &Path, extra_toml: &str) -> Config {
    // Never GitHub: should a token be in the environment, API calls go to a closed local port.
    let global = GlobalArgs {
        data_dir: Some(dir.to_owned()),
        config: None,
        database_url: None,
        github_api_url: Some("http://127.0.0.1:9".into()),
        json: false,
    };
    let serve = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        role: None,
        no_poll: true,
        instance: None,
    };
    let toml = format!("[webhook]\nsecret = \"{SECRET}\"\n{extra_toml}");
    let file: FileConfig = toml::from_str(&toml).expect("test config parses");
    Config::resolve(&global, Some(&serve), file, |_| None).expect("test config resolves")
}

pub async fn spawn_app(options: AppOptions) -> TestApp {
    futurnal::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, options).await
}

pub async fn spawn_app_in(dir: tempfile::TempDir, options: AppOptions) -> TestApp {
    futurnal::install_tls_provider();
    let mut config = match &options.database_url {
        None => config_for(dir.path(), &options.toml),
        Some(url) => {
            let mut config = sqlite_config_for(dir.path(), &options.toml);
            config.database = futurnal::config::DatabaseUrl::parse(url).unwrap();
            config
        }
    };
    if let Some(listen) = options.listen {
        config.serve.listen = listen;
    }
    config.serve.poll = options.github.is_some();
    config.serve.role = options.role;
    let backend = Backend::open(&config, Purpose::Daemon).await.unwrap();
    for repo in &options.track {
        if backend.registry.find(futurnal::storage::registry::RepoRef::Name(repo.to_string())).await.unwrap().is_none()
        {
            backend
                .registry
                .add(
                    NewRepository {
                        full_name: repo.to_string(),
                        github_id: None,
                        branches: vec![],
                        // Tests never reach GitHub: every tracked repository mirrors a local one.
                        clone_url: Some(GitRemote::new(dir.path(), repo).url()),
                        default_branch: Some("main".into()),
                    },
                    vec![],
                )
                .await
                .unwrap();
        }
    }
    let (queue, registry, copy) = (backend.queue.clone(), backend.registry.clone(), backend.copy.clone());
    let listeners = Listeners::bind(&config).await.unwrap();
    let webhook = listeners.webhook.as_ref().map(|l| l.local_addr().unwrap()).unwrap_or(([0, 0, 0, 0], 0).into());
    let admin = listeners.admin.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let overrides = Overrides { handler: options.handler, github: options.github.map(Arc::new), ..Default::default() };
    let task = tokio::spawn(futurnal::serve::run(config, backend, listeners, overrides, shutdown.clone()));
    TestApp { webhook, admin, dir, client: reqwest::Client::new(), queue, registry, copy, shutdown, task: Some(task) }
}

/// Changes the branch patterns of a tracked repository behind the daemon's back (no
/// command does that yet, nor a storage trait): SQL on the database of this run.
pub async fn set_tracked_branches_by_hand(dir: &Path, full_name: &str, branches: &[&str]) {
    let json = serde_json::to_string(branches).unwrap();
    match crate::pg_mode::schema_for(dir) {
        None => {
            let store = rusqlite::Connection::open(dir.join("futurnal.db")).unwrap();
            let changed = store
                .execute("UPDATE repositories SET branches = ?1 WHERE full_name = ?2", (&json, full_name))
                .unwrap();
            assert_eq!(changed, 1, "{full_name} is tracked");
        }
        Some(pg) => {
            let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await.unwrap();
            let connection = tokio::spawn(connection);
            let sql = format!("UPDATE {}.repositories SET branches = $1 WHERE full_name = $2", pg.schema);
            let changed = client.execute(&sql, &[&json, &full_name]).await.unwrap();
            assert_eq!(changed, 1, "{full_name} is tracked");
            drop(client);
            let _ = connection.await;
        }
    }
}

/// How to build a test delivery.
pub struct Delivery<'a> {
    pub event: &'a str,
    pub id: String,
    pub body: Vec<u8>,
    pub secret: Option<&'a str>,
    pub hook_id: Option<u64>,
    pub content_type: &'a str,
}

impl<'a> Delivery<'a> {
    pub fn new(event: &'a str, body: Vec<u8>) -> Self {
        Self { event, id: new_id(), body, secret: Some(SECRET), hook_id: None, content_type: "application/json" }
    }
}

pub fn new_id() -> String {
    futurnal::domain::DeliveryId::random().to_string()
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    sign_sha256(&WebhookSecret::new(secret), body)
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}/webhook/github", self.webhook)
    }

    pub async fn post(&self, d: Delivery<'_>) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .post(self.url())
            .header("content-type", d.content_type)
            .header("x-github-event", d.event)
            .header("x-github-delivery", &d.id)
            .body(d.body.clone());
        if let Some(secret) = d.secret {
            request = request.header("x-hub-signature-256", signature(secret, &d.body));
        }
        if let Some(hook) = d.hook_id {
            request = request.header("x-github-hook-id", hook.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    pub async fn deliveries(&self, status: Option<DeliveryStatus>) -> Vec<DeliveryRecord> {
        self.queue.list(DeliveryFilter { status, limit: 100_000, ..Default::default() }).await.unwrap()
    }

    pub async fn delivery(&self, id: &str) -> Option<DeliveryRecord> {
        self.queue.get(id).await.unwrap()
    }

    /// Waits until delivery `id` reaches `status`, or panics after 10 s.
    pub async fn wait_for_status(&self, id: &str, status: DeliveryStatus) -> DeliveryRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let record = self.delivery(id).await;
            if let Some(r) = &record {
                if r.status == status {
                    return r.clone();
                }
            }
            assert!(Instant::now() < deadline, "delivery {id} never reached {status}; last: {record:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's `/metrics` text.
    pub async fn scrape_metrics(&self) -> String {
        self.client.get(format!("http://{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap()
    }

    /// A counter or gauge from the admin listener's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_in(&self.scrape_metrics().await, name).unwrap_or(0.0)
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("server stops in time").unwrap().unwrap();
        }
        self.dir
    }
}

/// A counter or gauge (named with its labels, if any) in Prometheus text; a value that
/// does not parse fails the test.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} is not a number: {v}")))
}

/// Polls `condition` every 20 ms until it holds, or panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `attempt` until it yields a value, failing the test after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- The real binary ----

pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_futurnal"));
    command.env_remove("FUTURNAL_WEBHOOK_SECRET").env_remove("FUTURNAL_CONFIG").env_remove("FUTURNAL_DATABASE_URL");
    command.env_remove("FUTURNAL_DATA_DIR").env_remove("RUST_LOG").env_remove("FUTURNAL_LOG");
    // Tests never reach GitHub, whatever the environment holds.
    command.env_remove("GITHUB_TOKEN").env_remove("GH_TOKEN").env("FUTURNAL_GITHUB_API_URL", "http://127.0.0.1:9");
    // Nor the developer's own keychain: no D-Bus session unless a test brings its own.
    command.env_remove("DBUS_SESSION_BUS_ADDRESS").env_remove("XDG_RUNTIME_DIR").env_remove("FUTURNAL_SECRET_STORE");
    command
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// The binary with `--data-dir dir`, on the backend of this run: in the PostgreSQL run,
/// `FUTURNAL_DATABASE_URL` and a config file (`FUTURNAL_CONFIG`) with the dir's schema.
/// A test that passes its own `--config` writes it with [`write_config`].
pub fn bin_in(dir: &Path) -> Command {
    let mut command = bin();
    command.arg("--data-dir").arg(dir);
    if let Some(pg) = crate::pg_mode::schema_for(dir) {
        command.env("FUTURNAL_DATABASE_URL", &pg.url).env("FUTURNAL_CONFIG", &pg.config_file);
    }
    command
}

/// Writes a config file for the binary run on data dir `dir` (`toml`, plus the dir's
/// PostgreSQL schema in the PostgreSQL run, as `--config` replaces `FUTURNAL_CONFIG`).
pub fn write_config(dir: &Path, path: &Path, toml: &str) {
    let schema = crate::pg_mode::schema_for(dir).map(|pg| pg.toml()).unwrap_or_default();
    std::fs::write(path, format!("{toml}{schema}")).unwrap();
}

pub fn futurnal(data_dir: &Path, args: &[&str]) -> CliOutput {
    let output = bin_in(data_dir).args(args).stdin(Stdio::null()).output().unwrap();
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `futurnal serve` as a child process, with its banner read.
pub struct Daemon {
    pub child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub stderr_path: PathBuf,
}

pub fn start_daemon(data_dir: &Path, envs: &[(&str, &str)]) -> Daemon {
    start_daemon_with(data_dir, envs, &[])
}

/// [`start_daemon`] with more `serve` arguments (e.g. `--no-poll`).
pub fn start_daemon_with(data_dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Daemon {
    use std::io::{BufRead, BufReader};
    let stderr_path = data_dir.join(format!("daemon-{}.log", new_id()));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = bin_in(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in banner {line:?}"))
            .parse()
            .unwrap()
    };
    assert!(line.starts_with("listening "), "banner: {line:?}");
    Daemon { webhook: field("webhook"), admin: field("admin"), child, stderr_path }
}

impl Daemon {
    pub fn url(&self) -> String {
        format!("http://{}/webhook/github", self.webhook)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "daemon did not exit in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Local git remotes standing in for GitHub ----

/// Runs git in `dir` with a fixed identity; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "protocol.file.allow=always"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "Mona Lisa")
        .env("GIT_AUTHOR_EMAIL", "mona@example.com")
        .env("GIT_COMMITTER_NAME", "Mona Lisa")
        .env("GIT_COMMITTER_EMAIL", "mona@example.com")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A bare repository (the "GitHub" side) and a working clone to make commits in.
pub struct GitRemote {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl GitRemote {
    /// The remote `new` made for repository `name` under `root` (as `spawn_app` does for
    /// every tracked repository).
    pub fn existing(root: &Path, name: &str) -> Self {
        Self {
            bare: root.join("remotes").join(format!("{}.git", name.replace('/', "_"))),
            work: root.join("work").join(name.replace('/', "_")),
        }
    }

    /// A remote whose `main` has one commit.
    pub fn new(root: &Path, name: &str) -> Self {
        let Self { bare, work } = Self::existing(root, name);
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "--bare", "-q"]);
        git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        git(&work, &["init", "-q"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let remote = Self { bare, work };
        remote.commit("README.md", "hello\n", "Initial commit");
        remote.push("main");
        remote
    }

    pub fn url(&self) -> String {
        self.bare.to_str().unwrap().to_owned()
    }

    /// Writes `file` and commits it on the current branch; returns the new sha.
    pub fn commit(&self, file: &str, content: &str, message: &str) -> String {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn checkout(&self, branch: &str, create: bool) {
        if create {
            git(&self.work, &["checkout", "-q", "-b", branch]);
        } else {
            git(&self.work, &["checkout", "-q", branch]);
        }
    }

    pub fn push(&self, branch: &str) {
        git(&self.work, &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]);
    }

    pub fn force_push(&self, branch: &str) {
        git(&self.work, &["push", "-q", "--force", "origin", &format!("HEAD:refs/heads/{branch}")]);
    }
}

/// A repository to track (the storage contract's tests): branch `main`, no remote.
pub fn new_repo(name: &str, github_id: Option<u64>) -> NewRepository {
    NewRepository {
        full_name: name.into(),
        github_id,
        branches: vec!["main".into()],
        clone_url: None,
        default_branch: Some("main".into()),
    }
}

/// An open issue by mona, as the local copy stores it.
pub fn issue(number: u64, updated_at: i64, title: &str) -> futurnal::storage::copy::IssueRecord {
    futurnal::storage::copy::IssueRecord {
        number,
        title: title.into(),
        body: None,
        state: "open".into(),
        author: Some("mona".into()),
        labels: vec![],
        assignees: vec![],
        milestone: None,
        comments: 0,
        created_at: Some(1_000),
        updated_at,
        closed_at: None,
        deleted: false,
        transferred_to: None,
    }
}

/// GitHub's `issues` `opened` example for issue `number` of octo/hello (GitHub id 4242),
/// titled `title`.
pub fn issue_payload(number: u64, title: &str) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/issues/opened.payload.json")).unwrap()).unwrap();
    value["repository"]["id"] = 4242.into();
    value["repository"]["full_name"] = "octo/hello".into();
    value["issue"]["number"] = number.into();
    value["issue"]["id"] = (1_000_000 + number).into();
    value["issue"]["title"] = title.into();
    serde_json::to_vec(&value).unwrap()
}

/// The push delivery GitHub would send, in the real shape of the documented example.
pub fn push_payload(repo: &str, github_id: u64, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/push/payload.json")).unwrap()).unwrap();
    let zero = "0000000000000000000000000000000000000000";
    value["ref"] = git_ref.into();
    value["before"] = before.into();
    value["after"] = after.into();
    value["created"] = (before == zero).into();
    value["deleted"] = (after == zero).into();
    value["forced"] = false.into();
    value["commits"] = serde_json::json!([]);
    value["head_commit"] = serde_json::Value::Null;
    value["repository"]["id"] = github_id.into();
    value["repository"]["full_name"] = repo.into();
    value["repository"]["name"] = repo.split('/').nth(1).unwrap().into();
    serde_json::to_vec(&value).unwrap()
}

impl GitRemote {
    /// Appends `count` commits to `main` with git fast-import (fast enough for thousands);
    /// returns the new head.
    pub fn bulk_commits(&self, count: usize) -> String {
        use std::io::Write;
        let parent = self.head();
        let mut script = String::new();
        for i in 0..count {
            let message = format!("bulk commit {i}");
            let content = format!("line {i}\n");
            script.push_str(&format!(
                "commit refs/heads/main\ncommitter Mona Lisa <mona@example.com> {} +0000\ndata {}\n{}\n",
                1_700_000_000 + i,
                message.len(),
                message
            ));
            if i == 0 {
                script.push_str(&format!("from {parent}\n"));
            }
            script.push_str(&format!("M 644 inline bulk/file{}.txt\ndata {}\n{}\n", i % 50, content.len(), content));
        }
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.work)
            .args(["fast-import", "--quiet"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        git(&self.work, &["reset", "-q", "--hard", "main"]);
        self.head()
    }
}
