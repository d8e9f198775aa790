//! `drover verify`: identical databases, planted differences in a table of 1M rows (reported
//! exactly, with kind and database), keys with quotes, backslashes and tabs, keys that two
//! databases sort differently, more than 100 differences, `--table`, and tables that cannot be
//! compared. One cluster, two databases `a` (the source, the reference) and `b` (the target).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{json, Value};
use support::scenario::*;
use support::*;

/// A sync `s` from database `a` to database `b` of cluster `c`, over `tables` (TOML strings).
fn config(c: &Cluster, dir: &Path, tables: &[&str]) -> PathBuf {
    let list: Vec<String> = tables.iter().map(|t| format!("'{t}'")).collect();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [{}]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"a\"]\ntargets = [\"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
        list.join(", ")
    );
    write_config(dir, &toml)
}

/// Runs `drover verify s --json ARGS`; returns the exit code, the parsed report and the seconds.
fn verify(cfg: &Path, args: &[&str]) -> (i32, Value, f64) {
    verify_sync(cfg, "s", args)
}

fn verify_sync(cfg: &Path, sync: &str, args: &[&str]) -> (i32, Value, f64) {
    let mut all = vec!["verify", sync, "--json"];
    all.extend_from_slice(args);
    let t = Instant::now();
    let out = drover(cfg, &all);
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}):\n{stdout}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report, secs)
}

/// The report of one table.
fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// The differences of a table as (key, kind, database), sorted.
fn differences(report: &Value, name: &str) -> Vec<Value> {
    let mut ds: Vec<Value> = table(report, name)["differences"]
        .as_array()
        .expect("differences is an array")
        .clone();
    ds.sort_by_key(|d| d.to_string());
    ds
}

fn diff(key: Value, kind: &str) -> Value {
    json!({"key": key, "kind": kind, "database": "b"})
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|d| d.to_string());
    v
}

