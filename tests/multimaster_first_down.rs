//! Multi-master with its FIRST source down: that master holds the sync's lease and its round
//! gate, yet the daemon that held the lease keeps the other masters replicating among
//! themselves, and the first source catches up (both ways) when it returns. With a standby
//! daemon, exactly one daemon holds the lease after the return and nothing is applied twice.

mod support;

use std::path::Path;
use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLES: [(&str, &str); 4] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    // Key-less: a row applied twice would show as a second copy.
    ("pgbench_history", "md5_row_::text"),
];

fn md5s(c: &Cluster, db: &str) -> Vec<String> {
    TABLES.iter().map(|(t, k)| table_md5(c, db, t, k)).collect()
}

/// Three pgbench masters a (first source), b, c on their own clusters.
fn masters(dir: &Path) -> ([Cluster; 3], std::path::PathBuf, u16) {
    let clusters = [Cluster::start(), Cluster::start(), Cluster::start()];
    let names = ["a", "b", "c"];
    for (c, db) in clusters.iter().zip(names) {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let listen = free_port();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{listen}\"\n");
    for (c, db) in clusters.iter().zip(names) {
        toml.push_str(&c.database_toml(db, db));
    }
    toml.push_str(
        "[relgroups.herd]\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \
         \"public.pgbench_tellers\", \"public.pgbench_history\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let cfg = write_config(dir, &toml);
    drover_ok(&cfg, &["install"]);
    (clusters, cfg, listen)
}

fn signal(d: &Daemon, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &d.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} failed");
}

fn on(listen: u16) -> String {
    format!("127.0.0.1:{listen}")
}

fn start(cfg: &Path, listen: u16) -> Daemon {
    start_env(cfg, listen, &[])
}

fn start_env(cfg: &Path, listen: u16, env: &[(&str, &str)]) -> Daemon {
    let addr = on(listen);
    let mut all = vec![("DROVER__DAEMON__LISTEN", addr.as_str())];
    all.extend_from_slice(env);
    Daemon::start_with(cfg, &[], &all)
}

/// The sync's status from the daemon listening on `listen`.
fn status_on(cfg: &Path, listen: u16) -> Option<serde_json::Value> {
    let out = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(cfg)
        .args(["status", "--json"])
        .env("DROVER__DAEMON__LISTEN", on(listen))
        .output()
        .ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    doc["syncs"].get(0).cloned()
}

fn wait_on(cfg: &Path, listen: u16) {
    wait_sync(cfg, listen, "mm")
}

fn wait_sync(cfg: &Path, listen: u16, sync: &str) {
    let out = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(cfg)
        .args(["wait", sync, "--timeout", "120"])
        .env("DROVER__DAEMON__LISTEN", on(listen))
        .output()
        .expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The holder freezes (so no round reads a's last write), a writes and crashes, the holder
/// resumes; b and c then write and must converge while a is down.
fn first_source_goes_down(clusters: &[Cluster; 3], holder: &Daemon, cfg: &Path, listen: u16) {
    let [a, b, c] = clusters;
    signal(holder, "-STOP");
    a.psql(
        "a",
        "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (1000001, 1, 7, 'from a before its crash'); \
         UPDATE pgbench_branches SET filler = 'a' WHERE bid = 1; \
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1000001, 7, now());",
    );
    a.stop_immediate();
    signal(holder, "-CONT");
    let writers = [
        pgbench_in_background(b, "b", &["-n", "-c", "2", "-T", "15"]),
        pgbench_in_background(c, "c", &["-n", "-c", "2", "-T", "15"]),
    ];
    for w in writers {
        w.join().unwrap();
    }
    b.psql("b", "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (1000002, 1, 8, 'from b while a is down')");
    eventually(
        Duration::from_secs(60),
        "b and c to converge while a is down",
        || md5s(b, "b") == md5s(c, "c"),
    );
    let s = status_on(cfg, listen).expect("the holder answers status");
    eprintln!(
        "while a is down: state {}, lease {}, error {}, warnings {}",
        s["state"], s["lease"], s["last_error"], s["warnings"]
    );
    assert_ne!(s["state"], "good", "status shows the missing master: {s}");
    assert_eq!(s["lease"], "held", "the lease state stays held: {s}");
    assert!(
        s["warnings"].to_string().contains("first source"),
        "a warning says the first source is down: {s}"
    );
    assert!(
        s["last_error"].to_string().contains("\\\"a\\\""),
        "status names the down first source: {s}"
    );
}

/// After a returned: all three identical, with a's write from before its crash and b's from
/// during it on every master.
fn all_identical(clusters: &[Cluster; 3]) {
    let [a, b, c] = clusters;
    let first = md5s(a, "a");
    assert_eq!(first, md5s(b, "b"), "b differs from a");
    assert_eq!(first, md5s(c, "c"), "c differs from a");
    for (cl, db) in [(a, "a"), (b, "b"), (c, "c")] {
        let n = cl.psql(
            db,
            "SELECT count(*) FROM pgbench_accounts WHERE aid IN (1000001, 1000002)",
        );
        assert_eq!(
            n, "2",
            "{db} lacks a's write before its crash or b's during it"
        );
        let h = cl.psql(
            db,
            "SELECT count(*) FROM pgbench_history WHERE aid = 1000001",
        );
        assert_eq!(h, "1", "{db}: a's history row is there once");
    }
}

#[test]
fn the_others_go_on_while_the_first_source_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (clusters, cfg, listen) = masters(dir.path());
    let mut daemon = start(&cfg, listen);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);

    first_source_goes_down(&clusters, &daemon, &cfg, listen);

    clusters[0].restart();
    eventually(
        Duration::from_secs(60),
        "the lease to be taken again",
        || {
            status_on(&cfg, listen).is_some_and(|s| {
                s["lease"] == "held" && !s["warnings"].to_string().contains("first source")
            })
        },
    );
    wait_on(&cfg, listen);
    all_identical(&clusters);
    daemon.stop();
}

