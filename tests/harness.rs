//! Self-tests of the integration-test harness in tests/support.

mod support;

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(30);

fn postmaster_pid(data_dir: &Path) -> u32 {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().trim().parse().unwrap()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn psql_round_trip_in_created_database() {
    let c = Cluster::start();
    // A name that needs quoting.
    c.create_db("Drover Test");
    c.psql(
        "Drover Test",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    );
    assert_eq!(c.psql("Drover Test", "SELECT v FROM t ORDER BY id"), "a\nb");
    assert_eq!(
        c.psql("Drover Test", "SELECT id, v FROM t WHERE id = 2"),
        "2|b"
    );
    let err = c
        .try_psql("Drover Test", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    assert_eq!(c.version_num() / 10_000, 15);
}

#[test]
#[should_panic(expected = "already exists")]
fn create_db_panics_with_server_error() {
    let c = Cluster::start();
    c.create_db("twice");
    c.create_db("twice");
}

#[test]
fn psql_stops_at_first_error() {
    let c = Cluster::start();
    let err = c
        .try_psql(
            "postgres",
            "CREATE TABLE a (x int); SELECT 1/0; CREATE TABLE b (x int);",
        )
        .unwrap_err();
    assert!(err.contains("division by zero"), "{err}");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT string_agg(relname, ',') FROM pg_class WHERE relname IN ('a', 'b')"
        ),
        "a"
    );
}

#[test]
fn table_md5_tracks_content() {
    let c = Cluster::start();
    c.create_db("left");
    c.create_db("right");
    let schema = "CREATE TABLE \"Acc\" (id int PRIMARY KEY, n numeric, note text);";
    let rows =
        "INSERT INTO \"Acc\" SELECT g, g * 1.5, 'row ' || g FROM generate_series(1, 1000) g;";
    // Same rows, inserted in a different physical order on the right.
    c.psql("left", &format!("{schema}{rows}"));
    c.psql(
        "right",
        &format!(
            "{schema}{}",
            rows.replace(
                "generate_series(1, 1000) g",
                "generate_series(1000, 1, -1) g"
            )
        ),
    );
    let md5 = |db| c.table_md5(db, "public.\"Acc\"", "id");
    assert_eq!(md5("left").len(), 32);
    assert_eq!(md5("left"), md5("right"));

    c.psql("right", "UPDATE \"Acc\" SET note = NULL WHERE id = 500");
    assert_ne!(md5("left"), md5("right"));
    c.psql(
        "right",
        "UPDATE \"Acc\" SET note = 'row 500' WHERE id = 500",
    );
    assert_eq!(md5("left"), md5("right"));

    c.psql("left", "DELETE FROM \"Acc\"");
    assert_eq!(md5("left"), "d41d8cd98f00b204e9800998ecf8427e"); // md5('')
}

#[test]
fn restart_after_stop_immediate_keeps_data() {
    let c = Cluster::start();
    let port = c.port;
    c.psql(
        "postgres",
        "CREATE TABLE kept (id int); INSERT INTO kept SELECT generate_series(1, 100);",
    );
    // Committed just before the crash: must survive it.
    c.psql("postgres", "INSERT INTO kept VALUES (101)");
    c.stop_immediate();
    assert!(c.try_psql("postgres", "SELECT 1").is_err());
    c.restart();
    assert_eq!(c.port, port);
    assert_eq!(
        c.psql("postgres", "SELECT count(*), max(id) FROM kept"),
        "101|101"
    );
    assert!(
        c.log().contains("database system was interrupted"),
        "no crash recovery in log"
    );
}

#[test]
fn two_clusters_at_once_get_different_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Cluster::start);
        let b = s.spawn(Cluster::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port, b.port);
    assert_ne!(a.data_dir(), b.data_dir());
    a.psql("postgres", "CREATE TABLE only_a ()");
    assert_eq!(
        b.psql("postgres", "SELECT to_regclass('only_a') IS NULL"),
        "t"
    );
}

#[test]
fn start_retries_when_the_port_is_taken() {
    let port = free_port();
    let _squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let c = Cluster::start_with_first_port(ClusterOptions::default(), port);
    assert_ne!(c.port, port);
    assert_eq!(c.psql("postgres", "SELECT 1"), "1");
    assert!(
        c.log().contains("could not bind"),
        "first attempt did not fail"
    );
}

