//! Multi-master with a master that is down when the daemon starts: the plans are read with the
//! masters that answer, they replicate among themselves, and the missing master is prepared and
//! catches up (both ways) when it returns.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::proxy::Proxy;
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

/// Three pgbench masters on their own clusters; with `proxied`, drover reaches `c` through a
/// proxy.
fn masters(dir: &std::path::Path, proxied: bool) -> ([Cluster; 3], PathBuf, Option<Proxy>) {
    let clusters = [Cluster::start(), Cluster::start(), Cluster::start()];
    let names = ["a", "b", "c"];
    for (c, db) in clusters.iter().zip(names) {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for (c, db) in clusters.iter().zip(names) {
        toml.push_str(&c.database_toml(db, db));
    }
    let proxy = proxied.then(|| Proxy::start(clusters[2].port));
    if let Some(p) = &proxy {
        let (direct, via) = (clusters[2].port, p.port);
        toml = toml.replace(&format!("port = {direct}\n"), &format!("port = {via}\n"));
    }
    toml.push_str(
        "[relgroups.herd]\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let cfg = write_config(dir, &toml);
    (clusters, cfg, proxy)
}

#[test]
fn a_daemon_started_while_a_master_is_down_runs_the_others_and_prepares_it_later() {
    let dir = tempfile::tempdir().unwrap();
    let (clusters, cfg, _) = masters(dir.path(), false);
    drover_ok(&cfg, &["install"]);
    let [a, b, c] = &clusters;

    // c writes with no daemon running, then goes down before the daemon starts.
    c.psql(
        "c",
        "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (1000001, 1, 7, 'from c before the daemon'); \
         UPDATE pgbench_branches SET filler = 'c' WHERE bid = 1;",
    );
    c.stop_immediate();
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let writers = [
        pgbench_in_background(a, "a", &["-n", "-c", "2", "-T", "10"]),
        pgbench_in_background(b, "b", &["-n", "-c", "2", "-T", "10"]),
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
    assert_ne!(state, "good", "status shows the missing master");
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
            "{db} lacks a write made on c before the daemon or on a while c was down"
        );
    }
    daemon.stop();
}

/// A master that returns with a table that differs from the plans stays out with an error
/// naming it and the table; the others go on, and it rejoins once its table is fixed.
#[test]
fn a_master_returning_with_a_different_table_stays_out_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let (clusters, cfg, proxy) = masters(dir.path(), true);
    let proxy = proxy.unwrap();
    drover_ok(&cfg, &["install"]);
    let [a, b, c] = &clusters;
    // c is down when the daemon starts; it comes back unseen by drover (the proxy holds its
    // connections), with a table that changed meanwhile.
    c.stop_immediate();
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    proxy.blackhole();
    c.restart();
    c.psql("c", "ALTER TABLE pgbench_branches ADD COLUMN extra int");
    a.psql(
        "a",
        "UPDATE pgbench_branches SET filler = 'a1' WHERE bid = 1",
    );
    eventually(Duration::from_secs(60), "b to get a's write", || {
        md5s(a, "a") == md5s(b, "b")
    });
    proxy.restore();
    eventually(Duration::from_secs(60), "status to name c's table", || {
        let (_, error) = state_and_error(&cfg, "mm");
        error.contains("\"c\"") && error.contains("pgbench_branches")
    });
    let (state, error) = state_and_error(&cfg, "mm");
    eprintln!("c back with another table: state {state}, error {error}");
    assert_ne!(state, "good");
    a.psql(
        "a",
        "UPDATE pgbench_branches SET filler = 'a2' WHERE bid = 1",
    );
    eventually(Duration::from_secs(60), "a and b to go on", || {
        md5s(a, "a") == md5s(b, "b")
    });
    assert_eq!(
        b.psql("b", "SELECT filler FROM pgbench_branches WHERE bid = 1"),
        "a2"
    );

    c.psql("c", "ALTER TABLE pgbench_branches DROP COLUMN extra");
    drover_wait(&cfg, "mm", 120);
    let first = md5s(a, "a");
    assert_eq!(first, md5s(b, "b"), "b differs from a");
    assert_eq!(first, md5s(c, "c"), "c differs from a");
    daemon.stop();
}
