//! Writes made to partitions by name: INSERT/UPDATE/DELETE/TRUNCATE of one partition, under
//! concurrent load with writes through the parent, and partitions created or attached (with
//! rows) while the daemon runs. PostgreSQL 10 has no row triggers on partitioned tables (each
//! leaf is captured on its own); 11+ clones them, so every test runs on 10, the system major and
//! a new one.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scenario::*;
use support::*;

/// The source's table, and its shapes on the three targets: partitioned the same way,
/// differently, and not at all. PostgreSQL 10 has no keys on partitioned tables (each leaf
/// has its own and the key is configured), no DEFAULT and no HASH partitions.
struct Layout {
    source: String,
    same: String,
    diff: String,
    plain: &'static str,
    keys: &'static str,
}

fn layout(major: u32) -> Layout {
    let cols = "id int NOT NULL, region text NOT NULL, at date NOT NULL, payload text";
    let plain = "CREATE TABLE events (id int NOT NULL, region text NOT NULL, at date NOT NULL, \
                 payload text, PRIMARY KEY (id, region));";
    if major == 10 {
        let part = |name: &str, bound: &str| {
            format!("CREATE TABLE {name} PARTITION OF events (PRIMARY KEY (id, region)) {bound};\n")
        };
        let mut source = format!("CREATE TABLE events ({cols}) PARTITION BY LIST (region);\n");
        for (n, r) in [
            ("events_eu", "eu"),
            ("events_us", "us"),
            ("events_apac", "apac"),
        ] {
            source.push_str(&part(n, &format!("FOR VALUES IN ('{r}')")));
        }
        let mut diff = format!("CREATE TABLE events ({cols}) PARTITION BY RANGE (id);\n");
        diff.push_str(&part("events_low", "FOR VALUES FROM (MINVALUE) TO (2000)"));
        diff.push_str(&part("events_high", "FOR VALUES FROM (2000) TO (MAXVALUE)"));
        return Layout {
            same: source.clone(),
            source,
            diff,
            plain,
            keys: "[relgroups.g.keys]\n\"public.events\" = [\"id\", \"region\"]\n",
        };
    }
    let source = format!(
        "CREATE TABLE events ({cols}, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
CREATE TABLE events_other PARTITION OF events DEFAULT;"
    );
    let diff = format!(
        "CREATE TABLE events ({cols}, PRIMARY KEY (id, region)) PARTITION BY HASH (id);
CREATE TABLE events_h0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_h1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);"
    );
    Layout {
        same: source.clone(),
        source,
        diff,
        plain,
        keys: "",
    }
}

/// A source and three targets on one cluster of `major`, installed, with 3000 rows copied
/// through the parent and the daemon running.
fn setup(major: u32, dir: &Path) -> (Cluster, PathBuf, Daemon, Layout) {
    let c = support::versions::cluster(major);
    let l = layout(major);
    c.create_db("src");
    c.psql("src", &l.source);
    c.psql("src", "CREATE SEQUENCE ids START 100000;");
    for (db, ddl) in [
        ("same", &l.same),
        ("diff", &l.diff),
        ("plain", &l.plain.to_string()),
    ] {
        c.create_db(db);
        c.psql(db, ddl);
    }
    let toml = sync_toml(
        &c,
        &["events"],
        l.keys,
        &["src"],
        &["same", "diff", "plain"],
    );
    let cfg = write_config(dir, &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    drover_ok(&cfg, &["install"]);
    let daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "INSERT INTO events SELECT g, (ARRAY['eu','us','apac'])[g % 3 + 1], date '2024-01-01' + g, 'p' || g \
         FROM generate_series(1, 3000) g;",
    );
    (c, cfg, daemon, l)
}

/// Waits for the sync and compares the whole table on every target with the source.
fn assert_replicated(c: &Cluster, cfg: &Path, when: &str) {
    drover_wait(cfg, "s", 120);
    let want = table_md5(c, "src", "events", "id, region");
    for db in ["same", "diff", "plain"] {
        assert_eq!(
            table_md5(c, db, "events", "id, region"),
            want,
            "events on {db} {when}"
        );
    }
}

