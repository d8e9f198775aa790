//! An application UPDATE on a master that waits for a row the round's apply holds must find
//! the row when the apply commits: the apply updates rows in place on every master (not
//! DELETE + INSERT, which leaves the waiting UPDATE with "UPDATE 0" and its write lost
//! silently), whatever the replica role. Here drover connects as a superuser, so the apply
//! sessions use `session_replication_role = replica`.

mod support;

use support::scenario::*;
use support::*;

/// Few keys, so that b's updates often wait for a row an apply holds.
const KEYS: i64 = 4;
/// Statements per writer, each its own transaction (bounded load).
const ITERATIONS: i64 = 10000;

#[test]
fn a_waiting_local_update_finds_its_row_after_an_apply() {
    let c = Cluster::start();
    for db in ["a", "b", "r"] {
        c.create_db(db);
        c.psql(
            db,
            &format!(
                "CREATE TABLE t (id int PRIMARY KEY, note text, hits bigint NOT NULL); \
                 INSERT INTO t SELECT i, 'orig', 0 FROM generate_series(1, {KEYS}) AS i;"
            ),
        );
    }
    // Not replicated: b's statements that updated no row.
    c.psql("b", "CREATE TABLE missed (i int, id int)");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [relgroups.g.delta_columns]\nt = [\"hits\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\ntargets = [\"r\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
        c.database_toml("r", "r"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);

    // a changes the note of every key over and over (each change a round applies to b);
    // b counts hits on the same keys, one short transaction per statement.
    let a_loop = format!(
        "DO $$ BEGIN FOR i IN 1..{ITERATIONS} LOOP \
         UPDATE t SET note = 'a' || i WHERE id = 1 + i % {KEYS}; COMMIT; END LOOP; END $$"
    );
    let b_loop = format!(
        "DO $$ DECLARE n bigint; BEGIN FOR i IN 1..{ITERATIONS} LOOP \
         UPDATE t SET hits = hits + 1 WHERE id = 1 + i % {KEYS}; \
         GET DIAGNOSTICS n = ROW_COUNT; \
         IF n <> 1 THEN INSERT INTO missed VALUES (i, 1 + i % {KEYS}); END IF; \
         COMMIT; END LOOP; END $$"
    );
    std::thread::scope(|s| {
        s.spawn(|| c.psql("a", &a_loop));
        s.spawn(|| c.psql("b", &b_loop));
    });
    drover_wait(&cfg, "mm", 120);

    let missed = c.psql("b", "SELECT count(*) FROM missed");
    assert_eq!(
        missed, "0",
        "b's UPDATEs that found no row (each a lost write) out of {ITERATIONS}"
    );
    for db in ["a", "b", "r"] {
        assert_eq!(
            c.psql(db, "SELECT sum(hits) FROM t"),
            ITERATIONS.to_string(),
            "every hit of b counted on {db}"
        );
    }
    let md5 = table_md5(&c, "a", "t", "id");
    for db in ["b", "r"] {
        assert_eq!(table_md5(&c, db, "t", "id"), md5, "{db} identical to a");
    }
    daemon.stop();
}

#[test]
fn swapped_unique_values_of_a_referenced_table_apply_on_a_master() {
    // In place, an UPDATE checks a unique index row by row, so two rows swapping values of one
    // fail it; the apply then deletes and inserts them, which in replica mode fires no foreign
    // key action even though `child` references `p`.
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE p (id int PRIMARY KEY, code text NOT NULL UNIQUE); \
             CREATE TABLE child (id int PRIMARY KEY, p_id int NOT NULL REFERENCES p ON DELETE CASCADE); \
             INSERT INTO p VALUES (1, 'x'), (2, 'y'), (3, 'z'); \
             INSERT INTO child VALUES (10, 1), (20, 2);",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"p\", \"child\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    c.psql(
        "a",
        "BEGIN; UPDATE p SET code = 'tmp' WHERE id = 1; UPDATE p SET code = 'x' WHERE id = 2; \
         UPDATE p SET code = 'y' WHERE id = 1; COMMIT;",
    );
    drover_wait(&cfg, "mm", 60);
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT string_agg(id || code, ' ' ORDER BY id) FROM p"),
            "1y 2x 3z",
            "codes on {db}"
        );
        assert_eq!(
            table_md5(&c, db, "child", "id"),
            table_md5(&c, "a", "child", "id"),
            "children kept on {db}"
        );
    }
    assert_eq!(c.psql("b", "SELECT count(*) FROM child"), "2");
    daemon.stop();
}
