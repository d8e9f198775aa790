//! Every failure the daemon logs is counted once in `drover_errors_total`: a target reached
//! through a fault proxy has its connections cut and its traffic blackholed under a write
//! load; the failure lines in the log and the counter agree, and the data converges.

mod support;

use std::process::Command;
use std::time::Duration;

use support::proxy::Proxy;
use support::scenario::*;
use support::*;

const SYNC: &str = "legacy_to_new";
/// Connection cuts injected while rounds run.
const CUTS: usize = 4;

#[test]
fn logged_failures_equal_counted_errors_under_cuts_and_a_blackhole() {
    let (src, dst) = pgbench_pair();
    let proxy = Proxy::start(dst.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\n{}[databases.new]\nhost = \"127.0.0.1\"\n\
         port = {}\ndbname = \"repdb\"\nuser = \"postgres\"\n[relgroups.herd]\ntables = [{}]\n\
         [syncs.{SYNC}]\nrelgroup = \"herd\"\nsources = [\"legacy\"]\ntargets = [\"new\"]\n",
        src.database_toml("legacy", "repdb"),
        proxy.port,
        PGBENCH_TABLES.map(|t| format!("\"{t}\"")).join(", ")
    );
    let config = write_config(dir.path(), &toml);
    drover_ok(&config, &["install"]);
    let daemon = Daemon::start(&config);
    wait_for_daemon(&config);
    let url = format!("http://127.0.0.1:{listen}/metrics");

    // The first cut lands while the daemon starts (preparing, or idle); the others while
    // rounds run.
    let cut_when_connected = |i: usize| {
        // After a cut, every open session is one the daemon opened since.
        eventually(
            Duration::from_secs(30),
            "a session through the proxy",
            || proxy.connections() > 0,
        );
        proxy.cut();
        eprintln!("cut #{i}");
    };
    cut_when_connected(0);
    eventually(
        Duration::from_secs(90),
        "a good round after the first cut",
        || sync_status(&config, SYNC)["state"] == "good",
    );
    let writer = pgbench_in_background(&src, "repdb", &["-n", "-c", "1", "-T", "15", "-R", "40"]);
    for i in 1..=CUTS {
        // Each cut hits sessions the daemon opened since the last one, mostly mid-round.
        cut_when_connected(i);
    }
    // Blackhole: open sessions stall and end (as a TCP timeout would end them), new ones
    // are accepted but never answered, until the connect timeout makes the daemon give up.
    let before = failure_lines(&daemon.log()).len();
    proxy.blackhole();
    proxy.cut();
    eventually(
        Duration::from_secs(60),
        "a failure logged during the blackhole",
        || failure_lines(&daemon.log()).len() > before,
    );
    proxy.restore();
    eprintln!("blackhole over");
    writer.join().unwrap();
    drover_wait(&config, SYNC, 180);
    assert_pgbench_same(&src, &dst);

    // The log and the counter are written by one call: once both are quiet they agree.
    let mut sample = (0, 0.0, String::new());
    eventually(Duration::from_secs(20), "a quiet log and metrics", || {
        let a = failure_lines(&daemon.log()).len();
        let text = scrape(&url);
        let b = failure_lines(&daemon.log()).len();
        sample = (a, errors_total(&text), text);
        a == b
    });
    let (logged, counted, text) = sample;
    let log = daemon.log();
    let lines = failure_lines(&log);
    eprintln!("logged {logged} failures, counted {counted}:");
    for series in error_series(&text) {
        eprintln!("  {series}");
    }
    assert_eq!(
        counted as usize,
        logged,
        "failures logged vs drover_errors_total\n--- failure lines ---\n{}\n--- metrics ---\n{}",
        lines.join("\n"),
        error_series(&text).join("\n")
    );
    assert!(logged > 0, "the faults caused no failure at all");
    for line in &lines {
        assert!(
            line.contains("stage="),
            "a failure line without a stage: {line}"
        );
    }
    for series in error_series(&text) {
        assert!(
            series.contains("stage=\""),
            "a series without a stage label: {series}"
        );
    }
    // Rounds were running when the blackhole began: their new sessions timed out.
    // Every series exists at 0 from startup: a round failure is a round series above 0.
    assert!(
        error_series(&text)
            .iter()
            .any(|s| s.contains("stage=\"round\"")
                && s.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)),
        "no round failure counted"
    );
}

/// The daemon's WARN and ERROR lines: every one of them marks a failed attempt.
fn failure_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

fn error_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("drover_errors_total{"))
        .map(str::to_string)
        .collect()
}

/// The sum of `drover_errors_total` over all its label sets.
fn errors_total(text: &str) -> f64 {
    error_series(text)
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", url]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
