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
