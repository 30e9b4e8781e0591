//! Process counters, rendered as Prometheus text on the admin listener.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the receiver answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveOutcome {
    Queued,
    Duplicate,
    Ignored,
    Ping,
    Unauthorized,
    RateLimited,
    TooLarge,
    BadRequest,
    UnsupportedMediaType,
    Timeout,
    Unavailable,
    QueueFull,
    /// A source `[webhook] allow_sources` does not let in.
    Forbidden,
}

impl ReceiveOutcome {
    const ALL: [ReceiveOutcome; 13] = [
        Self::Queued,
        Self::Duplicate,
        Self::Ignored,
        Self::Ping,
        Self::Unauthorized,
        Self::RateLimited,
        Self::TooLarge,
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::Timeout,
        Self::Unavailable,
        Self::QueueFull,
        Self::Forbidden,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Ping => "ping",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::BadRequest => "bad_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::QueueFull => "queue_full",
            Self::Forbidden => "forbidden",
        }
    }
}

/// How a worker finished a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOutcome {
    Done,
    Ignored,
    Retry,
    Dead,
}

impl ProcessOutcome {
    const ALL: [ProcessOutcome; 4] = [Self::Done, Self::Ignored, Self::Retry, Self::Dead];

    fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ignored => "ignored",
            Self::Retry => "retry",
            Self::Dead => "dead",
        }
    }
}

const SECRET_RELOAD_CAUSES: [&str; 4] = ["changed", "unreadable", "mismatch", "periodic"];

#[derive(Debug, Default)]
pub struct Metrics {
    received: [AtomicU64; ReceiveOutcome::ALL.len()],
    processed: [AtomicU64; ProcessOutcome::ALL.len()],
    polls: AtomicU64,
    poll_effects: AtomicU64,
    /// By cause: changed, unreadable, periodic.
    secret_reloads: [AtomicU64; 4],
    git_fetches: AtomicU64,
    /// The same counts per minute (and latencies), for the dashboard's charts.
    pub activity: crate::activity::Recorder,
}

impl Metrics {
    pub fn received(&self, outcome: ReceiveOutcome) {
        self.received[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.activity.received(outcome);
    }

    pub fn processed(&self, outcome: ProcessOutcome) {
        self.processed[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.activity.processed(outcome);
    }

    /// One poll or reconcile of a repository, and how many effects it applied.
    pub fn polled(&self, effects: usize) {
        // Effects first: whoever sees the poll counted sees its effects counted too.
        self.poll_effects.fetch_add(effects as u64, Ordering::SeqCst);
        self.polls.fetch_add(1, Ordering::SeqCst);
    }

    /// The receiver read the stored webhook secrets again, for this cause.
    pub fn secrets_reloaded(&self, cause: &'static str) {
        let index = SECRET_RELOAD_CAUSES.iter().position(|c| *c == cause).unwrap_or(0);
        self.secret_reloads[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A sync fetched from a repository's remote (one connection).
    pub fn git_fetched(&self) {
        self.git_fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received_count(&self, outcome: ReceiveOutcome) -> u64 {
        self.received[outcome as usize].load(Ordering::Relaxed)
    }

    pub fn processed_count(&self, outcome: ProcessOutcome) -> u64 {
        self.processed[outcome as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self, queue_depth: u64, queue_cap: u64, oldest_age_seconds: Option<f64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP futurnal_webhook_requests_total Webhook requests by how they were answered.\n");
        out.push_str("# TYPE futurnal_webhook_requests_total counter\n");
        for outcome in ReceiveOutcome::ALL {
            let _ = writeln!(
                out,
                "futurnal_webhook_requests_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.received_count(outcome)
            );
        }
        out.push_str("# HELP futurnal_deliveries_processed_total Delivery processing attempts by result.\n");
        out.push_str("# TYPE futurnal_deliveries_processed_total counter\n");
        for outcome in ProcessOutcome::ALL {
            let _ = writeln!(
                out,
                "futurnal_deliveries_processed_total{{result=\"{}\"}} {}",
                outcome.label(),
                self.processed_count(outcome)
            );
        }
        out.push_str("# HELP futurnal_polls_total Polls and reconciles of repositories.\n");
        out.push_str("# TYPE futurnal_polls_total counter\n");
        let _ = writeln!(out, "futurnal_polls_total {}", self.polls.load(Ordering::SeqCst));
        out.push_str("# HELP futurnal_poll_effects_total Changes polling applied to the local copy.\n");
        out.push_str("# TYPE futurnal_poll_effects_total counter\n");
        let _ = writeln!(out, "futurnal_poll_effects_total {}", self.poll_effects.load(Ordering::SeqCst));
        out.push_str("# HELP futurnal_secret_reloads_total Times the stored webhook secrets were read again.\n");
        out.push_str("# TYPE futurnal_secret_reloads_total counter\n");
        for (cause, count) in SECRET_RELOAD_CAUSES.iter().zip(&self.secret_reloads) {
            let _ =
                writeln!(out, "futurnal_secret_reloads_total{{cause=\"{cause}\"}} {}", count.load(Ordering::Relaxed));
        }
        out.push_str("# HELP futurnal_git_fetches_total Fetches from repositories' remotes by syncs.\n");
        out.push_str("# TYPE futurnal_git_fetches_total counter\n");
        let _ = writeln!(out, "futurnal_git_fetches_total {}", self.git_fetches.load(Ordering::Relaxed));
        out.push_str("# HELP futurnal_queue_depth Deliveries queued, processing or retrying.\n");
        out.push_str("# TYPE futurnal_queue_depth gauge\n");
        let _ = writeln!(out, "futurnal_queue_depth {queue_depth}");
        out.push_str("# HELP futurnal_queue_cap Queued deliveries past which the receiver answers 503.\n");
        out.push_str("# TYPE futurnal_queue_cap gauge\n");
        let _ = writeln!(out, "futurnal_queue_cap {queue_cap}");
        out.push_str("# HELP futurnal_queue_oldest_age_seconds Age of the oldest pending delivery.\n");
        out.push_str("# TYPE futurnal_queue_oldest_age_seconds gauge\n");
        let _ = writeln!(out, "futurnal_queue_oldest_age_seconds {}", oldest_age_seconds.unwrap_or(0.0));
        out
    }
}
