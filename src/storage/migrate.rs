//! `db migrate`: copies the embedded SQLite database into an empty PostgreSQL database,
//! backend to backend, below the storage traits (they have no bulk paths, and going
//! through them would renumber what must stay: repository ids, delivery order).
//!
//! - **One snapshot.** The source is read in one SQLite read transaction: in WAL mode it
//!   sees every table as of one moment, whatever a running daemon commits meanwhile.
//!   What arrives after that moment is not copied (the command says so).
//! - **One transaction.** Everything is written in one PostgreSQL transaction that first
//!   locks every futurnal table (`EXCLUSIVE`: readers go on, writers wait) and checks
//!   again that they are empty, so a failure anywhere (a row the target refuses, the
//!   source unreadable, the connection lost) leaves the target as empty as it was, and
//!   two migrations into one database cannot both succeed.
//! - **Binary `COPY`**, one per table (`BinaryCopyInWriter`), rows streamed from a
//!   blocking SQLite reader thread through a bounded channel. Chosen over multi-row
//!   `UNNEST` inserts because it is PostgreSQL's bulk-load path (no statement to plan per
//!   chunk, no parameter limit, values sent in their binary form as the driver already
//!   does), it streams, so a large queue of stored payloads is never held in memory, and
//!   the target being empty (checked under the lock) means `UNNEST`'s one advantage,
//!   `ON CONFLICT`, is not needed: any conflict is a bug and fails the transaction.
//! - **Verified.** Each `COPY` reports how many rows it took (checked before the commit);
//!   after the commit every table is counted again and compared with the snapshot.
//!
//! The two schemas have the same tables and columns (PostgreSQL's migration 2 says so);
//! the differences, column by column, and what is done about them:
//!
//! - SQLite integers become `BIGINT`, except `deliveries.attempts` (`INTEGER`); 0/1 flags
//!   (`archived`, `deleted`, `draft`, `merged`, `prerelease`) become `BOOLEAN`. Reviews,
//!   review comments, labels and milestones (migration 10 on both sides) are copied like
//!   the issues: column for column, deleted rows (the tombstones that keep a deletion
//!   sticky) included.
//! - Lists (`branches`, `parents`, `paths`, `labels`, `assignees`) are JSON text on
//!   both sides and are copied as text, byte for byte; so are the poll watermarks.
//! - `deliveries.seq` (SQLite's acknowledgement order) becomes `deliveries.id`, and
//!   `deliveries.position` (PostgreSQL's order within a domain) is `seq` again for every
//!   delivery with a domain: ordered within each domain exactly as SQLite orders it (a
//!   replay on SQLite keeps `seq`, on PostgreSQL `position`, so replays keep their place
//!   too). Payload bodies keep their codec: compressed bytes are copied as they are.
//! - `queue_domains` is derived, not copied: SQLite keeps `(domain, turn)` only while a
//!   domain has pending work; PostgreSQL keeps every domain that ever had work with its
//!   counter (`next_position`: the last position handed out, so the next enqueue gets a
//!   higher one), its number of pending deliveries, and its turn. The rows are computed
//!   from the deliveries; domains with pending work take turns 1, 2, … in SQLite's claim
//!   order (`turn, domain`), and the `queue_turns` sequence goes on after them.
//! - Sequences (`repositories.id`, `deliveries.id`, `queue_turns`) are set past every id
//!   SQLite ever handed out (`sqlite_sequence`, which also remembers removed rows: a
//!   removed repository's id, the name of its mirror directory, is not reused); so is
//!   `change_counter` (PostgreSQL's source of change numbers, a one-row table: not in the
//!   list below, it is never empty) past every change number, so the change log goes on
//!   from where it was and a consumer's position stays valid.
//! - `futurnal_schema` (PostgreSQL's migration record) is written by PostgreSQL's own
//!   migrations; SQLite's counterpart is `PRAGMA user_version`. Nothing else exists on
//!   one side only: the tables and columns of both are checked against the list below
//!   before anything is copied, so a migration added later without teaching this file
//!   fails here loudly instead of leaving a column behind.
//!
//! A text the target cannot store (PostgreSQL refuses NUL characters, SQLite does not)
//! fails the migration with the table's name; nothing is changed to make it fit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

use crate::config::{redact_url, Synchronous};
use crate::storage::postgres::{self, PgDb, PostgresOptions};
use crate::storage::sqlite::{SqliteDb, SqliteOptions, SCHEMA_VERSION};
use crate::time::now_ms;

