//! A master that changes a key after its round snapshot while another master's change to the
//! same key is being applied to it: the sync's strategy decides, and the decision is logged.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::scenario::*;
use support::*;

fn setup(strategy: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf, Daemon) {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'orig' FROM generate_series(1, 3) g;");
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n{strategy}\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    (c, dir, cfg, daemon)
}

/// b changes key 1 in a transaction left open; a changes it too. The round's snapshot of b
/// misses b's change; its apply on b waits for b's row lock; then b commits: b's change is
/// newer than b's round snapshot while a's change to the key is being applied there.
fn late_local_change(c: &Cluster) {
    let b = b_changes_key_1(c);
    c.psql("a", "UPDATE t SET v = 'a' WHERE id = 1");
    commit_once_the_apply_waits(c, b);
}

/// b's `UPDATE` of key 1 in a transaction left open, once it holds the row.
fn b_changes_key_1(c: &Cluster) -> Child {
    let mut b: Child = Command::new("psql")
        .args(["-XAtq", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres", "-d", "b", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let stdin = b.stdin.as_mut().expect("psql stdin");
    writeln!(stdin, "BEGIN; UPDATE t SET v = 'b late' WHERE id = 1;").unwrap();
    stdin.flush().unwrap();
    eventually(Duration::from_secs(10), "b's row lock", || {
        c.psql("b", "SELECT count(*) FROM pg_locks WHERE mode = 'RowExclusiveLock' AND relation = 't'::regclass AND granted") == "1"
    });
    b
}

/// Commits b's open transaction once drover's apply on b waits for its row.
fn commit_once_the_apply_waits(c: &Cluster, mut b: Child) {
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
}

fn v1(c: &Cluster, db: &str) -> String {
    c.psql(db, "SELECT v FROM t WHERE id = 1")
}

#[test]
fn priority_decides_a_late_local_change_and_logs_it() {
    let (c, _dir, cfg, mut d) =
        setup("conflict_strategy = \"priority\"\npriority = [\"a\", \"b\"]");
    late_local_change(&c);
    drover_wait(&cfg, "mm", 60);
    eventually(Duration::from_secs(20), "both masters to agree", || {
        v1(&c, "a") == v1(&c, "b")
    });
    assert_eq!(
        v1(&c, "b"),
        "a",
        "b's later change has the lower priority: a's must win"
    );
    assert_eq!(
        c.psql("b", "SELECT strategy || ':' || winner || ':' || (versions->'b'->'row'->>'v') FROM drover.conflicts WHERE key->>'id' = '1'"),
        "priority:a:b late",
        "the decision is logged on b with both versions"
    );
    // The decision made during b's apply is counted like the conflicts a round gathers.
    assert_eq!(
        sync_status(&cfg, "mm")["conflicts"],
        1,
        "the status counts the late conflict"
    );
    let toml = std::fs::read_to_string(&cfg).unwrap();
    let listen = (toml.lines())
        .find_map(|l| l.strip_prefix("listen = \"")?.strip_suffix('"'))
        .expect("listen in the config");
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{listen}/metrics")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let series = "drover_conflicts_total{sync=\"mm\",table=\"public.t\",strategy=\"priority\",winner=\"a\"} 1";
    assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    d.stop();
}

#[test]
fn abort_stops_on_a_late_local_change() {
    let (c, _dir, cfg, mut d) = setup("conflict_strategy = \"abort\"");
    late_local_change(&c);
    eventually(
        Duration::from_secs(30),
        "the sync to stop on the conflict",
        || sync_status(&cfg, "mm")["state"] == "bad",
    );
    let (_, err) = state_and_error(&cfg, "mm");
    assert!(err.contains("conflict_strategy = \"abort\""), "{err}");
    assert_eq!(v1(&c, "a"), "a", "nothing applied to a");
    assert_eq!(v1(&c, "b"), "b late", "nothing applied to b");
    d.stop();
}

/// Like `late_local_change`, but a changes key 1 first (while the sync is paused), so b's late
/// change is also the later one.
fn later_local_change(c: &Cluster, cfg: &std::path::Path) {
    drover_ok(cfg, &["pause", "mm"]);
    c.psql("a", "UPDATE t SET v = 'a' WHERE id = 1");
    let b = b_changes_key_1(c);
    drover_ok(cfg, &["resume", "mm"]);
    commit_once_the_apply_waits(c, b);
}

fn logged_on_b(c: &Cluster) -> String {
    c.psql(
        "b",
        "SELECT strategy || ':' || coalesce(winner, '-') || ':' || (versions->'a'->'row'->>'v') || ':' || (versions->'b'->'row'->>'v') \
         FROM drover.conflicts WHERE key->>'id' = '1'",
    )
}

#[test]
fn latest_lets_a_later_local_change_win_and_logs_it() {
    let (c, _dir, cfg, mut d) = setup("conflict_strategy = \"latest\"");
    later_local_change(&c, &cfg);
    drover_wait(&cfg, "mm", 60);
    eventually(Duration::from_secs(20), "both masters to agree", || {
        v1(&c, "a") == v1(&c, "b")
    });
    assert_eq!(
        v1(&c, "a"),
        "b late",
        "b's change is the later one: it wins on both masters"
    );
    assert_eq!(
        logged_on_b(&c),
        "latest:b:a:b late",
        "the decision is logged on b with both versions"
    );
    d.stop();
}

#[test]
fn skip_keeps_both_sides_of_a_late_local_change_and_logs_it() {
    let (c, _dir, cfg, mut d) = setup("conflict_strategy = \"skip\"");
    later_local_change(&c, &cfg);
    drover_wait(&cfg, "mm", 60);
    assert_eq!(v1(&c, "a"), "a", "skip leaves a's row as it is");
    assert_eq!(v1(&c, "b"), "b late", "skip leaves b's row as it is");
    assert_eq!(
        logged_on_b(&c),
        "skip:-:a:b late",
        "the decision is logged on b with both versions"
    );
    d.stop();
}
