//! One source, four targets, a batch too large to travel as text: the source actor reads
//! its rows once, as COPY data, and every target at the batch's start applies them from memory
//! (`round::batch_copy`). Before, each target read the backlog from the source itself, so the
//! source's work grew with the number of targets. Measured by the source's own statistics of
//! the rows it read from the table (the daemon's sessions end before they are read: a backend
//! reports its statistics when it exits). Also: the data read once applies exactly to targets
//! with live foreign keys (in place, as a role that is no superuser), in replica mode, and to a
//! key-less table.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scenario::*;
use support::*;

/// Rows of the table before the backlog.
const FIRST: u32 = 100;
/// Rows the backlog inserts.
const BULK: u32 = 5_000;

fn md5(c: &Cluster, db: &str, table: &str) -> String {
    table_md5(c, db, table, "id")
}

/// Rows read from `public.<table>` on `db` so far, by scans and index fetches.
fn rows_read(c: &Cluster, db: &str, table: &str) -> i64 {
    let out = c.psql(
        db,
        &format!(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables \
             WHERE relid = 'public.{table}'::regclass"
        ),
    );
    out.trim().parse().expect("a row count")
}

/// The source's md5 of `table` and then the rows read from it so far, once the md5's own scan
/// is counted (a session reports its statistics when it ends).
fn source_md5(c: &Cluster, table: &str) -> (String, i64) {
    let before = rows_read(c, "src", table);
    let want = md5(c, "src", table);
    let rows: i64 = (want.split(':').next().and_then(|n| n.parse().ok())).expect("count:md5");
    eventually(
        Duration::from_secs(10),
        "the md5's scan to be counted",
        || rows_read(c, "src", table) >= before + rows,
    );
    (want, rows_read(c, "src", table))
}

/// Stops the daemon and waits until its sessions on `db` have ended (and so reported their
/// statistics).
fn stop_and_flush(c: &Cluster, daemon: &mut Daemon, db: &str) {
    daemon.stop();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND application_name LIKE 'drover%'"
    );
    eventually(Duration::from_secs(30), "drover's sessions to end", || {
        c.psql("postgres", &sql) == "0"
    });
}

/// Starts the daemon on `cfg` and waits until every target has the source's `want` (the
/// source's md5 of `table`, taken once so that the wait reads nothing on the source).
fn catch_up(c: &Cluster, cfg: &Path, targets: &[&str], table: &str, want: &str) -> Daemon {
    let daemon = Daemon::start(cfg);
    wait_for_daemon(cfg);
    for t in targets {
        let what = format!("{t} to have the backlog");
        eventually(Duration::from_secs(60), &what, || md5(c, t, table) == want);
    }
    drover_wait(cfg, "s", 60);
    daemon
}

/// Writes `toml` into `dir`, installs, and returns the config's path.
fn installed(dir: &Path, toml: &str) -> PathBuf {
    let cfg = write_config(dir, toml);
    drover_ok(&cfg, &["install"]);
    cfg
}

#[test]
fn a_backlog_is_read_once_for_four_targets() {
    const TARGETS: [&str; 4] = ["t1", "t2", "t3", "t4"];
    let c = Cluster::start();
    for db in ["src"].iter().chain(&TARGETS) {
        c.create_db(db);
        c.psql(db, "CREATE TABLE herd (id int PRIMARY KEY, v text)");
    }
    // Nothing but drover and this test reads the source's table.
    c.psql("src", "ALTER TABLE herd SET (autovacuum_enabled = off)");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = installed(
        dir.path(),
        &sync_toml(&c, &["public.herd"], "", &["src"], &TARGETS),
    );
    c.psql(
        "src",
        &format!("INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, {FIRST}) g"),
    );
    let want = md5(&c, "src", "herd");
    let mut daemon = catch_up(&c, &cfg, &TARGETS, "herd", &want);
    stop_and_flush(&c, &mut daemon, "src");

    // One transaction while the daemon is stopped: the targets' first rounds find it.
    c.psql(
        "src",
        &format!(
            "BEGIN; INSERT INTO herd SELECT g, 'bulk' FROM generate_series(1000000, {}) g; \
             UPDATE herd SET v = v || 'b' WHERE id % 3 = 0; COMMIT;",
            1_000_000 + BULK - 1
        ),
    );
    let changed = i64::from(BULK + FIRST / 3);
    let (want, before) = source_md5(&c, "herd");
    let mut daemon = catch_up(&c, &cfg, &TARGETS, "herd", &want);
    stop_and_flush(&c, &mut daemon, "src");
    let read = rows_read(&c, "src", "herd") - before;
    eprintln!("{changed} changed keys; the source read {read} rows of the table for 4 targets");
    // Each target reading its own: at least 4 x the changed rows (or 4 scans of the table).
    assert!(
        read < 2 * changed,
        "the source read {read} rows for {changed} changed keys and 4 targets: \
         the backlog was read more than once"
    );
}

