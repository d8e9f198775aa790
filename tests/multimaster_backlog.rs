//! A multi-master backlog is applied in bounded rounds: the daemon never holds every pending
//! key in memory at once.

mod support;

use support::scenario::*;
use support::*;

use std::time::Duration;

/// The suite's size; `DROVER_TEST_MM_BACKLOG_KEYS=1000000` runs the 1M keys (a few
/// minutes: not in the suite).
const KEYS: u32 = 200_000;

fn keys() -> u32 {
    std::env::var("DROVER_TEST_MM_BACKLOG_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYS)
}
/// Peak resident memory allowed to the daemon (VmHWM), in kB.
const PEAK_KB: u64 = 50 * 1024;

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_large_backlog_converges_in_bounded_memory() {
    let keys = keys();
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    // The backlog builds while no daemon runs: transactions of 1,000 new keys on a.
    c.psql(
        "a",
        &format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP \
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; \
             COMMIT; END LOOP; END $$",
            keys / 1000 - 1
        ),
    );
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    // `drover wait` runs under the harness's 60 s limit: ask again until the backlog is in.
    eventually(
        Duration::from_secs(u64::from(keys) / 1000 * 2 + 60),
        "the backlog to converge",
        || {
            drover(&cfg, &["wait", "mm", "--timeout", "50"])
                .status
                .success()
        },
    );
    assert_eq!(table_md5(&c, "a", "t", "id"), table_md5(&c, "b", "t", "id"));
    let peak = peak_rss_kb(daemon.pid());
    eprintln!(
        "daemon peak RSS {} MB for a {keys}-key backlog",
        peak / 1024
    );
    assert!(
        peak < PEAK_KB,
        "daemon peak RSS {peak} kB over {PEAK_KB} kB"
    );
    daemon.stop();
}
