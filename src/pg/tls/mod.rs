//! TLS for PostgreSQL connections, following libpq's `sslmode` semantics.
//!
//! [`connector`] turns a database's [`TlsOptions`] (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`) into a rustls-based connector for tokio-postgres / bb8-postgres plus the tokio-postgres `SslMode` to set on the
//! `Config`. Certificate checking is done by [`PgVerifier`], which reproduces what libpq does for
//! each mode: no verification, chain only, or chain plus host name (including libpq's fallback to
//! the subject Common Name when the certificate has no matching subjectAltName). The ring crypto
//! provider is always used explicitly, so nothing depends on a process-wide default provider.
//!
//! Files are looked up as libpq does (see [`files`]). Known differences from libpq: an
//! explicitly configured `sslrootcert` or `sslcert` that does not exist is an error in every
//! mode (libpq silently skips it with `prefer`/`require`), encrypted keys (`sslpassword`) are
//! not supported, and with `prefer` a failed TLS handshake is an error rather than a retry in
//! plaintext (tokio-postgres does not retry).

mod der;
mod error;
mod files;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use error::TlsError;

/// libpq `sslmode`, as written in configuration files (`verify-full`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, otherwise plaintext; no verification unless a root
    /// certificate is given (then the chain is verified, as libpq does).
    #[default]
    Prefer,
    /// TLS mandatory; no verification unless a root certificate is given (then like `verify-ca`).
    Require,
    /// TLS mandatory; the certificate chain must lead to a trusted root, host name not checked.
    VerifyCa,
    /// TLS mandatory; chain verified and the certificate must be valid for the host name or IP.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling of the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// libpq `channel_binding`: whether SCRAM authentication must bind to the TLS channel
/// (`SCRAM-SHA-256-PLUS`), which proves no one in the middle terminated TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the server offers it (libpq's default).
    #[default]
    Prefer,
    /// Fail unless the server authenticated with channel binding (needs TLS and SCRAM).
    Require,
}

impl ChannelBinding {
    /// The libpq spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }

    /// The tokio-postgres setting.
    pub fn to_pg(self) -> tokio_postgres::config::ChannelBinding {
        use tokio_postgres::config::ChannelBinding as Pg;
        match self {
            ChannelBinding::Disable => Pg::Disable,
            ChannelBinding::Prefer => Pg::Prefer,
            ChannelBinding::Require => Pg::Require,
        }
    }
}

/// libpq `sslrootcert`: where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM bundle file (may hold many certificates, e.g. the Amazon RDS global bundle).
    File(PathBuf),
    /// `system`: the operating system's trust store, found as OpenSSL finds it
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured). Only with `verify-full`.
    System,
}

impl RootCert {
    /// libpq's reading of an `sslrootcert` value: the word `system`, else a file name.
    pub fn parse(value: &str) -> RootCert {
        match value {
            "system" => RootCert::System,
            path => RootCert::File(PathBuf::from(path)),
        }
    }
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(path) => write!(f, "{}", path.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// The TLS settings of one database (libpq `sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`; `None` means libpq's default file `<default_dir>/root.crt` if it exists.
    pub rootcert: Option<RootCert>,
    /// `sslcert`; `None` means `<default_dir>/postgresql.crt` if it exists.
    pub cert: Option<PathBuf>,
    /// `sslkey`; `None` means `<default_dir>/postgresql.key`.
    pub key: Option<PathBuf>,
    /// Where libpq's default files live: `$HOME/.postgresql`.
    pub default_dir: Option<PathBuf>,
}

impl TlsOptions {
    /// `mode` with every file at libpq's default.
    pub fn new(mode: SslMode) -> TlsOptions {
        TlsOptions {
            mode,
            rootcert: None,
            cert: None,
            key: None,
            default_dir: files::default_dir(),
        }
    }
}

/// Returns the connector to hand to tokio-postgres / bb8-postgres and the
/// `tokio_postgres::config::SslMode` to set on the `Config`.
///
/// Roots follow libpq: `sslrootcert`, else `~/.postgresql/root.crt` when it exists. With roots,
/// every mode but `disable` verifies the chain (libpq's documented quirk: `prefer` and
/// `require` then behave like `verify-ca`); without, `prefer` / `require` encrypt without
/// verifying and `verify-ca` / `verify-full` are refused. No compiled-in CA list is trusted.
/// The client certificate is presented when the server asks for one.
///
/// A connector is returned even for `disable`, so a single pool type serves every mode.
pub fn connector(opts: &TlsOptions) -> Result<(MakeRustlsConnect, PgSslMode), TlsError> {
    let pg_mode = match opts.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PgVerifier {
        roots: roots(opts)?.map(Arc::new),
        check_name: opts.mode == SslMode::VerifyFull,
        algs: provider.signature_verification_algorithms,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let identity = match opts.mode {
        SslMode::Disable => None,
        _ => files::client_identity(
            opts.cert.as_deref(),
            opts.key.as_deref(),
            opts.default_dir.as_deref(),
        )?,
    };
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|source| TlsError::ClientIdentity {
                cert: id.cert_path,
                key: id.key_path,
                source,
            })?,
    };
    // What libpq 17 sends; required by PostgreSQL 17 direct TLS, ignored by older servers.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((MakeRustlsConnect::new(config), pg_mode))
}

