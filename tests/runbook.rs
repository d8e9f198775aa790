//! docs/migration.md, run end to end: every shell block of the runbook is executed as written
//! (after the settings block), every file block is written, in the runbook's order, on a
//! legacy PostgreSQL 10 and a new PostgreSQL 15 where drover is a non-superuser owning the
//! tables. pgbench plays the application: it writes on legacy during the initial copy and until
//! the writes are stopped, and on new after the switch. Between the blocks the test checks what
//! the runbook promises: check reports the helper function and the keyless pgbench_history as a
//! whole-row table, verify exits 0 after the wait, every table's md5 (pgbench_history's as a
//! multiset) and the application's sequence agree after the cutover and after the rollback, and
//! uninstall leaves no drover schema and no trigger.
//!
//! Only what cannot be run here is replaced, and the same way every time: the example hosts
//! become the test servers (text substitution in the shell settings and the password file,
//! `DROVER__...` overrides for the config files), `/etc/drover/` and the unit directory become a
//! temp dir, and `systemctl` is emulated from the unit file (`ExecStart`, `Environment`,
//! `LoadCredential`).

#[path = "runbook/doc.rs"]
mod doc;
mod support;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doc::{parse, text, Runbook, APP_PASSWORD, DOC, PG15_BIN};
use support::scenario::*;
use support::*;

/// Tables of the relgroup and the order their rows are hashed in: pgbench_history has no key,
/// so it is compared as a multiset (rows sorted by their text).
const TABLES: [(&str, &str); 4] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_history", "md5_row_::text"),
];

/// The application's sequence (docs/migration.md: "the sequence `public.receipt_no`").
const APP_SEQUENCE: &str = "public.receipt_no";

/// The application's transaction: pgbench's built-in TPC-B-like one, plus a receipt number.
const APP_SCRIPT: &str = "\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
SELECT nextval('public.receipt_no');
END;
";

/// Scale of the application's pgbench tables.
const SCALE: &str = "5";

/// pgbench as `user` in the background (the application); killed on drop.
struct Writer {
    child: Child,
    log: PathBuf,
}