#[test]
fn options_reach_postgresql_conf_and_pg_hba() {
    let c = Cluster::start_with(ClusterOptions {
        bin_dir: Some(PathBuf::from(DEFAULT_BIN_DIR)),
        conf: vec![
            ("work_mem".into(), "'7MB'".into()),
            ("max_connections".into(), "40".into()),
        ],
        hba_lines: vec!["host closed all 127.0.0.1/32 reject".into()],
    });
    assert_eq!(c.psql("postgres", "SHOW work_mem"), "7MB");
    // Later settings win over the harness defaults.
    assert_eq!(c.psql("postgres", "SHOW max_connections"), "40");
    assert_eq!(c.psql("postgres", "SHOW fsync"), "off");
    c.create_db("closed");
    let err = c.try_psql("closed", "SELECT 1").unwrap_err();
    assert!(err.contains("pg_hba.conf"), "{err}");
}

#[test]
fn pgbench_runs() {
    let c = Cluster::start();
    c.create_db("bench");
    c.pgbench("bench", &["-i", "-s", "1", "-q"]);
    let out = c.pgbench("bench", &["-t", "20", "-c", "2"]);
    assert!(
        out.contains("number of transactions actually processed: 40"),
        "{out}"
    );
    assert_eq!(
        c.psql("bench", "SELECT count(*) FROM pgbench_history"),
        "40"
    );
}

#[test]
fn drop_stops_the_server_and_removes_the_dir() {
    let c = Cluster::start();
    let dir = c.data_dir().to_path_buf();
    let pid = postmaster_pid(&dir);
    assert!(process_exists(pid));
    drop(c);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!dir.parent().unwrap().exists());
    eventually(T, "the postmaster to exit", || !process_exists(pid));
}

#[test]
fn drop_cleans_up_while_a_test_panics() {
    let mut seen: Option<(PathBuf, u32)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Cluster::start();
        seen = Some((c.data_dir().to_path_buf(), postmaster_pid(c.data_dir())));
        panic!("deliberate test failure");
    }));
    assert!(result.is_err());
    let (dir, pid) = seen.unwrap();
    assert!(!dir.exists(), "{} still exists", dir.display());
    eventually(T, "the postmaster to exit", || !process_exists(pid));
}

#[test]
fn eventually_returns_once_true() {
    let mut polls = 0;
    eventually(T, "three polls", || {
        polls += 1;
        polls == 3
    });
    assert_eq!(polls, 3);
}

#[test]
#[should_panic(expected = "waiting for the impossible")]
fn eventually_panics_on_timeout() {
    eventually(Duration::from_millis(200), "the impossible", || false);
}

#[test]
#[should_panic(expected = "timed out after")]
fn run_with_timeout_fails_a_hang() {
    run_with_timeout(
        Command::new("sleep").arg("30"),
        None,
        Duration::from_millis(300),
    );
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
}

#[test]
fn write_config_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[daemon]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "[daemon]\nlisten = \"127.0.0.1:1\"\n"
    );
}

#[test]
fn drover_binary_is_built() {
    assert!(drover_bin().is_file());
}

#[test]
fn daemon_captures_output_and_stops_with_sigterm() {
    let mut d = Daemon::spawn({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exec sleep 60"]);
        cmd
    });
    eventually(T, "daemon output", || d.log() == "out\nerr\n");
    assert!(d.is_running());
    d.stop();
    assert_eq!(d.status().unwrap().signal(), Some(15));
    assert!(!process_exists(d.pid()));
}

#[test]
fn daemon_stop_escalates_to_sigkill() {
    // Ignored signals stay ignored across exec, so sleep ignores TERM.
    let mut d = Daemon::spawn({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; echo ready; exec sleep 60"]);
        cmd
    });
    eventually(T, "the trap to be set", || d.log().contains("ready"));
    d.stop_within(Duration::from_millis(300));
    assert_eq!(d.status().unwrap().signal(), Some(9));
}

#[test]
fn daemon_kill9_and_drop_leave_no_process() {
    let mut d = Daemon::spawn({
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        cmd
    });
    d.kill9();
    assert_eq!(d.status().unwrap().signal(), Some(9));

    let d = Daemon::spawn({
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        cmd
    });
    let pid = d.pid();
    drop(d);
    assert!(!process_exists(pid));
}
