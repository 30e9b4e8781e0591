//! SQLite in WAL mode: one writer thread that runs every write of the process and commits
//! them in groups (one transaction and one fsync for all the writes that arrived while the
//! previous commit was on disk), a few reader connections for queries, and versioned
//! migrations applied at open.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::config::Synchronous;
use crate::storage::changes::ChangeSignal;
use crate::storage::{StoreError, StoreResult};
use migrations::MIGRATIONS;

pub mod copy;
mod entities;
mod error;
mod migrations;
pub mod queue;
pub mod registry;

/// The most jobs one transaction takes. Large enough that one fsync covers a whole wave of
/// concurrent requests, small enough to bound a batch's latency.
const MAX_BATCH: usize = 1024;
/// Jobs waiting for the writer beyond this make callers wait (backpressure).
const CHANNEL_BOUND: usize = 16 * 1024;
const READERS: usize = 3;
const PAGE_SIZE: i64 = 16 * 1024;
/// The schema version this binary writes (`PRAGMA user_version` once migrated).
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Run WAL checkpoints on a thread of their own instead of inside the writer's commits
    /// (the daemon does; one-shot CLI commands leave it to SQLite).
    pub background_checkpoints: bool,
    /// Writes that would grow the file past this fail (SQLITE_FULL) instead.
    pub max_database_bytes: Option<u64>,
}

/// A SQLite database opened for this process.
pub struct SqliteDb {
    path: PathBuf,
    writer: mpsc::SyncSender<Message>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: AtomicUsize,
    checkpointer: Mutex<Option<mpsc::Sender<()>>>,
    /// Bumped after each commit that appended to the change log.
    changes: Arc<ChangeSignal>,
}

thread_local! {
    /// Set on the writer thread by [`note_changes_appended`] while a batch runs; read and
    /// cleared once the batch has committed.
    static CHANGES_APPENDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called by whatever appends to the change log inside a write: followers are told once
/// the batch commits.
pub(crate) fn note_changes_appended() {
    CHANGES_APPENDED.with(|c| c.set(true));
}

enum Message {
    Job(Box<dyn WriteJob>),
    Stop,
}

trait WriteJob: Send {
    /// Runs inside the batch's transaction, in a savepoint of its own.
    fn run(&mut self, conn: &Connection);
    /// Called once the batch's commit succeeded or failed: only then is a result reported.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct TypedJob<F, R> {
    work: Option<F>,
    savepoint: bool,
    result: Option<StoreResult<R>>,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> WriteJob for TypedJob<F, R>
where
    F: FnOnce(&Connection) -> StoreResult<R> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(work) = self.work.take() {
            self.result = Some(if self.savepoint { in_savepoint(conn, work) } else { work(conn) });
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Unavailable("write was not run".into()))),
            Err(e) => Err(e),
        };
        let _ = self.reply.send(outcome);
    }
}

