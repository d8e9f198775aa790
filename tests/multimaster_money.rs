//! The money test: pgbench's TPC-B-like transactions on two masters at once, with the three
//! balance columns as delta columns. Every transaction adds the same delta to one account, one
//! teller and one branch and logs it in pgbench_history, so after `drover wait` each master
//! must hold, in every balance column, the sum of the deltas logged on both masters; and the
//! masters must be identical. Without delta columns concurrent increments overwrite each other
//! and the sums fall short.
//!
//! pgbench_history has no key: it replicates as whole-row images, so each master ends with
//! both masters' history, and every account, teller and branch must hold the sum of its
//! own deltas there.

mod support;

use support::scenario::*;
use support::*;

const TABLES: [(&str, &str); 3] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
];

const BALANCES: [(&str, &str, &str); 3] = [
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

#[test]
fn concurrent_pgbench_on_two_masters_adds_up() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}\
         [relgroups.bank]\ntables = [\"pgbench_accounts\", \"pgbench_branches\", \"pgbench_tellers\", \"pgbench_history\"]\n\
         [relgroups.bank.delta_columns]\n\
         pgbench_accounts = [\"abalance\"]\npgbench_branches = [\"bbalance\"]\npgbench_tellers = [\"tbalance\"]\n\
         [syncs.mm]\nrelgroup = \"bank\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);

    // Both masters at once, bounded in time (pgbench -T).
    let transactions: i64 = std::thread::scope(|s| {
        let runs: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|db| {
                let c = &c;
                s.spawn(move || c.pgbench(db, &["-n", "-c", "2", "-T", "30"]))
            })
            .collect();
        runs.into_iter()
            .map(|r| processed(&r.join().unwrap()))
            .sum()
    });
    assert!(
        transactions > 100,
        "pgbench ran: {transactions} transactions"
    );
    drover_wait(&cfg, "mm", 180);

    let logged = c.psql("a", "SELECT coalesce(sum(delta), 0) FROM pgbench_history");
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM pgbench_history"),
            transactions.to_string(),
            "on {db}: history rows against the transactions pgbench ran on both masters"
        );
        let sums = c.psql(
            db,
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches) \
             || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers)",
        );
        assert_eq!(
            sums,
            format!("{logged} {logged} {logged}"),
            "on {db}: sum(abalance) sum(bbalance) sum(tbalance) against sum(delta) of {transactions} transactions on both masters"
        );
        for (t, k, col) in BALANCES {
            let off = c.psql(
                db,
                &format!(
                    "SELECT count(*) FROM {t} x LEFT JOIN (SELECT {k}, sum(delta) AS s FROM pgbench_history GROUP BY {k}) h \
                     USING ({k}) WHERE x.{col} <> coalesce(h.s, 0)"
                ),
            );
            assert_eq!(
                off, "0",
                "on {db}: rows of {t} whose {col} is not the sum of their deltas"
            );
        }
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM drover.conflicts"),
            "0",
            "increments are no conflicts on {db}"
        );
    }
    let history = |db| table_md5(&c, db, "pgbench_history", "md5_row_::text");
    assert_eq!(history("a"), history("b"), "pgbench_history");
    for (t, k) in TABLES {
        assert_eq!(table_md5(&c, "a", t, k), table_md5(&c, "b", t, k), "{t}");
    }
    daemon.stop();
}
