//! The receiver and the admin listener tried as an attacker would: header limits, the
//! listen backlog, connection caps, forwarded addresses, source ranges, the admin token,
//! CSRF and `Origin`, and the browser hardening headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fake_github::FakeGitHub;
use crate::helpers::*;

const REPO: &str = "octo/hello";

/// Sends raw bytes on a new connection and reads the status line's code (0 when the
/// server closed without answering).
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn signed_request(extra_headers: &str) -> Vec<u8> {
    let body = push_body(REPO, 1);
    let mut request = format!(
        "POST /webhook/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: {}\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        new_id(),
        signature(SECRET, &body),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// A 500 KB header, too many headers or too many header bytes: 431 every time (one run
/// in four accepted a 500 KB header before the limits were explicit); GitHub's own
/// requests, with a few kB of headers, pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_431_every_time_and_githubs_pass() {
    let app = spawn_app(AppOptions::default()).await;
    let addr = app.webhook;
    let answers = tokio::task::spawn_blocking(move || {
        let huge = format!("X-Padding: {}\r\n", "a".repeat(500 * 1024));
        let many: String = (0..70).map(|i| format!("X-Extra-{i}: v\r\n")).collect();
        let wide: String = (0..40).map(|i| format!("X-Wide-{i}: {}\r\n", "b".repeat(2000))).collect();
        let github_like: String = (0..12).map(|i| format!("X-GitHub-Extra-{i}: {}\r\n", "c".repeat(200))).collect();
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(("500 KB header", raw_status(addr, &signed_request(&huge))));
        }
        answers.push(("70 extra headers", raw_status(addr, &signed_request(&many))));
        answers.push(("80 KB of headers", raw_status(addr, &signed_request(&wide))));
        answers.push(("GitHub-sized head", raw_status(addr, &signed_request(&github_like))));
        answers
    })
    .await
    .unwrap();
    for (what, status) in &answers[..answers.len() - 1] {
        assert_eq!(*status, 431, "{what}: {answers:?}");
    }
    assert_eq!(answers.last().unwrap().1, 202, "{answers:?}");
    app.stop().await;
}

/// The listen queue holds 4096 connections (or the kernel's cap), not 128: a burst of
/// new connections waits there instead of having its SYNs dropped (retried after 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_backlog_is_4096_or_the_kernels_cap() {
    let app = spawn_app(AppOptions::default()).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let expected = somaxconn.min(4096);
    for addr in [app.webhook, app.admin] {
        // `ss` shows a listening socket's backlog as its Send-Q.
        let out = std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{}", addr.port())]).output();
        let Ok(out) = out else {
            panic!("the ss command (iproute2) is needed to read the backlog");
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let backlog: u32 = text.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert_eq!(backlog, expected, "listen backlog of {addr}: {text}");
    }
    app.stop().await;
}

/// Past `max_connections` a new connection waits until one closes, and is then served;
/// the accept loop never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let app = spawn_app(AppOptions { toml: "max_connections = 8\n".into(), ..Default::default() }).await;
    let addr = app.webhook;
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Every one of them is accepted (a request on each gets its answer)...
    for stream in &mut idle {
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        assert!(stream.read(&mut buf).unwrap() > 0);
    }
    // ...and the ninth waits: connected (the kernel's queue), not answered.
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 512];
    assert!(waiting.read(&mut buf).is_err(), "answered past the cap");
    // One closes: the waiting one is served at once.
    drop(idle.pop());
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let n = waiting.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
    app.stop().await;
}