#[test]
fn with_a_standby_one_daemon_holds_the_lease_after_the_first_source_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (clusters, cfg, first) = masters(dir.path());
    let second = free_port();
    let mut holder = start(&cfg, first);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    let mut standby = start(&cfg, second);
    eventually(
        Duration::from_secs(30),
        "the second daemon to stand by",
        || status_on(&cfg, second).is_some_and(|s| s["state"] == "standby"),
    );

    first_source_goes_down(&clusters, &holder, &cfg, first);
    let s = status_on(&cfg, second).expect("the standby answers");
    assert_eq!(s["lease"], "waiting", "the standby cannot take it: {s}");

    clusters[0].restart();
    // Either daemon may take the lease once a is back; exactly one holds it.
    let holds = |listen: u16| status_on(&cfg, listen).is_some_and(|s| s["lease"] == "held");
    eventually(
        Duration::from_secs(60),
        "one daemon to hold the lease",
        || {
            let both = [holds(first), holds(second)];
            let free_of_note = [first, second].iter().all(|l| {
                status_on(&cfg, *l)
                    .is_some_and(|s| !s["warnings"].to_string().contains("first source"))
            });
            both.iter().filter(|h| **h).count() == 1 && free_of_note
        },
    );
    let running = if holds(first) { first } else { second };
    eprintln!("after a returned the lease is held on :{running}");
    wait_on(&cfg, running);
    all_identical(&clusters);
    let idle = if running == first { second } else { first };
    let s = status_on(&cfg, idle).expect("the other daemon answers");
    assert_eq!(s["state"], "standby", "the other daemon stands by: {s}");
    holder.stop();
    standby.stop();
}

/// A holder frozen (SIGSTOP) long enough for the server to end its lease session while a
/// standby takes over: when it resumes, its session ended but the first source answers, so it
/// does not go on as with a down first source: it finds the lease busy, stands by and commits
/// nothing.
#[test]
fn a_frozen_multi_master_holder_commits_nothing_after_a_takeover() {
    frozen_holder(Cluster::start());
}

/// Before PostgreSQL 14 the standby ends the silent holder's lease session itself.
#[test]
fn a_frozen_multi_master_holder_on_postgres_10_commits_nothing_after_a_takeover() {
    frozen_holder(support::versions::cluster(10));
}