/// How a column's values travel: its PostgreSQL type, and what SQLite must hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BigInt,
    Int,
    Bool,
    Text,
    Bytes,
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::BigInt => Type::INT8,
            Kind::Int => Type::INT4,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytes => Type::BYTEA,
        }
    }

    /// The type as `information_schema.columns.data_type` spells it.
    fn pg_name(self) -> &'static str {
        match self {
            Kind::BigInt => "bigint",
            Kind::Int => "integer",
            Kind::Bool => "boolean",
            Kind::Text => "text",
            Kind::Bytes => "bytea",
        }
    }
}

struct Column {
    /// The PostgreSQL column.
    name: &'static str,
    /// What SQLite gives for it: a column of the source table, or an expression.
    source: &'static str,
    /// `source` is an expression over other columns, not a column of its own.
    derived: bool,
    kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, source: name, derived: false, kind }
}

const fn renamed(name: &'static str, source: &'static str, kind: Kind) -> Column {
    Column { name, source, derived: false, kind }
}

const fn derived(name: &'static str, source: &'static str, kind: Kind) -> Column {
    Column { name, source, derived: true, kind }
}

struct Table {
    /// The same name on both sides.
    name: &'static str,
    /// Whether SQLite has this table with the columns below (false: derived from others).
    copied: bool,
    /// SQLite columns deliberately left behind.
    ignored: &'static [&'static str],
    /// `FROM … ORDER BY …` of the source query.
    from: &'static str,
    /// The source query's row count.
    count: &'static str,
    columns: &'static [Column],
}

use Kind::{BigInt, Bool, Bytes, Int, Text};