const FK_SCHEMA: &str = "
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, n int);
CREATE TABLE child (id int PRIMARY KEY,
    parent_id int REFERENCES parent (id) ON DELETE CASCADE, v text);
CREATE TABLE log (id int, note text);";

const FK_TABLES: [&str; 3] = ["parent", "child", "log"];

/// One transaction of every kind of change, over the text limit.
fn mixed_batch(from: u32) -> String {
    let to = from + 999;
    format!(
        "BEGIN;\n\
         INSERT INTO parent SELECT g, 'p' || g, g FROM generate_series({from}, {to}) g;\n\
         INSERT INTO child SELECT g, g, 'c' || g FROM generate_series({from}, {to}) g;\n\
         UPDATE parent SET name = name || ' v2', n = n + 1 WHERE id % 7 = 0;\n\
         UPDATE child SET v = 'moved', parent_id = {from} WHERE id % 11 = 0;\n\
         DELETE FROM parent WHERE id % 13 = 0;\n\
         INSERT INTO log SELECT g % 50, 'n' || g FROM generate_series({from}, {to}) g;\n\
         DELETE FROM log WHERE id % 9 = 0;\n\
         COMMIT;"
    )
}

#[test]
fn a_large_batch_read_once_applies_exactly_in_place_and_in_replica_mode() {
    let targets = ["plain", "fk", "plain2", "fk2"];
    let c = Cluster::start();
    // `fk` and `fk2` belong to a role that is no superuser: it owns its tables but may not
    // turn triggers off, so FK checks and cascades are live while drover applies.
    c.psql(
        "postgres",
        "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
    );
    for db in ["src"].iter().chain(&targets) {
        if db.starts_with("fk") {
            c.psql("postgres", &format!("CREATE DATABASE {db} OWNER drover"));
            c.psql(db, &format!("SET ROLE drover; {FK_SCHEMA}"));
        } else {
            c.create_db(db);
            c.psql(db, FK_SCHEMA);
        }
    }
    c.psql("src", "ALTER TABLE parent SET (autovacuum_enabled = off)");
    let tables: Vec<String> = FK_TABLES.iter().map(|t| format!("public.{t}")).collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let mut toml = sync_toml(&c, &tables, "", &["src"], &targets);
    // Rows are updated in place there, parents before children.
    for db in ["fk", "fk2"] {
        toml = toml.replace(
            &format!("dbname = \"{db}\"\nuser = \"postgres\"\n"),
            &format!("dbname = \"{db}\"\nuser = \"drover\"\nreplica_role = \"off\"\n"),
        );
    }
    assert_eq!(toml.matches("user = \"drover\"").count(), 2, "{toml}");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = installed(dir.path(), &toml);
    for from in [1, 5_000] {
        c.psql("src", &mixed_batch(from));
        let (want, before) = source_md5(&c, "parent");
        let mut daemon = catch_up(&c, &cfg, &targets, "parent", &want);
        stop_and_flush(&c, &mut daemon, "src");
        let read = rows_read(&c, "src", "parent") - before;
        for t in targets {
            for table in FK_TABLES {
                let order = if table == "log" { "id, note" } else { "id" };
                assert_eq!(
                    table_md5(&c, t, table, order),
                    table_md5(&c, "src", table, order),
                    "{table} on {t} after the batch from {from}"
                );
            }
        }
        // The parents the batch left changed: what one read of the current rows fetches by
        // index (a scan of the table fetches all of them, at most twice as many here).
        let changed: i64 = c
            .psql(
                "src",
                &format!(
                    "SELECT count(*) FROM parent WHERE id BETWEEN {from} AND {} OR id % 7 = 0",
                    from + 999
                ),
            )
            .parse()
            .unwrap();
        eprintln!("batch from {from}: the source read {read} rows of parent, {changed} changed");
        // Each of 4 targets reading its own: at least 4 x the changed rows.
        assert!(
            read * 2 < changed * 5,
            "the source read {read} rows of parent ({changed} changed) for 4 targets"
        );
    }
}

