//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the raw body, compared in
//! constant time, before anything parses the body.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

/// A webhook secret. Its `Debug` output is redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, for signing and for storing it where it belongs.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why a signature header was refused. The variants say nothing about the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256= and 64 lowercase hex digits)")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Checks `header` (the `X-Hub-Signature-256` value) against the body under any of
/// `secrets` (more than one during a rotation) and returns the index of the secret that
/// matched. The comparison is constant-time.
///
/// GitHub always sends `sha256=` followed by 64 lowercase hex digits; anything else
/// (uppercase, `sha1=`, short) is refused as malformed, as `@octokit/webhooks` does.
pub fn verify_any<'a>(
    secrets: impl IntoIterator<Item = &'a WebhookSecret>,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<usize, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let digest = parse_header(header)?;
    for (index, secret) in secrets.into_iter().enumerate() {
        let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts any key length");
        mac.update(body);
        if mac.verify_slice(&digest).is_ok() {
            return Ok(index);
        }
    }
    Err(SignatureError::Mismatch)
}

/// Computes the `X-Hub-Signature-256` header value GitHub would send for `body`.
pub fn sign_sha256(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn parse_header(header: &[u8]) -> Result<[u8; 32], SignatureError> {
    let hex_digits = header.strip_prefix(PREFIX.as_bytes()).ok_or(SignatureError::Malformed)?;
    if hex_digits.len() != 64 || !hex_digits.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SignatureError::Malformed);
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const HEADER: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secret() -> WebhookSecret {
        WebhookSecret::new(SECRET)
    }

    #[test]
    fn github_documented_test_vector() {
        assert_eq!(sign_sha256(&secret(), BODY), HEADER);
        assert_eq!(verify_any([&secret()], BODY, Some(HEADER.as_bytes())), Ok(0));
    }

    #[test]
    fn refuses_every_malformed_or_wrong_header() {
        let s = secret();
        let check = |h: &str| verify_any([&s], BODY, Some(h.as_bytes()));
        assert_eq!(verify_any([&s], BODY, None), Err(SignatureError::Missing));
        assert_eq!(check(""), Err(SignatureError::Malformed));
        assert_eq!(check(&HEADER.to_uppercase()), Err(SignatureError::Malformed));
        assert_eq!(check(&format!("sha256={}", &HEADER[7..].to_uppercase())), Err(SignatureError::Malformed));
        assert_eq!(check(&HEADER[..HEADER.len() - 2]), Err(SignatureError::Malformed));
        assert_eq!(check(&format!("sha1={}", &HEADER[7..47])), Err(SignatureError::Malformed));
        assert_eq!(check(&format!("{HEADER}00")), Err(SignatureError::Malformed));
        let mut wrong = HEADER.to_owned();
        wrong.replace_range(70.., "0");
        assert_eq!(check(&wrong), Err(SignatureError::Mismatch));
        assert_eq!(verify_any([&s], b"Hello, World?", Some(HEADER.as_bytes())), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_any(std::iter::empty::<&WebhookSecret>(), BODY, Some(HEADER.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_of_two_secrets_passes_during_rotation() {
        let old = WebhookSecret::new("old secret");
        let new = secret();
        assert_eq!(verify_any([&old, &new], BODY, Some(HEADER.as_bytes())), Ok(1));
        assert_eq!(verify_any([&old], BODY, Some(HEADER.as_bytes())), Err(SignatureError::Mismatch));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        assert!(!format!("{:?}", secret()).contains("Secret to Everybody"));
    }
}