/// Every table with data, parents before children (foreign keys are checked row by row).
const TABLES: &[Table] = &[
    Table {
        name: "repositories",
        copied: true,
        ignored: &[],
        from: "FROM repositories ORDER BY id",
        count: "SELECT COUNT(*) FROM repositories",
        columns: &[
            col("id", BigInt),
            col("full_name", Text),
            col("github_id", BigInt),
            col("branches", Text),
            col("clone_url", Text),
            col("mode", Text),
            col("added_at", BigInt),
            col("last_delivery_at", BigInt),
            col("default_branch", Text),
            col("archived", Bool),
            col("deleted", Bool),
            col("visibility", Text),
            col("synced_at", BigInt),
            col("hook_id", BigInt),
            col("hook_url", Text),
            col("hook_tunnel", Text),
        ],
    },
    Table {
        name: "hooks",
        copied: true,
        ignored: &[],
        from: "FROM hooks ORDER BY hook_id",
        count: "SELECT COUNT(*) FROM hooks",
        columns: &[col("hook_id", BigInt), col("last_ping_at", BigInt), col("last_delivery_at", BigInt)],
    },
    Table {
        name: "poll_watermarks",
        copied: true,
        ignored: &[],
        from: "FROM poll_watermarks ORDER BY repo_id",
        count: "SELECT COUNT(*) FROM poll_watermarks",
        columns: &[col("repo_id", BigInt), col("pulls_seen", Text), col("issues_since", Text)],
    },
    Table {
        name: "branches",
        copied: true,
        ignored: &[],
        from: "FROM branches ORDER BY repo_id, name",
        count: "SELECT COUNT(*) FROM branches",
        columns: &[col("repo_id", BigInt), col("name", Text), col("head_sha", Text), col("synced_at", BigInt)],
    },
    Table {
        name: "tags",
        copied: true,
        ignored: &[],
        from: "FROM tags ORDER BY repo_id, name",
        count: "SELECT COUNT(*) FROM tags",
        columns: &[col("repo_id", BigInt), col("name", Text), col("sha", Text), col("synced_at", BigInt)],
    },
    Table {
        name: "commits",
        copied: true,
        ignored: &[],
        from: "FROM commits ORDER BY repo_id, sha",
        count: "SELECT COUNT(*) FROM commits",
        columns: &[
            col("repo_id", BigInt),
            col("sha", Text),
            col("parents", Text),
            col("author_name", Text),
            col("author_email", Text),
            col("authored_at", BigInt),
            col("committer_name", Text),
            col("committer_email", Text),
            col("committed_at", BigInt),
            col("message", Text),
            col("paths", Text),
        ],
    },
    Table {
        name: "branch_commits",
        copied: true,
        ignored: &[],
        from: "FROM branch_commits ORDER BY repo_id, branch, sha",
        count: "SELECT COUNT(*) FROM branch_commits",
        columns: &[
            col("repo_id", BigInt),
            col("branch", Text),
            col("sha", Text),
            col("committed_at", BigInt),
            col("position", BigInt),
        ],
    },
    Table {
        name: "pulls",
        copied: true,
        ignored: &[],
        from: "FROM pulls ORDER BY repo_id, number",
        count: "SELECT COUNT(*) FROM pulls",
        columns: &[
            col("repo_id", BigInt),
            col("number", BigInt),
            col("title", Text),
            col("body", Text),
            col("state", Text),
            col("draft", Bool),
            col("merged", Bool),
            col("author", Text),
            col("labels", Text),
            col("assignees", Text),
            col("base_ref", Text),
            col("base_sha", Text),
            col("head_ref", Text),
            col("head_sha", Text),
            col("created_at", BigInt),
            col("updated_at", BigInt),
            col("closed_at", BigInt),
            col("merged_at", BigInt),
            col("milestone", BigInt),
        ],
    },
    Table {
        name: "issues",
        copied: true,
        ignored: &[],
        from: "FROM issues ORDER BY repo_id, number",
        count: "SELECT COUNT(*) FROM issues",
        columns: &[
            col("repo_id", BigInt),
            col("number", BigInt),
            col("title", Text),
            col("body", Text),
            col("state", Text),
            col("author", Text),
            col("labels", Text),
            col("assignees", Text),
            col("comments", BigInt),
            col("created_at", BigInt),
            col("updated_at", BigInt),
            col("closed_at", BigInt),
            col("deleted", Bool),
            col("transferred_to", Text),
            col("milestone", BigInt),
        ],
    },
    Table {
        name: "issue_comments",
        copied: true,
        ignored: &[],
        from: "FROM issue_comments ORDER BY repo_id, id",
        count: "SELECT COUNT(*) FROM issue_comments",
        columns: &[
            col("repo_id", BigInt),
            col("id", BigInt),
            col("issue_number", BigInt),
            col("body", Text),
            col("author", Text),
            col("created_at", BigInt),
            col("updated_at", BigInt),
            col("deleted", Bool),
        ],
    },
    Table {
        name: "releases",
        copied: true,
        ignored: &[],
        from: "FROM releases ORDER BY repo_id, id",
        count: "SELECT COUNT(*) FROM releases",
        columns: &[
            col("repo_id", BigInt),
            col("id", BigInt),
            col("tag_name", Text),
            col("name", Text),
            col("draft", Bool),
            col("prerelease", Bool),
            col("created_at", BigInt),
            col("published_at", BigInt),
            col("deleted", Bool),
        ],
    },
    Table {
        name: "reviews",
        copied: true,
        ignored: &[],
        from: "FROM reviews ORDER BY repo_id, id",
        count: "SELECT COUNT(*) FROM reviews",
        columns: &[
            col("repo_id", BigInt),
            col("id", BigInt),
            col("pull_number", BigInt),
            col("author", Text),
            col("state", Text),
            col("body", Text),
            col("commit_id", Text),
            col("submitted_at", BigInt),
            col("html_url", Text),
        ],
    },
    Table {
        name: "review_comments",
        copied: true,
        ignored: &[],
        from: "FROM review_comments ORDER BY repo_id, id",
        count: "SELECT COUNT(*) FROM review_comments",
        columns: &[
            col("repo_id", BigInt),
            col("id", BigInt),
            col("review_id", BigInt),
            col("pull_number", BigInt),
            col("path", Text),
            col("line", BigInt),
            col("side", Text),
            col("body", Text),
            col("author", Text),
            col("in_reply_to", BigInt),
            col("commit_id", Text),
            col("html_url", Text),
            col("created_at", BigInt),
            col("updated_at", BigInt),
            col("deleted", Bool),
        ],
    },
    Table {
        name: "labels",
        copied: true,
        ignored: &[],
        from: "FROM labels ORDER BY repo_id, name",
        count: "SELECT COUNT(*) FROM labels",
        columns: &[
            col("repo_id", BigInt),
            col("name", Text),
            col("github_id", BigInt),
            col("color", Text),
            col("description", Text),
            col("deleted", Bool),
        ],
    },
    Table {
        name: "milestones",
        copied: true,
        ignored: &[],
        from: "FROM milestones ORDER BY repo_id, number",
        count: "SELECT COUNT(*) FROM milestones",
        columns: &[
            col("repo_id", BigInt),
            col("number", BigInt),
            col("github_id", BigInt),
            col("title", Text),
            col("state", Text),
            col("description", Text),
            col("due_on", BigInt),
            col("created_at", BigInt),
            col("updated_at", BigInt),
            col("closed_at", BigInt),
            col("html_url", Text),
            col("deleted", Bool),
        ],
    },
    Table {
        name: "deliveries",
        copied: true,
        // No claim survives a move: what was processing is free to claim at once.
        ignored: &["fence", "lease_until"],
        from: "FROM deliveries ORDER BY seq",
        count: "SELECT COUNT(*) FROM deliveries",
        columns: &[
            renamed("id", "seq", BigInt),
            col("delivery_id", Text),
            col("event", Text),
            col("action", Text),
            col("repository", Text),
            col("repository_github_id", BigInt),
            col("repo_key", Text),
            col("domain", Text),
            derived("position", "CASE WHEN domain IS NULL THEN NULL ELSE seq END", BigInt),
            col("hook_id", BigInt),
            col("received_at", BigInt),
            col("status", Text),
            col("attempts", Int),
            col("next_attempt_at", BigInt),
            col("last_error", Text),
            col("finished_at", BigInt),
            col("started_at", BigInt),
            col("worker", Text),
            derived("fence", "NULL", BigInt),
            derived("lease_until", "NULL", BigInt),
            col("body_codec", Text),
            col("body", Bytes),
        ],
    },
    // Derived (see the module's comment): one row per domain any delivery names.
    Table {
        name: "queue_domains",
        copied: false,
        ignored: &[],
        from: "FROM (SELECT d.domain AS domain, MAX(d.seq) AS last_position, \
                 SUM(d.status IN ('queued', 'processing', 'retrying')) AS pending, MAX(q.turn) AS turn \
               FROM deliveries d LEFT JOIN queue_domains q ON q.domain = d.domain \
               WHERE d.domain IS NOT NULL GROUP BY d.domain) ORDER BY domain",
        count: "SELECT COUNT(DISTINCT domain) FROM deliveries WHERE domain IS NOT NULL",
        columns: &[
            col("domain", Text),
            derived("next_position", "last_position", BigInt),
            col("pending", BigInt),
            derived(
                "turn",
                "CASE WHEN pending > 0 THEN ROW_NUMBER() OVER (ORDER BY pending = 0, turn IS NULL, turn, domain) \
                 ELSE 0 END",
                BigInt,
            ),
        ],
    },
    Table {
        name: "redelivery_requests",
        copied: true,
        ignored: &[],
        from: "FROM redelivery_requests ORDER BY guid",
        count: "SELECT COUNT(*) FROM redelivery_requests",
        columns: &[col("guid", Text), col("hook_id", BigInt), col("asked_at", BigInt)],
    },
    Table {
        name: "changes",
        copied: true,
        ignored: &[],
        from: "FROM changes ORDER BY seq",
        count: "SELECT COUNT(*) FROM changes",
        columns: &[
            col("seq", BigInt),
            col("at", BigInt),
            col("repo_id", BigInt),
            col("repository", Text),
            col("kind", Text),
            col("key", Text),
            col("op", Text),
            col("state", Text),
            col("cause", Text),
        ],
    },
    Table {
        name: "delivery_attempts",
        copied: true,
        ignored: &[],
        from: "FROM delivery_attempts ORDER BY rowid",
        count: "SELECT COUNT(*) FROM delivery_attempts",
        columns: &[
            col("delivery_id", Text),
            col("attempt", Int),
            col("started_at", BigInt),
            col("finished_at", BigInt),
            col("worker", Text),
            col("outcome", Text),
            col("error", Text),
        ],
    },
    Table {
        name: "activity",
        copied: true,
        ignored: &[],
        from: "FROM activity ORDER BY minute, instance",
        count: "SELECT COUNT(*) FROM activity",
        columns: &[col("minute", BigInt), col("instance", Text), col("data", Text)],
    },
];

