//! The HTTP API on `daemon.listen` against real clusters: `/health` naming bad syncs, `/status`
//! and its contract fields, pause/resume/kick, bearer-token enforcement (and the refusal to
//! listen beyond loopback without one), `drover copy` delegated to the running daemon, and
//! JSON log lines that never carry a password.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::scenario::*;
use support::*;

const SYNC: &str = "legacy_to_new";
const TOKEN_ENV: &str = "DROVER_TEST_TOKEN";
const TOKEN: &str = "t0ken-Fnord-4711";

/// `curl` to 127.0.0.1:`port`: (status code, body).
fn http(port: u16, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}"]);
    // What the CLI sends; without it a POST is refused as a possible cross-site request.
    cmd.args(["-H", "X-Drover-Request: 1"]);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("Authorization: {a}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The status object of `SYNC` from `GET /status?sync=`.
fn api_status(port: u16) -> Value {
    let (code, body) = http(port, "GET", &format!("/status?sync={SYNC}"), None);
    assert_eq!(code, 200, "GET /status?sync={SYNC}: {body}");
    let doc: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let syncs = doc["syncs"].as_array().expect("syncs array");
    assert_eq!(syncs.len(), 1, "{body}");
    syncs[0].clone()
}

/// Waits until the daemon answers `/health` (no CLI: it may need a token).
fn wait_for_http(port: u16) {
    eventually(
        Duration::from_secs(30),
        "the daemon to answer /health",
        || http(port, "GET", "/health", None).0 == 200,
    );
}

/// `drover --config CFG ARGS` with extra environment variables.
fn drover_env(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config").arg(cfg).args(args);
    cmd.envs(env.iter().copied());
    run_with_timeout(&mut cmd, None, DROVER_TIMEOUT)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `items` with the same 20 rows in `src` and `dst` of `c`, synced one way.
fn small_pair(c: &Cluster) -> Setup {
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE items (id int PRIMARY KEY, note text); \
             INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;",
        );
    }
    one_way((c, "src"), (c, "dst"), &["public.items"])
}

fn items_same(c: &Cluster) {
    assert_eq!(
        table_md5(c, "src", "items", "id"),
        table_md5(c, "dst", "items", "id"),
        "items differs between src and dst"
    );
}

/// Puts `line` right after `[daemon]` in the config (and returns the new path).
fn with_daemon_key(setup: &Setup, line: &str) -> std::path::PathBuf {
    let toml = std::fs::read_to_string(&setup.config).expect("read config");
    let toml = toml.replacen("[daemon]\n", &format!("[daemon]\n{line}\n"), 1);
    write_config(setup.dir.path(), &toml)
}

#[test]
fn health_names_a_bad_sync_and_recovers() {
    let src = Cluster::start();
    let dst = Cluster::start();
    for c in [&src, &dst] {
        c.create_db("repdb");
        c.psql(
            "repdb",
            "CREATE TABLE items (id int PRIMARY KEY, note text); \
             INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;",
        );
    }
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &["public.items"]);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    eventually(Duration::from_secs(30), "the sync to be good", || {
        api_status(setup.listen)["state"] == "good"
    });
    assert_eq!(
        http(setup.listen, "GET", "/health", None),
        (200, "ok\n".to_string())
    );

    dst.stop_immediate();
    src.psql(
        "repdb",
        "UPDATE items SET note = 'while down' WHERE id <= 5",
    );
    let mut last = (0, String::new());
    eventually(
        Duration::from_secs(30),
        "/health to name the bad sync",
        || {
            last = http(setup.listen, "GET", "/health", None);
            last.1.contains(SYNC)
        },
    );
    assert_eq!(last.0, 200, "/health answers 200 while a sync is bad");
    assert!(last.1.starts_with("ok; bad syncs:"), "{}", last.1);
    assert_eq!(api_status(setup.listen)["state"], "bad");

    dst.restart();
    drover_wait(&setup.config, SYNC, 120);
    eventually(Duration::from_secs(60), "/health to be ok again", || {
        http(setup.listen, "GET", "/health", None) == (200, "ok\n".to_string())
    });
    assert_eq!(
        table_md5(&src, "repdb", "items", "id"),
        table_md5(&dst, "repdb", "items", "id")
    );
    assert!(daemon.is_running());
    daemon.stop();
}

