//! A flood of unsigned and badly signed requests from one address, as fast as a few
//! keep-alive clients can send them, while another client sends correctly signed
//! deliveries at a steady rate (from the same address), a prober asks `/health` on both
//! listeners and idle connections are held open: `bench/flood.sh` at a small scale. The
//! time bounds here are generous (the machine is shared); the strict figures are the
//! script's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futurnal::storage::queue::DeliveryStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::burst::send;
use crate::helpers::*;

const REPO: &str = "octo/hello";
const FLOOD_CLIENTS: u64 = 8;
const SIGNED_PER_SEC: u64 = 20;
const SIGNED_SECS: u64 = 3;
const IDLE_CONNECTIONS: usize = 200;
/// Every `/health` answers within this, however hard the flood.
const HEALTH_BOUND: Duration = Duration::from_secs(2);

/// GitHub's `issues` example about the tracked repository, issue `number`.
fn issue_body(number: u64) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("payloads/issues/opened.payload.json")).unwrap()).unwrap();
    value["issue"]["number"] = number.into();
    value["issue"]["id"] = (1_000_000 + number).into();
    value["repository"]["id"] = 4242.into();
    value["repository"]["full_name"] = REPO.into();
    value["repository"]["name"] = "hello".into();
    serde_json::to_vec(&value).unwrap()
}

/// What the flood clients were answered.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: Vec<String>,
}

/// Request `n` of a flood client: in turn no signature, one made with another secret,
/// garbage, and every header GitHub sends around a well-formed but wrong signature.
fn flood_request(client: &reqwest::Client, url: &str, n: u64, body: &[u8]) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", new_id())
        .body(body.to_vec());
    let wrong = signature("not-the-secret", body);
    match n % 4 {
        0 => request,
        1 => request.header("x-hub-signature-256", wrong),
        2 => request.header("x-hub-signature-256", ["sha256=zz", "", "sha1=0123", "garbage"][(n / 4 % 4) as usize]),
        _ => request
            .header("user-agent", "GitHub-Hookshot/a1b2c3d")
            .header("x-github-hook-id", (100_000 + n % 7).to_string())
            .header("x-github-hook-installation-target-type", "repository")
            .header("x-github-hook-installation-target-id", "4242")
            .header("x-hub-signature", "sha1=0123456789abcdef0123456789abcdef01234567")
            .header("x-hub-signature-256", wrong),
    }
}

