//! The HTTP API against hostile clients: a browser page's cross-site "simple" POST, a foreign
//! `Origin`, a DNS-rebinding `Host`, error details (row values) kept from callers without the
//! token and out of default logs, `daemon.api_token_for_reads`, a client that stalls in its
//! headers, and the connection limit.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::scenario::*;
use support::*;

const SYNC: &str = "legacy_to_new";
const TOKEN: &str = "t0ken-Gnu-0815";
/// A value that appears only in a unique-violation DETAIL (`Key (email)=(...)`).
const ROW_VALUE: &str = "leak-4711@example.com";
/// `MAX_CONNECTIONS` of src/http/listener.rs.
const MAX_CONNECTIONS: usize = 64;

/// `curl` to 127.0.0.1:`port` with extra headers: (status code, body).
fn curl(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `items` in `src` and `dst` of `c`, synced one way; `[daemon]` gets `daemon_lines`.
fn pair(c: &Cluster, daemon_lines: &str) -> (Setup, PathBuf) {
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE items (id int PRIMARY KEY, email text); \
             INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;",
        );
    }
    let setup = one_way((c, "src"), (c, "dst"), &["public.items"]);
    let toml = std::fs::read_to_string(&setup.config).expect("read config");
    let toml = toml.replacen("[daemon]\n", &format!("[daemon]\n{daemon_lines}\n"), 1);
    let cfg = write_config(setup.dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    (setup, cfg)
}

fn wait_for_health(port: u16) {
    eventually(
        Duration::from_secs(30),
        "the daemon to answer /health",
        || curl(port, "GET", "/health", &[]).0 == 200,
    );
}

fn paused(cfg: &Path) -> bool {
    sync_status(cfg, SYNC)["paused"] == true
}

#[test]
fn cross_site_requests_foreign_origins_and_hosts_are_refused() {
    let c = Cluster::start();
    let (setup, cfg) = pair(&c, "");
    let port = setup.listen;
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let pause = format!("/syncs/{SYNC}/pause");
    let resume = format!("/syncs/{SYNC}/resume");

    // What a hostile page's <form method=post> sends: a simple request, no custom header.
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (code, body) = curl(port, "POST", &pause, &[form]);
    assert_eq!(code, 403, "form POST without X-Drover-Request: {body}");
    assert!(body.contains("X-Drover-Request"), "{body}");
    assert_eq!(curl(port, "POST", &pause, &[]).0, 403, "bare POST");
    assert_eq!(
        curl(port, "POST", &pause, &["Content-Type: text/plain"]).0,
        403
    );
    assert!(!paused(&cfg), "a refused pause paused the sync");

    // A foreign Origin is refused even with the custom header (and on GET).
    let evil = "Origin: http://evil.example";
    let (code, body) = curl(port, "POST", &pause, &["X-Drover-Request: 1", evil]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        curl(
            port,
            "POST",
            &pause,
            &["X-Drover-Request: 1", "Origin: null"]
        )
        .0,
        403
    );
    assert_eq!(curl(port, "GET", "/status", &[evil]).0, 403);
    assert!(!paused(&cfg), "a foreign-origin pause paused the sync");

    // DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    for path in ["/status", "/health", "/metrics"] {
        let (code, body) = curl(port, "GET", path, &["Host: evil.example"]);
        assert_eq!(code, 400, "GET {path} with Host evil.example: {body}");
    }
    let host = format!("Host: evil.example:{port}");
    assert_eq!(
        curl(port, "POST", &pause, &["X-Drover-Request: 1", &host]).0,
        400
    );
    assert!(!paused(&cfg), "a rebinding pause paused the sync");
    for ok_host in [
        "localhost",
        &format!("localhost:{port}"),
        "[::1]",
        "127.0.0.1",
    ] {
        let (code, body) = curl(port, "GET", "/health", &[&format!("Host: {ok_host}")]);
        assert_eq!(code, 200, "Host {ok_host}: {body}");
    }

    // No endpoint takes a body: a large one is refused before anything happens.
    let big = "x".repeat(100 * 1024);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "X-Drover-Request: 1", "--data-binary", &big])
        .arg(format!("http://127.0.0.1:{port}{pause}"));
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413", "100 KiB body");
    assert!(!paused(&cfg), "a pause with a huge body paused the sync");

    // What scripts and the CLI send still works.
    let (code, body) = curl(port, "POST", &pause, &["X-Drover-Request: 1"]);
    assert_eq!((code, body.as_str()), (202, "paused\n"));
    assert!(paused(&cfg));
    let same = format!("Origin: http://127.0.0.1:{port}");
    let json = "Content-Type: application/json";
    assert_eq!(curl(port, "POST", &resume, &[json, &same]).0, 202);
    eventually(Duration::from_secs(10), "the sync to resume", || {
        !paused(&cfg)
    });
    let out = drover(&cfg, &["kick", SYNC]);
    assert!(out.status.success(), "{}", text(&out));
    c.psql("src", "UPDATE items SET email = 'after' WHERE id = 3");
    drover_wait(&cfg, SYNC, 60);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );
    daemon.stop();
}