#[test]
fn finds_exactly_the_planted_differences_in_a_million_rows() {
    let c = Cluster::start();
    c.create_db("a");
    c.psql(
        "a",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text, n int, ts timestamptz, x float8);
         INSERT INTO big SELECT i * 2, md5(i::text), i % 1000,
             timestamptz '2020-01-01' + i * interval '1 second', i / 7.0
           FROM generate_series(1, 1000000) i;
         CREATE TABLE many (id int PRIMARY KEY, v text);
         INSERT INTO many SELECT i, 'row ' || i FROM generate_series(1, 30000) i;
         VACUUM ANALYZE;",
    );
    // b starts as a copy of a.
    c.psql("postgres", "CREATE DATABASE b TEMPLATE a");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&c, dir.path(), &["big", "public.many"]);

    let (code, report, secs) = verify(&cfg, &["--table", "big"]);
    eprintln!("verify, 1M rows, identical: {secs:.2} s");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["sync"], "s");
    assert_eq!(report["identical"], true);
    let big = table(&report, "public.big");
    assert_eq!(big["identical"], true);
    assert_eq!(big["differences"], json!([]));
    assert_eq!(big["rows"], json!({"a": 1_000_000, "b": 1_000_000}));

    c.psql(
        "b",
        "UPDATE big SET v = v || '!' WHERE id = 246810;      -- changed
         UPDATE big SET n = NULL WHERE id = 2;               -- value -> NULL, first row
         UPDATE big SET v = '' WHERE id = 1999998;           -- text -> empty string
         DELETE FROM big WHERE id = 1333334;                 -- missing on b
         INSERT INTO big VALUES (777777, 'planted', 1, now(), 0.5);   -- extra, mid-table
         INSERT INTO big VALUES (2000001, 'planted', 1, now(), 0.5);  -- extra, past the end
         UPDATE big SET x = x + 1e-9 WHERE id = 1000000;     -- changed float",
    );
    let (code, report, secs) = verify(&cfg, &["--table", "public.big"]);
    eprintln!("verify, 1M rows, 7 differences: {secs:.2} s");
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["identical"], false);
    let big = table(&report, "public.big");
    assert_eq!(big["identical"], false);
    assert_eq!(big["difference_count"], 7);
    assert_eq!(big["truncated"], false);
    assert_eq!(big["rows"], json!({"a": 1_000_000, "b": 1_000_001}));
    assert_eq!(
        differences(&report, "public.big"),
        sorted(vec![
            diff(json!({"id": 246810}), "changed"),
            diff(json!({"id": 2}), "changed"),
            diff(json!({"id": 1999998}), "changed"),
            diff(json!({"id": 1333334}), "missing"),
            diff(json!({"id": 777777}), "extra"),
            diff(json!({"id": 2000001}), "extra"),
            diff(json!({"id": 1000000}), "changed"),
        ])
    );
    assert_eq!(report["tables"].as_array().map(Vec::len), Some(1));

    // Text output lists the same keys in key order.
    let out = drover(&cfg, &["verify", "s", "--table", "big"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).collect();
    assert_eq!(
        listed,
        [
            "    changed on b: id=2",
            "    changed on b: id=246810",
            "    extra on b: id=777777",
            "    changed on b: id=1000000",
            "    missing on b: id=1333334",
            "    changed on b: id=1999998",
            "    extra on b: id=2000001",
        ],
        "{text}"
    );
    assert!(text.contains("sync s: DIFFERENT (1 of 1 tables)"), "{text}");

    // more than 100 differences: 150 missing at the start, 50,000 extra past the reference's
    // end (so b alone holds far more rows than a range, and cuts it itself).
    c.psql(
        "b",
        "DELETE FROM many WHERE id <= 150;
         INSERT INTO many SELECT i, 'extra ' || i FROM generate_series(100001, 150000) i;",
    );
    let (code, report, _) = verify(&cfg, &["--table", "many"]);
    assert_eq!(code, 1);
    let many = table(&report, "public.many");
    assert_eq!(many["difference_count"], 150 + 50_000);
    assert_eq!(many["truncated"], true);
    let expected: Vec<Value> = (1..=100)
        .map(|id| diff(json!({"id": id}), "missing"))
        .collect();
    assert_eq!(many["differences"], Value::Array(expected));
    let out = drover(&cfg, &["verify", "s", "--table", "many"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("... and 50050 more (the first 100 are listed)"),
        "{text}"
    );

    // Without --table, both tables.
    let (code, report, _) = verify(&cfg, &[]);
    assert_eq!(code, 1);
    let names: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public.big", "public.many"]);
}

#[test]
fn multi_column_keys_with_awkward_text() {
    let c = Cluster::start();
    let awkward = [
        "O'Brien",
        "back\\slash",
        "tab\there",
        "quote\"d",
        "new\nline",
        "comma, (paren)",
        "",
        "NULL",
        "ü∑",
    ];
    let values: Vec<String> = awkward
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "('eu''s \"{i}\"', '{}', {i}, 'p{i}')",
                s.replace('\'', "''")
            )
        })
        .collect();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(
            db,
            &format!(
                "CREATE TABLE \"Odd \"\"Keys\"\"\" (region text, name text, n int, payload text,
                     PRIMARY KEY (region, name, n));
                 INSERT INTO \"Odd \"\"Keys\"\"\" VALUES {};
                 INSERT INTO \"Odd \"\"Keys\"\"\"
                   SELECT 'bulk', md5(i::text) || E'\\t\\\\', i, 'p' FROM generate_series(1, 25000) i;",
                values.join(", ")
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let name = r#"public."Odd ""Keys""""#;
    let cfg = config(&c, dir.path(), &[r#""Odd ""Keys""""#]);
    let (code, report, _) = verify(&cfg, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(table(&report, name)["identical"], true);

    c.psql(
        "b",
        "UPDATE \"Odd \"\"Keys\"\"\" SET payload = NULL WHERE name = 'tab\there';
         DELETE FROM \"Odd \"\"Keys\"\"\" WHERE name = 'back\\slash';
         INSERT INTO \"Odd \"\"Keys\"\"\" VALUES ('eu''s', E'x\\ty\"z\\\\', -3, 'new');
         UPDATE \"Odd \"\"Keys\"\"\" SET payload = 'q' WHERE region = 'bulk' AND n = 12345;",
    );
    let (code, report, _) = verify(&cfg, &["--table", r#""Odd ""Keys""""#]);
    assert_eq!(code, 1, "{report:#}");
    let bulk = c.psql("a", "SELECT md5('12345') || E'\\t\\\\'");
    assert_eq!(
        differences(&report, name),
        sorted(vec![
            diff(
                json!({"region": "eu's \"2\"", "name": "tab\there", "n": 2}),
                "changed"
            ),
            diff(
                json!({"region": "eu's \"1\"", "name": "back\\slash", "n": 1}),
                "missing"
            ),
            diff(
                json!({"region": "eu's", "name": "x\ty\"z\\", "n": -3}),
                "extra"
            ),
            diff(
                json!({"region": "bulk", "name": bulk, "n": 12345}),
                "changed"
            ),
        ])
    );
}

#[test]
fn keys_sorted_differently_by_two_databases() {
    let c = Cluster::start();
    let icu = c.psql(
        "postgres",
        "SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'",
    );
    assert_eq!(icu, "1", "this test needs a PostgreSQL built with ICU");
    // a sorts the key bytewise ("C"), b with ICU: 'B' < 'a' on a, 'a' < 'B' on b.
    for (db, collate) in [("a", "\"C\""), ("b", "\"und-x-icu\"")] {
        c.create_db(db);
        c.psql(
            db,
            &format!(
                "CREATE TABLE k (id text COLLATE {collate} PRIMARY KEY, v int);
                 INSERT INTO k SELECT CASE WHEN i % 3 = 0 THEN upper(md5(i::text))
                     WHEN i % 3 = 1 THEN md5(i::text) ELSE '_' || md5(i::text) END, i
                   FROM generate_series(1, 50000) i;"
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&c, dir.path(), &["k"]);
    let (code, report, _) = verify(&cfg, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        table(&report, "public.k")["rows"],
        json!({"a": 50000, "b": 50000})
    );

    let key = |i: u32| c.psql("a", &format!("SELECT id FROM k WHERE v = {i}"));
    let (changed, missing) = (key(30000), key(40001));
    c.psql(
        "b",
        &format!(
            "UPDATE k SET v = -1 WHERE id = '{changed}';
             DELETE FROM k WHERE id = '{missing}';
             INSERT INTO k VALUES ('Zz extra', 0), ('aa extra', 0);"
        ),
    );
    let (code, report, _) = verify(&cfg, &[]);
    assert_eq!(code, 1, "{report:#}");
    // Each exactly once, although the ranges' ends are out of order on b.
    assert_eq!(
        differences(&report, "public.k"),
        sorted(vec![
            diff(json!({"id": changed}), "changed"),
            diff(json!({"id": missing}), "missing"),
            diff(json!({"id": "Zz extra"}), "extra"),
            diff(json!({"id": "aa extra"}), "extra"),
        ])
    );
    assert_eq!(
        table(&report, "public.k")["rows"],
        json!({"a": 50000, "b": 50001})
    );
}

#[test]
fn table_option_and_tables_that_cannot_be_compared() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t1 (id int PRIMARY KEY, v text); INSERT INTO t1 VALUES (1, 'x');
             CREATE TABLE \"T 2\" (id int PRIMARY KEY); INSERT INTO \"T 2\" VALUES (1);",
        );
    }
    c.psql("a", "CREATE TABLE gone (id int PRIMARY KEY)");
    // A NaN computed on a has other bits than the NaN that the text 'NaN' gives on b: equal.
    c.psql(
        "a",
        "CREATE TABLE f (id int PRIMARY KEY, x float8, r real);
         INSERT INTO f VALUES (1, 'Infinity'::float8 - 'Infinity'::float8,
             'Infinity'::real - 'Infinity'::real), (2, 0.1, 0.1), (3, NULL, '-0');",
    );
    c.psql(
        "b",
        "CREATE TABLE f (id int PRIMARY KEY, x float8, r real);
         INSERT INTO f VALUES (1, 'NaN', 'NaN'), (2, '0.1', '0.1'), (3, NULL, 0.0);",
    );
    c.psql("b", "INSERT INTO \"T 2\" VALUES (2)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&c, dir.path(), &["t1", "\"T 2\"", "gone", "f"]);

    // --table picks one table, in any spelling regclass accepts.
    let (code, report, _) = verify(&cfg, &["--table", "PUBLIC.T1"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["tables"].as_array().map(Vec::len), Some(1));
    assert_eq!(table(&report, "public.t1")["identical"], true);
    let (code, report, _) = verify(&cfg, &["--table", "\"T 2\""]);
    assert_eq!(code, 1);
    assert_eq!(
        differences(&report, "public.\"T 2\""),
        vec![diff(json!({"id": 2}), "extra")]
    );

    // NaNs are equal, -0 and 0 are not (their text differs too).
    let (code, report, _) = verify(&cfg, &["--table", "f"]);
    assert_eq!(code, 1);
    assert_eq!(
        differences(&report, "public.f"),
        vec![diff(json!({"id": 3}), "changed")]
    );

    // A table missing on b cannot be compared: a problem, exit 1.
    let (code, report, _) = verify(&cfg, &["--table", "gone"]);
    assert_eq!(code, 1);
    let gone = table(&report, "public.gone");
    assert_eq!(gone["identical"], false);
    let problem = gone["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("does not exist on database \"b\""),
        "{problem}"
    );

    // Not in the relgroup, or not a table name: exit 2, naming it.
    for (arg, says) in [("nosuch", "public.nosuch"), ("a.b.c", "a.b.c")] {
        let out = drover(&cfg, &["verify", "s", "--table", arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn live_writes_show_in_flight_changes_that_wait_clears() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let _daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);

    // Verify runs over and over while pgbench writes: every run completes, and what it reports
    // can only be updates in flight (pgbench only updates these tables).
    let done = AtomicBool::new(false);
    let (runs, differing) = std::thread::scope(|scope| {
        scope.spawn(|| {
            src.pgbench("repdb", &["-T", "8", "-c", "2", "-n"]);
            done.store(true, Ordering::SeqCst);
        });
        let (mut runs, mut differing) = (0, 0);
        while !done.load(Ordering::SeqCst) || runs == 0 {
            let (code, report, _) = verify_sync(&setup.config, "legacy_to_new", &[]);
            assert!(code == 0 || code == 1, "{report:#}");
            for t in report["tables"].as_array().unwrap() {
                assert!(t.get("problem").is_none(), "{t:#}");
                for d in t["differences"].as_array().unwrap() {
                    assert_eq!(d["kind"], "changed", "{d}");
                    assert_eq!(d["database"], "new", "{d}");
                }
            }
            runs += 1;
            differing += code;
        }
        (runs, differing)
    });
    eprintln!("verify under pgbench: {runs} runs, {differing} saw changes in flight");

    drover_wait(&setup.config, "legacy_to_new", 120);
    let (code, report, secs) = verify_sync(&setup.config, "legacy_to_new", &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["reference"], "legacy");
    eprintln!("verify of pgbench scale 1 after wait: {secs:.2} s");
    assert_pgbench_same(&src, &dst);

    // A change made on the target behind drover's back: wait has nothing to wait for, verify
    // still sees it.
    dst.psql(
        "repdb",
        "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 7",
    );
    drover_wait(&setup.config, "legacy_to_new", 120);
    let (code, report, _) = verify_sync(&setup.config, "legacy_to_new", &[]);
    assert_eq!(code, 1, "{report:#}");
    let tellers = table(&report, "public.pgbench_tellers");
    assert_eq!(
        tellers["differences"],
        json!([{"key": {"tid": 7}, "kind": "changed", "database": "new"}])
    );
}
