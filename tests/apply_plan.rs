//! A round that changes 1 % of a large table finds the changed rows through the key's index,
//! as PostgreSQL's own apply worker does, not by scanning the whole table: on the target
//! (the delete or update) and on the source (reading the current rows). With the default
//! random_page_cost the planner hashed the changed keys and scanned the table (200k rows
//! here; four times slower than the index at 1M rows, more as the table grows).

mod support;

use support::scenario::*;
use support::*;

const ROWS: u32 = 200_000;
const CHANGED: u32 = 2_000;

#[test]
fn a_replica_mode_round_finds_changed_keys_by_index() {
    changed_keys_are_found_by_index(None);
}

#[test]
fn an_in_place_round_finds_changed_keys_by_index() {
    changed_keys_are_found_by_index(Some("off"));
}

fn changed_keys_are_found_by_index(replica_role: Option<&str>) {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            &format!(
                "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text); \
                 INSERT INTO big SELECT g, 0, repeat('x', 80) FROM generate_series(1, {ROWS}) g; \
                 VACUUM ANALYZE big;"
            ),
        );
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["big"]);
    if let Some(role) = replica_role {
        let toml = std::fs::read_to_string(&setup.config).unwrap();
        let toml = toml.replace(
            "[databases.new]\n",
            &format!("[databases.new]\nreplica_role = \"{role}\"\n"),
        );
        std::fs::write(&setup.config, toml).unwrap();
    }
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    daemon.stop();
    // One transaction while the daemon is stopped: one round, over the small-round limit, so
    // the COPY path applies it. (The UPDATE's own scan is counted before the round.)
    c.psql(
        "src",
        &format!("UPDATE big SET v = v + 1 WHERE id % {} = 0", ROWS / CHANGED),
    );
    // As autovacuum would after that many delta rows: the planner knows the delta table's size.
    c.psql("src", "ANALYZE");
    let source_before = scans(&c, "src");
    let target_before = scans(&c, "dst");
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    drover_wait(&setup.config, "legacy_to_new", 60);
    let target_after = wait_for_stats(&c, "dst", |now| {
        now.written >= target_before.written + i64::from(CHANGED)
    });
    let source_after = wait_for_stats(&c, "src", |now| {
        now.seq_scan + now.idx_scan > source_before.seq_scan + source_before.idx_scan
    });
    daemon.stop();
    assert_eq!(
        table_md5(&c, "src", "big", "id"),
        table_md5(&c, "dst", "big", "id")
    );
    assert_eq!(
        target_after.seq_scan, target_before.seq_scan,
        "the apply scanned the whole target table: before {target_before:?}, after {target_after:?}"
    );
    assert!(
        target_after.idx_scan > target_before.idx_scan,
        "{target_after:?}"
    );
    assert_eq!(
        source_after.seq_scan, source_before.seq_scan,
        "the round scanned the whole source table: before {source_before:?}, after {source_after:?}"
    );
}

#[derive(Debug, PartialEq)]
struct Scans {
    seq_scan: i64,
    idx_scan: i64,
    /// Rows written: the stats of the round's transaction have arrived once this moved.
    written: i64,
}

fn scans(c: &Cluster, db: &str) -> Scans {
    let out = c.psql(
        db,
        "SELECT seq_scan, coalesce(idx_scan, 0), n_tup_ins + n_tup_upd + n_tup_del \
         FROM pg_stat_user_tables WHERE relname = 'big'",
    );
    let v: Vec<i64> = out.split('|').map(|x| x.trim().parse().unwrap()).collect();
    Scans {
        seq_scan: v[0],
        idx_scan: v[1],
        written: v[2],
    }
}

/// `db`'s statistics of `big` once `arrived` says the round's are in: backends report their
/// table statistics up to a second after a transaction ends.
fn wait_for_stats(c: &Cluster, db: &str, arrived: impl Fn(&Scans) -> bool) -> Scans {
    for _ in 0..100 {
        let now = scans(c, db);
        if arrived(&now) {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "the round's statistics on {db} never arrived: {:?}",
        scans(c, db)
    );
}
