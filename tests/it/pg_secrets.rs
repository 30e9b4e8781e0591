//! Per-hook secrets shared through PostgreSQL, sealed with `FUTURNAL_SECRET_KEY`: real
//! `serve` processes on separate data dirs (separate hosts, as far as files go), one
//! database, the fake GitHub. Every instance with the key verifies every hook, whichever
//! host ran `enable`; a rotation and a `disable` reach all of them; the database holds
//! nothing in the clear; an instance without the key (or with another) says so and does
//! not start receiving.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futurnal::secret_key::SecretKey;
use serde_json::json;

use crate::contract::PgSchema;
use crate::fake_github::FakeGitHub;
use crate::helpers::*;

const REPO: &str = "octo/hello";

/// One host: its data dir and the environment its commands and daemon get.
struct Host {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Host {
    fn new(schema: &PgSchema, fake: &FakeGitHub, name: &str, key: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!("[postgres]\nschema = \"{}\"\n[webhook]\nallow_loopback_hook_urls = true\n", schema.schema),
        )
        .unwrap();
        let mut env = vec![
            ("FUTURNAL_DATABASE_URL", schema.url.clone()),
            ("FUTURNAL_CONFIG", config.to_string_lossy().into_owned()),
            ("FUTURNAL_INSTANCE", name.to_owned()),
            ("FUTURNAL_GITHUB_API_URL", fake.url()),
            ("GITHUB_TOKEN", "test-token".to_owned()),
        ];
        if let Some(key) = key {
            env.push(("FUTURNAL_SECRET_KEY", key.to_owned()));
        }
        Self { dir, env }
    }

