//! Column changes while the daemon runs (issue 10 item 6): table plans follow them without a
//! restart. A column added on the target and then on the source (the documented order)
//! replicates its values; a column added on the source only stops the table with an error
//! naming table and column, and the sync recovers by itself once the target has it too.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); \
                     INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) g;";

/// Source and target databases with `t`, installed, the daemon running and caught up.
fn running() -> (Cluster, Setup, Daemon) {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, TABLE);
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["t"]);
    drover_ok(&setup.config, &["install"]);
    let daemon = Daemon::start_with(&setup.config, &[], &[("NO_COLOR", "1")]);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    (c, setup, daemon)
}

/// A light write load on the source: about 50 single-row updates a second for `secs` seconds.
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

fn same(c: &Cluster) {
    assert_eq!(
        table_md5(c, "src", "t", "id"),
        table_md5(c, "dst", "t", "id"),
        "t differs between source and target"
    );
}

fn good_eventually(config: &std::path::Path) {
    eventually(Duration::from_secs(30), "the sync to report good", || {
        sync_status(config, "legacy_to_new")["state"] == "good"
    });
}

#[test]
fn column_added_on_target_then_source_replicates_without_restart() {
    let (c, setup, mut daemon) = running();
    let load = light_load(&c, setup.dir.path(), 6);
    c.psql("dst", "ALTER TABLE t ADD COLUMN note text");
    c.psql("src", "ALTER TABLE t ADD COLUMN note text");
    c.psql("src", "UPDATE t SET note = 'n' || id WHERE id % 3 = 0");
    c.psql("src", "INSERT INTO t VALUES (1000, 1, 'new row')");
    load.join().expect("load thread");
    drover_wait(&setup.config, "legacy_to_new", 60);
    same(&c);
    good_eventually(&setup.config);
    assert!(daemon.is_running(), "the daemon exited");
    daemon.stop();
}

#[test]
fn column_added_on_source_only_stops_until_the_target_has_it() {
    let (c, setup, mut daemon) = running();
    c.psql(
        "src",
        "ALTER TABLE t ADD COLUMN extra int NOT NULL DEFAULT 0",
    );
    c.psql("src", "UPDATE t SET extra = id, v = v + 1 WHERE id <= 10");
    eventually(
        Duration::from_secs(30),
        "the sync to report the missing column",
        || {
            let s = sync_status(&setup.config, "legacy_to_new");
            let err = s["last_error"].as_str().unwrap_or_default().to_string();
            s["state"] == "bad"
                && err.contains("public.t")
                && err.contains("column \"extra\" is missing")
        },
    );
    c.psql(
        "dst",
        "ALTER TABLE t ADD COLUMN extra int NOT NULL DEFAULT 0",
    );
    drover_wait(&setup.config, "legacy_to_new", 60);
    same(&c);
    good_eventually(&setup.config);
    daemon.stop();
}
