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

use crate::config::{Config, SecretStore};

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
    /// Secrets of `webhook enable` runs in progress: GitHub signs the ping it sends when it
    /// creates a hook (and everything after an update) before `enable` knows the hook's id
    /// and can file the secret under it, so these are accepted for any hook meanwhile.
    pending: Vec<(std::time::SystemTime, WebhookSecret)>,
    /// Hooks with a secret file whose secrets could not be read (an unreachable keychain).
    unreadable: std::collections::HashSet<u64>,
    /// The hook-secrets directory as it was when this set was read.
    pub stamp: SecretsStamp,
}

/// What says cheaply (one `stat`) whether the stored hook secrets may have changed: every
/// store, rotation and removal, by any process, appends a byte to one file of the
/// hook-secrets directory after changing the secrets, so its size counts the changes and
/// never comes back to an earlier value. A reader that took the stamp before reading the
/// secrets sees any later change as a new stamp. (A modification time would not do: two
/// changes within one tick of a coarse file system clock can share it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretsStamp(pub Option<u64>);

const GENERATION_FILE: &str = ".generation";

impl SecretsStamp {
    /// The stamp now.
    pub fn read(data_dir: &Path) -> Self {
        Self(std::fs::metadata(data_dir.join(HOOK_SECRETS_DIR).join(GENERATION_FILE)).ok().map(|m| m.len()))
    }

    /// Whether a set read at `self` may be out of date now.
    pub fn is_stale(&self, data_dir: &Path) -> bool {
        *self != Self::read(data_dir)
    }
}

/// Says that the stored secrets changed (see [`SecretsStamp`]).
fn bump_generation(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = data_dir.join(HOOK_SECRETS_DIR);
    crate::storage::sqlite::create_private_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join(GENERATION_FILE);
    // O_APPEND: appends of two processes at once both land, so the size grows by both.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    file.write_all(b".").with_context(|| format!("failed to write {}", path.display()))
}

/// A pending secret older than this is a leftover of an `enable` that died.
pub const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl SecretSet {
    /// The secrets to try for a delivery from `hook_id`: that hook's own when it has
    /// any, else the global ones. During a rotation a list holds the new and the old.
    pub fn for_hook(&self, hook_id: Option<u64>) -> &[WebhookSecret] {
        hook_id.and_then(|id| self.per_hook.get(&id)).unwrap_or(&self.global)
    }

    /// Secrets of `webhook enable` runs in progress, tried after `for_hook`'s; a leftover
    /// of an `enable` that died expires.
    pub fn pending(&self) -> impl Iterator<Item = &WebhookSecret> {
        self.pending.iter().filter(|(at, _)| at.elapsed().is_ok_and(|age| age <= PENDING_TTL)).map(|(_, s)| s)
    }

    /// Whether the hook has a secret file that could not be read when this set was made.
    pub fn is_unreadable(&self, hook_id: u64) -> bool {
        self.unreadable.contains(&hook_id)
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
        // The stamp first: a change made while reading shows as stale next time.
        let stamp = SecretsStamp::read(&config.data_dir);
        let stored = read_hook_secrets(&config.data_dir)?;
        Self::with_stored(config, create, stored, stamp)
    }

    /// The set of the global secrets (as [`SecretSet::load`]), `stored` per-hook and
    /// pending ones (from wherever they are kept), and the configuration's own per-hook
    /// secrets, which win.
    pub fn with_stored(
        config: &Config,
        create: bool,
        stored: StoredSecrets,
        stamp: SecretsStamp,
    ) -> anyhow::Result<(Self, Option<SecretSource>)> {
        let (current, source) = global_secret(config, create)?;
        let mut global: Vec<WebhookSecret> = current.into_iter().collect();
        if let Some(previous) = &config.webhook.previous_secret {
            global.push(WebhookSecret::new(previous.as_bytes()));
        }
        let mut per_hook = stored.per_hook;
        per_hook.extend(
            config.webhook.hook_secrets.iter().map(|(id, secret)| (*id, vec![WebhookSecret::new(secret.as_bytes())])),
        );
        Ok((Self { global, per_hook, pending: stored.pending, unreadable: stored.unreadable, stamp }, source))
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
    Slot::Hook(hook_id).path(data_dir)
}

/// Where a set of secrets is filed: under a hook's id, or, while `webhook enable` waits
/// for GitHub to say the new hook's id, under a random name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Hook(u64),
    Pending(String),
}

