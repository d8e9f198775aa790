//! Conflict strategies, deterministic: conflicting changes made on purpose, in a known order
//! (so known `changed_at`), while no daemon runs; then one daemon resolves them and the winner
//! is checked row by row on both masters, including update/delete, delete/update,
//! delete/delete and insert/insert.

mod support;

use support::scenario::*;
use support::*;

fn setup(strategy: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'orig' FROM generate_series(1, 6) g;");
    }
    let dir = tempfile::tempdir().unwrap();
    // With a token the CLI's status shows conflicting keys (row data) in `last_error`.
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\napi_token = \"strategies-t0ken\"\n{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n{strategy}\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    (c, dir, cfg)
}

/// The conflicting changes, each in its own transaction, in this order.
fn conflicting_changes(c: &Cluster) {
    for (db, sql) in [
        ("a", "UPDATE t SET v = 'a1' WHERE id = 1"),
        ("b", "UPDATE t SET v = 'b1' WHERE id = 1"),
        ("b", "UPDATE t SET v = 'b2' WHERE id = 2"),
        ("a", "UPDATE t SET v = 'a2' WHERE id = 2"),
        ("a", "UPDATE t SET v = 'a3' WHERE id = 3"),
        ("b", "DELETE FROM t WHERE id = 3"),
        ("a", "DELETE FROM t WHERE id = 4"),
        ("b", "UPDATE t SET v = 'b4' WHERE id = 4"),
        ("a", "DELETE FROM t WHERE id = 5"),
        ("b", "DELETE FROM t WHERE id = 5"),
        ("a", "INSERT INTO t VALUES (10, 'a10')"),
        ("b", "INSERT INTO t VALUES (10, 'b10')"),
        ("a", "UPDATE t SET v = 'a6' WHERE id = 6"),
    ] {
        c.psql(db, sql);
    }
}

fn rows(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM t",
    )
}

/// Runs the changes through a daemon and returns the daemon (still running) once it has had
/// a chance to resolve them.
fn resolve(c: &Cluster, cfg: &std::path::Path, expect_good: bool) -> Daemon {
    conflicting_changes(c);
    let daemon = Daemon::start(cfg);
    wait_for_daemon(cfg);
    if expect_good {
        drover_wait(cfg, "mm", 60);
    } else {
        eventually(
            std::time::Duration::from_secs(30),
            "the sync to go bad",
            || sync_status(cfg, "mm")["state"] == "bad",
        );
    }
    daemon
}

#[test]
fn latest_wins_row_by_row() {
    let (c, _dir, cfg) = setup("conflict_strategy = \"latest\"");
    let mut d = resolve(&c, &cfg, true);
    let expected = "1=b1 2=a2 4=b4 6=a6 10=b10";
    assert_eq!(rows(&c, "a"), expected);
    assert_eq!(rows(&c, "b"), expected);
    assert_eq!(sync_status(&cfg, "mm")["conflicts"], 6);
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT string_agg((key->>'id') || ':' || coalesce(winner, '-'), ' ' ORDER BY (key->>'id')::int) FROM drover.conflicts"),
            "1:b 2:a 3:b 4:b 5:b 10:b",
            "conflict log on {db}"
        );
    }
    // Both versions are in the log: the update that lost on id 3 and the delete that won.
    let v = c.psql(
        "a",
        "SELECT versions::text FROM drover.conflicts WHERE key->>'id' = '3'",
    );
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["a"]["row"]["v"], "a3");
    assert!(v["b"]["row"].is_null());
    assert!(v["a"]["changed_at"].as_str().unwrap() < v["b"]["changed_at"].as_str().unwrap());
    clocks_are_measured(&cfg);
    d.stop();
}

/// `latest` compares the masters' clocks: each round measures both masters' offsets. Both run
/// on this machine's clock, so a real skew cannot be made here (the unit tests of
/// `round::clock` check the arithmetic and the warning over 1 s): the offsets must be there and
/// small, and nothing is warned.
fn clocks_are_measured(cfg: &std::path::Path) {
    let s = sync_status(cfg, "mm");
    for db in ["a", "b"] {
        let o = s["clock_offsets"][db].as_f64();
        assert!(o.is_some_and(|o| o.abs() < 1.0), "offset of {db}: {s}");
    }
    assert_eq!(s["warnings"], serde_json::json!([]), "{s}");
    let toml = std::fs::read_to_string(cfg).unwrap();
    let listen = toml
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("listen in the config");
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{listen}/metrics")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("drover_clock_offset_seconds{database=\"a\"}")
            && text.contains("drover_clock_offset_seconds{database=\"b\"}"),
        "/metrics lacks the clock offsets:\n{text}"
    );
}

#[test]
fn priority_first_listed_wins() {
    let (c, _dir, cfg) = setup("conflict_strategy = \"priority\"\npriority = [\"a\", \"b\"]");
    let mut d = resolve(&c, &cfg, true);
    let expected = "1=a1 2=a2 3=a3 6=a6 10=a10";
    assert_eq!(rows(&c, "a"), expected);
    assert_eq!(rows(&c, "b"), expected);
    assert_eq!(
        c.psql(
            "b",
            "SELECT DISTINCT strategy || ':' || winner FROM drover.conflicts"
        ),
        "priority:a"
    );
    d.stop();
}

#[test]
fn abort_applies_nothing_and_names_the_keys() {
    let (c, _dir, cfg) = setup("conflict_strategy = \"abort\"");
    let mut d = resolve(&c, &cfg, false);
    let s = sync_status(&cfg, "mm");
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("conflict_strategy = \"abort\""), "{err}");
    for id in [1, 2, 3, 4, 5, 10] {
        assert!(
            err.contains(&format!("public.t {{\"id\":{id}}}")),
            "key {id} named: {err}"
        );
    }
    assert!(!err.contains("{\"id\":6}"), "no conflict on 6: {err}");
    assert!(
        err.starts_with("conflict between a, b: 6 conflicting key(s)"),
        "{err}"
    );
    // Nothing applied, not even the key without a conflict.
    assert_eq!(rows(&c, "a"), "1=a1 2=a2 3=a3 6=a6 10=a10");
    assert_eq!(rows(&c, "b"), "1=b1 2=b2 4=b4 6=orig 10=b10");
    assert_eq!(c.psql("a", "SELECT count(*) FROM drover.conflicts"), "0");
    d.stop();
}

#[test]
fn skip_applies_neither_side_but_the_rest() {
    let (c, _dir, cfg) = setup("conflict_strategy = \"skip\"");
    let mut d = resolve(&c, &cfg, true);
    assert_eq!(rows(&c, "a"), "1=a1 2=a2 3=a3 6=a6 10=a10");
    assert_eq!(rows(&c, "b"), "1=b1 2=b2 4=b4 6=a6 10=b10");
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT count(*) || ':' || count(winner) || ':' || min(strategy) FROM drover.conflicts"),
            "6:0:skip"
        );
    }
    // Logged once: the skipped keys do not come back round after round.
    eventually(
        std::time::Duration::from_secs(20),
        "delta tables to drain",
        || delta_rows(&c, "a") + delta_rows(&c, "b") == 0,
    );
    drover_ok(&cfg, &["kick", "mm"]);
    drover_wait(&cfg, "mm", 30);
    assert_eq!(c.psql("a", "SELECT count(*) FROM drover.conflicts"), "6");
    assert_eq!(sync_status(&cfg, "mm")["conflicts"], 6);
    d.stop();
}
