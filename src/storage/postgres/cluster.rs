//! Instances and leadership on PostgreSQL: one heartbeat statement per instance per tick
//! records it alive and takes or renews the leadership lease, by the database's clock.

use std::sync::Arc;

use super::{PgDb, NOW_MS};
use crate::storage::cluster::{Cluster, InstanceInfo, InstanceRecord};
use crate::storage::{BoxFuture, StoreResult};

pub struct PgCluster {
    db: Arc<PgDb>,
}

impl PgCluster {
    pub fn new(db: Arc<PgDb>) -> Self {
        Self { db }
    }
}

/// Upserts the instance; then, if it may lead, takes the leadership when it is free (its
/// lease over) or renews it when it is already this instance's: a new holder starts a new
/// term. Returns the term while this instance leads, else NULL.
static HEARTBEAT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH seen AS ( \
           INSERT INTO instances (name, role, version, started_at, seen_at) VALUES ($1, $2, $3, $4, {NOW_MS}) \
           ON CONFLICT (name) DO UPDATE SET role = excluded.role, version = excluded.version, \
             started_at = excluded.started_at, seen_at = excluded.seen_at \
           RETURNING 1), \
         lead AS ( \
           INSERT INTO leadership AS l (name, holder, term, lease_until) \
             SELECT 'singletons', $1, 1, {NOW_MS} + $5 WHERE $6 \
           ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             term = CASE WHEN l.holder = excluded.holder THEN l.term ELSE l.term + 1 END, \
             lease_until = excluded.lease_until \
           WHERE l.holder = excluded.holder OR l.lease_until < {NOW_MS} \
           RETURNING l.term) \
         SELECT (SELECT term FROM lead), (SELECT count(*) FROM seen)"
    )
});

impl Cluster for PgCluster {
    fn heartbeat(&self, me: &InstanceInfo, lease_ms: i64) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        let me = me.clone();
        Box::pin(async move {
            let client = self.db.client().await?;
            let statement = client.prepare_cached(&HEARTBEAT).await?;
            let row = client
                .query_one(&statement, &[&me.name, &me.role, &me.version, &me.started_at_ms, &lease_ms, &me.may_lead])
                .await?;
            Ok(row.get::<_, Option<i64>>(0))
        })
    }

    fn leave(&self, name: &str) -> BoxFuture<'_, StoreResult<()>> {
        let name = name.to_owned();
        Box::pin(async move {
            let client = self.db.client().await?;
            client.execute("UPDATE leadership SET lease_until = 0 WHERE holder = $1", &[&name]).await?;
            client.execute("DELETE FROM instances WHERE name = $1", &[&name]).await?;
            Ok(())
        })
    }

    fn instances(&self, within_ms: i64) -> BoxFuture<'_, StoreResult<Vec<InstanceRecord>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT i.name, i.role, i.version, i.started_at, i.seen_at, \
                           COALESCE(l.holder = i.name AND l.lease_until >= {NOW_MS}, false) \
                         FROM instances i LEFT JOIN leadership l ON l.name = 'singletons' \
                         WHERE i.seen_at >= {NOW_MS} - $1 ORDER BY i.name"
                    ),
                    &[&within_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| InstanceRecord {
                    name: r.get(0),
                    role: r.get(1),
                    version: r.get(2),
                    started_at_ms: r.get(3),
                    seen_at_ms: r.get(4),
                    leader: r.get(5),
                })
                .collect())
        })
    }
}
