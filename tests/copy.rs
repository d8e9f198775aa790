//! Initial copy: from one exported source snapshot, under live writes, with deltas continuing
//! from exactly that snapshot; a crash mid-copy leaves nothing marked done.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

/// Source with pgbench data at `scale`, target with the same schema and no rows.
fn empty_target_pair(scale: &str) -> (Cluster, Cluster) {
    let src = Cluster::start();
    let dst = Cluster::start();
    src.create_db("repdb");
    dst.create_db("repdb");
    src.pgbench("repdb", &["-i", "-s", scale, "-q"]);
    dump_into(&src, "repdb", &dst, "repdb", true);
    (src, dst)
}

#[test]
fn copy_under_live_writes_then_deltas_continue() {
    let (src, dst) = empty_target_pair("20");
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);

    let writer = pgbench_in_background(&src, "repdb", &["-n", "-c", "2", "-T", "15"]);
    std::thread::sleep(Duration::from_secs(2));
    let t = std::time::Instant::now();
    let out = drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    eprintln!(
        "copy of scale 20 under pgbench: {:.2} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        out.contains("public.pgbench_accounts -> new: done: "),
        "{out}"
    );
    writer.join().unwrap();
    drover_wait(&setup.config, "legacy_to_new", 180);
    assert_pgbench_same(&src, &dst);
    // drover's own verify agrees, without trusting its bookkeeping.
    let verify = drover(&setup.config, &["verify", "legacy_to_new", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("verify --json");
    assert_eq!(verify.status.code(), Some(0), "{doc}");
    assert_eq!(doc["identical"], true);
    let progress = dst.psql("repdb", "SELECT DISTINCT initial_copy FROM drover.progress");
    assert_eq!(progress, "done");
    daemon.stop();
}

#[test]
fn killed_copy_marks_nothing_done() {
    let (src, dst) = empty_target_pair("10");
    let setup = one_way(
        (&src, "repdb"),
        (&dst, "repdb"),
        &["public.pgbench_accounts"],
    );
    drover_ok(&setup.config, &["install"]);
    let mut copy = Daemon::start_with(&setup.config, &[], &[]);
    // Daemon::start_with runs `run`; start the copy as a plain child instead.
    copy.kill9();
    let mut child = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["copy", "legacy_to_new"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the copy to be under way", || {
        dst.psql(
            "repdb",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%FROM STDIN%'",
        ) != "0"
    });
    child.kill().unwrap();
    child.wait().unwrap();
    eventually(Duration::from_secs(30), "the target to roll back", || {
        dst.psql(
            "repdb",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%FROM STDIN%'",
        ) == "0"
    });
    assert_eq!(
        dst.psql("repdb", "SELECT count(*) FROM pgbench_accounts"),
        "0"
    );
    assert_eq!(
        dst.psql(
            "repdb",
            "SELECT snapshot || '|' || coalesce(initial_copy, 'none') FROM drover.progress"
        ),
        "1:1:|none"
    );
    // A second copy completes.
    drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    assert_eq!(
        table_md5(&src, "repdb", "pgbench_accounts", "aid"),
        table_md5(&dst, "repdb", "pgbench_accounts", "aid")
    );
}

#[test]
fn initial_copy_if_empty_copies_empty_targets_only() {
    let c = Cluster::start();
    for db in ["src", "empty", "full"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    }
    c.psql(
        "src",
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    );
    c.psql("full", "INSERT INTO t VALUES (1, 'kept')");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"empty\", \"full\"]\ninitial_copy = \"if-empty\"\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("empty", "empty"),
        c.database_toml("full", "full"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    c.psql("src", "UPDATE t SET v = 'changed' WHERE id = 2");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    // The empty target got the whole table; the other kept its row and got only the change.
    assert_eq!(
        table_md5(&c, "src", "t", "id"),
        table_md5(&c, "empty", "t", "id")
    );
    assert_eq!(
        c.psql(
            "full",
            "SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM t"
        ),
        "1=kept 2=changed"
    );
    assert_eq!(
        c.psql("empty", "SELECT initial_copy FROM drover.progress"),
        "done"
    );
    assert_eq!(
        c.psql("full", "SELECT initial_copy FROM drover.progress"),
        "skipped: target not empty"
    );
    let s = sync_status(&cfg, "s");
    let board = s["copy"].as_array().unwrap();
    assert!(
        board
            .iter()
            .any(|e| e["target"] == "empty" && e["state"] == "done" && e["rows_copied"] == 1000),
        "{s}"
    );
    // Decided once: a restart does not copy again.
    daemon.stop();
    c.psql("empty", "DELETE FROM t WHERE id = 1000");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    assert_eq!(c.psql("empty", "SELECT count(*) FROM t"), "999");
    daemon.stop();
}

#[test]
fn large_copy_rebuilds_indexes_and_keeps_referenced_keys() {
    let c = Cluster::start();
    let ddl = "CREATE TABLE parent (id int PRIMARY KEY, v text);
               CREATE INDEX parent_v ON parent (v);
               CREATE TABLE big (id int PRIMARY KEY, v text UNIQUE, n int);
               CREATE INDEX big_n ON big (n);
               CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));";
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, ddl);
    }
    c.psql(
        "src",
        "INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 150000) g;
         INSERT INTO big SELECT g, 'b' || g, g % 100 FROM generate_series(1, 150000) g;
         INSERT INTO child SELECT g, g FROM generate_series(1, 10) g;
         ANALYZE parent; ANALYZE big;",
    );
    let setup = one_way((&c, "src"), (&c, "dst"), &["parent", "big", "child"]);
    drover_ok(&setup.config, &["install"]);
    drover_ok(&setup.config, &["copy", "legacy_to_new"]);
    for (t, key) in [("parent", "id"), ("big", "id"), ("child", "id")] {
        assert_eq!(
            table_md5(&c, "src", t, key),
            table_md5(&c, "dst", t, key),
            "{t}"
        );
    }
    // Every index and constraint is back, valid, and the FK still points at parent's key.
    let defs = |db: &str| {
        c.psql(
            db,
            "SELECT string_agg(i.indexrelid::regclass || ':' || i.indisvalid, ' ' ORDER BY i.indexrelid::regclass::text) FROM pg_index i \
             WHERE i.indrelid IN ('parent'::regclass, 'big'::regclass, 'child'::regclass)",
        )
    };
    assert_eq!(defs("dst"), defs("src"));
    assert_eq!(
        c.psql("dst", "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass"),
        "1"
    );
    // big was truncated in the copy's transaction, so it loaded frozen; parent, which a
    // foreign key references, was emptied with DELETE and could not be.
    c.psql("dst", "CREATE EXTENSION pg_visibility");
    let frozen = |t: &str| {
        c.psql(
            "dst",
            &format!("SELECT bool_and(all_frozen) FROM pg_visibility_map('{t}')"),
        )
    };
    assert_eq!(frozen("big"), "t", "big loaded with COPY FREEZE");
    assert_eq!(frozen("parent"), "f", "parent loaded without FREEZE");
    let err = c
        .try_psql("dst", "INSERT INTO big VALUES (999999, 'b1', 1)")
        .unwrap_err();
    assert!(
        err.contains("duplicate key"),
        "unique constraint enforced again: {err}"
    );
}
