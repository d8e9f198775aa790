//! Integration tests for `drover::pg::tls::connector` against real PostgreSQL 15 servers.
//!
//! Certificates are generated with the `openssl` CLI: a throwaway CA, a server certificate for
//! `localhost` with SANs `DNS:localhost, IP:127.0.0.1`, a second server certificate with only
//! `CN=db.example` (no SAN, exercising libpq's Common Name fallback and a name mismatch), and an
//! unrelated CA. Clusters run as the `postgres` OS user because initdb refuses root.
//!
//! Clusters and certificates are shared between tests through `Weak` slots: they live while any
//! test uses them and are stopped and deleted when the last user drops its `Arc` (also on panic).

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use drover::pg::tls::{connector, SslMode};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs a command, panicking with its output when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program));
    cmd
}

/// Returns the live shared value in `slot`, or creates it; it is dropped with its last user.
fn shared<T>(slot: &Mutex<Weak<T>>, init: impl FnOnce() -> T) -> Arc<T> {
    // A panic during init poisons the mutex; the slot is still a valid (dead) Weak.
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = guard.upgrade() {
        return value;
    }
    let value = Arc::new(init());
    *guard = Arc::downgrade(&value);
    value
}

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }
    /// (certificate, key) for `localhost` / 127.0.0.1.
    fn localhost(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("localhost.crt"),
            self.dir.path().join("localhost.key"),
        )
    }
    /// (certificate, key) with only `CN=db.example`, no subjectAltName.
    fn cn_only(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("cn-only.crt"),
            self.dir.path().join("cn-only.key"),
        )
    }

    fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("drover-tls-certs-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // Arguments contain no spaces, so a whitespace-split command line keeps this readable.
        let openssl = |args: String| {
            run(Command::new("openssl")
                .current_dir(d)
                .args(args.split_whitespace()))
        };
        for (name, cn) in [("ca", "drover-test-CA"), ("other-ca", "unrelated-CA")] {
            openssl(format!(
                "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                 -keyout {name}.key -out {name}.crt -days 2 -subj /CN={cn} \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ));
        }
        for (name, subject, san, serial) in [
            (
                "localhost",
                "/CN=localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
                1001,
            ),
            ("cn-only", "/CN=db.example", "", 1002),
        ] {
            std::fs::write(
                d.join(format!("{name}.ext")),
                format!("{san}basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
            )
            .unwrap();
            openssl(format!(
                "req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr \
                 -subj {subject}"
            ));
            openssl(format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial {serial} \
                 -days 2 -extfile {name}.ext -out {name}.crt"
            ));
        }
        Certs { dir }
    }
}

fn certs() -> Arc<Certs> {
    static SLOT: Mutex<Weak<Certs>> = Mutex::new(Weak::new());
    shared(&SLOT, Certs::generate)
}

/// TLS-specific private cluster guard (not the shared `tests/support` harness): the server
/// certificate and key have to be in the data directory before the first start. Dropping it
/// stops the server with `pg_ctl stop -m immediate` and deletes the directory, also on panic.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    /// The CA that signed the served certificate; kept alive (not regenerated) while the
    /// cluster runs.
    certs: Arc<Certs>,
}

impl Cluster {
    /// Starts a cluster with `ssl = on` serving `cert_key`, or `ssl = off` when `None`.
    fn start(certs: Arc<Certs>, cert_key: Option<(&Path, &Path)>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("drover-tls-pg-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind((LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        // Built before initdb so that any later failure still stops and deletes everything.
        let cluster = Cluster { dir, port, certs };
        let data = cluster.data();
        run(as_postgres("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]));

        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nssl = {}\n",
            cluster.dir.path().display(),
            if cert_key.is_some() { "on" } else { "off" },
        );
        if let Some((cert, key)) = cert_key {
            for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
                let dst = data.join(name);
                std::fs::copy(src, &dst).unwrap();
                run(Command::new("chown").arg("postgres:postgres").arg(&dst));
                run(Command::new("chmod").arg("0600").arg(&dst));
            }
            conf.push_str("ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .unwrap();

        let log = cluster.dir.path().join("server.log");
        let started = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Errors ignored: the server may never have started. The TempDir field is deleted
        // after this runs.
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// ssl = on, certificate for localhost / 127.0.0.1 signed by the test CA.
fn ssl_cluster() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let certs = certs();
        let (cert, key) = certs.localhost();
        Cluster::start(certs, Some((&cert, &key)))
    })
}

/// ssl = on, certificate with only CN=db.example signed by the test CA.
fn cn_only_cluster() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let certs = certs();
        let (cert, key) = certs.cn_only();
        Cluster::start(certs, Some((&cert, &key)))
    })
}

/// Connects through `drover::pg::tls::connector` and returns `pg_stat_ssl.ssl` for the session,
/// or the full error chain as text.
async fn connect(
    cluster: &Cluster,
    host: &str,
    hostaddr: Option<IpAddr>,
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<bool, String> {
    let (tls, pg_mode) = connector(mode, rootcert).map_err(|e| e.to_string())?;
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

#[tokio::test]
async fn verify_ca_without_rootcert_uses_public_roots_and_rejects_private_ca() {
    let pg = ssl_cluster();
    let err = connect(&pg, "localhost", None, SslMode::VerifyCa, None)
        .await
        .unwrap_err();
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
