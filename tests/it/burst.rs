//! A burst of signed deliveries from several clients at once, to one receiver or spread
//! over several, every answer recorded with its timing (the fault tests' load).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{new_id, signature, wait_until};

/// Sends one delivery signed with `secret`: the status, or why there was none.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &str,
    id: &str,
    body: &[u8],
) -> Result<u16, String> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// One request: where it went, when it went out and came back, and the answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub id: String,
    pub receiver: usize,
    pub sent: Instant,
    pub answered: Instant,
    pub status: Result<u16, String>,
}

impl Answer {
    pub fn acknowledged(&self) -> bool {
        matches!(self.status, Ok(s) if (200..300).contains(&s))
    }
}

/// Signed deliveries with fresh ids from `clients` senders at once: the `n`-th is
/// `make(n)` signed with `secret`, sent to receiver `n` modulo their number (whichever address is in
/// `targets` then), until `limit` were sent or [`Burst::finish`].
pub struct Burst {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Burst {
    pub fn start(
        targets: Arc<Mutex<Vec<String>>>,
        clients: usize,
        limit: u64,
        secret: &'static str,
        make: fn(u64) -> (&'static str, Vec<u8>),
    ) -> Self {
        futurnal::install_tls_provider();
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let senders = (0..clients)
            .map(|_| {
                let (targets, answers, stop, next) = (targets.clone(), answers.clone(), stop.clone(), next.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= limit {
                            return;
                        }
                        let sent = Instant::now();
                        let (receiver, url) = {
                            let targets = targets.lock().unwrap();
                            let receiver = (n % targets.len() as u64) as usize;
                            (receiver, targets[receiver].clone())
                        };
                        let (event, body) = make(n);
                        let id = new_id();
                        let status = send(&client, &url, secret, event, &id, &body).await;
                        answers.lock().unwrap().push(Answer { id, receiver, sent, answered: Instant::now(), status });
                    }
                })
            })
            .collect();
        Self { answers, stop, senders }
    }

    pub fn count(&self, which: impl Fn(&Answer) -> bool) -> usize {
        self.answers.lock().unwrap().iter().filter(|a| which(a)).count()
    }

    /// Waits until at least `n` answers are `which`, or fails after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, n: usize, which: impl Fn(&Answer) -> bool) {
        wait_until(limit, &format!("{n} {what}"), || async { self.count(&which) >= n }).await;
    }

    pub async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        for sender in self.senders {
            sender.await.unwrap();
        }
        self.answers.lock().unwrap().clone()
    }
}

pub fn acknowledged_ids(answers: &[Answer]) -> Vec<String> {
    answers.iter().filter(|a| a.acknowledged()).map(|a| a.id.clone()).collect()
}

/// Every answer was a 2xx or a 503 (the database away), nothing else.
pub fn assert_only_2xx_or_503(answers: &[Answer]) {
    let odd: Vec<&Answer> = answers.iter().filter(|a| !a.acknowledged() && a.status != Ok(503)).collect();
    assert!(
        odd.is_empty(),
        "answers other than 2xx and 503: {} of {}: {:?}",
        odd.len(),
        answers.len(),
        &odd[..odd.len().min(5)]
    );
}
