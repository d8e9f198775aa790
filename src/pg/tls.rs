//! TLS for PostgreSQL connections, following libpq's `sslmode` semantics.
//!
//! [`connector`] turns an [`SslMode`] and an optional `sslrootcert` file into a rustls-based
//! connector for tokio-postgres / bb8-postgres plus the tokio-postgres `SslMode` to set on the
//! `Config`. Certificate checking is done by [`PgVerifier`], which reproduces what libpq does for
//! each mode: no verification, chain only, or chain plus host name (including libpq's fallback to
//! the subject Common Name when the certificate has no matching subjectAltName). The ring crypto
//! provider is always used explicitly, so nothing depends on a process-wide default provider.
//!
//! Known differences from libpq: libpq's default root file `~/.postgresql/root.crt` is not
//! consulted (pass it explicitly), and with `prefer` a failed TLS handshake is an error rather
//! than a retry in plaintext (tokio-postgres does not retry).

use std::fmt;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

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

/// Errors building a TLS connector. None of them contain key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The `sslrootcert` file could not be opened or read.
    #[error("cannot read sslrootcert file {}: {source}; check the path and that drover may read it", path.display())]
    RootCertRead {
        /// File that was configured.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The `sslrootcert` file is not valid PEM.
    #[error("sslrootcert file {} is not valid PEM: {source}; it must hold one or more `-----BEGIN CERTIFICATE-----` blocks", path.display())]
    RootCertPem {
        /// File that was configured.
        path: PathBuf,
        /// Parse error.
        source: std::io::Error,
    },
    /// The `sslrootcert` file holds no certificate at all.
    #[error("sslrootcert file {} contains no PEM certificate; it must hold one or more `-----BEGIN CERTIFICATE-----` blocks (DER files must be converted with `openssl x509 -inform der`)", path.display())]
    RootCertEmpty {
        /// File that was configured.
        path: PathBuf,
    },
    /// None of the certificates in `sslrootcert` is usable as a trust anchor.
    #[error("none of the {count} certificates in sslrootcert file {} is a usable CA certificate; check that it is the CA bundle and not the server certificate or key", path.display())]
    RootCertUnusable {
        /// File that was configured.
        path: PathBuf,
        /// How many certificates were found.
        count: usize,
    },
    /// rustls rejected the client configuration (should not happen with the ring provider).
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Returns the connector to hand to tokio-postgres / bb8-postgres and the
/// `tokio_postgres::config::SslMode` to set on the `Config`.
///
/// `rootcert` is libpq's `sslrootcert`: a PEM bundle (may hold many certificates, e.g. the
/// Amazon RDS global bundle). It is ignored for `disable`; with `prefer` or `require` it turns on
/// chain verification like libpq. For `verify-ca` and `verify-full` without `rootcert`, the
/// Mozilla root set from `webpki-roots` is trusted instead (libpq would fail), which suits
/// servers with publicly trusted certificates.
///
/// A connector is returned even for `disable`, so a single pool type serves every mode.
pub fn connector(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<(MakeRustlsConnect, PgSslMode), TlsError> {
    let roots = match (mode, rootcert) {
        (SslMode::Disable, _) => None,
        (_, Some(path)) => Some(load_roots(path)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        (SslMode::Prefer | SslMode::Require, None) => None,
    };
    let pg_mode = match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PgVerifier {
        roots: roots.map(Arc::new),
        check_name: mode == SslMode::VerifyFull,
        algs: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What libpq 17 sends; required by PostgreSQL 17 direct TLS, ignored by older servers.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((MakeRustlsConnect::new(config), pg_mode))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::RootCertRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| {
            // A read error mid-file is an I/O problem, anything else is bad PEM.
            if source.kind() == std::io::ErrorKind::InvalidData {
                TlsError::RootCertPem {
                    path: path.to_owned(),
                    source,
                }
            } else {
                TlsError::RootCertRead {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let count = certs.len();
    if count == 0 {
        return Err(TlsError::RootCertEmpty {
            path: path.to_owned(),
        });
    }
    let mut store = RootCertStore::empty();
    // Lenient like OpenSSL: big vendor bundles may carry an entry webpki cannot parse.
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::RootCertUnusable {
            path: path.to_owned(),
            count,
        });
    }
    if ignored > 0 {
        tracing::warn!(
            file = %path.display(),
            ignored,
            added,
            "some certificates in sslrootcert could not be parsed and are not trusted"
        );
    }
    Ok(store)
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

/// Just enough DER reading to get the subject CN and SAN entries of a certificate that
/// webpki has already parsed and chain-verified (webpki does not expose them).
mod der {
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    #[derive(Default)]
    pub(super) struct CertNames<'a> {
        pub common_name: Option<&'a [u8]>,
        pub dns: Vec<&'a [u8]>,
        pub ips: Vec<&'a [u8]>,
    }

    /// Splits one TLV off the front: (tag, content, rest).
    fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&len0, rest) = rest.split_first()?;
        let (len, rest) = if len0 < 0x80 {
            (usize::from(len0), rest)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// Iterates over the TLVs of a constructed value's content.
    fn items(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            let (tag, content, rest) = next(input)?;
            input = rest;
            Some((tag, content))
        })
    }

    pub(super) fn cert_names(cert: &[u8]) -> Option<CertNames<'_>> {
        let (_, cert, _) = next(cert)?;
        let (_, mut tbs, _) = next(cert)?;
        // Optional [0] version, then serial, signature, issuer, validity.
        if tbs.first() == Some(&0xa0) {
            tbs = next(tbs)?.2;
        }
        for _ in 0..4 {
            tbs = next(tbs)?.2;
        }
        let (_, subject, rest) = next(tbs)?;
        let rest = next(rest)?.2; // subjectPublicKeyInfo
        let mut names = CertNames {
            // OpenSSL's X509_NAME_get_index_by_NID(.., -1) picks the first CN.
            common_name: items(subject)
                .flat_map(|(_, rdn)| items(rdn))
                .find_map(|(_, atv)| {
                    let mut it = items(atv);
                    let (_, oid) = it.next()?;
                    let (_, value) = it.next()?;
                    (oid == OID_COMMON_NAME).then_some(value)
                }),
            ..CertNames::default()
        };
        let Some((_, exts)) = items(rest).find(|&(tag, _)| tag == 0xa3) else {
            return Some(names);
        };
        let (_, exts, _) = next(exts)?;
        for (_, ext) in items(exts) {
            let mut fields = items(ext);
            if fields.next() != Some((0x06, OID_SUBJECT_ALT_NAME)) {
                continue;
            }
            // Skip the optional `critical` BOOLEAN; the value is the OCTET STRING.
            let Some((_, value)) = fields.find(|&(tag, _)| tag == 0x04) else {
                continue;
            };
            let (_, general_names, _) = next(value)?;
            for (tag, name) in items(general_names) {
                match tag {
                    0x82 => names.dns.push(name), // [2] dNSName
                    0x87 => names.ips.push(name), // [7] iPAddress
                    _ => {}
                }
            }
        }
        Some(names)
    }
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

    #[test]
    fn pg_modes() {
        let pg = |m| connector(m, None).unwrap().1;
        assert_eq!(pg(SslMode::Disable), PgSslMode::Disable);
        assert_eq!(pg(SslMode::Prefer), PgSslMode::Prefer);
        assert_eq!(pg(SslMode::Require), PgSslMode::Require);
        assert_eq!(pg(SslMode::VerifyCa), PgSslMode::Require);
        assert_eq!(pg(SslMode::VerifyFull), PgSslMode::Require);
    }

    fn connector_err(mode: SslMode, rootcert: &Path) -> TlsError {
        match connector(mode, Some(rootcert)) {
            Ok(_) => panic!("connector accepted {}", rootcert.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn rootcert_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = connector_err(SslMode::VerifyCa, &missing);
        assert!(matches!(err, TlsError::RootCertRead { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector_err(SslMode::VerifyFull, &empty);
        assert!(matches!(err, TlsError::RootCertEmpty { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.crt"), "{err}");

        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();
        let err = connector_err(SslMode::Require, &bad);
        assert!(matches!(err, TlsError::RootCertPem { .. }), "{err:?}");

        let junk = dir.path().join("junk.crt");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = connector_err(SslMode::VerifyCa, &junk);
        assert!(
            matches!(err, TlsError::RootCertUnusable { count: 1, .. }),
            "{err:?}"
        );

        // disable never reads the file, like libpq.
        assert!(connector(SslMode::Disable, Some(&missing)).is_ok());
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
