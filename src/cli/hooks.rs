//! `webhook disable`, `status`, `catch-up` and `rotate-secret`: the hook's life on
//! GitHub, its secret on this machine, and the repository's mode (`enable` is in
//! `enable.rs`).

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::repos::find_repo;
use crate::config::Config;
use crate::github::client::{GitHubClient, Token};
use crate::github::hooks;
use crate::output::{print_json, print_table};
use crate::storage::backend::Backend;
use crate::time::{now_ms, rfc3339_opt};

pub(super) fn client(config: &Config) -> anyhow::Result<GitHubClient> {
    let Some(token) = Token::from_env() else {
        bail!("{}", crate::github::client::ApiError::NoToken);
    };
    GitHubClient::new(&config.github_api_url, Some(token))
}

pub(super) fn location_kind(location: &crate::secrets::HookSecretLocation) -> &'static str {
    match location {
        crate::secrets::HookSecretLocation::Keychain { .. } => "keychain",
        crate::secrets::HookSecretLocation::File(_) => "file",
        crate::secrets::HookSecretLocation::Database => "database",
    }
}

pub(super) async fn disable(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let repo = find_repo(backend, repo).await?;
    let Some(hook_id) = repo.hook_id else {
        bail!("{} has no webhook enabled by futurnal", repo.full_name);
    };
    let github = client(config)?;
    hooks::delete(&github, &repo.full_name, hook_id).await?;
    crate::vault::Vault::new(config, backend)?
        .remove_hook(hook_id)
        .await
        .context("failed to remove the hook's secret")?;
    backend.registry.set_hook(repo.id, None).await?;
    if config.json {
        print_json(&json!({ "repository": repo.full_name, "hook_id": hook_id, "mode": "polling" }));
    } else {
        crate::outln!("Deleted hook {hook_id} of {}; the repository is back to polling", repo.full_name);
    }
    Ok(())
}

pub(super) async fn status(config: &Config, backend: &Backend, repo: Option<&str>) -> anyhow::Result<()> {
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

pub(super) async fn catch_up(config: &Config, backend: &Backend, repo: Option<&str>) -> anyhow::Result<()> {
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
        crate::outln!("No repository has a webhook enabled by futurnal; nothing to catch up.");
    } else {
        for row in rows {
            crate::outln!(
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

pub(super) async fn rotate_secret(config: &Config, backend: &Backend, repo: &str) -> anyhow::Result<()> {
    let repo = find_repo(backend, repo).await?;
    let (Some(hook_id), Some(url)) = (repo.hook_id, repo.hook_url.clone()) else {
        bail!("{} has no webhook enabled by futurnal", repo.full_name);
    };
    let vault = crate::vault::Vault::new(config, backend)?;
    let current = vault
        .hook_secrets(hook_id)
        .await?
        .and_then(|s| s.into_iter().next())
        .with_context(|| format!("hook {hook_id} has no stored secret; run `webhook enable` again"))?;
    let github = client(config)?;
    let new = crate::secrets::generate_secret();
    // Both accepted first (a running receiver sees the change at the first delivery
    // signed with the new one), then GitHub switches.
    let (location, _) = vault.store_hook(hook_id, &[new.as_str(), current.as_str()]).await?;
    if let Err(e) = hooks::set_secret(&github, &repo.full_name, hook_id, &url, &new).await {
        // GitHub still has the old one: keep accepting only what it signs with.
        vault.store_hook(hook_id, &[current.as_str()]).await?;
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
        crate::outln!(
            "Rotated the secret of hook {hook_id} ({}); the old one stays accepted until a delivery signed with the new \
             one arrives (at most 24 h). Stored in {location}",
            repo.full_name,
        );
    }
    Ok(())
}
