//! Catch-up from GitHub's delivery log: every delivery GitHub tried to send to our hook
//! that never got a 2xx, that we do not have, and that is still inside GitHub's
//! redelivery window, is redelivered. Deliveries refused with 503 or 429 (queue full,
//! rate limited) and those sent while the receiver was down come back this way.
//!
//! GitHub is asked once per guid and window: the queue keeps a record of every request
//! (shared by the daemon's own runs and the CLI's), and pings are never asked for (they
//! carry nothing to recover).

use std::collections::BTreeMap;

use serde_json::Value;

use super::client::{ApiError, GitHubClient};
use crate::storage::queue::Queue;

/// GitHub keeps deliveries for redelivery this long (github.com: 3 days).
pub const REDELIVERY_WINDOW_MS: i64 = 3 * 24 * 3600 * 1000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchUpReport {
    /// Distinct deliveries (GUIDs) seen in the log inside the window.
    pub seen: usize,
    /// GUIDs asked to be redelivered.
    pub redelivered: Vec<String>,
    /// Missing deliveries GitHub was already asked for inside the window (by this run's
    /// predecessors or another process), not asked again.
    pub already_asked: usize,
}

/// Walks the hook's delivery log (newest first, cursor pagination) back to the window's
/// start and redelivers what never arrived.
pub async fn catch_up(
    client: &GitHubClient,
    queue: &dyn Queue,
    repo: &str,
    hook_id: u64,
    now_ms: i64,
) -> Result<CatchUpReport, ApiError> {
    let mut next = Some(format!("/repos/{repo}/hooks/{hook_id}/deliveries?per_page=100"));
    // guid -> (any attempt got a 2xx, latest attempt's id)
    let mut by_guid: BTreeMap<String, (bool, u64)> = BTreeMap::new();
    'pages: while let Some(page) = next.take() {
        let (items, link) = client.get_page(&page).await?;
        for item in items {
            let delivered = item["delivered_at"].as_str().and_then(crate::time::parse_ms).unwrap_or(now_ms);
            if now_ms - delivered > REDELIVERY_WINDOW_MS {
                break 'pages;
            }
            let (Some(guid), Some(id)) = (item["guid"].as_str(), item["id"].as_u64()) else { continue };
            if item["event"].as_str() == Some("ping") {
                continue;
            }
            let ok = (200..300).contains(&item["status_code"].as_u64().unwrap_or(0));
            let entry = by_guid.entry(guid.to_owned()).or_insert((false, id));
            entry.0 |= ok;
            entry.1 = entry.1.max(id);
        }
        next = link;
    }
    let mut report = CatchUpReport { seen: by_guid.len(), ..Default::default() };
    let local = |e: crate::storage::StoreError| ApiError::Transport {
        method: "GET".into(),
        path: "local queue".into(),
        reason: e.to_string(),
    };
    for (guid, (ok, latest)) in by_guid {
        if ok || queue.get(&guid).await.map_err(local)?.is_some() {
            continue;
        }
        if !queue.reserve_redelivery(&guid, hook_id, now_ms, now_ms - REDELIVERY_WINDOW_MS).await.map_err(local)? {
            report.already_asked += 1;
            continue;
        }
        let asked =
            client.post(&format!("/repos/{repo}/hooks/{hook_id}/deliveries/{latest}/attempts"), Value::Null).await;
        if let Err(e) = asked {
            // Not asked after all: a later run may try again.
            if let Err(store) = queue.release_redelivery(&guid).await {
                tracing::warn!(delivery_id = %guid, error = %store, "Could not take back a redelivery record");
            }
            return Err(e);
        }
        tracing::info!(repository = repo, hook_id, delivery_id = %guid, "Asked GitHub to redeliver a missed delivery");
        report.redelivered.push(guid);
    }
    Ok(report)
}
