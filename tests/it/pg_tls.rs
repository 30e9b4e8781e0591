//! TLS to PostgreSQL, against a private server with a certificate for `localhost` signed
//! by a CA of the test's own (made with the `openssl` command): every `sslmode` does what
//! libpq's does, the session is encrypted when it should be (the server's `pg_stat_ssl`
//! says so), and a certificate that must not be trusted is one clear line, exit 1.

use std::path::Path;
use std::process::Command;

use futurnal::config::DatabaseUrl;
use futurnal::storage::backend::{Backend, Purpose};

use crate::helpers::*;
use crate::pg_server::PrivatePostgres;

/// A CA and a server certificate it signed, for the DNS name `localhost` only.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl runs");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        for ca in ["ca", "other-ca"] {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=futurnal test {ca}"),
                ]
                .into_iter()
                .chain(["-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem")])
                .collect::<Vec<_>>(),
            );
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.path().join("ext.cnf"), "subjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth\n")
            .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn openssl_installed() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but the openssl command is not installed");
        eprintln!("NOTE: openssl not found: the PostgreSQL TLS test did NOT run");
    }
    found
}

fn url(server: &PrivatePostgres, host: &str, params: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{params}", server.port())
}

/// Opens the backend the way `serve` does and returns whether its session is encrypted,
/// as the server sees it (the session is found by its application name).
async fn session_encrypted(server: &PrivatePostgres, dir: &Path, url: String, probe: &str) -> anyhow::Result<bool> {
    let mut config = sqlite_config_for(dir, "");
    config.database = DatabaseUrl::Postgres(format!("{url}&application_name={probe}"));
    let backend = Backend::open(&config, Purpose::Command).await?;
    let row = server
        .superuser_client()
        .await
        .query_one(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&probe],
        )
        .await
        .unwrap();
    backend.close();
    assert!(row.get::<_, i64>(1) >= 1, "the backend holds a session named {probe}");
    Ok(row.get::<_, bool>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_does_what_libpq_does_and_an_untrusted_certificate_is_one_clear_line() {
    futurnal::install_tls_provider();
    if !openssl_installed() {
        return;
    }
    let Some(mut server) = PrivatePostgres::start() else { return };
    let certs = Certificates::make();
    server.enable_tls(Path::new(&certs.path("server.pem")), Path::new(&certs.path("server.key")));
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (certs.path("ca.pem"), certs.path("other-ca.pem"));

    let encrypted = |host: &str, params: String, probe: &str| {
        let (url, probe) = (url(&server, host, &params), probe.to_owned());
        let dir = dir.path().to_owned();
        let server = &server;
        async move { session_encrypted(server, &dir, url, &probe).await }
    };
    // The default (prefer) uses TLS when the server offers it; disable never does.
    assert!(encrypted("127.0.0.1", "connect_timeout=5".into(), "tls_default").await.unwrap());
    assert!(!encrypted("127.0.0.1", "sslmode=disable".into(), "tls_disable").await.unwrap());
    // require: encrypted, identity unchecked (libpq's meaning).
    assert!(encrypted("127.0.0.1", "sslmode=require".into(), "tls_require").await.unwrap());
    // verify-full: the chain and the name; verify-ca: the chain only.
    assert!(encrypted("localhost", format!("sslmode=verify-full&sslrootcert={ca}"), "tls_full").await.unwrap());
    assert!(encrypted("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}"), "tls_ca").await.unwrap());
    let wrong_name = encrypted("127.0.0.1", format!("sslmode=verify-full&sslrootcert={ca}"), "tls_name").await;
    let e = format!("{:#}", wrong_name.unwrap_err());
    assert!(e.contains("not valid for name") && e.contains("127.0.0.1"), "{e}");
    // A chain to another CA: refused in both verifying modes, and in require with a root
    // file (libpq: require with sslrootcert checks the chain).
    for mode in ["verify-full", "verify-ca", "require"] {
        let untrusted = encrypted("localhost", format!("sslmode={mode}&sslrootcert={other_ca}"), "tls_other").await;
        let e = format!("{:#}", untrusted.unwrap_err());
        assert!(e.contains("invalid peer certificate") && e.contains("UnknownIssuer"), "{mode}: {e}");
    }

    // What a user sees: one line, exit 1, for serve and for a command.
    let bad = format!(
        "postgres://postgres:pw-77a1@localhost:{}/postgres?sslmode=verify-full&sslrootcert={other_ca}",
        server.port()
    );
    for args in
        [vec!["sources", "github", "list"], vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]]
    {
        let output =
            bin().arg("--data-dir").arg(dir.path()).arg("--database-url").arg(&bad).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
        assert!(
            lines[0].contains("cannot connect to PostgreSQL") && lines[0].contains("invalid peer certificate"),
            "{stderr}"
        );
        assert!(!stderr.contains("pw-77a1") && !String::from_utf8_lossy(&output.stdout).contains("pw-77a1"));
    }
}