const PENDING: &str = "('queued', 'processing', 'retrying')";
/// Rows (or bytes of text and payloads) per message from the reader thread.
const CHUNK_ROWS: usize = 1024;
const CHUNK_BYTES: usize = 4 << 20;

/// What `db migrate` reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The snapshot is taken; this many rows are to be copied.
    Started {
        rows: u64,
    },
    /// Copying this table (of `rows` rows) now.
    Table {
        table: &'static str,
        rows: u64,
    },
    /// Rows copied so far, of every table.
    Copied {
        rows: u64,
    },
    Committing,
    Verifying,
}

/// One table's rows: in the SQLite snapshot, and in PostgreSQL read back after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
}

#[derive(Debug, Clone)]
pub struct MigrationReport {
    pub tables: Vec<TableCount>,
    /// When the SQLite snapshot was taken.
    pub snapshot_at_ms: i64,
    /// Deliveries still to process (queued, retrying or processing), in order per domain.
    pub pending: u64,
    /// Deliveries a running daemon was processing at the snapshot; they carry no lease
    /// on PostgreSQL, so its workers claim them again at once, as after a crash.
    pub processing: u64,
    /// The id the next repository added gets.
    pub next_repository_id: i64,
}

/// What the target is: its URL (for messages, with the password redacted) and schema.
#[derive(Clone)]
pub struct Target<'a> {
    pub url: &'a str,
    pub schema: Option<&'a str>,
}