#[test]
fn error_details_need_the_token_and_stay_out_of_default_logs() {
    let c = Cluster::start();
    let (setup, cfg) = pair(&c, &format!("api_token = \"{TOKEN}\""));
    let port = setup.listen;
    // A unique index only the target has: the source's duplicate emails fail there.
    c.psql("dst", "CREATE UNIQUE INDEX items_email ON items (email)");
    let mut daemon = Daemon::start(&cfg);
    wait_for_health(port);
    c.psql(
        "src",
        &format!("UPDATE items SET email = '{ROW_VALUE}' WHERE id IN (4, 5)"),
    );
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let mut full = String::new();
    eventually(
        Duration::from_secs(60),
        "the unique violation in status",
        || {
            let (code, body) = curl(port, "GET", &format!("/status?sync={SYNC}"), &[&bearer]);
            full = body;
            code == 200 && full.contains("duplicate key")
        },
    );
    assert!(
        full.contains(ROW_VALUE),
        "with the token, status shows the detail: {full}"
    );

    let (code, body) = curl(port, "GET", &format!("/status?sync={SYNC}"), &[]);
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("status JSON");
    let err = doc["syncs"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("duplicate key"),
        "the error itself stays: {err}"
    );
    assert!(
        !body.contains(ROW_VALUE),
        "status without the token leaks row data: {body}"
    );
    let (code, body) = curl(port, "GET", "/status", &["Authorization: Bearer wrong"]);
    assert_eq!(code, 200);
    assert!(
        !body.contains(ROW_VALUE),
        "a wrong token sees row data: {body}"
    );
    let (_, health) = curl(port, "GET", "/health", &[]);
    assert!(
        health.contains(SYNC) && !health.contains(ROW_VALUE),
        "{health}"
    );
    // The CLI sends the token and shows everything.
    let out = drover_ok(&cfg, &["status", "--json"]);
    assert!(out.contains(ROW_VALUE), "{out}");

    // Repair: the data arrives, and the default-level log never carried the value.
    c.psql("dst", "DROP INDEX items_email");
    drover_wait(&cfg, SYNC, 60);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );
    c.psql(
        "src",
        "UPDATE items SET email = 'n' || id WHERE id IN (4, 5)",
    );
    drover_wait(&cfg, SYNC, 60);
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("duplicate key"),
        "the failure is logged: {log}"
    );
    assert!(
        !log.contains(ROW_VALUE),
        "the default log leaks row data: {log}"
    );

    // At debug level the log keeps the detail, for the operator who asks for it.
    c.psql("dst", "CREATE UNIQUE INDEX items_email ON items (email)");
    c.psql(
        "src",
        &format!("UPDATE items SET email = '{ROW_VALUE}' WHERE id IN (6, 7)"),
    );
    let mut debug = Daemon::start_with(&cfg, &[], &[("RUST_LOG", "debug")]);
    eventually(
        Duration::from_secs(60),
        "the detail in the debug log",
        || debug.log().contains(ROW_VALUE),
    );
    c.psql("dst", "DROP INDEX items_email");
    drover_wait(&cfg, SYNC, 60);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );
    debug.stop();
}

