//! A partition detached from, or dropped out of, a captured partitioned table: its rows leave
//! the table on the source without any trigger firing. The sync must stop naming the partition
//! (never report good with the targets still holding those rows), `check` must name it, and a
//! re-run of `drover install` must reload the table so the targets equal the source again.
//! PostgreSQL 10 (no keys on partitioned tables, no DEFAULT partition) and the system major.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scenario::*;
use support::*;

#[derive(Clone, Copy, PartialEq)]
enum Gone {
    Detach,
    Drop,
    /// DETACH ... CONCURRENTLY (14+), observed while its second phase waits for an old snapshot.
    DetachConcurrently,
}

/// The source's table, partitioned by region, and the DDL of a same-partitioned and a plain
/// target; on 10 each leaf has its own key and the key is configured. Without a DEFAULT
/// partition when `no_default` (DETACH CONCURRENTLY refuses tables that have one).
fn ddl(major: u32, no_default: bool) -> (String, &'static str, &'static str) {
    let cols = "id int NOT NULL, region text NOT NULL, payload text";
    let plain = "CREATE TABLE events (id int NOT NULL, region text NOT NULL, payload text, \
                 PRIMARY KEY (id, region));";
    if major == 10 {
        let mut part = format!("CREATE TABLE events ({cols}) PARTITION BY LIST (region);\n");
        for r in ["eu", "us", "apac"] {
            part.push_str(&format!(
                "CREATE TABLE events_{r} PARTITION OF events (PRIMARY KEY (id, region)) FOR VALUES IN ('{r}');\n"
            ));
        }
        let keys = "[relgroups.g.keys]\n\"public.events\" = [\"id\", \"region\"]\n";
        return (part, plain, keys);
    }
    let part = format!(
        "CREATE TABLE events ({cols}, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
         CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
         CREATE TABLE events_apac PARTITION OF events {};",
        if no_default {
            "FOR VALUES IN ('apac')"
        } else {
            "DEFAULT"
        }
    );
    (part, plain, "")
}

fn setup(major: u32, dir: &Path, no_default: bool) -> (support::Cluster, PathBuf, Daemon) {
    let c = support::versions::cluster(major);
    let (part, plain, keys) = ddl(major, no_default);
    for (db, sql) in [
        ("src", part.as_str()),
        ("same", part.as_str()),
        ("plain", plain),
    ] {
        c.create_db(db);
        c.psql(db, sql);
    }
    let toml = sync_toml(&c, &["events"], keys, &["src"], &["same", "plain"]);
    let (cfg, daemon) = install_and_run(dir, &toml);
    c.psql(
        "src",
        "INSERT INTO events SELECT g, (ARRAY['eu','us','apac'])[g % 3 + 1], 'p' || g \
         FROM generate_series(1, 900) g;",
    );
    (c, cfg, daemon)
}

fn assert_replicated(c: &support::Cluster, cfg: &Path, when: &str) {
    drover_wait(cfg, "s", 120);
    let want = table_md5(c, "src", "events", "id, region");
    for db in ["same", "plain"] {
        assert_eq!(
            table_md5(c, db, "events", "id, region"),
            want,
            "events on {db} {when}"
        );
    }
}

fn state(cfg: &Path) -> (String, String) {
    state_and_error(cfg, "s")
}

const NAMED: &str =
    "partition public.events_eu of table public.events was detached or dropped after drover install";