/// The roots to verify the server against, or `None` for no verification.
fn roots(opts: &TlsOptions) -> Result<Option<RootCertStore>, TlsError> {
    let verify = matches!(opts.mode, SslMode::VerifyCa | SslMode::VerifyFull);
    match (&opts.rootcert, opts.mode) {
        (_, SslMode::Disable) => Ok(None),
        (Some(RootCert::System), SslMode::VerifyFull) => files::system_roots().map(Some),
        (Some(RootCert::System), mode) => Err(TlsError::SystemNeedsVerifyFull { mode }),
        (Some(RootCert::File(path)), _) => files::load_roots(path).map(Some),
        (None, mode) => {
            let default = opts.default_dir.as_ref().map(|d| d.join("root.crt"));
            match &default {
                Some(path) if path.exists() => files::load_roots(path).map(Some),
                _ if verify => Err(TlsError::RootCertMissing { mode, default }),
                _ => Ok(None),
            }
        }
    }
}

/// Server certificate check for all modes: `roots == None` accepts any certificate (libpq
/// `prefer`/`require` without root cert); otherwise the chain must verify, and with
/// `check_name` the host name too. Handshake signatures are always checked, so the peer must
/// still own the key of the certificate it presents.
struct PgVerifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PgVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgVerifier")
            .field("verify_chain", &self.roots.is_some())
            .field("check_name", &self.check_name)
            .finish()
    }
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if !self.check_name {
            return Ok(ServerCertVerified::assertion());
        }
        match rustls::client::verify_server_name(&cert, server_name) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if libpq_name_fallback(end_entity, server_name) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The name matches libpq accepts beyond what webpki checks (chain already verified):
/// a dNSName SAN equal to an IP host written as text, and the subject Common Name when the
/// certificate has no SAN of the host's kind (DNS or IP), as PostgreSQL 15's libpq does.
fn libpq_name_fallback(end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
    let (host, host_is_ip) = match server_name {
        ServerName::DnsName(name) => (name.as_ref().to_owned(), false),
        ServerName::IpAddress(ip) => (IpAddr::from(*ip).to_string(), true),
        _ => return false,
    };
    let Some(names) = der::cert_names(end_entity.as_ref()) else {
        return false;
    };
    if host_is_ip && names.dns.iter().any(|n| libpq_name_matches(n, &host)) {
        return true;
    }
    let has_same_kind_san = if host_is_ip {
        !names.ips.is_empty()
    } else {
        !names.dns.is_empty()
    };
    !has_same_kind_san
        && names
            .common_name
            .is_some_and(|cn| libpq_name_matches(cn, &host))
}

