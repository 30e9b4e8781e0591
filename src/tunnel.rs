//! Development tunnels. ngrok: the agent's local API names the public https URL that
//! forwards to our webhook port; `serve` watches it and updates the hook when it changes
//! (an agent restart gives a new URL on free plans).

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// The public https URL of the ngrok tunnel forwarding to `port`, plus `/webhook/github`.
pub async fn ngrok_public_url(api_url: &str, port: u16) -> anyhow::Result<String> {
    crate::install_tls_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let url = format!("{api_url}/api/tunnels");
    let tunnels: Value = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("no ngrok agent answers at {api_url} (start one with `ngrok http {port}`)"))?
        .json()
        .await
        .context("the ngrok agent's answer is not JSON")?;
    let list = tunnels["tunnels"].as_array().cloned().unwrap_or_default();
    let https: Vec<&Value> =
        list.iter().filter(|t| t["public_url"].as_str().is_some_and(|u| u.starts_with("https://"))).collect();
    let suffix = format!(":{port}");
    let chosen = https
        .iter()
        .copied()
        .find(|t| t["config"]["addr"].as_str().is_some_and(|a| a.ends_with(&suffix)))
        .or(if https.len() == 1 { https.first().copied() } else { None });
    let Some(tunnel) = chosen else {
        bail!("the ngrok agent at {api_url} has no https tunnel forwarding to port {port} (run `ngrok http {port}`)");
    };
    let public = tunnel["public_url"].as_str().expect("filtered on public_url").trim_end_matches('/');
    Ok(format!("{public}/webhook/github"))
}

/// Forwards deliveries from a smee.io channel (Server-Sent Events) to our own receiver,
/// reconnecting until `shutdown`.
///
/// smee parses GitHub's JSON and sends it on re-serialized, so the forwarded body is not
/// always byte-identical to what GitHub signed (key order, whitespace and escapes such as
/// `\u003c` may differ). The receiver still verifies every forwarded delivery: one whose
/// bytes changed fails the signature check, is refused (401) and is logged here as such.
/// smee is for development; a public URL (`--public-url`) keeps every delivery verifiable.
pub async fn smee_forward(
    channel_url: String,
    receiver_url: String,
    hook_id: u64,
    shutdown: tokio_util::sync::CancellationToken,
) {
    crate::install_tls_provider();
    let Ok(client) = reqwest::Client::builder().build() else { return };
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.get(&channel_url).header("accept", "text/event-stream").send() => r,
        };
        match connected {
            Ok(mut response) if response.status().is_success() => {
                tracing::info!(channel = %channel_url, "Listening to the smee channel");
                let mut buffer = String::new();
                loop {
                    let chunk = tokio::select! {
                        () = shutdown.cancelled() => return,
                        c = response.chunk() => c,
                    };
                    let Ok(Some(chunk)) = chunk else { break };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let event: String = buffer.drain(..end + 2).collect();
                        forward_event(&client, &event, &receiver_url, hook_id).await;
                    }
                }
                tracing::warn!(channel = %channel_url, "The smee channel closed; reconnecting");
            }
            Ok(response) => {
                tracing::warn!(channel = %channel_url, status = response.status().as_u16(), "The smee channel refused us")
            }
            Err(e) => tracing::warn!(channel = %channel_url, error = %e.without_url(), "Cannot reach the smee channel"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn forward_event(client: &reqwest::Client, event: &str, receiver_url: &str, hook_id: u64) {
    let mut kind = "message";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if kind != "message" || data.is_empty() {
        return;
    }
    let Ok(message) = serde_json::from_str::<Value>(&data) else {
        tracing::warn!("A smee message is not JSON; skipped");
        return;
    };
    let header = |name: &str| message[name].as_str().map(str::to_owned);
    let (Some(event_name), Some(delivery)) = (header("x-github-event"), header("x-github-delivery")) else {
        tracing::warn!("A smee message lacks the GitHub event or delivery header; skipped");
        return;
    };
    let body = serde_json::to_vec(&message["body"]).unwrap_or_default();
    let mut request = client
        .post(receiver_url)
        .header("content-type", "application/json")
        .header("x-github-event", &event_name)
        .header("x-github-delivery", &delivery)
        .header("x-github-hook-id", header("x-github-hook-id").unwrap_or_else(|| hook_id.to_string()))
        .body(body);
    if let Some(signature) = header("x-hub-signature-256") {
        request = request.header("x-hub-signature-256", signature);
    }
    match request.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => tracing::warn!(
            delivery_id = %delivery,
            "smee re-serialized this delivery's JSON, so its signature no longer matches; the receiver refused it. \
             Use --public-url for deliveries GitHub signs byte for byte"
        ),
        Ok(r) => tracing::debug!(delivery_id = %delivery, status = r.status().as_u16(), "Forwarded a smee delivery"),
        Err(e) => {
            tracing::warn!(delivery_id = %delivery, error = %e.without_url(), "Could not forward a smee delivery")
        }
    }
}
