//! The day-2 commands on PostgreSQL 10, the oldest server drover supports: `init` writes a config
//! that `check` accepts, `status` reads the databases while the daemon is stopped, and
//! `verify --repair` fixes a planted difference.

mod support;

use support::scenario::*;
use support::*;

const SCHEMA: &str =
    "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE bag (a int, b text);";

#[test]
fn init_status_and_repair_on_postgresql_10() {
    let c = support::versions::cluster(10);
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, SCHEMA);
    }
    let dir = tempfile::tempdir().unwrap();
    let url = |db: &str| format!("postgresql://postgres@127.0.0.1:{}/{db}", c.port);
    let out = drover(
        &dir.path().join("none.toml"),
        &["init", "--source", &url("src"), "--target", &url("dst")],
    );
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{toml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(toml.contains("  # no key: whole-row images"), "{toml}");
    let cfg = write_config(
        dir.path(),
        &toml.replace("127.0.0.1:9187", &format!("127.0.0.1:{}", free_port())),
    );
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("public.t: ok, primary key (id)"), "{check}");

    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql("src", "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 20) g; INSERT INTO bag VALUES (1, 'x')");
    drover_wait(&cfg, "main", 60);
    daemon.stop();

    c.psql("src", "UPDATE t SET v = 'b' WHERE id <= 3");
    let out = drover(&cfg, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "databases");
    assert_eq!(doc["syncs"][0]["pending_rows"], 3, "{doc:#}");

    c.psql(
        "dst",
        "DELETE FROM t WHERE id = 10; INSERT INTO bag VALUES (2, 'y')",
    );
    let out = drover(&cfg, &["verify", "main", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("repair target: insert public.t id=10"),
        "{text}"
    );
    // The three pending updates are not on the target yet: verify repaired them too, and the
    // next rounds apply them again, harmlessly.
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "main", 60);
    for (t, k) in [("t", "id"), ("bag", "md5_row_::text")] {
        assert_eq!(
            table_md5(&c, "src", t, k),
            table_md5(&c, "dst", t, k),
            "{t}"
        );
    }
    daemon.stop();
}
