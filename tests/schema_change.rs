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

/// Multi-master: a column added on one master stops the sync until every master has it; then
/// values written on either side into it replicate, without a restart.
#[test]
fn column_added_on_every_master_replicates_without_restart() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, TABLE);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.herd]\ntables = [\"t\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let config = write_config(dir.path(), &toml);
    drover_ok(&config, &["install"]);
    let mut daemon = Daemon::start_with(&config, &[], &[("NO_COLOR", "1")]);
    wait_for_daemon(&config);
    drover_wait(&config, "mm", 60);
    c.psql("a", "ALTER TABLE t ADD COLUMN note text");
    c.psql("a", "UPDATE t SET note = 'a' || id WHERE id % 3 = 0");
    eventually(
        Duration::from_secs(30),
        "the sync to name the missing column",
        || {
            let s = sync_status(&config, "mm");
            s["state"] == "bad"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("column \"note\" is missing"))
        },
    );
    c.psql("b", "ALTER TABLE t ADD COLUMN note text");
    c.psql("b", "UPDATE t SET note = 'b' || id WHERE id % 3 = 1");
    drover_wait(&config, "mm", 60);
    assert_eq!(
        table_md5(&c, "a", "t", "id"),
        table_md5(&c, "b", "t", "id"),
        "t differs between the masters"
    );
    eventually(Duration::from_secs(30), "the sync to report good", || {
        sync_status(&config, "mm")["state"] == "good"
    });
    daemon.stop();
}

/// A table without a key captures whole rows with the columns it had at install: after a
/// column change the sync stops that table and says to install again, never applies images
/// of the old columns as if nothing changed.
#[test]
fn keyless_table_column_change_asks_for_install() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g;");
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["t"]);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start_with(&setup.config, &[], &[("NO_COLOR", "1")]);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    c.psql("dst", "ALTER TABLE t ADD COLUMN note text");
    c.psql("src", "ALTER TABLE t ADD COLUMN note text");
    c.psql("src", "UPDATE t SET note = 'n' WHERE id = 1");
    eventually(
        Duration::from_secs(30),
        "the sync to ask for drover install",
        || {
            let s = sync_status(&setup.config, "legacy_to_new");
            s["state"] == "bad"
                && s["last_error"].as_str().is_some_and(|e| {
                    e.contains("public.t") && e.contains("run drover install again")
                })
        },
    );
    daemon.stop();
}