#[test]
fn batches_not_held_in_memory_go_to_each_targets_own_rounds() {
    let targets = ["t1", "t2"];
    let c = Cluster::start();
    let schema = "CREATE TABLE wide (id int PRIMARY KEY, pad text)";
    for db in ["src"].iter().chain(&targets) {
        c.create_db(db);
        c.psql(db, schema);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = installed(
        dir.path(),
        &sync_toml(&c, &["public.wide"], "", &["src"], &targets),
    );
    let log = [("RUST_LOG", "info,drover::round::batch_copy=debug")];
    let mut daemon = Daemon::start_with(&cfg, &[], &log);
    wait_for_daemon(&cfg);
    // Over the 32 MiB a shared batch holds (60,000 rows of 1 kB), within a round's budget:
    // the read stops halfway, its session is rolled back and pooled again, and each target
    // reads its own.
    c.psql(
        "src",
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 60000) g",
    );
    let reaches = |what: &str| {
        let want = md5(&c, "src", "wide");
        for t in targets {
            let what = format!("{t} to have {what}");
            eventually(Duration::from_secs(60), &what, || {
                md5(&c, t, "wide") == want
            });
        }
    };
    reaches("the wide batch");
    // A TRUNCATE (all of a table's rows) is not held either.
    c.psql(
        "src",
        "BEGIN; TRUNCATE wide; \
         INSERT INTO wide SELECT g, 'after' FROM generate_series(1, 500) g; COMMIT;",
    );
    reaches("the truncate");
    // The sessions that carried the dropped read still serve rounds: small and large ones.
    c.psql("src", "UPDATE wide SET pad = 'small' WHERE id <= 10");
    reaches("a small batch after them");
    c.psql("src", "UPDATE wide SET pad = 'large' WHERE id > 10");
    reaches("a large batch after them");
    drover_wait(&cfg, "s", 60);
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("shared batch over 33554432 bytes"),
        "the wide batch was not read into memory and dropped:\n{log}"
    );
    for level in ["WARN", "ERROR"] {
        assert!(!log.contains(level), "a round failed:\n{log}");
    }
}

/// A column added while large batches flow (on the targets, then on the source: the
/// documented order): a batch read before the change carries the old columns, one after it
/// the new one, and every target ends equal to the source, its new column included.
#[test]
fn a_column_added_between_large_batches_reaches_every_target() {
    let targets = ["t1", "t2", "t3"];
    let c = Cluster::start();
    for db in ["src"].iter().chain(&targets) {
        c.create_db(db);
        c.psql(db, "CREATE TABLE herd (id int PRIMARY KEY, v text)");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = installed(
        dir.path(),
        &sync_toml(&c, &["public.herd"], "", &["src"], &targets),
    );
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 3000) g",
    );
    for db in targets {
        c.psql(db, "ALTER TABLE herd ADD COLUMN note text");
    }
    c.psql("src", "ALTER TABLE herd ADD COLUMN note text");
    c.psql("src", "UPDATE herd SET note = 'n' || id WHERE id % 2 = 0");
    c.psql(
        "src",
        "INSERT INTO herd SELECT g, 'late', 'with note' FROM generate_series(3001, 4000) g",
    );
    drover_wait(&cfg, "s", 60);
    let want = md5(&c, "src", "herd");
    assert!(want.starts_with("4000:"), "{want}");
    for t in targets {
        let what = format!("{t} to have every batch and the new column");
        eventually(Duration::from_secs(60), &what, || {
            md5(&c, t, "herd") == want
        });
    }
    daemon.stop();
}