/// Out of file descriptors (a daemon whose limit is 64, holding connections until it
/// runs out): it keeps accepting as soon as one is free, within moments, not a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_the_accept_loop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    write_config(dir.path(), &config, "[webhook]\nmax_connections = 10000\n");
    let mut command = std::process::Command::new("bash");
    command.arg("-c").arg(format!(
        "ulimit -n 64 && exec {} --data-dir {} --config {} serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --no-poll",
        env!("CARGO_BIN_EXE_futurnal"),
        dir.path().display(),
        config.display()
    ));
    let reference = bin_in(dir.path());
    command.envs(reference.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))));
    for (key, value) in reference.get_envs() {
        if value.is_none() {
            command.env_remove(key);
        }
    }
    let stderr = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child =
        command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(stderr).spawn().unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner).unwrap();
    let addr: std::net::SocketAddr =
        banner.split_whitespace().find_map(|p| p.strip_prefix("webhook=")).unwrap().parse().unwrap();
    // More connections than descriptors: the daemon accepts until it has none left.
    let held: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until(Duration::from_secs(10), "the daemon to run out of descriptors", || async {
        std::fs::read_to_string(dir.path().join("daemon.log"))
            .unwrap_or_default()
            .contains("Accepting connections failed")
    })
    .await;
    drop(held);
    // Free again: served within moments.
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        raw_status(addr, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    })
    .await
    .unwrap();
    // On PostgreSQL the health check's own database connection may have met the same
    // limit a moment ago (503 while its backoff lasts): what counts here is the answer.
    let expected: &[u16] = if crate::pg_mode::postgres_mode() { &[200, 503] } else { &[200] };
    assert!(expected.contains(&status), "answered {status}");
    assert!(started.elapsed() < Duration::from_millis(900), "took {:?}", started.elapsed());
    let _ = child.kill();
    let _ = child.wait();
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy (then the
/// rightmost hop that is not one); from anyone else it is ignored. The unverified rate
/// limit follows the address so found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let unsigned = |app: &TestApp, forwarded: &'static str| {
        let request = app
            .client
            .post(app.url())
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", new_id())
            .header("x-forwarded-for", forwarded)
            .body("{}");
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let limits = "unverified_rate_per_sec = 1\nunverified_burst = 3\n";
    // Trusted: each forwarded client has its own budget.
    let app =
        spawn_app(AppOptions { toml: format!("{limits}trusted_proxies = [\"127.0.0.1/32\"]\n"), ..Default::default() })
            .await;
    for _ in 0..3 {
        assert_eq!(unsigned(&app, "198.51.100.9, 203.0.113.1").await, 401);
    }
    assert_eq!(unsigned(&app, "198.51.100.9, 203.0.113.1").await, 429, "203.0.113.1 used its budget");
    // A forged left part does not give a new budget: the rightmost untrusted hop counts.
    assert_eq!(unsigned(&app, "10.9.9.9, 203.0.113.1").await, 429);
    assert_eq!(unsigned(&app, "203.0.113.2").await, 401, "another client, its own budget");
    // A trusted hop on the right is skipped.
    assert_eq!(unsigned(&app, "203.0.113.1, 127.0.0.1").await, 429);
    app.stop().await;

    // Not trusted: the header is ignored, every request is the peer's.
    let app = spawn_app(AppOptions { toml: limits.into(), ..Default::default() }).await;
    for _ in 0..3 {
        assert_eq!(unsigned(&app, "203.0.113.1").await, 401);
    }
    assert_eq!(unsigned(&app, "203.0.113.2").await, 429, "the header gave no new budget");
    app.stop().await;
}

