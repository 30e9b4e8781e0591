//! The OS keychain, through keyring-core: Keychain Services on macOS, the Secret Service
//! (GNOME Keyring, KWallet) on Linux. A headless server usually has none (no D-Bus session),
//! so every caller has a file fallback and says which one it used.
//!
//! Every call runs on its own thread with a deadline: a Secret Service that decides to
//! show an unlock prompt must not hang the CLI or the daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;

/// The keychain service name under which futurnal keeps its entries.
pub const SERVICE: &str = "futurnal";
/// The account of the GitHub token (`sources github token set`).
pub const TOKEN_ACCOUNT: &str = "github-token";
const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Keychain {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    store: Arc<keyring_core::CredentialStore>,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keychain")
    }
}

/// The process's keychain: `Err` says in one line why there is none. Opened once; a
/// failure is tried again after a minute (a daemon may start before the desktop
/// session's keyring does).
pub fn get() -> Result<Keychain, String> {
    static KEYCHAIN: Mutex<Option<(Result<Keychain, String>, Instant)>> = Mutex::new(None);
    let mut slot = KEYCHAIN.lock().unwrap_or_else(|p| p.into_inner());
    match &*slot {
        Some((Ok(keychain), _)) => return Ok(keychain.clone()),
        Some((Err(why), at)) if at.elapsed() < RETRY_AFTER => return Err(why.clone()),
        _ => {}
    }
    let opened = open();
    *slot = Some((opened.clone(), Instant::now()));
    opened
}

const RETRY_AFTER: Duration = Duration::from_secs(60);

#[cfg(target_os = "linux")]
fn open() -> Result<Keychain, String> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        return Err("no D-Bus session, so no Secret Service (GNOME Keyring, KWallet)".into());
    }
    let store = with_deadline(|| {
        zbus_secret_service_keyring_store::Store::new().map_err(|e| anyhow!("no Secret Service: {}", one_line(&e)))
    })
    .map_err(|e| e.to_string())?;
    Ok(Keychain { store })
}

#[cfg(target_os = "macos")]
fn open() -> Result<Keychain, String> {
    let store = with_deadline(|| {
        apple_native_keyring_store::keychain::Store::new().map_err(|e| anyhow!("no Keychain: {}", one_line(&e)))
    })
    .map_err(|e| e.to_string())?;
    Ok(Keychain { store })
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn open() -> Result<Keychain, String> {
    Err("this build has no keychain support for this platform".into())
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
impl Keychain {
    fn entry(&self, account: &str) -> anyhow::Result<keyring_core::Entry> {
        self.store.build(SERVICE, account, None).map_err(|e| anyhow!("OS keychain: {}", one_line(&e)))
    }

    /// The value stored under `account`, if any.
    pub fn get(&self, account: &str) -> anyhow::Result<Option<String>> {
        let entry = self.entry(account)?;
        with_deadline(move || match entry.get_password() {
            Ok(value) => Ok(Some(value)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(anyhow!("OS keychain: failed to read a secret: {}", one_line(&e))),
        })
    }

    pub fn set(&self, account: &str, value: &str) -> anyhow::Result<()> {
        let entry = self.entry(account)?;
        let value = value.to_owned();
        with_deadline(move || {
            entry.set_password(&value).map_err(|e| anyhow!("OS keychain: failed to store a secret: {}", one_line(&e)))
        })
    }

    /// Deletes the entry; deleting one that does not exist is not an error.
    pub fn delete(&self, account: &str) -> anyhow::Result<()> {
        let entry = self.entry(account)?;
        with_deadline(move || match entry.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(anyhow!("OS keychain: failed to delete a secret: {}", one_line(&e))),
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
impl Keychain {
    pub fn get(&self, _account: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    pub fn set(&self, _account: &str, _value: &str) -> anyhow::Result<()> {
        Err(anyhow!("this build has no keychain support for this platform"))
    }
    pub fn delete(&self, _account: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The token stored with `sources github token set`, when a keychain exists.
pub fn stored_token() -> Option<String> {
    let keychain = get().ok()?;
    match keychain.get(TOKEN_ACCOUNT) {
        Ok(token) => token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the GitHub token from the OS keychain");
            None
        }
    }
}

/// Errors of keychain back ends can carry D-Bus detail over several lines.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
fn with_deadline<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("keychain".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| anyhow!("OS keychain: {e}"))?;
    rx.recv_timeout(DEADLINE).map_err(|_| {
        anyhow!("the OS keychain did not answer within {} s (locked, or waiting for a prompt?)", DEADLINE.as_secs())
    })?
}
