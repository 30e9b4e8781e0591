//! `form_payload`: the `payload` field of an `application/x-www-form-urlencoded` body.
//!
//! Input: a form body, then (after the first NUL byte, if any) a payload X. Properties:
//! nothing panics on the body; `payload=` followed by X encoded as a form encoder does
//! (`form_urlencoded::byte_serialize`, as GitHub's encoder) decodes to X exactly, also
//! with other fields around it; and any decoded payload is no longer than the body.
#![no_main]
#![forbid(unsafe_code)]

use futurnal::http::webhook::form_payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (body, payload) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    if let Ok(decoded) = form_payload(body) {
        assert!(decoded.len() <= body.len(), "decoding never grows the value");
    }

    let encoded: String = form_urlencoded::byte_serialize(payload).collect();
    let alone = format!("payload={encoded}");
    assert_eq!(form_payload(alone.as_bytes()).as_deref(), Ok(payload), "round trip of {alone:?}");
    let among = format!("zen=a+b%20c&payload={encoded}&hook_id=1&");
    assert_eq!(form_payload(among.as_bytes()).as_deref(), Ok(payload), "round trip of {among:?}");
    // A second payload field is always refused, whatever the first one says.
    let twice = format!("{alone}&payload=%7B%7D");
    assert!(form_payload(twice.as_bytes()).is_err());
});
