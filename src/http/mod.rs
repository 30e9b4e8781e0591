//! HTTP transport: the routers of the two listeners and the connection loop that serves
//! them with header and body timeouts and a graceful drain. No SQL here: storage is
//! reached only through the `Queue` and `Registry` traits.

pub mod admin;
pub mod assets;
pub mod dashboard;
pub mod feed;
pub mod health;
pub mod sources;
pub mod status_page;
pub mod tracked;
pub mod webhook;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use futurnal_github::WebhookEventType;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{Compression, Config};
use crate::metrics::Metrics;
use crate::secrets::SecretSet;
use crate::storage::queue::Queue;
use crate::storage::registry::Registry;

/// Everything the handlers share.
pub struct AppState {
    pub queue: Arc<dyn Queue>,
    pub registry: Arc<dyn Registry>,
    pub secrets: RwLock<Arc<SecretSet>>,
    pub events: Vec<WebhookEventType>,
    pub verify_signatures: bool,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub max_queued: u64,
    pub compression: Compression,
    pub unverified_limiter: DefaultKeyedRateLimiter<std::net::IpAddr>,
    pub tracked: tracked::TrackedCache,
    pub metrics: Arc<Metrics>,
    /// Wakes the workers when a delivery was queued.
    pub work_available: Arc<Notify>,
    /// Hooks whose rotated secret GitHub has been seen using; maintenance drops the old.
    pub rotation_confirmed: std::sync::Mutex<std::collections::HashSet<u64>>,
    pub role: &'static str,
    /// The instances sharing the database, and whether this one leads.
    pub cluster: Arc<dyn crate::storage::cluster::Cluster>,
    pub instance: String,
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    /// How long without a verified delivery or ping before a repository reads as polling.
    pub webhook_quiet: std::time::Duration,
    /// The admin listener's bearer token, when configured.
    pub admin_token: Option<crate::config::AdminToken>,
    /// What state-changing admin requests carry (`admin::CSRF_HEADER`); new each start.
    pub csrf_token: String,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Who may deliver, when limited (`[webhook] allow_sources`).
    pub sources: Arc<sources::Sources>,
    /// What the secrets are read from again when they change.
    pub vault: Arc<crate::vault::Vault>,
    /// One reload at a time; the others wait for it and use its result. Holds when the
    /// last unconditional reload ran.
    secrets_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// The local copy and its change log, for the feed (`None` where only the webhook
    /// router is served).
    pub copy: Option<Arc<dyn crate::storage::copy::CopyStore>>,
    /// Bumped when changes are committed (see `Backend::change_signal`).
    pub changes: Arc<crate::storage::changes::ChangeSignal>,
    /// Cancelled at shutdown: open change streams end, so that clients reconnect.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How often an idle change stream sends a comment.
    pub heartbeat: Duration,
    /// The dashboard's charts (`None` where only the webhook router is served).
    pub activity: Option<Arc<crate::activity::Activity>>,
    /// For the dashboard's actions: GitHub (with the token, when there is one) and the
    /// git sync (`None` on a receiver-only instance).
    pub github: Option<Arc<crate::github::client::GitHubClient>>,
    pub sync: Option<Arc<crate::sync::SyncEngine>>,
    pub github_web_url: String,
    pub hooks: dashboard::HookCache,
}