const PENDING_PREFIX: &str = "pending-";

impl Slot {
    fn file_name(&self) -> String {
        match self {
            Slot::Hook(id) => id.to_string(),
            Slot::Pending(name) => format!("{PENDING_PREFIX}{name}"),
        }
    }

    fn path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(HOOK_SECRETS_DIR).join(self.file_name())
    }

    /// The keychain account: hook ids are per GitHub host and data dirs are separate
    /// installations, so both name it.
    fn account(&self, data_dir: &Path) -> String {
        match self {
            Slot::Hook(id) => format!("hook-{id}@{}", data_dir.display()),
            Slot::Pending(name) => format!("{PENDING_PREFIX}{name}@{}", data_dir.display()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Slot::Hook(id) => format!("the secret of hook {id}"),
            Slot::Pending(_) => "the secret of a `webhook enable` in progress".into(),
        }
    }
}

/// The secret of a `webhook enable` in progress, accepted by running receivers from the
/// moment it is stored: before GitHub has it. [`PendingSecret::remove`] once it is filed
/// under the hook's id (or the hook could not be made).
pub struct PendingSecret {
    data_dir: PathBuf,
    slot: Slot,
}

impl std::fmt::Debug for PendingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSecret").field("slot", &self.slot.file_name()).finish_non_exhaustive()
    }
}

impl PendingSecret {
    pub fn remove(self) -> anyhow::Result<()> {
        remove_slot(&self.data_dir, &self.slot)
    }
}

/// Stores `secret` as pending (where the configuration keeps hook secrets).
pub fn store_pending_secret(config: &Config, secret: &str) -> anyhow::Result<PendingSecret> {
    let slot = Slot::Pending(generate_secret()[..16].to_owned());
    store_slot(config, &slot, &[secret])?;
    Ok(PendingSecret { data_dir: config.data_dir.clone(), slot })
}

/// The whole content of a hook's file when its secrets live in the OS keychain.
const IN_KEYCHAIN: &str = "in-os-keychain";

/// Whether the hook file at `path` says its secrets are in the keychain.
fn points_to_keychain(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.trim() == IN_KEYCHAIN)
}

/// Where a hook's secrets were stored, for messages (never the secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSecretLocation {
    Keychain {
        account: String,
    },
    File(PathBuf),
    /// Sealed with `FUTURNAL_SECRET_KEY` in the shared PostgreSQL database.
    Database,
}

impl std::fmt::Display for HookSecretLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keychain { account } => {
                write!(f, "the OS keychain (service \"{}\", account \"{account}\")", crate::keychain::SERVICE)
            }
            Self::File(path) => write!(f, "{} (mode 0600)", path.display()),
            Self::Database => {
                f.write_str("the database, sealed with FUTURNAL_SECRET_KEY, for every instance that has the key")
            }
        }
    }
}

/// The keychain, when `webhook.secret_store = "keychain"` insists on one.
pub fn required_keychain() -> anyhow::Result<crate::keychain::Keychain> {
    crate::keychain::get()
        .map_err(|why| anyhow::anyhow!("webhook.secret_store is keychain, but there is no OS keychain here: {why}"))
}

/// Stores a hook's secrets (current first) where the configuration says: the OS keychain
/// (then the hook's file only says so) or a 0600 file. Returns where, and, when `auto`
/// found no keychain, why, so the caller can say so.
pub fn store_hook_secrets(
    config: &Config,
    hook_id: u64,
    secrets: &[&str],
) -> anyhow::Result<(HookSecretLocation, Option<String>)> {
    store_slot(config, &Slot::Hook(hook_id), secrets)
}

fn store_slot(config: &Config, slot: &Slot, secrets: &[&str]) -> anyhow::Result<(HookSecretLocation, Option<String>)> {
    let data_dir = &config.data_dir;
    let keychain = match config.webhook.secret_store {
        SecretStore::File => Err("webhook.secret_store is file".to_owned()),
        SecretStore::Keychain => Ok(required_keychain()?),
        SecretStore::Auto => crate::keychain::get(),
    };
    let fallback_reason = match keychain {
        Ok(keychain) => {
            let account = slot.account(data_dir);
            match keychain.set(&account, &secrets.join("\n")) {
                Ok(()) => {
                    write_secret_file(&slot.path(data_dir), IN_KEYCHAIN)?;
                    forget_cached(data_dir, slot);
                    bump_generation(data_dir)?;
                    return Ok((HookSecretLocation::Keychain { account }, None));
                }
                Err(e) if config.webhook.secret_store == SecretStore::Keychain => return Err(e),
                Err(e) => Some(format!("{e:#}")),
            }
        }
        Err(why) if config.webhook.secret_store == SecretStore::Auto => Some(why),
        Err(_) => None,
    };
    let path = slot.path(data_dir);
    let was_in_keychain = points_to_keychain(&path);
    write_secret_file(&path, &secrets.join("\n"))?;
    if was_in_keychain {
        if let Ok(keychain) = crate::keychain::get() {
            let _ = keychain.delete(&slot.account(data_dir));
        }
    }
    forget_cached(data_dir, slot);
    bump_generation(data_dir)?;
    Ok((HookSecretLocation::File(path), fallback_reason))
}

