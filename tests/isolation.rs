//! Target isolation: one troubled target (stopped, or holding a lock) must not stop the other
//! targets of its sync, must not hold the source's snapshot open past `daemon.round_deadline`,
//! and catches up once it is healthy again. Plus fan-out to 4 targets under a concurrent writer.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::scenario::*;
use support::*;

const TABLES: [(&str, &str); 3] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
];

/// How long a healthy target may take to receive a small batch on a busy 2-core machine.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// Round limits for the locked-target tests: small, so that the source-side bound is checkable.
const SHORT_LIMITS: &str = "round_deadline = \"5s\"\nlock_timeout = \"1s\"\n";

/// No drover transaction on the source may be older than this: the deadline (5 s) plus a
/// generous margin for a loaded machine.
const SNAPSHOT_BOUND_SECS: u32 = 15;

/// A target database: its config name, cluster and dbname.
struct Target<'a> {
    name: &'a str,
    cluster: &'a Cluster,
    db: &'a str,
}

/// A source `src` (pgbench scale 1 in `repdb`) and `targets`, each a copy of it made with
/// pg_dump before drover is installed.
fn source() -> Cluster {
    let src = Cluster::start();
    src.create_db("repdb");
    src.pgbench("repdb", &["-i", "-s", "1", "-q"]);
    src
}

fn copy_to(src: &Cluster, t: &Target) {
    t.cluster.create_db(t.db);
    dump_into(src, "repdb", t.cluster, t.db, false);
}

/// Config of sync `s`: the pgbench tables from `src` to `targets`; `daemon_extra` goes into
/// `[daemon]`.
fn config_toml(src: &Cluster, targets: &[&Target], daemon_extra: &str) -> String {
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{daemon_extra}{}",
        free_port(),
        src.database_toml("src", "repdb")
    );
    for t in targets {
        toml.push_str(&t.cluster.database_toml(t.name, t.db));
    }
    let names: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.name)).collect();
    toml.push_str(&format!(
        "[relgroups.g]\ntables = [{}]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [{}]\n",
        PGBENCH_TABLES.map(|t| format!("\"{t}\"")).join(", "),
        names.join(", ")
    ));
    toml
}

/// Whether every replicated table of `t` equals the source's, row for row.
fn same_as_source(src: &Cluster, t: &Target) -> bool {
    TABLES.iter().all(|(table, key)| {
        let want = table_md5(src, "repdb", table, key);
        t.cluster
            .try_psql(
                t.db,
                &format!(
                    "{PINNED} SELECT count(*) || ':' || md5(coalesce(string_agg(md5_row_::text, E'\\n' ORDER BY {key}), '')) FROM {table} md5_row_"
                ),
            )
            .is_ok_and(|got| got == want)
    })
}

#[track_caller]
fn assert_same(src: &Cluster, t: &Target) {
    for (table, key) in TABLES {
        assert_eq!(
            table_md5(src, "repdb", table, key),
            table_md5(t.cluster, t.db, table, key),
            "table {table} differs between the source and target {}",
            t.name
        );
    }
}

/// Writes on the source that every target must receive: bounded in count.
fn write_some(src: &Cluster) {
    src.pgbench("repdb", &["-n", "-t", "200"]);
}

fn start(dir: &Path, toml: &str) -> (PathBuf, Daemon) {
    let (cfg, daemon) = install_and_run(dir, toml);
    drover_wait(&cfg, "s", 120);
    (cfg, daemon)
}

/// A psql session on `c`/`db` holding `LOCK TABLE table IN ACCESS EXCLUSIVE MODE` in an open
/// transaction until `release` (or drop, which ends the session).
struct HeldLock {
    child: Child,
}