impl SqliteDb {
    /// Opens (creating when needed) the database file with mode 0600, applies migrations
    /// and starts the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            create_private_dir(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        }
        create_private_file(path).with_context(|| format!("failed to create database {}", path.display()))?;
        let writer_conn = open_connection(path, options.synchronous, false)
            .with_context(|| format!("failed to open database {}", path.display()))?;
        migrate(&writer_conn).with_context(|| format!("failed to migrate database {}", path.display()))?;
        if let Some(bytes) = options.max_database_bytes {
            let page_size: i64 = writer_conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            writer_conn.pragma_update(None, "max_page_count", (bytes as i64 / page_size).max(1))?;
        }
        let checkpointer = if options.background_checkpoints {
            writer_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            Some(spawn_checkpointer(path.to_owned())?)
        } else {
            None
        };
        let readers = (0..READERS)
            .map(|_| open_connection(path, options.synchronous, true).map(Mutex::new))
            .collect::<Result<Arc<[_]>, _>>()
            .with_context(|| format!("failed to open database {}", path.display()))?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BOUND);
        let changes = Arc::new(ChangeSignal::default());
        let signal = changes.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, options.background_checkpoints, &signal))?;
        Ok(Self {
            path: path.to_owned(),
            writer: tx,
            writer_thread: Mutex::new(Some(thread)),
            readers,
            next_reader: AtomicUsize::new(0),
            checkpointer: Mutex::new(checkpointer),
            changes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this process's writes to the change log bump once committed (another
    /// process writing the same file does not: its followers look on a timer).
    pub fn change_signal(&self) -> Arc<ChangeSignal> {
        self.changes.clone()
    }

    /// Runs `work` on the writer thread inside a group-committed transaction. The result
    /// is returned only after the transaction is durably committed; if the commit fails,
    /// every job of the batch gets the error, so nothing is reported done that is not on disk.
    pub async fn write<R, F>(&self, work: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(work, true).await
    }

    /// Like [`SqliteDb::write`] without the job's own savepoint, which saves two
    /// statements on the hot path. Only for jobs whose partial effect on failure is
    /// harmless: SQLite undoes a failed statement by itself, so a job whose statements are
    /// each safe to keep when a later one fails qualifies.
    pub async fn write_unguarded<R, F>(&self, work: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(work, false).await
    }

    async fn submit<R, F>(&self, work: F, savepoint: bool) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob { work: Some(work), savepoint, result: None, reply });
        let writer = self.writer.clone();
        // The bounded channel blocks only when the writer is far behind.
        match writer.try_send(Message::Job(job)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(msg)) => {
                tokio::task::spawn_blocking(move || writer.send(msg)).await.map_err(|_| gone())?.map_err(|_| gone())?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(gone()),
        }
        rx.await.map_err(|_| gone())?
    }

    /// Runs a query on one of the reader connections, off the async threads.
    pub async fn read<R, F>(&self, work: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers[index].lock().unwrap_or_else(|p| p.into_inner());
            work(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("database reader failed: {e}")))?
    }

    /// Finishes every queued write, then stops the writer thread.
    pub fn close(&self) {
        self.checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = self.writer.send(Message::Stop);
        if let Some(thread) = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        self.close();
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("database writer stopped".into())
}

fn in_savepoint<R>(conn: &Connection, work: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // If SQLite already rolled the whole transaction back, these fail too and the
            // commit reports it to every job of the batch.
            let _ = conn.prepare_cached("ROLLBACK TO job").and_then(|mut s| s.execute([]));
            let _ = conn.prepare_cached("RELEASE job").and_then(|mut s| s.execute([]));
            Err(e)
        }
    }
}

/// With background checkpoints, the checkpointer thread copies most of the WAL into the
/// database while the writer goes on; but with writes arriving all the time it never
/// reaches the end of the WAL, and the WAL can only start over from its beginning once a
/// checkpoint has reached its end. So the writer itself finishes the job this often,
/// between two batches (after their answers went out): what is left to copy is little.
const WRITER_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Message>, finish_checkpoints: bool, changes: &ChangeSignal) {
    let mut last_checkpoint = std::time::Instant::now();
    let mut stopping = false;
    while !stopping {
        let mut jobs: Vec<Box<dyn WriteJob>> = Vec::new();
        match rx.recv() {
            Ok(Message::Job(job)) => jobs.push(job),
            Ok(Message::Stop) | Err(_) => stopping = true,
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => jobs.push(job),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            run_batch(&conn, jobs, changes);
        }
        if finish_checkpoints && last_checkpoint.elapsed() >= WRITER_CHECKPOINT_INTERVAL {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            last_checkpoint = std::time::Instant::now();
        }
    }
    // Anything sent after Stop still gets an answer rather than hanging.
    while let Ok(Message::Job(job)) = rx.try_recv() {
        job.finish(Err(gone()));
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
}

fn run_batch(conn: &Connection, mut jobs: Vec<Box<dyn WriteJob>>, changes: &ChangeSignal) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = StoreError::from(e);
        tracing::error!(error = %err, jobs = jobs.len(), "Database write failed to start");
        for job in jobs {
            job.finish(Err(err.clone()));
        }
        return;
    }
    for job in &mut jobs {
        job.run(conn);
    }
    let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if let Err(e) = &commit {
        tracing::error!(error = %e, jobs = jobs.len(), "Database commit failed; nothing of this batch was acknowledged");
        let _ = conn.execute_batch("ROLLBACK");
    }
    // Before the jobs hear back: a writer that returned has been announced.
    if CHANGES_APPENDED.with(|c| c.replace(false)) && commit.is_ok() {
        changes.notify();
    }
    for job in jobs {
        job.finish(commit.clone());
    }
}

