//! `GET /health` on both listeners; `/metrics` and `/api/…` on the admin listener.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::storage::queue::QueueStats;
use crate::time::now_ms;

const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn queue_stats(state: &AppState) -> Option<QueueStats> {
    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.queue.stats()).await {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Health check could not read the queue");
            None
        }
        Err(_) => {
            tracing::warn!("Health check timed out reading the queue");
            None
        }
    }
}

fn age_seconds(stats: &QueueStats) -> Option<f64> {
    stats.oldest_pending_received_at_ms.map(|at| (now_ms() - at).max(0) as f64 / 1000.0)
}

/// The instances seen in the last minute (this one alone on SQLite), when the database
/// answers in time.
async fn instances(state: &AppState) -> Option<Vec<crate::storage::cluster::InstanceRecord>> {
    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.cluster.instances(60_000)).await {
        Ok(Ok(list)) => Some(list),
        _ => None,
    }
}

/// What `/health` says, and whether the database answered.
pub async fn health_json(state: &AppState) -> Value {
    health_body(state).await.0
}

async fn health_body(state: &AppState) -> (Value, bool) {
    let stats = queue_stats(state).await;
    let instances = instances(state).await.map(|list| {
        list.iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "role": i.role,
                    "version": i.version,
                    "leader": i.leader,
                    "started_at": crate::time::rfc3339(i.started_at_ms),
                    "seen_at": crate::time::rfc3339(i.seen_at_ms),
                })
            })
            .collect::<Vec<_>>()
    });
    let body = json!({
        "status": if stats.is_some() { "ok" } else { "degraded" },
        "role": state.role,
        "instance": state.instance,
        "leader": state.leading.load(std::sync::atomic::Ordering::Relaxed),
        "instances": instances,
        "database": if stats.is_some() { "reachable" } else { "unreachable" },
        "queue_depth": stats.map_or(state.queue.approximate_depth(), |s| s.depth),
        "queue_cap": state.max_queued,
        "oldest_queued_age_seconds": stats.as_ref().and_then(age_seconds),
    });
    (body, stats.is_some())
}

/// 200 with the queue's state when the database answers, 503 when it does not.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (body, reachable) = health_body(&state).await;
    let status = if reachable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = queue_stats(&state).await;
    let mut text = state.metrics.render(
        stats.map_or(state.queue.approximate_depth(), |s| s.depth),
        state.max_queued,
        stats.as_ref().and_then(age_seconds),
    );
    let label = state.instance.replace('\\', "\\\\").replace('"', "\\\"");
    let leading = u8::from(state.leading.load(std::sync::atomic::Ordering::Relaxed));
    text.push_str(
        "# HELP futurnal_leader Whether this instance runs the singletons (polling, catch-up, tunnels, pruning).\n",
    );
    text.push_str("# TYPE futurnal_leader gauge\n");
    text.push_str(&format!("futurnal_leader{{instance=\"{label}\"}} {leading}\n"));
    if let Some(list) = instances(&state).await {
        text.push_str("# HELP futurnal_instances Instances sharing the database seen in the last minute.\n");
        text.push_str("# TYPE futurnal_instances gauge\n");
        text.push_str(&format!("futurnal_instances {}\n", list.len()));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
