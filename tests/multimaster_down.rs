//! Multi-master with a master that is down: the others keep replicating among themselves, and
//! the missing master catches up (both ways) when it returns.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLES: [(&str, &str); 3] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
];

fn md5s(c: &Cluster, db: &str) -> Vec<String> {
    TABLES.iter().map(|(t, k)| table_md5(c, db, t, k)).collect()
}

#[test]
fn a_stopped_master_does_not_stop_the_others_and_catches_up() {
    let clusters = [Cluster::start(), Cluster::start(), Cluster::start()];
    let names = ["a", "b", "c"];
    for (c, db) in clusters.iter().zip(names) {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for (c, db) in clusters.iter().zip(names) {
        toml.push_str(&c.database_toml(db, db));
    }
    toml.push_str(
        "[relgroups.herd]\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    let [a, b, c] = &clusters;

    // c writes, then crashes (the lease lives on the first source, a). The sync is paused
    // meanwhile: a round reading c's write when c crashes could deliver it to a and not to b,
    // and only c sends c's changes (README: a master failing during a round).
    drover_ok(&cfg, &["pause", "mm"]);
    eventually(
        Duration::from_secs(30),
        "the daemon to see the pause",
        || sync_status(&cfg, "mm")["paused"] == true,
    );
    c.psql(
        "c",
        "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (1000001, 1, 7, 'from c before its crash'); \
         UPDATE pgbench_branches SET filler = 'c' WHERE bid = 1;",
    );
    c.stop_immediate();
    drover_ok(&cfg, &["resume", "mm"]);
    // a and b keep writing (bounded), also to a key of c's last change.
    let writers = [
        pgbench_in_background(a, "a", &["-n", "-c", "2", "-T", "30"]),
        pgbench_in_background(b, "b", &["-n", "-c", "2", "-T", "30"]),
    ];
    for w in writers {
        w.join().unwrap();
    }
    a.psql("a", "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (1000002, 1, 8, 'from a while c is down')");
    eventually(
        Duration::from_secs(60),
        "a and b to converge while c is down",
        || md5s(a, "a") == md5s(b, "b"),
    );
    let (state, error) = state_and_error(&cfg, "mm");
    eprintln!("while c is down: state {state}, error {error}");
    assert!(
        error.contains("\"c\""),
        "status names the down master: {error}"
    );

    c.restart();
    drover_wait(&cfg, "mm", 120);
    let first = md5s(a, "a");
    assert_eq!(first, md5s(b, "b"), "b differs from a");
    assert_eq!(first, md5s(c, "c"), "c differs from a");
    for (cl, db) in [(a, "a"), (b, "b"), (c, "c")] {
        let n = cl.psql(
            db,
            "SELECT count(*) FROM pgbench_accounts WHERE aid IN (1000001, 1000002)",
        );
        assert_eq!(
            n, "2",
            "{db} lacks a write made on c before its crash or on a during it"
        );
    }
    daemon.stop();
}