/// Through the parent: inserts, updates, deletes, and (11+) rows moving between partitions.
const THROUGH_PARENT: &str = "\\set id random(1, 3000)
INSERT INTO events VALUES (nextval('ids'), (ARRAY['eu','us','apac'])[1 + :id % 3], date '2024-03-01', 'w1');
UPDATE events SET payload = 'u1-' || :id WHERE id = :id;
DELETE FROM events WHERE id = :id + 1 AND payload LIKE 'p%';
";
const MOVE_THROUGH_PARENT: &str =
    "UPDATE events SET region = 'us' WHERE id = :id + 2 AND region = 'eu';\n";

/// Partitions named directly.
const BY_NAME: &str = "\\set id random(1, 3000)
INSERT INTO events_eu VALUES (nextval('ids'), 'eu', date '2024-02-01', 'w2');
UPDATE events_us SET payload = 'u2-' || :id WHERE id = :id;
DELETE FROM events_eu WHERE id = :id + 3;
";

fn writes_by_name_under_load(major: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (c, cfg, mut daemon, _) = setup(major, dir.path());
    let mut parent = THROUGH_PARENT.to_string();
    if major >= 11 {
        parent.push_str(MOVE_THROUGH_PARENT);
    }
    let scripts = [("parent.sql", parent), ("by_name.sql", BY_NAME.to_string())];
    let writers: Vec<_> = scripts
        .iter()
        .map(|(file, body)| {
            let path = dir.path().join(file);
            std::fs::write(&path, body).unwrap();
            let path = path.to_string_lossy().to_string();
            pgbench_in_background(&c, "src", &["-n", "-c", "1", "-t", "400", "-f", &path])
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    assert_replicated(&c, &cfg, "after writes by name and through the parent");

    // A TRUNCATE of one partition deletes exactly its rows on every target.
    c.psql("src", "TRUNCATE events_us");
    assert_replicated(&c, &cfg, "after TRUNCATE events_us");
    // Inserted and truncated by name in one transaction, then the parent truncated with rows
    // written after it in the same transaction.
    c.psql(
        "src",
        "BEGIN; INSERT INTO events_eu VALUES (50001, 'eu', '2024-05-01', 'x'); TRUNCATE events_eu; \
         INSERT INTO events_us VALUES (50002, 'us', '2024-05-01', 'y'); COMMIT;",
    );
    assert_replicated(&c, &cfg, "after a partition truncated in a transaction");
    c.psql(
        "src",
        "BEGIN; TRUNCATE events; INSERT INTO events VALUES (50003, 'eu', '2024-05-01', 'z'); \
         TRUNCATE events_us; INSERT INTO events_us VALUES (50004, 'us', '2024-05-01', 'w'); COMMIT;",
    );
    assert_replicated(&c, &cfg, "after the parent truncated");
    daemon.stop();
}

/// The sync's status: its state and last error.
fn state(cfg: &Path) -> (String, String) {
    state_and_error(cfg, "s")
}

/// A sub-partitioned partition (its leaf has its own key on 10).
const SUB: &str = "CREATE TABLE events_sa PARTITION OF events FOR VALUES IN ('sa', 'sb') PARTITION BY LIST (region);
    CREATE TABLE events_sa1 PARTITION OF events_sa FOR VALUES IN ('sa');";

fn partitions_added_while_running(major: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (c, cfg, mut daemon, _) = setup(major, dir.path());
    assert_replicated(&c, &cfg, "after the initial rows");
    let key = if major == 10 {
        " (PRIMARY KEY (id, region))"
    } else {
        ""
    };
    // The targets first (the documented order): the same-partitioned one gets the partitions.
    c.psql(
        "same",
        &format!(
            "CREATE TABLE events_asia PARTITION OF events{key} FOR VALUES IN ('asia');
             CREATE TABLE events_af PARTITION OF events{key} FOR VALUES IN ('af');
             {SUB}"
        ),
    );
    // One partition created, one attached with rows it already holds, one sub-partitioned.
    c.psql(
        "src",
        &format!(
            "{SUB}
             CREATE TABLE events_asia PARTITION OF events{key} FOR VALUES IN ('asia');
             CREATE TABLE events_af (LIKE events INCLUDING ALL);
             {}
             INSERT INTO events_af SELECT g, 'af', date '2024-06-01', 'before attach' FROM generate_series(5001, 5400) g;
             ALTER TABLE events ATTACH PARTITION events_af FOR VALUES IN ('af');",
            if major == 10 {
                "ALTER TABLE events_af ADD PRIMARY KEY (id, region);"
            } else {
                ""
            }
        ),
    );
    c.psql(
        "src",
        "INSERT INTO events_asia SELECT g, 'asia', date '2024-07-01', 'new' FROM generate_series(6001, 6300) g;
         UPDATE events_af SET payload = 'after attach' WHERE id % 3 = 0;
         DELETE FROM events_af WHERE id % 5 = 0;
         INSERT INTO events VALUES (7001, 'asia', '2024-07-02', 'through parent');
         INSERT INTO events_sa VALUES (8001, 'sa', '2024-07-03', 'sub-partitioned');",
    );
    // `check` names both partitions; the sync stops with an error naming them, never good.
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "check: {text}");
    for p in ["events_asia", "events_af", "events_sa", "events_sa1"] {
        assert!(
            text.contains(&format!("partition public.{p} is not captured")),
            "check names {p}: {text}"
        );
    }
    drover(&cfg, &["kick", "s"]);
    eventually(
        Duration::from_secs(60),
        "the sync to stop naming the partition",
        || {
            let (state, error) = state(&cfg);
            state == "bad" && error.contains("events_af") && error.contains("drover install")
        },
    );
    c.psql(
        "src",
        "UPDATE events_asia SET payload = 'while stopped' WHERE id % 7 = 0;",
    );
    drover(&cfg, &["kick", "s"]);
    assert_ne!(
        state(&cfg).0,
        "good",
        "good while a partition is not captured"
    );

    let out = drover_ok(&cfg, &["install"]);
    assert!(
        out.contains(
            "partitions captured: public.events_af, public.events_asia, public.events_sa, public.events_sa1"
        ),
        "{out}"
    );
    assert_replicated(&c, &cfg, "after install captured the new partitions");
    assert_eq!(state(&cfg).0, "good");
    c.psql(
        "src",
        "TRUNCATE events_af; DELETE FROM events_asia WHERE id % 2 = 0;",
    );
    assert_replicated(&c, &cfg, "after the attached partition was truncated");
    daemon.stop();

    // A partition whose capture was dropped by hand is named too.
    c.psql("src", "DROP TRIGGER drover_capture_ptrunc ON events_eu;");
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "check: {text}");
    assert!(
        text.contains("partition public.events_eu is not captured"),
        "{text}"
    );
    drover_ok(&cfg, &["uninstall"]);
    let left = c.psql(
        "src",
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'drover%'",
    );
    assert_eq!(left, "0", "drover triggers left after uninstall");
}

