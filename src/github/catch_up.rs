//! Catch-up from GitHub's delivery log: every delivery GitHub tried to send to our hook
//! that never got a 2xx, that we do not have, and that is still inside GitHub's
//! redelivery window, is redelivered. Deliveries refused with 503 or 429 (queue full,
//! rate limited) and those sent while the receiver was down come back this way.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::client::{ApiError, GitHubClient};
use crate::queue::Queue;

/// GitHub keeps deliveries for redelivery this long (github.com: 3 days).
pub const REDELIVERY_WINDOW_MS: i64 = 3 * 24 * 3600 * 1000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchUpReport {
    /// Distinct deliveries (GUIDs) seen in the log inside the window.
    pub seen: usize,
    /// GUIDs asked to be redelivered.
    pub redelivered: Vec<String>,
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
            let ok = (200..300).contains(&item["status_code"].as_u64().unwrap_or(0));
            let entry = by_guid.entry(guid.to_owned()).or_insert((false, id));
            entry.0 |= ok;
            entry.1 = entry.1.max(id);
        }
        next = link;
    }
    let mut report = CatchUpReport { seen: by_guid.len(), redelivered: Vec::new() };
    let mut asked: HashSet<String> = HashSet::new();
    for (guid, (ok, latest)) in by_guid {
        if ok || asked.contains(&guid) {
            continue;
        }
        let stored = queue.get(&guid).await.map_err(|e| ApiError::Transport {
            method: "GET".into(),
            path: "local queue".into(),
            reason: e.to_string(),
        })?;
        if stored.is_some() {
            continue;
        }
        client.post(&format!("/repos/{repo}/hooks/{hook_id}/deliveries/{latest}/attempts"), Value::Null).await?;
        tracing::info!(repository = repo, hook_id, delivery_id = %guid, "Asked GitHub to redeliver a missed delivery");
        asked.insert(guid.clone());
        report.redelivered.push(guid);
    }
    Ok(report)
}