impl Target<'_> {
    /// `postgres://u:<redacted>@h/db (schema s)`, for messages.
    fn describe(&self) -> String {
        match self.schema {
            Some(schema) => format!("{} (schema {schema})", redact_url(self.url)),
            None => redact_url(self.url),
        }
    }
}

/// Copies the SQLite database at `source` into the empty PostgreSQL database `target`,
/// in one transaction, and verifies it. Refuses (writing nothing) a target that holds
/// futurnal data.
pub async fn sqlite_to_postgres(
    source: &Path,
    target: Target<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<MigrationReport> {
    prepare_source(source).await?;
    // Checked before anything is created there: a database with futurnal data is left
    // exactly as it is (not even migrated forward).
    {
        let client = postgres::connect(target.url, target.schema).await?;
        refuse_non_empty(&client, &target).await?;
    }
    let db = PgDb::open(target.url, PostgresOptions { schema: target.schema.map(str::to_owned), pool_size: 2 }).await?;
    db.close();

    let mut client = postgres::connect(target.url, target.schema).await?;
    let tx = client.transaction().await.map_err(|e| pg(e, "failed to start the transaction"))?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!("LOCK TABLE {}, change_counter IN EXCLUSIVE MODE", names.join(", ")))
        .await
        .map_err(|e| pg(e, "failed to lock the target's tables"))?;
    check_target_columns(&tx).await?;
    refuse_non_empty(&tx, &target).await?;

    let (sender, mut receiver) = mpsc::channel(4);
    let path = source.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_source(path, sender));
    let copied = copy_rows(&tx, &mut receiver, progress).await;
    drop(receiver);
    let _ = reader.await;
    let snapshot = match copied {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e.context("nothing was written to PostgreSQL (the copy is one transaction)"));
        }
    };
    let sequences = [
        ("pg_get_serial_sequence('repositories', 'id')", snapshot.last_repository_id),
        ("pg_get_serial_sequence('deliveries', 'id')", snapshot.last_delivery_id),
        ("'queue_turns'", snapshot.turns),
    ];
    for (sequence, last) in sequences {
        // setval(s, n, true): the next value is n + 1; setval(s, 1, false): it is 1.
        tx.query_one(&format!("SELECT setval({sequence}, $1, $2)"), &[&last.max(1), &(last >= 1)])
            .await
            .map_err(|e| pg(e, "failed to move the id sequences past the copied ids"))?;
    }
    // The change log goes on past every number SQLite handed out.
    tx.execute("UPDATE change_counter SET last_seq = $1", &[&snapshot.last_change_seq])
        .await
        .map_err(|e| pg(e, "failed to move the change counter past the copied changes"))?;
    progress(Progress::Committing);
    tx.commit().await.map_err(|e| pg(e, "the commit failed; nothing was written to PostgreSQL"))?;

    progress(Progress::Verifying);
    let mut tables = Vec::new();
    for (table, &source_rows) in TABLES.iter().zip(&snapshot.counts) {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name);
        let target_rows: i64 = client.query_one(&sql, &[]).await.map_err(|e| pg(e, "failed to read back"))?.get(0);
        tables.push(TableCount { table: table.name, source: source_rows, target: target_rows as u64 });
    }
    let pending: i64 = client
        .query_one("SELECT COALESCE(SUM(pending), 0)::BIGINT FROM queue_domains", &[])
        .await
        .map_err(|e| pg(e, "failed to read back"))?
        .get(0);
    // The sequence read back: what the next `add` prints.
    let sequence: String = client
        .query_one("SELECT pg_get_serial_sequence('repositories', 'id')", &[])
        .await
        .map_err(|e| pg(e, "failed to read back"))?
        .get(0);
    let row = client
        .query_one(&format!("SELECT last_value, is_called FROM {sequence}"), &[])
        .await
        .map_err(|e| pg(e, "failed to read back"))?;
    let next_repository_id = row.get::<_, i64>(0) + i64::from(row.get::<_, bool>(1));
    let last_change_seq: i64 = client
        .query_one("SELECT last_seq FROM change_counter", &[])
        .await
        .map_err(|e| pg(e, "failed to read back"))?
        .get(0);
    let wrong: Vec<String> = tables
        .iter()
        .filter(|t| t.source != t.target)
        .map(|t| format!("{}: {} in SQLite, {} in PostgreSQL", t.table, t.source, t.target))
        .chain(
            (pending as u64 != snapshot.pending)
                .then(|| format!("pending deliveries: {} in SQLite, {pending} in PostgreSQL", snapshot.pending)),
        )
        .chain(
            (last_change_seq != snapshot.last_change_seq)
                .then(|| format!("the change counter is at {last_change_seq}, not at {}", snapshot.last_change_seq)),
        )
        .chain((next_repository_id <= snapshot.last_repository_id).then(|| {
            format!("the next repository id would be {next_repository_id}, not past {}", snapshot.last_repository_id)
        }))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "verification failed after the commit ({}): empty the target ({}) and migrate again",
            wrong.join("; "),
            target.describe()
        );
    }
    Ok(MigrationReport {
        tables,
        snapshot_at_ms: snapshot.at_ms,
        pending: snapshot.pending,
        processing: snapshot.processing,
        next_repository_id,
    })
}

