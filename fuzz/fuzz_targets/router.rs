//! The whole webhook listener over raw HTTP/1.1 bytes, as hyper's own `fuzz_request`
//! target does: each input is one client connection, written whole then shut down, that
//! hyper's HTTP/1 server (configured as `futurnal::http::serve` configures it) serves to
//! the real router (`webhook_router`: `/webhook/github` and `/health`) over an in-memory
//! pipe. Behind it is a real SQLite backend in a temporary data dir, with two tracked
//! repositories (those of GitHub's example payloads), a global secret, a previous one, and
//! two hooks of their own (one in a rotation).
//!
//! Every input is served twice: by a listener that verifies signatures and by one that
//! does not (`webhook.verify_signatures = false`, allowed on loopback), so that mutated
//! bodies also reach the parsing and queueing past the signature check. Nothing may
//! panic (a panic in the handler's task aborts the process too), and a connection must
//! end on its own: one still open seconds after its read timeouts is a crash.
#![no_main]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use futurnal::cli::GlobalArgs;
use futurnal::config::{parse_file, Config};
use futurnal::http::{webhook_router, AppState};
use futurnal::metrics::Metrics;
use futurnal::storage::backend::{Backend, Purpose};
use futurnal::storage::registry::NewRepository;
use futurnal::vault::Vault;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// The secrets the seeds under `fuzz/seeds/router` are signed with (`make_seeds.py`).
const SECRET: &str = "fuzz-global-secret";
const PREVIOUS_SECRET: &str = "fuzz-previous-secret";
const HOOK_ID: u64 = 4242;
const HOOK_SECRET: &str = "fuzz-hook-secret";
const ROTATING_HOOK_ID: u64 = 77;
const ROTATING_HOOK_SECRETS: [&str; 2] = ["fuzz-hook-new", "fuzz-hook-old"];

/// The listener's header and body read timeouts (the daemon's are 10 and 30 s).
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection still open after this long hangs: its client has hung up and every read
/// timeout has passed.
const CONNECTION_LIMIT: Duration = Duration::from_secs(5);

struct Fixture {
    runtime: Runtime,
    /// Verifying, then not verifying.
    routers: [Router; 2],
    /// Kept until the process ends (libFuzzer exits without running destructors; run the
    /// target with TMPDIR pointing somewhere that is cleaned, as `bench/fuzz.sh` does).
    _data_dir: tempfile::TempDir,
}

fn config(data_dir: &std::path::Path, verify_signatures: bool) -> Config {
    let text = format!(
        r#"
        [serve]
        listen = "127.0.0.1:8765"
        [webhook]
        secret = "{SECRET}"
        previous_secret = "{PREVIOUS_SECRET}"
        hook_secrets = {{ "{HOOK_ID}" = "{HOOK_SECRET}" }}
        secret_store = "file"
        verify_signatures = {verify_signatures}
        max_body_bytes = 262144
        body_read_timeout_secs = 1
        unverified_rate_per_sec = 1000
        unverified_burst = 1000
        [sqlite]
        synchronous = "normal"
        "#
    );
    let global = GlobalArgs {
        data_dir: Some(data_dir.to_owned()),
        config: None,
        database_url: None,
        github_api_url: None,
        json: false,
    };
    Config::resolve(&global, None, parse_file(&text).expect("the fixture's config"), |_| None)
        .expect("the fixture's config resolves")
}

async fn state(config: &Config, backend: &Backend) -> Arc<AppState> {
    let vault = Arc::new(Vault::new(config, backend).expect("a local vault"));
    let (secrets, _) = vault.load(false).await.expect("the fixture's secrets");
    let mut state = AppState::new(
        config,
        backend.queue.clone(),
        backend.registry.clone(),
        vault,
        secrets,
        Arc::new(Metrics::default()),
        Arc::default(),
    );
    state.cluster = backend.cluster.clone();
    state.tracked.reload().await.expect("the tracked repositories");
    Arc::new(state)
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    assert!(
        std::env::var_os("FUTURNAL_WEBHOOK_SECRET").is_none(),
        "unset FUTURNAL_WEBHOOK_SECRET: the seeds are signed with the fixture's own secret"
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let data_dir = tempfile::Builder::new().prefix("futurnal-fuzz-router-").tempdir().expect("a temporary dir");
    let routers = runtime.block_on(async {
        let verifying = config(data_dir.path(), true);
        futurnal::secrets::store_hook_secrets(&verifying, ROTATING_HOOK_ID, &ROTATING_HOOK_SECRETS)
            .expect("the rotating hook's secrets");
        let backend = Backend::open(&verifying, Purpose::Daemon).await.expect("the SQLite backend");
        for (full_name, github_id) in [("Codertocat/Hello-World", Some(186853002)), ("Octocoders/Hello-World", None)] {
            let repo = NewRepository {
                full_name: full_name.to_owned(),
                github_id,
                branches: vec![],
                clone_url: None,
                default_branch: Some("main".into()),
            };
            backend.registry.add(repo, vec![]).await.expect("a tracked repository");
        }
        let unverified = config(data_dir.path(), false);
        [webhook_router(state(&verifying, &backend).await), webhook_router(state(&unverified, &backend).await)]
    });
    Fixture { runtime, routers, _data_dir: data_dir }
});

/// Serves one connection whose client writes `data`, shuts its side down and reads
/// whatever comes back; returns what came back.
async fn serve_one(router: Router, data: &[u8]) -> Vec<u8> {
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let (mut client, server) = tokio::io::duplex(data.len().max(1024));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // As `futurnal::http::serve` builds it, but with half-closed connections served: the
    // client has shut its side down once the input is written, and without this hyper
    // would drop the connection at that EOF before answering.
    builder.timer(TokioTimer::new()).header_read_timeout(READ_TIMEOUT).keep_alive(true).half_close(true);
    let connection = builder.serve_connection(TokioIo::new(server), TowerToHyperService::new(service));
    let client_side = async move {
        let mut answer = Vec::new();
        // Either fails only when the server closed the connection first.
        if client.write_all(data).await.is_ok() && client.shutdown().await.is_ok() {
            let _ = client.read_to_end(&mut answer).await;
        }
        answer
    };
    let (_served, answer) = tokio::join!(connection, client_side);
    answer
}

/// `FUZZ_ROUTER_PRINT=1`: print each answer's status line and body (to check the seeds
/// with `cargo fuzz run router fuzz/seeds/router -- -runs=0`).
static PRINT: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_ROUTER_PRINT").is_some());

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    for router in &fixture.routers {
        let answer = fixture
            .runtime
            .block_on(async { tokio::time::timeout(CONNECTION_LIMIT, serve_one(router.clone(), data)).await });
        let answer = answer.unwrap_or_else(|_| panic!("a connection was still open after {CONNECTION_LIMIT:?}"));
        if *PRINT {
            let text = String::from_utf8_lossy(&answer);
            let mut lines = text.lines().filter(|l| l.starts_with("HTTP/") || l.starts_with('{'));
            eprintln!("{}", lines.by_ref().collect::<Vec<_>>().join(" | "));
        }
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
            "not an HTTP/1 answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        assert!(
            !answer[answer.len().min(8)..].starts_with(b" 500"),
            "an internal error: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
});
