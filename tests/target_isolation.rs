//! One source, two targets: a locked or stopped target falls behind alone while the other
//! keeps receiving changes, and catches up once it is free again.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str = "public.herd";

/// Source `src` and target `t1` on `a`, target `t2` on `b`, each with table `herd`.
fn setup(a: &Cluster, b: &Cluster) -> (tempfile::TempDir, std::path::PathBuf, Daemon) {
    let schema = "CREATE TABLE herd (id int PRIMARY KEY, v text)";
    for (c, db) in [(a, "src"), (a, "t1"), (b, "t2")] {
        c.create_db(db);
        c.psql(db, schema);
    }
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}[relgroups.g]\n\
         tables = [\"{TABLE}\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\n\
         targets = [\"t1\", \"t2\"]\n",
        free_port(),
        a.database_toml("src", "src"),
        a.database_toml("t1", "t1"),
        b.database_toml("t2", "t2"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, daemon) = install_and_run(dir.path(), &toml);
    (dir, cfg, daemon)
}

fn md5(c: &Cluster, db: &str) -> String {
    table_md5(c, db, TABLE, "id")
}

fn reaches(target: (&Cluster, &str), src: &Cluster, what: &str) {
    eventually(Duration::from_secs(60), what, || {
        md5(target.0, target.1) == md5(src, "src")
    });
}

/// A psql session holding an ACCESS EXCLUSIVE lock on the table in an open transaction.
fn hold_lock(c: &Cluster, db: &str) -> Child {
    hold(
        c,
        db,
        &format!("BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE;"),
    )
}

/// A psql session that ran `sql` (an open transaction taking locks) and stays connected
/// until its stdin is closed.
fn hold(c: &Cluster, db: &str, sql: &str) -> Child {
    let mut child = Command::new("psql")
        .args(["-XAtq", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres", "-d", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let stdin = child.stdin.as_mut().expect("psql stdin");
    writeln!(stdin, "{sql}").expect("write");
    stdin.flush().expect("flush");
    child
}

#[test]
fn locked_target_does_not_stall_the_other() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let (_dir, cfg, mut daemon) = setup(&a, &b);
    a.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    reaches((&a, "t1"), &a, "first rows on t1");
    reaches((&b, "t2"), &a, "first rows on t2");

    // t1 comes first in the sync's list of targets: a round that visits targets in turn
    // stops at it.
    let mut locker = hold_lock(&a, "t1");
    eventually(Duration::from_secs(10), "the lock to be held", || {
        a.psql(
            "t1",
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
             AND relation = (SELECT oid FROM pg_class WHERE relname = 'herd') AND granted",
        ) == "1"
    });
    for i in 0..3 {
        a.psql(
            "src",
            &format!("UPDATE herd SET v = v || '{i}' WHERE id % 5 = {i}"),
        );
        reaches((&b, "t2"), &a, "t2 to receive changes while t1 is locked");
    }
    a.psql("src", "DELETE FROM herd WHERE id > 90");
    reaches((&b, "t2"), &a, "t2 to receive a delete while t1 is locked");

    // Released: the stalled target catches up.
    drop(locker.stdin.take());
    locker.wait().expect("psql exits");
    reaches((&a, "t1"), &a, "t1 to catch up after the lock is released");
    drover_wait(&cfg, "s", 60);
    daemon.stop();
}

#[test]
fn stopped_target_does_not_stall_the_other() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let (_dir, cfg, mut daemon) = setup(&a, &b);
    a.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    reaches((&b, "t2"), &a, "first rows on t2");

    b.stop_immediate();
    for i in 0..3 {
        a.psql(
            "src",
            &format!("UPDATE herd SET v = v || '{i}' WHERE id % 7 = {i}"),
        );
        reaches((&a, "t1"), &a, "t1 to receive changes while t2 is down");
    }
    let s = sync_status(&cfg, "s");
    assert!(
        delta_rows(&a, "src") > 0,
        "the source keeps t2's deltas: {s}"
    );

    b.restart();
    reaches((&b, "t2"), &a, "t2 to catch up after its restart");
    drover_wait(&cfg, "s", 60);
    eventually(
        Duration::from_secs(30),
        "deltas purged once both applied",
        || delta_rows(&a, "src") == 0,
    );
    daemon.stop();
}

/// Oldest open transaction of the daemon's sessions on the source, in seconds (0 if none).
fn oldest_drover_transaction(c: &Cluster) -> f64 {
    c.psql(
        "src",
        "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity \
         WHERE datname = 'src' AND application_name LIKE 'drover:%' AND xact_start IS NOT NULL",
    )
    .parse()
    .expect("seconds")
}

