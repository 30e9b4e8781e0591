//! A PostgreSQL server of a test's own (initdb into a temp dir, a free port on 127.0.0.1),
//! for what the shared server must never see: being stopped, restarted, or having its
//! connections killed. Without initdb the tests that need one fail under `CI=true` and say
//! loudly that they did not run elsewhere.
//!
//! initdb and the server refuse to run as root: as root (CI), they run as the `postgres`
//! system user (`runuser`), who owns the temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How the server lets clients in over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone, as any user, no password (the superuser `postgres` for [`PrivatePostgres::url`]).
    Trust,
    /// scram-sha-256 over TCP, for the user `futurnal` with [`PrivatePostgres::PASSWORD`]
    /// and its database `futurnal`; the unix socket stays trust (for the test's own checks).
    Password,
}

pub struct PrivatePostgres {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    auth: Auth,
    as_postgres_user: bool,
    running: bool,
}

impl PrivatePostgres {
    pub const USER: &'static str = "futurnal";
    pub const PASSWORD: &'static str = "pw-d41c-private-9e07";

    /// A running server with trust auth, or `None` (said loudly; a failure under `CI=true`)
    /// when PostgreSQL's server programs are not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(Auth::Trust)
    }

    pub fn start_with(auth: Auth) -> Option<Self> {
        let Some(bin) = find_server_programs() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PostgreSQL's initdb is not installed (looked in /usr/lib/postgresql/*/bin and PATH): \
                 the PostgreSQL fault tests must run in CI"
            );
            eprintln!("NOTE: initdb not found: this PostgreSQL fault test did NOT run");
            return None;
        };
        let as_postgres_user = is_root();
        let dir = tempfile::Builder::new().prefix("futurnal-pg-").tempdir().unwrap();
        let (data, socket_dir, log) = (dir.path().join("data"), dir.path().join("socket"), dir.path().join("log"));
        std::fs::create_dir(&socket_dir).unwrap();
        if as_postgres_user {
            let (uid, gid) = postgres_ids();
            for path in [dir.path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut server = Self {
            dir: Some(dir),
            data,
            socket_dir,
            log,
            bin,
            port: free_port(),
            auth,
            as_postgres_user,
            running: false,
        };
        let host_auth = match auth {
            Auth::Trust => "trust",
            Auth::Password => "scram-sha-256",
        };
        let mut initdb = server.program("initdb");
        initdb.arg("-D").arg(&server.data).args(["-U", "postgres", "--auth-local=trust"]);
        initdb.arg(format!("--auth-host={host_auth}")).args(["-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb, "initdb");
        // Appended as the file's owner wrote it; only what a test server needs changed.
        // fsync off for speed (nothing here must survive a power cut); synchronous_commit
        // stays at its default, so a commit is still only answered once it is written.
        let settings = format!(
            "\n# futurnal tests\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 60\nshared_buffers = 16MB\n\
             log_min_messages = warning\n",
            server.port,
            server.socket_dir.display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.conf"))
            .unwrap()
            .write_all(settings.as_bytes())
            .unwrap();
        server.start_again();
        if auth == Auth::Password {
            server.superuser_sql(&format!("CREATE ROLE {} LOGIN PASSWORD '{}'", Self::USER, Self::PASSWORD));
            server.superuser_sql(&format!("CREATE DATABASE {} OWNER {}", Self::USER, Self::USER));
        }
        Some(server)
    }

    /// The URL futurnal connects with: the superuser on trust, else `futurnal` with its password.
    pub fn url(&self) -> String {
        match self.auth {
            Auth::Trust => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            Auth::Password => {
                format!("postgres://{}:{}@127.0.0.1:{}/{}", Self::USER, Self::PASSWORD, self.port, Self::USER)
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast: sessions are ended, nothing committed is lost) and waits
    /// until it is down.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Starts the server again on the same port with the same data; returns once it
    /// accepts connections.
    pub fn start_again(&mut self) {
        let mut start = self.program("pg_ctl");
        start.arg("-D").arg(&self.data).arg("-l").arg(&self.log).args(["-w", "-t", "120", "start"]);
        let output = start.output().unwrap();
        assert!(output.status.success(), "pg_ctl start failed: {}\n{}", describe(&output), self.server_log());
        self.running = true;
        // pg_ctl -w waited for it; a connection proves it (deadline, no fixed pause).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = self.program("pg_isready");
            ready.args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()]);
            if ready.status().unwrap().success() {
                break;
            }
            assert!(Instant::now() < deadline, "the private PostgreSQL never accepted connections");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Turns TLS on with this certificate chain and key (PEM files, copied into the
    /// server's directory and owned by its user) and restarts the server.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) {
        let dir = self.dir.as_ref().unwrap().path().to_owned();
        let (server_cert, server_key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::copy(cert, &server_cert).unwrap();
        std::fs::copy(key, &server_key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres_user {
            let (uid, gid) = postgres_ids();
            for path in [&server_cert, &server_key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let settings = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            server_cert.display(),
            server_key.display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap()
            .write_all(settings.as_bytes())
            .unwrap();
        self.restart();
    }

    /// Ends every session of futurnal (`application_name = 'futurnal'`) with
    /// pg_terminate_backend, from a connection of its own; returns how many it ended.
    pub async fn terminate_backends(&self) -> u64 {
        let client = self.superuser_client().await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'futurnal' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) as u64
    }

    /// The superuser over the unix socket (trust whatever the TCP auth).
    pub async fn superuser_client(&self) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&self.socket_dir).port(self.port).user("postgres").dbname("postgres");
        config.application_name("futurnal-test");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs SQL as the superuser with psql over the socket (for setup, outside any runtime).
    fn superuser_sql(&self, sql: &str) {
        let mut psql = self.program("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&self.socket_dir);
        psql.args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql]);
        run(&mut psql, "psql");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let mut stop = self.program("pg_ctl");
        stop.arg("-D").arg(&self.data).args(["-m", mode, "-w", "-t", "120", "stop"]);
        let output = stop.output().unwrap();
        assert!(output.status.success(), "pg_ctl stop failed: {}", describe(&output));
        self.running = false;
    }

    /// One of the server's programs, as the `postgres` user when this is root.
    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let path = if path.exists() { path } else { PathBuf::from(name) };
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Where the postgres user may be; no PG* variable of the caller's leaks in.
        command.current_dir(self.dir.as_ref().map_or(Path::new("/"), |d| d.path()));
        for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGDATA", "PGSSLMODE"] {
            command.env_remove(var);
        }
        command.stdin(Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let mut stop = self.program("pg_ctl");
            stop.arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "-t", "60", "stop"]);
            if let Err(e) = stop.output() {
                eprintln!("WARNING: could not stop the private PostgreSQL: {e}");
            }
            self.running = false;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                eprintln!("WARNING: could not remove {}: {e}", path.display());
            }
        }
    }
}

