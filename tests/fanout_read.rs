//! One source, four targets: the targets at the same progress share one source read per
//! round (the source actor), so `drover_source_reads_total` grows by about one per round of
//! all four, not one per target's round; a locked target falls behind alone while the others
//! go on sharing, and catches up after.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str = "public.herd";
const TARGETS: [&str; 4] = ["t1", "t2", "t3", "t4"];

struct Run {
    _dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    daemon: Daemon,
    listen: String,
}

/// Source `src` and four targets on one cluster, each with `herd`; 100 rows written once
/// the daemon runs.
fn setup(c: &Cluster) -> Run {
    let schema = "CREATE TABLE herd (id int PRIMARY KEY, v text)";
    for db in ["src"].iter().chain(&TARGETS) {
        c.create_db(db);
        c.psql(db, schema);
    }
    let toml = sync_toml(c, &[TABLE], "", &["src"], &TARGETS);
    let listen = (toml.split("listen = \"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("listen address in the config")
        .to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, daemon) = install_and_run(dir.path(), &toml);
    c.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    for t in TARGETS {
        reaches(c, t, "the first rows");
    }
    Run {
        _dir: dir,
        cfg,
        daemon,
        listen,
    }
}

fn md5(c: &Cluster, db: &str) -> String {
    table_md5(c, db, TABLE, "id")
}

fn reaches(c: &Cluster, target: &str, what: &str) {
    let what = format!("{target} to be identical to the source after {what}");
    eventually(Duration::from_secs(60), &what, || {
        md5(c, target) == md5(c, "src")
    });
}

/// A bounded load of small writes on the source: pgbench, one client, 300 transactions at
/// most 150 per second, each updating one row and inserting another.
fn small_writes(c: &Cluster, dir: &std::path::Path, start: u32) {
    let script = dir.join(format!("writes{start}.sql"));
    std::fs::write(
        &script,
        format!(
            "\\set id random(1, 100)\n\
             UPDATE herd SET v = md5(random()::text) WHERE id = :id;\n\
             INSERT INTO herd VALUES ({start} + :client_id * 100000 + nextval('seq'), 'new');\n"
        ),
    )
    .expect("write the pgbench script");
    c.psql("src", "CREATE SEQUENCE IF NOT EXISTS seq");
    let path = script.to_str().expect("utf-8 path");
    c.pgbench("src", &["-n", "-f", path, "-t", "300", "-R", "150"]);
}

/// The sum of every series of `name` for sync `s` on the daemon's /metrics.
fn metric(listen: &str, name: &str) -> f64 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        &format!("http://{listen}/metrics"),
    ]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(15));
    assert!(out.status.success(), "curl /metrics failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let series: Vec<&str> = (text.lines())
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("sync=\"s\""))
        .collect();
    assert!(
        !series.is_empty(),
        "no {name} for sync s in /metrics:\n{text}"
    );
    (series.iter())
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (source reads, rounds) of sync `s` so far.
fn reads_and_rounds(r: &Run) -> (f64, f64) {
    (
        metric(&r.listen, "drover_source_reads_total"),
        metric(&r.listen, "drover_rounds_total"),
    )
}

#[test]
fn four_targets_share_one_source_read_per_round_and_again_after_a_large_batch() {
    let c = Cluster::start();
    let mut r = setup(&c);
    let (reads0, rounds0) = reads_and_rounds(&r);
    small_writes(&c, r._dir.path(), 1_000_000);
    for t in TARGETS {
        reaches(&c, t, "the writes");
    }
    drover_wait(&r.cfg, "s", 60);
    let (reads, rounds) = reads_and_rounds(&r);
    let (reads, rounds) = (reads - reads0, rounds - rounds0);
    eprintln!("source reads {reads} for {rounds} target rounds");
    // Shared by four, a read serves about four rounds; each target reading its own would
    // make them equal.
    assert!(
        reads > 0.0 && reads * 2.0 <= rounds,
        "source reads {reads} for {rounds} target rounds during the load: not shared"
    );

    // A batch too large for text: read once as COPY data (tests/fanout_copy.rs), or by
    // each target's own round for a target not at its start.
    c.psql(
        "src",
        "INSERT INTO herd SELECT g, 'bulk' FROM generate_series(5000000, 5005000) g; \
         UPDATE herd SET v = v || 'b' WHERE id % 3 = 0",
    );
    for t in TARGETS {
        reaches(&c, t, "a large batch");
    }
    // Targets that applied it through rounds of their own are at different progress: they
    // converge and share again.
    small_writes(&c, r._dir.path(), 3_000_000);
    for t in TARGETS {
        reaches(&c, t, "the writes after the large batch");
    }
    let (reads0, rounds0) = reads_and_rounds(&r);
    small_writes(&c, r._dir.path(), 4_000_000);
    for t in TARGETS {
        reaches(&c, t, "the writes once converged");
    }
    let (reads, rounds) = reads_and_rounds(&r);
    let (reads, rounds) = (reads - reads0, rounds - rounds0);
    eprintln!("after the large batch: source reads {reads} for {rounds} target rounds");
    assert!(
        reads > 0.0 && reads * 2.0 <= rounds,
        "source reads {reads} for {rounds} target rounds after a large batch: not shared again"
    );
    r.daemon.stop();
}

/// A psql session holding an EXCLUSIVE lock on the table in an open transaction: drover's
/// writes wait, reads (the md5 checks) do not.
fn hold_lock(c: &Cluster, db: &str) -> Child {
    let mut child = Command::new("psql")
        .args(["-XAtq", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres", "-d", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let stdin = child.stdin.as_mut().expect("psql stdin");
    writeln!(stdin, "BEGIN; LOCK TABLE {TABLE} IN EXCLUSIVE MODE;").expect("write");
    stdin.flush().expect("flush");
    child
}

#[test]
fn a_locked_target_falls_behind_while_the_others_share_reads() {
    let c = Cluster::start();
    let mut r = setup(&c);
    let mut locker = hold_lock(&c, "t1");
    eventually(Duration::from_secs(10), "the lock on t1 to be held", || {
        c.psql(
            "t1",
            "SELECT count(*) FROM pg_locks WHERE mode = 'ExclusiveLock' \
             AND relation = (SELECT oid FROM pg_class WHERE relname = 'herd') AND granted",
        ) == "1"
    });
    let (reads0, rounds0) = reads_and_rounds(&r);
    small_writes(&c, r._dir.path(), 2_000_000);
    for t in &TARGETS[1..] {
        reaches(&c, t, "the writes while t1 is locked");
    }
    let (reads, rounds) = reads_and_rounds(&r);
    let (reads, rounds) = (reads - reads0, rounds - rounds0);
    eprintln!("source reads {reads} for {rounds} target rounds");
    assert!(
        reads > 0.0 && reads * 2.0 <= rounds,
        "source reads {reads} for {rounds} target rounds while t1 is locked: not shared"
    );
    assert_ne!(md5(&c, "t1"), md5(&c, "src"), "t1 applied while locked");

    drop(locker.stdin.take());
    locker.wait().expect("psql exits");
    reaches(&c, "t1", "its lock was released");
    drover_wait(&r.cfg, "s", 60);
    r.daemon.stop();
}
