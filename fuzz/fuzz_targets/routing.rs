//! `RoutingFields::parse`, the receiver's JSON check before it acknowledges a delivery.
//!
//! Properties: nothing panics; whenever both it and `serde_json::Value` accept the same
//! bytes, they read the same action and repository.
#![no_main]
#![forbid(unsafe_code)]

use futurnal_github::RoutingFields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(routing) = RoutingFields::parse(data) else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let object = value.as_object().expect("routing fields parse from an object only");
    assert_eq!(routing.action.as_deref(), object.get("action").and_then(|a| a.as_str()));
    let repo = object.get("repository").filter(|r| !r.is_null());
    assert_eq!(routing.repository.is_some(), repo.is_some());
    if let (Some(parsed), Some(repo)) = (&routing.repository, repo) {
        assert_eq!(parsed.id, repo.get("id").and_then(|i| i.as_u64()));
        assert_eq!(parsed.full_name.as_deref(), repo.get("full_name").and_then(|n| n.as_str()));
    }
});
