//! Multi-master: several writable sources kept identical, conflicts resolved per key with one
//! deterministic winner, logged on every master involved, no replication loops.

mod support;

use std::time::{Duration, Instant};

use support::scenario::*;
use support::*;

/// A config with one sync `mm` whose sources are `dbs` (all on cluster `c` unless `clusters`
/// gives one per database), plus extra sync keys.
fn mm_config(dbs: &[(&Cluster, &str)], extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    for (c, db) in dbs {
        toml.push_str(&c.database_toml(db, db));
    }
    let names: Vec<String> = dbs.iter().map(|(_, d)| format!("\"{d}\"")).collect();
    toml.push_str(&format!(
        "[relgroups.herd]\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [{}]\n{extra}\n",
        names.join(", ")
    ));
    let path = write_config(dir.path(), &toml);
    (dir, path)
}

fn pgbench_bg(c: &Cluster, db: &str, secs: u32) -> std::thread::JoinHandle<()> {
    pgbench_in_background(c, db, &["-n", "-c", "2", "-T", &secs.to_string()])
}

fn assert_all_same(dbs: &[(&Cluster, &str)]) {
    for (t, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
    ] {
        let first = table_md5(dbs[0].0, dbs[0].1, t, key);
        for (c, db) in &dbs[1..] {
            assert_eq!(first, table_md5(c, db, t, key), "{t} differs on {db}");
        }
    }
}

/// After writes stop: delta tables drain and further rounds apply nothing (no ping-pong).
fn assert_quiescent(cfg: &std::path::Path, dbs: &[(&Cluster, &str)]) {
    for (c, db) in dbs {
        eventually(Duration::from_secs(20), "delta tables to drain", || {
            delta_rows(c, db) == 0
        });
    }
    let before = sync_status(cfg, "mm")["rows_inserted"].as_u64().unwrap();
    for _ in 0..3 {
        drover_ok(cfg, &["kick", "mm"]);
        drover_wait(cfg, "mm", 30);
    }
    let rounds_then = sync_status(cfg, "mm")["rounds"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "another round", || {
        sync_status(cfg, "mm")["rounds"].as_u64().unwrap() > rounds_then
    });
    assert_eq!(
        sync_status(cfg, "mm")["rows_inserted"].as_u64().unwrap(),
        before,
        "rounds after quiescence applied rows"
    );
}

#[test]
fn two_masters_under_pgbench_converge() {
    let a = Cluster::start();
    let b = Cluster::start();
    for c in [&a, &b] {
        c.create_db("a");
    }
    // Same deterministic pgbench data on both (pgbench -i writes identical rows).
    a.pgbench("a", &["-i", "-s", "1", "-q"]);
    b.pgbench("a", &["-i", "-s", "1", "-q"]);
    // Database names in the config must differ: the second cluster's is named b.
    b.psql("postgres", "ALTER DATABASE a RENAME TO b");
    let dbs = [(&a, "a"), (&b, "b")];
    assert_all_same(&dbs);
    let (_dir, cfg) = mm_config(&dbs, "");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    let w1 = pgbench_bg(&a, "a", 30);
    let w2 = pgbench_bg(&b, "b", 30);
    w1.join().unwrap();
    w2.join().unwrap();
    let t = Instant::now();
    drover_wait(&cfg, "mm", 120);
    eprintln!(
        "two masters: converged {:.3} s after writes stopped",
        t.elapsed().as_secs_f64()
    );
    assert_all_same(&dbs);

    let s = sync_status(&cfg, "mm");
    let conflicts = s["conflicts"].as_u64().unwrap();
    eprintln!("two masters: {conflicts} conflicts; status {s}");
    assert!(
        conflicts > 0,
        "the same accounts were hit on both: conflicts expected"
    );
    // Logged on both masters, with both versions.
    for (c, db) in dbs {
        let n: u64 = c
            .psql(db, "SELECT count(*) FROM drover.conflicts")
            .parse()
            .unwrap();
        assert!(n > 0, "no conflicts logged on {db}");
        let both = c.psql(
            db,
            "SELECT count(*) FROM drover.conflicts WHERE versions ? 'a' AND versions ? 'b' AND strategy = 'latest' \
             AND winner IN ('a', 'b') AND versions->'a' ? 'changed_at'",
        );
        assert_eq!(
            both,
            n.to_string(),
            "every conflict on {db} holds both versions"
        );
    }
    assert_quiescent(&cfg, &dbs);
    daemon.stop();
}

#[test]
fn three_masters_with_kill9_restarts() {
    let c = Cluster::start();
    for db in ["a", "b", "c"] {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let dbs = [(&c, "a"), (&c, "b"), (&c, "c")];
    let (_dir, cfg) = mm_config(&dbs, "");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let writers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|db| pgbench_bg(&c, db, 12))
        .collect();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(500));
        daemon = Daemon::start(&cfg);
    }
    for w in writers {
        w.join().unwrap();
    }
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 120);
    assert_all_same(&dbs);
    assert_quiescent(&cfg, &dbs);
    daemon.stop();
}

#[test]
fn masters_on_postgres_10_and_17_as_non_superuser() {
    // Different majors, and an apply role that may not set session_replication_role: the
    // drover.origin guard alone must prevent loops.
    let old = support::versions::cluster(10);
    let new = support::versions::cluster(17);
    for (c, db) in [(&old, "a"), (&new, "b")] {
        c.psql("postgres", "CREATE ROLE app LOGIN");
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        c.psql(
            db,
            "SET ROLE app; CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text);",
        );
        c.psql(
            db,
            "SET ROLE app; INSERT INTO items SELECT g, 0, 'seed' FROM generate_series(1, 200) g;",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = |c: &Cluster, name: &str| {
        format!("[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"app\"\n", c.port)
    };
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"items\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        db(&old, "a"),
        db(&new, "b")
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("drover.origin guard only"), "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    // Interleaved writes on both masters, some on the same keys.
    for i in 0..150 {
        old.psql(
            "a",
            &format!(
                "SET ROLE app; UPDATE items SET n = n + 1, note = 'a{i}' WHERE id = {}",
                i % 50 + 1
            ),
        );
        new.psql(
            "b",
            &format!(
                "SET ROLE app; UPDATE items SET n = n + 10, note = 'b{i}' WHERE id = {}",
                i % 70 + 30
            ),
        );
        if i % 30 == 0 {
            old.psql(
                "a",
                &format!(
                    "SET ROLE app; INSERT INTO items VALUES ({}, 1, 'new on a')",
                    1000 + i
                ),
            );
            new.psql(
                "b",
                &format!(
                    "SET ROLE app; DELETE FROM items WHERE id = {}",
                    150 + i / 30
                ),
            );
        }
    }
    drover_wait(&cfg, "mm", 60);
    assert_eq!(
        table_md5(&old, "a", "items", "id"),
        table_md5(&new, "b", "items", "id")
    );
    for (c, name) in [(&old, "a"), (&new, "b")] {
        eventually(Duration::from_secs(20), "delta tables to drain", || {
            delta_rows(c, name) == 0
        });
    }
    daemon.stop();
}