/// A PostgreSQL error in the server's own words, under `what`.
fn pg(e: tokio_postgres::Error, what: &str) -> anyhow::Error {
    anyhow!("{what}: {}", postgres::describe_error(&e))
}

/// The source exists, and is at this binary's schema version (an older file is migrated
/// forward, as any command opening it would; a newer one is refused).
async fn prepare_source(source: &Path) -> anyhow::Result<()> {
    if !source.is_file() {
        bail!(
            "there is no SQLite database at {}: nothing to migrate (check --data-dir or --database-url)",
            source.display()
        );
    }
    let version = {
        let conn = open_source(source)?;
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .with_context(|| format!("failed to read {}", source.display()))?
    };
    if version > SCHEMA_VERSION {
        bail!(
            "the SQLite database {} has schema version {version}, newer than this futurnal knows \
             ({SCHEMA_VERSION}): migrate it with the futurnal that wrote it",
            source.display()
        );
    }
    if version < SCHEMA_VERSION {
        let options =
            SqliteOptions { synchronous: Synchronous::Full, background_checkpoints: false, max_database_bytes: None };
        SqliteDb::open(source, options)?.close();
    }
    Ok(())
}

fn open_source(path: &Path) -> anyhow::Result<Connection> {
    // Read-write flags so WAL's shared memory works as for the daemon's own readers;
    // `query_only` makes sure nothing is written. Never created: it must exist.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "query_only", "ON")?;
            Ok(conn)
        })
        .with_context(|| format!("failed to open the SQLite database {}", path.display()))?;
    Ok(conn)
}

/// Refuses a target where any futurnal table has a row (those that do not exist yet are
/// empty).
async fn refuse_non_empty(client: &impl GenericClient, target: &Target<'_>) -> anyhow::Result<()> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let existing: Vec<String> = client
        .query("SELECT t FROM unnest($1::TEXT[]) AS t WHERE to_regclass(t) IS NOT NULL", &[&names])
        .await
        .map_err(|e| pg(e, "failed to look at the target"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut holding = Vec::new();
    for table in TABLES.iter().filter(|t| existing.iter().any(|e| e == t.name)) {
        let rows: i64 = client
            .query_one(&format!("SELECT COUNT(*) FROM {}", table.name), &[])
            .await
            .map_err(|e| pg(e, "failed to look at the target"))?
            .get(0);
        if rows > 0 {
            holding.push(format!("{}: {rows} row{}", table.name, if rows == 1 { "" } else { "s" }));
        }
    }
    if !holding.is_empty() {
        bail!(
            "PostgreSQL at {} already holds futurnal data ({}): db migrate copies only into an empty \
             database, so nothing was written; use an empty database or another [postgres] schema",
            target.describe(),
            holding.join(", ")
        );
    }
    Ok(())
}

/// The target's tables have exactly the columns (and types) this file copies.
async fn check_target_columns(client: &impl GenericClient) -> anyhow::Result<()> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let rows = client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| pg(e, "failed to read the target's columns"))?;
    for table in TABLES {
        let mut found: Vec<(String, String)> =
            rows.iter().filter(|r| r.get::<_, &str>(0) == table.name).map(|r| (r.get(1), r.get(2))).collect();
        let mut expected: Vec<(String, String)> =
            table.columns.iter().map(|c| (c.name.to_owned(), c.kind.pg_name().to_owned())).collect();
        found.sort();
        expected.sort();
        if found != expected {
            bail!(
                "the PostgreSQL table {} has columns {found:?}, but db migrate copies {expected:?}: \
                 this futurnal cannot migrate into it",
                table.name
            );
        }
    }
    Ok(())
}