#[test]
fn status_pause_resume_and_kick() {
    let c = Cluster::start();
    let setup = small_pair(&c);
    let port = setup.listen;
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);

    // GET /status: the whole document, one sync, every contract field and the added ones.
    c.psql(
        "src",
        "INSERT INTO items SELECT g, 'x' FROM generate_series(21, 25) g; \
         UPDATE items SET note = 'u' WHERE id IN (1, 2);",
    );
    drover_wait(&setup.config, SYNC, 60);
    items_same(&c);
    // 5 inserts and 2 updates (one delete and one insert each).
    eventually(Duration::from_secs(10), "the counters to reach 7/2", || {
        let s = api_status(port);
        s["rows_inserted"] == 7 && s["rows_deleted"] == 2
    });
    let (code, body) = http(port, "GET", "/status", None);
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("GET /status is JSON");
    let syncs = doc["syncs"].as_array().expect("syncs");
    assert_eq!(syncs.len(), 1, "{body}");
    let s = &syncs[0];
    for key in [
        "name",
        "state",
        "last_good",
        "last_bad",
        "last_error",
        "rows_inserted",
        "rows_deleted",
        "conflicts",
        "lag_seconds",
        "pending_rows",
        "lease",
        "relgroup",
        "sources",
        "targets",
        "tables",
        "rounds",
        "last_round_ms",
        "paused",
        "copy",
        "copy_runs",
    ] {
        assert!(s.get(key).is_some(), "status lacks {key}: {s}");
    }
    assert_eq!(s["name"], SYNC);
    assert_eq!(s["state"], "good");
    assert!(s["last_good"].is_string(), "{s}");
    assert!(s["last_bad"].is_null() && s["last_error"].is_null(), "{s}");
    assert_eq!(s["conflicts"], 0);
    assert_eq!(s["lease"], "held");
    assert_eq!(s["relgroup"], "herd");
    assert_eq!(s["sources"], serde_json::json!(["legacy"]));
    assert_eq!(s["targets"], serde_json::json!(["new"]));
    // Each table's actor keeps its own counters and key method.
    let tables = s["table_states"].as_array().expect("table_states");
    let items = tables
        .iter()
        .find(|t| t["table"] == "public.items")
        .unwrap_or_else(|| panic!("no public.items in {s}"));
    assert_eq!(items["key_method"], "key", "{items}");
    assert_eq!(items["key"], serde_json::json!(["id"]), "{items}");
    assert_eq!(items["rows_inserted"], 7, "{items}");
    assert_eq!(items["rows_deleted"], 2, "{items}");
    assert!(items["last_applied"].is_string(), "{items}");
    assert_eq!(s["tables"], 1);
    assert_eq!(s["paused"], false);
    assert!(s["rounds"].as_u64().unwrap() >= 1, "{s}");
    // The CLI prints the same document.
    assert_eq!(status_json(&setup.config)["syncs"][0]["name"], SYNC);

    let (code, body) = http(port, "GET", "/status?sync=nope", None);
    assert_eq!(code, 404, "{body}");
    assert_eq!(http(port, "GET", "/nope", None).0, 404);
    for action in ["kick", "pause", "resume", "copy"] {
        let (code, body) = http(port, "POST", &format!("/syncs/nope/{action}"), None);
        assert_eq!(code, 404, "POST /syncs/nope/{action}: {body}");
    }
    assert_eq!(
        http(port, "POST", &format!("/syncs/{SYNC}/kick"), None),
        (202, "kicked\n".to_string())
    );

    // Pause: once the status says so and no round is in flight, changes stay on the source.
    assert_eq!(
        http(port, "POST", &format!("/syncs/{SYNC}/pause"), None),
        (202, "paused\n".to_string())
    );
    eventually(Duration::from_secs(10), "paused = true", || {
        api_status(port)["paused"] == true
    });
    // A round started before the pause may still finish: wait until `rounds` stands still.
    let mut rounds = api_status(port)["rounds"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "rounds to stand still", || {
        thread::sleep(Duration::from_millis(300));
        let now = api_status(port)["rounds"].as_u64().unwrap();
        std::mem::replace(&mut rounds, now) == now
    });
    c.psql("src", "UPDATE items SET note = 'after pause' WHERE id = 3");
    // Kicks (HTTP and CLI) are accepted but run nothing while paused.
    assert_eq!(
        http(port, "POST", &format!("/syncs/{SYNC}/kick"), None).0,
        202
    );
    drover_ok(&setup.config, &["kick", SYNC]);
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(250));
        assert_eq!(c.psql("dst", "SELECT note FROM items WHERE id = 3"), "n3");
        let s = api_status(port);
        assert_eq!(s["paused"], true);
        assert_eq!(
            s["rounds"].as_u64().unwrap(),
            rounds,
            "a round ran while paused"
        );
    }
    let wait = drover(&setup.config, &["wait", SYNC, "--timeout", "1"]);
    assert_eq!(
        wait.status.code(),
        Some(1),
        "wait must time out while paused: {}",
        text(&wait)
    );
    assert_eq!(c.psql("dst", "SELECT note FROM items WHERE id = 3"), "n3");

    // Resume: the change arrives.
    assert_eq!(
        http(port, "POST", &format!("/syncs/{SYNC}/resume"), None),
        (202, "resumed\n".to_string())
    );
    drover_wait(&setup.config, SYNC, 60);
    assert_eq!(
        c.psql("dst", "SELECT note FROM items WHERE id = 3"),
        "after pause"
    );
    items_same(&c);
    let s = api_status(port);
    assert_eq!(s["paused"], false);
    assert!(s["rounds"].as_u64().unwrap() > rounds, "{s}");
    daemon.stop();
}

