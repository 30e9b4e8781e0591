//! `[webhook] allow_sources`: only GitHub's published hook ranges (`GET /meta`, its
//! `hooks`), or a list of CIDRs, may deliver; the rest get 403 before their body is read.
//! GitHub's ranges are fetched at start and daily, and kept in the data dir so that a
//! restart without network still knows them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

use crate::config::{AllowSources, Config};
use crate::github::client::GitHubClient;

/// The file GitHub's ranges are kept in.
pub const CACHE_FILE: &str = "github-meta-hooks.json";
/// How often GitHub's ranges are fetched again.
pub const REFRESH: Duration = Duration::from_secs(24 * 3600);

pub struct Sources {
    policy: Option<AllowSources>,
    /// The ranges in force (GitHub's as last fetched, or the configured ones).
    ranges: RwLock<Vec<IpNet>>,
    cache: PathBuf,
    api_url: String,
}

impl Sources {
    pub fn new(config: &Config) -> Self {
        let ranges = match &config.webhook.allow_sources {
            Some(AllowSources::Ranges(ranges)) => ranges.clone(),
            _ => Vec::new(),
        };
        Self {
            policy: config.webhook.allow_sources.clone(),
            ranges: RwLock::new(ranges),
            cache: config.data_dir.join(CACHE_FILE),
            api_url: config.github_api_url.clone(),
        }
    }

    /// Whether `ip` may deliver.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.policy.is_none() || self.ranges.read().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n.contains(&ip))
    }

    pub fn follows_github(&self) -> bool {
        self.policy == Some(AllowSources::GitHub)
    }

    /// At start, with `allow_sources = "github"`: GitHub's ranges, fetched, else the ones
    /// kept from the last fetch; an error when neither is at hand (the receiver would
    /// refuse everyone).
    pub async fn load_github(&self) -> anyhow::Result<()> {
        if !self.follows_github() {
            return Ok(());
        }
        match self.fetch().await {
            Ok(count) => {
                tracing::info!(ranges = count, "Only GitHub's hook addresses may deliver (GET /meta)");
                Ok(())
            }
            Err(e) => {
                let kept = std::fs::read_to_string(&self.cache).ok().and_then(|text| parse_hooks(&text).ok());
                let Some(ranges) = kept.filter(|r| !r.is_empty()) else {
                    return Err(e.context(format!(
                        "webhook.allow_sources = \"github\", but GitHub's hook addresses could not be fetched and none \
                         were kept in {}",
                        self.cache.display()
                    )));
                };
                tracing::warn!(error = %format!("{e:#}"), ranges = ranges.len(), "Using GitHub's hook addresses kept from the last fetch");
                *self.ranges.write().unwrap_or_else(|p| p.into_inner()) = ranges;
                Ok(())
            }
        }
    }

    /// Fetches GitHub's ranges, puts them in force and keeps them; how many.
    pub async fn fetch(&self) -> anyhow::Result<usize> {
        let client = GitHubClient::anonymous(&self.api_url)?;
        let meta = client.get("/meta").await.context("GET /meta")?;
        let ranges = parse_hooks(&meta.to_string())?;
        anyhow::ensure!(!ranges.is_empty(), "GET /meta lists no hook addresses");
        let text = serde_json::json!({ "hooks": ranges.iter().map(ToString::to_string).collect::<Vec<_>>() });
        if let Err(e) = write_private(&self.cache, text.to_string().as_bytes()) {
            tracing::warn!(error = %e, "Could not keep GitHub's hook addresses for the next start");
        }
        let count = ranges.len();
        *self.ranges.write().unwrap_or_else(|p| p.into_inner()) = ranges;
        Ok(count)
    }
}

/// Writes a 0600 file aside, then renames it into place.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let staging = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
}

/// The `hooks` ranges of a `/meta` document.
fn parse_hooks(text: &str) -> anyhow::Result<Vec<IpNet>> {
    let meta: serde_json::Value = serde_json::from_str(text).context("GET /meta is not JSON")?;
    let hooks = meta["hooks"].as_array().context("GET /meta has no \"hooks\" list")?;
    hooks.iter().map(|h| crate::config::parse_net(h.as_str().unwrap_or_default(), "GET /meta hooks")).collect()
}

/// Fetches GitHub's ranges again daily (while `allow_sources = "github"`).
pub async fn refresh_daily(sources: std::sync::Arc<Sources>, shutdown: tokio_util::sync::CancellationToken) {
    if !sources.follows_github() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
        if let Err(e) = sources.fetch().await {
            tracing::warn!(error = %format!("{e:#}"), "Could not fetch GitHub's hook addresses again; keeping the last ones");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_hooks_are_parsed_and_bad_ranges_refused() {
        let ranges = parse_hooks(r#"{"hooks":["192.30.252.0/22","2a0a:a440::/29"],"web":["1.2.3.4/32"]}"#).unwrap();
        assert_eq!(ranges.len(), 2);
        assert!(parse_hooks(r#"{"hooks":["nonsense"]}"#).is_err());
        assert!(parse_hooks(r#"{"web":[]}"#).is_err());
    }
}
