//! Multi-master features combined the way production meets them: delta columns on three
//! masters writing at once (new keys included), on a partitioned table, with a key-less
//! history table while a master is crashed; a key new to a master returning from an outage; and
//! `drover verify` on the converged result. Foreign keys: `multimaster_hostile_fk.rs`.
//!
//! Every increment is logged in a table outside the sync (`inc_log`, on the master that made
//! it), so the expected value of every counter is the sum of all masters' logs, whatever the
//! rounds did with the keys.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::scenario::*;
use support::*;

/// `t(id, n, note)` with keys 1..=20 at n = 0, and the unreplicated log of increments.
const COUNTED: &str = "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text); \
     INSERT INTO t SELECT i, 0, 'seed' FROM generate_series(1, 20) AS i; \
     CREATE TABLE inc_log (id bigint, d bigint);";

/// A bounded workload for master number `m` (1-based): `iters` transactions, each adding to a
/// seed key, every 10th inserting a key of its own (m * 100000 + i), every 3rd adding 1 to the
/// keys other masters inserted that have arrived; each change logged in `inc_log`.
fn workload(m: i64, iters: i64) -> String {
    format!(
        "DO $$ DECLARE k bigint; BEGIN FOR i IN 1..{iters} LOOP \
           k := (i * {m} * 7) % 20 + 1; \
           WITH u AS (UPDATE t SET n = n + i WHERE id = k RETURNING id) \
             INSERT INTO inc_log SELECT id, i FROM u; \
           IF i % 10 = 0 THEN \
             INSERT INTO t VALUES ({m} * 100000 + i, i, 'new'); INSERT INTO inc_log VALUES ({m} * 100000 + i, i); \
           END IF; \
           IF i % 3 = 0 THEN \
             WITH u AS (UPDATE t SET n = n + 1 WHERE id > 1000 AND id / 100000 <> {m} AND id % 7 = i % 7 RETURNING id) \
               INSERT INTO inc_log SELECT id, 1 FROM u; \
           END IF; \
           COMMIT; PERFORM pg_sleep(0.01); \
         END LOOP; END $$"
    )
}