impl HeldLock {
    fn take(c: &Cluster, db: &str, table: &str) -> HeldLock {
        let mut child = Command::new(Path::new(DEFAULT_BIN_DIR).join("psql"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(c.port.to_string())
            .args(["-U", "postgres", "-d", db])
            .env("PGAPPNAME", "isolation-test-lock")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql");
        let stdin = child.stdin.as_mut().expect("psql stdin");
        writeln!(stdin, "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;").expect("write");
        stdin.flush().expect("flush");
        eventually(
            Duration::from_secs(30),
            "the test's lock to be granted",
            || {
                c.psql(
                db,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'isolation-test-lock' AND l.mode = 'AccessExclusiveLock' \
                 AND l.granted AND l.relation IS NOT NULL",
            ) != "0"
            },
        );
        HeldLock { child }
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            writeln!(stdin, "COMMIT;").expect("write COMMIT");
        }
        eventually(
            Duration::from_secs(30),
            "the lock holder's psql to exit",
            || self.child.try_wait().expect("psql status").is_some(),
        );
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// drover sessions on the source whose transaction began more than `secs` ago, described.
fn old_drover_transactions(src: &Cluster, secs: u32) -> String {
    src.psql(
        "repdb",
        &format!(
            "SELECT coalesce(string_agg(format('%s (pid %s, %s, transaction open %s s, backend_xmin %s)', \
             application_name, pid, state, round(extract(epoch FROM clock_timestamp() - xact_start)), \
             coalesce(backend_xmin::text, '-')), '; '), '') \
             FROM pg_stat_activity WHERE application_name LIKE 'drover:%' \
             AND xact_start < clock_timestamp() - interval '{secs} s'"
        ),
    )
}

/// Samples the source every 250 ms for `window`: no drover transaction may be older than the
/// bound. A fixed observation window, not a wait: the property must hold at every sample.
fn assert_no_old_snapshot(src: &Cluster, window: Duration) {
    let end = Instant::now() + window;
    let mut samples = 0;
    while Instant::now() < end {
        let old = old_drover_transactions(src, SNAPSHOT_BOUND_SECS);
        assert!(
            old.is_empty(),
            "a drover transaction on the source is older than {SNAPSHOT_BOUND_SECS} s \
             (round_deadline 5 s) while a target is locked: {old}"
        );
        samples += 1;
        thread::sleep(Duration::from_millis(250));
    }
    eprintln!("{samples} samples of the source's pg_stat_activity over {window:?}: none too old");
}

#[test]
fn dead_target_does_not_stop_the_other() {
    let src = source();
    let (c1, c2) = (Cluster::start(), Cluster::start());
    let dead = Target {
        name: "t1",
        cluster: &c1,
        db: "repdb",
    };
    let healthy = Target {
        name: "t2",
        cluster: &c2,
        db: "repdb",
    };
    copy_to(&src, &dead);
    copy_to(&src, &healthy);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = start(dir.path(), &config_toml(&src, &[&dead, &healthy], ""));

    c1.stop_immediate();
    write_some(&src);
    eventually(
        FLOW_TIMEOUT,
        "target t2 to receive the writes while t1 is down",
        || same_as_source(&src, &healthy),
    );
    // And again, once the sync has surely noticed t1 is gone.
    write_some(&src);
    eventually(
        FLOW_TIMEOUT,
        "target t2 to receive more writes while t1 is down",
        || same_as_source(&src, &healthy),
    );

    c1.restart();
    drover_wait(&cfg, "s", 120);
    assert_same(&src, &dead);
    assert_same(&src, &healthy);
    assert!(daemon.is_running(), "the daemon survived the dead target");
    daemon.stop();
}

/// A source and two targets on separate clusters, t1 then t2, with `SHORT_LIMITS`, running.
fn locked_setup(f: impl FnOnce(&Cluster, &Target, &Target, &Path)) {
    let src = source();
    let (c1, c2) = (Cluster::start(), Cluster::start());
    let locked = Target {
        name: "t1",
        cluster: &c1,
        db: "repdb",
    };
    let healthy = Target {
        name: "t2",
        cluster: &c2,
        db: "repdb",
    };
    copy_to(&src, &locked);
    copy_to(&src, &healthy);
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = config_toml(&src, &[&locked, &healthy], SHORT_LIMITS);
    let (cfg, mut daemon) = start(dir.path(), &toml);
    f(&src, &locked, &healthy, &cfg);
    assert!(daemon.is_running(), "the daemon survived the locked target");
    daemon.stop();
}

#[test]
fn locked_target_does_not_stop_the_other() {
    locked_setup(|src, locked, healthy, cfg| {
        let lock = HeldLock::take(locked.cluster, locked.db, "pgbench_accounts");
        write_some(src);
        eventually(
            FLOW_TIMEOUT,
            "target t2 to receive the writes while t1 is locked",
            || same_as_source(src, healthy),
        );
        write_some(src);
        eventually(
            FLOW_TIMEOUT,
            "target t2 to receive more writes while t1 is locked",
            || same_as_source(src, healthy),
        );
        lock.release();
        drover_wait(cfg, "s", 120);
        assert_same(src, locked);
        assert_same(src, healthy);
    });
}

#[test]
fn locked_target_does_not_hold_the_source_snapshot_past_the_deadline() {
    locked_setup(|src, locked, healthy, cfg| {
        let lock = HeldLock::take(locked.cluster, locked.db, "pgbench_accounts");
        write_some(src);
        // Writes keep coming, so rounds keep starting, while the window is sampled.
        let writer = pgbench_in_background(src, "repdb", &["-n", "-R", "20", "-T", "20"]);
        assert_no_old_snapshot(src, Duration::from_secs(22));
        writer.join().expect("pgbench");
        lock.release();
        drover_wait(cfg, "s", 120);
        assert_same(src, locked);
        assert_same(src, healthy);
    });
}

#[test]
fn fan_out_to_four_targets_under_a_concurrent_writer() {
    let src = source();
    let tc = Cluster::start();
    let names = ["t1", "t2", "t3", "t4"];
    let targets: Vec<Target> = names
        .iter()
        .map(|n| Target {
            name: n,
            cluster: &tc,
            db: n,
        })
        .collect();
    for t in &targets {
        copy_to(&src, t);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = start(
        dir.path(),
        &config_toml(&src, &targets.iter().collect::<Vec<_>>(), ""),
    );
    let writer = pgbench_in_background(&src, "repdb", &["-n", "-c", "2", "-T", "15"]);
    writer.join().expect("pgbench");
    drover_wait(&cfg, "s", 180);
    for t in &targets {
        assert_same(&src, t);
    }
    assert!(daemon.is_running(), "the daemon survived the fan-out");
    daemon.stop();
}