#[test]
fn writes_by_name_pg10() {
    writes_by_name_under_load(10);
}

#[test]
fn writes_by_name_system() {
    writes_by_name_under_load(support::versions::SYSTEM_MAJOR);
}

#[test]
fn writes_by_name_pg17() {
    writes_by_name_under_load(17);
}

#[test]
fn partitions_added_pg10() {
    partitions_added_while_running(10);
}

#[test]
fn partitions_added_system() {
    partitions_added_while_running(support::versions::SYSTEM_MAJOR);
}

#[test]
fn partitions_added_pg17() {
    partitions_added_while_running(17);
}

/// A partitioned table without a key replicates as a multiset of row images: writes and a
/// TRUNCATE by partition name, and a partition attached with rows (the table is reloaded).
fn key_less_partitions(major: u32) {
    let c = support::versions::cluster(major);
    let part =
        "CREATE TABLE logs (id int, region text NOT NULL, msg text) PARTITION BY LIST (region);
        CREATE TABLE logs_eu PARTITION OF logs FOR VALUES IN ('eu');
        CREATE TABLE logs_us PARTITION OF logs FOR VALUES IN ('us');
        CREATE TABLE logs_af PARTITION OF logs FOR VALUES IN ('af');";
    c.create_db("src");
    c.psql(
        "src",
        &part.replace(
            "CREATE TABLE logs_af PARTITION OF logs FOR VALUES IN ('af');",
            "",
        ),
    );
    c.create_db("same");
    c.psql("same", part);
    c.create_db("plain");
    c.psql(
        "plain",
        "CREATE TABLE logs (id int, region text NOT NULL, msg text);",
    );
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["logs"], "", &["src"], &["same", "plain"]);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    let same = |when: &str| {
        drover_wait(&cfg, "s", 120);
        let want = table_md5(&c, "src", "logs", "id, region, msg");
        for db in ["same", "plain"] {
            assert_eq!(
                table_md5(&c, db, "logs", "id, region, msg"),
                want,
                "logs on {db} {when}"
            );
        }
    };
    c.psql(
        "src",
        "INSERT INTO logs SELECT g % 50, (ARRAY['eu','us'])[g % 2 + 1], 'm' || (g % 7) FROM generate_series(1, 400) g;
         INSERT INTO logs_eu VALUES (1, 'eu', 'dup'), (1, 'eu', 'dup'), (NULL, 'eu', NULL);
         UPDATE logs_us SET msg = 'changed' WHERE id % 5 = 0;
         DELETE FROM logs_eu WHERE id % 9 = 0;",
    );
    same("after writes by partition name");
    c.psql("src", "TRUNCATE logs_us");
    same("after TRUNCATE logs_us");
    c.psql(
        "src",
        "CREATE TABLE logs_af (id int, region text NOT NULL, msg text);
         INSERT INTO logs_af SELECT g, 'af', 'before' FROM generate_series(1, 30) g;
         ALTER TABLE logs ATTACH PARTITION logs_af FOR VALUES IN ('af');
         INSERT INTO logs_af VALUES (31, 'af', 'after'), (31, 'af', 'after');",
    );
    drover_ok(&cfg, &["install"]);
    same("after a partition was attached with rows");
    daemon.stop();
}