/// `id=n` of every key, summed over the `inc_log` of each (cluster, db).
fn expected_counts(dbs: &[(&Cluster, &str)]) -> String {
    let mut sums: BTreeMap<i64, i64> = (1..=20).map(|i| (i, 0)).collect();
    for (c, db) in dbs {
        let rows = c.psql(db, "SELECT id, sum(d) FROM inc_log GROUP BY id");
        for line in rows.lines() {
            let (id, d) = line.split_once('|').unwrap();
            *sums.entry(id.parse().unwrap()).or_default() += d.parse::<i64>().unwrap();
        }
    }
    sums.iter()
        .map(|(id, n)| format!("{id}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn counts(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(
        db,
        &format!("SELECT string_agg(id || '=' || n, ' ' ORDER BY id) FROM {table}"),
    )
}

/// `drover verify SYNC` exits 0 and reports no difference.
fn assert_verify_equal(cfg: &std::path::Path, sync: &str) {
    let out = drover(cfg, &["verify", sync, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "verify {sync} found differences or failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn three_masters_concurrent_increments_and_new_keys_add_up() {
    let c = Cluster::start();
    for db in ["a", "b", "c"] {
        c.create_db(db);
        c.psql(db, COUNTED);
    }
    let toml = sync_toml(
        &c,
        &["public.t"],
        "[relgroups.g.delta_columns]\n\"public.t\" = [\"n\"]\n",
        &["a", "b", "c"],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    drover_wait(&cfg, "s", 60);

    std::thread::scope(|s| {
        for (m, db) in [(1, "a"), (2, "b"), (3, "c")] {
            let c = &c;
            s.spawn(move || c.psql(db, &workload(m, 150)));
        }
    });
    drover_wait(&cfg, "s", 120);
    let want = expected_counts(&[(&c, "a"), (&c, "b"), (&c, "c")]);
    for db in ["a", "b", "c"] {
        assert_eq!(counts(&c, db, "t"), want, "counters on {db}");
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM drover.conflicts"),
            "0",
            "increments are no conflicts on {db}"
        );
    }
    let md5 = |db| table_md5(&c, db, "t", "id");
    assert_eq!(md5("a"), md5("b"));
    assert_eq!(md5("a"), md5("c"));
    assert_verify_equal(&cfg, "s");
    daemon.stop();
}

const PARTITIONED: &str =
    "CREATE TABLE p (id bigint NOT NULL, region int NOT NULL, n bigint NOT NULL, \
       PRIMARY KEY (id, region)) PARTITION BY RANGE (region); \
     CREATE TABLE p_lo PARTITION OF p FOR VALUES FROM (0) TO (10); \
     CREATE TABLE p_hi PARTITION OF p FOR VALUES FROM (10) TO (20); \
     INSERT INTO p SELECT i, i % 20, 0 FROM generate_series(1, 40) AS i; \
     CREATE TABLE inc_log (id bigint, d bigint);";

/// Increments through the parent (odd iterations) and by partition name (even), logged.
fn partition_workload(m: i64, iters: i64) -> String {
    format!(
        "DO $$ DECLARE k bigint; BEGIN FOR i IN 1..{iters} LOOP \
           k := (i * {m} * 3) % 40 + 1; \
           IF i % 2 = 1 THEN \
             WITH u AS (UPDATE p SET n = n + i WHERE id = k RETURNING id) INSERT INTO inc_log SELECT id, i FROM u; \
           ELSIF k % 20 < 10 THEN \
             WITH u AS (UPDATE p_lo SET n = n + i WHERE id = k RETURNING id) INSERT INTO inc_log SELECT id, i FROM u; \
           ELSE \
             WITH u AS (UPDATE p_hi SET n = n + i WHERE id = k RETURNING id) INSERT INTO inc_log SELECT id, i FROM u; \
           END IF; \
           IF i % 25 = 0 THEN \
             INSERT INTO p_hi VALUES ({m} * 100000 + i, 15, i); INSERT INTO inc_log VALUES ({m} * 100000 + i, i); \
             INSERT INTO p VALUES ({m} * 1000000 + i, 5, i); INSERT INTO inc_log VALUES ({m} * 1000000 + i, i); \
           END IF; \
           COMMIT; PERFORM pg_sleep(0.01); \
         END LOOP; END $$"
    )
}

#[test]
fn delta_columns_on_a_partitioned_table_across_two_masters() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, PARTITIONED);
    }
    let toml = sync_toml(
        &c,
        &["public.p"],
        "[relgroups.g.delta_columns]\n\"public.p\" = [\"n\"]\n",
        &["a", "b"],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["check"]);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    std::thread::scope(|s| {
        for (m, db) in [(1, "a"), (2, "b")] {
            let c = &c;
            s.spawn(move || c.psql(db, &partition_workload(m, 150)));
        }
    });
    drover_wait(&cfg, "s", 120);
    let mut sums: BTreeMap<i64, i64> = (1..=40).map(|i| (i, 0)).collect();
    for db in ["a", "b"] {
        for line in c
            .psql(db, "SELECT id, sum(d) FROM inc_log GROUP BY id")
            .lines()
        {
            let (id, d) = line.split_once('|').unwrap();
            *sums.entry(id.parse().unwrap()).or_default() += d.parse::<i64>().unwrap();
        }
    }
    let want = (sums.iter())
        .map(|(id, n)| format!("{id}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    for db in ["a", "b"] {
        assert_eq!(counts(&c, db, "p"), want, "counters on {db}");
        assert_eq!(c.psql(db, "SELECT count(*) FROM drover.conflicts"), "0");
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM p_hi WHERE region < 10"),
            "0"
        );
    }
    for part in ["p_lo", "p_hi"] {
        assert_eq!(
            table_md5(&c, "a", part, "id, region"),
            table_md5(&c, "b", part, "id, region"),
            "{part}"
        );
    }
    assert_verify_equal(&cfg, "s");
    daemon.stop();
}

const BANK: [(&str, &str, &str); 3] = [
    ("pgbench_accounts", "aid", "abalance"),
    ("pgbench_branches", "bid", "bbalance"),
    ("pgbench_tellers", "tid", "tbalance"),
];

/// pgbench's "number of transactions actually processed: N".
fn processed(out: &str) -> i64 {
    let line = (out.lines())
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{out}"));
    let n = line.rsplit(':').next().unwrap().trim();
    n.split('/').next().unwrap().parse().unwrap()
}

