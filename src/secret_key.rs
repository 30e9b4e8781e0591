//! The key that seals secrets kept in a shared database (`FUTURNAL_SECRET_KEY`: 32 bytes
//! written as 64 hex characters), given to every instance by the operator and never
//! stored in the database. Sealing is ChaCha20-Poly1305 with a random 96-bit nonce per
//! value, and the value's purpose (for example `hook 42`) as associated data, so a
//! sealed value copied to another row does not open there.
//! The key may also sit in the OS keychain (`futurnal db secret-key set`), read when the
//! environment has none.

use anyhow::{bail, Context};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

pub const ENV: &str = "FUTURNAL_SECRET_KEY";
/// The keychain account of the key.
pub const KEYCHAIN_ACCOUNT: &str = "secret-key";
const NONCE_LEN: usize = 12;

/// Where the key came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    Keychain,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySource::Environment => "the environment",
            KeySource::Keychain => "the OS keychain",
        })
    }
}

/// The secret key. Its `Debug` shows nothing of it.
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// From its 64 hex characters (surrounding whitespace ignored). The error never
    /// repeats the value.
    pub fn from_hex(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.len() != 64 {
            bail!("{ENV} must be 32 bytes written as 64 hex characters (it has {} characters)", text.len());
        }
        let bytes = hex::decode(text).map_err(|_| anyhow::anyhow!("{ENV} must be 64 hex characters (0-9, a-f)"))?;
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// From the environment, when set.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        match std::env::var(ENV) {
            Ok(value) if !value.trim().is_empty() => Self::from_hex(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// The key from the environment, else from the OS keychain (when there is one), and
    /// where it came from. A malformed key is an error, never repeated.
    pub fn discover() -> anyhow::Result<Option<(Self, KeySource)>> {
        if let Some(key) = Self::from_env()? {
            return Ok(Some((key, KeySource::Environment)));
        }
        let Ok(keychain) = crate::keychain::get() else { return Ok(None) };
        match keychain.get(KEYCHAIN_ACCOUNT) {
            Ok(Some(value)) => Self::from_hex(&value)
                .map(|key| Some((key, KeySource::Keychain)))
                .map_err(|_| anyhow::anyhow!("the {ENV} in the OS keychain is not 64 hex characters; set it again")),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Could not read {ENV} from the OS keychain");
                Ok(None)
            }
        }
    }

    /// A new random key, as 64 hex characters (for the operator to give every instance).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        hex::encode(bytes)
    }

    /// Seals `plain` for `purpose`: nonce, then ciphertext with its tag.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let sealed = ChaCha20Poly1305::new(&self.0)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: purpose.as_bytes() })
            .expect("sealing in memory does not fail");
        [nonce.as_slice(), &sealed].concat()
    }

    /// Opens what [`SecretKey::seal`] made for the same `purpose`; an error when the key
    /// is another, the purpose differs, or a byte changed.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("a sealed value for {purpose} is too short");
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: purpose.as_bytes() })
            .ok()
            .with_context(|| format!("cannot open the sealed value for {purpose}: another {ENV}, or it was altered"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose_and_unaltered() {
        let hex = SecretKey::generate_hex();
        let key = SecretKey::from_hex(&hex).unwrap();
        let sealed = key.seal("hook 42", b"s3cret-value");
        assert!(!sealed.windows(12).any(|w| w == b"s3cret-value"), "not in the clear");
        assert_eq!(key.open("hook 42", &sealed).unwrap(), b"s3cret-value");
        assert_ne!(key.seal("hook 42", b"s3cret-value"), sealed, "a fresh nonce each time");
        assert!(key.open("hook 43", &sealed).is_err(), "bound to its purpose");
        let other = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
        assert!(other.open("hook 42", &sealed).unwrap_err().to_string().contains("another FUTURNAL_SECRET_KEY"));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open("hook 42", &altered).is_err(), "tampering is detected");
        assert!(key.open("hook 42", &sealed[..5]).is_err());
        // Bad keys are refused without repeating them; Debug shows nothing.
        for bad in ["abc", &"zz".repeat(32)] {
            let e = SecretKey::from_hex(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex characters") && !e.contains(bad), "{e}");
        }
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
        assert!(!format!("{key:?}").contains(&hex));
    }
}
