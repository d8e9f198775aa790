//! Passwords (config, password_env, ~/.pgpass via PGPASSFILE) against scram-sha-256, a
//! non-superuser that owns its tables (no session_replication_role: the drover.origin guard
//! path), and no secret in output, logs, status or metrics.

mod support;

use std::process::Command;

use support::scenario::*;
use support::*;

const SECRET: &str = "s3cr3t-Pa55-xyzzy";

fn cluster() -> Cluster {
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
    c
}

fn config(c: &Cluster, listen: u16, auth: &str) -> String {
    let db = |name: &str| {
        format!(
            "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"app\"\n{auth}\n",
            c.port
        )
    };
    format!(
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\n{}{}[relgroups.g]\ntables = [\"items\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n",
        db("src"),
        db("dst")
    )
}

fn run(cfg: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config").arg(cfg).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run drover")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn password_env_non_superuser_and_no_secret_anywhere() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let cfg = write_config(dir.path(), &config(&c, listen, "password_env = \"APP_PW\""));
    let env = [("APP_PW", SECRET)];

    let check = run(&cfg, &["check"], &env);
    let out = text(&check);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("session_replication_role: no"), "{out}");
    assert!(out.contains("drover.origin guard only"), "{out}");
    let install = run(&cfg, &["install"], &env);
    assert!(install.status.success(), "{}", text(&install));

    let mut daemon = Daemon::start_with(&cfg, &[], &[("APP_PW", SECRET), ("RUST_LOG", "debug")]);
    wait_for_daemon(&cfg);
    c.psql("src", "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g; UPDATE items SET note = 'u' WHERE id < 10; DELETE FROM items WHERE id > 90;");
    let wait = run(&cfg, &["wait", "s", "--timeout", "60"], &env);
    assert!(wait.status.success(), "{}", text(&wait));
    assert_eq!(
        table_md5(&c, "src", "items", "id"),
        table_md5(&c, "dst", "items", "id")
    );

    let status = drover_ok(&cfg, &["status", "--json"]);
    let metrics = run_with_timeout(
        Command::new("curl").args(["-s", &format!("http://127.0.0.1:{listen}/metrics")]),
        None,
        std::time::Duration::from_secs(10),
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(metrics.contains("drover_rows_inserted_total"), "{metrics}");
    daemon.stop();
    let log = daemon.log();
    for (what, s) in [
        ("status", &status),
        ("metrics", &metrics),
        ("daemon log", &log),
        ("check", &out),
    ] {
        assert!(!s.contains(SECRET), "the password appears in {what}");
    }
}

#[test]
fn wrong_password_is_reported_without_the_password() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &config(&c, free_port(), "password = \"wrong-Pa55-plugh\""),
    );
    let check = run(&cfg, &["check"], &[]);
    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("database \"src\": cannot connect"), "{out}");
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("wrong-Pa55-plugh"), "{out}");
}

#[test]
fn pgpass_file_supplies_the_password() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&c, free_port(), ""));
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{}:*:app:{SECRET}\n", c.port)).unwrap();
    let env = [("PGPASSFILE", pgpass.to_str().unwrap())];
    // libpq ignores a pgpass file that others can read; so does drover.
    Command::new("chmod")
        .args(["0644", pgpass.to_str().unwrap()])
        .status()
        .unwrap();
    assert_eq!(run(&cfg, &["check"], &env).status.code(), Some(1));
    Command::new("chmod")
        .args(["0600", pgpass.to_str().unwrap()])
        .status()
        .unwrap();
    let check = run(&cfg, &["check"], &env);
    assert!(check.status.success(), "{}", text(&check));
}
