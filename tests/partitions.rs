//! Partitioned tables: a partitioned table in a relgroup replicates all its partitions' rows,
//! rows that move between partitions too, whether the target is partitioned the same way,
//! differently, or not at all.

mod support;

use support::scenario::*;
use support::*;

const SOURCE: &str = "
CREATE TABLE events (id int NOT NULL, region text NOT NULL, at date NOT NULL, payload text,
                     PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
CREATE TABLE events_other PARTITION OF events DEFAULT;";

const SAME: &str = SOURCE;
const DIFFERENT: &str = "
CREATE TABLE events (id int NOT NULL, region text NOT NULL, at date NOT NULL, payload text,
                     PRIMARY KEY (id, region)) PARTITION BY HASH (id);
CREATE TABLE events_h0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_h1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);";
const PLAIN: &str = "
CREATE TABLE events (id int NOT NULL, region text NOT NULL, at date NOT NULL, payload text,
                     PRIMARY KEY (id, region));";

#[test]
fn partitioned_source_to_same_different_and_plain_targets() {
    let c = Cluster::start();
    c.create_db("src");
    c.psql("src", SOURCE);
    for (db, ddl) in [("same", SAME), ("diff", DIFFERENT), ("plain", PLAIN)] {
        c.create_db(db);
        c.psql(db, ddl);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}{}[relgroups.g]\ntables = [\"events\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"same\", \"diff\", \"plain\"]\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("same", "same"),
        c.database_toml("diff", "diff"),
        c.database_toml("plain", "plain"),
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    c.psql(
        "src",
        "INSERT INTO events SELECT g, (ARRAY['eu','us','apac'])[g % 3 + 1], date '2024-01-01' + g, 'p' || g \
         FROM generate_series(1, 3000) g;",
    );
    // Rows that move between partitions (the partition key is part of the primary key, so the
    // key changes too), updates in place, deletes in every partition.
    c.psql(
        "src",
        "UPDATE events SET region = 'us' WHERE region = 'eu' AND id % 10 = 1",
    );
    c.psql(
        "src",
        "UPDATE events SET region = 'mars' WHERE region = 'us' AND id % 7 = 0",
    );
    c.psql(
        "src",
        "UPDATE events SET payload = 'changed' WHERE id % 11 = 0",
    );
    c.psql("src", "DELETE FROM events WHERE id % 13 = 0");
    drover_wait(&cfg, "s", 60);
    let want = table_md5(&c, "src", "events", "id, region");
    for db in ["same", "diff", "plain"] {
        assert_eq!(
            table_md5(&c, db, "events", "id, region"),
            want,
            "events on {db}"
        );
    }
    // A partition's rows deleted through the parent (writes and TRUNCATE naming a partition:
    // tests/partition_writes.rs).
    c.psql("src", "DELETE FROM events WHERE region = 'apac'");
    drover_wait(&cfg, "s", 60);
    let want = table_md5(&c, "src", "events", "id, region");
    for db in ["same", "diff", "plain"] {
        assert_eq!(
            table_md5(&c, db, "events", "id, region"),
            want,
            "events on {db} after delete"
        );
    }
    daemon.stop();
}
