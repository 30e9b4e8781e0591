//! GitHub's REST API: the client (auth, rate limits, retries, pagination, ETags) and the
//! hook operations built on it.

pub mod catch_up;
pub mod client;
pub mod hooks;