/// Runs one TPC-B-like transaction (see `tpcb`) on `cl`, retrying it when PostgreSQL cancels
/// it in a deadlock with drover's apply, as an application would (README: the apply locks the
/// rows receiving increments in the relgroup's order, pgbench's order differs). A cancelled
/// transaction rolled back whole, so running it again counts it once.
fn run_tpcb(cl: &Cluster, db: &str, aid: i64, d: i64) {
    for _ in 0..20 {
        match cl.try_psql(db, &tpcb(aid, d)) {
            Ok(_) => return,
            Err(e) if e.contains("deadlock detected") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("tpcb({aid}, {d}) on {db:?}: 20 deadlocks in a row");
}

/// One TPC-B-like transaction adding `d` to account `aid`, teller 1 and branch 1, logged.
fn tpcb(aid: i64, d: i64) -> String {
    format!(
        "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + {d} WHERE aid = {aid}; \
         UPDATE pgbench_tellers SET tbalance = tbalance + {d} WHERE tid = 1; \
         UPDATE pgbench_branches SET bbalance = bbalance + {d} WHERE bid = 1; \
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, {aid}, {d}, now()); COMMIT;"
    )
}

/// Every balance is the sum of its own deltas in pgbench_history, the three sums equal
/// sum(delta), and (when given) history holds `transactions` rows.
fn assert_money_adds_up(c: &Cluster, db: &str, transactions: Option<i64>) {
    if let Some(n) = transactions {
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM pgbench_history"),
            n.to_string(),
            "on {db}: history rows against the transactions run on all masters"
        );
    }
    let logged = c.psql(db, "SELECT coalesce(sum(delta), 0) FROM pgbench_history");
    let sums = c.psql(
        db,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches) \
         || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers)",
    );
    assert_eq!(
        sums,
        format!("{logged} {logged} {logged}"),
        "on {db}: balance sums"
    );
    for (t, k, col) in BANK {
        let off = c.psql(
            db,
            &format!(
                "SELECT string_agg({k} || ': ' || x.{col} || ' vs ' || coalesce(h.s, 0), ', ') FROM {t} x \
                 LEFT JOIN (SELECT {k}, sum(delta) AS s FROM pgbench_history GROUP BY {k}) h USING ({k}) \
                 WHERE x.{col} <> coalesce(h.s, 0)"
            ),
        );
        assert_eq!(
            off, "",
            "on {db}: rows of {t} whose {col} is not the sum of their deltas"
        );
    }
}

fn bank_md5s(c: &Cluster, db: &str) -> Vec<String> {
    let mut all: Vec<String> = BANK
        .iter()
        .map(|(t, k, _)| table_md5(c, db, t, k))
        .collect();
    all.push(table_md5(c, db, "pgbench_history", "md5_row_::text"));
    all
}

