//! TRUNCATE on one master while another writes new keys: no write disappears silently.
//! drover's choice (README, "TRUNCATE across masters"): the truncate reloads the table on every
//! master, and each write of another master that it erases is logged in drover.conflicts.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const WRITES: u32 = 400;

#[test]
fn truncate_with_concurrent_writes_on_the_other_master() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 100) g;");
    }
    // b's new keys come from a sequence of b's own (not replicated).
    c.psql("b", "CREATE SEQUENCE bseq START 1000001");
    c.psql("a", "CREATE TABLE seen (id bigint)");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO t VALUES (nextval('bseq'), 'from b');\n",
    )
    .unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);

    let writes = WRITES.to_string();
    let script = script.to_str().unwrap();
    let writer = pgbench_in_background(
        &c,
        "b",
        &["-n", "-c", "1", "-R", "200", "-t", &writes, "-f", script],
    );
    // Truncate a few times while b writes.
    let written = || -> u32 {
        c.psql("b", "SELECT last_value - 1000000 FROM bseq")
            .parse()
            .unwrap()
    };
    for i in 1..=4u32 {
        eventually(Duration::from_secs(60), "b to write more", || {
            written() >= i * WRITES / 5
        });
        // What a has of b's writes when it truncates is deleted there, not lost.
        c.psql("a", "BEGIN; LOCK TABLE t; INSERT INTO seen SELECT id FROM t WHERE id > 1000000; TRUNCATE t; COMMIT;");
    }
    writer.join().unwrap();
    drover_wait(&cfg, "mm", 60);
    assert_eq!(
        table_md5(&c, "a", "t", "id"),
        table_md5(&c, "b", "t", "id"),
        "masters differ"
    );
    // Every write of b is on both masters, or a had it when it truncated, or it is logged
    // as erased by the truncate (on a, b or both).
    let seen = c.psql(
        "a",
        "SELECT coalesce(string_agg(id::text, ','), '0') FROM seen",
    );
    let logged_on_a = c.psql(
        "a",
        "SELECT coalesce(string_agg(key->>'id', ','), '0') FROM drover.conflicts WHERE table_name = 'public.t'",
    );
    let lost = c.psql(
        "b",
        &format!(
            "SELECT count(*) FROM generate_series(1000001, {}) g WHERE NOT EXISTS (SELECT 1 FROM t WHERE id = g) \
             AND g NOT IN ({seen}) AND g NOT IN ({logged_on_a}) AND NOT EXISTS (SELECT 1 FROM drover.conflicts WHERE table_name = 'public.t' AND key->>'id' = g::text)",
            1_000_000 + WRITES
        ),
    );
    let logged = c.psql("b", "SELECT count(*) FROM drover.conflicts");
    let logged_a = logged_on_a.split(',').count();
    let deleted = seen.split(',').count();
    eprintln!("truncates: {deleted} writes deleted on a, {logged} erased writes logged on b, {logged_a} on a, {lost} lost silently");
    assert_eq!(lost, "0", "writes of b erased without a conflict row");
    // Each conflict counts once: those the rounds found (logged on a and b) and the erasures
    // decided in b's applies (logged on b only), each once its apply committed.
    assert_eq!(
        sync_status(&cfg, "mm")["conflicts"].to_string(),
        logged,
        "the status counts every conflict b logged"
    );
    daemon.stop();
}