fn partition_gone(major: u32, how: Gone) {
    let dir = tempfile::tempdir().unwrap();
    let (c, cfg, mut daemon) = setup(major, dir.path(), how == Gone::DetachConcurrently);
    assert_replicated(&c, &cfg, "after the initial rows");

    std::thread::scope(|scope| {
        let mut detaching = None;
        match how {
            Gone::Detach => drop(c.psql("src", "ALTER TABLE events DETACH PARTITION events_eu;")),
            Gone::Drop => drop(c.psql("src", "DROP TABLE events_eu;")),
            Gone::DetachConcurrently => detaching = Some(detach_concurrently_pending(scope, &c)),
        };
        c.psql(
            "src",
            "UPDATE events SET payload = 'after' WHERE id % 10 = 0;",
        );
        drover(&cfg, &["kick", "s"]);
        eventually(
            Duration::from_secs(60),
            "the sync to stop naming the partition",
            || {
                let (state, error) = state(&cfg);
                state == "bad" && error.contains(NAMED) && error.contains("run drover install")
            },
        );
        let out = drover(&cfg, &["check"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(1), "check: {text}");
        assert!(text.contains(NAMED), "check names the partition: {text}");
        if let Some((holder, detach)) = detaching {
            // Let the detach finish (install would wait for it anyway).
            c.psql("src", &format!("SELECT pg_terminate_backend({holder})"));
            detach.join().expect("detach");
        }
    });

    let out = drover_ok(&cfg, &["install"]);
    assert!(
        out.contains("partitions gone, table reloaded: public.events_eu"),
        "{out}"
    );
    assert_replicated(&c, &cfg, "after install reloaded the table");
    assert_eq!(state(&cfg).0, "good");
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no problems found"), "{check}");

    if how != Gone::Drop {
        // The detached table is the application's own now: its writes are not the table's.
        let left = c.psql(
            "src",
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events_eu'::regclass AND tgname LIKE 'drover%'",
        );
        assert_eq!(left, "0", "capture triggers left on the detached table");
        c.psql(
            "src",
            "DELETE FROM events_eu WHERE id % 2 = 0; INSERT INTO events_eu VALUES (5000, 'eu', 'x');",
        );
    }
    c.psql(
        "src",
        "INSERT INTO events VALUES (5001, 'us', 'later'); DELETE FROM events WHERE id % 7 = 0;",
    );
    assert_replicated(&c, &cfg, "after later writes");
    daemon.stop();
}

/// Starts `DETACH PARTITION events_eu CONCURRENTLY` while another session holds a snapshot, and
/// returns once its first phase committed (the partition pending detach): the holder's backend
/// pid and the thread running the detach, which finishes once the holder is gone.
fn detach_concurrently_pending<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    c: &'s support::Cluster,
) -> (String, std::thread::ScopedJoinHandle<'s, ()>) {
    scope.spawn(move || {
        // Ends when the test terminates it.
        let _ = c.try_psql(
            "src",
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events; \
             SELECT pg_sleep(120); COMMIT;",
        );
    });
    let holder = "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' \
                  AND pid <> pg_backend_pid()";
    eventually(Duration::from_secs(30), "the snapshot holder", || {
        !c.psql("src", holder).is_empty()
    });
    let pid = c.psql("src", holder);
    let detach = scope.spawn(move || {
        c.psql(
            "src",
            "ALTER TABLE events DETACH PARTITION events_eu CONCURRENTLY;",
        );
    });
    eventually(Duration::from_secs(30), "the detach to be pending", || {
        c.psql(
            "src",
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'events_eu'::regclass AND inhdetachpending",
        ) == "1"
    });
    (pid, detach)
}

#[test]
fn detach_concurrently_system() {
    partition_gone(support::versions::SYSTEM_MAJOR, Gone::DetachConcurrently);
}

#[test]
fn detach_pg10() {
    partition_gone(10, Gone::Detach);
}

#[test]
fn detach_system() {
    partition_gone(support::versions::SYSTEM_MAJOR, Gone::Detach);
}

#[test]
fn drop_pg10() {
    partition_gone(10, Gone::Drop);
}

#[test]
fn drop_system() {
    partition_gone(support::versions::SYSTEM_MAJOR, Gone::Drop);
}

/// A key-less partitioned table (whole-row images): a detached partition's rows, duplicates
/// included, are gone from the targets after install reloads the table.
#[test]
fn key_less_detach_system() {
    let c = Cluster::start();
    let part =
        "CREATE TABLE logs (id int, region text NOT NULL, msg text) PARTITION BY LIST (region);
        CREATE TABLE logs_eu PARTITION OF logs FOR VALUES IN ('eu');
        CREATE TABLE logs_us PARTITION OF logs FOR VALUES IN ('us');";
    for (db, sql) in [
        ("src", part),
        (
            "plain",
            "CREATE TABLE logs (id int, region text NOT NULL, msg text);",
        ),
    ] {
        c.create_db(db);
        c.psql(db, sql);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["logs"], "", &["src"], &["plain"]);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    let same = |when: &str| {
        drover_wait(&cfg, "s", 120);
        assert_eq!(
            table_md5(&c, "plain", "logs", "id, region, msg"),
            table_md5(&c, "src", "logs", "id, region, msg"),
            "logs {when}"
        );
    };
    c.psql(
        "src",
        "INSERT INTO logs SELECT g % 50, (ARRAY['eu','us'])[g % 2 + 1], 'm' FROM generate_series(1, 400) g;",
    );
    same("after the initial rows");
    c.psql("src", "ALTER TABLE logs DETACH PARTITION logs_eu;");
    drover(&cfg, &["kick", "s"]);
    eventually(
        Duration::from_secs(60),
        "the sync to name the partition",
        || {
            let (state, error) = state(&cfg);
            state == "bad" && error.contains("partition public.logs_eu of table public.logs")
        },
    );
    // Writes to the detached table do not reach the targets as the table's.
    c.psql("src", "DELETE FROM logs_eu WHERE id < 10;");
    drover_ok(&cfg, &["install"]);
    same("after install reloaded the table");
    c.psql(
        "src",
        "DELETE FROM logs_eu WHERE id < 20; INSERT INTO logs VALUES (1, 'us', 'later');",
    );
    same("after later writes");
    daemon.stop();
}