/// libpq's comparison: case-insensitive equality, or a leading `*.` matching one label.
fn libpq_name_matches(pattern: &[u8], host: &str) -> bool {
    let host = host.as_bytes();
    // Embedded NULs are rejected by libpq (CVE-2009-4034).
    if pattern.contains(&0) {
        return false;
    }
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    if pattern.len() < 3 || !pattern.starts_with(b"*.") || pattern.len() > host.len() {
        return false;
    }
    let split = host.len() - (pattern.len() - 1);
    host[split..].eq_ignore_ascii_case(&pattern[1..]) && !host[..split].contains(&b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_libpq_spelling() {
        for (mode, s) in [
            (SslMode::Disable, "disable"),
            (SslMode::Prefer, "prefer"),
            (SslMode::Require, "require"),
            (SslMode::VerifyCa, "verify-ca"),
            (SslMode::VerifyFull, "verify-full"),
        ] {
            assert_eq!(mode.as_str(), s);
            let parsed: SslMode = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(parsed, mode);
        }
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    /// Options whose default directory is an empty temporary one.
    fn opts(mode: SslMode, dir: &tempfile::TempDir) -> TlsOptions {
        TlsOptions {
            default_dir: Some(dir.path().to_owned()),
            ..TlsOptions::new(mode)
        }
    }

    #[test]
    fn pg_modes() {
        let dir = tempfile::tempdir().unwrap();
        let pg = |m| connector(&opts(m, &dir)).unwrap().1;
        assert_eq!(pg(SslMode::Disable), PgSslMode::Disable);
        assert_eq!(pg(SslMode::Prefer), PgSslMode::Prefer);
        assert_eq!(pg(SslMode::Require), PgSslMode::Require);
    }

    fn connector_err(opts: &TlsOptions) -> TlsError {
        match connector(opts) {
            Ok(_) => panic!("connector accepted {opts:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn verify_modes_without_any_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = connector_err(&opts(mode, &dir));
            assert!(matches!(err, TlsError::RootCertMissing { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("root.crt") && msg.contains("sslrootcert"),
                "{msg}"
            );
        }
        let mut no_home = opts(SslMode::VerifyCa, &dir);
        no_home.default_dir = None;
        assert!(matches!(
            connector_err(&no_home),
            TlsError::RootCertMissing { default: None, .. }
        ));
    }

    #[test]
    fn system_roots_need_verify_full() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [SslMode::Prefer, SslMode::Require, SslMode::VerifyCa] {
            let mut o = opts(mode, &dir);
            o.rootcert = Some(RootCert::System);
            let err = connector_err(&o);
            assert!(
                matches!(err, TlsError::SystemNeedsVerifyFull { .. }),
                "{err:?}"
            );
        }
        assert_eq!(RootCert::parse("system"), RootCert::System);
        assert_eq!(
            RootCert::parse("/etc/ca.pem"),
            RootCert::File("/etc/ca.pem".into())
        );
    }

    #[test]
    fn rootcert_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let with_root = |mode, path: &std::path::Path| TlsOptions {
            rootcert: Some(RootCert::File(path.to_owned())),
            ..opts(mode, &dir)
        };
        let missing = dir.path().join("missing.crt");
        let err = connector_err(&with_root(SslMode::VerifyCa, &missing));
        assert!(matches!(err, TlsError::RootCertRead { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector_err(&with_root(SslMode::VerifyFull, &empty));
        assert!(matches!(err, TlsError::RootCertEmpty { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.crt"), "{err}");

        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();
        let err = connector_err(&with_root(SslMode::Require, &bad));
        assert!(matches!(err, TlsError::RootCertPem { .. }), "{err:?}");

        let junk = dir.path().join("junk.crt");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = connector_err(&with_root(SslMode::VerifyCa, &junk));
        assert!(
            matches!(err, TlsError::RootCertUnusable { count: 1, .. }),
            "{err:?}"
        );

        // disable never reads the file, like libpq.
        assert!(connector(&with_root(SslMode::Disable, &missing)).is_ok());
    }

    #[test]
    fn libpq_wildcards() {
        assert!(libpq_name_matches(b"db.example.com", "DB.Example.com"));
        assert!(libpq_name_matches(b"*.example.com", "db.example.com"));
        assert!(!libpq_name_matches(b"*.example.com", "a.db.example.com"));
        assert!(!libpq_name_matches(b"*.example.com", "example.com"));
        assert!(!libpq_name_matches(b"*.example.com", ".example.com"));
        assert!(!libpq_name_matches(b"db*.example.com", "db1.example.com"));
        assert!(!libpq_name_matches(
            b"db.example.com\0.evil",
            "db.example.com"
        ));
        assert!(libpq_name_matches(b"127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn der_reader_rejects_truncated_input() {
        assert_eq!(der::cert_names(&[]).map(|_| ()), None);
        assert_eq!(der::cert_names(&[0x30, 0x82, 0xff]).map(|_| ()), None);
    }
}