/// The source's tables have exactly the columns this file reads.
fn check_source_columns(conn: &Connection) -> anyhow::Result<()> {
    for table in TABLES.iter().filter(|t| t.copied) {
        let mut found: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{}')", table.name))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut expected: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !c.derived)
            .map(|c| c.source.to_owned())
            .chain(table.ignored.iter().map(|c| (*c).to_owned()))
            .collect();
        found.sort();
        expected.sort();
        if found != expected {
            bail!(
                "the SQLite table {} has columns {found:?}, but db migrate copies {expected:?}: \
                 this futurnal cannot migrate it",
                table.name
            );
        }
    }
    Ok(())
}

/// A value on its way, typed for its PostgreSQL column.
#[derive(Debug)]
enum Cell {
    BigInt(Option<i64>),
    Int(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Cell {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::BigInt(v) => v,
            Cell::Int(v) => v,
            Cell::Bool(v) => v,
            Cell::Text(v) => v,
            Cell::Bytes(v) => v,
        }
    }

    fn size(&self) -> usize {
        match self {
            Cell::Text(Some(s)) => s.len(),
            Cell::Bytes(Some(b)) => b.len(),
            _ => 8,
        }
    }

    /// SQLite's value as `kind`: strictly (an integer where text belongs is an error,
    /// not a conversion).
    fn read(value: ValueRef<'_>, kind: Kind) -> anyhow::Result<Cell> {
        let found = match value {
            ValueRef::Null => "NULL",
            ValueRef::Integer(_) => "an integer",
            ValueRef::Real(_) => "a real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "a blob",
        };
        let cell = match (kind, value) {
            (Kind::BigInt, ValueRef::Null) => Cell::BigInt(None),
            (Kind::BigInt, ValueRef::Integer(v)) => Cell::BigInt(Some(v)),
            (Kind::Int, ValueRef::Null) => Cell::Int(None),
            (Kind::Int, ValueRef::Integer(v)) => {
                Cell::Int(Some(i32::try_from(v).map_err(|_| anyhow!("{v} does not fit an INTEGER"))?))
            }
            (Kind::Bool, ValueRef::Null) => Cell::Bool(None),
            (Kind::Bool, ValueRef::Integer(v)) => Cell::Bool(Some(v != 0)),
            (Kind::Text, ValueRef::Null) => Cell::Text(None),
            (Kind::Text, ValueRef::Text(t)) => {
                Cell::Text(Some(String::from_utf8(t.to_vec()).map_err(|_| anyhow!("the text is not UTF-8"))?))
            }
            (Kind::Bytes, ValueRef::Null) => Cell::Bytes(None),
            (Kind::Bytes, ValueRef::Blob(b) | ValueRef::Text(b)) => Cell::Bytes(Some(b.to_vec())),
            (kind, _) => bail!("expected {}, found {found}", kind.pg_name()),
        };
        Ok(cell)
    }
}

/// What the reader thread tells the writer.
enum Message {
    Snapshot(Snapshot),
    Table(usize),
    Rows(Vec<Vec<Cell>>),
    TableDone { rows: u64 },
    Done,
}

/// What the snapshot holds besides the rows.
struct Snapshot {
    at_ms: i64,
    /// Rows of each of `TABLES`.
    counts: Vec<u64>,
    pending: u64,
    processing: u64,
    /// The highest ids SQLite ever handed out (removed rows included).
    last_repository_id: i64,
    last_delivery_id: i64,
    last_change_seq: i64,
    /// Turns handed out: one per domain with pending work.
    turns: i64,
}

type Sender = mpsc::Sender<anyhow::Result<Message>>;

/// The reader thread: the whole snapshot, table by table, in chunks. An error is sent
/// too, so the writer rolls back instead of taking a short table for a whole one.
fn read_source(path: PathBuf, sender: Sender) {
    if let Err(e) = read_snapshot(&path, &sender) {
        let _ = sender.blocking_send(Err(e));
    }
}

fn send(sender: &Sender, message: Message) -> anyhow::Result<()> {
    sender.blocking_send(Ok(message)).map_err(|_| anyhow!("the PostgreSQL side stopped"))
}

