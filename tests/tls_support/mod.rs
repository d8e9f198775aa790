//! Shared by the TLS test files: throwaway certificates made with the `openssl` CLI and
//! PostgreSQL 15 clusters serving them. Clusters run as the `postgres` OS user because initdb
//! refuses root. Clusters and certificates are shared between tests through `Weak` slots: they
//! live while any test uses them and are stopped and deleted when the last user drops its `Arc`
//! (also on panic).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
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

pub fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program));
    cmd
}

/// Returns the live shared value in `slot`, or creates it; it is dropped with its last user.
pub fn shared<T>(slot: &Mutex<Weak<T>>, init: impl FnOnce() -> T) -> Arc<T> {
    // A panic during init poisons the mutex; the slot is still a valid (dead) Weak.
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = guard.upgrade() {
        return value;
    }
    let value = Arc::new(init());
    *guard = Arc::downgrade(&value);
    value
}

pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// (certificate, key) of the client `CN=certuser`, for `clientcert=verify-full`.
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.crt"),
            self.dir.path().join("client.key"),
        )
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }
    /// (certificate, key) for `localhost` / 127.0.0.1.
    pub fn localhost(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("localhost.crt"),
            self.dir.path().join("localhost.key"),
        )
    }
    /// (certificate, key) with only `CN=db.example`, no subjectAltName.
    pub fn cn_only(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("cn-only.crt"),
            self.dir.path().join("cn-only.key"),
        )
    }

    pub fn generate() -> Certs {
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
        for (name, subject, san, serial, usage) in [
            (
                "localhost",
                "/CN=localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
                1001,
                "serverAuth",
            ),
            ("cn-only", "/CN=db.example", "", 1002, "serverAuth"),
            ("client", "/CN=certuser", "", 1003, "clientAuth"),
        ] {
            std::fs::write(
                d.join(format!("{name}.ext")),
                format!("{san}basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
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

pub fn certs() -> Arc<Certs> {
    static SLOT: Mutex<Weak<Certs>> = Mutex::new(Weak::new());
    shared(&SLOT, Certs::generate)
}

/// TLS-specific private cluster guard (not the shared `tests/support` harness): the server
/// certificate and key have to be in the data directory before the first start. Dropping it
/// stops the server with `pg_ctl stop -m immediate` and deletes the directory, also on panic.
/// Trust for everyone, over TLS or not.
pub const DEFAULT_HBA: &str = "local all all trust\n\
     hostssl all all 127.0.0.1/32 trust\n\
     host all all 127.0.0.1/32 trust\n";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The CA that signed the served certificate; kept alive (not regenerated) while the
    /// cluster runs.
    pub certs: Arc<Certs>,
}

impl Cluster {
    /// Starts a cluster with `ssl = on` serving `cert_key`, or `ssl = off` when `None`.
    pub fn start(certs: Arc<Certs>, cert_key: Option<(&Path, &Path)>) -> Cluster {
        Cluster::start_with(certs, cert_key, DEFAULT_HBA, false)
    }

    /// [`Cluster::start`] with these `pg_hba.conf` lines, and with `ssl_ca_file` set to the
    /// test CA when `client_ca` (so client certificates can be verified).
    pub fn start_with(
        certs: Arc<Certs>,
        cert_key: Option<(&Path, &Path)>,
        hba: &str,
        client_ca: bool,
    ) -> Cluster {
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
        if client_ca {
            let dst = data.join("ca.crt");
            std::fs::copy(cluster.certs.ca(), &dst).unwrap();
            run(Command::new("chown").arg("postgres:postgres").arg(&dst));
            conf.push_str("ssl_ca_file = 'ca.crt'\n");
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).unwrap();
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();

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

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs SQL as `postgres` over the Unix socket.
    pub fn psql(&self, sql: &str) {
        run(as_postgres("psql")
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]));
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
pub fn ssl_cluster() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let certs = certs();
        let (cert, key) = certs.localhost();
        Cluster::start(certs, Some((&cert, &key)))
    })
}

/// ssl = on, certificate with only CN=db.example signed by the test CA.
pub fn cn_only_cluster() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let certs = certs();
        let (cert, key) = certs.cn_only();
        Cluster::start(certs, Some((&cert, &key)))
    })
}

/// Password of the `scram` role on [`auth_cluster`].
pub const SCRAM_PASSWORD: &str = "scram-Pa55";

/// ssl = on (localhost certificate) with the test CA as `ssl_ca_file`: role `certuser` must
/// present a client certificate (`clientcert=verify-full`); role `scram` authenticates with
/// SCRAM over TLS or plaintext; `postgres` is trusted.
pub fn auth_cluster() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let certs = certs();
        let (cert, key) = certs.localhost();
        let c = Cluster::start_with(
            certs,
            Some((&cert, &key)),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 trust clientcert=verify-full\n\
             host all scram 127.0.0.1/32 scram-sha-256\n\
             hostssl all postgres 127.0.0.1/32 trust\n",
            true,
        );
        c.psql(&format!(
            "CREATE ROLE certuser LOGIN; CREATE ROLE scram LOGIN PASSWORD '{SCRAM_PASSWORD}'"
        ));
        c
    })
}
