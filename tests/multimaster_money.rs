//! The money test: pgbench's TPC-B-like transactions on two masters at once, with the three
//! balance columns as delta columns. Every transaction adds the same delta to one account, one
//! teller and one branch and logs it in pgbench_history, so after `drover wait` each master
//! must hold, in every balance column, the sum of the deltas logged on both masters; and the
//! masters must be identical. Without delta columns concurrent increments overwrite each other
//! and the sums fall short.
//!
//! pgbench_history has no key and is not replicated here (key-less tables across masters are
//! a separate item): the expected sum is taken over both masters' local history.

mod support;

use support::scenario::*;
use support::*;

const TABLES: [(&str, &str); 3] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
];

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
         [relgroups.bank]\ntables = [\"pgbench_accounts\", \"pgbench_branches\", \"pgbench_tellers\"]\n\
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
    std::thread::scope(|s| {
        for db in ["a", "b"] {
            let c = &c;
            s.spawn(move || c.pgbench(db, &["-n", "-c", "2", "-T", "30"]));
        }
    });
    drover_wait(&cfg, "mm", 180);

    let logged: i64 = ["a", "b"]
        .iter()
        .map(|db| {
            let sum = c.psql(db, "SELECT coalesce(sum(delta), 0) FROM pgbench_history");
            sum.parse::<i64>().unwrap()
        })
        .sum();
    let transactions: i64 = ["a", "b"]
        .iter()
        .map(|db| {
            c.psql(db, "SELECT count(*) FROM pgbench_history")
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert!(
        transactions > 100,
        "pgbench ran: {transactions} transactions"
    );
    for db in ["a", "b"] {
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
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM drover.conflicts"),
            "0",
            "increments are no conflicts on {db}"
        );
    }
    for (t, k) in TABLES {
        assert_eq!(table_md5(&c, "a", t, k), table_md5(&c, "b", t, k), "{t}");
    }
    daemon.stop();
}