#[test]
fn key_less_partitions_pg10() {
    key_less_partitions(10);
}

#[test]
fn key_less_partitions_system() {
    key_less_partitions(support::versions::SYSTEM_MAJOR);
}

/// Two masters of a partitioned table: writes naming partitions on both replicate both ways; a
/// partition created on both while the daemon runs stops the sync, naming it, until install.
#[test]
fn two_masters_write_partitions_by_name() {
    let c = Cluster::start();
    let l = layout(support::versions::SYSTEM_MAJOR);
    for db in ["m1", "m2"] {
        c.create_db(db);
        c.psql(db, &l.source);
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
        "INSERT INTO events_eu SELECT g, 'eu', '2024-01-01', 'm1' FROM generate_series(1, 200) g;",
    );
    c.psql(
        "m2",
        "INSERT INTO events_us SELECT g, 'us', '2024-01-01', 'm2' FROM generate_series(1, 200) g;",
    );
    same("after inserts naming partitions");
    c.psql(
        "m1",
        "UPDATE events_us SET payload = 'from m1' WHERE id % 3 = 0;",
    );
    c.psql(
        "m2",
        "DELETE FROM events_eu WHERE id % 4 = 0; TRUNCATE events_other;",
    );
    same("after updates, deletes and a truncate naming partitions");

    for db in ["m1", "m2"] {
        c.psql(
            db,
            "CREATE TABLE events_asia PARTITION OF events FOR VALUES IN ('asia');",
        );
    }
    c.psql(
        "m2",
        "INSERT INTO events_asia VALUES (900, 'asia', '2024-01-02', 'new');",
    );
    drover(&cfg, &["kick", "s"]);
    eventually(
        Duration::from_secs(60),
        "the sync to name the partition",
        || {
            let (state, error) = state(&cfg);
            state == "bad" && error.contains("partition public.events_asia is not captured")
        },
    );
    drover_ok(&cfg, &["install"]);
    same("after install captured the new partition");
    daemon.stop();
}