    fn envs(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary on this host, off the async threads (the fake GitHub shares them).
    async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut command = bin();
        command.arg("--data-dir").arg(self.path()).args(args).envs(self.envs()).stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn serve(&self) -> Daemon {
        start_daemon_with(self.path(), &self.envs(), &["--no-poll"])
    }

    /// `serve` expected to stop before it listens: its exit code and stderr.
    fn serve_refused(&self, extra_env: &[(&str, &str)]) -> (Option<i32>, String) {
        let mut child = bin()
            .arg("--data-dir")
            .arg(self.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--no-poll"])
            .envs(self.envs())
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert!(output.stdout.is_empty(), "it never said it listens: {}", String::from_utf8_lossy(&output.stdout));
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A delivery as GitHub sends it for `hook_id`, signed with `secret`: the HTTP status.
async fn post(daemon: &Daemon, hook_id: u64, secret: &str) -> u16 {
    let body = json!({
        "action": "opened",
        "issue": {"number": 7, "title": "t", "state": "open", "updated_at": "2026-05-01T00:00:00Z", "user": {"login": "mona"}},
        "repository": {"id": 4242, "full_name": REPO, "name": "hello", "owner": {"login": "octo"}}
    })
    .to_string();
    reqwest::Client::new()
        .post(daemon.url())
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", new_id())
        .header("x-github-hook-id", hook_id.to_string())
        .header("x-hub-signature-256", signature(secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn admin(schema: &PgSchema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The stored slots: name and sealed bytes.
async fn slots(schema: &PgSchema) -> Vec<(String, Vec<u8>)> {
    let rows = admin(schema)
        .await
        .query(&format!("SELECT slot, sealed FROM {}.hook_secrets ORDER BY slot", schema.schema), &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `enable` on one host stores the hook's secret sealed in the database; an instance on
/// another host verifies the hook's deliveries at once, and GitHub's ping (to the first)
/// too. A rotation run on a third host reaches both; once one instance sees GitHub use
/// the new secret, the old is refused by both; `disable` makes both refuse the hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_verifies_rotates_and_forgets_a_hook_secret_another_host_stored() {
    let Some(schema) = PgSchema::new().await else { return };
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    fake.ping_on_create(true);
    let key = SecretKey::generate_hex();
    let hosts: Vec<Host> = (0..3).map(|i| Host::new(&schema, &fake, &format!("node-{i}"), Some(&key))).collect();
    let added = hosts[0].cli(&["sources", "github", "add", REPO, "--no-sync"]).await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let (a, b) = (hosts[0].serve(), hosts[1].serve());

    // Enabled from the third host, the hook pointing at the first instance.
    let enabled =
        hosts[2].cli(&["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &a.url()]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    let enabled = enabled.json();
    assert_eq!(enabled["secret_store"], "database", "{enabled}");
    assert_eq!(enabled["ping_received"], true, "the first instance verified GitHub's ping: {enabled}");
    let hook_id = enabled["hook_id"].as_u64().unwrap();
    let old = fake.hooks(REPO)[0].secret.clone().unwrap();

    // In the database, one slot, sealed: neither the secret nor the key in it.
    let stored = slots(&schema).await;
    assert_eq!(stored.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), vec![format!("hook-{hook_id}")]);
    assert!(!contains(&stored[0].1, &old) && !contains(&stored[0].1, &key), "sealed, not in the clear");
    for host in &hosts {
        assert!(!host.path().join("hook-secrets").join(hook_id.to_string()).exists(), "no file on any host");
    }

    // The second instance never saw a file or a command: it verifies all the same.
    assert_eq!(post(&b, hook_id, &old).await, 202);
    assert_eq!(post(&a, hook_id, &old).await, 202);
    assert_eq!(post(&b, hook_id, "not-the-secret").await, 401);

    // Rotated from the third host: both accept the old and the new at once.
    let rotated = hosts[2].cli(&["--json", "sources", "github", "webhook", "rotate-secret", REPO]).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert_eq!(rotated.json()["secret_store"], "database");
    let new = fake.hooks(REPO)[0].secret.clone().unwrap();
    assert_ne!(old, new);
    assert_eq!(post(&b, hook_id, &old).await, 202, "in flight under the old secret");
    assert_eq!(post(&b, hook_id, &new).await, 202, "the new one at once, on an instance that ran nothing");
    // GitHub signs with the new one (to the first instance): the old one ends on both.
    let guids = fake.trigger(REPO, "issues", json!({"action": "opened", "issue": {"number": 8}})).await;
    assert_eq!(guids.len(), 1);
    wait_until(Duration::from_secs(20), "the second instance to refuse the old secret", || async {
        post(&b, hook_id, &old).await == 401
    })
    .await;
    assert_eq!(post(&a, hook_id, &old).await, 401);
    assert_eq!(post(&a, hook_id, &new).await, 202);
    assert_eq!(post(&b, hook_id, &new).await, 202);
    let stored = slots(&schema).await;
    assert_eq!(stored.len(), 1);
    assert!(!contains(&stored[0].1, &new) && !contains(&stored[0].1, &old));

    // Disabled from the second host: both instances refuse the hook.
    let disabled = hosts[1].cli(&["sources", "github", "webhook", "disable", REPO]).await;
    assert_eq!(disabled.code, 0, "{}", disabled.stderr);
    assert!(slots(&schema).await.is_empty());
    wait_until(Duration::from_secs(20), "both instances to forget the hook", || async {
        post(&a, hook_id, &new).await == 401 && post(&b, hook_id, &new).await == 401
    })
    .await;

    // Nothing of the secrets or the key in what the instances and commands printed.
    for text in [a.stderr(), b.stderr(), enabled.to_string()] {
        assert!(!text.contains(&old) && !text.contains(&new) && !text.contains(&key), "{text}");
    }
    drop((a, b));
    schema.drop_schema().await;
}

/// A secret one host kept in its data dir before the key was given is shared at that
/// host's next start. A receiver without the key, or with another one, says so in one
/// line and does not start (a worker without it does); `db secret-key status` says what
/// the key opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_kept_before_the_key_are_shared_and_a_receiver_without_the_key_does_not_start() {
    let Some(schema) = PgSchema::new().await else { return };
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 4242);
    let key = SecretKey::generate_hex();
    let keyless = Host::new(&schema, &fake, "node-0", None);
    let added = keyless.cli(&["sources", "github", "add", REPO, "--no-sync"]).await;
    assert_eq!(added.code, 0, "{}", added.stderr);

    // Without a key: local as on one instance, and the daemon says what that means.
    let a = keyless.serve();
    let enabled =
        keyless.cli(&["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &a.url()]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    assert_eq!(enabled.json()["secret_store"], "file");
    assert_eq!(enabled.json()["ping_received"], true);
    let hook_id = enabled.json()["hook_id"].as_u64().unwrap();
    let secret = fake.hooks(REPO)[0].secret.clone().unwrap();
    assert!(a.stderr().contains("FUTURNAL_SECRET_KEY is not set"), "{}", a.stderr());
    assert!(slots(&schema).await.is_empty());
    drop(a);

    // The same host with the key: its secret is shared, and another host verifies with it.
    let mut keyed = keyless;
    keyed.env.push(("FUTURNAL_SECRET_KEY", key.clone()));
    let a = keyed.serve();
    wait_until(Duration::from_secs(10), "the import to be logged", || async {
        a.stderr().contains("now shared through the database")
    })
    .await;
    let stored = slots(&schema).await;
    assert_eq!(stored.len(), 1);
    assert!(!contains(&stored[0].1, &secret));
    let other = Host::new(&schema, &fake, "node-1", Some(&key));
    let b = other.serve();
    assert_eq!(post(&b, hook_id, &secret).await, 202);
    assert_eq!(post(&a, hook_id, &secret).await, 202);

    let status = other.cli(&["--json", "db", "secret-key", "status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(status.json(), json!({"key": "the environment", "sealed_secrets": 1, "opened": 1}));

    // A third host without the key, and one with another key: one line each, no start.
    let stranger = Host::new(&schema, &fake, "node-2", None);
    let (code, stderr) = stranger.serve_refused(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("sealed with FUTURNAL_SECRET_KEY, and this instance has none"), "{stderr}");
    let other_key = SecretKey::generate_hex();
    let (code, stderr) = stranger.serve_refused(&[("FUTURNAL_SECRET_KEY", &other_key)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("opens none of the 1 hook secret(s)"), "{stderr}");
    let (code, stderr) = stranger.serve_refused(&[("FUTURNAL_SECRET_KEY", "abc")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("64 hex characters"), "{stderr}");
    let status = stranger.cli(&["--json", "db", "secret-key", "status"]).await;
    assert_eq!(status.json(), json!({"key": null, "sealed_secrets": 1, "opened": 0}));
    for text in [a.stderr(), b.stderr(), stderr] {
        assert!(!text.contains(&secret) && !text.contains(&key) && !text.contains(&other_key), "{text}");
    }
    // A worker verifies nothing, so it needs no key.
    let mut worker = bin()
        .arg("--data-dir")
        .arg(stranger.path())
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--no-poll", "--role", "worker"])
        .envs(stranger.envs())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(worker.stdout.take().unwrap()), &mut banner).unwrap();
    assert!(banner.starts_with("listening webhook=none admin="), "{banner:?}");
    let _ = worker.kill();
    let _ = worker.wait();
    drop((a, b));
    schema.drop_schema().await;
}
