//! Leases expire: a frozen holder (SIGSTOP: its TCP sessions stay open) loses the lease to a
//! standby within `daemon.lease_timeout` plus one retry, and after it resumes it commits
//! nothing, neither an in-flight round nor a running initial copy, and reports standby.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::scenario::*;
use support::*;

/// Short enough for a quick test; the standby retries every 2 s.
const LEASE_TIMEOUT: &str = "3s";
/// lease_timeout + one retry + time to prepare the sync, with room for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

fn signal(d: &Daemon, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &d.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} failed");
}

fn status_on(config: &Path, listen: u16) -> Option<serde_json::Value> {
    let out = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(config)
        .args(["status", "--json"])
        .env("DROVER__DAEMON__LISTEN", format!("127.0.0.1:{listen}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(doc["syncs"][0].clone())
}

fn start(config: &Path, listen: u16) -> Daemon {
    let addr = format!("127.0.0.1:{listen}");
    Daemon::start_with(
        config,
        &[],
        &[
            ("DROVER__DAEMON__LISTEN", addr.as_str()),
            ("DROVER__DAEMON__LEASE_TIMEOUT", LEASE_TIMEOUT),
            ("DROVER__SYNCS__LEGACY_TO_NEW__INITIAL_COPY", "if-empty"),
        ],
    )
}

fn wait_lease(config: &Path, listen: u16, lease: &str, timeout: Duration) {
    eventually(timeout, &format!("lease {lease} on :{listen}"), || {
        status_on(config, listen).is_some_and(|s| s["lease"] == lease)
    });
}

fn wait_on(config: &Path, listen: u16) {
    let out = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(config)
        .args(["wait", "legacy_to_new", "--timeout", "60"])
        .env("DROVER__DAEMON__LISTEN", format!("127.0.0.1:{listen}"))
        .output()
        .expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn same(c: &Cluster) {
    assert_eq!(
        table_md5(c, "src", "items", "id"),
        table_md5(c, "dst", "items", "id")
    );
    assert_eq!(
        table_md5(c, "src", "log", "n, note"),
        table_md5(c, "dst", "log", "n, note")
    );
}

fn insert(c: &Cluster, from: i32, to: i32) {
    for i in from..to {
        c.psql(
            "src",
            &format!(
                "INSERT INTO items VALUES ({i}, 'n{i}'); INSERT INTO log VALUES ({i}, 'l{i}')"
            ),
        );
    }
}

/// Slows each insert into `table` on the target until `fast_inserts`, so A's transaction can
/// be caught running and B's, once A is frozen, runs at full speed.
fn slow_inserts(c: &Cluster, table: &str) {
    c.psql(
        "dst",
        &format!(
            "CREATE TABLE slow_on (slow bool NOT NULL); INSERT INTO slow_on VALUES (true); \
             CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN IF (SELECT slow FROM public.slow_on) THEN PERFORM pg_sleep(0.0005); END IF; \
             RETURN NEW; END$$; \
             CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slow(); \
             ALTER TABLE {table} ENABLE ALWAYS TRIGGER slow"
        ),
    );
}

fn fast_inserts(c: &Cluster) {
    c.psql("dst", "UPDATE slow_on SET slow = false");
}

#[test]
fn frozen_holder_loses_the_lease_and_applies_nothing_after() {
    frozen_holder(Cluster::start());
}

/// Before PostgreSQL 14 (no idle_session_timeout) the standby ends the silent holder's lease
/// session once its heartbeat row is older than lease_timeout.
#[test]
fn frozen_holder_on_postgres_10_is_ended_by_the_standby() {
    frozen_holder(support::versions::cluster(10));
}

fn frozen_holder(c: Cluster) {
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE items (id int PRIMARY KEY, note text); CREATE TABLE log (n int, note text)",
        );
    }
    let setup = one_way((&c, "src"), (&c, "dst"), &["items", "log"]);
    drover_ok(&setup.config, &["install"]);
    let method = if c.version_num() >= 140_000 {
        "expires by idle_session_timeout"
    } else {
        "expires by heartbeat row"
    };
    let check = String::from_utf8_lossy(&drover(&setup.config, &["check"]).stdout).to_string();
    assert!(
        check.contains(&format!("lease: on legacy, {method}")),
        "{check}"
    );
    let (port_a, port_b) = (setup.listen, free_port());
    let mut a = start(&setup.config, port_a);
    wait_lease(&setup.config, port_a, "held", Duration::from_secs(30));
    let mut b = start(&setup.config, port_b);
    eventually(Duration::from_secs(30), "B to stand by naming A", || {
        status_on(&setup.config, port_b)
            .is_some_and(|s| s["state"] == "standby" && s["lease_holder"]["pid"] == a.pid() as i64)
    });
    insert(&c, 0, 50);
    wait_on(&setup.config, port_a);
    same(&c);
    let applied_by_a = status_on(&setup.config, port_a).unwrap()["rows_inserted"].clone();

    // A freezes with its sessions open; B must take over on its own.
    signal(&a, "-STOP");
    let frozen = Instant::now();
    insert(&c, 50, 100);
    wait_lease(&setup.config, port_b, "held", TAKEOVER_BOUND);
    eprintln!("takeover after a freeze: {:?}", frozen.elapsed());
    wait_on(&setup.config, port_b);
    same(&c);

    // A resumes: it has changes it had seen as pending, but commits none of them.
    signal(&a, "-CONT");
    eventually(Duration::from_secs(30), "A to report standby", || {
        status_on(&setup.config, port_a)
            .is_some_and(|s| s["state"] == "standby" && s["lease"] == "waiting")
    });
    insert(&c, 100, 150);
    wait_on(&setup.config, port_b);
    same(&c);
    let sa = status_on(&setup.config, port_a).unwrap();
    assert_eq!(sa["rows_inserted"], applied_by_a, "A applied nothing: {sa}");
    eventually(
        Duration::from_secs(30),
        "A's status to name B as holder",
        || {
            status_on(&setup.config, port_a)
                .is_some_and(|s| s["lease_holder"]["pid"] == b.pid() as i64)
        },
    );
    a.stop();
    b.stop();
}

#[test]
fn copy_in_progress_when_the_lease_is_lost_does_not_commit() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE items (id int PRIMARY KEY, note text)");
        c.psql(db, "CREATE TABLE log (n int, note text)");
    }
    c.psql(
        "src",
        "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20000) g",
    );
    // Slows the copy on the target (even as a replica session) so it can be caught running.
    slow_inserts(&c, "items");
    let setup = one_way((&c, "src"), (&c, "dst"), &["items", "log"]);
    drover_ok(&setup.config, &["install"]);
    let (port_a, port_b) = (setup.listen, free_port());
    let mut a = start(&setup.config, port_a);
    eventually(Duration::from_secs(30), "A's copy to run", || {
        c.psql(
            "dst",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dst' AND query ILIKE 'COPY%' AND application_name LIKE 'drover%'",
        ) == "1"
    });
    signal(&a, "-STOP");
    fast_inserts(&c);
    let mut b = start(&setup.config, port_b);
    wait_lease(&setup.config, port_b, "held", Duration::from_secs(30));
    // A's frozen copy holds the progress row and the table; B ends A's sessions on the
    // target after the takeover, so its own copy lands while A is still frozen.
    eventually(TAKEOVER_BOUND, "B's copy to land while A is frozen", || {
        table_md5(&c, "src", "items", "id") == table_md5(&c, "dst", "items", "id")
    });
    wait_on(&setup.config, port_b);
    same(&c);
    // A resumes: its copy was rolled back by the server; it commits nothing.
    signal(&a, "-CONT");
    eventually(Duration::from_secs(30), "A to report standby", || {
        status_on(&setup.config, port_a).is_some_and(|s| s["state"] == "standby")
    });
    insert(&c, 30_000, 30_010);
    wait_on(&setup.config, port_b);
    same(&c);
    let (log_a, log_b) = (a.log(), b.log());
    assert!(
        !log_a.contains("initial copy finished"),
        "A's copy committed after it lost the lease:\n{log_a}"
    );
    assert!(
        log_a.contains("lease session lost"),
        "A did not notice the loss:\n{log_a}"
    );
    assert!(log_b.contains("initial copy finished"), "{log_b}");
    assert!(
        log_b.contains("ended the former holder's sessions"),
        "{log_b}"
    );
    a.stop();
    b.stop();
}

