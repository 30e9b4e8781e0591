//! What the dashboard's charts show: per minute, the deliveries received by outcome, the
//! results of processing, and latency histograms (receipt → acknowledgement, receipt →
//! queryable). Counted in memory as it happens ([`Recorder`], inside `Metrics`), written
//! every few seconds to the database (one row per minute and instance, replaced whole:
//! only its instance writes it), read back summed over instances, so the charts survive
//! restarts and show every instance sharing a PostgreSQL database.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::metrics::{ProcessOutcome, ReceiveOutcome};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
/// Rows older than this are pruned.
pub const KEEP_MS: i64 = 2 * 24 * HOUR_MS;

/// Upper bounds (ms) of the latency histogram's buckets; the last is open-ended.
pub const BOUNDS_MS: [f64; 15] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 30_000.0, 60_000.0];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histogram {
    pub counts: Vec<u64>,
}

impl Histogram {
    pub fn record(&mut self, ms: f64) {
        if self.counts.len() != BOUNDS_MS.len() + 1 {
            self.counts.resize(BOUNDS_MS.len() + 1, 0);
        }
        let i = BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(BOUNDS_MS.len());
        self.counts[i] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Quantile `q`, estimated as Prometheus' `histogram_quantile` does: found in its
    /// bucket, then placed linearly between the bucket's bounds by its rank there (so a
    /// p50 reads 3.2 ms rather than the bound 5 ms). The open last bucket reads as its
    /// lower bound (past 60 s, no better estimate exists). `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(f64::MIN_POSITIVE);
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = BOUNDS_MS.get(i) else { return Some(BOUNDS_MS[BOUNDS_MS.len() - 1]) };
                let lower = if i == 0 { 0.0 } else { BOUNDS_MS[i - 1] };
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        None
    }
}

/// One minute (or, summed, one hour) of activity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bucket {
    /// queued, duplicate, ignored, refused, rate_limited
    pub received: [u64; 5],
    /// done, retry, dead
    pub processed: [u64; 3],
    pub ack: Histogram,
    pub queryable: Histogram,
}

const RECEIVED: [&str; 5] = ["queued", "duplicate", "ignored", "refused", "rate_limited"];
const PROCESSED: [&str; 3] = ["done", "retry", "dead"];

impl Bucket {
    pub fn merge(&mut self, other: &Bucket) {
        for (a, b) in self.received.iter_mut().zip(other.received) {
            *a += b;
        }
        for (a, b) in self.processed.iter_mut().zip(other.processed) {
            *a += b;
        }
        self.ack.merge(&other.ack);
        self.queryable.merge(&other.queryable);
    }

    fn json(&self, at_ms: i64) -> Value {
        let counts = |names: &[&str], values: &[u64]| -> Value {
            names.iter().zip(values).map(|(n, v)| ((*n).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>().into()
        };
        let latency = |h: &Histogram| match (h.quantile(0.5), h.quantile(0.99)) {
            (Some(p50), Some(p99)) => json!({ "p50": p50, "p99": p99 }),
            _ => Value::Null,
        };
        json!({
            "at": crate::time::rfc3339(at_ms),
            "received": counts(&RECEIVED, &self.received),
            "processed": counts(&PROCESSED, &self.processed),
            "ack_ms": latency(&self.ack),
            "queryable_ms": latency(&self.queryable),
        })
    }
}

/// The minutes this process counted that are not yet written (and the current one).
#[derive(Debug, Default)]
pub struct Recorder {
    minutes: Mutex<BTreeMap<i64, Bucket>>,
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut Bucket)) {
        let minute = minute_of(crate::time::now_ms());
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        f(minutes.entry(minute).or_default());
    }

    pub fn received(&self, outcome: ReceiveOutcome) {
        let i = match outcome {
            ReceiveOutcome::Queued => 0,
            ReceiveOutcome::Duplicate => 1,
            ReceiveOutcome::Ignored | ReceiveOutcome::Ping => 2,
            ReceiveOutcome::RateLimited => 4,
            _ => 3,
        };
        self.with(|b| b.received[i] += 1);
    }

    /// A delivery acknowledged (2xx) `ms` after its request arrived.
    pub fn acknowledged(&self, ms: f64) {
        self.with(|b| b.ack.record(ms));
    }

    pub fn processed(&self, outcome: ProcessOutcome) {
        let i = match outcome {
            ProcessOutcome::Done | ProcessOutcome::Ignored => 0,
            ProcessOutcome::Retry => 1,
            ProcessOutcome::Dead => 2,
        };
        self.with(|b| b.processed[i] += 1);
    }

    /// A delivery's effects queryable `ms` after it was received.
    pub fn queryable(&self, ms: f64) {
        self.with(|b| b.queryable.record(ms));
    }

    /// The minutes to write, whole, as they stand.
    pub fn snapshot(&self) -> Vec<(i64, Bucket)> {
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        minutes.iter().map(|(m, b)| (*m, b.clone())).collect()
    }