#[test]
fn silent_target_is_abandoned_at_the_round_deadline() {
    let a = Cluster::start();
    let schema = "CREATE TABLE herd (id int PRIMARY KEY, v text)";
    for db in ["src", "t1", "t2"] {
        a.create_db(db);
        a.psql(db, schema);
    }
    // t2 is reached through a proxy that can stop answering (a frozen server or a network
    // that swallows packets: the TCP timeouts never fire).
    let proxy = support::proxy::Proxy::start(a.port);
    let t2 = a.database_toml("t2", "t2").replace(
        &format!("port = {}", a.port),
        &format!("port = {}", proxy.port),
    );
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\nround_deadline = \"2s\"\nlock_timeout = \"1s\"\n{}{}{t2}[relgroups.g]\n\
         tables = [\"{TABLE}\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\n\
         targets = [\"t1\", \"t2\"]\n",
        free_port(),
        a.database_toml("src", "src"),
        a.database_toml("t1", "t1"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    a.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    reaches((&a, "t2"), &a, "first rows on t2");

    proxy.blackhole();
    for i in 0..3 {
        a.psql(
            "src",
            &format!("UPDATE herd SET v = v || '{i}' WHERE id % 3 = {i}"),
        );
        reaches(
            (&a, "t1"),
            &a,
            "t1 to receive changes while t2 does not answer",
        );
    }
    eventually(
        Duration::from_secs(60),
        "t2's round to pass its deadline",
        || {
            let s = sync_status(&cfg, "s");
            let t2 = s["target_states"]
                .as_array()
                .and_then(|v| v.iter().find(|t| t["target"] == "t2").cloned());
            t2.is_some_and(|t| {
                t["state"] == "failing"
                    && t["last_error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("round_deadline")
            })
        },
    );
    // The silent target's rounds do not hold a source transaction past the deadline.
    let oldest = oldest_drover_transaction(&a);
    assert!(oldest < 10.0, "a source transaction open for {oldest} s");

    proxy.restore();
    proxy.cut();
    reaches((&a, "t2"), &a, "t2 to catch up once it answers again");
    drover_wait(&cfg, "s", 60);
    daemon.stop();
}

/// A lock timeout on the target's progress rows is reported as what it is. The apply sends
/// its opening statements in one flight; the ones after the lock fail with "current
/// transaction is aborted" (25P02), and that must not be the error status and metrics show.
#[test]
fn a_locked_progress_row_is_reported_as_a_lock_timeout() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let schema = "CREATE TABLE herd (id int PRIMARY KEY, v text)";
    for (c, db) in [(&a, "src"), (&a, "t1"), (&b, "t2")] {
        c.create_db(db);
        c.psql(db, schema);
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let toml = format!(
        "[daemon]\nlisten = \"{listen}\"\nlock_timeout = \"200ms\"\n{}{}{}[relgroups.g]\n\
         tables = [\"{TABLE}\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\n\
         targets = [\"t1\", \"t2\"]\n",
        a.database_toml("src", "src"),
        a.database_toml("t1", "t1"),
        b.database_toml("t2", "t2"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    a.psql("src", "INSERT INTO herd VALUES (1, 'v')");
    reaches((&a, "t1"), &a, "first rows on t1");

    let mut locker = hold(&a, "t1", "BEGIN; SELECT * FROM drover.progress FOR UPDATE;");
    let mut seen = Vec::new();
    for i in 0..8 {
        a.psql("src", &format!("UPDATE herd SET v = 'v{i}'"));
        reaches(
            (&b, "t2"),
            &a,
            "t2 to receive changes while t1's progress is locked",
        );
        std::thread::sleep(Duration::from_millis(700));
        let s = sync_status(&cfg, "s");
        let t1 = (s["target_states"].as_array().into_iter().flatten())
            .find(|t| t["target"] == "t1")
            .map(|t| t["last_error"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        if !t1.is_empty() {
            seen.push(t1);
        }
    }
    assert!(
        !seen.is_empty(),
        "t1 never failed while its progress was locked"
    );
    for e in &seen {
        assert!(
            e.contains("55P03"),
            "t1's error is not the lock timeout: {e}"
        );
    }
    let metrics = http_get(&listen, "/metrics");
    let misfiled: Vec<&str> = (metrics.lines())
        .filter(|l| l.starts_with("drover_errors_total{") && l.contains("database=\"t1\""))
        .filter(|l| !l.contains("kind=\"contention\"") && !l.ends_with(" 0"))
        .collect();
    assert!(
        misfiled.is_empty(),
        "t1's lock timeouts counted under another kind: {misfiled:?}"
    );

    drop(locker.stdin.take());
    locker.wait().expect("psql exits");
    reaches((&a, "t1"), &a, "t1 to catch up after the lock is released");
    daemon.stop();
}

fn http_get(listen: &str, path: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", &format!("http://{listen}{path}")]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(15));
    assert!(out.status.success(), "curl {path} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