/// The directory holding initdb and pg_ctl: PostgreSQL's own (newest version first), else
/// wherever PATH finds initdb (through its symlink).
fn find_server_programs() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        let version = p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse().ok());
        std::cmp::Reverse(version.unwrap_or(0u32))
    });
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("initdb")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter_map(|p| p.parent().map(Path::to_owned));
    versions
        .into_iter()
        .filter(|dir| dir.join("initdb").is_file())
        .chain(on_path)
        .find(|dir| dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
        assert!(output.status.success(), "running as root needs a `postgres` system user for initdb");
        String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A port nobody listens on now (the kernel's pick); the server binds it a moment later.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    assert!(output.status.success(), "{what} failed: {}", describe(&output));
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The helper itself: restart() keeps the port and the data, and Drop removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_keeps_its_port_and_data_across_a_restart_and_leaves_nothing() {
    let Some(mut pg) = PrivatePostgres::start() else { return };
    let (url, dir) = (pg.url(), pg.dir.as_ref().unwrap().path().to_owned());
    let connect = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    connect(url.clone()).await.batch_execute("CREATE TABLE kept (n INT); INSERT INTO kept VALUES (7)").await.unwrap();
    pg.restart();
    assert_eq!(pg.url(), url);
    let n: i32 = connect(url.clone()).await.query_one("SELECT n FROM kept", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
    drop(pg);
    assert!(!dir.exists(), "the server's directory is removed");
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "the server is stopped");
}
