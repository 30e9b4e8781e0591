//! The backend the integration tests run on: the embedded SQLite file (the default), or
//! PostgreSQL when `FUTURNAL_TEST_BACKEND=postgres` (the server at
//! `FUTURNAL_TEST_DATABASE_URL`; `.ci/run` runs the suite once each way).
//!
//! On PostgreSQL every data dir gets a schema of its own, made the first time a config is
//! built or the binary started for that dir, and found again by the dir's path: a second
//! app, the CLI and a restarted daemon in the same dir see the same data. The schema is
//! dropped when the test's thread ends (the test has returned: its apps, daemons and
//! runtime are gone), also when it failed. A test about the SQLite file itself returns
//! early in that run, saying so ([`skip_unless_sqlite`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The PostgreSQL schema of one data dir.
pub struct DirSchema {
    pub url: String,
    pub schema: String,
    /// A config file naming the schema (`[postgres] schema`), for the binary
    /// (`FUTURNAL_CONFIG`); kept outside the data dir, which tests look into.
    pub config_file: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl DirSchema {
    /// What a config file for the binary adds so that it uses this schema.
    pub fn toml(&self) -> String {
        format!("\n[postgres]\nschema = \"{}\"\n", self.schema)
    }
}

/// Whether this run is the PostgreSQL one (`FUTURNAL_TEST_BACKEND=postgres`).
pub fn postgres_mode() -> bool {
    static MODE: OnceLock<bool> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("FUTURNAL_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("FUTURNAL_TEST_BACKEND={other}: use sqlite or postgres"),
    })
}

/// For a test about the SQLite file only: true (and says so) in the PostgreSQL run, where
/// the test returns early.
pub fn skip_unless_sqlite(reason: &str) -> bool {
    if postgres_mode() {
        // Straight to the process's stderr, past the test harness's capture: in the log.
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = writeln!(std::io::stderr(), "SKIPPED on PostgreSQL: {test}: {reason}");
        return true;
    }
    false
}

fn test_server_url() -> String {
    match std::env::var("FUTURNAL_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("FUTURNAL_TEST_BACKEND=postgres needs FUTURNAL_TEST_DATABASE_URL (a server to make schemas on)"),
    }
}

static SCHEMAS: Mutex<Option<HashMap<PathBuf, Arc<DirSchema>>>> = Mutex::new(None);

/// Drops the schemas this thread made when the thread ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for key in self.0.drain(..) {
            let entry = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(|m| m.remove(&key));
            if let Some(entry) = entry {
                drop_schema(&entry.url, &entry.schema);
            }
        }
    }
}

thread_local! {
    static CLEANUP: RefCell<Cleanup> = const { RefCell::new(Cleanup(Vec::new())) };
}

fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()))
}

/// The data dir's schema, made on first use; `None` in the SQLite run.
pub fn schema_for(dir: &Path) -> Option<Arc<DirSchema>> {
    if !postgres_mode() {
        return None;
    }
    let key = key(dir);
    let mut guard = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(found) = map.get(&key) {
        return Some(found.clone());
    }
    // Made here, the schema lives until this thread ends: that must be the test's own
    // thread (libtest names it after the test), not a runtime's worker or blocking thread,
    // which can end in the middle of the test.
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("");
    assert!(
        !name.is_empty() && name != "main" && !name.starts_with("tokio-"),
        "the PostgreSQL schema of data dir {} was first asked for on thread {name:?}, not the test's own: \
         build a config or run the binary for that dir on the test's thread first",
        dir.display()
    );
    let url = test_server_url();
    let schema = format!("futurnal_it_{}", &futurnal::secrets::generate_secret()[..12].to_ascii_lowercase());
    execute(&url, &format!("CREATE SCHEMA {schema}")).unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
    let config_dir = tempfile::tempdir().unwrap();
    let config_file = config_dir.path().join("postgres.toml");
    let entry = Arc::new(DirSchema { url, schema, config_file, _config_dir: config_dir });
    std::fs::write(&entry.config_file, entry.toml()).unwrap();
    // A tripwire: should anything still open the SQLite file of this dir, it fails loudly
    // (a directory is no database) instead of passing on the wrong backend.
    if dir.is_dir() {
        std::fs::create_dir_all(dir.join("futurnal.db")).unwrap();
    }
    map.insert(key.clone(), entry.clone());
    drop(guard);
    CLEANUP.with(|c| c.borrow_mut().0.push(key));
    Some(entry)
}

fn drop_schema(url: &str, schema: &str) {
    // Sessions of a daemon killed a moment ago may still hold locks: wait for them a while.
    let sql = format!("SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS {schema} CASCADE");
    if let Err(e) = execute(url, &sql) {
        eprintln!("WARNING: could not drop the test schema {schema}: {e}");
    }
}

/// Runs `sql` on its own connection, from any thread (also inside a runtime: the work
/// runs on a thread of its own).
fn execute(url: &str, sql: &str) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let (client, connection) =
                        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
                    let connection = tokio::spawn(connection);
                    let result = client.batch_execute(sql).await.map_err(|e| format!("{e:?}"));
                    drop(client);
                    let _ = connection.await;
                    result
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the SQL thread panicked".into()))
    })
}