fn read_snapshot(path: &Path, sender: &Sender) -> anyhow::Result<()> {
    let conn = open_source(path)?;
    let failed = || format!("failed to read the SQLite database {}", path.display());
    // One read transaction: the first read fixes what every later one sees.
    conn.execute_batch("BEGIN DEFERRED").with_context(failed)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(())).with_context(failed)?;
    let at_ms = now_ms();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).with_context(failed)?;
    if version != SCHEMA_VERSION {
        bail!("the SQLite database changed schema version while db migrate started (now {version}): try again");
    }
    check_source_columns(&conn)?;
    let count = |sql: &str| -> anyhow::Result<u64> {
        Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0)).with_context(failed)? as u64)
    };
    let counts = TABLES.iter().map(|t| count(t.count)).collect::<anyhow::Result<Vec<_>>>()?;
    let last_id = |table: &str, column: &str| -> anyhow::Result<i64> {
        let sql = format!(
            "SELECT MAX(COALESCE((SELECT MAX({column}) FROM {table}), 0), \
             COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0))"
        );
        conn.query_row(&sql, [], |r| r.get(0)).with_context(failed)
    };
    let snapshot = Snapshot {
        at_ms,
        counts,
        pending: count(&format!("SELECT COUNT(*) FROM deliveries WHERE status IN {PENDING}"))?,
        processing: count("SELECT COUNT(*) FROM deliveries WHERE status = 'processing'")?,
        last_repository_id: last_id("repositories", "id")?,
        last_delivery_id: last_id("deliveries", "seq")?,
        last_change_seq: last_id("changes", "seq")?,
        turns: count(&format!(
            "SELECT COUNT(DISTINCT domain) FROM deliveries WHERE domain IS NOT NULL AND status IN {PENDING}"
        ))? as i64,
    };
    send(sender, Message::Snapshot(snapshot))?;
    for (index, table) in TABLES.iter().enumerate() {
        send(sender, Message::Table(index))?;
        let sources: Vec<&str> = table.columns.iter().map(|c| c.source).collect();
        let mut statement =
            conn.prepare(&format!("SELECT {} {}", sources.join(", "), table.from)).with_context(failed)?;
        let mut rows = statement.query([]).with_context(failed)?;
        let (mut chunk, mut bytes, mut sent) = (Vec::with_capacity(CHUNK_ROWS), 0, 0u64);
        while let Some(row) = rows.next().with_context(failed)? {
            let mut cells = Vec::with_capacity(table.columns.len());
            for (i, column) in table.columns.iter().enumerate() {
                let cell = Cell::read(row.get_ref(i).with_context(failed)?, column.kind)
                    .with_context(|| format!("{}.{} of row {}", table.name, column.name, sent + 1))?;
                bytes += cell.size();
                cells.push(cell);
            }
            chunk.push(cells);
            sent += 1;
            if chunk.len() >= CHUNK_ROWS || bytes >= CHUNK_BYTES {
                send(sender, Message::Rows(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS))))?;
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            send(sender, Message::Rows(chunk))?;
        }
        send(sender, Message::TableDone { rows: sent })?;
    }
    conn.execute_batch("COMMIT").with_context(failed)?;
    send(sender, Message::Done)
}

/// The writer: one `COPY` per table, inside `tx`. Returns the snapshot once every table
/// is in.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    receiver: &mut mpsc::Receiver<anyhow::Result<Message>>,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<Snapshot> {
    let mut snapshot = None;
    let mut copy: Option<(&Table, std::pin::Pin<Box<BinaryCopyInWriter>>)> = None;
    let mut copied = 0u64;
    loop {
        let message = receiver.recv().await.ok_or_else(|| anyhow!("the SQLite reader stopped"))??;
        match message {
            Message::Snapshot(s) => {
                progress(Progress::Started { rows: s.counts.iter().sum() });
                snapshot = Some(s);
            }
            Message::Table(index) => {
                let table = &TABLES[index];
                let rows = snapshot.as_ref().map_or(0, |s| s.counts[index]);
                progress(Progress::Table { table: table.name, rows });
                let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
                let types: Vec<Type> = table.columns.iter().map(|c| c.kind.pg_type()).collect();
                let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table.name, names.join(", "));
                let sink = tx.copy_in(&sql).await.map_err(|e| pg(e, &format!("copying {} failed", table.name)))?;
                copy = Some((table, Box::pin(BinaryCopyInWriter::new(sink, &types))));
            }
            Message::Rows(rows) => {
                let (table, writer) = copy.as_mut().ok_or_else(|| anyhow!("rows outside a table"))?;
                for row in &rows {
                    let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(Cell::sql).collect();
                    writer
                        .as_mut()
                        .write(&values)
                        .await
                        .map_err(|e| pg(e, &format!("copying {} failed", table.name)))?;
                }
                copied += rows.len() as u64;
                progress(Progress::Copied { rows: copied });
            }
            Message::TableDone { rows } => {
                let (table, mut writer) = copy.take().ok_or_else(|| anyhow!("end of a table never started"))?;
                let written =
                    writer.as_mut().finish().await.map_err(|e| pg(e, &format!("copying {} failed", table.name)))?;
                if written != rows {
                    bail!("copying {} failed: {rows} rows read, {written} written", table.name);
                }
            }
            Message::Done => return snapshot.ok_or_else(|| anyhow!("the SQLite reader sent no snapshot")),
        }
    }
}
