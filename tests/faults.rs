//! Faults: the daemon killed with SIGKILL at random moments of a catch-up, and the target
//! crash-stopped in the middle of rounds. Each test gets its own clusters.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::scenario::*;
use support::*;

/// A small xorshift generator seeded from the clock: random kill moments, printed for replay.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("fault seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill9_during_catch_up_loses_and_duplicates_nothing() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    // A backlog captured while no daemon runs.
    src.pgbench("repdb", &["-t", "8000", "-n"]);
    let mut rng = Rng::new();
    for round in 0..4 {
        let mut daemon = Daemon::start(&setup.config);
        let after = Duration::from_millis(50 + rng.below(600));
        std::thread::sleep(after);
        daemon.kill9();
        eprintln!("kill -9 #{round} after {after:?}");
        // More changes while the daemon is down.
        src.pgbench("repdb", &["-t", "500", "-n"]);
    }
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 180);
    assert_pgbench_same(&src, &dst);
    daemon.stop();
}

#[test]
fn target_crash_mid_round_recovers_alone() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);

    // Writes keep flowing while the target dies and comes back.
    let writer = pgbench_in_background(&src, "repdb", &["-n", "-T", "6"]);
    std::thread::sleep(Duration::from_millis(1500));
    dst.stop_immediate();
    eventually(Duration::from_secs(30), "the sync to report bad", || {
        sync_status(&setup.config, "legacy_to_new")["state"] == "bad"
    });
    let s = sync_status(&setup.config, "legacy_to_new");
    let err = s["last_error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("\"new\""),
        "last_error names the database: {err}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    dst.restart();
    writer.join().unwrap();
    let started = Instant::now();
    drover_wait(&setup.config, "legacy_to_new", 120);
    eprintln!(
        "recovered {:.2} s after writes ended",
        started.elapsed().as_secs_f64()
    );
    assert_pgbench_same(&src, &dst);
    eventually(Duration::from_secs(10), "state good again", || {
        sync_status(&setup.config, "legacy_to_new")["state"] == "good"
    });
    assert!(daemon.is_running(), "the daemon survived the target crash");
    daemon.stop();
}
