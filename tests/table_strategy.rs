//! Per-table conflict strategies (`[syncs.NAME.table_strategy]`): the same conflict on two
//! tables of one multi-master sync is decided by each table's own strategy, and each
//! `drover.conflicts` row records the strategy that decided it.

mod support;

use support::scenario::*;
use support::*;

#[test]
fn each_table_is_decided_by_its_own_strategy() {
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
    // The sync: latest wins; t2: priority, with a (whose change is the older) first; t3: skip.
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"t1\", \"t2\", \"t3\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\nconflict_strategy = \"latest\"\npriority = [\"a\"]\n\
         [syncs.mm.table_strategy]\n\"public.t2\" = \"priority\"\nt3 = \"skip\"\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
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