    /// After a snapshot was written: forgets the minutes that ended before `now_ms`'s
    /// previous one (none can change any more). A write that failed forgets nothing, and
    /// the next one writes them again.
    pub fn written(&self, now_ms: i64) {
        let keep_from = minute_of(now_ms) - MINUTE_MS;
        self.minutes.lock().unwrap_or_else(|p| p.into_inner()).retain(|m, _| *m >= keep_from);
    }
}

/// Writes this instance's counts to the database and reads everyone's back: the
/// dashboard's source for its charts.
pub struct Activity {
    pub queue: std::sync::Arc<dyn crate::storage::queue::Queue>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub instance: String,
}

impl Activity {
    /// Writes what this instance counted (the minutes still open, whole).
    pub async fn flush(&self) -> crate::storage::StoreResult<()> {
        let now = crate::time::now_ms();
        let rows = self.metrics.activity.snapshot();
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows
            .into_iter()
            .map(|(minute, bucket)| (minute, serde_json::to_string(&bucket).expect("plain values serialize")))
            .collect();
        self.queue.put_activity(&self.instance, rows).await?;
        self.metrics.activity.written(now);
        Ok(())
    }

    /// Every few seconds until `stop`, and once more at the end.
    pub async fn run(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => false,
            };
            if let Err(e) = self.flush().await {
                tracing::debug!(error = %e, "Could not write the activity counts yet");
            }
            if stopping {
                return;
            }
        }
    }

    /// The charts (see [`charts`]), with this instance's latest counts written first.
    pub async fn charts(&self, now_ms: i64) -> Value {
        let _ = self.flush().await;
        match self.queue.activity(now_ms - 24 * HOUR_MS).await {
            Ok(rows) => {
                let rows: Vec<(i64, Bucket)> = rows
                    .into_iter()
                    .filter_map(|(minute, data)| serde_json::from_str(&data).ok().map(|b| (minute, b)))
                    .collect();
                charts(&rows, now_ms)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Reading the activity counts failed");
                Value::Null
            }
        }
    }
}

/// The charts from stored rows `(minute, bucket)` summed over instances: the last 60
/// minutes and the last 24 hours up to `now_ms`, oldest first, every slot present.
pub fn charts(rows: &[(i64, Bucket)], now_ms: i64) -> Value {
    let series = |slot_ms: i64, slots: i64| -> Value {
        let end = now_ms.div_euclid(slot_ms) * slot_ms;
        let start = end - (slots - 1) * slot_ms;
        let mut sums: BTreeMap<i64, Bucket> = (0..slots).map(|i| (start + i * slot_ms, Bucket::default())).collect();
        for (minute, bucket) in rows {
            let slot = minute.div_euclid(slot_ms) * slot_ms;
            if let Some(sum) = sums.get_mut(&slot) {
                sum.merge(bucket);
            }
        }
        json!({
            "bucket_seconds": slot_ms / 1000,
            "buckets": sums.iter().map(|(at, b)| b.json(*at)).collect::<Vec<_>>(),
        })
    };
    json!({ "hour": series(MINUTE_MS, 60), "day": series(HOUR_MS, 24) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_placed_within_their_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [0.5, 3.0, 3.0, 4.0, 150.0] {
            h.record(ms);
        }
        // Rank 2.5 of 5: one sample below, the (2, 5] bucket's three hold ranks 1..4, so
        // 1.5 of its 3: half of the way through it.
        assert_eq!(h.quantile(0.5), Some(3.5));
        // Rank 4.95: the (100, 200] bucket's one sample, 95% of the way.
        assert!((h.quantile(0.99).unwrap() - 195.0).abs() < 1e-9);
        h.record(1e9);
        assert_eq!(h.quantile(1.0), Some(60_000.0));
        // All in one bucket: spread over it, never past its upper bound.
        let mut one = Histogram::default();
        for _ in 0..10 {
            one.record(7.0);
        }
        assert_eq!(one.quantile(0.5), Some(7.5));
        assert_eq!(one.quantile(1.0), Some(10.0));
    }

    #[test]
    fn charts_sum_instances_into_every_slot() {
        let now = 10 * HOUR_MS + 30 * MINUTE_MS + 5_000;
        let mut a = Bucket::default();
        a.received[0] = 2;
        a.ack.record(3.0);
        let mut b = Bucket::default();
        b.received[0] = 1;
        b.processed[2] = 1;
        let rows = vec![(now - now % MINUTE_MS, a.clone()), (now - now % MINUTE_MS, b), (now - 2 * HOUR_MS, a)];
        let charts = charts(&rows, now);
        let hour = charts["hour"]["buckets"].as_array().unwrap();
        assert_eq!(hour.len(), 60);
        let last = &hour[59];
        assert_eq!(last["received"]["queued"], 3);
        assert_eq!(last["processed"]["dead"], 1);
        assert_eq!(last["ack_ms"]["p50"], 3.5);
        assert_eq!(hour[0]["received"]["queued"], 0);
        assert!(hour[0]["ack_ms"].is_null());
        let day = charts["day"]["buckets"].as_array().unwrap();
        assert_eq!(day.len(), 24);
        assert_eq!(day[23]["received"]["queued"], 3);
        assert_eq!(day[21]["received"]["queued"], 2);
    }
}
