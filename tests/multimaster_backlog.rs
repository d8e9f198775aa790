//! A multi-master backlog is applied in bounded rounds: the daemon never holds every pending
//! key in memory at once.

mod support;

use support::scenario::*;
use support::*;

const KEYS: u32 = 200_000;
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
fn a_200k_key_backlog_converges_in_bounded_memory() {
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
    // The backlog builds while no daemon runs: 200 transactions of 1,000 new keys on a.
    c.psql(
        "a",
        &format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP \
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; \
             COMMIT; END LOOP; END $$",
            KEYS / 1000 - 1
        ),
    );
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 300);
    assert_eq!(table_md5(&c, "a", "t", "id"), table_md5(&c, "b", "t", "id"));
    let peak = peak_rss_kb(daemon.pid());
    eprintln!(
        "daemon peak RSS {} MB for a {KEYS}-key backlog",
        peak / 1024
    );
    assert!(
        peak < PEAK_KB,
        "daemon peak RSS {peak} kB over {PEAK_KB} kB"
    );
    daemon.stop();
}
