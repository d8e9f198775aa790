//! Multi-master with delta columns on non-superuser masters, where foreign keys and their
//! actions are live on apply: a counted parent table with an ON DELETE CASCADE child under
//! concurrent writes on two masters, and a parent deleted on one master while the other adds
//! a child to it, with and without the cascade.

mod support;

use std::collections::BTreeMap;

use support::scenario::*;
use support::*;

/// Accounts counted in `bal`, children referencing them with ON DELETE CASCADE; all owned by
/// `app` (no superuser, so no replica role: the FK and its cascade are live on apply).
const FAMILY: &str = "SET ROLE app; \
     CREATE TABLE acc (id bigint PRIMARY KEY, bal numeric(14,2) NOT NULL, note text); \
     CREATE TABLE child (id bigint PRIMARY KEY, acc_id bigint NOT NULL REFERENCES acc ON DELETE CASCADE, memo text); \
     INSERT INTO acc SELECT i, 0, 'seed' FROM generate_series(1, 10) AS i; \
     INSERT INTO child SELECT i, i % 10 + 1, 'seed' FROM generate_series(1, 30) AS i; \
     CREATE TABLE inc_log (id bigint, d numeric);";

/// Master `m`: increments, a note change on a key the other master changes too (a row
/// conflict), new accounts with children, children of seed accounts; all logged.
fn family_workload(m: i64, iters: i64) -> String {
    format!(
        "DO $$ DECLARE k bigint; BEGIN FOR i IN 1..{iters} LOOP \
           k := (i * {m}) % 10 + 1; \
           WITH u AS (UPDATE acc SET bal = bal + i * 0.25 WHERE id = k RETURNING id) \
             INSERT INTO inc_log SELECT id, i * 0.25 FROM u; \
           IF i % 5 = 0 THEN \
             WITH u AS (UPDATE acc SET bal = bal + 1, note = 'm{m} ' || i WHERE id = i % 3 + 1 RETURNING id) \
               INSERT INTO inc_log SELECT id, 1 FROM u; \
           END IF; \
           IF i % 10 = 0 THEN \
             INSERT INTO acc VALUES ({m} * 100000 + i, i, 'new'); INSERT INTO inc_log VALUES ({m} * 100000 + i, i); \
             INSERT INTO child VALUES ({m} * 100000 + i, {m} * 100000 + i, 'new'); \
           END IF; \
           INSERT INTO child VALUES ({m} * 1000000 + i, k, 'm{m}'); \
           COMMIT; PERFORM pg_sleep(0.01); \
         END LOOP; END $$"
    )
}

#[test]
fn delta_columns_with_a_cascading_child_on_non_superuser_masters() {
    let (c, _dir, cfg, mut daemon) = parent_and_child(FAMILY);
    std::thread::scope(|s| {
        for (m, db) in [(1, "a"), (2, "b")] {
            let c = &c;
            s.spawn(move || c.psql(db, &format!("SET ROLE app; {}", family_workload(m, 120))));
        }
    });
    drover_wait(&cfg, "s", 120);
    // Balances in cents, summed over both masters' logs.
    let mut sums: BTreeMap<i64, i64> = (1..=10).map(|i| (i, 0)).collect();
    for db in ["a", "b"] {
        let rows = c.psql(
            db,
            "SELECT id, (sum(d) * 100)::bigint FROM inc_log GROUP BY id",
        );
        for line in rows.lines() {
            let (id, d) = line.split_once('|').unwrap();
            *sums.entry(id.parse().unwrap()).or_default() += d.parse::<i64>().unwrap();
        }
    }
    let want = (sums.iter())
        .map(|(id, n)| format!("{id}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(
                db,
                "SELECT string_agg(id || '=' || (bal * 100)::bigint, ' ' ORDER BY id) FROM acc"
            ),
            want,
            "balances on {db}"
        );
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM child"),
            (30 + 2 * 120 + 2 * 12).to_string(),
            "children on {db}: every child inserted on either master stays"
        );
    }
    assert_eq!(
        table_md5(&c, "a", "acc", "id"),
        table_md5(&c, "b", "acc", "id")
    );
    assert_eq!(
        table_md5(&c, "a", "child", "id"),
        table_md5(&c, "b", "child", "id")
    );
    daemon.stop();
}

