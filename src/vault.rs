//! Where per-hook webhook secrets are kept, for the commands that store them (`enable`,
//! `rotate-secret`, `disable`) and the receivers that check signatures with them.
//!
//! - **Local** (SQLite, or PostgreSQL without a key): this host's OS keychain or its data
//!   dir (`crate::secrets`), as for a single instance.
//! - **Shared** (PostgreSQL with `FUTURNAL_SECRET_KEY`, from the environment or the OS
//!   keychain): the database, each slot sealed with the key (ChaCha20-Poly1305, bound to
//!   the slot's name) so that every instance with the key verifies every hook's
//!   deliveries and the database alone gives nothing away. Each change bumps a generation
//!   and notifies the instances' listeners; a receiver also looks at the generation every
//!   couple of seconds and, at most four times a second, when a signature does not match
//!   (the ping GitHub sends the moment `enable` creates a hook may beat the notification).
//!
//! PostgreSQL without a key keeps the local behaviour and says at start what that means;
//! a receiver refuses to start when the database holds sealed secrets it cannot open.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use futurnal_github::WebhookSecret;

use crate::config::Config;
use crate::secret_key::{KeySource, SecretKey, ENV};
use crate::secrets::{HookSecretLocation, SecretSet, SecretSource, SecretsStamp, StoredSecrets, PENDING_TTL};
use crate::storage::backend::Backend;
use crate::storage::postgres::secrets::{PgSecrets, SealedRow};

pub struct Vault {
    config: Config,
    shared: Option<Shared>,
}

/// The database's side, on PostgreSQL.
struct Shared {
    db: PgSecrets,
    /// `None`: no key here, so secrets stay local (and sealed ones cannot be read).
    key: Option<(SecretKey, KeySource)>,
    /// The newest generation this process has seen.
    latest: AtomicU64,
    /// Set by a notification: the secrets changed, read them again.
    notified: AtomicBool,
    /// When the generation was last asked for.
    checked: std::sync::Mutex<Option<Instant>>,
}

/// Slot names: a hook's by its id, a pending one's random.
const SLOT_HOOK: &str = "hook-";
const SLOT_PENDING: &str = "pending-";

fn hook_slot(hook_id: u64) -> String {
    format!("{SLOT_HOOK}{hook_id}")
}

/// The associated data a slot's value is sealed with: a value copied to another slot
/// does not open there.
fn purpose(slot: &str) -> String {
    format!("futurnal hook secrets: {slot}")
}

/// A `webhook enable` in progress: its secret, accepted by the receivers from the moment
/// it is stored. [`Vault::remove_pending`] once it is filed under the hook's id.
pub enum PendingSecret {
    Local(crate::secrets::PendingSecret),
    Shared(String),
}

impl std::fmt::Debug for PendingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => p.fmt(f),
            Self::Shared(slot) => f.debug_tuple("PendingSecret").field(slot).finish(),
        }
    }
}

/// Runs blocking secret work (files, the OS keychain's D-Bus calls) off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("a secrets task failed")?
}

impl Vault {
    /// The vault `config` and `backend` call for. Looks for the key only on PostgreSQL.
    pub fn new(config: &Config, backend: &Backend) -> anyhow::Result<Self> {
        let shared = match backend.shared_secrets() {
            Some(db) => Some(Shared {
                db,
                key: SecretKey::discover()?,
                latest: AtomicU64::new(0),
                notified: AtomicBool::new(true),
                checked: std::sync::Mutex::new(None),
            }),
            None => None,
        };
        Ok(Self { config: config.clone(), shared })
    }

    /// Whether hook secrets are shared through the database.
    pub fn is_shared(&self) -> bool {
        self.keyed().is_some()
    }

    fn keyed(&self) -> Option<(&Shared, &SecretKey)> {
        self.shared.as_ref().and_then(|s| s.key.as_ref().map(|(key, _)| (s, key)))
    }

    /// What a notification of a change does (the listener calls it); `None` when the
    /// secrets are not shared.
    pub fn on_change(self: &std::sync::Arc<Self>) -> Option<crate::storage::postgres::WakeFn> {
        self.keyed()?;
        let vault = std::sync::Arc::downgrade(self);
        Some(std::sync::Arc::new(move |_| {
            if let Some(vault) = vault.upgrade() {
                if let Some((shared, _)) = vault.keyed() {
                    shared.notified.store(true, Ordering::SeqCst);
                }
            }
        }))
    }

