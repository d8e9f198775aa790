//! Delta columns (`[relgroups.NAME.delta_columns]`) across two masters: concurrent
//! increments add up instead of overwriting each other; only keys whose other columns
//! changed on both masters are conflicts; inserts carry their value, deletes follow the
//! strategy; `check` and `install` refuse columns that cannot be delta columns.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::scenario::*;
use support::*;

const KEYS: i64 = 20;

/// Masters a and b (one cluster) with `t` (keys 1..=20, n = 100, f = 1.00, note 'orig') and a
/// sync `mm` whose relgroup has `delta` as its `[relgroups.g.delta_columns]` lines. With
/// `app`, drover connects as role `app`, the owner (no superuser: rows are updated in place).
/// `sync` lines are added to the sync.
fn setup_as(
    delta: &str,
    app: bool,
    sync: &str,
) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster::start();
    if app {
        c.psql("postgres", "CREATE ROLE app LOGIN");
    }
    for db in ["a", "b"] {
        if app {
            c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        } else {
            c.create_db(db);
        }
        c.psql(
            db,
            &format!(
                "SET ROLE {}; CREATE TABLE t (id int PRIMARY KEY, n bigint, note text, f numeric(12,2)); \
                 INSERT INTO t SELECT i, 100, 'orig', 1.00 FROM generate_series(1, {KEYS}) AS i;",
                if app { "app" } else { "postgres" }
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = |name: &str| {
        let user = if app { "app" } else { "postgres" };
        format!(
            "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"{user}\"\n",
            c.port
        )
    };
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}\
         [relgroups.g]\ntables = [\"t\"]\n[relgroups.g.delta_columns]\n{delta}\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n{sync}\n",
        free_port(),
        db("a"),
        db("b"),
    );
    let cfg = write_config(dir.path(), &toml);
    (c, dir, cfg)
}

fn setup(delta: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    setup_as(delta, false, "")
}

/// `drover install`, with `DROVER_CAPTURE_MODE` set to `mode`.
fn install(cfg: &std::path::Path, mode: &str) {
    let out = Command::new(drover_bin())
        .arg("--config")
        .arg(cfg)
        .arg("install")
        .env("DROVER_CAPTURE_MODE", mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rows(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT string_agg(id || '=' || coalesce(n::text, 'null') || '/' || f || '/' || note, ' ' ORDER BY id) FROM t",
    )
}

fn expected(rows: &BTreeMap<i64, (i64, i64, &str)>) -> String {
    rows.iter()
        .map(|(id, (n, cents, note))| format!("{id}={n}/{}.{:02}/{note}", cents / 100, cents % 100))
        .collect::<Vec<_>>()
        .join(" ")
}

fn increments_add_up(mode: &str, app: bool) {
    let (c, _dir, cfg) = setup_as("\"public.t\" = [\"n\", \"f\"]", app, "");
    install(&cfg, mode);
    // id -> (n, f in cents, note)
    let mut want: BTreeMap<i64, (i64, i64, &str)> =
        (1..=KEYS).map(|i| (i, (100, 100, "orig"))).collect();

    // While no daemon runs: key 1's note changes on both masters (a conflict), key 2 only its
    // counters (no conflict), key 3 is deleted on b while a adds to it (the delete wins: the
    // only change of another kind), key 100 is inserted on a.
    c.psql(
        "a",
        "UPDATE t SET n = n + 5, note = 'a' WHERE id = 1; UPDATE t SET n = n + 7, f = f + 0.25 WHERE id = 2; \
         UPDATE t SET n = n + 1 WHERE id = 3; INSERT INTO t VALUES (100, 42, 'new', 2.50);",
    );
    c.psql(
        "b",
        "UPDATE t SET n = n + 11, note = 'b' WHERE id = 1; UPDATE t SET n = n + 13, f = f + 1.50 WHERE id = 2; \
         DELETE FROM t WHERE id = 3;",
    );
    want.insert(1, (116, 100, "b"));
    want.insert(2, (120, 275, "orig"));
    want.remove(&3);
    want.insert(100, (42, 250, "new"));
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    for db in ["a", "b"] {
        assert_eq!(rows(&c, db), expected(&want), "{mode}: rows on {db}");
        assert_eq!(
            c.psql(
                db,
                "SELECT string_agg(key::text, ' ') FROM drover.conflicts"
            ),
            "{\"id\": 1}",
            "{mode}: the only conflict on {db} is key 1"
        );
    }

    // Concurrent increments on both masters while the daemon runs: bounded loops.
    let writer = |db: &str, step: i64, lo: i64, hi: i64| {
        for i in 0..40 {
            c.psql(
                db,
                &format!(
                    "UPDATE t SET n = n + {}, f = f + 0.25 WHERE id BETWEEN {lo} AND {hi}",
                    step * i
                ),
            );
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| writer("a", 1, 1, 12));
        s.spawn(|| writer("b", 3, 8, 20));
    });
    for (step, lo, hi) in [(1, 1, 12), (3, 8, 20)] {
        for id in lo..=hi {
            if let Some((n, f, _)) = want.get_mut(&id) {
                *n += (0..40).map(|i| step * i).sum::<i64>();
                *f += 40 * 25;
            }
        }
    }
    drover_wait(&cfg, "mm", 120);
    for db in ["a", "b"] {
        assert_eq!(rows(&c, db), expected(&want), "{mode}: rows on {db}");
        assert_eq!(
            c.psql(db, "SELECT count(*) FROM drover.conflicts"),
            "1",
            "{mode}: concurrent increments are no conflicts on {db}"
        );
    }
    assert_eq!(table_md5(&c, "a", "t", "id"), table_md5(&c, "b", "t", "id"));
    assert_eq!(
        sync_status(&cfg, "mm")["conflicts"],
        1,
        "{mode}: conflicts counted"
    );
    daemon.stop();
}

#[test]
fn concurrent_increments_add_up_statement_capture() {
    increments_add_up("statement", false);
}

#[test]
fn concurrent_increments_add_up_as_non_superuser() {
    // No session_replication_role: rows are updated in place (`round::in_place`).
    increments_add_up("statement", true);
}

#[test]
fn concurrent_increments_add_up_row_capture() {
    increments_add_up("row", false);
}

#[test]
fn check_and_install_refuse_unusable_delta_columns() {
    for (delta, says) in [
        (
            "\"public.t\" = [\"note\"]",
            "database \"a\": delta column \"note\" of table public.t has type text, not a number (smallint, integer, bigint, numeric, real or double precision): remove it from [relgroups.*.delta_columns]",
        ),
        (
            "t = [\"nope\"]",
            "database \"a\": table public.t has no column \"nope\"",
        ),
        (
            "t = [\"id\"]",
            "database \"a\": column \"id\" of table public.t is a key column and cannot be a delta column",
        ),
    ] {
        let (_c, _dir, cfg) = setup(delta);
        let out = drover(&cfg, &["check"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check accepted {delta}: {text}");
        assert!(text.contains(says), "check on {delta}: {text}");
        let out = drover(&cfg, &["install"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "install accepted {delta}");
        assert!(text.contains(says), "install on {delta}: {text}");
    }
    // A table outside the relgroup is a config error naming the key.
    let (_c, _dir, cfg) = setup("\"public.other\" = [\"n\"]");
    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("relgroups.g.delta_columns.\"public.other\"")
            && text.contains("table public.other is not in this relgroup's tables"),
        "{text}"
    );
}

#[test]
fn reinstall_adds_delta_columns_to_a_running_capture() {
    // Installed without delta columns, then with them: the delta table is upgraded in place
    // and installing twice changes nothing.
    let (c, _dir, cfg) = setup("");
    install(&cfg, "statement");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[relgroups.g.delta_columns]\n",
        "[relgroups.g.delta_columns]\nt = [\"n\"]\n",
    );
    std::fs::write(&cfg, text).unwrap();
    install(&cfg, "statement");
    install(&cfg, "statement");
    assert_eq!(
        c.psql("a", "SELECT delta_columns::text FROM drover.tables"),
        "{n}"
    );
    c.psql("a", "UPDATE t SET n = n + 4 WHERE id = 1");
    c.psql("b", "UPDATE t SET n = n + 6 WHERE id = 1");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    eventually(Duration::from_secs(30), "both masters at 110", || {
        ["a", "b"]
            .iter()
            .all(|db| c.psql(db, "SELECT n FROM t WHERE id = 1") == "110")
    });
    daemon.stop();
}

#[test]
fn a_late_local_change_that_loses_still_sends_its_increment() {
    // b changes key 1 (counter and note) in a transaction left open while a changes it too;
    // b's round apply waits for b's row, then b commits: b's change is newer than b's round
    // snapshot. Priority gives the row to a, but b's increment must still reach a.
    let (c, _dir, cfg) = setup_as(
        "t = [\"n\"]",
        false,
        "conflict_strategy = \"priority\"\npriority = [\"a\", \"b\"]",
    );
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    let mut b = Command::new("psql")
        .args(["-XAtq", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres", "-d", "b", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let stdin = b.stdin.as_mut().expect("psql stdin");
    writeln!(
        stdin,
        "BEGIN; UPDATE t SET n = n + 7, note = 'b late' WHERE id = 1;"
    )
    .unwrap();
    stdin.flush().unwrap();
    eventually(Duration::from_secs(10), "b's row lock", || {
        c.psql("b", "SELECT count(*) FROM pg_locks WHERE mode = 'RowExclusiveLock' AND relation = 't'::regclass AND granted") == "1"
    });
    c.psql("a", "UPDATE t SET n = n + 5, note = 'a' WHERE id = 1");
    eventually(
        Duration::from_secs(20),
        "the apply on b to wait for b's row",
        || {
            c.psql(
            "b",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drover:%' AND wait_event_type = 'Lock'",
        ) != "0"
        },
    );
    let stdin = b.stdin.as_mut().expect("psql stdin");
    writeln!(stdin, "COMMIT;").unwrap();
    drop(b.stdin.take());
    assert!(b.wait().unwrap().success(), "b's transaction");
    drover_wait(&cfg, "mm", 60);
    eventually(Duration::from_secs(20), "both masters to agree", || {
        rows(&c, "a") == rows(&c, "b")
    });
    for db in ["a", "b"] {
        assert_eq!(
            c.psql(db, "SELECT n || '/' || note FROM t WHERE id = 1"),
            "112/a",
            "on {db}: a's row wins, both increments count"
        );
    }
    assert_eq!(
        c.psql("b", "SELECT winner FROM drover.conflicts"),
        "a",
        "b's late change is a conflict, decided and logged on b"
    );
    daemon.stop();
}
