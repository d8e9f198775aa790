//! libpq's conventions end to end: databases configured only by `service = "NAME"` with a
//! `pg_service.conf` found through `PGSERVICEFILE`, or only by `PGHOST`/`PGPORT`/`PGUSER`,
//! connect (`drover check`, and for the service a replicated row), and `check` says where
//! each setting came from.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";
const RELGROUP: &str =
    "[relgroups.g]\ntables = [\"t\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n";

/// libpq variables the test process may have: none of them may leak into the runs.
const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGCHANNELBINDING",
    "PGAPPNAME",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
];

/// `drover --config CFG ARGS` with exactly the libpq variables in `env`.
fn drover_env(cfg: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config").arg(cfg).args(args);
    for var in LIBPQ_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    run_with_timeout(&mut cmd, None, DROVER_TIMEOUT)
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn cluster_with_tables() -> Cluster {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(db, TABLE);
    }
    c
}

#[test]
fn service_only_databases_connect_and_replicate() {
    let c = cluster_with_tables();
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.conf");
    let body = |db: &str| {
        format!(
            "[{db}svc]\n# where {db} lives\nhost=127.0.0.1\nport={}\ndbname={db}\nuser=postgres\n",
            c.port
        )
    };
    std::fs::write(&services, format!("{}\n{}", body("src"), body("dst"))).unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n[databases.src]\nservice = \"srcsvc\"\n\
         [databases.dst]\nservice = \"dstsvc\"\n{RELGROUP}",
        free_port()
    );
    let cfg = write_config(dir.path(), &toml);
    let env = [("PGSERVICEFILE", services.display().to_string())];

    let check = ok(drover_env(&cfg, &["check"], &env), "check");
    assert!(check.contains("no problems found"), "{check}");
    let from = format!("host: service srcsvc ({})", services.display());
    assert!(check.contains(&from), "no `{from}` in:\n{check}");
    assert!(check.contains("dbname: service dstsvc"), "{check}");
    assert!(
        check.contains("password: none in the configuration"),
        "{check}"
    );

    ok(drover_env(&cfg, &["install"], &env), "install");
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config")
        .arg(&cfg)
        .arg("run")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let _daemon = Daemon::spawn(cmd);
    c.psql(
        "src",
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g",
    );
    ok(
        drover_env(&cfg, &["wait", "s", "--timeout", "60"], &env),
        "wait",
    );
    assert_eq!(c.table_md5("dst", "t", "id"), c.table_md5("src", "t", "id"));
}

#[test]
fn libpq_environment_alone_supplies_host_port_and_user() {
    let c = cluster_with_tables();
    let dir = tempfile::tempdir().unwrap();
    let toml =
        format!("[databases.src]\ndbname = \"src\"\n[databases.dst]\ndbname = \"dst\"\n{RELGROUP}");
    let cfg = write_config(dir.path(), &toml);
    let env = [
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", c.port.to_string()),
        ("PGUSER", "postgres".to_owned()),
    ];
    let check = ok(drover_env(&cfg, &["check"], &env), "check");
    assert!(check.contains("no problems found"), "{check}");
    for line in [
        "host: PGHOST",
        "port: PGPORT",
        "user: PGUSER",
        "dbname: key dbname",
        "sslmode: default",
    ] {
        assert!(check.contains(line), "no `{line}` in:\n{check}");
    }

    // Without them, loading names the database, the key and every place it looked.
    let out = drover_env(&cfg, &["check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("databases.src.host: missing required key \"host\": no value in any source (looked in: key host, DROVER__DATABASES__SRC__HOST, PGHOST)"),
        "{err}"
    );
}

/// A service's setting beats the matching libpq variable, as libpq documents ("a service file
/// setting overrides the corresponding environment variable"): with `PGPORT` pointing at a
/// port where nothing listens, psql and drover both reach the service's server.
#[test]
fn service_beats_libpq_environment_as_psql_does() {
    let c = cluster_with_tables();
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.conf");
    let section = |db: &str| format!("[{db}svc]\nhost=127.0.0.1\nport={}\ndbname={db}\n", c.port);
    std::fs::write(&services, format!("{}\n{}", section("src"), section("dst"))).unwrap();
    let env = [
        ("PGSERVICEFILE", services.display().to_string()),
        ("PGPORT", free_port().to_string()),
        ("PGUSER", "postgres".to_owned()),
        ("PGCONNECT_TIMEOUT", "10".to_owned()),
    ];

    let mut psql = Command::new(Path::new(DEFAULT_BIN_DIR).join("psql"));
    psql.args(["-XAtq", "-d", "service=srcsvc", "-c", "SHOW port"]);
    for var in LIBPQ_VARS {
        psql.env_remove(var);
    }
    psql.envs(env.iter().map(|(k, v)| (k, v)));
    let shown = ok(run_with_timeout(&mut psql, None, DROVER_TIMEOUT), "psql");
    assert_eq!(shown.trim(), c.port.to_string(), "psql took PGPORT");

    let toml = format!(
        "[databases.src]\nservice = \"srcsvc\"\n[databases.dst]\nservice = \"dstsvc\"\n{RELGROUP}"
    );
    let cfg = write_config(dir.path(), &toml);
    let check = ok(drover_env(&cfg, &["check"], &env), "check");
    assert!(check.contains("no problems found"), "{check}");
    assert!(check.contains("port: service srcsvc"), "{check}");
    assert!(check.contains("user: PGUSER"), "{check}");
}