    /// Says what this instance can verify, and refuses to receive when it could verify
    /// nothing the others can: the database holds sealed secrets and this instance has
    /// no key, or a key that opens none of them. On PostgreSQL, shares the secrets kept in
    /// this host's data dir that the database does not have yet.
    pub async fn check_at_start(&self, receives: bool) -> anyhow::Result<()> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let (_, rows) = shared.db.rows().await.context("cannot read the shared hook secrets")?;
        let hooks: Vec<&SealedRow> = rows.iter().filter(|r| r.hook_id.is_some()).collect();
        let Some((key, source)) = &shared.key else {
            if receives && !hooks.is_empty() {
                bail!(
                    "the database keeps the secrets of {} hook(s) sealed with {ENV}, and this instance has none: give it \
                     the same {ENV} as the other instances (or run it with --role worker)",
                    hooks.len()
                );
            }
            if receives {
                tracing::warn!(
                    "{ENV} is not set: hook secrets made here stay in this host's data dir, and other instances refuse \
                     those hooks' deliveries. Give every instance the same {ENV} to share them through the database"
                );
            }
            return Ok(());
        };
        let unopened: Vec<u64> = hooks
            .iter()
            .filter(|r| key.open(&purpose(&r.slot), &r.sealed).is_err())
            .filter_map(|r| r.hook_id)
            .collect();
        if !hooks.is_empty() && unopened.len() == hooks.len() && receives {
            bail!(
                "the {ENV} from {source} opens none of the {} hook secret(s) in the database: it is not the key they \
                 were sealed with",
                hooks.len()
            );
        }
        if !unopened.is_empty() {
            tracing::error!(hooks = ?unopened, "{ENV} does not open these hooks' secrets; their deliveries are refused");
        }
        // Secrets this host kept before the key was given: shared now.
        let stored: std::collections::HashSet<u64> = hooks.iter().filter_map(|r| r.hook_id).collect();
        let data_dir = self.config.data_dir.clone();
        let local = blocking(move || {
            Ok(crate::secrets::local_hook_ids(&data_dir)
                .into_iter()
                .filter_map(|id| Some((id, crate::secrets::hook_secrets(&data_dir, id).ok()??)))
                .collect::<Vec<_>>())
        })
        .await?;
        for (hook_id, secrets) in local.into_iter().filter(|(id, s)| !stored.contains(id) && !s.is_empty()) {
            let slot = hook_slot(hook_id);
            shared.db.put(&slot, Some(hook_id), &key.seal(&purpose(&slot), secrets.join("\n").as_bytes())).await?;
            tracing::info!(
                hook_id,
                "The hook's secret, kept in this host's data dir, is now shared through the database"
            );
        }
        tracing::info!(key = %source, "Hook secrets are shared through the database, sealed with {ENV}");
        Ok(())
    }

    /// Every secret a delivery may be signed with (see [`SecretSet`]); with `create`, the
    /// global secret file is made when no global secret is configured.
    pub async fn load(&self, create: bool) -> anyhow::Result<(SecretSet, Option<SecretSource>)> {
        let config = self.config.clone();
        let Some((shared, key)) = self.keyed() else {
            return blocking(move || SecretSet::load(&config, create)).await;
        };
        // Cleared first: a change announced while reading is read next time.
        shared.notified.store(false, Ordering::SeqCst);
        let (generation, rows) = match shared.db.rows().await {
            Ok(read) => read,
            Err(e) => {
                shared.notified.store(true, Ordering::SeqCst);
                return Err(e).context("cannot read the shared hook secrets");
            }
        };
        shared.latest.fetch_max(generation, Ordering::SeqCst);
        let mut stored = StoredSecrets::default();
        for row in rows {
            let secrets = match open(key, &row) {
                Ok(secrets) => secrets,
                Err(e) => {
                    if let Some(id) = row.hook_id {
                        stored.unreadable.insert(id);
                    }
                    say_once(&row.slot, &e);
                    continue;
                }
            };
            let secrets = secrets.into_iter().map(WebhookSecret::new);
            match row.hook_id {
                Some(id) => {
                    stored.per_hook.insert(id, secrets.collect());
                }
                None if row.age_ms >= 0 && (row.age_ms as u128) <= PENDING_TTL.as_millis() => {
                    // Its age by the database's clock, as of now on this host's.
                    let at = SystemTime::now() - Duration::from_millis(row.age_ms as u64);
                    stored.pending.extend(secrets.map(|s| (at, s)));
                }
                None => {}
            }
        }
        blocking(move || SecretSet::with_stored(&config, create, stored, SecretsStamp(Some(generation)))).await
    }

    /// Whether a set read at `stamp` may be out of date now: one `stat` for local
    /// secrets; for shared ones, what the listener and the last check said.
    pub fn is_stale(&self, stamp: &SecretsStamp) -> bool {
        match self.keyed() {
            None => stamp.is_stale(&self.config.data_dir),
            Some((shared, _)) => {
                shared.notified.load(Ordering::SeqCst) || stamp.0 != Some(shared.latest.load(Ordering::SeqCst))
            }
        }
    }

    /// Asks the database for the generation, unless it was asked within `interval`.
    /// Nothing for local secrets.
    pub async fn check(&self, interval: Duration) {
        let Some((shared, _)) = self.keyed() else { return };
        {
            let mut checked = shared.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.is_some_and(|at| at.elapsed() < interval) {
                return;
            }
            *checked = Some(Instant::now());
        }
        match shared.db.generation().await {
            Ok(generation) => {
                shared.latest.fetch_max(generation, Ordering::SeqCst);
            }
            Err(e) => tracing::debug!(error = %e, "Could not read the hook secrets' generation"),
        }
    }

    /// Stores the secret of a `webhook enable` in progress.
    pub async fn store_pending(&self, secret: &str) -> anyhow::Result<PendingSecret> {
        let Some((shared, key)) = self.keyed() else {
            let (config, secret) = (self.config.clone(), secret.to_owned());
            return blocking(move || crate::secrets::store_pending_secret(&config, &secret))
                .await
                .map(PendingSecret::Local);
        };
        let slot = format!("{SLOT_PENDING}{}", &crate::secrets::generate_secret()[..16]);
        shared.db.put(&slot, None, &key.seal(&purpose(&slot), secret.as_bytes())).await?;
        Ok(PendingSecret::Shared(slot))
    }

    pub async fn remove_pending(&self, pending: PendingSecret) -> anyhow::Result<()> {
        match (pending, self.keyed()) {
            (PendingSecret::Local(pending), _) => blocking(move || pending.remove()).await,
            (PendingSecret::Shared(slot), Some((shared, _))) => {
                shared.db.delete(&slot).await.map(|_| ()).map_err(Into::into)
            }
            (PendingSecret::Shared(_), None) => Ok(()),
        }
    }

    /// Stores a hook's secrets, current first. Returns where, and, when local storage
    /// found no keychain, why (for the caller to say).
    pub async fn store_hook(
        &self,
        hook_id: u64,
        secrets: &[&str],
    ) -> anyhow::Result<(HookSecretLocation, Option<String>)> {
        let Some((shared, key)) = self.keyed() else {
            let config = self.config.clone();
            let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
            return blocking(move || {
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                crate::secrets::store_hook_secrets(&config, hook_id, &secrets)
            })
            .await;
        };
        let slot = hook_slot(hook_id);
        shared.db.put(&slot, Some(hook_id), &key.seal(&purpose(&slot), secrets.join("\n").as_bytes())).await?;
        // A copy this host kept before the key was given is out of date now.
        self.forget_local(hook_id).await;
        Ok((HookSecretLocation::Database, None))
    }

    /// A hook's secrets, current first; `None` when it has none stored.
    pub async fn hook_secrets(&self, hook_id: u64) -> anyhow::Result<Option<Vec<String>>> {
        if let Some((shared, key)) = self.keyed() {
            if let Some(row) = shared.db.row(&hook_slot(hook_id)).await? {
                return open(key, &row).map(Some);
            }
        }
        let data_dir = self.config.data_dir.clone();
        blocking(move || crate::secrets::hook_secrets(&data_dir, hook_id)).await
    }

    /// The hook's current secret, if it has one stored (a failure to read is logged).
    pub async fn current_hook_secret(&self, hook_id: u64) -> Option<String> {
        match self.hook_secrets(hook_id).await {
            Ok(secrets) => secrets.and_then(|s| s.into_iter().next()),
            Err(e) => {
                tracing::warn!(hook_id, error = %format!("{e:#}"), "Cannot read the hook's secret");
                None
            }
        }
    }

    /// Ends a rotation: keeps only the hook's current (first) secret. On the database,
    /// only if nobody changed the hook's secrets since they were read.
    pub async fn finish_rotation(&self, hook_id: u64) -> anyhow::Result<()> {
        let Some((shared, key)) = self.keyed() else {
            let data_dir = self.config.data_dir.clone();
            return blocking(move || crate::secrets::finish_rotation(&data_dir, hook_id)).await;
        };
        let slot = hook_slot(hook_id);
        let Some(row) = shared.db.row(&slot).await? else { return Ok(()) };
        let secrets = open(key, &row)?;
        if secrets.len() > 1 {
            shared.db.replace(&slot, row.version, &key.seal(&purpose(&slot), secrets[0].as_bytes())).await?;
        }
        Ok(())
    }

    /// Hooks that still accept an old secret `grace` after their rotation.
    pub async fn stale_rotations(&self, grace: Duration) -> Vec<u64> {
        let Some((shared, key)) = self.keyed() else {
            let data_dir = self.config.data_dir.clone();
            return blocking(move || Ok(crate::secrets::stale_rotations(&data_dir, grace))).await.unwrap_or_default();
        };
        let Ok((_, rows)) = shared.db.rows().await else { return Vec::new() };
        rows.iter()
            .filter(|r| r.age_ms >= 0 && r.age_ms as u128 > grace.as_millis())
            .filter(|r| open(key, r).is_ok_and(|s| s.len() > 1))
            .filter_map(|r| r.hook_id)
            .collect()
    }

    /// Deletes what `webhook enable` runs that died left pending.
    pub async fn forget_expired_pending(&self) {
        if let Some((shared, _)) = self.keyed() {
            if let Err(e) = shared.db.delete_pending_older_than(PENDING_TTL.as_millis() as i64).await {
                tracing::debug!(error = %e, "Could not delete expired pending secrets");
            }
        }
    }

    /// Deletes a hook's secrets, wherever they are.
    pub async fn remove_hook(&self, hook_id: u64) -> anyhow::Result<()> {
        if let Some((shared, _)) = self.keyed() {
            shared.db.delete(&hook_slot(hook_id)).await?;
            self.forget_local(hook_id).await;
            return Ok(());
        }
        let data_dir = self.config.data_dir.clone();
        blocking(move || crate::secrets::remove_hook_secrets(&data_dir, hook_id)).await
    }

    /// Deletes this host's own copy of a hook's secrets, when it has one.
    async fn forget_local(&self, hook_id: u64) {
        let data_dir = self.config.data_dir.clone();
        if !crate::secrets::hook_secret_path(&data_dir, hook_id).exists() {
            return;
        }
        if let Err(e) = blocking(move || crate::secrets::remove_hook_secrets(&data_dir, hook_id)).await {
            tracing::warn!(hook_id, error = %format!("{e:#}"), "Could not delete this host's old copy of the hook's secret");
        }
    }

    /// For `db secret-key status`: where the key comes from, and how many of the
    /// database's sealed secrets it opens (`None` when not on PostgreSQL).
    pub async fn key_status(&self) -> anyhow::Result<KeyStatus> {
        let Some(shared) = &self.shared else {
            let source = SecretKey::discover()?.map(|(_, source)| source);
            return Ok(KeyStatus { source, sealed: None, opened: 0 });
        };
        let (_, rows) = shared.db.rows().await?;
        let opened = match &shared.key {
            Some((key, _)) => rows.iter().filter(|r| open(key, r).is_ok()).count(),
            None => 0,
        };
        Ok(KeyStatus { source: shared.key.as_ref().map(|(_, s)| *s), sealed: Some(rows.len()), opened })
    }
}

pub struct KeyStatus {
    pub source: Option<KeySource>,
    /// How many slots the database holds (`None`: not on PostgreSQL).
    pub sealed: Option<usize>,
    pub opened: usize,
}

/// A slot's secrets, current first.
fn open(key: &SecretKey, row: &SealedRow) -> anyhow::Result<Vec<String>> {
    let plain = key.open(&purpose(&row.slot), &row.sealed)?;
    let text = String::from_utf8(plain).map_err(|_| anyhow::anyhow!("the sealed value of {} is not text", row.slot))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Logs a slot that does not open once per slot and ten minutes, not at every reload.
fn say_once(slot: &str, e: &anyhow::Error) {
    static SAID: std::sync::Mutex<Option<std::collections::HashMap<String, Instant>>> = std::sync::Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    let said = said.get_or_insert_with(Default::default);
    if said.get(slot).is_none_or(|at| at.elapsed() >= Duration::from_secs(600)) {
        said.insert(slot.to_owned(), Instant::now());
        tracing::error!(slot, error = %format!("{e:#}"), "Cannot open a shared hook secret; deliveries signed with it are refused");
    }
}