/// Rewrites a hook's secrets where they already are.
fn restore_hook_secrets(data_dir: &Path, hook_id: u64, secrets: &[String]) -> anyhow::Result<()> {
    let path = hook_secret_path(data_dir, hook_id);
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    if text.trim() == IN_KEYCHAIN {
        let keychain = crate::keychain::get().map_err(|why| anyhow::anyhow!("no OS keychain: {why}"))?;
        keychain.set(&Slot::Hook(hook_id).account(data_dir), &secrets.join("\n"))?;
        // Touched, so that its age says when the secrets last changed.
        write_secret_file(&path, IN_KEYCHAIN)?;
    } else {
        write_secret_file(&path, &secrets.join("\n"))?;
    }
    forget_cached(data_dir, &Slot::Hook(hook_id));
    bump_generation(data_dir)
}

/// Keychain reads cost a D-Bus round trip and the receiver reloads whenever the directory
/// changed, so what was read is kept until the hook's file changes (every store rewrites it).
/// By the hook's file (data dir and hook id).
type KeychainCache = HashMap<PathBuf, (std::time::SystemTime, Vec<String>)>;
fn keychain_cache() -> &'static std::sync::Mutex<KeychainCache> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<KeychainCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn forget_cached(data_dir: &Path, slot: &Slot) {
    keychain_cache().lock().unwrap_or_else(|p| p.into_inner()).remove(&slot.path(data_dir));
}

/// A hook's secrets, current first; `None` when it has no file.
pub fn hook_secrets(data_dir: &Path, hook_id: u64) -> anyhow::Result<Option<Vec<String>>> {
    slot_secrets(data_dir, &Slot::Hook(hook_id))
}

fn slot_secrets(data_dir: &Path, slot: &Slot) -> anyhow::Result<Option<Vec<String>>> {
    let path = slot.path(data_dir);
    let what = slot.describe();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    if text.trim() != IN_KEYCHAIN {
        return Ok(Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()));
    }
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let cached = keychain_cache().lock().unwrap_or_else(|p| p.into_inner()).get(&path).cloned();
    if let (Some(modified), Some((at, secrets))) = (modified, &cached) {
        if modified == *at {
            return Ok(Some(secrets.clone()));
        }
    }
    let read = crate::keychain::get()
        .map_err(|why| anyhow::anyhow!("{what} is in the OS keychain, which this process cannot reach: {why}"))
        .and_then(|keychain| keychain.get(&slot.account(data_dir)))
        .and_then(|value| {
            value.ok_or_else(|| anyhow::anyhow!("{what} is missing from the OS keychain; run `webhook enable` again"))
        });
    match read {
        Ok(value) => {
            let secrets: Vec<String> =
                value.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
            if let Some(modified) = modified {
                keychain_cache()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.clone(), (modified, secrets.clone()));
            }
            Ok(Some(secrets))
        }
        // Keep accepting what was last read rather than refusing deliveries over a hiccup.
        Err(e) => match cached {
            Some((_, secrets)) => {
                tracing::warn!(slot = %slot.file_name(), error = %format!("{e:#}"), "Using the hook's secrets read earlier");
                Ok(Some(secrets))
            }
            None => Err(e),
        },
    }
}

/// The hook's current secret, if it has one stored.
pub fn current_hook_secret(data_dir: &Path, hook_id: u64) -> Option<String> {
    match hook_secrets(data_dir, hook_id) {
        Ok(secrets) => secrets.and_then(|s| s.into_iter().next()),
        Err(e) => {
            tracing::warn!(hook_id, error = %format!("{e:#}"), "Cannot read the hook's secret");
            None
        }
    }
}

