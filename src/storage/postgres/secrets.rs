//! Per-hook secrets shared through PostgreSQL, as sealed bytes: this module stores and
//! reads them and never sees them in the clear (sealing is `crate::vault`'s, with a key
//! the database never holds). Every change bumps one generation counter and notifies the
//! instances' listeners in the same transaction.

use std::sync::Arc;

use super::{PgDb, NOW_MS};
use crate::storage::StoreResult;

/// One stored slot: a hook's secrets, or those of a `webhook enable` in progress
/// (`hook_id` none).
#[derive(Clone)]
pub struct SealedRow {
    pub slot: String,
    pub hook_id: Option<u64>,
    pub sealed: Vec<u8>,
    /// Grows with every write of the slot: a conditional rewrite names the one it read.
    pub version: i64,
    /// How long ago it was last written, by the database's clock.
    pub age_ms: i64,
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow").field("slot", &self.slot).field("version", &self.version).finish_non_exhaustive()
    }
}

pub struct PgSecrets {
    db: Arc<PgDb>,
}

impl PgSecrets {
    pub fn new(db: Arc<PgDb>) -> Self {
        Self { db }
    }

    /// The channel a change is announced on (the listener reloads).
    pub fn channel(&self) -> &str {
        &self.db.secrets_channel
    }

    /// The generation now: it changes with every store, rewrite and removal.
    pub async fn generation(&self) -> StoreResult<u64> {
        let client = self.db.client().await?;
        let row = client.query_one("SELECT generation FROM secrets_generation", &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Every slot, and the generation they are of, read in one snapshot.
    pub async fn rows(&self) -> StoreResult<(u64, Vec<SealedRow>)> {
        let mut client = self.db.client().await?;
        let tx =
            client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let generation = tx.query_one("SELECT generation FROM secrets_generation", &[]).await?.get::<_, i64>(0) as u64;
        let rows = tx
            .query(&format!("SELECT slot, hook_id, sealed, version, {NOW_MS} - updated_at FROM hook_secrets"), &[])
            .await?;
        tx.commit().await?;
        Ok((generation, rows.iter().map(sealed_row).collect()))
    }

    /// One slot, when stored.
    pub async fn row(&self, slot: &str) -> StoreResult<Option<SealedRow>> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT slot, hook_id, sealed, version, {NOW_MS} - updated_at FROM hook_secrets WHERE slot = $1"
                ),
                &[&slot],
            )
            .await?;
        Ok(row.map(|r| sealed_row(&r)))
    }

    /// Stores (or replaces) a slot.
    pub async fn put(&self, slot: &str, hook_id: Option<u64>, sealed: &[u8]) -> StoreResult<()> {
        let hook_id = hook_id.map(|id| id as i64);
        let sql = format!(
            "INSERT INTO hook_secrets (slot, hook_id, sealed, version, updated_at) VALUES ($1, $2, $3, 1, {NOW_MS}) \
             ON CONFLICT (slot) DO UPDATE SET sealed = excluded.sealed, \
               version = hook_secrets.version + 1, updated_at = excluded.updated_at"
        );
        self.change(&sql, &[&slot, &hook_id, &sealed]).await.map(|_| ())
    }

    /// Rewrites a slot only if it is still at `version` (what the caller read); says
    /// whether it did.
    pub async fn replace(&self, slot: &str, version: i64, sealed: &[u8]) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE hook_secrets SET sealed = $3, version = version + 1, updated_at = {NOW_MS} \
             WHERE slot = $1 AND version = $2"
        );
        self.change(&sql, &[&slot, &version, &sealed]).await.map(|n| n > 0)
    }

    /// Deletes a slot; says whether it was there.
    pub async fn delete(&self, slot: &str) -> StoreResult<bool> {
        self.change("DELETE FROM hook_secrets WHERE slot = $1", &[&slot]).await.map(|n| n > 0)
    }

    /// Deletes what `webhook enable` runs that died left pending for longer than `ttl_ms`.
    pub async fn delete_pending_older_than(&self, ttl_ms: i64) -> StoreResult<u64> {
        let sql = format!("DELETE FROM hook_secrets WHERE hook_id IS NULL AND updated_at < {NOW_MS} - $1");
        self.change(&sql, &[&ttl_ms]).await
    }

    /// Runs one change, and when it touched a row, bumps the generation and notifies the
    /// listeners, all in one transaction (the notification goes out at commit).
    async fn change(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> StoreResult<u64> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let touched = tx.execute(sql, params).await?;
        if touched > 0 {
            tx.execute("UPDATE secrets_generation SET generation = generation + 1", &[]).await?;
            tx.execute("SELECT pg_notify($1, '')", &[&self.db.secrets_channel]).await?;
        }
        tx.commit().await?;
        Ok(touched)
    }
}

fn sealed_row(r: &tokio_postgres::Row) -> SealedRow {
    SealedRow {
        slot: r.get(0),
        hook_id: r.get::<_, Option<i64>>(1).map(|id| id as u64),
        sealed: r.get(2),
        version: r.get(3),
        age_ms: r.get(4),
    }
}
