//! `drover verify --repair` (issue 14): differences planted on a target (a changed, a missing
//! and an extra row, a foreign-key child, copies of a key-less row) are found by verify;
//! `--dry-run` prints the SQL and changes nothing; `--repair` makes the target equal to the
//! source in one transaction, verify then exits 0, and later source changes still replicate.
//! Run with the target in replica mode and with foreign keys live (`replica_role = "off"`,
//! the in-place path). A repair refuses to run beside the daemon that holds the sync's lease.

mod support;

use std::path::Path;

use support::scenario::*;
use support::*;

const SCHEMA: &str = "
CREATE TABLE parent (id int PRIMARY KEY, v text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE, note text);
CREATE TABLE bag (a int, b text);";

const TABLES: [(&str, &str); 3] = [("parent", "id"), ("child", "id"), ("bag", "md5_row_::text")];

fn md5s(c: &Cluster, db: &str) -> Vec<String> {
    TABLES.iter().map(|(t, k)| table_md5(c, db, t, k)).collect()
}

fn verify_code(cfg: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["verify", "s"];
    all.extend_from_slice(args);
    let out = drover(cfg, &all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn repairs_planted_differences(replica_role: &str) {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, SCHEMA);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["parent", "child", "bag"], "", &["src"], &["dst"]).replace(
        "dbname = \"dst\"\n",
        &format!("dbname = \"dst\"\nreplica_role = \"{replica_role}\"\n"),
    );
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    c.psql(
        "src",
        "INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 50) g;
         INSERT INTO child SELECT g, g % 50 + 1, 'c' || g FROM generate_series(1, 200) g;
         INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (2, NULL), (NULL, NULL);",
    );
    drover_wait(&cfg, "s", 60);
    assert_eq!(md5s(&c, "src"), md5s(&c, "dst"));

    // With the daemon running, a repair is refused (it would race the rounds).
    c.psql("dst", "UPDATE parent SET v = 'planted' WHERE id = 7");
    let (code, text) = verify_code(&cfg, &["--repair"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("holds the sync's lease"), "{text}");
    daemon.stop();

    c.psql(
        "dst",
        "DELETE FROM parent WHERE id = 9;                  -- missing, cascades to 4 children
         INSERT INTO parent VALUES (500, 'extra');
         INSERT INTO child VALUES (900, 500, 'extra child');
         UPDATE child SET note = NULL WHERE id = 3;
         DELETE FROM bag WHERE b = 'x' AND ctid = (SELECT min(ctid) FROM bag WHERE b = 'x');
         INSERT INTO bag VALUES (3, 'only on dst');",
    );
    let (code, text) = verify_code(&cfg, &[]);
    assert_eq!(code, 1, "{text}");
    let planted = md5s(&c, "dst");
    assert_ne!(planted, md5s(&c, "src"));

    let (code, text) = verify_code(&cfg, &["--repair", "--dry-run", "--json"]);
    assert_eq!(code, 1, "{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["after"], serde_json::Value::Null);
    assert_eq!(doc["repairs"][0]["database"], "dst");
    assert_eq!(
        doc["repairs"][0]["changes"].as_array().map(Vec::len),
        Some(11),
        "{doc:#}"
    );
    let (code, text) = verify_code(&cfg, &["--repair", "--dry-run"]);
    eprintln!("{text}");
    assert_eq!(code, 1, "{text}");
    for want in [
        "would repair dst: update public.parent id=7",
        "would repair dst: insert public.parent id=9",
        "would repair dst: delete public.parent id=500",
        "would repair dst: delete public.child id=900",
        "would repair dst: update public.child id=3",
        "would repair dst: insert public.bag row_md5=",
        "would repair dst: delete public.bag row_md5=",
        "-- database dst: one transaction\nBEGIN;\nSELECT set_config(",
    ] {
        assert!(text.contains(want), "dry run lacks {want:?}:\n{text}");
    }
    assert_eq!(md5s(&c, "dst"), planted, "--dry-run changed the target");

    let (code, text) = verify_code(&cfg, &["--repair"]);
    eprintln!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("repair dst: insert public.child id=8"),
        "{text}"
    );
    assert!(text.contains("sync s: identical"), "{text}");
    let (code, text) = verify_code(&cfg, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(md5s(&c, "dst"), md5s(&c, "src"));
    let (code, text) = verify_code(&cfg, &["--repair", "--json"]);
    assert_eq!(code, 0, "{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc["identical"], true, "{doc:#}");
    assert_eq!(doc["repairs"], serde_json::json!([]), "{doc:#}");

    // The repair was not captured as a change, and replication goes on.
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "UPDATE parent SET v = 'later' WHERE id IN (7, 9); DELETE FROM child WHERE id = 900 - 800;
         INSERT INTO bag VALUES (4, 'later');",
    );
    drover_wait(&cfg, "s", 60);
    assert_eq!(md5s(&c, "dst"), md5s(&c, "src"));
    daemon.stop();
}

#[test]
fn repair_in_replica_mode() {
    repairs_planted_differences("auto");
}

#[test]
fn repair_with_foreign_keys_live() {
    repairs_planted_differences("off");
}
