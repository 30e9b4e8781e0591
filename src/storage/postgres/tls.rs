//! TLS to PostgreSQL with rustls, with libpq's `sslmode` meanings:
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | | |
//! | `prefer` (the default) | when the server offers it | no | no |
//! | `require` | yes, or no connection | no (yes with `sslrootcert`: as `verify-ca`) | no |
//! | `verify-ca` | yes | against the roots | no |
//! | `verify-full` | yes | against the roots | yes |
//!
//! The roots: the PEM file `sslrootcert` names, or the system's trust store when it is
//! absent or `system` (as libpq's `sslrootcert=system`). tokio-postgres knows only the
//! first three modes and no `sslrootcert`, so those parameters are taken out of the URL
//! here and the rest is left to it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> anyhow::Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!("sslmode '{other}' is not one of disable, prefer, require, verify-ca, verify-full"),
        })
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: Roots,
}

impl TlsSettings {
    /// What tokio-postgres itself is told: whether TLS is tried, and whether it is a must.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The mode in effect: `require` with a root file checks the chain, as libpq does.
    fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.roots) {
            (SslMode::Require, Roots::File(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// The connector for these settings (its roots read now, so a missing file is an
    /// error at start, not at the first connection).
    pub fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.effective_mode() {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(EncryptOnly(provider.clone())),
            mode => {
                let chain = self.chain_verifier(provider.clone())?;
                if mode == SslMode::VerifyCa {
                    Arc::new(IgnoreHostName(chain))
                } else {
                    chain
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup failed")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn chain_verifier(&self, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
        match &self.roots {
            Roots::System => Ok(Arc::new(
                rustls_platform_verifier::Verifier::new(provider)
                    .context("cannot read the system's trusted certificates")?,
            )),
            Roots::File(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| anyhow::anyhow!("cannot read sslrootcert {}: {e}", path.display()))?;
                if certs.is_empty() {
                    bail!("sslrootcert {} holds no PEM certificate", path.display());
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        anyhow::anyhow!("sslrootcert {}: a certificate is not usable: {e}", path.display())
                    })?;
                }
                Ok(WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("TLS setup failed")?)
            }
        }
    }
}

/// Takes libpq's `sslmode` and `sslrootcert` out of a `postgres://` URL: the URL for
/// tokio-postgres, and the TLS settings. Other parameters stay as they are.
pub fn split_url(url: &str) -> anyhow::Result<(String, TlsSettings)> {
    let mut settings = TlsSettings { mode: SslMode::Prefer, roots: Roots::System };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), settings));
    };
    // Pairs other than these two go to the driver exactly as written: libpq URLs are
    // percent-encoded, and a `+` is a plus, not a space as in HTML forms.
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || -> anyhow::Result<String> {
            Ok(percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| anyhow::anyhow!("{key} is not UTF-8"))?
                .into_owned())
        };
        match key {
            "sslmode" => settings.mode = SslMode::parse(&value()?)?,
            "sslrootcert" => {
                let value = value()?;
                settings.roots = if value == "system" { Roots::System } else { Roots::File(PathBuf::from(value)) };
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, settings))
}

/// `prefer` and `require`: encrypted, the server's identity not checked (libpq's
/// meaning). The handshake's signatures are still verified, so the session is with
/// whoever holds the certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate may
/// differ from the host connected to.
#[derive(Debug)]
struct IgnoreHostName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let (url, tls) = split_url("postgres://u:p@h/db").unwrap();
        assert_eq!((url.as_str(), tls.mode, tls.roots), ("postgres://u:p@h/db", SslMode::Prefer, Roots::System));
        let (url, tls) =
            split_url("postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem").unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!((tls.mode, tls.roots), (SslMode::VerifyFull, Roots::File("/tmp/ca.pem".into())));
        let (url, tls) = split_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!((url.as_str(), tls.driver_mode()), ("postgres://u@h/db", tokio_postgres::config::SslMode::Require));
        assert_eq!(tls.effective_mode(), SslMode::Require);
        let (_, tls) = split_url("postgres://u@h/db?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(tls.effective_mode(), SslMode::VerifyCa, "require with a root file checks the chain, as libpq");
        let (_, tls) = split_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(tls.driver_mode(), tokio_postgres::config::SslMode::Disable);
        // The other pairs reach the driver as written: `%20` and a literal `+` stay what they are.
        let (url, _) = split_url("postgres://u@h/db?options=-c%20a%3Db+c&sslmode=disable&password=p%2Bq").unwrap();
        assert_eq!(url, "postgres://u@h/db?options=-c%20a%3Db+c&password=p%2Bq");
        let e = split_url("postgres://u@h/db?sslmode=always").unwrap_err().to_string();
        assert!(e.contains("'always'") && e.contains("verify-full"), "{e}");
    }

    #[test]
    fn a_root_file_that_cannot_be_used_is_an_error_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsSettings { mode: SslMode::VerifyFull, roots: Roots::File(dir.path().join("nope.pem")) };
        let e = missing.connector().err().unwrap().to_string();
        assert!(e.contains("cannot read sslrootcert") && e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsSettings { mode: SslMode::VerifyCa, roots: Roots::File(empty) }.connector().err().unwrap();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        // Without verification no roots are read at all.
        let encrypt_only = TlsSettings { mode: SslMode::Require, roots: Roots::System };
        assert!(encrypt_only.connector().is_ok());
    }
}
