//! What a service manager and a scraper see when `drover run` starts: systemd's notify
//! protocol over a fake NOTIFY_SOCKET (READY=1, WATCHDOG=1 at half of WATCHDOG_USEC,
//! STOPPING=1 on SIGTERM), and `/metrics` with the counters known in advance at 0.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::scenario::*;
use support::*;

const T: Duration = Duration::from_secs(60);

/// Collects the datagrams a daemon sends to a socket the test bound.
struct FakeManager {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl FakeManager {
    fn bind(dir: &std::path::Path) -> (FakeManager, String) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let manager = FakeManager { sock, got: vec![] };
        (manager, path.to_str().unwrap().to_string())
    }

    /// Waits until `n` messages containing `line` have arrived.
    fn wait_for(&mut self, line: &str, n: usize) {
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 4096];
        while self.count(line) < n {
            assert!(
                Instant::now() < deadline,
                "{n} x {line:?} not received; got {:?}",
                self.got
            );
            if let Ok(len) = self.sock.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.got
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

/// GET `path` on the daemon; the response body.
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    assert!(out.starts_with("HTTP/1.1 200"), "GET {path}: {out}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn run_notifies_systemd_and_exports_counters_at_zero() {
    let c = Cluster::start();
    c.create_db("legacy");
    c.create_db("new");
    for db in ["legacy", "new"] {
        c.psql(db, "CREATE TABLE public.t (id int PRIMARY KEY, v text)");
    }
    let s = one_way((&c, "legacy"), (&c, "new"), &["public.t"]);
    drover_ok(&s.config, &["install"]);
    let (mut manager, socket) = FakeManager::bind(s.dir.path());
    // 1 s watchdog timeout: a ping every 0.5 s.
    let mut d = Daemon::start_with(
        &s.config,
        &[],
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")],
    );
    manager.wait_for("READY=1", 1);
    manager.wait_for("WATCHDOG=1", 3);

    // Right after start, before any round could fail or conflict.
    let metrics = http_get(s.listen, "/metrics");
    for series in [
        r#"drover_errors_total{sync="legacy_to_new",database="new",kind="connection",stage="round"} 0"#,
        r#"drover_errors_total{sync="",database="legacy",kind="connection",stage="listen"} 0"#,
        r#"drover_conflicts_total{sync="legacy_to_new",table="public.t",strategy="latest",winner="none"} 0"#,
        r#"drover_rounds_total{sync="legacy_to_new",result="bad"} 0"#,
        r#"drover_rows_inserted_total{sync="legacy_to_new",table="public.t",target="new"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "/metrics lacks {series}:\n{metrics}"
        );
    }
    // process_cpu_seconds_total is a counter (metrics-process), not a gauge.
    assert!(
        metrics
            .lines()
            .any(|l| l == "# TYPE process_cpu_seconds_total counter"),
        "process_cpu_seconds_total is not a counter:\n{metrics}"
    );
    assert!(metrics.contains("\nprocess_resident_memory_bytes "));
    assert!(metrics.contains("\nprocess_resident_memory_max_bytes "));

    d.stop();
    manager.wait_for("STOPPING=1", 1);
    assert_eq!(
        manager.count("READY=1"),
        1,
        "READY=1 once: {:?}",
        manager.got
    );
}

#[test]
fn run_without_notify_socket_starts_as_before() {
    let c = Cluster::start();
    c.create_db("legacy");
    c.create_db("new");
    for db in ["legacy", "new"] {
        c.psql(db, "CREATE TABLE public.t (id int PRIMARY KEY)");
    }
    let s = one_way((&c, "legacy"), (&c, "new"), &["public.t"]);
    drover_ok(&s.config, &["install"]);
    // WATCHDOG_USEC without a socket: nothing to send to, nothing fails.
    let mut d = Daemon::start_with(&s.config, &[], &[("WATCHDOG_USEC", "1000000")]);
    wait_for_daemon(&s.config);
    c.psql(
        "legacy",
        "INSERT INTO public.t SELECT generate_series(1, 10)",
    );
    drover_wait(&s.config, "legacy_to_new", 60);
    assert_eq!(
        table_md5(&c, "legacy", "public.t", "id"),
        table_md5(&c, "new", "public.t", "id")
    );
    assert!(d.is_running(), "daemon exited: {}", d.log());
    assert!(!d.log().contains("cannot notify"), "{}", d.log());
}
