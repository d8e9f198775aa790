//! Errors building a TLS connector. Each names the file or setting and says how to fix it;
//! none contains key material or passwords. The caller adds the database's name.

use std::path::PathBuf;

use super::SslMode;

/// Errors building a TLS connector.
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
    #[error("sslrootcert file {} is not valid PEM: {reason}; it must hold one or more `-----BEGIN CERTIFICATE-----` blocks", path.display())]
    RootCertPem {
        /// File that was configured.
        path: PathBuf,
        /// What is wrong, without the file's bytes.
        reason: String,
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
    /// `verify-ca` / `verify-full` with no root certificate at all (libpq refuses too).
    #[error("sslmode {} needs a trusted root certificate, but sslrootcert is not set and {} does not exist; set sslrootcert to the CA file (or to \"system\" with sslmode verify-full to trust the operating system's store), or use sslmode require to encrypt without verifying the server", mode.as_str(), default.as_deref().map_or_else(|| "~/.postgresql/root.crt (no HOME)".into(), |p| p.display().to_string()))]
    RootCertMissing {
        /// The configured mode.
        mode: SslMode,
        /// The default root file that was looked for.
        default: Option<PathBuf>,
    },
    /// `sslrootcert = system` with a mode weaker than `verify-full` (refused as by libpq 16).
    #[error("sslrootcert \"system\" trusts every public CA, so it needs sslmode verify-full (not {}), otherwise any publicly valid certificate for any host would be accepted", mode.as_str())]
    SystemNeedsVerifyFull {
        /// The configured mode.
        mode: SslMode,
    },
    /// The operating system's trust store could not be loaded.
    #[error("sslrootcert \"system\": cannot load the operating system's trusted root certificates: {reason}; install the CA certificates package, point SSL_CERT_FILE / SSL_CERT_DIR at them, or set sslrootcert to a CA file")]
    SystemRoots {
        /// What went wrong.
        reason: String,
    },
    /// The client certificate file could not be read.
    #[error("cannot read sslcert file {}: {source}; check the path and that drover may read it", path.display())]
    ClientCertRead {
        /// File that was configured or found.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The client certificate file holds no usable PEM certificate.
    #[error("sslcert file {} is not a PEM certificate: {reason}", path.display())]
    ClientCertPem {
        /// File that was configured or found.
        path: PathBuf,
        /// What is wrong, without the file's bytes.
        reason: String,
    },
    /// A client certificate without its key.
    #[error("client certificate {} is present but its private key {} does not exist; set sslkey to the key file", cert.display(), key.display())]
    ClientKeyMissing {
        /// The certificate.
        cert: PathBuf,
        /// The key file that was looked for.
        key: PathBuf,
    },
    /// The client key file could not be read.
    #[error("cannot read sslkey file {}: {source}; check the path and that drover may read it", path.display())]
    ClientKeyRead {
        /// The key file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The client key file is not a plain file.
    #[error("sslkey {} is not a regular file", path.display())]
    ClientKeyNotFile {
        /// The key file.
        path: PathBuf,
    },
    /// The client key file is readable by others (libpq's rule).
    #[error("private key file {} has group or world access (mode {mode:04o}); it must be u=rw (0600) or less if owned by drover's user, or u=rw,g=r (0640) or less if owned by root: chmod 0600 it", path.display())]
    ClientKeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The client key file holds no usable key.
    #[error("sslkey file {} holds no usable private key: {reason}", path.display())]
    ClientKeyPem {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without the file's bytes.
        reason: String,
    },
    /// rustls refused the certificate and key (mismatched pair or unsupported key type).
    #[error("cannot use client certificate {} with key {}: {source}; check that the key belongs to the certificate and is RSA, ECDSA P-256/P-384 or Ed25519", cert.display(), key.display())]
    ClientIdentity {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls rejected the client configuration (should not happen with the ring provider).
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}
