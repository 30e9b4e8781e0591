//! futurnal: a daemon and CLI that keeps a local, queryable copy of GitHub repositories
//! up to date from webhooks. See ARCHITECTURE.md for the map.

pub mod activity;
pub mod cli;
pub mod config;
pub mod domain;
pub mod feed;
pub mod github;
pub mod handlers;
pub mod http;
pub mod instance;
pub mod keychain;
pub mod leader;
pub mod metrics;
pub mod output;
pub mod poll;
pub mod secret_key;
pub mod secrets;
pub mod serve;
pub mod simulate;
pub mod storage;
pub mod sync;
pub mod time;
pub mod tunnel;
pub mod vault;
pub mod worker;

/// Installs ring as the process's TLS crypto provider (reqwest and gix's https transport
/// are built without a default one, to avoid compiling a second crypto library).
/// Idempotent; every entry point that may open a TLS connection calls it.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