/// Ends a rotation: keeps only the current (first) secret of the hook. Also done
/// once the rotation is older than `grace` when no delivery confirmed it.
pub fn finish_rotation(data_dir: &Path, hook_id: u64) -> anyhow::Result<()> {
    let secrets = hook_secrets(data_dir, hook_id)?.unwrap_or_default();
    if secrets.len() > 1 {
        restore_hook_secrets(data_dir, hook_id, &secrets[..1])?;
    }
    Ok(())
}

/// Hooks that still have an old secret after `grace`.
pub fn stale_rotations(data_dir: &Path, grace: std::time::Duration) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(HOOK_SECRETS_DIR)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.parse::<u64>().ok()?;
            let age = e.metadata().ok()?.modified().ok()?.elapsed().ok()?;
            (age > grace && hook_secrets(data_dir, id).ok()??.len() > 1).then_some(id)
        })
        .collect()
}

/// Deletes a hook's secrets, from the keychain too.
pub fn remove_hook_secrets(data_dir: &Path, hook_id: u64) -> anyhow::Result<()> {
    remove_slot(data_dir, &Slot::Hook(hook_id))
}

fn remove_slot(data_dir: &Path, slot: &Slot) -> anyhow::Result<()> {
    let path = slot.path(data_dir);
    if points_to_keychain(&path) {
        let what = slot.describe();
        let keychain = crate::keychain::get()
            .map_err(|why| anyhow::anyhow!("{what} is in the OS keychain, which this process cannot reach: {why}"))?;
        keychain.delete(&slot.account(data_dir))?;
    }
    forget_cached(data_dir, slot);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        Err(_) => Ok(()),
        Ok(()) => bump_generation(data_dir),
    }
}

/// What the hook-secrets directory (or the database) holds.
#[derive(Default)]
pub struct StoredSecrets {
    pub per_hook: HashMap<u64, Vec<WebhookSecret>>,
    pub pending: Vec<(std::time::SystemTime, WebhookSecret)>,
    pub unreadable: std::collections::HashSet<u64>,
}

/// The hooks with secrets in this host's data dir (or its keychain).
pub fn local_hook_ids(data_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(HOOK_SECRETS_DIR)) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok()).collect()
}

/// Every hook's secrets, and the pending ones. A hook whose secrets cannot be read is
/// logged and left out (its deliveries are then refused with 401, and the log says why),
/// so one unreachable keychain entry does not stop the receiver.
fn read_hook_secrets(data_dir: &Path) -> anyhow::Result<StoredSecrets> {
    let dir = data_dir.join(HOOK_SECRETS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredSecrets::default()),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", dir.display())),
    };
    let mut stored = StoredSecrets::default();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let mut pending_at = std::time::SystemTime::UNIX_EPOCH;
        let slot = if let Some(pending) = name.strip_prefix(PENDING_PREFIX) {
            // A leftover of an `enable` that died is not accepted for ever.
            let Some(stored_at) = entry.metadata().and_then(|m| m.modified()).ok() else { continue };
            if pending.contains('.') || stored_at.elapsed().is_ok_and(|age| age > PENDING_TTL) {
                continue;
            }
            pending_at = stored_at;
            Slot::Pending(pending.to_owned())
        } else {
            match name.parse::<u64>() {
                Ok(id) => Slot::Hook(id),
                Err(_) => continue,
            }
        };
        match slot_secrets(data_dir, &slot) {
            Ok(Some(list)) if !list.is_empty() => {
                let list = list.into_iter().map(WebhookSecret::new);
                match slot {
                    Slot::Hook(id) => {
                        stored.per_hook.insert(id, list.collect());
                    }
                    Slot::Pending(_) => stored.pending.extend(list.map(|secret| (pending_at, secret))),
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Slot::Hook(id) = slot {
                    stored.unreadable.insert(id);
                }
                // Said once per file and ten minutes, not on every reload.
                static SAID: std::sync::Mutex<Option<HashMap<String, std::time::Instant>>> =
                    std::sync::Mutex::new(None);
                let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
                let said = said.get_or_insert_with(HashMap::new);
                if said.get(&name).is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(600)) {
                    said.insert(name.clone(), std::time::Instant::now());
                    tracing::error!(slot = %name, error = %format!("{e:#}"), "Cannot load a hook's secret; deliveries signed with it are refused");
                }
            }
        }
    }
    Ok(stored)
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
        crate::storage::sqlite::create_private_dir(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
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
