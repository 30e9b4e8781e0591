//! `webhook simulate`: one correctly signed delivery, built from a realistic example per
//! event (GitHub's documented examples, MIT, see examples/LICENSE.octokit-webhooks), sent
//! to a running receiver: the whole path, without GitHub.

use std::time::Duration;

use anyhow::{bail, Context};
use futurnal_github::{sign_sha256, WebhookEventType, WebhookSecret};
use serde_json::Value;

use crate::domain::{DeliveryId, RepoName};

/// The built-in example for `event`, when there is one.
pub fn example(event: &WebhookEventType) -> Option<&'static str> {
    Some(match event {
        WebhookEventType::Push => include_str!("examples/push.json"),
        WebhookEventType::PullRequest => include_str!("examples/pull_request.json"),
        WebhookEventType::Issues => include_str!("examples/issues.json"),
        WebhookEventType::IssueComment => include_str!("examples/issue_comment.json"),
        WebhookEventType::Release => include_str!("examples/release.json"),
        WebhookEventType::Create => include_str!("examples/create.json"),
        WebhookEventType::Delete => include_str!("examples/delete.json"),
        WebhookEventType::Repository => include_str!("examples/repository.json"),
        WebhookEventType::PullRequestReview => include_str!("examples/pull_request_review.json"),
        WebhookEventType::PullRequestReviewComment => include_str!("examples/pull_request_review_comment.json"),
        WebhookEventType::Label => include_str!("examples/label.json"),
        WebhookEventType::Milestone => include_str!("examples/milestone.json"),
        WebhookEventType::Ping => include_str!("examples/ping.json"),
        WebhookEventType::Other(_) => return None,
    })
}

/// Points a payload's `repository` at `name` (so a simulated delivery concerns a
/// repository you track). The numeric id is dropped so the receiver matches by name.
pub fn retarget(payload: &mut Value, name: &RepoName) -> anyhow::Result<()> {
    let repo = payload
        .get_mut("repository")
        .and_then(Value::as_object_mut)
        .context("the payload has no repository object to retarget")?;
    let (owner, short) = name.as_str().split_once('/').expect("RepoName has a slash");
    repo.insert("full_name".into(), Value::from(name.as_str()));
    repo.insert("name".into(), Value::from(short));
    repo.remove("id");
    if let Some(o) = repo.get_mut("owner").and_then(Value::as_object_mut) {
        o.insert("login".into(), Value::from(owner));
    }
    Ok(())
}

pub struct SimulatedDelivery {
    pub url: String,
    pub event: String,
    pub delivery_id: DeliveryId,
    pub hook_id: Option<u64>,
    pub body: Vec<u8>,
}

pub struct SimulateResponse {
    pub status: u16,
    pub body: String,
}

/// Signs and sends one delivery the way GitHub does.
pub async fn send(delivery: &SimulatedDelivery, secret: &WebhookSecret) -> anyhow::Result<SimulateResponse> {
    crate::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("failed to build the HTTP client")?;
    let mut request = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/futurnal-simulate")
        .header("x-github-event", &delivery.event)
        .header("x-github-delivery", delivery.delivery_id.as_str())
        .header("x-hub-signature-256", sign_sha256(secret, &delivery.body))
        .body(delivery.body.clone());
    if let Some(hook) = delivery.hook_id {
        request = request.header("x-github-hook-id", hook.to_string());
    }
    let response = request.send().await.with_context(|| format!("failed to reach the receiver at {}", delivery.url))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(SimulateResponse { status, body })
}

/// Reads a payload file: one JSON document.
pub fn read_payload(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    match serde_json::from_slice(&text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => bail!("{} is not a JSON object", path.display()),
        Err(e) => bail!("{} is not valid JSON: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_event_has_a_parseable_example() {
        for kind in WebhookEventType::HANDLED {
            let text = example(&kind).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            if kind != WebhookEventType::Ping {
                let name = value["repository"]["full_name"].as_str().unwrap();
                assert!(name.contains('/'), "{kind}: {name}");
            }
        }
        assert!(example(&WebhookEventType::Other("x".into())).is_none());
    }

    #[test]
    fn retargets_the_repository() {
        let mut v: Value = serde_json::from_str(example(&WebhookEventType::Push).unwrap()).unwrap();
        retarget(&mut v, &RepoName::parse("acme/widgets").unwrap()).unwrap();
        assert_eq!(v["repository"]["full_name"], "acme/widgets");
        assert_eq!(v["repository"]["owner"]["login"], "acme");
        assert!(v["repository"].get("id").is_none());
    }
}