/// Unconditional reloads (a hook whose keychain entry could not be read) run at most
/// this often, however many requests name that hook.
const FORCED_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl AppState {
    pub fn new(
        config: &Config,
        queue: Arc<dyn Queue>,
        registry: Arc<dyn Registry>,
        vault: Arc<crate::vault::Vault>,
        secrets: SecretSet,
        metrics: Arc<Metrics>,
        work_available: Arc<Notify>,
    ) -> Self {
        let w = &config.webhook;
        let quota = Quota::per_second(NonZeroU32::new(w.unverified_rate_per_sec).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(w.unverified_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            tracked: tracked::TrackedCache::new(registry.clone()),
            queue,
            registry,
            secrets: RwLock::new(Arc::new(secrets)),
            events: w.events.clone(),
            verify_signatures: w.verify_signatures,
            max_body_bytes: w.max_body_bytes,
            body_read_timeout: w.body_read_timeout,
            max_queued: config.queue.max_queued,
            webhook_quiet: config.poll.quiet,
            compression: config.queue.compression,
            unverified_limiter: RateLimiter::keyed(quota),
            metrics,
            work_available,
            rotation_confirmed: Default::default(),
            vault,
            secrets_reload: tokio::sync::Mutex::new(None),
            admin_token: config.serve.admin_token.clone(),
            csrf_token: crate::secrets::generate_secret(),
            trusted_proxies: w.trusted_proxies.clone(),
            sources: Arc::new(sources::Sources::new(config)),
            cluster: Arc::new(crate::storage::cluster::SingleInstance::new()),
            instance: config.serve.instance.clone(),
            leading: Arc::default(),
            copy: None,
            changes: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            heartbeat: config.changes.heartbeat,
            activity: None,
            github: None,
            sync: None,
            github_web_url: dashboard::web_url(&config.github_api_url),
            hooks: dashboard::HookCache::default(),
            role: match config.serve.role {
                crate::cli::Role::All => "all",
                crate::cli::Role::Receiver => "receiver",
                crate::cli::Role::Worker => "worker",
            },
        }
    }
}

impl AppState {
    /// The secrets deliveries are checked against now.
    pub fn secrets(&self) -> Arc<SecretSet> {
        self.secrets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the stored secrets again if they may have changed since they were read (one
    /// `stat`, or for secrets shared through the database what its listener said, tells;
    /// nothing is read when they have not), or as `when` says. A secret that `webhook
    /// enable` or `rotate-secret` stored is thereby accepted from the first delivery signed
    /// with it, and an unknown hook id costs nothing more. Returns whether a new set is in
    /// place.
    pub async fn refresh_secrets(&self, when: Refresh) -> bool {
        let seen = self.secrets();
        let changed = || self.vault.is_stale(&seen.stamp);
        if when == Refresh::IfChanged && !changed() {
            return false;
        }
        let mut last_forced = self.secrets_reload.lock().await;
        if !Arc::ptr_eq(&seen, &self.secrets()) {
            // Reloaded by another request while this one waited.
            return true;
        }
        match when {
            Refresh::IfChanged => {}
            Refresh::Unreadable => {
                if last_forced.is_some_and(|at| at.elapsed() < FORCED_RELOAD_INTERVAL) && !changed() {
                    return false;
                }
                *last_forced = Some(std::time::Instant::now());
            }
            Refresh::Mismatch | Refresh::Periodic if self.vault.is_shared() => {
                // Shared secrets: read again only when the database's generation moved.
                let interval = if when == Refresh::Mismatch { MISMATCH_CHECK_INTERVAL } else { Duration::ZERO };
                self.vault.check(interval).await;
                if !changed() {
                    return false;
                }
            }
            Refresh::Mismatch => return false,
            Refresh::Periodic => {}
        }
        let cause = if changed() { Refresh::IfChanged } else { when };
        match self.vault.load(false).await {
            Ok((secrets, _)) => {
                *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(secrets);
                self.metrics.secrets_reloaded(cause.label());
                true
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Reloading webhook secrets failed");
                false
            }
        }
    }
}

/// A signature that matches none of the secrets held makes a receiver whose secrets are
/// shared through the database ask it whether they changed, at most this often.
const MISMATCH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// When the receiver reads the stored secrets again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// When the CLI changed them (the stamp says).
    IfChanged,
    /// Also when a hook's secrets could not be read last time (a keychain that was
    /// unreachable), at most once a second.
    Unreadable,
    /// A signature matched none of the secrets: for secrets shared through the
    /// database, a look at whether they changed (at most four times a second).
    Mismatch,
    /// The maintenance tick's backstop: local secrets are read again (files changed by
    /// hand), shared ones when the database's generation moved.
    Periodic,
}

impl Refresh {
    fn label(self) -> &'static str {
        match self {
            Refresh::IfChanged => "changed",
            Refresh::Unreadable => "unreadable",
            Refresh::Mismatch => "mismatch",
            Refresh::Periodic => "periodic",
        }
    }
}

/// The webhook listener's routes.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhook/github", post(webhook::receive))
        .route("/health", get(health::health))
        .layer(axum::middleware::from_fn(limit_head))
        .with_state(state)
}

/// 431 for a request head over [`MAX_HEAD_BYTES`]. hyper's buffer limit alone does not
/// hold it: a head that arrives in one read can exceed the buffer's size and still be
/// parsed (one run in four let a 500 KB header through).
async fn limit_head(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let bytes: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if bytes > MAX_HEAD_BYTES {
        return json_error(axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large");
    }
    next.run(request).await
}

/// The admin listener's routes: never meant to face the internet. Behind `admin::guard`
/// (the bearer token when one is configured, `Origin` and CSRF checks for anything that
/// changes state) and with the browser hardening headers on every answer.
pub fn admin_router(state: Arc<AppState>) -> Router {
    // The dashboard's files hold no data: outside the guard, so that a browser can load
    // the page before it has the admin token (the page then asks for it). Everything the
    // page shows comes from `/api/`, behind the guard.
    let files = Router::new().route("/", get(assets::index)).route("/assets/{file}", get(assets::asset));
    let guarded = Router::new()
        .route("/status", get(status_page::status_page))
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/api/overview", get(dashboard::overview))
        .route("/api/repositories", get(dashboard::repositories))
        .route("/api/repositories/{id}/sync", post(dashboard::sync))
        .route("/api/repositories/{id}/ping", post(dashboard::ping))
        .route("/api/repositories/{id}/catch-up", post(dashboard::catch_up))
        .route("/api/repositories/{id}/{what}", get(dashboard::copy))
        .route("/api/deliveries", get(dashboard::deliveries))
        .route("/api/deliveries/replay", post(dashboard::replay_matching))
        .route("/api/deliveries/{id}", get(dashboard::delivery))
        .route("/api/deliveries/{id}/replay", post(admin::replay))
        .route("/api/csrf", get(admin::csrf))
        .route("/api/changes", get(feed::changes))
        .route("/api/snapshot", get(feed::snapshot))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admin::guard));
    files
        .merge(guarded)
        .layer(axum::middleware::from_fn(limit_head))
        .layer(axum::middleware::map_response(admin::hardening_headers))
        .with_state(state)
}

