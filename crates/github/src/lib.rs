//! GitHub webhook vocabulary for futurnal: event kinds, lenient payload types and the
//! `X-Hub-Signature-256` check. No I/O, no database, no server: the pieces here are pure
//! so they can be tested and benchmarked alone.

pub mod event;
pub mod payload;
pub mod signature;

pub use event::WebhookEventType;
pub use payload::RoutingFields;
pub use signature::{sign_sha256, SignatureError, WebhookSecret};
