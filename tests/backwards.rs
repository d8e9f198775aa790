//! Sources and targets that move backwards (a restore, a failover) and a reinstall that drops
//! pending changes: each stops the sync with an error saying what to do, never a silent gap;
//! `drover copy` (or the documented acknowledgement) resumes it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::scenario::*;
use support::*;

const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until the sync is bad with an error containing `needle`; returns the error.
fn wait_for_error(config: &Path, needle: &str) -> String {
    wait_for_sync_error(config, "legacy_to_new", needle)
}

fn wait_for_sync_error(config: &Path, sync: &str, needle: &str) -> String {
    wait_for_daemon(config);
    let mut last = String::new();
    eventually(
        PATIENCE,
        &format!("the sync to fail with {needle:?}"),
        || {
            let s = sync_status(config, sync);
            last = s["last_error"].as_str().unwrap_or("").to_string();
            s["state"] == "bad" && last.contains(needle)
        },
    );
    last
}

/// Runs a shell command as root (the harness runs as root or as the cluster's owner).
fn sh(script: &str) {
    let out = Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn started(src: &Cluster, dst: &Cluster) -> (Setup, Daemon) {
    let setup = one_way((src, "repdb"), (dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    (setup, daemon)
}

fn pgbench_writes(c: &Cluster, transactions: &str) {
    c.pgbench("repdb", &["-n", "-c", "1", "-t", transactions]);
}

#[test]
fn restored_target_below_the_purge_horizon_stops_until_copied() {
    let (src, dst) = pgbench_pair();
    let (setup, mut daemon) = started(&src, &dst);
    pgbench_writes(&src, "100");
    drover_wait(&setup.config, "legacy_to_new", 60);
    dst.psql(
        "repdb",
        "CREATE TABLE saved_progress AS SELECT * FROM drover.progress",
    );
    pgbench_writes(&src, "200");
    drover_wait(&setup.config, "legacy_to_new", 60);
    eventually(PATIENCE, "the applied deltas to be purged", || {
        delta_rows(&src, "repdb") == 0
    });
    daemon.stop();
    // The target comes back from a backup taken before the last rounds.
    dst.psql(
        "repdb",
        "UPDATE drover.progress p SET snapshot = s.snapshot FROM saved_progress s \
         WHERE (p.sync, p.source, p.table_name) = (s.sync, s.source, s.table_name)",
    );
    let mut daemon = Daemon::start(&setup.config);
    let err = wait_for_error(&setup.config, "purged");
    assert!(err.contains("drover copy"), "{err}");
    assert!(err.contains("new"), "names the target: {err}");

    drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    drover_wait(&setup.config, "legacy_to_new", 60);
    // `wait` reads the copied progress; the state turns good with the next round, which may
    // still be backing off after the failed ones.
    eventually(PATIENCE, "the sync to be good after the copy", || {
        sync_status(&setup.config, "legacy_to_new")["state"] == "good"
    });
    pgbench_writes(&src, "50");
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_pgbench_same(&src, &dst);
    daemon.stop();
}

/// Copies the stopped cluster's data directory to `to` (ownership kept).
fn save_data_dir(c: &Cluster, to: &Path) {
    c.stop_immediate();
    sh(&format!(
        "cp -a {} {}",
        c.data_dir().display(),
        to.display()
    ));
    c.restart();
}

#[test]
fn source_restored_from_an_old_copy_stops_until_copied() {
    let (src, dst) = pgbench_pair();
    let (setup, mut daemon) = started(&src, &dst);
    let backup = tempfile::tempdir().unwrap();
    let saved = backup.path().join("data");
    save_data_dir(&src, &saved);
    pgbench_writes(&src, "300");
    drover_wait(&setup.config, "legacy_to_new", 60);
    let applied = table_md5(&dst, "repdb", "pgbench_accounts", "aid");
    // Point-in-time restore of the source to before those writes.
    src.stop_immediate();
    let data = src.data_dir().display().to_string();
    sh(&format!(
        "rm -rf {data} && cp -a {} {data}",
        saved.display()
    ));
    src.restart();
    // New writes on the restored source reuse transaction ids the target has seen as applied.
    pgbench_writes(&src, "20");
    let err = wait_for_error(&setup.config, "went backwards");
    assert!(err.contains("drover copy"), "{err}");
    assert!(err.contains("legacy"), "names the source: {err}");
    // Nothing applied, nothing purged meanwhile.
    assert!(delta_rows(&src, "repdb") > 0);
    let err_again = wait_for_error(&setup.config, "went backwards");
    assert!(err_again.contains("went backwards"));
    assert_eq!(table_md5(&dst, "repdb", "pgbench_accounts", "aid"), applied);

    drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    drover_wait(&setup.config, "legacy_to_new", 60);
    pgbench_writes(&src, "50");
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_pgbench_same(&src, &dst);
    daemon.stop();
}

#[test]
fn source_on_a_new_timeline_stops_until_acknowledged() {
    let (src, dst) = pgbench_pair();
    let (setup, mut daemon) = started(&src, &dst);
    pgbench_writes(&src, "50");
    drover_wait(&setup.config, "legacy_to_new", 60);
    // An archive recovery that ends at once: the server picks a new timeline, as a promoted
    // standby or a point-in-time restore does.
    src.psql("postgres", "ALTER SYSTEM SET restore_command = 'false'");
    src.stop_immediate();
    let signal = src.data_dir().join("recovery.signal");
    sh(&format!(
        "touch {0} && chown --reference={1} {0}",
        signal.display(),
        src.data_dir().display()
    ));
    src.restart();
    eventually(PATIENCE, "the source to leave recovery", || {
        src.psql("postgres", "SELECT pg_is_in_recovery()") == "f"
    });
    pgbench_writes(&src, "20");
    let err = wait_for_error(&setup.config, "timeline");
    assert!(err.contains("source_identity = NULL"), "{err}");

    // The operator checked (this was an up-to-date standby) and accepts the new timeline.
    dst.psql(
        "repdb",
        "UPDATE drover.progress SET source_identity = NULL WHERE sync = 'legacy_to_new'",
    );
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_pgbench_same(&src, &dst);
    daemon.stop();
}

#[test]
fn reinstall_after_a_key_change_stops_the_table_until_copied() {
    let src = Cluster::start();
    let dst = Cluster::start();
    let ddl = "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, v int);";
    for c in [&src, &dst] {
        c.create_db("repdb");
        c.psql("repdb", ddl);
    }
    src.psql(
        "repdb",
        "INSERT INTO items SELECT g, 'c' || g, 0 FROM generate_series(1, 1000) g",
    );
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &["public.items"]);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    drover_wait(&setup.config, "legacy_to_new", 60);
    daemon.stop();
    // Changes pending in the delta table, then the key changes and install rebuilds it.
    src.psql("repdb", "UPDATE items SET v = v + 1 WHERE id % 3 = 0");
    let rekey = "ALTER TABLE items DROP CONSTRAINT items_pkey, ADD PRIMARY KEY (code);";
    src.psql("repdb", rekey);
    dst.psql("repdb", rekey);
    drover_ok(&setup.config, &["install"]);

    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    let err = wait_for_error(&setup.config, "purged");
    assert!(err.contains("public.items"), "names the table: {err}");
    assert!(err.contains("--table"), "{err}");

    drover_ok(
        &setup.config,
        &["copy", "legacy_to_new", "--table", "public.items"],
    );
    src.psql("repdb", "UPDATE items SET v = v + 10 WHERE id % 7 = 0");
    drover_wait(&setup.config, "legacy_to_new", 60);
    assert_eq!(
        table_md5(&src, "repdb", "items", "code"),
        table_md5(&dst, "repdb", "items", "code")
    );
    daemon.stop();
}

/// A source where drover is a non-superuser owning its database: the identity each round
/// reads must be readable there, with `pg_control_system()` granted (the default) or revoked
/// (some managed services), on the oldest and newest tested majors.
fn sync_as_source_owner(src: &Cluster, revoke: bool) -> String {
    src.psql("postgres", "CREATE ROLE drover LOGIN NOSUPERUSER");
    src.psql("postgres", "CREATE DATABASE src OWNER drover");
    src.create_db("dst");
    if revoke {
        // Function privileges are per database.
        src.psql(
            "src",
            "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC",
        );
    }
    let table = "CREATE TABLE items (id int PRIMARY KEY, v text)";
    src.psql("src", &format!("SET ROLE drover; {table}"));
    src.psql("dst", table);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n\
         [databases.legacy]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"src\"\nuser = \"drover\"\n{}\
         [relgroups.herd]\ntables = [\"public.items\"]\n\
         [syncs.legacy_to_new]\nrelgroup = \"herd\"\nsources = [\"legacy\"]\ntargets = [\"new\"]\n",
        free_port(),
        src.port,
        src.database_toml("new", "dst"),
    );
    let config = write_config(dir.path(), &toml);
    drover_ok(&config, &["install"]);
    let mut daemon = Daemon::start(&config);
    wait_for_daemon(&config);
    src.psql(
        "src",
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    drover_wait(&config, "legacy_to_new", 60);
    assert_eq!(
        table_md5(src, "src", "items", "id"),
        table_md5(src, "dst", "items", "id")
    );
    daemon.stop();
    src.psql(
        "dst",
        "SELECT DISTINCT source_identity FROM drover.progress",
    )
}

#[test]
fn identity_is_readable_by_a_non_superuser_source() {
    for major in [10, 18] {
        let id = sync_as_source_owner(&support::versions::cluster(major), false);
        let (system, timeline) = id.split_once('/').expect("system/timeline");
        assert!(system.parse::<u64>().is_ok(), "PostgreSQL {major}: {id}");
        assert_eq!(timeline, "00000001", "PostgreSQL {major}: {id}");
    }
    let id = sync_as_source_owner(&Cluster::start(), true);
    assert_eq!(id, "?/00000001", "pg_control_system() revoked");
}

#[test]
fn multi_master_stops_when_a_master_comes_back_from_a_backup() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}\
         [relgroups.herd]\ntables = [\"public.pgbench_accounts\", \"public.pgbench_tellers\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let config = write_config(dir.path(), &toml);
    drover_ok(&config, &["install"]);
    let mut daemon = Daemon::start(&config);
    wait_for_daemon(&config);
    c.pgbench("a", &["-n", "-c", "1", "-t", "50"]);
    drover_wait(&config, "mm", 60);
    c.psql(
        "b",
        "CREATE TABLE saved_progress AS SELECT * FROM drover.progress",
    );
    c.pgbench("a", &["-n", "-c", "1", "-t", "100"]);
    drover_wait(&config, "mm", 60);
    eventually(PATIENCE, "the applied deltas to be purged", || {
        delta_rows(&c, "a") == 0
    });
    daemon.stop();
    c.psql(
        "b",
        "UPDATE drover.progress p SET snapshot = s.snapshot FROM saved_progress s \
         WHERE (p.sync, p.source, p.table_name) = (s.sync, s.source, s.table_name)",
    );
    let mut daemon = Daemon::start(&config);
    let err = wait_for_sync_error(&config, "mm", "purged");
    assert!(err.contains("target \"b\""), "{err}");
    daemon.stop();
}