#[test]
fn delta_columns_and_history_while_one_of_three_masters_is_down() {
    let clusters = [Cluster::start(), Cluster::start(), Cluster::start()];
    let names = ["a", "b", "c"];
    for (cl, db) in clusters.iter().zip(names) {
        cl.create_db(db);
        cl.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for (cl, db) in clusters.iter().zip(names) {
        toml.push_str(&cl.database_toml(db, db));
    }
    toml.push_str(
        "[relgroups.bank]\ntables = [\"pgbench_accounts\", \"pgbench_branches\", \"pgbench_tellers\", \"pgbench_history\"]\n\
         [relgroups.bank.delta_columns]\n\
         pgbench_accounts = [\"abalance\"]\npgbench_branches = [\"bbalance\"]\npgbench_tellers = [\"tbalance\"]\n\
         [syncs.mm]\nrelgroup = \"bank\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    let [a, b, c] = &clusters;
    let bench = |cl: &Cluster, db: &str, secs: &str| {
        processed(&cl.pgbench(db, &["-n", "-c", "2", "-T", secs]))
    };

    // All three write; c's last transactions are not yet sent when it crashes.
    let mut transactions: i64 = std::thread::scope(|s| {
        let runs: Vec<_> = (clusters.iter().zip(names))
            .map(|(cl, db)| s.spawn(move || bench(cl, db, "5")))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    });
    run_tpcb(c, "c", 77, 1000);
    c.stop_immediate();
    let crashed = a.psql("a", "SELECT clock_timestamp()");
    transactions += 1;

    // While c is down: a and b run pgbench, and a key new to c is made on a and added to on b.
    a.psql(
        "a",
        "INSERT INTO pgbench_accounts VALUES (2000001, 1, 0, 'new on a')",
    );
    run_tpcb(a, "a", 2000001, 7);
    eventually(Duration::from_secs(60), "the new account on b", || {
        b.psql(
            "b",
            "SELECT count(*) FROM pgbench_accounts WHERE aid = 2000001",
        ) == "1"
    });
    run_tpcb(b, "b", 2000001, 5);
    transactions += 2;
    transactions += std::thread::scope(|s| {
        let runs = [
            s.spawn(|| bench(a, "a", "10")),
            s.spawn(|| bench(b, "b", "10")),
        ];
        runs.into_iter().map(|r| r.join().unwrap()).sum::<i64>()
    });
    // c's last changes may have reached a and not b in the round it crashed in (a master's
    // changes travel only from it): a and b then differ by those until c returns. What they
    // wrote since the crash converges.
    let since = |cl: &Cluster, db: &str| {
        cl.psql(
            db,
            &format!(
                "SELECT count(*) || ' ' || coalesce(sum(delta), 0) || ' ' || md5(coalesce(string_agg(h::text, ',' ORDER BY h::text), '')) \
                 FROM pgbench_history h WHERE mtime > '{crashed}'"
            ),
        ) + &cl.psql(db, "SELECT ' ' || abalance FROM pgbench_accounts WHERE aid = 2000001")
    };
    eventually(
        Duration::from_secs(60),
        "a and b to converge on their writes while c is down",
        || since(a, "a") == since(b, "b"),
    );
    // c's last transactions are not all on a and b yet: only the sums.
    assert_money_adds_up(a, "a", None);
    assert_money_adds_up(b, "b", None);

    // The README's three-master case: a key new to c (made on a) and an increment on b that a
    // has not received either reach c in the same round, when c returns.
    a.psql(
        "a",
        "INSERT INTO pgbench_accounts VALUES (2000002, 1, 0, 'new on a')",
    );
    run_tpcb(a, "a", 2000002, 7);
    // Only this account: c's last transactions before its crash may have reached a and not b
    // (README: a master failing during a round), so the whole tables can differ until c returns.
    let second = |cl: &Cluster, db: &str| {
        cl.psql(
            db,
            "SELECT (SELECT abalance || '/' || filler FROM pgbench_accounts WHERE aid = 2000002) || ' ' || \
             (SELECT count(*) || '/' || coalesce(sum(delta), 0) FROM pgbench_history WHERE aid = 2000002)",
        )
    };
    eventually(
        Duration::from_secs(60),
        "the second new account on b",
        || second(b, "b") == second(a, "a"),
    );
    daemon.stop();
    run_tpcb(b, "b", 2000002, 5);
    run_tpcb(a, "a", 2000002, 11);
    transactions += 3;
    daemon = Daemon::start(&cfg);
    c.restart();
    wait_for_daemon(&cfg);
    // c writes again at once, to the new key too.
    eventually(Duration::from_secs(60), "the new account on c", || {
        c.psql(
            "c",
            "SELECT count(*) FROM pgbench_accounts WHERE aid = 2000001",
        ) == "1"
    });
    run_tpcb(c, "c", 2000001, 3);
    transactions += 1;
    drover_wait(&cfg, "mm", 180);
    for (cl, db) in [(a, "a"), (b, "b"), (c, "c")] {
        assert_money_adds_up(cl, db, Some(transactions));
    }
    let first = bank_md5s(a, "a");
    assert_eq!(first, bank_md5s(b, "b"), "b differs from a");
    assert_eq!(first, bank_md5s(c, "c"), "c differs from a");
    assert_verify_equal(&cfg, "mm");
    daemon.stop();
}

#[test]
fn a_key_new_to_a_returning_master_gets_the_increments_its_winner_lacked() {
    // a and b on one cluster, c on another so that it can be stopped.
    let (ab, cc) = (Cluster::start(), Cluster::start());
    let dbs = [(&ab, "a"), (&ab, "b"), (&cc, "c")];
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for (cl, db) in dbs {
        cl.create_db(db);
        cl.psql(db, COUNTED);
        toml.push_str(&cl.database_toml(db, db));
    }
    toml.push_str(
        "[relgroups.g]\ntables = [\"t\"]\n[relgroups.g.delta_columns]\nt = [\"n\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    drover_wait(&cfg, "s", 60);
    cc.stop_immediate();
    // While c is down, a makes key 500 and b receives it.
    ab.psql("a", "INSERT INTO t VALUES (500, 7, 'new on a')");
    eventually(Duration::from_secs(60), "key 500 on b", || {
        ab.psql("b", "SELECT count(*) FROM t WHERE id = 500") == "1"
    });
    // Then b and a add to it, and c returns: c's first round brings a's row (the winner: the
    // row was inserted there) and b's increment, which a has not received either.
    daemon.stop();
    ab.psql("b", "UPDATE t SET n = n + 5 WHERE id = 500");
    ab.psql("a", "UPDATE t SET n = n + 11 WHERE id = 500");
    cc.restart();
    daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 120);
    for (cl, db) in dbs {
        assert_eq!(
            cl.psql(db, "SELECT n FROM t WHERE id = 500"),
            "23",
            "key 500 on {db}: 7 + 5 + 11"
        );
    }
    assert_eq!(
        table_md5(&ab, "a", "t", "id"),
        table_md5(&cc, "c", "t", "id")
    );
    assert_eq!(
        table_md5(&ab, "b", "t", "id"),
        table_md5(&cc, "c", "t", "id")
    );
    assert_verify_equal(&cfg, "s");
    daemon.stop();
}
