//! `webhook deliveries` (the stored deliveries, a page at a time) and `webhook replay`
//! (queue a stored delivery again).

use anyhow::bail;
use serde_json::Value;

use super::args::DeliveriesArgs;
use crate::config::Config;
use crate::output::{self, print_json, print_table};
use crate::storage::backend::Backend;
use crate::storage::queue::DeliveryFilter;
use crate::storage::registry::RepoRef;

pub(super) async fn deliveries(config: &Config, backend: &Backend, args: DeliveriesArgs) -> anyhow::Result<()> {
    let status = args.status.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    if let Some(before) = &args.before {
        if backend.queue.get(before).await?.is_none() {
            bail!("no stored delivery with id '{before}' (--before takes a delivery id that `deliveries` listed)");
        }
    }
    // One more than asked for says whether another page exists.
    let mut filter = DeliveryFilter {
        status,
        before: args.before.clone(),
        limit: args.limit.saturating_add(1),
        ..Default::default()
    };
    if let Some(repo) = &args.repo {
        match RepoRef::parse(repo)? {
            RepoRef::Name(name) => filter.repository_name = Some(name),
            RepoRef::Id(id) => {
                let Some(found) = backend.registry.find(RepoRef::Id(id)).await? else {
                    bail!("no tracked repository with id {id}");
                };
                filter.repository_name = Some(found.full_name);
                filter.repository_github_id = found.github_id;
            }
        }
    }
    let mut records = backend.queue.list(filter).await?;
    let more = records.len() > args.limit as usize;
    records.truncate(args.limit as usize);
    if more {
        // On stderr, so that `--json` stays one JSON document.
        let last = records.last().map_or("", |r| r.delivery_id.as_str());
        eprintln!("More deliveries exist: add --before {last} for the next {} (or raise --limit)", args.limit);
    }
    if config.json {
        print_json(&Value::Array(records.iter().map(output::delivery_json).collect()));
    } else if records.is_empty() {
        crate::outln!("No deliveries.");
    } else {
        print_table(&output::DELIVERY_HEADERS, &records.iter().map(output::delivery_row).collect::<Vec<_>>());
    }
    Ok(())
}

pub(super) async fn replay(config: &Config, backend: &Backend, delivery_id: &str) -> anyhow::Result<()> {
    let record = backend.queue.replay(delivery_id).await?;
    if config.json {
        print_json(&output::delivery_json(&record));
    } else {
        crate::outln!(
            "Queued delivery {} ({} {}) again; a running `futurnal serve` picks it up within a second",
            record.delivery_id,
            record.event,
            record.repository.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
