//! `webhook enable`: creates (or updates) the repository's hook on GitHub with a new
//! secret, keeps the secret on this machine, and waits for GitHub's ping to arrive.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futurnal_github::WebhookEventType;
use serde_json::json;

use super::args::{EnableArgs, Tunnel};
use super::hooks::{client, location_kind};
use super::repos::find_repo;
use crate::config::Config;
use crate::github::hooks;
use crate::output::print_json;
use crate::storage::backend::Backend;
use crate::storage::queue::DeliveryFilter;
use crate::storage::registry::HookRef;
use crate::time::now_ms;

/// How long `enable` waits for the ping to show up at a running receiver.
const PING_WAIT: Duration = Duration::from_secs(10);
/// How many pings `enable` asks for through a smee channel that a running receiver may
/// not follow yet.
const SMEE_PING_ASKS: u32 = 3;

pub(super) async fn enable(config: &Config, backend: &Backend, args: EnableArgs) -> anyhow::Result<()> {
    let repo = find_repo(backend, &args.repo).await?;
    let (mut url, tunnel) = match (&args.public_url, args.tunnel) {
        (Some(url), _) => (url.trim().to_owned(), None),
        (None, Some(Tunnel::Ngrok)) => (
            crate::tunnel::ngrok_public_url(&config.tunnel.ngrok_api_url, config.serve.listen.port()).await?,
            Some("ngrok".to_owned()),
        ),
        (None, Some(Tunnel::Smee)) => {
            let channel = args.smee_url.clone().context("--tunnel smee needs --smee-url URL")?;
            (channel, Some("smee".to_owned()))
        }
        (None, None) => bail!("give --public-url URL or --tunnel ngrok|smee"),
    };
    if tunnel.as_deref() != Some("smee")
        && reqwest::Url::parse(&url).is_ok_and(|u| u.path() == "/" || u.path().is_empty())
    {
        url = format!("{}/webhook/github", url.trim_end_matches('/'));
    }
    hooks::check_public_url(&url, config.webhook.allow_loopback_hook_urls)?;
    let events: Vec<String> = if args.events.is_empty() {
        WebhookEventType::HANDLED
            .iter()
            .filter(|e| **e != WebhookEventType::Ping)
            .map(|e| e.as_str().to_owned())
            .collect()
    } else {
        for event in &args.events {
            if !WebhookEventType::parse(event).is_handled() {
                bail!("'{event}' is not an event futurnal handles");
            }
        }
        args.events.clone()
    };
    if config.webhook.secret_store == crate::config::SecretStore::Keychain {
        // Checked before GitHub gets a secret that could then not be kept.
        crate::secrets::required_keychain()?;
    }
    let github = client(config)?;
    let vault = crate::vault::Vault::new(config, backend)?;
    let secret = crate::secrets::generate_secret();
    let started = now_ms();
    // A secret is usable by the receiver before GitHub can sign with it: GitHub pings a
    // new hook the moment it exists (and signs with the new secret the moment an update
    // lands), before this command knows the hook's id, so the secret is first stored as
    // pending, which a running receiver accepts for any hook until it is filed under the id.
    let pending = vault.store_pending(&secret).await?;
    let made = hooks::create_or_update(&github, &repo.full_name, &url, &secret, &events).await;
    let (hook, created) = match made {
        Ok(made) => made,
        Err(e) => {
            if let Err(cleanup) = vault.remove_pending(pending).await {
                tracing::warn!(error = %format!("{cleanup:#}"), "Could not remove the pending secret");
            }
            return Err(e.into());
        }
    };
    // The old secret (when re-enabling) stays accepted next to the new one until the next
    // enable: deliveries GitHub signed before the update are not refused.
    let previous = match repo.hook_id.filter(|id| *id == hook.id) {
        Some(id) => vault.current_hook_secret(id).await,
        None => None,
    };
    let mut kept = vec![secret.as_str()];
    if let Some(previous) = previous.as_deref() {
        kept.push(previous);
    }
    let (location, no_keychain) = vault.store_hook(hook.id, &kept).await?;
    vault.remove_pending(pending).await.context("failed to remove the pending secret")?;
    backend.registry.set_hook(repo.id, Some(HookRef { id: hook.id, url: url.clone(), tunnel: tunnel.clone() })).await?;

    // A smee channel keeps nothing for a listener that is not there yet, and a running
    // `serve` subscribes to a new channel at its next tunnel check: ask again while the
    // ping has not come through. Elsewhere one ping says it all.
    let asks = if tunnel.as_deref() == Some("smee") { SMEE_PING_ASKS } else { 1 };
    let mut ping_seen = false;
    for ask in 1..=asks {
        hooks::ping(&github, &repo.full_name, hook.id).await?;
        let wait = if ask == asks { PING_WAIT } else { config.tunnel.check + Duration::from_secs(1) };
        ping_seen = wait_for_ping(backend, hook.id, started, wait).await?;
        if ping_seen {
            break;
        }
    }
    if config.json {
        print_json(&json!({
            "repository": repo.full_name,
            "hook_id": hook.id,
            "url": url,
            "created": created,
            "events": events,
            "secret_store": location_kind(&location),
            "secret_location": location.to_string(),
            "ping_received": ping_seen,
        }));
    } else {
        crate::outln!(
            "{} hook {} for {} at {url}\n{}Secret stored in {location} (never printed)\n{}",
            if created { "Created" } else { "Updated" },
            hook.id,
            repo.full_name,
            no_keychain.map(|why| format!("No OS keychain here ({why}), so: ")).unwrap_or_default(),
            if ping_seen {
                "Ping received: deliveries reach this receiver.".to_owned()
            } else {
                format!(
                    "Ping sent, but not seen here within {} s: is `futurnal serve` running and reachable at {url}?",
                    PING_WAIT.as_secs()
                )
            }
        );
    }
    Ok(())
}

async fn wait_for_ping(backend: &Backend, hook_id: u64, since_ms: i64, wait: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let recent = backend.queue.list(DeliveryFilter { limit: 200, ..Default::default() }).await?;
        if recent.iter().any(|d| d.event == "ping" && d.hook_id == Some(hook_id) && d.received_at_ms >= since_ms) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}