/// `allow_sources` as a list: other sources get 403 before their body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allowed_ranges_are_403() {
    let app = spawn_app(AppOptions { toml: "allow_sources = [\"10.0.0.0/8\"]\n".into(), ..Default::default() }).await;
    assert_eq!(app.post(Delivery::new("push", push_body(REPO, 1))).await.0, 403);
    app.stop().await;
    let app = spawn_app(AppOptions {
        toml: "allow_sources = [\"10.0.0.0/8\", \"127.0.0.1\"]\n".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(app.post(Delivery::new("push", push_body(REPO, 1))).await.0, 202);
    assert!(app.deliveries(None).await.len() == 1);
    app.stop().await;
}

/// `allow_sources = "github"`: GitHub's `hooks` ranges from `GET /meta` (the fake's),
/// kept on disk for a start without network; with neither, `serve` does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn githubs_hook_ranges_are_fetched_kept_and_enforced() {
    let fake = FakeGitHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sources.toml");
    write_config(dir.path(), &config, "[webhook]\nallow_sources = \"github\"\nsecret = \"s\"\n");
    let config = config.to_string_lossy().into_owned();
    let serve = |api: &str| start_daemon(dir.path(), &[("FUTURNAL_CONFIG", &config), ("FUTURNAL_GITHUB_API_URL", api)]);
    let ping = |daemon: &Daemon| {
        let url = daemon.url();
        async move {
            let body = br#"{"zen":"z","hook_id":1}"#;
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "ping")
                .header("x-github-delivery", new_id())
                .header("x-hub-signature-256", signature("s", body))
                .body(&body[..])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // GitHub's real ranges: this loopback client is not in them.
    let daemon = serve(&fake.url());
    assert_eq!(ping(&daemon).await, 403);
    drop(daemon);
    fake.set_meta_hooks(&["192.30.252.0/22", "127.0.0.0/8"]);
    let daemon = serve(&fake.url());
    assert_eq!(ping(&daemon).await, 200);
    drop(daemon);
    // GitHub unreachable: the ranges kept from the last fetch.
    let daemon = serve("http://127.0.0.1:9");
    assert_eq!(ping(&daemon).await, 200);
    assert!(daemon.stderr().contains("kept from the last fetch"), "{}", daemon.stderr());
    drop(daemon);
    std::fs::remove_file(dir.path().join("github-meta-hooks.json")).unwrap();
    let out = bin_in(dir.path())
        .args(["--config", &config, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--no-poll"])
        .env("FUTURNAL_GITHUB_API_URL", "http://127.0.0.1:9")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GitHub's hook addresses could not be fetched"), "{stderr}");
}

/// Every admin answer carries the browser hardening headers; JSON is never sniffed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_answer_is_hardened_for_browsers() {
    let app = spawn_app(AppOptions::default()).await;
    for path in
        ["/", "/status", "/assets/app.js", "/api/deliveries", "/metrics", "/health", "/api/csrf", "/nothing-here"]
    {
        let response = app.client.get(format!("http://{}{path}", app.admin)).send().await.unwrap();
        let h = response.headers();
        let csp = h.get("content-security-policy").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("'unsafe-inline'") && !csp.contains("'unsafe-eval'"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    app.stop().await;
}

/// A state-changing admin request needs the CSRF token and, when it says where it comes
/// from, this origin; a page under another host name (DNS rebinding) gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_need_the_csrf_token_and_this_origin() {
    let app = spawn_app(AppOptions { track: vec![], ..Default::default() }).await;
    let d = Delivery::new("push", push_body("octo/untracked", 1));
    let id = d.id.clone();
    assert_eq!(app.post(d).await.0, 202);
    let admin = format!("http://{}", app.admin);
    let token =
        app.client.get(format!("{admin}/api/csrf")).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
            ["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let replay = format!("{admin}/api/deliveries/{id}/replay");
    let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status().as_u16() };
    assert_eq!(status(app.client.post(&replay)).await, 403, "no token");
    assert_eq!(status(app.client.post(&replay).header("x-futurnal-csrf", "guess")).await, 403, "wrong token");
    assert_eq!(
        status(app.client.post(&replay).header("x-futurnal-csrf", &token).header("origin", "http://evil.example"))
            .await,
        403,
        "another origin"
    );
    assert_eq!(status(app.client.get(format!("{admin}/api/deliveries")).header("host", "evil.example:80")).await, 403);
    let ok = app
        .client
        .post(&replay)
        .header("x-futurnal-csrf", &token)
        .header("origin", admin.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let answer: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(
        status(app.client.post(format!("{admin}/api/deliveries/nope/replay")).header("x-futurnal-csrf", &token)).await,
        404
    );
    app.stop().await;
}

/// `serve` with its admin listener on `admin_listen`.
fn serve_with(dir: &std::path::Path, envs: &[(&str, &str)], admin_listen: &str) -> Daemon {
    let stderr_path = dir.join("daemon.log");
    let mut child = bin_in(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", admin_listen, "--no-poll"])
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner).unwrap();
    let field = |name: &str| -> std::net::SocketAddr {
        let found = banner.split_whitespace().find_map(|p| p.strip_prefix(&format!("{name}=")));
        found.unwrap_or_else(|| panic!("banner {banner:?}")).parse().unwrap()
    };
    Daemon { webhook: field("webhook"), admin: field("admin"), child, stderr_path }
}

/// Off loopback the admin listener needs a token: without one `serve` does not start;
/// with one, every request but the probe's `/health` must carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_off_loopback_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin_in(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "it never listened");

    let token = "an-admin-token-of-some-length";
    let daemon = serve_with(dir.path(), &[("FUTURNAL_ADMIN_TOKEN", token)], "0.0.0.0:0");
    let admin = format!("http://127.0.0.1:{}", daemon.admin.port());
    let client = reqwest::Client::new();
    let get = |path: &str, bearer: Option<&str>| {
        let mut request = client.get(format!("{admin}{path}"));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/health", None).await, 200, "probes need no token");
    // The dashboard's page and files hold no data: a browser loads them first, and the
    // page asks for the token that everything under /api/ needs.
    assert_eq!(get("/", None).await, 200);
    assert_eq!(get("/assets/app.js", None).await, 200);
    for path in ["/status", "/api/deliveries", "/metrics", "/api/csrf"] {
        assert_eq!(get(path, None).await, 401, "{path}");
        assert_eq!(get(path, Some("wrong-token-of-some-length")).await, 401, "{path}");
        assert_eq!(get(path, Some(token)).await, 200, "{path}");
    }
    assert!(!daemon.stderr().contains(token), "the token is never logged");
}

/// Headers that carry a secret (GitHub once sent `X-Github-Encoded-Secret`) are neither
/// logged nor stored: only the fields futurnal needs are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_carry_secrets_are_never_logged_or_stored() {
    let dir = tempfile::tempdir().unwrap();
    let encoded = "c2VjcmV0LXNlbnQtYnktZ2l0aHVi";
    let daemon =
        start_daemon(dir.path(), &[("FUTURNAL_WEBHOOK_SECRET", "s"), ("RUST_LOG", "debug"), ("FUTURNAL_LOG", "debug")]);
    let body = br#"{"zen":"z","hook_id":1}"#;
    for secret in ["s", "wrong"] {
        let status = reqwest::Client::new()
            .post(daemon.url())
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", new_id())
            .header("x-hub-signature-256", signature(secret, body))
            .header("x-github-encoded-secret", encoded)
            .body(&body[..])
            .send()
            .await
            .unwrap()
            .status();
        assert!(status == 200 || status == 401);
    }
    let stored = futurnal(dir.path(), &["--json", "sources", "github", "webhook", "deliveries"]);
    assert_eq!(stored.code, 0, "{}", stored.stderr);
    assert_eq!(stored.json().as_array().unwrap().len(), 1, "{}", stored.stdout);
    let db_files: Vec<u8> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("futurnal.db"))
        .flat_map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    for (what, text) in
        [("log", daemon.stderr().into_bytes()), ("deliveries", stored.stdout.into_bytes()), ("database", db_files)]
    {
        assert!(!text.windows(encoded.len()).any(|w| w == encoded.as_bytes()), "the encoded secret is in the {what}");
    }
    drop(daemon);
}