impl Writer {
    fn start(c: &Cluster, user: &str, password: Option<&str>, dir: &Path) -> Writer {
        let log = dir.join(format!("pgbench-{}.log", c.port));
        let mut cmd = Command::new(Path::new(PG15_BIN).join("pgbench"));
        cmd.args(["-h", "127.0.0.1", "-p", &c.port.to_string(), "-U", user])
            .args(app_args(dir))
            .args(["-c", "2", "-T", "900", "-R", "200", "repdb"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        Writer {
            child: cmd.spawn().expect("start pgbench"),
            log,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll pgbench").is_none()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pgbench options that run the application's transaction (written to `dir` by
/// `write_app_script`).
fn app_args(dir: &Path) -> Vec<String> {
    let script = dir.join("app.pgbench").display().to_string();
    ["-n", "-s", SCALE, "-f", &script]
        .map(str::to_string)
        .to_vec()
}

fn write_app_script(dir: &Path) {
    fs::write(dir.join("app.pgbench"), APP_SCRIPT).expect("write the application's script");
}

/// Runs pgbench with `args` as `user` to completion; returns whether it succeeded and its
/// output.
fn pgbench(c: &Cluster, user: &str, password: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(Path::new(PG15_BIN).join("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p", &c.port.to_string(), "-U", user])
        .args(args)
        .arg("repdb");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(900));
    (out.status.success(), text(&out))
}

/// Connects as `user` (password from `password`) and returns the error, if any.
fn login(c: &Cluster, user: &str, password: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(Path::new(PG15_BIN).join("psql"));
    cmd.args(["-XAt", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", user, "-d", "repdb", "-c", "SELECT current_user"])
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(text(&out))
    }
}

/// Every replicated table has the same rows on both servers; returns the history row count.
fn assert_tables_same(legacy: &Cluster, new: &Cluster, when: &str) -> String {
    for (table, key) in TABLES {
        let a = table_md5(legacy, "repdb", table, key);
        let b = table_md5(new, "repdb", table, key);
        assert_eq!(a, b, "{when}: {table} differs between legacy and new");
    }
    legacy.psql("repdb", "SELECT count(*) FROM pgbench_history")
}

/// The application's sequence as `last_value|is_called` (the runbook's check prints this form).
fn sequence(c: &Cluster) -> String {
    c.psql(
        "repdb",
        &format!("SELECT last_value, is_called FROM {APP_SEQUENCE}"),
    )
}

/// The sequence is the same on both servers and has moved past `floor`; returns its value.
fn assert_sequence_same(legacy: &Cluster, new: &Cluster, floor: i64, when: &str) -> i64 {
    let (a, b) = (sequence(legacy), sequence(new));
    assert_eq!(
        a, b,
        "{when}: {APP_SEQUENCE} differs between legacy and new"
    );
    let value: i64 = a.split('|').next().unwrap().parse().unwrap();
    assert!(
        value > floor && a.ends_with("|t"),
        "{when}: {APP_SEQUENCE} did not move past {floor}: {a}"
    );
    value
}

/// Non-internal triggers and drover schemas left on a server.
fn drover_leftovers(c: &Cluster) -> String {
    c.psql(
        "repdb",
        "SELECT (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal) || ' triggers, ' || \
         (SELECT count(*) FROM pg_namespace WHERE nspname = 'drover') || ' drover schemas'",
    )
}

#[test]
fn runbook_legacy_pg10_to_managed_pg15_and_back() {
    let started = Instant::now();
    let legacy = support::versions::cluster(10);
    let new = Cluster::start_with(ClusterOptions {
        hba_lines: vec!["host all app,drover 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    assert_eq!(new.version_num() / 10_000, 15);

    // The application as it runs today: its own role and database on legacy.
    legacy.psql("postgres", "CREATE ROLE app LOGIN");
    legacy.psql("postgres", "CREATE DATABASE repdb OWNER app");
    let (ok, out) = pgbench(&legacy, "app", None, &["-i", "-s", SCALE, "-q"]);
    assert!(ok, "pgbench -i: {out}");
    legacy.psql(
        "repdb",
        &format!("SET ROLE app; CREATE SEQUENCE {APP_SEQUENCE}"),
    );
    // pgbench creates no sequence: the application's is the only one, and history has no key.
    assert_eq!(
        legacy.psql(
            "repdb",
            "SELECT string_agg(c.relname, ',') FROM pg_class c \
             WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace"
        ),
        "receipt_no"
    );
    assert_eq!(
        legacy.psql(
            "repdb",
            "SELECT count(*) FROM pg_index WHERE indrelid = 'public.pgbench_history'::regclass"
        ),
        "0"
    );

    let mut rb = Runbook::new(&legacy, &new);
    write_app_script(rb.work.path());
    // 1-3: prerequisites, schema (pgbench_history keeps having no key).
    rb.step_ok("new-roles");
    rb.step_ok("helper-function");
    rb.step_ok("pgpass");
    rb.step_ok("schema");
    assert_eq!(
        new.psql(
            "repdb",
            "SELECT string_agg(DISTINCT tableowner, ',') || ' ' || (SELECT rolsuper FROM pg_roles WHERE rolname = 'drover') \
             FROM pg_tables WHERE tablename LIKE 'pgbench%'"
        ),
        "drover false",
        "the tables on new belong to the non-superuser drover"
    );
    assert_eq!(
        new.psql("repdb", "SELECT count(*) FROM pgbench_accounts"),
        "0"
    );

    // 4: config, check, install.
    let migrate = rb.file("/etc/drover/migrate.toml");
    let migrate = migrate.to_str().unwrap().to_string();
    let check = rb.step_ok("check");
    assert!(check.contains("no problems found"), "{check}");
    assert!(
        check.contains(
            "apply method: session_replication_role = replica through a SECURITY DEFINER function \
             (SELECT \"public\".\"rds_session_replication_role\"('replica'))"
        ),
        "{check}"
    );
    for line in [
        "public.pgbench_accounts: ok, primary key (aid)",
        "public.pgbench_history: ok, no key: whole-row images",
        "sequence public.receipt_no: follows legacy",
    ] {
        assert!(check.contains(line), "check lacks {line:?}:\n{check}");
    }
    rb.step_ok("install");
    // The application keeps working: its role (neither a superuser nor drover's) now fires the
    // capture triggers.
    let txn = app_args(rb.work.path());
    let txn: Vec<&str> = txn.iter().map(String::as_str).collect();
    let (ok, out) = pgbench(&legacy, "app", None, &[&txn[..], &["-t", "5"]].concat());
    assert!(
        ok,
        "the application cannot write on legacy after drover install:\n{out}"
    );

    // 5: the application writes while the service starts and copies.
    let mut app = Writer::start(&legacy, "app", None, rb.work.path());
    eventually(
        Duration::from_secs(60),
        "pgbench to write on legacy",
        || legacy.psql("repdb", "SELECT count(*) FROM pgbench_history") != "0",
    );
    rb.file("/etc/systemd/system/drover@.service");
    let copy_started = Instant::now();
    rb.step_ok("start-migrate");
    eventually(Duration::from_secs(300), "the initial copy", || {
        rb.status(&migrate, "legacy_to_new").is_some_and(|s| {
            s["copy"]
                .as_array()
                .is_some_and(|c| c.len() == TABLES.len() && c.iter().all(|t| t["state"] == "done"))
        })
    });
    eprintln!(
        "initial copy of pgbench scale 5 under pgbench -R 200: done {:.1} s after the start",
        copy_started.elapsed().as_secs_f64()
    );
    assert!(
        app.running(),
        "pgbench stopped during the copy:\n{}",
        app.log()
    );
    eventually(
        Duration::from_secs(120),
        "a good round after the copy",
        || {
            rb.status(&migrate, "legacy_to_new")
                .is_some_and(|s| s["state"] == "good")
        },
    );

    // 6: watch, re-copy one table, verify under live writes.
    let status = rb.step_ok("status");
    assert!(
        status.contains("Current state            : good"),
        "{status}"
    );
    assert!(status.contains("\"copy\""), "{status}");
    let recopy = rb.step_ok("recopy");
    assert!(
        recopy.contains("public.pgbench_tellers -> new: done"),
        "{recopy}"
    );
    let live = rb.step("verify-live");
    assert!(
        matches!(live.code, Some(0 | 1)),
        "verify under live writes must compare (exit 0 or 1):\n{}",
        live.out
    );
    eprintln!(
        "verify under live writes: {}",
        if live.code == Some(0) {
            "identical"
        } else {
            "differences in flight (expected while pgbench writes)"
        }
    );
    assert!(
        app.running(),
        "pgbench stopped before the cutover:\n{}",
        app.log()
    );

    // 7: cutover.
    rb.file("/etc/drover/rollback.toml");
    rb.step_ok("stop-writes");
    eventually(Duration::from_secs(30), "pgbench to be cut off", || {
        !app.running()
    });
    assert!(
        !app.child.wait().unwrap().success(),
        "pgbench was not cut off:\n{}",
        app.log()
    );
    let refused = login(&legacy, "app", None);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("not permitted to log in")),
        "{refused:?}"
    );
    rb.step_ok("wait");
    let verify = rb.step_ok("verify");
    assert!(verify.contains("identical"), "{verify}");
    let history = assert_tables_same(&legacy, &new, "after the cutover wait");
    assert!(history.parse::<u64>().unwrap() > 0);
    eprintln!("{history} pgbench transactions on legacy reached new");
    let receipts = assert_sequence_same(&legacy, &new, 1, "after the cutover wait");
    let seqs = rb.step_ok("sequences-check");
    assert!(
        seqs.contains(&format!(
            "public.receipt_no: legacy {receipts}|t, new {receipts}|t"
        )),
        "{seqs}"
    );
    rb.step_ok("stop-migrate");
    let installed = rb.step_ok("rollback-install");
    assert!(installed.contains("no problems found"), "{installed}");
    rb.step_ok("start-rollback");

    // The application now writes on new, with its own password and grants; its receipt numbers
    // continue from legacy's.
    let (ok, out) = pgbench(
        &new,
        "app",
        Some(APP_PASSWORD),
        &[&txn[..], &["-c", "2", "-t", "300"]].concat(),
    );
    assert!(ok, "pgbench on new as app: {out}");
    assert_eq!(
        sequence(&new),
        format!("{}|t", receipts + 600),
        "{APP_SEQUENCE} on new continues from legacy's value"
    );
    let status = rb.step_ok("rollback-status");
    assert!(
        status.contains("Sync name                : new_to_legacy"),
        "{status}"
    );

    // 8: the rollback drill.
    let before = new.psql("repdb", "SELECT count(*) FROM pgbench_history");
    let mut app_new = Writer::start(&new, "app", Some(APP_PASSWORD), rb.work.path());
    eventually(Duration::from_secs(60), "pgbench to write on new", || {
        new.psql("repdb", "SELECT count(*) FROM pgbench_history") != before
    });
    rb.step_ok("rollback-stop-writes");
    eventually(
        Duration::from_secs(30),
        "pgbench on new to be cut off",
        || !app_new.running(),
    );
    assert!(
        !app_new.child.wait().unwrap().success(),
        "pgbench on new was not cut off:\n{}",
        app_new.log()
    );
    let back = rb.step_ok("rollback-wait");
    assert!(back.contains("identical"), "{back}");
    let after = assert_tables_same(&legacy, &new, "after the rollback wait");
    assert!(
        after.parse::<u64>().unwrap() > before.parse::<u64>().unwrap(),
        "the writes on new did not reach legacy: {history} at the cutover, {before} after \
         pgbench -t 300 on new, {after} on both after the rollback"
    );
    let back_receipts =
        assert_sequence_same(&legacy, &new, receipts + 600, "after the rollback wait");
    let seqs = rb.step_ok("rollback-sequences-check");
    assert!(
        seqs.contains(&format!(
            "public.receipt_no: new {back_receipts}|t, legacy {back_receipts}|t"
        )),
        "{seqs}"
    );
    rb.step_ok("rollback-reopen");
    assert_eq!(login(&legacy, "app", None).as_deref(), Ok("app"));
    let (ok, out) = pgbench(&legacy, "app", None, &[&txn[..], &["-t", "50"]].concat());
    assert!(ok, "the application writes on legacy again: {out}");

    // 9: finish.
    rb.step_ok("stop-rollback");
    rb.step_ok("uninstall");
    for (name, c) in [("legacy", &legacy), ("new", &new)] {
        assert_eq!(
            drover_leftovers(c),
            "0 triggers, 0 drover schemas",
            "{name} after uninstall"
        );
    }
    rb.assert_all_used();
    eprintln!(
        "runbook end to end: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn every_runnable_block_has_a_marker() {
    let doc = parse(DOC);
    let names: BTreeSet<&str> = doc.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), doc.steps.len(), "a step name is used twice");
    for (name, body) in &doc.steps {
        assert!(!body.trim().is_empty(), "step {name} is empty");
    }
}
