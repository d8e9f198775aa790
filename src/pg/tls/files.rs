//! The files libpq reads for TLS, read the way libpq reads them: the trusted roots
//! (`sslrootcert`, else `~/.postgresql/root.crt`, or `system` for the operating system's store)
//! and the client certificate and key (`sslcert` / `sslkey`, else `~/.postgresql/postgresql.crt`
//! and `.key`). PEM is parsed with rustls-pki-types; key material never reaches an error text.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::TlsError;

/// libpq's per-user directory, `$HOME/.postgresql` (None without a home directory).
pub(super) fn default_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join(".postgresql"))
}

/// The roots in a PEM bundle (which may hold many certificates, e.g. the Amazon RDS bundle).
pub(super) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::RootCertRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::RootCertPem {
            path: path.to_owned(),
            reason: pem_reason(&e),
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

/// The operating system's trust store (`sslrootcert = system`), found as OpenSSL finds it,
/// so `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured.
pub(super) fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(first) = found.errors.first() {
        tracing::warn!(error = %first, errors = found.errors.len(), "some system root certificates could not be loaded");
    }
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let reason = match found.errors.first() {
            Some(e) => e.to_string(),
            None => "the store is empty".to_owned(),
        };
        return Err(TlsError::SystemRoots { reason });
    }
    Ok(store)
}

/// A client certificate chain and its private key, with the files they came from.
pub(super) struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The client certificate to present, as libpq picks it: `cert` if configured (it must
/// exist), else `default_dir/postgresql.crt` if that exists, else none. With a certificate,
/// the key is `key` or `default_dir/postgresql.key` and must exist and be private.
pub(super) fn client_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    default_dir: Option<&Path>,
) -> Result<Option<Identity>, TlsError> {
    let cert_path = match (cert, default_dir) {
        (Some(path), _) => path.to_owned(),
        (None, Some(dir)) if dir.join("postgresql.crt").exists() => dir.join("postgresql.crt"),
        (None, _) => return Ok(None),
    };
    let key_path = match (key, default_dir) {
        (Some(path), _) => path.to_owned(),
        (None, Some(dir)) => dir.join("postgresql.key"),
        (None, None) => {
            return Err(TlsError::ClientKeyMissing {
                cert: cert_path,
                key: PathBuf::from("~/.postgresql/postgresql.key"),
            })
        }
    };
    Ok(Some(Identity {
        chain: client_chain(&cert_path)?,
        key: client_key(&cert_path, &key_path)?,
        cert_path,
        key_path,
    }))
}

fn client_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::ClientCertRead {
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_reason(&e));
    match chain {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        Ok(_) => Err(TlsError::ClientCertPem {
            path: path.to_owned(),
            reason: "no `-----BEGIN CERTIFICATE-----` block".to_owned(),
        }),
        Err(reason) => Err(TlsError::ClientCertPem {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Reads the key through one open handle, so the permissions checked are those of the file
/// actually read.
fn client_key(cert: &Path, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read_err = |source| TlsError::ClientKeyRead {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TlsError::ClientKeyMissing {
                cert: cert.to_owned(),
                key: path.to_owned(),
            })
        }
        Err(e) => return Err(read_err(e)),
    };
    check_key_file(&file, path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::ClientKeyPem {
        path: path.to_owned(),
        reason: match e {
            pem::Error::NoItemsFound => "no unencrypted `-----BEGIN ... PRIVATE KEY-----` block \
                 (encrypted keys are not supported: decrypt it with `openssl pkey`)"
                .to_owned(),
            e => pem_reason(&e),
        },
    })
}

/// libpq's rule: a plain file; owned by the current user with no group/other access
/// (0600 or stricter), or owned by root and at most group-readable (0640).
fn check_key_file(file: &File, path: &Path) -> Result<(), TlsError> {
    let meta = file.metadata().map_err(|source| TlsError::ClientKeyRead {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(TlsError::ClientKeyNotFile {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        let too_open = if meta.uid() == 0 {
            mode & 0o037 != 0
        } else {
            mode & 0o077 != 0
        };
        if too_open {
            return Err(TlsError::ClientKeyPermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// A PEM error without the bytes it quotes (they could be key material).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        pem::Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_permissions_follow_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, "x").unwrap();
        // Tests run as root in CI: root-owned keys may be group-readable, not more.
        let root = std::fs::metadata(&path).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
        let root = root.unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, root),
            (0o660, false),
            (0o644, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let file = File::open(&path).unwrap();
            let res = check_key_file(&file, &path);
            assert_eq!(res.is_ok(), ok, "mode {mode:o}: {res:?}");
            if let Err(e) = res {
                assert!(e.to_string().contains("k.key"), "{e}");
            }
        }
    }

    #[test]
    fn missing_default_cert_means_no_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        assert!(client_identity(None, None, Some(dir.path()))
            .unwrap()
            .is_none());
        assert!(client_identity(None, None, None).unwrap().is_none());
        // An explicit certificate must exist.
        let err = client_identity(Some(&dir.path().join("c.crt")), None, Some(dir.path())).err();
        assert!(
            matches!(err, Some(TlsError::ClientCertRead { .. })),
            "{err:?}"
        );
    }
}
