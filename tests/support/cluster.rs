//! Throwaway PostgreSQL clusters on free loopback ports.

use super::{free_port, run_with_timeout, tail};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Server binaries used when `ClusterOptions::bin_dir` is `None`.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// How often a start that lost its port to another process is retried.
const START_ATTEMPTS: usize = 8;
const PG_CTL_TIMEOUT_SECS: &str = "60";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const PSQL_TIMEOUT: Duration = Duration::from_secs(300);
const PGBENCH_TIMEOUT: Duration = Duration::from_secs(1800);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings for speed; `ClusterOptions::conf` comes after them, so it wins.
/// synchronous_commit stays on: with it off, `stop_immediate` loses commits
/// that were already acknowledged (WAL still in shared memory), which breaks
/// crash tests; with fsync off, "on" costs only a write() per commit.
const FAST_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("fsync", "off"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "off"),
    ("shared_buffers", "64MB"),
    ("max_connections", "50"),
];

#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Directory holding initdb, pg_ctl and postgres; `DEFAULT_BIN_DIR` if None.
    pub bin_dir: Option<PathBuf>,
    /// Extra postgresql.conf settings, written verbatim as `name = value`
    /// (so string values need their own quotes: `("wal_level", "logical")`,
    /// `("search_path", "'a, b'")`).
    pub conf: Vec<(String, String)>,
    /// Lines prepended to pg_hba.conf (first match wins there).
    pub hba_lines: Vec<String>,
}

/// A running PostgreSQL cluster in a temporary directory, superuser
/// `postgres`, trust authentication, listening on 127.0.0.1:`port`.
/// Dropping it stops the server and deletes the directory.
pub struct Cluster {
    pub port: u16,
    bin_dir: PathBuf,
    /// Run server programs through `runuser -u postgres`: initdb refuses root.
    as_postgres: bool,
    data: PathBuf,
    log: PathBuf,
    // Last field: dropped (deleted) only after `Drop::drop` stopped the server.
    tmp: TempDir,
}