#[test]
fn round_in_flight_when_the_lease_is_lost_does_not_commit() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE items (id int PRIMARY KEY, note text); CREATE TABLE log (n int, note text)",
        );
    }
    // Slows the apply on the target so the holder can be frozen in the middle of a round.
    slow_inserts(&c, "log");
    let setup = one_way((&c, "src"), (&c, "dst"), &["items", "log"]);
    drover_ok(&setup.config, &["install"]);
    let (port_a, port_b) = (setup.listen, free_port());
    let mut a = start(&setup.config, port_a);
    wait_lease(&setup.config, port_a, "held", Duration::from_secs(30));
    c.psql(
        "src",
        "INSERT INTO log SELECT g, 'l' || g FROM generate_series(1, 10000) g",
    );
    eventually(
        Duration::from_secs(30),
        "A's round to run on the target",
        || {
            c.psql(
                "dst",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dst' AND state = 'active' \
             AND application_name LIKE 'drover%' AND query ILIKE '%log%'",
            ) != "0"
        },
    );
    signal(&a, "-STOP");
    fast_inserts(&c);
    let mut b = start(&setup.config, port_b);
    wait_lease(&setup.config, port_b, "held", Duration::from_secs(30));
    // A's frozen transaction holds the progress rows; B ends A's sessions on the target
    // after the takeover, so replication goes on while A is still frozen.
    eventually(
        TAKEOVER_BOUND,
        "B's round to land while A is frozen",
        || table_md5(&c, "src", "log", "n, note") == table_md5(&c, "dst", "log", "n, note"),
    );
    insert(&c, 0, 10);
    wait_on(&setup.config, port_b);
    same(&c);
    // A resumes: its round was rolled back by the server; it commits nothing.
    signal(&a, "-CONT");
    insert(&c, 10, 20);
    wait_on(&setup.config, port_b);
    same(&c);
    eventually(Duration::from_secs(30), "A to report standby", || {
        status_on(&setup.config, port_a).is_some_and(|s| s["state"] == "standby")
    });
    let sa = status_on(&setup.config, port_a).unwrap();
    assert_eq!(
        sa["rows_inserted"], 0,
        "A committed after it lost the lease: {sa}"
    );
    let (log_a, log_b) = (a.log(), b.log());
    assert!(
        log_a.contains("lease session lost"),
        "A did not notice the loss:\n{log_a}"
    );
    assert!(
        log_b.contains("ended the former holder's sessions"),
        "{log_b}"
    );
    a.stop();
    b.stop();
}
