//! Sequences listed in a relgroup follow the source's value on targets and never move
//! backwards; `drover wait` covers them.

mod support;

use support::*;

#[test]
fn sequences_follow_the_source_and_never_go_back() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE orders (id serial PRIMARY KEY, note text); CREATE SEQUENCE \"Invoice No\" START 1000;");
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"orders\"]\n\
         sequences = [\"orders_id_seq\", '\"Invoice No\"']\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(
        check.contains("sequence public.\"Invoice No\": follows src"),
        "{check}"
    );
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    support::scenario::wait_for_daemon(&cfg);

    c.psql("src", "INSERT INTO orders (note) SELECT 'o' || g FROM generate_series(1, 42) g; SELECT nextval('\"Invoice No\"') FROM generate_series(1, 7);");
    support::scenario::drover_wait(&cfg, "s", 60);
    assert_eq!(c.psql("dst", "SELECT last_value FROM orders_id_seq"), "42");
    assert_eq!(
        c.psql("dst", "SELECT last_value FROM \"Invoice No\""),
        "1006"
    );
    // After cutover the new primary inserts without key clashes.
    c.psql("dst", "INSERT INTO orders (note) VALUES ('on the target')");
    assert_eq!(c.psql("dst", "SELECT max(id) FROM orders"), "43");

    // A target ahead of the source keeps its value.
    c.psql("dst", "SELECT setval('\"Invoice No\"', 5000)");
    c.psql("src", "SELECT nextval('\"Invoice No\"')");
    drover_ok(&cfg, &["kick", "s"]);
    support::scenario::drover_wait(&cfg, "s", 60);
    assert_eq!(
        c.psql("dst", "SELECT last_value FROM \"Invoice No\""),
        "5000"
    );
    daemon.stop();
}
