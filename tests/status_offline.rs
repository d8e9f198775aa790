//! `drover status` without a daemon (issue 14): it reads the databases instead and says that
//! the daemon is not answering (exit 1): per target and table when it last applied and how
//! many captured rows are pending on the source, the stored pause (`drover.sync_pause`) and
//! held tables (`drover.apply_errors`, those still held; skipped where that table does not exist). With a daemon
//! `--json` says `"source": "daemon"`.

mod support;

use serde_json::Value;
use support::scenario::*;
use support::*;

/// Exit code and stdout; stderr says why the daemon did not answer.
fn offline(cfg: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = drover(cfg, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no drover daemon answers on"), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_reads_the_databases_when_the_daemon_is_down() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, mut daemon) =
        install_and_run(dir.path(), &sync_toml(&c, &["t"], "", &["src"], &["dst"]));
    c.psql(
        "src",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g",
    );
    drover_wait(&cfg, "s", 60);
    assert_eq!(status_json(&cfg)["source"], "daemon");
    daemon.stop();

    c.psql(
        "src",
        "INSERT INTO t SELECT g, 'b' FROM generate_series(11, 15) g",
    );
    c.psql("src", "UPDATE t SET v = 'c' WHERE id <= 2");
    let (code, out) = offline(&cfg, &["status", "--json"]);
    assert_eq!(code, 1, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["source"], "databases", "{doc:#}");
    assert!(
        doc["daemon"].as_str().unwrap().starts_with("not answering"),
        "{doc:#}"
    );
    let s = &doc["syncs"][0];
    assert_eq!(s["name"], "s");
    assert_eq!(s["pending_rows"], 7, "{doc:#}");
    assert_eq!(s["paused"], false);
    assert_eq!(s["held"], serde_json::json!([]), "nothing held: {doc:#}");
    let p = &s["progress"][0];
    assert_eq!(
        (&p["source"], &p["target"], &p["table"]),
        (&"src".into(), &"dst".into(), &"public.t".into())
    );
    assert!(p["applied_at"].is_string(), "{doc:#}");
    assert_eq!(p["pending_rows"], 7);
    assert_eq!(s["problems"], serde_json::json!([]), "{doc:#}");

    // A stored pause (the shared contract's table) and a held table, once those tables exist.
    c.psql(
        "src",
        "CREATE TABLE IF NOT EXISTS drover.sync_pause (sync text PRIMARY KEY, paused_by text NOT NULL, \
         paused_at timestamptz NOT NULL DEFAULT now(), reason text NOT NULL DEFAULT '');
         INSERT INTO drover.sync_pause (sync, paused_by, reason) VALUES ('s', 'alice via drover pause', 'maintenance')",
    );
    // install created drover.apply_errors on the target; a released hold (held = false) is
    // not shown.
    c.psql(
        "dst",
        "INSERT INTO drover.apply_errors (sync, table_name, target, sqlstate, error, held) \
         VALUES ('s', 'public.t', 'dst', '23505', 'duplicate key', true), \
                ('s', 'public.u', 'dst', '23505', 'released', false)",
    );
    let (code, out) = offline(&cfg, &["status", "s", "--json"]);
    assert_eq!(code, 1, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let s = &doc["syncs"][0];
    assert_eq!(s["paused"], true, "{doc:#}");
    assert_eq!(s["paused_by"], "alice via drover pause");
    assert_eq!(s["pause_reason"], "maintenance");
    assert!(s["paused_at"].is_string());
    assert_eq!(s["held"][0]["table_name"], "public.t", "{doc:#}");
    assert_eq!(s["held"][0]["database"], "dst", "{doc:#}");
    assert_eq!(s["held"].as_array().map(Vec::len), Some(1), "{doc:#}");

    let (code, out) = offline(&cfg, &["status"]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "daemon not answering (see above): showing what the databases record instead\n",
        "sync s: src -> dst (relgroup g), pending rows: 7",
        "  paused by alice via drover pause at ",
        "  src -> dst: public.t: last applied 20",
        ", pending rows 7 (oldest 20",
    ] {
        assert!(out.contains(want), "status lacks {want:?}:\n{out}");
    }
}