fn open_connection(path: &Path, synchronous: Synchronous, reader: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Effective only while the file is new (before WAL mode writes its header). Stored
    // payloads are about 2 KB compressed: 4 KB pages would hold one row each.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", 256 * 1024 * 1024)?;
    if reader {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = conn.execute_batch(sql).and_then(|()| conn.pragma_update(None, "user_version", (index + 1) as i64));
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Checkpoints the WAL into the database file every 50 ms without blocking the writer,
/// so the writer's commits never pay for a checkpoint.
/// Stops when the returned sender is dropped.
fn spawn_checkpointer(path: PathBuf) -> anyhow::Result<mpsc::Sender<()>> {
    let conn = open_connection(&path, Synchronous::Full, false)?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(50)) {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    })?;
    Ok(stop)
}

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> SqliteDb {
        SqliteDb::open(
            &dir.path().join("t.db"),
            SqliteOptions { synchronous: Synchronous::Full, background_checkpoints: false, max_database_bytes: None },
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_committed_and_a_failing_job_does_not_poison_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(open(&dir));
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    if i % 50 == 7 {
                        c.execute("INSERT INTO repositories(full_name, added_at) VALUES ('a/dup', 0)", [])?;
                    }
                    c.execute("INSERT INTO repositories(full_name, added_at) VALUES (?1, 0)", [format!("o/r{i}")])?;
                    Ok(i)
                })
                .await
            }));
        }
        let mut failures = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failures += 1;
            }
        }
        // Jobs 7, 57, 107, 157 each insert 'a/dup'; only the first succeeds.
        assert_eq!(failures, 3);
        let n: i64 =
            db.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM repositories", [], |r| r.get(0))?)).await.unwrap();
        // 197 jobs each inserted their row, plus 'a/dup' once; the three failed jobs left
        // nothing behind (their own row was rolled back with their savepoint).
        assert_eq!(n, 198);
        // Whichever of the four ran first kept its row; the other three kept none.
        let kept: i64 = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM repositories WHERE full_name IN ('o/r7', 'o/r57', 'o/r107', 'o/r157')",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(kept, 1);
        let mode = std::fs::metadata(dir.path().join("t.db")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_queued_before_the_ordering_domains_are_claimed_after_the_upgrade() {
        use crate::storage::queue::Queue;
        let dir = tempfile::tempdir().unwrap();
        {
            // A database as the previous release left it: migrations 1-5, work queued.
            let conn = Connection::open(dir.path().join("t.db")).unwrap();
            for (index, sql) in MIGRATIONS.iter().take(5).enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", (index + 1) as i64).unwrap();
            }
            for (id, event) in [("a", "push"), ("b", "issues"), ("c", "push")] {
                conn.execute(
                    "INSERT INTO deliveries (delivery_id, event, repository, repository_github_id, repo_key, \
                     received_at, status, body_codec, body) VALUES (?1, ?2, 'o/r', 7, 'id:7', 1, 'queued', 'raw', x'7b7d')",
                    [id, event],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO queue_repos (repo_key) VALUES ('id:7')", []).unwrap();
        }
        let queue = crate::storage::sqlite::queue::SqliteQueue::new(std::sync::Arc::new(open(&dir)));
        // Two domains now: the git one (a, c in order) and the metadata one (b), at once.
        let mut lanes: Vec<Vec<String>> = queue
            .claim(4, 8)
            .await
            .unwrap()
            .into_iter()
            .map(|lane| lane.into_iter().map(|d| d.delivery_id).collect())
            .collect();
        lanes.sort();
        assert_eq!(lanes, vec![vec!["a".to_owned(), "c".to_owned()], vec!["b".to_owned()]]);
    }

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir));
        let db = open(&dir);
        let conn = Connection::open(db.path()).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }
}
