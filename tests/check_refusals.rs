//! What `check` and `run` refuse (issue 10 item 9): configured keys whose columns may be NULL
//! (a NULL key never matches), named with database, table, column and the fix; and chains
//! (a database receiving a table from one sync and sending it in another), a config problem.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const PROBLEM: &str = "database \"dst\": table public.conf: configured key column \"y\" may be \
     NULL: make it NOT NULL, or choose other key columns under [relgroups.*.keys]";

#[test]
fn nullable_configured_key_is_refused_by_check_and_daemon() {
    let c = Cluster::start();
    c.create_db("src");
    c.create_db("dst");
    c.psql(
        "src",
        "CREATE TABLE conf (x text NOT NULL, y int NOT NULL, v text)",
    );
    c.psql("dst", "CREATE TABLE conf (x text NOT NULL, y int, v text)");
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"conf\"]\n\
         [relgroups.g.keys]\n\"public.conf\" = [\"x\", \"y\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);

    let out = drover(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("  - {PROBLEM}")), "{text}");
    assert!(text.contains("  public.conf: PROBLEM"), "{text}");

    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    eventually(
        Duration::from_secs(30),
        "the sync to report the key",
        || {
            let s = sync_status(&cfg, "s");
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(PROBLEM))
                && s["state"] != "good"
        },
    );
    daemon.stop();

    c.psql("dst", "ALTER TABLE conf ALTER y SET NOT NULL");
    let check = drover_ok(&cfg, &["check"]);
    assert!(
        check.contains("  public.conf: ok, configured key (x, y)"),
        "{check}"
    );
}

/// b receives t from sync ab and is its source in sync bc: both commands refuse the config
/// (exit 2) before connecting, naming both syncs, the database and the table.
#[test]
fn chain_is_a_config_problem_for_check_and_run() {
    let dbs: String = ["a", "b", "c"]
        .iter()
        .map(|d| {
            format!(
                "[databases.{d}]\nhost = \"127.0.0.1\"\ndbname = \"{d}\"\nuser = \"postgres\"\n"
            )
        })
        .collect();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{dbs}[relgroups.g]\ntables = [\"t\"]\n\
         [syncs.ab]\nrelgroup = \"g\"\nsources = [\"a\"]\ntargets = [\"b\"]\n\
         [syncs.bc]\nrelgroup = \"g\"\nsources = [\"b\"]\ntargets = [\"c\"]\n",
        free_port()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &toml);
    for command in ["check", "run"] {
        let out = drover(&cfg, &[command]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "syncs.bc.sources[0]: database \"b\" receives table public.t from sync \"ab\" \
                 and is its source in sync \"bc\""
            ) && stderr.contains("cascading replication"),
            "{command}: {stderr}"
        );
    }
}