/// Two masters: a partition detached on one is named by the sync; install there reloads the
/// table on the other, so both hold the same rows again.
#[test]
fn two_masters_detach() {
    let major = support::versions::SYSTEM_MAJOR;
    let c = Cluster::start();
    let (part, _, _) = ddl(major, false);
    for db in ["m1", "m2"] {
        c.create_db(db);
        c.psql(db, &part);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["events"], "", &["m1", "m2"], &[]);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    let same = |when: &str| {
        drover_wait(&cfg, "s", 120);
        assert_eq!(
            table_md5(&c, "m1", "events", "id, region"),
            table_md5(&c, "m2", "events", "id, region"),
            "events differ {when}"
        );
    };
    c.psql(
        "m1",
        "INSERT INTO events SELECT g, (ARRAY['eu','us'])[g % 2 + 1], 'm1' FROM generate_series(1, 200) g;",
    );
    c.psql(
        "m2",
        "INSERT INTO events SELECT g, 'apac', 'm2' FROM generate_series(1001, 1200) g;",
    );
    same("after inserts on both");
    c.psql("m1", "ALTER TABLE events DETACH PARTITION events_eu;");
    drover(&cfg, &["kick", "s"]);
    eventually(
        Duration::from_secs(60),
        "the sync to name the partition",
        || {
            let (state, error) = state(&cfg);
            state == "bad" && error.contains(NAMED)
        },
    );
    drover_ok(&cfg, &["install"]);
    same("after install reloaded the table");
    let eu = c.psql("m2", "SELECT count(*) FROM events WHERE region = 'eu'");
    assert_eq!(eu, "0", "the detached partition's rows are gone on m2");
    daemon.stop();
}

/// An install made before partitions were recorded (no drover.partitions): the daemon refuses
/// the partitioned table asking for install, `check` names it, and install fixes it.
#[test]
fn unrecorded_partitions_need_install() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cfg, mut daemon) = setup(support::versions::SYSTEM_MAJOR, dir.path(), false);
    assert_replicated(&c, &cfg, "after the initial rows");
    daemon.stop();
    c.psql("src", "DROP TABLE drover.partitions;");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let want = "table public.events is partitioned but its partitions are not recorded";
    eventually(
        Duration::from_secs(60),
        "the sync to ask for install",
        || {
            let (state, error) = state(&cfg);
            state == "bad" && error.contains(want)
        },
    );
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "check: {text}");
    assert!(text.contains(want), "{text}");
    drover_ok(&cfg, &["install"]);
    c.psql("src", "INSERT INTO events VALUES (5001, 'us', 'later');");
    assert_replicated(&c, &cfg, "after install recorded the partitions");
    daemon.stop();
}

/// A partition detached from one captured table and attached to another (`archive`, installed
/// first): its triggers still call the first table's capture, so it is not captured for
/// `archive` until install, which sends the rows it holds to `archive` and reloads `events`.
#[test]
fn moved_to_another_captured_table() {
    let c = Cluster::start();
    let (part, plain, _) = ddl(support::versions::SYSTEM_MAJOR, false);
    let archive = "CREATE TABLE archive (id int NOT NULL, region text NOT NULL, payload text, \
                   PRIMARY KEY (id, region)) PARTITION BY LIST (region);
                   CREATE TABLE archive_old PARTITION OF archive FOR VALUES IN ('old');";
    let archive_plain =
        "CREATE TABLE archive (id int NOT NULL, region text NOT NULL, payload text, \
                         PRIMARY KEY (id, region));";
    c.create_db("src");
    c.psql("src", &format!("{part}\n{archive}"));
    c.create_db("plain");
    c.psql("plain", &format!("{plain}\n{archive_plain}"));
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["events", "archive"], "", &["src"], &["plain"]);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    let same = |when: &str| {
        drover_wait(&cfg, "s", 120);
        for t in ["events", "archive"] {
            assert_eq!(
                table_md5(&c, "plain", t, "id, region"),
                table_md5(&c, "src", t, "id, region"),
                "{t} {when}"
            );
        }
    };
    c.psql(
        "src",
        "INSERT INTO events SELECT g, (ARRAY['eu','us'])[g % 2 + 1], 'p' FROM generate_series(1, 300) g;
         INSERT INTO archive SELECT g, 'old', 'a' FROM generate_series(1, 50) g;",
    );
    same("after the initial rows");
    c.psql(
        "src",
        "ALTER TABLE events DETACH PARTITION events_eu;
         ALTER TABLE archive ATTACH PARTITION events_eu FOR VALUES IN ('eu');",
    );
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "check: {text}");
    assert!(text.contains(NAMED), "{text}");
    assert!(
        text.contains("table public.archive: partition public.events_eu is not captured"),
        "{text}"
    );
    drover_ok(&cfg, &["install"]);
    same("after install");
    c.psql(
        "src",
        "UPDATE events_eu SET payload = 'moved' WHERE id % 3 = 0;",
    );
    same("after writes to the moved partition");
    daemon.stop();
}