/// With ON DELETE CASCADE the parent's delete wins: applied on b it takes b's new child
/// with it (as that delete would, run after the insert), and both masters end identical.
#[test]
fn a_parent_deleted_on_one_master_while_the_other_adds_a_child() {
    let (c, _dir, cfg, mut daemon) = parent_and_child(FAMILY);
    daemon.stop();
    c.psql("a", "DELETE FROM acc WHERE id = 5");
    c.psql(
        "b",
        "UPDATE acc SET bal = bal + 3 WHERE id = 5; INSERT INTO child VALUES (900, 5, 'b')",
    );
    daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM acc WHERE id = 5")
                + " "
                + &c.psql(db, "SELECT count(*) FROM child WHERE acc_id = 5"),
            "0 0",
            "account 5 and its children on {db}"
        );
    }
    assert_eq!(
        table_md5(&c, "a", "acc", "id"),
        table_md5(&c, "b", "acc", "id")
    );
    assert_eq!(
        table_md5(&c, "a", "child", "id"),
        table_md5(&c, "b", "child", "id")
    );
    daemon.stop();
}

/// A non-superuser master pair a, b with `ddl` (acc, child, inc_log), synced and running.
fn parent_and_child(ddl: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf, Daemon) {
    let c = Cluster::start();
    c.psql("postgres", "CREATE ROLE app LOGIN NOSUPERUSER");
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for db in ["a", "b"] {
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        c.psql(db, ddl);
        toml.push_str(&format!(
            "[databases.{db}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{db}\"\nuser = \"app\"\n",
            c.port
        ));
    }
    toml.push_str(
        "[relgroups.g]\ntables = [\"acc\", \"child\"]\n[relgroups.g.delta_columns]\nacc = [\"bal\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (cfg, daemon) = install_and_run(dir.path(), &toml);
    drover_wait(&cfg, "s", 60);
    (c, dir, cfg, daemon)
}

/// Without a cascade (NO ACTION) the same race cannot be applied on either master: the sync
/// stops with the constraint named until someone decides.
#[test]
fn a_parent_deleted_on_one_master_while_the_other_adds_a_child_without_cascade() {
    let ddl = FAMILY.replace(" ON DELETE CASCADE", "");
    let (c, _dir, cfg, mut daemon) = parent_and_child(&ddl);
    daemon.stop();
    c.psql(
        "a",
        "DELETE FROM child WHERE acc_id = 5; DELETE FROM acc WHERE id = 5",
    );
    c.psql(
        "b",
        "UPDATE acc SET bal = bal + 3 WHERE id = 5; INSERT INTO child VALUES (900, 5, 'b')",
    );
    daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    // Neither master can apply the other's change: the rounds fail, naming the table and
    // the constraint, and change nothing (a limit the README states).
    let out = drover(&cfg, &["wait", "s", "--timeout", "10"]);
    assert!(!out.status.success(), "wait succeeded");
    let (state, error) = state_and_error(&cfg, "s");
    assert!(
        error.contains("public.child") && error.contains("child_acc_id_fkey"),
        "state {state}: {error}"
    );
    assert_eq!(
        c.psql("b", "SELECT count(*) FROM child WHERE acc_id = 5"),
        "4"
    );
    // The fix: decide by hand, e.g. drop b's new child; the parent's delete then goes through.
    c.psql("b", "DELETE FROM child WHERE id = 900");
    drover_wait(&cfg, "s", 60);
    assert_eq!(
        table_md5(&c, "a", "acc", "id"),
        table_md5(&c, "b", "acc", "id")
    );
    assert_eq!(
        table_md5(&c, "a", "child", "id"),
        table_md5(&c, "b", "child", "id")
    );
    assert_eq!(c.psql("b", "SELECT count(*) FROM acc WHERE id = 5"), "0");
    daemon.stop();
}
