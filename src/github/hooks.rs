//! Repository webhooks on GitHub: find by URL (GitHub masks secrets, so the URL is the
//! identity), create or update (never a duplicate), ping, rotate the secret, delete.

use serde_json::{json, Value};

use super::client::{ApiError, GitHubClient};

/// A hook as GitHub describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    /// GitHub's record of the last delivery attempt: `{code, status, message}`.
    pub last_response: Value,
}

impl Hook {
    fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            id: value["id"].as_u64()?,
            url: value["config"]["url"].as_str().unwrap_or_default().to_owned(),
            active: value["active"].as_bool().unwrap_or(false),
            events: value["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
            last_response: value["last_response"].clone(),
        })
    }
}

fn repo_path(repo: &str) -> String {
    format!("/repos/{repo}/hooks")
}

/// Refuses URLs GitHub cannot deliver to, with what to do instead.
pub fn check_public_url(url: &str, allow_loopback: bool) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("'{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("the hook URL must be http(s), not {}", parsed.scheme());
    }
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if loopback && !allow_loopback {
        anyhow::bail!(
            "GitHub cannot deliver to {host}: it is not reachable from the internet (GitHub refuses such hooks). \
             Use a public URL that forwards to the webhook listener, or --tunnel ngrok|smee for development"
        );
    }
    Ok(())
}

pub async fn list(client: &GitHubClient, repo: &str) -> Result<Vec<Hook>, ApiError> {
    Ok(client.get_all(&repo_path(repo)).await?.iter().filter_map(Hook::from_json).collect())
}

/// Creates the hook, or updates the one whose URL is already `url`. Returns the hook and
/// whether it was created.
pub async fn create_or_update(
    client: &GitHubClient,
    repo: &str,
    url: &str,
    secret: &str,
    events: &[String],
) -> Result<(Hook, bool), ApiError> {
    let config = json!({ "url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0" });
    let existing = list(client, repo).await?.into_iter().find(|h| h.url == url);
    let (value, created) = match existing {
        Some(hook) => (
            client
                .patch(
                    &format!("{}/{}", repo_path(repo), hook.id),
                    json!({ "active": true, "events": events, "config": config }),
                )
                .await?,
            false,
        ),
        None => (
            client
                .post(&repo_path(repo), json!({ "name": "web", "active": true, "events": events, "config": config }))
                .await?,
            true,
        ),
    };
    let hook = Hook::from_json(&value).ok_or_else(|| ApiError::Transport {
        method: "POST".into(),
        path: repo_path(repo),
        reason: "GitHub's answer has no hook id".into(),
    })?;
    Ok((hook, created))
}

pub async fn ping(client: &GitHubClient, repo: &str, hook_id: u64) -> Result<(), ApiError> {
    client.post(&format!("{}/{hook_id}/pings", repo_path(repo)), json!({})).await.map(drop)
}

pub async fn set_secret(
    client: &GitHubClient,
    repo: &str,
    hook_id: u64,
    url: &str,
    secret: &str,
) -> Result<(), ApiError> {
    let config = json!({ "url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0" });
    client.patch(&format!("{}/{hook_id}/config", repo_path(repo)), config).await.map(drop)
}

pub async fn delete(client: &GitHubClient, repo: &str, hook_id: u64) -> Result<(), ApiError> {
    match client.delete(&format!("{}/{hook_id}", repo_path(repo))).await {
        // Already gone on GitHub: what disable wanted.
        Err(e) if e.status() == Some(404) => Ok(()),
        other => other,
    }
}

pub async fn get(client: &GitHubClient, repo: &str, hook_id: u64) -> Result<Option<Hook>, ApiError> {
    match client.get(&format!("{}/{hook_id}", repo_path(repo))).await {
        Ok(value) => Ok(Hook::from_json(&value)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::check_public_url;

    #[test]
    fn public_urls_only() {
        assert!(check_public_url("https://hooks.example.com/webhook/github", false).is_ok());
        for bad in ["http://localhost:8765/x", "http://127.0.0.1/x", "http://[::1]/x", "ftp://example.com", "nope"] {
            assert!(check_public_url(bad, false).is_err(), "{bad}");
        }
        let message = check_public_url("http://localhost:8765/x", false).unwrap_err().to_string();
        assert!(message.contains("--tunnel"), "{message}");
        assert!(check_public_url("http://127.0.0.1:9/x", true).is_ok());
    }
}
