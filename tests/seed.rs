//! The seed document's migration: pgbench scale 1 on a legacy server, the same data on a new
//! one, a sync of accounts/branches/tellers, `pgbench -t 10000` on the source while the daemon
//! runs, `drover wait`, then every table identical.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

#[test]
fn seed_scenario_pgbench_t10000() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    let check = drover_ok(&setup.config, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);

    src.pgbench("repdb", &["-t", "10000", "-n"]);
    let waited = drover_wait(&setup.config, "legacy_to_new", 300);
    eprintln!("seed scenario: drover wait returned {waited:.3} s after pgbench -t 10000 ended");
    assert_pgbench_same(&src, &dst);

    let s = sync_status(&setup.config, "legacy_to_new");
    assert_eq!(s["state"], "good", "{s}");
    // Every pgbench transaction updates one account, teller and branch: at least 10000
    // distinct-key changes reached the target as delete+insert pairs.
    let ins = s["rows_inserted"].as_u64().unwrap();
    let del = s["rows_deleted"].as_u64().unwrap();
    assert!(ins >= 9_000 && ins == del, "inserted {ins} deleted {del}");

    let text = drover_ok(&setup.config, &["status", "legacy_to_new"]);
    assert!(text.contains("Current state            : good"), "{text}");
    assert!(drover_ok(&setup.config, &["kick", "legacy_to_new"]).contains("Kicked"));

    // No loops, and the delta tables drain once the targets have everything.
    eventually(Duration::from_secs(20), "delta tables to be purged", || {
        delta_rows(&src, "repdb") == 0
    });
    // Rounds begin their source transaction inside their first flight and roll it back when
    // done: no pooled session of the daemon is left inside a transaction between rounds.
    eventually(
        Duration::from_secs(10),
        "no drover session in a transaction",
        || {
            src.psql(
                "repdb",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drover:%' \
             AND state LIKE 'idle in transaction%'",
            ) == "0"
        },
    );
    // SIGTERM: the daemon finishes its round and exits 0.
    daemon.stop();
    assert_eq!(
        daemon.status().and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log()
    );
}

#[test]
fn single_change_reaches_target_quickly() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    // Let the first round pass so the timing below measures a steady daemon.
    eventually(Duration::from_secs(20), "first good round", || {
        sync_status(&setup.config, "legacy_to_new")["state"] == "good"
    });
    let mut samples = Vec::new();
    for i in 1..=15 {
        let t = std::time::Instant::now();
        src.psql(
            "repdb",
            &format!("UPDATE pgbench_accounts SET abalance = {i} WHERE aid = {i}"),
        );
        eventually(Duration::from_secs(10), "the change to arrive", || {
            dst.psql(
                "repdb",
                &format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"),
            ) == i.to_string()
        });
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Reported, not asserted: timing belongs to the benchmark.
    eprintln!(
        "single-row latency (includes psql start-up and polling): median {:.3} s, max {:.3} s",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    assert_pgbench_same(&src, &dst);
    daemon.stop();
}
