//! Per-table conflict strategies (`[syncs.NAME.table_strategy]`): the same conflict on two
//! tables of one multi-master sync is decided by each table's own strategy, and each
//! `drover.conflicts` row records the strategy that decided it.

mod support;

use support::scenario::*;
use support::*;

/// Masters a and b with tables t1, t2, t3 (rows 1 and 2 `orig`), a sync `mm` with `sync_keys`
/// and `[syncs.mm.table_strategy]` `tables`, installed.
fn setup(sync_keys: &str, tables: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t1 (id int PRIMARY KEY, v text); CREATE TABLE t2 (LIKE t1 INCLUDING ALL); \
             CREATE TABLE t3 (LIKE t1 INCLUDING ALL); INSERT INTO t1 VALUES (1, 'orig'), (2, 'orig'); \
             INSERT INTO t2 SELECT * FROM t1; INSERT INTO t3 SELECT * FROM t1;",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // With a token the CLI's status shows conflicting keys in `last_error`.
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\napi_token = \"table-strategy-t0ken\"\n{}{}\
         [relgroups.g]\ntables = [\"t1\", \"t2\", \"t3\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n{sync_keys}\n\
         [syncs.mm.table_strategy]\n{tables}\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    (c, dir, cfg)
}

fn rows(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(
        db,
        &format!("SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM {table}"),
    )
}

#[test]
fn each_table_is_decided_by_its_own_strategy() {
    // The sync: latest wins; t2: priority, with a (whose change is the older) first; t3: skip.
    let (c, _dir, cfg) = setup(
        "conflict_strategy = \"latest\"\npriority = [\"a\"]",
        "\"public.t2\" = \"priority\"\nt3 = \"skip\"",
    );
    // The same key changed on both masters, a first, each in its own transaction; key 2
    // changes on a only (no conflict).
    for (db, sql) in [
        (
            "a",
            "UPDATE t1 SET v = 'a' WHERE id = 1; UPDATE t2 SET v = 'a' WHERE id = 1; \
             UPDATE t3 SET v = 'a' WHERE id = 1",
        ),
        (
            "b",
            "UPDATE t1 SET v = 'b' WHERE id = 1; UPDATE t2 SET v = 'b' WHERE id = 1; \
             UPDATE t3 SET v = 'b' WHERE id = 1",
        ),
        (
            "a",
            "UPDATE t1 SET v = 'a2' WHERE id = 2; UPDATE t2 SET v = 'a2' WHERE id = 2; \
             UPDATE t3 SET v = 'a2' WHERE id = 2",
        ),
    ] {
        c.psql(db, sql);
    }
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    for db in ["a", "b"] {
        // With skip each master keeps its own version.
        for (table, winner) in [("t1", "b"), ("t2", "a"), ("t3", db)] {
            assert_eq!(
                c.psql(
                    db,
                    &format!("SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM {table}")
                ),
                format!("1={winner} 2=a2"),
                "{table} on {db}"
            );
        }
        assert_eq!(
            c.psql(
                db,
                "SELECT string_agg(table_name || ':' || strategy || ':' || coalesce(winner, '-'), ' ' ORDER BY table_name) \
                 FROM drover.conflicts WHERE key->>'id' = '1'"
            ),
            "public.t1:latest:b public.t2:priority:a public.t3:skip:-",
            "conflict log on {db}"
        );
        assert_eq!(c.psql(db, "SELECT count(*) FROM drover.conflicts"), "3");
    }
    for table in ["t1", "t2"] {
        assert_eq!(
            table_md5(&c, "a", table, "id"),
            table_md5(&c, "b", table, "id"),
            "{table}"
        );
    }
    daemon.stop();
}

#[test]
fn an_abort_table_fails_the_round_naming_only_its_keys() {
    let (c, _dir, cfg) = setup("", "t2 = \"abort\"");
    for (db, sql) in [
        (
            "a",
            "UPDATE t1 SET v = 'a' WHERE id = 1; UPDATE t2 SET v = 'a' WHERE id = 1",
        ),
        (
            "b",
            "UPDATE t1 SET v = 'b' WHERE id = 1; UPDATE t2 SET v = 'b' WHERE id = 1",
        ),
        ("a", "UPDATE t3 SET v = 'a2' WHERE id = 2"),
    ] {
        c.psql(db, sql);
    }
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    eventually(
        std::time::Duration::from_secs(30),
        "the sync to go bad",
        || sync_status(&cfg, "mm")["state"] == "bad",
    );
    let s = sync_status(&cfg, "mm");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.starts_with("conflict between a, b: 1 conflicting key(s) and conflict_strategy = \"abort\": nothing applied"),
        "{err}"
    );
    assert!(err.contains("public.t2 {\"id\":1}"), "{err}");
    assert!(
        !err.contains("public.t1"),
        "t1's conflict is decided by latest: {err}"
    );
    // Nothing applied anywhere, not even the keys of the other tables.
    assert_eq!(rows(&c, "b", "t1"), "1=b 2=orig");
    assert_eq!(rows(&c, "b", "t3"), "1=orig 2=orig");
    assert_eq!(rows(&c, "a", "t1"), "1=a 2=orig");
    assert_eq!(c.psql("a", "SELECT count(*) FROM drover.conflicts"), "0");
    daemon.stop();
}