/// `FLOOD_CLIENTS` clients, each over one keep-alive connection, sending one request
/// after the other until `stop`, on a runtime of their own (a thread of its own), so the
/// flood is as fast as one core lets it be and the server's runtime is not also theirs.
fn start_flood(url: String, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let body = push_body(REPO, 4242);
            let clients: Vec<_> = (0..FLOOD_CLIENTS)
                .map(|c| {
                    let (url, stop, answered, body) = (url.clone(), stop.clone(), answered.clone(), body.clone());
                    tokio::spawn(async move {
                        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                        let mut tally = Tally::default();
                        let mut n = c;
                        while !stop.load(Ordering::Relaxed) {
                            n += FLOOD_CLIENTS;
                            match flood_request(&client, &url, n, &body).send().await {
                                Ok(response) => {
                                    let status = response.status().as_u16();
                                    // Read to the end, so the connection is used again.
                                    let _ = response.bytes().await;
                                    *tally.statuses.entry(status).or_default() += 1;
                                }
                                Err(e) => tally.errors.push(format!("{e:?}")),
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        tally
                    })
                })
                .collect();
            let mut total = Tally::default();
            for client in clients {
                let tally = client.await.unwrap();
                for (status, n) in tally.statuses {
                    *total.statuses.entry(status).or_default() += n;
                }
                total.errors.extend(tally.errors);
            }
            total
        })
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unverified_requests_starves_neither_signed_deliveries_nor_health_nor_idle_connections() {
    // The default budget for unverified requests (10/s, burst 30): most of the flood is 429.
    let app = spawn_app(AppOptions::default()).await;

    // Idle connections first, held open throughout: they never send a byte.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(app.webhook).await.unwrap());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flood_answered = Arc::new(AtomicU64::new(0));
    let flood = start_flood(app.url(), stop.clone(), flood_answered.clone());
    wait_until(Duration::from_secs(10), "the flood to be under way", || async {
        flood_answered.load(Ordering::Relaxed) >= 200
    })
    .await;

    // /health on both listeners every 100 ms until the end, a new connection each.
    let prober = {
        let (stop, listeners) = (stop.clone(), [("webhook", app.webhook), ("admin", app.admin)]);
        tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(HEALTH_BOUND).build().unwrap();
            let mut probes = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for (name, addr) in listeners {
                    let started = Instant::now();
                    let status = client
                        .get(format!("http://{addr}/health"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| format!("{e:?}"));
                    probes.push((name, status, started.elapsed()));
                }
            }
            probes
        })
    };

    // The signed deliveries, at a steady rate whatever the answers take (each in a task of
    // its own, on a new connection as GitHub sends them).
    let flood_before = flood_answered.load(Ordering::Relaxed);
    let signed_started = Instant::now();
    let signer = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / SIGNED_PER_SEC));
    let mut sends = Vec::new();
    for n in 0..SIGNED_PER_SEC * SIGNED_SECS {
        tick.tick().await;
        let (client, url) = (signer.clone(), app.url());
        sends.push(tokio::spawn(async move {
            let id = new_id();
            let started = Instant::now();
            let status = send(&client, &url, SECRET, "issues", &id, &issue_body(n + 1)).await;
            (id, status, started.elapsed())
        }));
    }
    let mut signed = Vec::new();
    for s in sends {
        signed.push(s.await.unwrap());
    }
    let flood_during = flood_answered.load(Ordering::Relaxed) - flood_before;
    let signed_for = signed_started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let probes = prober.await.unwrap();
    let flood = tokio::task::spawn_blocking(move || flood.join().unwrap()).await.unwrap();

    let mut latencies: Vec<Duration> = signed.iter().map(|s| s.2).collect();
    latencies.sort();
    let health_max = probes.iter().map(|p| p.2).max().unwrap();
    println!(
        "flood: {:?} ({} answers while the signed ones were sent, {:.0}/s), {} errors; signed: {} in {signed_for:?}, \
         p50 {:?}, p99 {:?}, max {:?}; health: {} probes, max {health_max:?}",
        flood.statuses,
        flood_during,
        flood_during as f64 / signed_for.as_secs_f64(),
        flood.errors.len(),
        signed.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().unwrap(),
        probes.len(),
    );

    // The flood was refused, cheaply, and only that: 401, then 429 past the budget.
    assert!(flood.errors.is_empty(), "flood requests failed: {:?}", &flood.errors[..flood.errors.len().min(5)]);
    assert!(flood.statuses.keys().all(|s| [401, 429].contains(s)), "the flood got {:?}", flood.statuses);
    assert!(flood.statuses.contains_key(&401) && flood.statuses.contains_key(&429), "{:?}", flood.statuses);
    assert!(flood_during >= 100, "the flood went on while the signed deliveries were sent ({flood_during} answers)");

    // Every signed delivery acknowledged, nothing timed out.
    let refused: Vec<_> = signed.iter().filter(|s| s.1 != Ok(202)).collect();
    assert!(
        refused.is_empty(),
        "{} of {} signed deliveries not acknowledged: {:?}",
        refused.len(),
        signed.len(),
        &refused[..refused.len().min(5)]
    );

    // /health answered 200 on both listeners throughout, each within the bound.
    for listener in ["webhook", "admin"] {
        let mine: Vec<_> = probes.iter().filter(|p| p.0 == listener).collect();
        assert!(mine.len() as u64 >= SIGNED_SECS * 10 / 2, "{listener}: only {} probes", mine.len());
        let bad: Vec<_> = mine.iter().filter(|p| p.1 != Ok(200) || p.2 >= HEALTH_BOUND).collect();
        assert!(bad.is_empty(), "{listener}: /health failed or slow: {bad:?}");
    }

    // Every idle connection is still open (the server did not drop them to cope), and one
    // is served when it finally speaks.
    let mut buf = [0u8; 256];
    for (i, connection) in idle.iter().enumerate() {
        match connection.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("idle connection {i} is no longer open: {other:?}"),
        }
    }
    let mut last = idle.pop().unwrap();
    last.write_all(b"GET /health HTTP/1.1\r\nHost: flood\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HEALTH_BOUND, last.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Stored and processed: exactly the signed deliveries, nothing of the flood.
    let ids: std::collections::BTreeSet<String> = signed.iter().map(|s| s.0.clone()).collect();
    wait_until(Duration::from_secs(30), "every signed delivery to be done", || async {
        app.deliveries(Some(DeliveryStatus::Done)).await.len() == ids.len()
    })
    .await;
    let stored: std::collections::BTreeSet<String> =
        app.deliveries(None).await.into_iter().map(|d| d.delivery_id).collect();
    assert_eq!(stored, ids, "stored: the signed deliveries, and nothing else");
    drop(idle);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_connections_waits_in_the_backlog_not_for_a_syn_retransmission() {
    // 1,000 new connections at once, none accepted yet (nobody serves these listeners):
    // each is taken at once into the listen backlog. With the 128 of `TcpListener::bind`
    // the rest have their SYNs dropped and wait a second or more for the retransmission.
    // The kernel caps the backlog at net.core.somaxconn (4096 on Linux since 5.4).
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok();
    let Some(cap) = somaxconn.and_then(|s| s.trim().parse::<usize>().ok()) else {
        eprintln!("skipped: no /proc/sys/net/core/somaxconn to say what the kernel allows");
        return;
    };
    let burst = cap.min(1000);
    let dir = tempfile::tempdir().unwrap();
    let listeners = futurnal::serve::Listeners::bind(&config_for(dir.path(), "")).await.unwrap();
    for addr in [listeners.webhook.as_ref().unwrap().local_addr().unwrap(), listeners.admin.local_addr().unwrap()] {
        let mut held = Vec::new();
        for i in 0..burst {
            let connected = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await;
            let connection = connected.unwrap_or_else(|_| panic!("{addr}: connection {i} waited past 500 ms"));
            held.push(connection.unwrap());
        }
    }
}
