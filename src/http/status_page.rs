//! `GET /status` on the admin listener: a small status page (repositories, mode, last
//! delivery, recent deliveries), refreshed every few seconds, for a browser without
//! JavaScript (the dashboard at `/` needs it). Everything shown is escaped; no secret or
//! payload is ever on it.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::storage::queue::DeliveryFilter;
use crate::time::{rfc3339, rfc3339_opt};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    let repos = state.registry.list().await;
    let recent = state.queue.list(DeliveryFilter { limit: 25, ..Default::default() }).await;
    let stats = state.queue.stats().await;
    let (Ok(repos), Ok(recent)) = (repos, recent) else {
        return (StatusCode::SERVICE_UNAVAILABLE, Html("<h1>futurnal</h1><p>The database does not answer.</p>"))
            .into_response();
    };
    // The dashboard's stylesheet: the CSP allows no inline style.
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>futurnal</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body class=\"plain\"><main>",
    );
    let _ = write!(
        page,
        "<h1>futurnal</h1><p>Role {} · queue depth {} of {} · refreshed every 5 s · <a href=\"/\">the dashboard</a></p>",
        escape(state.role),
        stats.as_ref().map_or(state.queue.approximate_depth(), |s| s.depth),
        state.max_queued
    );
    let instances = state.cluster.instances(60_000).await.unwrap_or_default();
    page.push_str(
        "<h2>Instances</h2><p>Seen in the last minute; the leader runs polling, catch-up, tunnels and pruning.</p>",
    );
    page.push_str("<table><tr><th>Instance</th><th>Role</th><th>Leader</th><th>Started</th><th>Last seen</th></tr>");
    for i in &instances {
        let _ = write!(
            page,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.name),
            if i.name == state.instance { " (this one)" } else { "" },
            escape(&i.role),
            if i.leader { "leader" } else { "-" },
            rfc3339(i.started_at_ms),
            rfc3339(i.seen_at_ms),
        );
    }
    page.push_str("</table>");
    page.push_str("<h2>Repositories</h2><table><tr><th>Repository</th><th>Mode</th><th>Hook</th><th>Last delivery</th><th>Synced</th></tr>");
    for r in &repos {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.full_name),
            escape(r.mode(state.webhook_quiet)),
            r.hook_id.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
            rfc3339_opt(r.last_delivery_at_ms).unwrap_or_else(|| "-".into()),
            rfc3339_opt(r.synced_at_ms).unwrap_or_else(|| "-".into()),
        );
    }
    page.push_str("</table><h2>Recent deliveries</h2><table><tr><th>Delivery</th><th>Event</th><th>Action</th><th>Repository</th><th>Received</th><th>Status</th><th>Attempts</th><th>Worker</th><th>Error</th></tr>");
    for d in &recent {
        let _ = write!(
            page,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(d.status.as_str()),
            escape(&d.delivery_id),
            escape(&d.event),
            escape(d.action.as_deref().unwrap_or("-")),
            escape(d.repository.as_deref().unwrap_or("-")),
            rfc3339(d.received_at_ms),
            escape(d.status.as_str()),
            d.attempts,
            escape(d.worker.as_deref().unwrap_or("-")),
            escape(d.last_error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table></main></body></html>");
    Html(page).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
