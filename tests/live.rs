//! Live configuration (issue 14): SIGHUP and `drover reload` re-read the config while the
//! daemon runs; a stored pause (`drover pause` / `drover resume`) survives restarts;
//! `drover kick --wait` returns once a round started after the call is applied.

mod support;

use std::path::Path;
use std::time::Duration;

use support::scenario::*;
use support::*;

const SMALL: &str = "CREATE TABLE extra (id int PRIMARY KEY, v text NOT NULL); \
                     CREATE TABLE side (id int PRIMARY KEY, v text NOT NULL);";

/// `src` with pgbench and two quiet tables, all dumped to `dst`.
fn pgbench_cluster() -> Cluster {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
    }
    c.pgbench("src", &["-i", "-s", "1", "-q"]);
    c.psql("src", SMALL);
    dump_into(&c, "src", &c, "dst", false);
    c
}

/// A config: sync `main` of `tables` from src to dst, plus sync `sidecar` (table `side`)
/// when `with_sidecar`.
fn config_text(c: &Cluster, listen: u16, tables: &[&str], with_sidecar: bool) -> String {
    config_with(c, listen, "", tables, with_sidecar)
}

/// As `config_text`, with extra `[daemon]` lines.
fn config_with(
    c: &Cluster,
    listen: u16,
    daemon: &str,
    tables: &[&str],
    with_sidecar: bool,
) -> String {
    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\n{daemon}{}{}[relgroups.herd]\ntables = [{}]\n\
         [syncs.main]\nrelgroup = \"herd\"\nsources = [\"legacy\"]\ntargets = [\"new\"]\n",
        c.database_toml("legacy", "src"),
        c.database_toml("new", "dst"),
        list.join(", ")
    );
    if with_sidecar {
        toml.push_str(
            "[relgroups.sidegroup]\ntables = [\"public.side\"]\n\
             [syncs.sidecar]\nrelgroup = \"sidegroup\"\nsources = [\"legacy\"]\ntargets = [\"new\"]\n",
        );
    }
    toml
}

fn same(c: &Cluster, table: &str, key: &str) {
    assert_eq!(
        table_md5(c, "src", table, key),
        table_md5(c, "dst", table, key),
        "{table} differs between src and dst"
    );
}

fn hup(daemon: &Daemon) {
    let out = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .output()
        .expect("run kill");
    assert!(out.status.success(), "kill -HUP failed");
}

#[test]
fn sighup_leaves_the_daemon_running() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let toml = config_text(&c, listen, &["public.extra"], false);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    hup(&daemon);
    c.psql("src", "INSERT INTO extra VALUES (1, 'after hup')");
    drover_wait(&cfg, "main", 60);
    same(&c, "extra", "id");
    assert!(
        daemon.is_running(),
        "SIGHUP stopped the daemon: {}",
        daemon.log()
    );
    daemon.stop();
}

#[test]
fn reload_adds_a_table_and_a_sync_under_pgbench() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let before = config_text(&c, listen, &PGBENCH_TABLES, false);
    let (cfg, mut daemon) = install_and_run(dir.path(), &before);
    drover_wait(&cfg, "main", 60);
    let load = pgbench_in_background(&c, "src", &["-n", "-c", "2", "-R", "100", "-T", "8"]);

    let mut tables: Vec<&str> = PGBENCH_TABLES.to_vec();
    tables.push("public.extra");
    write_config(dir.path(), &config_text(&c, listen, &tables, true));
    drover_ok(&cfg, &["install"]);
    let out = drover_ok(&cfg, &["reload"]);
    assert!(
        out.contains("sidecar"),
        "reload output names the new sync: {out}"
    );
    c.psql(
        "src",
        "INSERT INTO extra SELECT g, 'e' || g FROM generate_series(1, 50) g",
    );
    c.psql(
        "src",
        "INSERT INTO side SELECT g, 's' || g FROM generate_series(1, 50) g",
    );
    load.join().expect("pgbench");

    drover_wait(&cfg, "main", 60);
    drover_wait(&cfg, "sidecar", 60);
    assert_pgbench_tables_same(&c);
    same(&c, "extra", "id");
    same(&c, "side", "id");
    assert_eq!(sync_status(&cfg, "sidecar")["tables"], 1);
    assert!(daemon.is_running(), "the daemon exited: {}", daemon.log());
    daemon.stop();
}

fn assert_pgbench_tables_same(c: &Cluster) {
    for (t, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
    ] {
        same(c, t, key);
    }
}

