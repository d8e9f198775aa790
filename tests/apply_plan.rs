//! A round that changes 1 % of a large table finds the changed rows on the target through the
//! key's index, as PostgreSQL's own apply worker does, not by scanning the whole table: with
//! the default random_page_cost the planner hashed the changed keys and scanned the table
//! (200k rows here; four times slower than the index at 1M rows, more as the table grows).

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
    let scans_before = scans(&c);
    // One transaction: one round, over the small-round limit, so the COPY path applies it.
    c.psql(
        "src",
        &format!("UPDATE big SET v = v + 1 WHERE id % {} = 0", ROWS / CHANGED),
    );
    drover_wait(&setup.config, "legacy_to_new", 60);
    let scans_after = wait_for_stats(&c, &scans_before);
    daemon.stop();
    assert_eq!(
        table_md5(&c, "src", "big", "id"),
        table_md5(&c, "dst", "big", "id")
    );
    assert_eq!(
        scans_after.seq_scan, scans_before.seq_scan,
        "the apply scanned the whole target table: before {scans_before:?}, after {scans_after:?}"
    );
    assert!(
        scans_after.idx_scan > scans_before.idx_scan,
        "{scans_after:?}"
    );
}

#[derive(Debug, PartialEq)]
struct Scans {
    seq_scan: i64,
    idx_scan: i64,
    /// Rows written: the stats of the round's transaction have arrived once this moved.
    written: i64,
}

fn scans(c: &Cluster) -> Scans {
    let out = c.psql(
        "dst",
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

/// Backends report their table statistics up to a second after a transaction ends.
fn wait_for_stats(c: &Cluster, before: &Scans) -> Scans {
    for _ in 0..100 {
        let now = scans(c);
        if now.written >= before.written + i64::from(CHANGED) {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the round's statistics never arrived: {:?}", scans(c));
}