#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// A client that has not sent a whole request head by then is disconnected (each
    /// connection's deadline is spread over up to half as long again; see
    /// [`spread_timeout`]).
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Open connections at most; past it the next one waits (in the kernel's queue) until
    /// one closes. `None`: no cap.
    pub max_connections: Option<usize>,
}

/// A request head may have this many header fields at most (GitHub sends about 15)...
pub const MAX_HEADERS: usize = 64;
/// ...and this many bytes in all (GitHub's are a few kB); past either: 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`): a burst of
/// new connections waits in it instead of having its SYNs dropped and retried after 1 s.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish (for at most the grace period).
pub async fn serve(listener: TcpListener, router: Router, options: ServerOptions, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let permits = options.max_connections.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let mut accept_errors = AcceptErrors::default();
    let mut accepted_count: u64 = 0;
    loop {
        // A permit first: past the cap the next connection waits in the listen queue.
        let permit = match &permits {
            Some(permits) => tokio::select! {
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => Some(permit.expect("never closed")),
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: a short pause instead of
                    // spinning (a closing connection frees one within moments), and one
                    // log line a second, not one per try.
                    accept_errors.note(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        accepted_count = accepted_count.wrapping_add(1);
        let mut builder = builder.clone();
        builder.header_read_timeout(spread_timeout(options.header_read_timeout, accepted_count));
        let service = router.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection =
            builder.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(client = %peer.ip(), error = %e, "Connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("Connections still open after the shutdown grace period were closed");
    }
}

/// The header read timeout of the `n`th connection: between `base` and 1.5 × `base`,
/// spread evenly (the fractional parts of n·φ). Connections opened together and left idle
/// (a burst of idle clients, a proxy's pool) then time out over a span of half the
/// timeout, not all in the same instant, so their clients do not all come back at once.
pub fn spread_timeout(base: Duration, n: u64) -> Duration {
    // 2^64 / φ: adding it each time walks the fractional parts of n·φ.
    const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
    let fraction = n.wrapping_mul(STEP) as f64 / (u64::MAX as f64 + 1.0);
    base.mul_f64(1.0 + fraction / 2.0)
}

/// An API error as every JSON endpoint answers it: `{"status": "error", "error": …}`.
pub(crate) fn json_error(status: axum::http::StatusCode, message: impl Into<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(serde_json::json!({ "status": "error", "error": message.into() }))).into_response()
}

/// The database did not answer: logged with what was being done, 503 to the client
/// (without the database's own words, which may name hosts or users).
pub(crate) fn json_unavailable(what: &str, e: &dyn std::fmt::Display) -> axum::response::Response {
    tracing::error!(error = %e, "{what} failed");
    json_error(axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
}

/// Failed accepts, logged once a second with how many there were.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<std::time::Instant>,
    since: u64,
}

impl AcceptErrors {
    fn note(&mut self, e: &std::io::Error) {
        self.since += 1;
        if self.last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(error = %e, failures = self.since, "Accepting connections failed; retrying");
            self.last_logged = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

impl AppState {
    /// The client's address: the peer's, or, when the peer is a trusted proxy, the
    /// rightmost address in `X-Forwarded-For` that is not a trusted proxy (what the
    /// nearest untrusted hop connected from; anything left of it may be forged). From
    /// anyone else the header is ignored.
    pub fn client_ip(&self, parts: &axum::http::request::Parts) -> std::net::IpAddr {
        let peer = client_addr(parts).map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        forwarded_client(peer, &parts.headers, &self.trusted_proxies)
    }
}

/// See [`AppState::client_ip`].
pub fn forwarded_client(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Every X-Forwarded-For line, in order, as one list; read from the right.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        // A hop that is not an address ends the trusted chain: the proxy right of it
        // is the best we know.
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The client's address, when the connection loop recorded it (tests calling the router
/// directly have none).
pub fn client_addr(request: &axum::http::request::Parts) -> Option<SocketAddr> {
    request.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeouts_spread_evenly_over_half_the_timeout_again() {
        let base = Duration::from_secs(10);
        let mut buckets = [0u32; 10];
        for n in 1..=2000 {
            let t = spread_timeout(base, n);
            assert!(t >= base && t < base.mul_f64(1.5), "{t:?}");
            buckets[((t - base).as_secs_f64() / 0.5) as usize] += 1;
        }
        // 2,000 connections opened together: about 200 time out in each half second.
        assert!(buckets.iter().all(|&b| (180..=220).contains(&b)), "{buckets:?}");
    }
}
