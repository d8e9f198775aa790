//! Client certificates, libpq's default files in `~/.postgresql`, and channel binding, through
//! drover's own connection code (`Endpoint`) against a PostgreSQL 15 server that requires a
//! client certificate (`clientcert=verify-full`) for one role and SCRAM for another; and the
//! same settings through `drover check`.

mod tls_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use drover::config::{Database, ReplicaRoleConfig, Secret};
use drover::pg::tls::{connector, ChannelBinding, RootCert, SslMode, TlsOptions};
use drover::pg::Endpoint;
use tls_support::*;

/// A database entry for `user` on `c`, verify-full against the test CA, nothing else set.
fn database(c: &Cluster, user: &str) -> Database {
    Database {
        host: "localhost".into(),
        port: c.port,
        dbname: "postgres".into(),
        user: user.into(),
        password: None,
        password_env: None,
        sslmode: SslMode::VerifyFull,
        sslrootcert: Some(RootCert::File(c.certs.ca())),
        sslcert: None,
        sslkey: None,
        channel_binding: ChannelBinding::Prefer,
        replica_role: ReplicaRoleConfig::Auto,
        application_name: None,
        sources: Default::default(),
    }
}

/// Connects through `Endpoint` and returns (`pg_stat_ssl.ssl`, `client_dn`), or the error text.
async fn session(db: &Database) -> Result<(bool, Option<String>), String> {
    let ep = Endpoint::new("t", db).map_err(|e| e.to_string())?;
    let client = ep.connect("test").await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

/// Copies the test client certificate and key into `dir` as `crt`/`key`, key mode `mode`.
fn place_client_files(certs: &Certs, dir: &Path, crt: &str, key: &str, mode: u32) {
    let (c, k) = certs.client();
    std::fs::copy(c, dir.join(crt)).unwrap();
    std::fs::copy(k, dir.join(key)).unwrap();
    std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn client_certificate_from_sslcert_and_sslkey() {
    let pg = auth_cluster();
    let dir = tempfile::tempdir().unwrap();
    place_client_files(&pg.certs, dir.path(), "c.crt", "c.key", 0o600);

    let mut db = database(&pg, "certuser");
    let err = session(&db).await.unwrap_err();
    assert!(err.contains("certificate"), "without a certificate: {err}");

    db.sslcert = Some(dir.path().join("c.crt"));
    db.sslkey = Some(dir.path().join("c.key"));
    let got = session(&db).await;
    assert_eq!(got, Ok((true, Some("/CN=certuser".into()))));

    // A key others may read is refused before connecting, naming the file and the fix.
    std::fs::set_permissions(
        dir.path().join("c.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = session(&db).await.unwrap_err();
    assert!(
        err.contains("database \"t\"") && err.contains("c.key") && err.contains("0600"),
        "{err}"
    );
}

/// libpq's defaults: `~/.postgresql/postgresql.crt` and `.key` are used when present, and a
/// certificate without its key is an error naming both.
#[tokio::test]
async fn client_certificate_from_the_default_directory() {
    let pg = auth_cluster();
    let home = tempfile::tempdir().unwrap();
    let opts = TlsOptions {
        rootcert: Some(RootCert::File(pg.certs.ca())),
        default_dir: Some(home.path().to_owned()),
        ..TlsOptions::new(SslMode::VerifyFull)
    };
    place_client_files(
        &pg.certs,
        home.path(),
        "postgresql.crt",
        "postgresql.key",
        0o600,
    );
    let (tls, mode) = connector(&opts).unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("localhost")
        .port(pg.port)
        .user("certuser")
        .dbname("postgres")
        .ssl_mode(mode);
    let (client, conn) = cfg.connect(tls).await.unwrap();
    tokio::spawn(conn);
    let dn: Option<String> = client
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dn.as_deref(), Some("/CN=certuser"));

    std::fs::remove_file(home.path().join("postgresql.key")).unwrap();
    let err = connector(&opts).err().unwrap().to_string();
    assert!(
        err.contains("postgresql.crt") && err.contains("postgresql.key"),
        "{err}"
    );
}

#[tokio::test]
async fn channel_binding_require_needs_scram_plus_over_tls() {
    let pg = auth_cluster();
    let mut db = database(&pg, "scram");
    db.password = Some(Secret::new(SCRAM_PASSWORD));
    db.channel_binding = ChannelBinding::Require;
    // TLS + SCRAM: SCRAM-SHA-256-PLUS is used.
    assert_eq!(session(&db).await.map(|s| s.0), Ok(true));

    // Without TLS the server can only offer plain SCRAM: refused, not downgraded.
    db.sslmode = SslMode::Disable;
    db.sslrootcert = None;
    let err = session(&db).await.unwrap_err();
    assert!(err.contains("channel binding"), "{err}");
    db.channel_binding = ChannelBinding::Prefer;
    assert_eq!(session(&db).await.map(|s| s.0), Ok(false));

    // Trust authentication (no SCRAM at all) is refused too.
    let mut trusted = database(&pg, "postgres");
    trusted.channel_binding = ChannelBinding::Require;
    let err = session(&trusted).await.unwrap_err();
    assert!(err.contains("channel binding"), "{err}");
}

/// The binary under test; `DROVER_TEST_BIN` runs these checks against another build.
fn drover_bin() -> std::ffi::OsString {
    std::env::var_os("DROVER_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_drover").into())
}

/// `drover check` with database `a` configured by `keys`, HOME = `home`; returns its output.
fn check(pg: &Cluster, user: &str, keys: &str, home: &Path, env: &[(&str, &Path)]) -> String {
    let cfg = home.join("drover.toml");
    std::fs::write(
        &cfg,
        format!(
            "[databases.a]\nhost = \"localhost\"\nport = {}\ndbname = \"postgres\"\n\
             user = \"{user}\"\n{keys}\n[databases.b]\nhost = \"localhost\"\nport = {}\n\
             dbname = \"postgres\"\nuser = \"postgres\"\nsslmode = \"require\"\n\
             [relgroups.g]\ntables = [\"t\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"a\"]\n\
             targets = [\"b\"]\n",
            pg.port, pg.port
        ),
    )
    .unwrap();
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config").arg(&cfg).arg("check").env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The same rules through the CLI: default root file, `system` store, client certificate
/// keys, and verify-ca with no root at all refused naming the database and the key.
#[test]
fn check_connects_as_libpq_would() {
    let pg = auth_cluster();
    let home = tempfile::tempdir().unwrap();
    let pgdir = home.path().join(".postgresql");
    std::fs::create_dir(&pgdir).unwrap();
    let connected = "database a (localhost:";

    let out = check(&pg, "postgres", "sslmode = \"verify-ca\"", home.path(), &[]);
    assert!(
        out.contains("database \"a\"") && out.contains("sslrootcert"),
        "{out}"
    );
    assert!(!out.contains(connected), "{out}");

    std::fs::copy(pg.certs.ca(), pgdir.join("root.crt")).unwrap();
    let out = check(
        &pg,
        "postgres",
        "sslmode = \"verify-full\"",
        home.path(),
        &[],
    );
    assert!(out.contains(connected), "default root.crt: {out}");
    std::fs::remove_file(pgdir.join("root.crt")).unwrap();

    let ca = pg.certs.ca();
    let out = check(
        &pg,
        "postgres",
        "sslrootcert = \"system\"",
        home.path(),
        &[("SSL_CERT_FILE", &ca)],
    );
    assert!(out.contains(connected), "system store: {out}");

    place_client_files(&pg.certs, home.path(), "c.crt", "c.key", 0o600);
    let keys = format!(
        "sslrootcert = \"system\"\nsslcert = \"{0}/c.crt\"\nsslkey = \"{0}/c.key\"",
        home.path().display()
    );
    let out = check(
        &pg,
        "certuser",
        &keys,
        home.path(),
        &[("SSL_CERT_FILE", &ca)],
    );
    assert!(out.contains(connected), "client certificate: {out}");
}
