//! Integration tests for `drover::pg::tls::connector` against real PostgreSQL 15 servers: each
//! sslmode with explicit roots, libpq's default `~/.postgresql/root.crt`, the system store
//! (`sslrootcert = system`) and no root at all.
//!
//! Certificates (see `tls_support`): a throwaway CA, a server certificate for `localhost` with
//! SANs `DNS:localhost, IP:127.0.0.1`, a second server certificate with only `CN=db.example` (no
//! SAN, exercising libpq's Common Name fallback and a name mismatch), and an unrelated CA.

mod tls_support;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use drover::pg::tls::{connector, RootCert, SslMode, TlsOptions};
use tls_support::*;

/// Connects through `drover::pg::tls::connector` and returns `pg_stat_ssl.ssl` for the session,
/// or the full error chain as text.
async fn connect(
    cluster: &Cluster,
    host: &str,
    hostaddr: Option<IpAddr>,
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<bool, String> {
    // An empty default directory, so files in the real ~/.postgresql never interfere.
    let home = tempfile::tempdir().unwrap();
    let opts = TlsOptions {
        rootcert: rootcert.map(|p| RootCert::File(p.to_owned())),
        default_dir: Some(home.path().to_owned()),
        ..TlsOptions::new(mode)
    };
    connect_with(cluster, host, hostaddr, &opts).await
}

/// [`connect`] with every TLS option given.
async fn connect_with(
    cluster: &Cluster,
    host: &str,
    hostaddr: Option<IpAddr>,
    opts: &TlsOptions,
) -> Result<bool, String> {
    let (tls, pg_mode) = connector(opts).map_err(|e| e.to_string())?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(pg_mode)
        .connect_timeout(Duration::from_secs(20));
    if let Some(addr) = hostaddr {
        config.hostaddr(addr);
    }
    let (client, connection) = config.connect(tls).await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    })?;
    let task = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    task.await.unwrap().map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn verify_full_localhost_with_ca() {
    let pg = ssl_cluster();
    let ssl = connect(
        &pg,
        "localhost",
        None,
        SslMode::VerifyFull,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn verify_full_ip_san() {
    let pg = ssl_cluster();
    let ssl = connect(
        &pg,
        "127.0.0.1",
        None,
        SslMode::VerifyFull,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn verify_full_rejects_name_not_in_san() {
    let pg = ssl_cluster();
    // TCP to 127.0.0.1, TLS name "wrong.example" which the certificate does not list.
    let err = connect(
        &pg,
        "wrong.example",
        Some(LOCALHOST),
        SslMode::VerifyFull,
        Some(&pg.certs.ca()),
    )
    .await
    .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    // verify-ca ignores the name.
    let ssl = connect(
        &pg,
        "wrong.example",
        Some(LOCALHOST),
        SslMode::VerifyCa,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn verify_full_rejects_mismatched_cn_only_cert_but_verify_ca_accepts() {
    let pg = cn_only_cluster();
    let err = connect(
        &pg,
        "127.0.0.1",
        None,
        SslMode::VerifyFull,
        Some(&pg.certs.ca()),
    )
    .await
    .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    let ssl = connect(
        &pg,
        "127.0.0.1",
        None,
        SslMode::VerifyCa,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn verify_full_falls_back_to_common_name_like_libpq() {
    let pg = cn_only_cluster();
    let ssl = connect(
        &pg,
        "DB.example",
        Some(LOCALHOST),
        SslMode::VerifyFull,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn verify_ca_with_wrong_ca_fails() {
    let pg = ssl_cluster();
    let err = connect(
        &pg,
        "localhost",
        None,
        SslMode::VerifyCa,
        Some(&pg.certs.other_ca()),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// No compiled-in public CA list: without sslrootcert and ~/.postgresql/root.crt the verify
/// modes are refused before connecting, as libpq refuses them.
#[tokio::test]
async fn verify_modes_without_any_root_are_refused() {
    let pg = ssl_cluster();
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let err = connect(&pg, "localhost", None, mode, None)
            .await
            .unwrap_err();
        assert!(err.contains("needs a trusted root certificate"), "{err}");
        assert!(err.contains("root.crt"), "{err}");
    }
}

/// libpq's default root file `~/.postgresql/root.crt` is used when sslrootcert is not set,
/// and, as in libpq, its presence makes `require` verify the chain.
#[tokio::test]
async fn default_root_crt_is_used_and_makes_require_verify() {
    let pg = ssl_cluster();
    let home = tempfile::tempdir().unwrap();
    let opts = |mode| TlsOptions {
        default_dir: Some(home.path().to_owned()),
        ..TlsOptions::new(mode)
    };
    std::fs::copy(pg.certs.ca(), home.path().join("root.crt")).unwrap();
    let ssl = connect_with(&pg, "localhost", None, &opts(SslMode::VerifyFull)).await;
    assert_eq!(ssl, Ok(true));

    std::fs::copy(pg.certs.other_ca(), home.path().join("root.crt")).unwrap();
    for mode in [SslMode::Require, SslMode::VerifyCa] {
        let err = connect_with(&pg, "localhost", None, &opts(mode))
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{mode:?}: {err}");
    }
}

/// `sslrootcert = system` trusts the operating system's store, located as OpenSSL does:
/// here `SSL_CERT_FILE` points at a test CA. This is the only test in this file that sets it.
#[tokio::test]
async fn system_store_is_used_for_sslrootcert_system() {
    let pg = ssl_cluster();
    let home = tempfile::tempdir().unwrap();
    let opts = TlsOptions {
        rootcert: Some(RootCert::System),
        default_dir: Some(home.path().to_owned()),
        ..TlsOptions::new(SslMode::VerifyFull)
    };
    std::env::set_var("SSL_CERT_FILE", pg.certs.ca());
    let trusted = connect_with(&pg, "localhost", None, &opts).await;
    std::env::set_var("SSL_CERT_FILE", pg.certs.other_ca());
    let untrusted = connect_with(&pg, "localhost", None, &opts).await;
    std::env::remove_var("SSL_CERT_FILE");
    assert_eq!(trusted, Ok(true));
    let err = untrusted.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn require_without_ca_is_encrypted() {
    let pg = ssl_cluster();
    // Name mismatch and unknown CA are both fine without a root certificate.
    let ssl = connect(
        &pg,
        "wrong.example",
        Some(LOCALHOST),
        SslMode::Require,
        None,
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn require_with_rootcert_verifies_chain_like_libpq() {
    let pg = ssl_cluster();
    let err = connect(
        &pg,
        "localhost",
        None,
        SslMode::Require,
        Some(&pg.certs.other_ca()),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Like verify-ca: the right CA passes even though the name does not match.
    let ssl = connect(
        &pg,
        "wrong.example",
        Some(LOCALHOST),
        SslMode::Require,
        Some(&pg.certs.ca()),
    )
    .await;
    assert_eq!(ssl, Ok(true));
}

#[tokio::test]
async fn prefer_is_encrypted_on_ssl_server_and_plain_without() {
    let pg = ssl_cluster();
    let ssl = connect(&pg, "localhost", None, SslMode::Prefer, None).await;
    assert_eq!(ssl, Ok(true));

    let plain = Cluster::start(certs(), None);
    let ssl = connect(&plain, "localhost", None, SslMode::Prefer, None).await;
    assert_eq!(ssl, Ok(false));
    // And require refuses the plain server instead of silently downgrading.
    let err = connect(&plain, "localhost", None, SslMode::Require, None)
        .await
        .unwrap_err();
    assert!(err.contains("server does not support TLS"), "{err}");
}

#[tokio::test]
async fn disable_is_plain() {
    let pg = ssl_cluster();
    let ssl = connect(&pg, "localhost", None, SslMode::Disable, None).await;
    assert_eq!(ssl, Ok(false));
}
