//! A bad row holds back one table on one target, not the sync: a target-only unique index
//! refuses a row; that table (and every table linked to it by a foreign key) is held on that
//! target while the other tables and the other target keep replicating; status, the
//! `drover_table_held` metric and `drover.apply_errors` name it; after the row is fixed,
//! `drover retry` clears the hold and nothing is lost. The refusing target is written by a
//! role without superuser, with its foreign keys live.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use support::scenario::*;
use support::*;

const TABLES: [&str; 4] = ["public.a", "public.b", "public.p", "public.c"];

const SCHEMA: &str = "CREATE TABLE a (id int PRIMARY KEY, v text); \
    CREATE TABLE b (id int PRIMARY KEY, v text); \
    CREATE TABLE p (id int PRIMARY KEY, v text); \
    CREATE TABLE c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES p, v text);";

fn md5(c: &Cluster, db: &str, table: &str) -> String {
    table_md5(c, db, table, "id")
}

fn same(c: &Cluster, db: &str, table: &str) -> bool {
    md5(c, db, table) == md5(c, "src", table)
}

fn reaches(c: &Cluster, db: &str, table: &str, what: &str) {
    eventually(Duration::from_secs(60), what, || same(c, db, table));
}

/// GET `path` from the daemon's listener.
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// The value of `drover_table_held` for one table on one target, if exported.
fn held_metric(port: u16, table: &str, target: &str) -> Option<f64> {
    let text = http_get(port, "/metrics");
    let want = [
        "sync=\"s\"".to_string(),
        format!("table=\"{table}\""),
        format!("target=\"{target}\""),
    ];
    text.lines()
        .filter(|l| l.starts_with("drover_table_held{"))
        .find(|l| want.iter().all(|w| l.contains(w.as_str())))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The held tables status shows for `target`: (table, entry).
fn held(cfg: &Path, target: &str) -> Vec<(String, Value)> {
    let s = sync_status(cfg, "s");
    let states = s["target_states"].as_array().cloned().unwrap_or_default();
    let t = states.iter().find(|t| t["target"] == target).cloned();
    let list = t
        .and_then(|t| t["held"].as_array().cloned())
        .unwrap_or_default();
    list.into_iter()
        .map(|h| (h["table"].as_str().unwrap_or_default().to_string(), h))
        .collect()
}

fn held_names(cfg: &Path, target: &str) -> Vec<String> {
    let mut v: Vec<String> = held(cfg, target).into_iter().map(|(t, _)| t).collect();
    v.sort();
    v
}

/// t1: a managed-style target, written by a role without superuser whose foreign keys and
/// triggers stay live (`replica_role = "off"`); t2: a superuser target.
#[test]
fn a_bad_row_holds_one_table_and_retry_clears_it() {
    let c = Cluster::start();
    c.psql(
        "postgres",
        "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
    );
    c.psql("postgres", "CREATE DATABASE t1 OWNER drover");
    c.psql("t1", &format!("SET ROLE drover; {SCHEMA}"));
    for db in ["src", "t2"] {
        c.create_db(db);
        c.psql(db, SCHEMA);
    }
    let port = free_port();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\n{}\
         [databases.t1]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"t1\"\nuser = \"drover\"\n\
         replica_role = \"off\"\n{}[relgroups.g]\n\
         tables = [\"public.a\", \"public.b\", \"public.p\", \"public.c\"]\n[syncs.s]\n\
         relgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"t1\", \"t2\"]\n",
        c.database_toml("src", "src"),
        c.port,
        c.database_toml("t2", "t2"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    c.psql(
        "src",
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 50) g; \
         INSERT INTO b SELECT g, 'v' || g FROM generate_series(1, 50) g; \
         INSERT INTO p SELECT g, 'v' || g FROM generate_series(1, 50) g; \
         INSERT INTO c SELECT g, g, 'c' || g FROM generate_series(1, 50) g;",
    );
    for db in ["t1", "t2"] {
        for t in TABLES {
            reaches(&c, db, t, "the first rows");
        }
    }
    // Only t1 refuses a second row with the same v in a and in p.
    c.psql(
        "t1",
        "CREATE UNIQUE INDEX a_v ON a (v); CREATE UNIQUE INDEX p_v ON p (v);",
    );

    c.psql("src", "INSERT INTO a VALUES (1001, 'v1')");
    c.psql("src", "UPDATE b SET v = v || '+' WHERE id <= 10");
    reaches(
        &c,
        "t1",
        "public.b",
        "b to keep replicating to t1 while a is held",
    );
    eventually(Duration::from_secs(30), "a held on t1", || {
        held_names(&cfg, "t1") == ["public.a"]
    });
    let (_, entry) = held(&cfg, "t1").remove(0);
    assert_eq!(entry["sqlstate"], "23505", "{entry}");
    assert_eq!(held_metric(port, "public.a", "t1"), Some(1.0));
    assert_eq!(held_metric(port, "public.b", "t1"), Some(0.0));
    let row = c.psql(
        "t1",
        "SELECT sqlstate, held, count >= 1 FROM drover.apply_errors \
         WHERE sync = 's' AND table_name = 'public.a' AND target = 't1'",
    );
    assert_eq!(row, "23505|t|t");
    assert!(held_names(&cfg, "t2").is_empty());
    reaches(&c, "t2", "public.a", "t2 to receive the row t1 refuses");
    let (state, error) = state_and_error(&cfg, "s");
    assert_eq!(state, "good", "the sync goes on: {error}");
    assert!(error.contains("public.a held on t1"), "{error}");
    let health = http_get(port, "/health");
    assert!(health.contains("held tables in syncs: s"), "{health}");

    // A parent refused on t1: its child, linked by a foreign key, is held with it.
    c.psql(
        "src",
        "BEGIN; INSERT INTO p VALUES (1001, 'v2'); INSERT INTO c VALUES (1001, 1001, 'new'); \
         UPDATE c SET v = v || '+' WHERE id <= 5; COMMIT;",
    );
    eventually(Duration::from_secs(30), "p and c held on t1", || {
        held_names(&cfg, "t1") == ["public.a", "public.c", "public.p"]
    });
    let child = held(&cfg, "t1").into_iter().find(|(t, _)| t == "public.c");
    let child = child.expect("c held").1;
    assert_eq!(
        child["held_with"], "public.p",
        "held with its parent: {child}"
    );
    assert_eq!(
        c.psql("t1", "SELECT count(*) FROM c WHERE id = 1001"),
        "0",
        "the child waits with its parent"
    );
    // Changes made while held wait on the source.
    c.psql(
        "src",
        "UPDATE a SET v = v || '+' WHERE id <= 3; UPDATE b SET v = v || '!' WHERE id > 40",
    );
    reaches(&c, "t1", "public.b", "b to go on while a, p and c are held");
    for t in TABLES {
        reaches(&c, "t2", t, "t2 unaffected");
    }

    // The rows are fixed on t1 (the index goes); retry clears every hold.
    c.psql("t1", "DROP INDEX a_v; DROP INDEX p_v;");
    let out = drover_ok(&cfg, &["retry", "s", "--target", "t1"]);
    assert!(out.contains("retry"), "{out}");
    eventually(Duration::from_secs(30), "the holds to clear", || {
        held_names(&cfg, "t1").is_empty()
    });
    for t in TABLES {
        reaches(&c, "t1", t, "every table equal after the retry");
    }
    assert_eq!(held_metric(port, "public.a", "t1"), Some(0.0));
    assert_eq!(
        c.psql("t1", "SELECT count(*) FROM drover.apply_errors WHERE held"),
        "0"
    );
    drover_wait(&cfg, "s", 60);
    daemon.stop();
}

/// A target whose encoding has no `€` refuses a whole small round's batch with an error that
/// names no table (22P05): each group is tried alone once, and only the table with the `€` is
/// held while the other keeps replicating. Fixed on the source, the retry applies it.
#[test]
fn an_error_naming_no_table_is_found_group_by_group() {
    let c = Cluster::start();
    c.create_db("src");
    c.psql(
        "postgres",
        "CREATE DATABASE t3 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let schema = "CREATE TABLE a (id int PRIMARY KEY, v text); \
                  CREATE TABLE b (id int PRIMARY KEY, v text);";
    for db in ["src", "t3"] {
        c.psql(db, schema);
    }
    let toml = sync_toml(&c, &["public.a", "public.b"], "", &["src"], &["t3"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    c.psql(
        "src",
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 20) g; \
         INSERT INTO b SELECT g, 'v' || g FROM generate_series(1, 20) g;",
    );
    for t in ["public.a", "public.b"] {
        reaches(&c, "t3", t, "the first rows");
    }
    // One transaction: both tables in the same round.
    c.psql(
        "src",
        "BEGIN; UPDATE a SET v = '5 €' WHERE id = 5; UPDATE b SET v = v || '+'; COMMIT;",
    );
    reaches(&c, "t3", "public.b", "b to replicate while a is held");
    eventually(Duration::from_secs(30), "a held on t3", || {
        held_names(&cfg, "t3") == ["public.a"]
    });
    let (_, entry) = held(&cfg, "t3").remove(0);
    assert_eq!(entry["sqlstate"], "22P05", "{entry}");

    c.psql("src", "UPDATE a SET v = '5 EUR' WHERE id = 5");
    drover_ok(&cfg, &["retry", "s", "--table", "public.a"]);
    eventually(Duration::from_secs(30), "the hold to clear", || {
        held_names(&cfg, "t3").is_empty()
    });
    reaches(&c, "t3", "public.a", "a equal after the retry");
    drover_wait(&cfg, "s", 60);
    daemon.stop();
}
