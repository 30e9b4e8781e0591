//! `webhook simulate`: sends one correctly signed delivery (a built-in example or a
//! file) to a running receiver and prints its answer.

use anyhow::bail;
use futurnal_github::{WebhookEventType, WebhookSecret};
use serde_json::Value;

use super::args::SimulateArgs;
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName};
use crate::output::print_json;

pub(super) async fn simulate(config: &Config, args: SimulateArgs) -> anyhow::Result<()> {
    let kind = WebhookEventType::parse(&args.event);
    let mut payload = match &args.payload {
        Some(path) => crate::simulate::read_payload(path)?,
        None => {
            let Some(text) = crate::simulate::example(&kind) else {
                bail!(
                    "no built-in example for event '{}'; known: push, pull_request, issues, issue_comment, release, \
                     create, delete, repository, ping (or pass --payload FILE)",
                    args.event
                );
            };
            serde_json::from_str(text).expect("built-in examples are valid JSON")
        }
    };
    if let Some(repo) = &args.repo {
        crate::simulate::retarget(&mut payload, &RepoName::parse(repo)?)?;
    }
    let secret = match &args.secret_env {
        Some(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => WebhookSecret::new(value),
            _ => bail!("environment variable {var} is not set or empty"),
        },
        None => match crate::secrets::global_secret(config, false)? {
            (Some(secret), _) => secret,
            (None, _) => bail!(
                "no webhook secret found: set FUTURNAL_WEBHOOK_SECRET, webhook.secret in the config, or start \
                 `futurnal serve` once to generate {}",
                config.data_dir.join(crate::secrets::SECRET_FILE).display()
            ),
        },
    };
    let url = args.url.clone().unwrap_or_else(|| format!("http://{}/webhook/github", config.serve.listen));
    let delivery = crate::simulate::SimulatedDelivery {
        url,
        event: args.event.clone(),
        delivery_id: DeliveryId::random(),
        hook_id: args.hook_id,
        body: serde_json::to_vec(&payload).expect("JSON values serialize"),
    };
    let response = crate::simulate::send(&delivery, &secret).await?;
    let answer: Value = serde_json::from_str(&response.body).unwrap_or(Value::String(response.body.clone()));
    if config.json {
        print_json(&serde_json::json!({
            "delivery_id": delivery.delivery_id.as_str(),
            "event": delivery.event,
            "url": delivery.url,
            "http_status": response.status,
            "response": answer,
        }));
    } else {
        crate::outln!(
            "Sent {} delivery {} to {}: HTTP {} {}",
            delivery.event,
            delivery.delivery_id,
            delivery.url,
            response.status,
            serde_json::to_string(&answer).unwrap_or_default()
        );
    }
    if !(200..300).contains(&response.status) {
        bail!("the receiver answered HTTP {}", response.status);
    }
    Ok(())
}