impl Cluster {
    /// A PostgreSQL 15 cluster with default options.
    pub fn start() -> Cluster {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> Cluster {
        Self::start_inner(opts, None)
    }

    /// Like `start_with`, but tries `port` first; for the harness self-test
    /// of the retry on a port that another process took.
    pub fn start_with_first_port(opts: ClusterOptions, port: u16) -> Cluster {
        Self::start_inner(opts, Some(port))
    }

    fn start_inner(opts: ClusterOptions, first_port: Option<u16>) -> Cluster {
        let bin_dir = opts
            .bin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        assert!(
            bin_dir.join("postgres").is_file(),
            "no PostgreSQL server in {} (scripts/test installs postgresql-15)",
            bin_dir.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("drover-pg-")
            .tempdir()
            .expect("cannot create a temp dir for the cluster");
        // The new directory is owned by our effective uid.
        let as_postgres = fs::metadata(tmp.path()).map(|m| m.uid()).unwrap_or(1) == 0;
        // Build the value now so that a panic below still runs Drop (cleanup).
        let mut cluster = Cluster {
            port: 0,
            data: tmp.path().join("data"),
            log: tmp.path().join("postgres.log"),
            bin_dir,
            as_postgres,
            tmp,
        };
        if as_postgres {
            let out = run_with_timeout(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(cluster.tmp.path()),
                None,
                COMMAND_TIMEOUT,
            );
            assert!(
                out.status.success(),
                "cannot chown the cluster dir to postgres (is postgresql-15 installed?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.initdb(&opts);

        let mut port = first_port.unwrap_or_else(free_port);
        for attempt in 1..=START_ATTEMPTS {
            cluster.port = port;
            cluster.write_settings(&opts);
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.wait_ready();
                    return cluster;
                }
                // Someone else bound the port between free_port() and now.
                Err(log) if attempt < START_ATTEMPTS && lost_port(&log) => port = free_port(),
                Err(log) => panic!("cannot start PostgreSQL on port {port}:\n{log}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log so far (all starts).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// A `[databases.NAME]` section for a drover config pointing at `dbname`.
    pub fn database_toml(&self, name: &str, dbname: &str) -> String {
        format!(
            "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{dbname}\"\nuser = \"postgres\"\n",
            self.port
        )
    }

    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// Runs `sql` as a psql script (statements run one by one, autocommit,
    /// stopping at the first error); returns trimmed stdout in unaligned,
    /// tuples-only form (columns separated by `|`). Panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.client_bin("psql"));
        cmd.args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-f", "-"])
            // A stopped server must make psql fail, not hang.
            .env("PGCONNECT_TIMEOUT", "10");
        let out = run_with_timeout(&mut cmd, Some(sql), PSQL_TIMEOUT);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "psql on port {} db {db:?} failed ({}):\n{}\nSQL: {sql}",
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs pgbench with `args` against `db`; returns stdout followed by
    /// stderr. Panics with both on failure.
    pub fn pgbench(&self, db: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(self.client_bin("pgbench"));
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres"])
            .args(args)
            .arg(db);
        let out = run_with_timeout(&mut cmd, None, PGBENCH_TIMEOUT);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "pgbench {args:?} on port {} db {db:?} failed ({}):\n{text}",
            self.port,
            out.status
        );
        text
    }

    /// md5 of all rows of `table_sql` (already quoted SQL) as text, one per
    /// line, in `order_by` order; an empty table gives md5('').
    pub fn table_md5(&self, db: &str, table_sql: &str, order_by: &str) -> String {
        self.psql(
            db,
            &format!(
                "SELECT md5(coalesce(string_agg(md5_row_::text, E'\\n' ORDER BY {order_by}), '')) FROM {table_sql} md5_row_"
            ),
        )
    }

    /// Crash-stops the server (no checkpoint); `restart` runs recovery.
    pub fn stop_immediate(&self) {
        let out = self.pg_ctl_stop();
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same port and data dir and waits until
    /// it accepts connections.
    pub fn restart(&self) {
        if let Err(log) = self.pg_ctl_start() {
            panic!("cannot restart PostgreSQL on port {}:\n{log}", self.port);
        }
        self.wait_ready();
    }

    pub fn version_num(&self) -> u32 {
        let v = self.psql("postgres", "SHOW server_version_num");
        v.parse()
            .unwrap_or_else(|e| panic!("bad server_version_num {v:?}: {e}"))
    }

    /// A server program (initdb, pg_ctl), run as `postgres` when we are root.
    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        // postgres may not be able to enter our working directory (/root).
        cmd.current_dir(self.tmp.path());
        cmd
    }

    /// Clients from `bin_dir` when it has them, else the PG15 ones.
    fn client_bin(&self, program: &str) -> PathBuf {
        let own = self.bin_dir.join(program);
        if own.is_file() {
            own
        } else {
            Path::new(DEFAULT_BIN_DIR).join(program)
        }
    }

    fn initdb(&self, opts: &ClusterOptions) {
        let mut cmd = self.server_cmd("initdb");
        cmd.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C", "-D"])
            .arg(&self.data);
        let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Our settings live in their own file, rewritten on each start attempt.
        append(
            &self.data.join("postgresql.conf"),
            "\ninclude 'drover_test.conf'\n",
        );
        if !opts.hba_lines.is_empty() {
            let path = self.data.join("pg_hba.conf");
            let old = fs::read_to_string(&path).expect("cannot read pg_hba.conf");
            let new = format!("{}\n{old}", opts.hba_lines.join("\n"));
            fs::write(&path, new).expect("cannot write pg_hba.conf");
        }
    }

    fn write_settings(&self, opts: &ClusterOptions) {
        let mut conf = format!(
            "port = {}\nunix_socket_directories = '{}'\n",
            self.port,
            self.tmp.path().display().to_string().replace('\'', "''")
        );
        let fast = FAST_SETTINGS.iter().map(|&(k, v)| (k, v));
        let extra = opts.conf.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (name, value) in fast.chain(extra) {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let path = self.data.join("drover_test.conf");
        fs::write(&path, conf).expect("cannot write drover_test.conf");
        // Written by root, it must stay readable by postgres whatever the umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .expect("cannot chmod drover_test.conf");
    }

    /// `pg_ctl start -w`; on failure returns the part of the server log that
    /// this attempt wrote.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log_before = fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log);
        let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
        if out.status.success() {
            return Ok(());
        }
        let log = fs::read(&self.log).unwrap_or_default();
        Err(format!(
            "{}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(log.get(log_before..).unwrap_or(&log))
        ))
    }

    fn pg_ctl_stop(&self) -> Output {
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args([
            "stop",
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-D",
        ])
        .arg(&self.data);
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }

    /// pg_ctl -w already waited; make sure a TCP client gets through too.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.try_psql("postgres", "SELECT 1") {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "PostgreSQL on port {} never accepted connections: {e}",
                        self.port
                    )
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- last lines of the PostgreSQL log (port {}) ---\n{}",
                self.port,
                tail(&self.log(), 40)
            );
        }
        // Must not panic (a second panic aborts the test run): a server that
        // is already stopped makes pg_ctl fail, which is fine.
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args([
            "stop",
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-D",
        ])
        .arg(&self.data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let _ = cmd.status();
        // `self.tmp` is deleted when the fields drop, right after this.
    }
}

/// Did the server fail because its port was taken?
fn lost_port(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}