#[test]
fn post_endpoints_require_the_token_when_one_is_configured() {
    let c = Cluster::start();
    let setup = small_pair(&c);
    let port = setup.listen;
    let cfg = with_daemon_key(&setup, &format!("api_token_env = \"{TOKEN_ENV}\""));
    let env = [(TOKEN_ENV, TOKEN)];
    let install = drover_env(&cfg, &["install"], &env);
    assert!(install.status.success(), "{}", text(&install));
    let mut daemon = Daemon::start_with(&cfg, &[], &env);
    wait_for_http(port);

    let kick = format!("/syncs/{SYNC}/kick");
    let pause = format!("/syncs/{SYNC}/pause");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(http(port, "POST", &kick, None).0, 401);
    assert_eq!(http(port, "POST", &kick, Some("Bearer wrong")).0, 401);
    assert_eq!(http(port, "POST", &kick, Some(TOKEN)).0, 401, "no Bearer");
    let (code, body) = http(port, "POST", &pause, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("daemon.api_token"), "{body}");
    assert_eq!(http(port, "POST", "/syncs/nope/kick", None).0, 401);
    // The refused pause did nothing.
    assert_eq!(api_status(port)["paused"], false);
    assert_eq!(
        http(port, "POST", &kick, Some(&bearer)),
        (202, "kicked\n".to_string())
    );
    assert_eq!(http(port, "POST", "/syncs/nope/kick", Some(&bearer)).0, 404);
    assert_eq!(http(port, "GET", "/status", None).0, 200);
    let (code, metrics) = http(port, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(metrics.contains("drover_build_info"), "{metrics}");

    // The CLI sends the token from the same environment variable.
    let out = drover_env(&cfg, &["kick", SYNC], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Kicked sync legacy_to_new"),
        "{}",
        text(&out)
    );
    let out = drover_env(&cfg, &["status", "--json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(doc["syncs"][0]["name"], SYNC);
    // Without the variable the CLI says which key it needs.
    let out = drover_env(&cfg, &["kick", SYNC], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(TOKEN_ENV), "{}", text(&out));

    // The API still drives the sync: a change arrives after an authorized kick.
    c.psql("src", "UPDATE items SET note = 'tok' WHERE id = 7");
    let out = drover_env(&cfg, &["wait", SYNC, "--timeout", "60"], &env);
    assert!(out.status.success(), "{}", text(&out));
    items_same(&c);
    daemon.stop();
    assert!(
        !daemon.log().contains(TOKEN),
        "the token appears in the log"
    );
}

#[test]
fn non_loopback_listen_needs_a_token() {
    let c = Cluster::start();
    let setup = small_pair(&c);
    let port = setup.listen;
    drover_ok(&setup.config, &["install"]);
    let toml = std::fs::read_to_string(&setup.config)
        .expect("read config")
        .replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = \"0.0.0.0:{port}\""),
        );
    let open = write_config(setup.dir.path(), &toml);

    let check = drover(&open, &["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(
        text(&check).contains("daemon.api_token"),
        "{}",
        text(&check)
    );
    let mut refused = Daemon::start(&open);
    let status = refused.wait_for_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{}", refused.log());
    assert!(
        refused.log().contains("daemon.api_token"),
        "{}",
        refused.log()
    );
    assert!(
        refused.log().contains("is not a loopback address"),
        "{}",
        refused.log()
    );
    assert_ne!(http(port, "GET", "/health", None).0, 200, "nothing listens");

    let toml = toml.replacen(
        "[daemon]\n",
        &format!("[daemon]\napi_token = \"{TOKEN}\"\n"),
        1,
    );
    let guarded = write_config(setup.dir.path(), &toml);
    let mut daemon = Daemon::start(&guarded);
    wait_for_http(port);
    let kick = format!("/syncs/{SYNC}/kick");
    assert_eq!(http(port, "POST", &kick, None).0, 401);
    assert_eq!(
        http(port, "POST", &format!("/syncs/{SYNC}/pause"), None).0,
        401
    );
    assert_eq!(
        http(port, "POST", &kick, Some(&format!("Bearer {TOKEN}"))).0,
        202
    );
    assert_eq!(api_status(port)["paused"], false);
    c.psql("src", "DELETE FROM items WHERE id = 4");
    drover_wait(&guarded, SYNC, 60);
    items_same(&c);
    daemon.stop();
    assert!(
        !daemon.log().contains(TOKEN),
        "the token appears in the log"
    );
}

#[test]
fn copy_is_delegated_to_the_running_daemon() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let mut daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    let before = api_status(setup.listen)["copy_runs"].as_u64().unwrap();

    // The target loses its rows behind drover's back.
    dst.psql(
        "repdb",
        "TRUNCATE pgbench_accounts, pgbench_branches, pgbench_tellers",
    );
    assert_ne!(
        table_md5(&src, "repdb", "pgbench_accounts", "aid"),
        table_md5(&dst, "repdb", "pgbench_accounts", "aid")
    );
    let out = drover(&setup.config, &["copy", SYNC]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("a daemon runs sync legacy_to_new"),
        "{}",
        text(&out)
    );
    assert_pgbench_same(&src, &dst);

    let s = api_status(setup.listen);
    assert!(s["copy_runs"].as_u64().unwrap() > before, "{s}");
    let board = s["copy"].as_array().expect("copy list");
    for t in PGBENCH_TABLES {
        let entry = board
            .iter()
            .find(|e| e["table"] == t && e["target"] == "new")
            .unwrap_or_else(|| panic!("no copy entry for {t}: {s}"));
        assert_eq!(entry["state"], "done", "{entry}");
    }
    let accounts = board
        .iter()
        .find(|e| e["table"] == "public.pgbench_accounts")
        .unwrap();
    assert_eq!(accounts["rows_copied"], 100_000);

    // Replication continues from the copy's snapshot.
    src.pgbench("repdb", &["-t", "200", "-n"]);
    drover_wait(&setup.config, SYNC, 120);
    assert_pgbench_same(&src, &dst);
    assert_eq!(api_status(setup.listen)["state"], "good");
    daemon.stop();
}

#[test]
fn json_logs_name_the_round_and_never_the_password() {
    const SECRET: &str = "s3cr3t-Pa55-plover";
    let c = Cluster::start_with(ClusterOptions {
        hba_lines: vec!["host all app 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    c.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{SECRET}'"),
    );
    for db in ["src", "dst"] {
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        c.psql(
            db,
            "SET ROLE app; CREATE TABLE items (id int PRIMARY KEY, note text);",
        );
    }
    let listen = free_port();
    let db = |name: &str| {
        format!(
            "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\n\
             user = \"app\"\npassword = \"{SECRET}\"\n",
            c.port
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:{listen}\"\nlog_format = \"json\"\n{}{}\
             [relgroups.g]\ntables = [\"items\"]\n\
             [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n",
            db("src"),
            db("dst")
        ),
    );
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start_with(&cfg, &[], &[("RUST_LOG", "debug")]);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g",
    );
    drover_ok(&cfg, &["wait", "s", "--timeout", "60"]);
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );

    // Every line is a JSON object; the round lines of sync s add up to the 100 inserts.
    let inserted_logged = |log: &str| -> u64 {
        let mut sum = 0;
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "log line is not an object: {line}");
            let fields = v.get("fields").unwrap_or(&v);
            if fields["message"] == "round applied changes" && fields["sync"] == "s" {
                sum += fields["inserted"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("inserted is not a number: {line}"));
            }
        }
        sum
    };
    eventually(
        Duration::from_secs(10),
        "round lines for 100 inserts",
        || inserted_logged(&daemon.log()) == 100,
    );
    daemon.stop();
    let log = daemon.log();
    inserted_logged(&log);
    assert!(log.lines().count() > 3, "too few log lines:\n{log}");
    assert!(!log.contains(SECRET), "the password appears in the log");
}
