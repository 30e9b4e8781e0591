//! The OS keychain for real: a private D-Bus session with GNOME Keyring's Secret Service
//! (what a Linux desktop has), never the developer's own. The token and the hook secrets
//! go there, the hook's file then holds no secret, a receiver in the same session
//! verifies GitHub's deliveries with it, and `disable` deletes it. Without a session the
//! same commands keep secrets in 0600 files and say so.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_github::{FakeGitHub, TEST_TOKEN};
use crate::helpers::*;

const REPO: &str = "octo/keys";

/// A D-Bus session bus and an unlocked GNOME Keyring on it, in a temporary directory.
struct PrivateKeychain {
    dir: tempfile::TempDir,
    bus: Child,
    keyring: Child,
    address: String,
}

impl PrivateKeychain {
    /// `None` (with a loud note) where GNOME Keyring is not installed; `.ci/run`
    /// installs it, and under `CI=true` its absence fails the test.
    fn start() -> Option<Self> {
        let installed = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        let which = |tool: &str| {
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        };
        if !installed("dbus-daemon")
            || !installed("gnome-keyring-daemon")
            || !which("secret-tool")
            || !which("dbus-send")
        {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs this test for real: install dbus, gnome-keyring and libsecret-tools (.ci/run does)"
            );
            eprintln!("NOTE: dbus, gnome-keyring or secret-tool missing: the OS keychain test is NOT run here");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for sub in ["run", "data", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        let address = address.trim().to_owned();
        assert!(address.starts_with("unix:"), "bus address {address:?}");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("HOME", dir.path().join("home"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The keyring's password, then end of input.
        keyring.stdin.take().unwrap().write_all(b"test-password").unwrap();
        let keychain = Self { dir, bus, keyring, address };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !keychain.secret_service_is_up() {
            assert!(Instant::now() < deadline, "GNOME Keyring did not come up on the private bus");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(keychain)
    }

    fn secret_service_is_up(&self) -> bool {
        Command::new("dbus-send")
            .args([
                &format!("--bus={}", self.address),
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
            ("XDG_RUNTIME_DIR", self.dir.path().join("run").display().to_string()),
        ]
    }

    /// Whether the Secret Service holds an item for `account` of futurnal's service.
    fn has_item(&self, account: &str) -> bool {
        Command::new("secret-tool")
            .args(["lookup", "service", "futurnal", "username", account])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    }
}

impl Drop for PrivateKeychain {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(dir: &Path, envs: &[(&str, String)], stdin: &str, args: &[&str]) -> CliOutput {
    let config = dir.join("cli.toml");
    write_config(dir, &config, "[webhook]\nallow_loopback_hook_urls = true\n");
    let mut child = bin_in(dir)
        .arg("--config")
        .arg(&config)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run_async(dir: &Path, envs: &[(&'static str, String)], stdin: &str, args: &[&str]) -> CliOutput {
    // The dir's PostgreSQL schema (in that run) belongs to the test's thread, not the blocking one.
    crate::pg_mode::schema_for(dir);
    let (dir, envs, stdin) = (dir.to_owned(), envs.to_vec(), stdin.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &envs, &stdin, &args)
    })
    .await
    .unwrap()
}

async fn wait_for_ok(fake: &FakeGitHub, hook_id: u64, guid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = fake.deliveries(hook_id);
        if log.iter().any(|d| d["guid"] == guid && d["status"] == "OK") {
            return;
        }
        assert!(Instant::now() < deadline, "delivery {guid} never got a 2xx: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_hook_secrets_live_in_the_os_keychain() {
    let Some(keychain) = PrivateKeychain::start() else { return };
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 7070);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = GitRemote::new(d, "keys");
    let mut envs = keychain.envs();
    envs.push(("FUTURNAL_GITHUB_API_URL", fake.url()));

    // The token: stored from standard input, used with no GITHUB_TOKEN, never printed.
    let set = run_async(d, &envs, &format!("{TEST_TOKEN}\n"), &["sources", "github", "token", "set"]).await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.contains("stored in the OS keychain"), "{}", set.stdout);
    let status = run_async(d, &envs, "", &["--json", "sources", "github", "token", "status"]).await;
    assert_eq!(status.json(), json!({ "token": "from the OS keychain" }));
    assert!(keychain.has_item("github-token"));

    // FUTURNAL_SECRET_KEY the same way (a malformed one refused before it is stored).
    let bad = run_async(d, &envs, "not-a-key\n", &["db", "secret-key", "set"]).await;
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(!keychain.has_item("secret-key"));
    let key = futurnal::secret_key::SecretKey::generate_hex();
    let set = run_async(d, &envs, &format!("{key}\n"), &["db", "secret-key", "set"]).await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(keychain.has_item("secret-key"));
    let status = run_async(d, &envs, "", &["--json", "db", "secret-key", "status"]).await;
    assert_eq!(status.json()["key"], "the OS keychain", "{}", status.stdout);
    assert!(!status.stdout.contains(&key) && !set.stdout.contains(&key));
    // Removed again: on PostgreSQL a key would send the hook secrets below to the database.
    let removed = run_async(d, &envs, "", &["db", "secret-key", "remove"]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(!keychain.has_item("secret-key"));

    let added = run_async(
        d,
        &envs,
        "",
        &["sources", "github", "add", REPO, "--no-sync", "--clone-url", remote.bare.to_str().unwrap()],
    )
    .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let daemon_envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = start_daemon(d, &daemon_envs);

    let enabled = run_async(
        d,
        &envs,
        "",
        &["--json", "sources", "github", "webhook", "enable", REPO, "--public-url", &daemon.url()],
    )
    .await;
    assert_eq!(enabled.code, 0, "{}\n{}", enabled.stderr, daemon.stderr());
    let enabled = enabled.json();
    assert_eq!(enabled["secret_store"], "keychain", "{enabled}");
    // The receiver verified GitHub's ping with the secret it read from the keychain.
    assert_eq!(enabled["ping_received"], true, "{enabled}\n{}", daemon.stderr());
    let hook_id = enabled["hook_id"].as_u64().unwrap();
    let secret = fake.hooks(REPO)[0].secret.clone().unwrap();
    let file = std::fs::read_to_string(d.join("hook-secrets").join(hook_id.to_string())).unwrap();
    assert_eq!(file.trim(), "in-os-keychain", "the file only says where the secret is");
    let account = format!("hook-{hook_id}@{}", d.display());
    assert!(keychain.has_item(&account));

    let guids =
        fake.trigger(REPO, "release", json!({"action": "published", "release": {"id": 1, "tag_name": "v1"}})).await;
    wait_for_ok(&fake, hook_id, &guids[0]).await;

    // Rotation keeps both in the keychain; deliveries under the new secret are accepted.
    let rotated = run_async(d, &envs, "", &["--json", "sources", "github", "webhook", "rotate-secret", REPO]).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert_eq!(rotated.json()["secret_store"], "keychain");
    assert_ne!(fake.hooks(REPO)[0].secret.as_deref(), Some(secret.as_str()), "GitHub has the new secret");
    let guids =
        fake.trigger(REPO, "release", json!({"action": "edited", "release": {"id": 1, "tag_name": "v1"}})).await;
    wait_for_ok(&fake, hook_id, &guids[0]).await;

    let disabled = run_async(d, &envs, "", &["sources", "github", "webhook", "disable", REPO]).await;
    assert_eq!(disabled.code, 0, "{}", disabled.stderr);
    assert!(!keychain.has_item(&account), "disable deletes the keychain entry");
    assert!(!d.join("hook-secrets").join(hook_id.to_string()).exists());

    let removed = run_async(d, &envs, "", &["sources", "github", "token", "remove"]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(!keychain.has_item("github-token"));
    let logs = daemon.stderr();
    assert!(!logs.contains(&secret) && !logs.contains(TEST_TOKEN), "no secret or token in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_keychain_secrets_go_to_a_0600_file_and_the_cli_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeGitHub::start().await;
    fake.add_repo(REPO, 7071);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = GitRemote::new(d, "keys");
    let envs = vec![("FUTURNAL_GITHUB_API_URL", fake.url()), ("GITHUB_TOKEN", TEST_TOKEN.to_owned())];

    let set = run_async(d, &envs, "some-token\n", &["sources", "github", "token", "set"]).await;
    assert_ne!(set.code, 0);
    assert!(
        set.stderr.contains("there is no OS keychain here") && set.stderr.contains("GITHUB_TOKEN"),
        "{}",
        set.stderr
    );

    let clone_url = remote.bare.to_str().unwrap().to_owned();
    let added =
        run_async(d, &envs, "", &["sources", "github", "add", REPO, "--no-sync", "--clone-url", &clone_url]).await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let url = "http://127.0.0.1:9/webhook/github";
    // Asked for the keychain explicitly: refused before GitHub hears of a secret.
    let mut strict = envs.clone();
    strict.push(("FUTURNAL_SECRET_STORE", "keychain".to_owned()));
    let refused =
        run_async(d, &strict, "", &["sources", "github", "webhook", "enable", REPO, "--public-url", url]).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("no OS keychain here"), "{}", refused.stderr);
    assert!(fake.hooks(REPO).is_empty(), "no hook was created");

    let enabled = run_async(d, &envs, "", &["sources", "github", "webhook", "enable", REPO, "--public-url", url]).await;
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    assert!(enabled.stdout.contains("No OS keychain here"), "{}", enabled.stdout);
    let hook = fake.hooks(REPO)[0].clone();
    let path = d.join("hook-secrets").join(hook.id.to_string());
    assert!(enabled.stdout.contains(&path.display().to_string()), "{}", enabled.stdout);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), hook.secret.unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}
