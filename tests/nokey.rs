//! Tables without a primary key: a unique index on NOT NULL columns, key columns named in the
//! config, or whole-row images (duplicate and all-NULL rows included, insert-only tables
//! streamed incrementally). `check` says which method each table uses.

mod support;

use support::scenario::*;
use support::*;

const SCHEMA: &str = "
CREATE TABLE uniq (a int NOT NULL, b text, UNIQUE (a));
CREATE TABLE conf (x text NOT NULL, y int NOT NULL, v text);
CREATE TABLE dup (a int, b text);";

/// Compares tables as multisets: every row's text, sorted.
fn same_rows(c: &Cluster, table: &str) {
    assert_eq!(
        table_md5(c, "src", table, "md5_row_::text"),
        table_md5(c, "dst", table, "md5_row_::text"),
        "{table} differs"
    );
}

#[test]
fn unique_index_configured_key_and_whole_row_tables() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, SCHEMA);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\n\
         tables = [\"uniq\", \"conf\", \"dup\", \"pgbench_history\", \"pgbench_accounts\"]\n\
         [relgroups.g.keys]\n\"public.conf\" = [\"x\", \"y\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    for want in [
        "public.uniq: ok, unique index uniq_a_key (a)",
        "public.conf: ok, configured key (x, y)",
        "public.dup: ok, no key: whole-row images",
        "public.pgbench_history: ok, no key: whole-row images",
        "public.pgbench_accounts: ok, primary key (aid)",
        "no problems found",
    ] {
        assert!(check.contains(want), "check lacks {want:?}:\n{check}");
    }
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    c.psql(
        "src",
        "INSERT INTO uniq SELECT g, 'u' || g FROM generate_series(1, 100) g;
         UPDATE uniq SET b = NULL WHERE a % 3 = 0;
         UPDATE uniq SET a = a + 1000 WHERE a % 10 = 0;
         DELETE FROM uniq WHERE a % 7 = 0;
         INSERT INTO conf SELECT 'k' || (g % 5), g, 'v' || g FROM generate_series(1, 50) g;
         UPDATE conf SET v = 'changed' WHERE y % 4 = 0;
         DELETE FROM conf WHERE y % 9 = 0;
         INSERT INTO dup VALUES (1, 'x'), (1, 'x'), (1, 'x'), (NULL, NULL), (NULL, NULL), (2, E'tab\\there');
         UPDATE dup SET b = 'y' WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1);
         DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a IS NULL LIMIT 1);",
    );
    src_pgbench(&c);
    drover_wait(&cfg, "s", 60);
    for t in ["uniq", "conf", "dup", "pgbench_history", "pgbench_accounts"] {
        same_rows(&c, t);
    }
    assert_eq!(
        c.psql("dst", "SELECT count(*) FROM dup WHERE a = 1 AND b = 'x'"),
        "2"
    );
    assert_eq!(
        c.psql(
            "dst",
            "SELECT count(*) FROM dup WHERE a IS NULL AND b IS NULL"
        ),
        "1"
    );

    // Insert-only history streams: a second batch adds rows, it does not re-copy the table.
    let before = sync_status(&cfg, "s")["rows_inserted"].as_u64().unwrap();
    c.psql("src", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, now()), (1, 1, 1, 5, now())");
    drover_wait(&cfg, "s", 60);
    let after = sync_status(&cfg, "s")["rows_inserted"].as_u64().unwrap();
    assert_eq!(
        after - before,
        2,
        "two history rows streamed, nothing re-copied"
    );
    same_rows(&c, "pgbench_history");

    // Deleting one of two identical rows deletes exactly one on the target.
    c.psql(
        "src",
        "DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 AND b = 'x' LIMIT 1)",
    );
    drover_wait(&cfg, "s", 60);
    same_rows(&c, "dup");
    assert_eq!(
        c.psql("dst", "SELECT count(*) FROM dup WHERE a = 1 AND b = 'x'"),
        "1"
    );
    daemon.stop();

    // verify compares a whole-row table as a multiset: identical now; then one duplicate more
    // and one row fewer on the target are an "extra" and a "missing" row hash.
    let same = drover_ok(&cfg, &["verify", "s"]);
    assert!(
        same.contains("public.dup: identical (rows dst: 4, src: 4)"),
        "{same}"
    );
    c.psql(
        "dst",
        "INSERT INTO dup VALUES (NULL, NULL); DELETE FROM dup WHERE b = 'y'",
    );
    let out = drover(&cfg, &["verify", "s", "--table", "public.dup", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &report["tables"][0];
    assert_eq!(t["difference_count"], 2, "{t:#}");
    let mut kinds: Vec<&str> = t["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(
                d["key"]["row_md5"].as_str().is_some_and(|h| h.len() == 32),
                "{d:#}"
            );
            d["kind"].as_str().unwrap()
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["extra", "missing"], "{t:#}");
}

fn src_pgbench(c: &Cluster) {
    c.pgbench("src", &["-n", "-t", "300"]);
}
