//! A backlog larger than one round's budget (100,000 delta rows per table) is applied in
//! several bounded rounds, each its own target transaction, with the same end result.

mod support;

use support::scenario::*;
use support::*;

#[test]
fn large_backlog_is_applied_in_bounded_rounds() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL); INSERT INTO big SELECT g, 0 FROM generate_series(1, 200000) g;");
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["big"]);
    drover_ok(&setup.config, &["install"]);
    // 50 transactions of 5,000 rows each: 250,000 delta rows while no daemon runs.
    c.psql(
        "src",
        "DO $$ BEGIN FOR i IN 0..49 LOOP UPDATE big SET v = v + 1 WHERE id % 40 = i % 40; COMMIT; END LOOP; END $$;",
    );
    let mut daemon = Daemon::start_with(&setup.config, &[], &[("NO_COLOR", "1")]);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 120);
    assert_eq!(
        table_md5(&c, "src", "big", "id"),
        table_md5(&c, "dst", "big", "id")
    );
    daemon.stop();
    let log = daemon.log();
    let sizes: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("round applied changes"))
        .filter_map(|l| {
            l.split("inserted=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        sizes.len() >= 2,
        "one round took the whole backlog: {sizes:?}"
    );
    // A round may overshoot the budget by at most one transaction (5,000 rows).
    assert!(
        sizes.iter().all(|&n| n <= 105_000),
        "a round exceeded the budget: {sizes:?}"
    );
    // 200,000 distinct keys; keys changed again in a later round's slice are applied again.
    let total: u64 = sizes.iter().sum();
    assert!(
        (200_000..=250_000).contains(&total),
        "rows applied: {sizes:?}"
    );
}

/// A bounded round carries rows as they are at the round's snapshot, not at its cut: here the
/// first cut holds only T0, but id 1000 is read with T2's value u = 7 while id 7 (changed by
/// T1, beyond the cut) still holds u = 7 on the target. The unique index on u refuses that
/// round on every retry unless the next attempt applies the rest of the backlog with it.
#[test]
fn bounded_round_never_wedges_on_a_unique_index() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t (id int PRIMARY KEY, u int NOT NULL UNIQUE); INSERT INTO t VALUES (7, 7);",
        );
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["t"]);
    drover_ok(&setup.config, &["install"]);
    // T0, T1, T2: each its own transaction, while no daemon runs.
    c.psql(
        "src",
        "INSERT INTO t SELECT g, g FROM generate_series(1000, 101000) g;",
    );
    c.psql("src", "UPDATE t SET u = -7 WHERE id = 7;");
    c.psql("src", "UPDATE t SET u = 7 WHERE id = 1000;");
    let mut daemon = Daemon::start_with(&setup.config, &[], &[("NO_COLOR", "1")]);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 120);
    assert_eq!(
        table_md5(&c, "src", "t", "id"),
        table_md5(&c, "dst", "t", "id")
    );
    eventually(
        std::time::Duration::from_secs(30),
        "the sync to report good",
        || sync_status(&setup.config, "legacy_to_new")["state"] == "good",
    );
    daemon.stop();
}