#[test]
fn api_token_for_reads_guards_everything_but_health() {
    let c = Cluster::start();
    let (setup, cfg) = pair(
        &c,
        &format!("api_token = \"{TOKEN}\"\napi_token_for_reads = true"),
    );
    let port = setup.listen;
    let mut daemon = Daemon::start(&cfg);
    wait_for_health(port);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in ["/status", "/metrics", &format!("/status?sync={SYNC}")] {
        let (code, body) = curl(port, "GET", path, &[]);
        assert_eq!(code, 401, "GET {path} without the token: {body}");
        assert!(body.contains("api_token_for_reads"), "{body}");
        assert_eq!(
            curl(port, "GET", path, &["Authorization: Bearer nope"]).0,
            401
        );
        assert_eq!(curl(port, "GET", path, &[&bearer]).0, 200, "GET {path}");
    }
    assert_eq!(curl(port, "GET", "/health", &[]), (200, "ok\n".to_string()));
    // The CLI sends the token for reads too.
    assert_eq!(sync_status(&cfg, SYNC)["name"], SYNC);
    c.psql("src", "DELETE FROM items WHERE id = 9");
    drover_wait(&cfg, SYNC, 60);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );
    daemon.stop();

    // Without a token the key makes no sense: check refuses it, naming the key.
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("api_token = \"{TOKEN}\"\n"), "");
    let bad = write_config(setup.dir.path(), &toml);
    let out = drover(&bad, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("daemon.api_token_for_reads"),
        "{}",
        text(&out)
    );
}

/// Reads from `s` until EOF or `limit`; Err if the server still holds it open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let deadline = std::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("still open after {limit:?}"));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&got).into_owned())
            }
            // A read with a timeout is not restarted after a signal (signal(7)): read on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("still open after {limit:?} ({e})")),
        }
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_limited() {
    let c = Cluster::start();
    let (setup, cfg) = pair(&c, "");
    let port = setup.listen;
    let mut daemon = Daemon::start(&cfg);
    wait_for_health(port);

    // Half a header, then silence: others are served meanwhile, and the server hangs up.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        .unwrap();
    // A body that never completes (no endpoint needs one).
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /syncs/{SYNC}/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drover-Request: 1\r\n\
         Content-Length: 1000\r\n\r\nonly ten.."
    );
    trickle.write_all(head.as_bytes()).unwrap();
    // Silent from the start, and idle after one kept-alive request: both are closed too.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(curl(port, "GET", "/health", &[]), (200, "ok\n".to_string()));
    let end = read_until_closed(&mut slow, Duration::from_secs(40));
    assert!(
        end.is_ok(),
        "a stalled header keeps its connection: {end:?}"
    );
    let end = read_until_closed(&mut silent, Duration::from_secs(40));
    assert!(end.is_ok(), "a silent client keeps its connection: {end:?}");
    let end = read_until_closed(&mut kept, Duration::from_secs(40));
    let end = end.unwrap_or_else(|e| panic!("an idle kept-alive connection: {e}"));
    assert!(end.starts_with("HTTP/1.1 200"), "{end}");
    let end = read_until_closed(&mut trickle, Duration::from_secs(40));
    let end = end.unwrap_or_else(|e| panic!("a body that never completes: {e}"));
    assert!(end.starts_with("HTTP/1.1 408"), "{end}");

    // Idle connections up to the limit are held; the next one is turned away at once.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let answer = read_until_closed(&mut extra, Duration::from_secs(5));
    let answer = answer.unwrap_or_else(|e| panic!("connection over the limit: {e}"));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(idle);
    eventually(
        Duration::from_secs(30),
        "/health after the idle ones left",
        || curl(port, "GET", "/health", &[]).0 == 200,
    );
    c.psql("src", "UPDATE items SET email = 'x' WHERE id = 2");
    drover_wait(&cfg, SYNC, 60);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );
    daemon.stop();
}
