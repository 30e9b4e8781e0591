//! Where webhook secrets come from, and the set the receiver checks signatures against.
//!
//! The global secret is, in order: `FUTURNAL_WEBHOOK_SECRET`, `webhook.secret` in the
//! config file, else the file `webhook-secret` in the data dir, which `serve` creates
//! (random, mode 0600) on first start so that a fresh install verifies signatures from
//! the first delivery. Per-hook secrets (by `X-GitHub-Hook-ID`) win over the global one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futurnal_github::WebhookSecret;

use crate::config::Config;

pub const SECRET_FILE: &str = "webhook-secret";
/// One file per hook made by `webhook enable`, named by its id: the current secret on the
/// first line, the previous one (during a rotation) on the second.
pub const HOOK_SECRETS_DIR: &str = "hook-secrets";

/// Where the global secret came from, for messages (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    ConfigFile,
    DataFile(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Environment => f.write_str("FUTURNAL_WEBHOOK_SECRET"),
            SecretSource::ConfigFile => f.write_str("webhook.secret in the config file"),
            SecretSource::DataFile(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The secrets a delivery may be signed with.
#[derive(Debug, Default)]
pub struct SecretSet {
    global: Vec<WebhookSecret>,
    per_hook: HashMap<u64, Vec<WebhookSecret>>,
}

impl SecretSet {
    /// The secrets to try for a delivery from `hook_id`: that hook's own when it has
    /// any, else the global ones. During a rotation a list holds the new and the old.
    pub fn for_hook(&self, hook_id: Option<u64>) -> &[WebhookSecret] {
        hook_id.and_then(|id| self.per_hook.get(&id)).unwrap_or(&self.global)
    }

    /// Whether the hook has a new and an old secret (a rotation in progress).
    pub fn is_rotating(&self, hook_id: u64) -> bool {
        self.per_hook.get(&hook_id).is_some_and(|s| s.len() > 1)
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.per_hook.is_empty()
    }

    /// Builds the set from the configuration; with `create`, generates the data-dir
    /// secret file when no global secret is configured.
    pub fn load(config: &Config, create: bool) -> anyhow::Result<(Self, Option<SecretSource>)> {
        let (current, source) = global_secret(config, create)?;
        let mut global: Vec<WebhookSecret> = current.into_iter().collect();
        if let Some(previous) = &config.webhook.previous_secret {
            global.push(WebhookSecret::new(previous.as_bytes()));
        }
        let mut per_hook = read_hook_secrets(&config.data_dir)?;
        per_hook.extend(
            config.webhook.hook_secrets.iter().map(|(id, secret)| (*id, vec![WebhookSecret::new(secret.as_bytes())])),
        );
        Ok((Self { global, per_hook }, source))
    }
}

/// The global secret and where it came from; `None` when none is configured and
/// `create` is false.
pub fn global_secret(config: &Config, create: bool) -> anyhow::Result<(Option<WebhookSecret>, Option<SecretSource>)> {
    if let Ok(value) = std::env::var("FUTURNAL_WEBHOOK_SECRET") {
        if !value.is_empty() {
            return Ok((Some(WebhookSecret::new(value)), Some(SecretSource::Environment)));
        }
    }
    if let Some(value) = &config.webhook.secret {
        return Ok((Some(WebhookSecret::new(value.as_bytes())), Some(SecretSource::ConfigFile)));
    }
    let path = config.data_dir.join(SECRET_FILE);
    match read_secret_file(&path)? {
        Some(secret) => Ok((Some(secret), Some(SecretSource::DataFile(path)))),
        None if create => {
            let secret = generate_secret();
            write_secret_file(&path, &secret)?;
            Ok((Some(WebhookSecret::new(secret)), Some(SecretSource::DataFile(path))))
        }
        None => Ok((None, None)),
    }
}

pub fn hook_secret_path(data_dir: &Path, hook_id: u64) -> PathBuf {
    data_dir.join(HOOK_SECRETS_DIR).join(hook_id.to_string())
}

/// The hook's current secret (the first line of its file), if it has a file.
pub fn current_hook_secret(data_dir: &Path, hook_id: u64) -> Option<String> {
    std::fs::read_to_string(hook_secret_path(data_dir, hook_id))
        .ok()
        .and_then(|text| text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned))
}

/// Stores a hook's secrets (current first) in a 0600 file; returns where.
pub fn store_hook_secrets(data_dir: &Path, hook_id: u64, secrets: &[&str]) -> anyhow::Result<PathBuf> {
    let path = hook_secret_path(data_dir, hook_id);
    write_secret_file(&path, &secrets.join("\n"))?;
    Ok(path)
}

/// Ends a rotation: keeps only the current (first) secret of the hook's file. Also done
/// once the rotation is older than `grace` when no delivery confirmed it.
pub fn finish_rotation(data_dir: &Path, hook_id: u64) -> anyhow::Result<()> {
    let path = hook_secret_path(data_dir, hook_id);
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    if let Some(current) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
        write_secret_file(&path, current)?;
    }
    Ok(())
}

/// Hooks whose secret file still holds an old secret after `grace`.
pub fn stale_rotations(data_dir: &Path, grace: std::time::Duration) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(HOOK_SECRETS_DIR)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.parse::<u64>().ok()?;
            let age = e.metadata().ok()?.modified().ok()?.elapsed().ok()?;
            let lines = std::fs::read_to_string(e.path()).ok()?.lines().filter(|l| !l.trim().is_empty()).count();
            (lines > 1 && age > grace).then_some(id)
        })
        .collect()
}

pub fn remove_hook_secrets(data_dir: &Path, hook_id: u64) -> anyhow::Result<()> {
    match std::fs::remove_file(hook_secret_path(data_dir, hook_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn read_hook_secrets(data_dir: &Path) -> anyhow::Result<HashMap<u64, Vec<WebhookSecret>>> {
    let dir = data_dir.join(HOOK_SECRETS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", dir.display())),
    };
    let mut secrets = HashMap::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("failed to read {}", entry.path().display()))?;
        let list: Vec<WebhookSecret> =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(WebhookSecret::new).collect();
        if !list.is_empty() {
            secrets.insert(id, list);
        }
    }
    Ok(secrets)
}

/// 32 random bytes as 64 hex digits.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

fn read_secret_file(path: &Path) -> anyhow::Result<Option<WebhookSecret>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            anyhow::ensure!(!text.is_empty(), "secret file {} is empty", path.display());
            Ok(Some(WebhookSecret::new(text)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read secret file {}", path.display())),
    }
}

fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::db::sqlite::create_private_dir(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    // Written aside, then renamed into place: a reader never sees a half-written secret.
    let staging = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("failed to create secret file {}", staging.display()))?;
    writeln!(file, "{secret}").and_then(|()| file.sync_all()).context("failed to write secret file")?;
    std::fs::rename(&staging, path).with_context(|| format!("failed to create secret file {}", path.display()))?;
    Ok(())
}
