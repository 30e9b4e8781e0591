//! `db migrate --to postgres://…`: the embedded SQLite database (the one the global
//! options name) copied into an empty PostgreSQL database, verified, and what to change
//! in the configuration. The copying is `storage::migrate`'s; this file checks the
//! arguments and prints.

use std::path::Path;

use anyhow::bail;
use serde_json::{json, Map, Value};

use super::args::{DbCommand, MigrateArgs, SecretKeyCommand};
use super::progress::MigrateReporter;
use crate::config::{redact_url, Config, DatabaseUrl};
use crate::output::{print_json, print_table};
use crate::storage::migrate::{sqlite_to_postgres, MigrationReport, Target};
use crate::time::rfc3339;

pub(super) async fn db(config: Config, config_file: Option<&Path>, command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Migrate(args) => migrate(&config, config_file, args).await,
        DbCommand::SecretKey { command } => secret_key(&config, command).await,
    }
}

/// `db secret-key`: the key's keychain entry, and what it opens; nothing of it printed.
async fn secret_key(config: &Config, command: SecretKeyCommand) -> anyhow::Result<()> {
    use crate::secret_key::{SecretKey, ENV, KEYCHAIN_ACCOUNT};
    let keychain = || {
        crate::keychain::get().map_err(|why| {
            anyhow::anyhow!("there is no OS keychain here ({why}); set {ENV} in the environment instead")
        })
    };
    let message = match command {
        SecretKeyCommand::Set => {
            let input = super::token::read_secret_input(&format!("{ENV} (64 hex characters)"))?;
            SecretKey::from_hex(&input)?;
            keychain()?.set(KEYCHAIN_ACCOUNT, input.trim())?;
            "stored in the OS keychain".to_owned()
        }
        SecretKeyCommand::Remove => {
            keychain()?.delete(KEYCHAIN_ACCOUNT)?;
            "removed from the OS keychain".to_owned()
        }
        SecretKeyCommand::Status => {
            let backend =
                crate::storage::backend::Backend::open(config, crate::storage::backend::Purpose::Command).await?;
            let status = crate::vault::Vault::new(config, &backend)?.key_status().await?;
            let source = match status.source {
                Some(source) => format!("from {source}"),
                None => format!("none (set {ENV}, or run `futurnal db secret-key set`)"),
            };
            if config.json {
                print_json(&json!({
                    "key": status.source.map(|s| s.to_string()),
                    "sealed_secrets": status.sealed,
                    "opened": status.opened,
                }));
                return Ok(());
            }
            match status.sealed {
                None => format!("{source}; the database is SQLite, where hook secrets stay in this host's data dir"),
                Some(sealed) => format!(
                    "{source}; it opens {} of the {sealed} sealed hook secret(s) in the database",
                    status.opened
                ),
            }
        }
    };
    if config.json {
        print_json(&json!({ "key": message }));
    } else {
        crate::outln!("{ENV}: {message}");
    }
    Ok(())
}

async fn migrate(config: &Config, config_file: Option<&Path>, args: MigrateArgs) -> anyhow::Result<()> {
    let source = match &config.database {
        DatabaseUrl::Sqlite(path) => path.clone(),
        DatabaseUrl::Postgres(url) => bail!(
            "the configured database is already PostgreSQL ({}): db migrate copies the embedded SQLite \
             database; name it with --database-url sqlite:PATH or --data-dir",
            redact_url(url)
        ),
    };
    let url = match DatabaseUrl::parse(&args.to) {
        Ok(DatabaseUrl::Postgres(url)) => url,
        _ => bail!("--to must be a PostgreSQL URL (postgres://USER@HOST/DATABASE)"),
    };
    let schema = config.postgres.schema.as_deref();
    let reporter = MigrateReporter::new();
    let result = sqlite_to_postgres(&source, Target { url: &url, schema }, &|p| reporter.report(p)).await;
    reporter.finish();
    let report = result?;
    let shown_url = redact_url(&url);
    if config.json {
        print_json(&report_json(&report, &source, &shown_url, schema));
        return Ok(());
    }
    let target = match schema {
        Some(schema) => format!("{shown_url} (schema {schema})"),
        None => shown_url.clone(),
    };
    crate::outln!("Copied {} into PostgreSQL at {target}, in one transaction.", source.display());
    crate::outln!();
    let rows: Vec<Vec<String>> =
        report.tables.iter().map(|t| vec![t.table.to_owned(), t.source.to_string(), t.target.to_string()]).collect();
    print_table(&["TABLE", "SQLITE", "POSTGRESQL"], &rows);
    crate::outln!();
    crate::outln!(
        "Verified: read back after the commit, every table has as many rows in PostgreSQL as in the SQLite \
         snapshot taken at {}.",
        rfc3339(report.snapshot_at_ms)
    );
    crate::outln!(
        "{} pending deliveries were copied, in their order per repository; the next repository added gets id {}.",
        report.pending,
        report.next_repository_id
    );
    if report.processing > 0 {
        crate::outln!(
            "{} of them were being processed at the snapshot: the daemon queues them again when it starts.",
            report.processing
        );
    }
    crate::outln!(
        "Deliveries received after the snapshot were not copied: stop the daemon (futurnal serve) before \
         migrating, or, if it was running, migrate again into an empty database once it is stopped."
    );
    crate::outln!();
    let file = match config_file {
        Some(path) => path.display().to_string(),
        None => dirs::config_dir()
            .map(|d| d.join("futurnal").join("config.toml").display().to_string())
            .unwrap_or_else(|| "config.toml".to_owned()),
    };
    crate::outln!("To use PostgreSQL from now on, set in {file}:");
    crate::outln!();
    crate::outln!("    database_url = \"{shown_url}\"");
    if let Some(schema) = schema {
        crate::outln!("    [postgres]");
        crate::outln!("    schema = \"{schema}\"");
    }
    crate::outln!();
    crate::outln!("or in the environment: FUTURNAL_DATABASE_URL={shown_url}");
    if shown_url != url {
        crate::outln!("(with the real password in place of <redacted>)");
    }
    crate::outln!();
    crate::outln!(
        "Keep the data dir ({}): hook secrets stay in the OS keychain or its hook-secrets/, which the \
         receiver needs and the database does not hold. Its git mirrors are a cache: a host without them \
         clones each repository when it first needs it. The SQLite file is left as it was.",
        config.data_dir.display()
    );
    Ok(())
}

fn report_json(report: &MigrationReport, source: &Path, url: &str, schema: Option<&str>) -> Value {
    let tables: Map<String, Value> =
        report.tables.iter().map(|t| (t.table.to_owned(), json!({ "source": t.source, "target": t.target }))).collect();
    json!({
        "source": source.display().to_string(),
        "target": url,
        "schema": schema,
        "snapshot_at": rfc3339(report.snapshot_at_ms),
        "verified": true,
        "tables": tables,
        "pending_deliveries": report.pending,
        "processing_deliveries": report.processing,
        "next_repository_id": report.next_repository_id,
        "database_url": url,
    })
}
