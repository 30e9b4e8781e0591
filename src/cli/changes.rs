//! `sources github changes [REPO] [--since SEQ] [--kind K] [--follow]`: the change feed
//! read from the database, as a table or (with `--json`) one JSON object per line.
//!
//! `--follow` reads the database, not the daemon, so a daemon restart does not interrupt
//! it; a database that goes away (PostgreSQL restarting) is waited for, and reading goes
//! on from the last change printed: nothing is skipped or printed twice.

use std::time::Duration;

use anyhow::bail;

use super::args::ChangesArgs;
use super::repos::find_repo;
use crate::config::Config;
use crate::feed::{self, Read};
use crate::storage::backend::Backend;
use crate::storage::changes::{ChangeFilter, ChangeRecord};

/// How often `--follow` looks without a signal: another process (the daemon) writes the
/// SQLite file, and its commits bump no signal in this one.
const POLL: Duration = Duration::from_millis(200);
/// The longest pause between attempts while the database is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn changes(config: &Config, backend: &Backend, args: ChangesArgs) -> anyhow::Result<()> {
    if let Some(kind) = &args.kind {
        feed::check_kind(kind).map_err(anyhow::Error::msg)?;
    }
    if args.since < 0 {
        bail!("--since must be at least 0");
    }
    let repository = match &args.repo {
        Some(repo) => Some(find_repo(backend, repo).await?.id),
        None => None,
    };
    let limit = if args.follow { feed::MAX_LIMIT } else { args.limit.clamp(1, feed::MAX_LIMIT) };
    let mut filter = ChangeFilter { since: args.since, limit, repository, kind: args.kind.clone() };
    let mut out = Printer { json: config.json, header: false };
    if !args.follow {
        let page = read_or_resync(&*backend.copy, &filter).await?;
        if page.changes.is_empty() && !config.json {
            crate::outln!("No changes after seq {}.", filter.since);
            return Ok(());
        }
        out.print(&page.changes);
        if page.changes.len() >= limit as usize && page.next < page.newest {
            eprintln!("More changes follow: --since {} lists the next ones.", page.next);
        }
        return Ok(());
    }
    // Heard from the database on PostgreSQL; looked for every POLL on SQLite.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop_listening = shutdown.clone().drop_guard();
    if let Some(listener) = backend.listener(None, None, true, shutdown.clone()) {
        tokio::spawn(listener);
    }
    let signal = backend.change_signal();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut signalled = signal.subscribe();
        let page = match feed::read(&*backend.copy, &filter).await {
            Ok(Read::Page(page)) => page,
            Ok(other) => bail!("{}", other.resync_message().unwrap_or_default()),
            Err(e) => {
                // Say it once per outage, then wait for the database to come back.
                if backoff == Duration::from_millis(100) {
                    eprintln!(
                        "futurnal: the database cannot be read ({e}); waiting for it (following from seq {})",
                        filter.since
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if backoff > Duration::from_millis(100) {
            eprintln!("futurnal: the database is back; following from seq {}", filter.since);
            backoff = Duration::from_millis(100);
        }
        out.print(&page.changes);
        let full = page.changes.len() >= filter.limit as usize;
        filter.since = page.next;
        if !full {
            tokio::select! {
                _ = signalled.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

async fn read_or_resync(
    copy: &dyn crate::storage::copy::CopyStore,
    filter: &ChangeFilter,
) -> anyhow::Result<feed::Page> {
    match feed::read(copy, filter).await? {
        Read::Page(page) => Ok(page),
        other => bail!("{}", other.resync_message().unwrap_or_default()),
    }
}

struct Printer {
    json: bool,
    header: bool,
}

impl Printer {
    /// Prints changes; a reader that went away (`| head`) ends the command quietly.
    fn print(&mut self, changes: &[ChangeRecord]) {
        if changes.is_empty() {
            return;
        }
        let mut text = String::new();
        if !self.json && !self.header {
            text.push_str(&format!(
                "{:>8}  {:<20}  {:<24}  {:<12}  {:<6}  {:<20}  CAUSE\n",
                "SEQ", "AT", "REPOSITORY", "KIND", "OP", "KEY"
            ));
            self.header = true;
        }
        for c in changes {
            if self.json {
                text.push_str(&feed::change_json(c).to_string());
            } else {
                text.push_str(&format!(
                    "{:>8}  {:<20}  {:<24}  {:<12}  {:<6}  {:<20}  {}",
                    c.seq,
                    crate::time::rfc3339(c.at_ms),
                    c.repository,
                    c.kind,
                    c.op.as_str(),
                    c.key,
                    c.cause
                ));
            }
            text.push('\n');
        }
        crate::output::write_stdout(&text);
    }
}
