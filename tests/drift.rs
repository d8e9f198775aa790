//! Tolerated drift (issue 14, Bucardo's `strict_checking = false`): a target may have extra
//! columns that are nullable or have a default. `check` reports them as information (exit 0)
//! and rows replicate (the extra columns get their default); an extra NOT NULL column without
//! a default is a problem that names the table, the column and the fix.

mod support;

use support::scenario::*;
use support::*;

const SOURCE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";

/// The source's columns of `t` on `db`, as md5 of the ordered rows.
fn source_columns(c: &Cluster, db: &str) -> String {
    table_md5(c, db, "(SELECT id, v FROM t)", "id")
}

#[test]
fn nullable_or_defaulted_extra_columns_are_information() {
    let c = Cluster::start();
    c.create_db("src");
    c.create_db("dst");
    c.psql("src", SOURCE);
    c.psql(
        "dst",
        "CREATE TABLE t (id int PRIMARY KEY, v text, note text, \
         added_at timestamptz NOT NULL DEFAULT '2020-01-01', flag int DEFAULT 7);",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sync_toml(&c, &["t"], "", &["src"], &["dst"]));
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("  public.t: ok, primary key (id)"), "{text}");
    assert!(
        text.contains(
            "    information: database \"dst\" has columns the source lacks: \"note\", \"added_at\", \
             \"flag\" (nullable or with a default: tolerated, they get their default)"
        ),
        "{text}"
    );
    assert!(text.contains("no problems found"), "{text}");

    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
         UPDATE t SET v = 'changed' WHERE id % 10 = 0; DELETE FROM t WHERE id % 7 = 0;",
    );
    drover_wait(&cfg, "s", 60);
    assert_eq!(source_columns(&c, "src"), source_columns(&c, "dst"));
    assert_eq!(
        c.psql(
            "dst",
            "SELECT count(*) FROM t WHERE note IS NULL AND flag = 7 AND added_at = '2020-01-01'"
        ),
        c.psql("src", "SELECT count(*) FROM t")
    );
    let verify = drover(&cfg, &["verify", "s"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify compares the source's columns"
    );
    daemon.stop();
}

#[test]
fn extra_not_null_column_without_default_is_a_problem() {
    let c = Cluster::start();
    c.create_db("src");
    c.create_db("dst");
    c.psql("src", SOURCE);
    c.psql(
        "dst",
        "CREATE TABLE t (id int PRIMARY KEY, v text, must int NOT NULL);",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sync_toml(&c, &["t"], "", &["src"], &["dst"]));
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("  public.t: PROBLEM"), "{text}");
    assert!(
        text.contains(
            "database \"dst\": table public.t differs from database \"src\": column \"must\" does \
             not exist on the source and is NOT NULL without a default: give it a default, drop \
             NOT NULL, or add it on the source"
        ),
        "{text}"
    );
    c.psql("dst", "ALTER TABLE t ALTER must SET DEFAULT 0");
    let text = drover_ok(&cfg, &["check"]);
    assert!(
        text.contains("information: database \"dst\" has columns the source lacks: \"must\""),
        "{text}"
    );
}
