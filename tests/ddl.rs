//! `drover ddl` (issue 14): a schema change run on every database of a sync, receivers first,
//! with the sync paused around it and capture refreshed after; recorded in `drover.ddl_log`.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); \
                     INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) g;";

fn running() -> (Cluster, Setup, Daemon) {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, TABLE);
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["t"]);
    drover_ok(&setup.config, &["install"]);
    let daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    (c, setup, daemon)
}

fn light_load(c: &Cluster, dir: &std::path::Path, secs: u32) -> std::thread::JoinHandle<()> {
    let script = dir.join("load.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 200)\nUPDATE t SET v = v + 1 WHERE id = :id;\n",
    )
    .expect("write pgbench script");
    let script = script.to_str().expect("utf-8 path").to_string();
    let secs = secs.to_string();
    pgbench_in_background(
        c,
        "src",
        &["-n", "-c", "1", "-R", "50", "-T", &secs, "-f", &script],
    )
}

#[test]
fn a_column_added_with_ddl_under_load_replicates_without_restart() {
    let (c, setup, mut daemon) = running();
    let cfg = &setup.config;
    let load = light_load(&c, setup.dir.path(), 6);
    let out = drover_ok(
        cfg,
        &[
            "ddl",
            "legacy_to_new",
            "-c",
            "ALTER TABLE t ADD COLUMN note text DEFAULT 'none'",
        ],
    );
    assert!(out.contains("new") && out.contains("legacy"), "{out}");
    c.psql("src", "UPDATE t SET note = 'n' || id WHERE id % 3 = 0");
    c.psql("src", "INSERT INTO t VALUES (1000, 1, 'new row')");
    load.join().expect("load thread");
    drover_wait(cfg, "legacy_to_new", 60);
    assert_eq!(
        table_md5(&c, "src", "t", "id"),
        table_md5(&c, "dst", "t", "id"),
        "t (with the new column) differs"
    );
    for db in ["src", "dst"] {
        assert_eq!(
            c.psql(
                db,
                "SELECT outcome, length(script_sha256) FROM drover.ddl_log"
            ),
            "ok|64",
            "ddl_log on {db}"
        );
    }
    let s = sync_status(cfg, "legacy_to_new");
    assert_eq!(s["paused"], false, "{s}");
    assert_eq!(c.psql("src", "SELECT count(*) FROM drover.sync_pause"), "0");
    assert!(daemon.is_running(), "the daemon exited: {}", daemon.log());
    daemon.stop();
}

#[test]
fn a_script_failing_on_the_second_database_stops_there_and_stays_paused() {
    let (c, setup, mut daemon) = running();
    let cfg = &setup.config;
    // The source already has the column: the script fails there (after the target ran it).
    c.psql("src", "ALTER TABLE t ADD COLUMN note text");
    let out = drover(
        cfg,
        &[
            "ddl",
            "legacy_to_new",
            "-c",
            "ALTER TABLE t ADD COLUMN note text",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "a failed ddl exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("legacy"),
        "names the database it stopped at: {err}"
    );
    assert!(
        err.contains("already ran it: new"),
        "names the databases done: {err}"
    );
    assert!(
        err.contains("still paused"),
        "says the sync stays paused: {err}"
    );
    assert_eq!(
        c.psql("dst", "SELECT outcome FROM drover.ddl_log"),
        "ok",
        "the target ran it"
    );
    let failed = c.psql("src", "SELECT outcome || '|' || error FROM drover.ddl_log");
    assert!(
        failed.starts_with("failed|") && failed.contains("note"),
        "{failed}"
    );
    assert_eq!(c.psql("src", "SELECT reason FROM drover.sync_pause"), "ddl");
    eventually(Duration::from_secs(10), "status to show the pause", || {
        sync_status(cfg, "legacy_to_new")["state"] == "paused"
    });
    // After fixing by hand, resume replicates again.
    drover_ok(cfg, &["resume", "legacy_to_new"]);
    c.psql("src", "UPDATE t SET note = 'x' WHERE id = 1");
    drover_ok(cfg, &["kick", "legacy_to_new", "--wait", "--timeout", "60"]);
    assert_eq!(
        table_md5(&c, "src", "t", "id"),
        table_md5(&c, "dst", "t", "id")
    );
    daemon.stop();
}

#[test]
fn ddl_waits_for_the_running_round_and_gives_up_cleanly() {
    let (c, setup, mut daemon) = running();
    let cfg = &setup.config;
    // A round stuck on a lock the target's table holds: it keeps the round gate.
    let port = c.port.to_string();
    let locker = std::thread::spawn(move || {
        std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "dst",
            ])
            .args([
                "-c",
                "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
            ])
            .output()
            .expect("run psql")
    });
    eventually(Duration::from_secs(10), "the lock on dst", || {
        c.psql(
            "dst",
            "SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
                       WHERE r.relname = 't' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == "1"
    });
    c.psql("src", "UPDATE t SET v = v + 1 WHERE id = 1");
    eventually(
        Duration::from_secs(10),
        "the round to wait for the lock",
        || {
            c.psql(
                "dst",
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                       AND application_name LIKE 'drover:%'",
            ) != "0"
        },
    );
    let out = drover(
        cfg,
        &[
            "ddl",
            "legacy_to_new",
            "--timeout",
            "1",
            "-c",
            "ALTER TABLE t ADD COLUMN z int",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still ran after"), "{err}");
    assert!(err.contains("ran nowhere"), "{err}");
    for db in ["src", "dst"] {
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM drover.ddl_log"),
            "0",
            "{db}"
        );
    }
    assert_eq!(c.psql("src", "SELECT count(*) FROM drover.sync_pause"), "0");
    locker.join().expect("psql thread");
    drover_wait(cfg, "legacy_to_new", 60);
    assert_eq!(
        table_md5(&c, "src", "t", "id"),
        table_md5(&c, "dst", "t", "id")
    );
    daemon.stop();
}
