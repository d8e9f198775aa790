//! Key-less tables between PostgreSQL 11 (floats printed with 17 significant digits under
//! extra_float_digits = 3) and 12+ (shortest exact text), in both directions (issue 10 item 7):
//! a deleted or updated row's image, taken on the source, must match the same row on the
//! target, or the old row stays and rows double.

mod support;

use support::scenario::*;
use support::*;

const TABLE: &str = "CREATE TABLE m (tag text, r real, d double precision)";

const ROWS: &str = "INSERT INTO m VALUES
    ('a', 0.1, 0.1), ('b', 1e-7, 1e-7), ('c', 3.14159, 3.14159265358979),
    ('d', 'NaN', 'NaN'), ('e', '-Infinity', '-Infinity'), ('f', 1/3.0, 1/3.0),
    ('g', -0.0, 2.5e300), ('h', NULL, 0.30000000000000004), ('a', 0.1, 0.1), ('i', 7, 7)";

/// The rows as a multiset, with floats as their bits (the text differs across versions).
fn rows_md5(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT count(*) || ':' || md5(coalesce(string_agg(x, E'\\n' ORDER BY x COLLATE \"C\"), '')) FROM \
         (SELECT concat_ws('|', coalesce(tag, '-'), coalesce(encode(float4send(r), 'hex'), '-'), \
          coalesce(encode(float8send(d), 'hex'), '-')) AS x FROM m) s",
    )
}

#[test]
fn whole_row_deletes_and_updates_match_across_float_text_versions() {
    let old = support::versions::cluster(11);
    let new = Cluster::start();
    // s1: old -> new; s2: new -> old (other databases, so no chain).
    for (c, db) in [(&old, "a"), (&old, "d"), (&new, "b"), (&new, "c")] {
        c.create_db(db);
        c.psql(db, TABLE);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}{}[relgroups.g]\ntables = [\"m\"]\n\
         [syncs.s1]\nrelgroup = \"g\"\nsources = [\"a\"]\ntargets = [\"b\"]\n\
         [syncs.s2]\nrelgroup = \"g\"\nsources = [\"c\"]\ntargets = [\"d\"]\n",
        free_port(),
        old.database_toml("a", "a"),
        new.database_toml("b", "b"),
        new.database_toml("c", "c"),
        old.database_toml("d", "d"),
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no key: whole-row images"), "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    let pairs = [("s1", &old, "a", &new, "b"), ("s2", &new, "c", &old, "d")];
    for (sync, src, sdb, _, _) in pairs {
        src.psql(sdb, ROWS);
        drover_wait(&cfg, sync, 120);
    }
    for (sync, src, sdb, dst, ddb) in pairs {
        assert_eq!(
            rows_md5(src, sdb),
            rows_md5(dst, ddb),
            "{sync} after inserts"
        );
        src.psql(
            sdb,
            "DELETE FROM m WHERE tag IN ('b', 'd', 'h'); \
             UPDATE m SET tag = tag || '!' WHERE tag IN ('a', 'c', 'e', 'f', 'g');",
        );
        drover_wait(&cfg, sync, 120);
        assert_eq!(
            rows_md5(src, sdb),
            rows_md5(dst, ddb),
            "{sync} after deletes and updates"
        );
        assert_eq!(rows_md5(dst, ddb).split(':').next(), Some("7"));
    }
    daemon.stop();
}