fn frozen_holder(c: Cluster) {
    for db in ["a", "b"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE items (id int PRIMARY KEY, note text)");
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = sync_toml(&c, &["public.items"], "", &["a", "b"], &[]);
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let (first, second) = (free_port(), free_port());
    let fast = [("DROVER__DAEMON__LEASE_TIMEOUT", "3s")];
    let mut holder = start_env(&cfg, first, &fast);
    eventually(
        Duration::from_secs(30),
        "the first daemon to hold the lease",
        || status_on(&cfg, first).is_some_and(|s| s["lease"] == "held"),
    );
    let mut standby = start_env(&cfg, second, &fast);
    eventually(
        Duration::from_secs(30),
        "the second daemon to stand by",
        || status_on(&cfg, second).is_some_and(|s| s["state"] == "standby"),
    );
    let insert = |db: &str, from: i32, to: i32| {
        c.psql(
            db,
            &format!(
                "INSERT INTO items SELECT g, '{db}' || g FROM generate_series({from}, {to}) g"
            ),
        );
    };
    let same = || table_md5(&c, "a", "items", "id") == table_md5(&c, "b", "items", "id");
    insert("a", 1, 50);
    wait_sync(&cfg, first, "s");
    assert!(same());
    let applied = status_on(&cfg, first).unwrap()["rows_inserted"].clone();

    signal(&holder, "-STOP");
    insert("a", 51, 100);
    insert("b", 101, 150);
    eventually(Duration::from_secs(30), "the standby to take over", || {
        status_on(&cfg, second).is_some_and(|s| s["lease"] == "held")
    });
    wait_sync(&cfg, second, "s");
    assert!(same(), "a and b differ after the takeover");

    signal(&holder, "-CONT");
    eventually(
        Duration::from_secs(30),
        "the resumed holder to stand by",
        || {
            status_on(&cfg, first)
                .is_some_and(|s| s["state"] == "standby" && s["lease"] == "waiting")
        },
    );
    insert("a", 151, 200);
    insert("b", 201, 250);
    wait_sync(&cfg, second, "s");
    assert!(same(), "a and b differ after the resume");
    assert_eq!(
        table_md5(&c, "a", "items", "id").split(':').next(),
        Some("250")
    );
    let s = status_on(&cfg, first).unwrap();
    assert_eq!(
        s["rows_inserted"], applied,
        "the resumed holder applied nothing: {s}"
    );
    assert!(
        s["warnings"].to_string().find("first source").is_none(),
        "{s}"
    );
    let log = holder.log();
    assert!(
        log.contains("lease taken by another daemon while this one held it"),
        "the resumed holder checked the lease and found it taken: {log}"
    );
    holder.stop();
    standby.stop();
}

/// A sync paused before its first source went down stays paused: the stored pause cannot be
/// read meanwhile, so the last state seen holds; after the return a resume applies everything.
#[test]
fn a_paused_sync_stays_paused_while_the_first_source_is_down() {
    let (x, y) = (Cluster::start(), Cluster::start());
    let at = [(&x, "a"), (&y, "b"), (&y, "c")];
    let listen = free_port();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{listen}\"\n");
    for (cl, db) in at {
        cl.create_db(db);
        cl.psql(db, "CREATE TABLE items (id int PRIMARY KEY, note text)");
        toml.push_str(&cl.database_toml(db, db));
    }
    toml.push_str(
        "[relgroups.g]\ntables = [\"public.items\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\", \"c\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = start(&cfg, listen);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 60);
    drover_ok(&cfg, &["pause", "mm"]);
    eventually(
        Duration::from_secs(30),
        "the daemon to see the pause",
        || sync_status(&cfg, "mm")["paused"] == true,
    );
    x.stop_immediate();
    eventually(
        Duration::from_secs(30),
        "the daemon to go on without a",
        || {
            sync_status(&cfg, "mm")["warnings"]
                .to_string()
                .contains("first source")
        },
    );
    y.psql(
        "b",
        "INSERT INTO items VALUES (1, 'from b while a is down')",
    );
    // Several lease retries (2 s apart) pass, each a chance for a round to run.
    let retries = |log: &str| log.matches("cannot take the sync lease").count();
    let before = retries(&daemon.log());
    eventually(Duration::from_secs(30), "three more lease retries", || {
        retries(&daemon.log()) >= before + 3
    });
    let s = sync_status(&cfg, "mm");
    assert_eq!(s["paused"], true, "still paused: {s}");
    assert_eq!(
        y.psql("c", "SELECT count(*) FROM items"),
        "0",
        "a paused sync applied b's row to c: {s}"
    );

    x.restart();
    eventually(
        Duration::from_secs(60),
        "the lease to be taken again",
        || {
            !sync_status(&cfg, "mm")["warnings"]
                .to_string()
                .contains("first source")
        },
    );
    drover_ok(&cfg, &["resume", "mm"]);
    drover_wait(&cfg, "mm", 60);
    let want = table_md5(&y, "b", "items", "id");
    assert!(want.starts_with("1:"), "{want}");
    assert_eq!(table_md5(&x, "a", "items", "id"), want);
    assert_eq!(table_md5(&y, "c", "items", "id"), want);
    daemon.stop();
}
