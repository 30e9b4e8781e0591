//! `webhook enable`, `disable` and `status`: the hook's life on GitHub, its secret on
//! this machine, and the repository's mode.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futurnal_github::WebhookEventType;
use serde_json::{json, Value};

use crate::app::find_repo;
use crate::cli::EnableArgs;
use crate::config::Config;
use crate::github::client::{GitHubClient, Token};
use crate::github::hooks;
use crate::output::{print_json, print_table};
use crate::storage::backend::Backend;
use crate::storage::queue::DeliveryFilter;
use crate::storage::registry::HookRef;
use crate::time::{now_ms, rfc3339_opt};

fn client(config: &Config) -> anyhow::Result<GitHubClient> {
    let Some(token) = Token::from_env() else {
        bail!("{}", crate::github::client::ApiError::NoToken);
    };
    GitHubClient::new(&config.github_api_url, Some(token))
}

/// How long `enable` waits for the ping to show up at a running receiver.
const PING_WAIT: Duration = Duration::from_secs(10);
/// How many pings `enable` asks for through a smee channel that a running receiver may
/// not follow yet.
const SMEE_PING_ASKS: u32 = 3;

pub async fn enable(config: &Config, backend: &Backend, args: EnableArgs) -> anyhow::Result<()> {
    let repo = find_repo(backend, &args.repo).await?;
    let (mut url, tunnel) = match (&args.public_url, args.tunnel) {
        (Some(url), _) => (url.trim().to_owned(), None),
        (None, Some(crate::cli::Tunnel::Ngrok)) => (
            crate::tunnel::ngrok_public_url(&config.tunnel.ngrok_api_url, config.serve.listen.port()).await?,
            Some("ngrok".to_owned()),
        ),
        (None, Some(crate::cli::Tunnel::Smee)) => {
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
    let secret = crate::secrets::generate_secret();
    let started = now_ms();
    // A secret is usable by the receiver before GitHub can sign with it: GitHub pings a
    // new hook the moment it exists (and signs with the new secret the moment an update
    // lands), before this command knows the hook's id, so the secret is first stored as
    // pending, which a running receiver accepts for any hook until it is filed under the id.
    let pending = crate::secrets::store_pending_secret(config, &secret)?;
    let made = hooks::create_or_update(&github, &repo.full_name, &url, &secret, &events).await;
    let (hook, created) = match made {
        Ok(made) => made,
        Err(e) => {
            if let Err(cleanup) = pending.remove() {
                tracing::warn!(error = %format!("{cleanup:#}"), "Could not remove the pending secret");
            }
            return Err(e.into());
        }
    };
    // The old secret (when re-enabling) stays accepted next to the new one until the next
    // enable: deliveries GitHub signed before the update are not refused.
    let previous = repo
        .hook_id
        .filter(|id| *id == hook.id)
        .and_then(|id| crate::secrets::current_hook_secret(&config.data_dir, id));
    let mut kept = vec![secret.as_str()];
    if let Some(previous) = previous.as_deref() {
        kept.push(previous);
    }
    let (location, no_keychain) = crate::secrets::store_hook_secrets(config, hook.id, &kept)?;
    pending.remove().context("failed to remove the pending secret")?;
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
        println!(
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

fn location_kind(location: &crate::secrets::HookSecretLocation) -> &'static str {
    match location {
        crate::secrets::HookSecretLocation::Keychain { .. } => "keychain",
        crate::secrets::HookSecretLocation::File(_) => "file",
    }
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

pub async fn disable(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let repo = find_repo(backend, repo).await?;
    let Some(hook_id) = repo.hook_id else {
        bail!("{} has no webhook enabled by futurnal", repo.full_name);
    };
    let github = client(config)?;
    hooks::delete(&github, &repo.full_name, hook_id).await?;
    crate::secrets::remove_hook_secrets(&config.data_dir, hook_id).context("failed to remove the hook's secret")?;
    backend.registry.set_hook(repo.id, None).await?;
    if config.json {
        print_json(&json!({ "repository": repo.full_name, "hook_id": hook_id, "mode": "polling" }));
    } else {
        println!("Deleted hook {hook_id} of {}; the repository is back to polling", repo.full_name);
    }
    Ok(())
}

pub async fn status(config: &Config, backend: &Backend, repo: Option<&str>) -> anyhow::Result<()> {
    let repos = match repo {
        Some(repo) => vec![find_repo(backend, repo).await?],
        None => backend.registry.list().await?,
    };
    // GitHub's own view of the hook when a token is at hand; the local view otherwise.
    let github = Token::from_env().and_then(|t| GitHubClient::new(&config.github_api_url, Some(t)).ok());
    let mut rows = Vec::new();
    for repo in repos {
        let backlog = backend.queue.repository_backlog(repo.github_id, &repo.full_name).await?;
        let remote = match (&github, repo.hook_id) {
            (Some(github), Some(id)) => match hooks::get(github, &repo.full_name, id).await {
                Ok(hook) => Some(hook),
                Err(e) => {
                    tracing::warn!(repository = %repo.full_name, error = %e, "Could not read the hook from GitHub");
                    None
                }
            },
            _ => None,
        };
        let active = match &remote {
            Some(Some(hook)) => Some(hook.active),
            Some(None) => Some(false),
            None => None,
        };
        let mode = if active == Some(false) { "polling" } else { repo.mode(config.poll.quiet) };
        rows.push(json!({
            "repository": repo.full_name,
            "mode": mode,
            "hook_id": repo.hook_id,
            "url": repo.hook_url,
            "active": active,
            "last_ping_at": rfc3339_opt(repo.last_ping_at_ms),
            "last_delivery_at": rfc3339_opt(repo.last_delivery_at_ms),
            "last_response": remote.flatten().map(|h| h.last_response).unwrap_or(Value::Null),
            "failures": backlog.failures,
            "queue_depth": backlog.queue_depth,
        }));
    }
    if config.json {
        print_json(&Value::Array(rows));
    } else {
        let cell = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                [
                    "repository",
                    "mode",
                    "hook_id",
                    "active",
                    "last_ping_at",
                    "last_delivery_at",
                    "failures",
                    "queue_depth",
                ]
                .iter()
                .map(|k| cell(&r[*k]))
                .collect()
            })
            .collect();
        print_table(
            &["REPOSITORY", "MODE", "HOOK", "ACTIVE", "LAST PING", "LAST DELIVERY", "FAILURES", "QUEUE"],
            &table,
        );
    }
    Ok(())
}

pub async fn catch_up(config: &Config, backend: &Backend, repo: Option<&str>) -> anyhow::Result<()> {
    let repos = match repo {
        Some(repo) => vec![find_repo(backend, repo).await?],
        None => backend.registry.list().await?,
    };
    let github = client(config)?;
    let mut rows = Vec::new();
    for repo in repos.into_iter().filter(|r| r.hook_id.is_some()) {
        let hook_id = repo.hook_id.expect("filtered");
        let report =
            crate::github::catch_up::catch_up(&github, backend.queue.as_ref(), &repo.full_name, hook_id, now_ms())
                .await?;
        rows.push(json!({
            "repository": repo.full_name,
            "hook_id": hook_id,
            "seen": report.seen,
            "redelivered": report.redelivered,
            "already_asked": report.already_asked,
        }));
    }
    if config.json {
        print_json(&Value::Array(rows));
    } else if rows.is_empty() {
        println!("No repository has a webhook enabled by futurnal; nothing to catch up.");
    } else {
        for row in rows {
            println!(
                "{}: {} deliveries in GitHub's log, {} asked to be redelivered, {} already asked for earlier",
                row["repository"].as_str().unwrap_or_default(),
                row["seen"],
                row["redelivered"].as_array().map_or(0, Vec::len),
                row["already_asked"]
            );
        }
    }
    Ok(())
}

pub async fn rotate_secret(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let repo = find_repo(backend, repo).await?;
    let (Some(hook_id), Some(url)) = (repo.hook_id, repo.hook_url.clone()) else {
        bail!("{} has no webhook enabled by futurnal", repo.full_name);
    };
    let current = crate::secrets::hook_secrets(&config.data_dir, hook_id)?
        .and_then(|s| s.into_iter().next())
        .with_context(|| format!("hook {hook_id} has no stored secret; run `webhook enable` again"))?;
    let github = client(config)?;
    let new = crate::secrets::generate_secret();
    // Both accepted first (a running receiver sees the change at the first delivery
    // signed with the new one), then GitHub switches.
    let (location, _) = crate::secrets::store_hook_secrets(config, hook_id, &[new.as_str(), current.as_str()])?;
    if let Err(e) = hooks::set_secret(&github, &repo.full_name, hook_id, &url, &new).await {
        // GitHub still has the old one: keep accepting only what it signs with.
        crate::secrets::store_hook_secrets(config, hook_id, &[current.as_str()])?;
        return Err(e.into());
    }
    if config.json {
        print_json(&json!({
            "repository": repo.full_name,
            "hook_id": hook_id,
            "secret_store": location_kind(&location),
            "secret_location": location.to_string(),
        }));
    } else {
        println!(
            "Rotated the secret of hook {hook_id} ({}); the old one stays accepted until a delivery signed with the new \
             one arrives (at most 24 h). Stored in {location}",
            repo.full_name,
        );
    }
    Ok(())
}