#[test]
fn a_broken_config_is_rejected_and_the_old_one_keeps_replicating() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let good = config_text(&c, listen, &["public.extra"], false);
    let (cfg, mut daemon) = install_and_run(dir.path(), &good);
    let keep = dir.path().join("good.toml");
    std::fs::write(&keep, &good).expect("write good copy");

    let broken = good.replace("relgroup = \"herd\"", "relgroup = \"no_such_group\"");
    write_config(dir.path(), &broken);
    let out = drover(&cfg, &["reload"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "reload of a broken config exits 2"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_group"), "the problem is named: {err}");
    hup(&daemon);
    eventually(
        Duration::from_secs(10),
        "the daemon to log the rejection",
        || daemon.log().contains("reload rejected"),
    );
    assert!(daemon.log().contains("no_such_group"), "{}", daemon.log());

    c.psql("src", "INSERT INTO extra VALUES (7, 'still replicating')");
    drover_wait(&keep, "main", 60);
    same(&c, "extra", "id");
    assert!(daemon.is_running(), "the daemon exited: {}", daemon.log());
    daemon.stop();
}

fn paused(cfg: &Path) -> serde_json::Value {
    sync_status(cfg, "main")
}

#[test]
fn a_pause_survives_a_restart_and_kick_wait_applies_after_resume() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let toml = config_text(&c, listen, &["public.extra"], false);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    drover_wait(&cfg, "main", 60);

    drover_ok(&cfg, &["pause", "main", "--reason", "maintenance"]);
    eventually(Duration::from_secs(10), "status to show the pause", || {
        paused(&cfg)["state"] == "paused"
    });
    let s = paused(&cfg);
    assert_eq!(s["paused"], true);
    assert_eq!(s["pause_reason"], "maintenance");
    assert!(
        s["paused_by"]
            .as_str()
            .unwrap_or("")
            .contains("drover pause"),
        "{s}"
    );
    assert!(s["paused_at"].is_string(), "{s}");

    c.psql("src", "INSERT INTO extra VALUES (1, 'held back')");
    daemon.stop();
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    eventually(
        Duration::from_secs(20),
        "the restarted daemon to honour the pause",
        || paused(&cfg)["state"] == "paused",
    );
    assert_eq!(c.psql("dst", "SELECT count(*) FROM extra"), "0");
    let out = drover(&cfg, &["kick", "main", "--wait", "--timeout", "5"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kick --wait on a paused sync fails"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paused"), "{err}");

    drover_ok(&cfg, &["resume", "main"]);
    c.psql("src", "INSERT INTO extra VALUES (2, 'after resume')");
    drover_ok(&cfg, &["kick", "main", "--wait", "--timeout", "60"]);
    same(&c, "extra", "id");
    assert_eq!(paused(&cfg)["paused"], false);
    assert_eq!(c.psql("src", "SELECT count(*) FROM drover.sync_pause"), "0");
    daemon.stop();
}

#[test]
fn a_pause_written_while_the_daemon_is_down_is_honoured_at_start() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let cfg = write_config(
        dir.path(),
        &config_text(&c, listen, &["public.extra"], false),
    );
    drover_ok(&cfg, &["install"]);
    let out = drover_ok(&cfg, &["pause", "main"]);
    assert!(
        out.contains("no daemon"),
        "pause says no daemon was told: {out}"
    );
    c.psql("src", "INSERT INTO extra VALUES (1, 'held back')");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    eventually(
        Duration::from_secs(20),
        "the daemon to start paused",
        || paused(&cfg)["state"] == "paused",
    );
    assert_eq!(c.psql("dst", "SELECT count(*) FROM extra"), "0");
    drover_ok(&cfg, &["resume", "main"]);
    drover_ok(&cfg, &["kick", "main", "--wait", "--timeout", "60"]);
    same(&c, "extra", "id");
    daemon.stop();
}

/// Sessions of a sync's lease on `src` (0 once its actor stopped).
fn lease_sessions(c: &Cluster, sync: &str) -> String {
    c.psql(
        "src",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drover:{sync}:lease%'"
        ),
    )
}

#[test]
fn reload_stops_a_removed_sync_and_auto_install_captures_a_new_table() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let auto = "auto_install = true\n";
    let before = config_with(&c, listen, auto, &["public.pgbench_branches"], true);
    let (cfg, mut daemon) = install_and_run(dir.path(), &before);
    drover_wait(&cfg, "sidecar", 60);
    eventually(Duration::from_secs(20), "the sidecar lease", || {
        lease_sessions(&c, "sidecar") == "1"
    });

    // No `drover install`: the daemon installs the new table itself.
    let after = config_with(
        &c,
        listen,
        auto,
        &["public.pgbench_branches", "public.extra"],
        false,
    );
    write_config(dir.path(), &after);
    let out = drover_ok(&cfg, &["reload"]);
    assert!(out.contains("stopped: sidecar"), "{out}");
    assert!(out.contains("restarted: main"), "{out}");
    eventually(Duration::from_secs(20), "the sidecar lease to end", || {
        lease_sessions(&c, "sidecar") == "0"
    });
    let names: Vec<String> = status_json(&cfg)["syncs"]
        .as_array()
        .expect("syncs")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["main"]);
    c.psql(
        "src",
        "INSERT INTO extra VALUES (1, 'captured by auto_install')",
    );
    drover_ok(&cfg, &["kick", "main", "--wait", "--timeout", "60"]);
    same(&c, "extra", "id");
    assert!(daemon.is_running(), "the daemon exited: {}", daemon.log());
    daemon.stop();
}

/// `curl -X POST` as the CLI sends it: (status code, body).
fn post(port: u16, path: &str) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        "-H",
        "X-Drover-Request: 1",
    ]);
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_http_pause_endpoint_stores_the_pause() {
    let c = pgbench_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let toml = config_text(&c, listen, &["public.extra"], false);
    let (cfg, mut daemon) = install_and_run(dir.path(), &toml);
    assert_eq!(post(listen, "/syncs/main/pause").0, 202);
    let by = c.psql(
        "src",
        "SELECT paused_by FROM drover.sync_pause WHERE sync = 'main'",
    );
    assert!(by.contains("drover API"), "{by}");
    eventually(Duration::from_secs(10), "state paused", || {
        paused(&cfg)["state"] == "paused"
    });
    assert_eq!(post(listen, "/syncs/main/resume").0, 202);
    assert_eq!(c.psql("src", "SELECT count(*) FROM drover.sync_pause"), "0");
    c.psql("src", "INSERT INTO extra VALUES (3, 'after resume')");
    drover_ok(&cfg, &["kick", "main", "--wait", "--timeout", "60"]);
    same(&c, "extra", "id");
    daemon.stop();
}
