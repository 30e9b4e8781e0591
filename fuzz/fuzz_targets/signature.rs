//! `X-Hub-Signature-256`: the header parse and `verify_any` over arbitrary bodies.
//!
//! Input: the header value, a newline, then the body. Properties: nothing panics; a header
//! that verifies is exactly what `sign_sha256` gives for the secret that matched (GitHub's
//! form only: `sha256=` and 64 lowercase hex digits), and the first matching secret wins;
//! a header made by `sign_sha256` always verifies.
#![no_main]
#![forbid(unsafe_code)]

use futurnal_github::signature::{sign_sha256, verify_any, SignatureError, WebhookSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secrets = [
        WebhookSecret::new("fuzz-old-secret"),
        WebhookSecret::new("It's a Secret to Everybody"),
        WebhookSecret::new(""),
    ];
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };

    assert_eq!(verify_any(&secrets, body, None), Err(SignatureError::Missing));
    match verify_any(&secrets, body, Some(header)) {
        Ok(index) => {
            assert!(index < secrets.len());
            assert_eq!(
                header,
                sign_sha256(&secrets[index], body).as_bytes(),
                "verified a header GitHub would not send"
            );
            for earlier in &secrets[..index] {
                assert_ne!(header, sign_sha256(earlier, body).as_bytes(), "an earlier secret matches too");
            }
        }
        Err(SignatureError::Missing) => panic!("a header that is there reads as missing"),
        Err(SignatureError::Malformed) => {
            let well_formed = header.len() == 71
                && header.starts_with(b"sha256=")
                && header[7..].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            assert!(!well_formed, "a well-formed header reads as malformed");
        }
        Err(SignatureError::Mismatch) => {
            for secret in &secrets {
                assert_ne!(header, sign_sha256(secret, body).as_bytes(), "a right signature reads as a mismatch");
            }
        }
    }

    // The header as GitHub signs it, with the header's bytes as the secret (any length).
    let own = WebhookSecret::new(header);
    let signed = sign_sha256(&own, body);
    assert_eq!(verify_any([&own], body, Some(signed.as_bytes())), Ok(0));
    assert_eq!(verify_any(&secrets[..0], body, Some(signed.as_bytes())), Err(SignatureError::Mismatch));
});
