//! drover-specific setups shared by the integration tests: configs, a pgbench source and
//! target pair, whole-table comparisons under pinned output settings, status as JSON.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{drover, drover_ok, eventually, free_port, write_config, Cluster};

/// Session settings that make a row's text the same on any server, so md5 of the text of the
/// ordered rows compares contents bit for bit even when the databases' defaults differ.
pub const PINNED: &str = "SET datestyle = ISO; SET intervalstyle = postgres; SET timezone = UTC; \
                          SET extra_float_digits = 3; SET bytea_output = hex; SET lc_monetary = 'C';";

pub const PGBENCH_TABLES: [&str; 3] = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
];

/// md5 of the text of every row of `table_sql` in key order, with pinned output settings.
pub fn table_md5(c: &Cluster, db: &str, table_sql: &str, order_by: &str) -> String {
    c.psql(
        db,
        &format!(
            "{PINNED} SELECT count(*) || ':' || md5(coalesce(string_agg(md5_row_::text, E'\\n' ORDER BY {order_by}), '')) FROM {table_sql} md5_row_"
        ),
    )
}

/// A config file for one sync `legacy_to_new` of relgroup `herd` from `src` to `dst`.
pub struct Setup {
    pub dir: TempDir,
    pub config: PathBuf,
    pub listen: u16,
}

pub fn one_way(src: (&Cluster, &str), dst: (&Cluster, &str), tables: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let quoted: Vec<String> = tables
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\n{}{}[relgroups.herd]\ntables = [{}]\n\
         [syncs.legacy_to_new]\nrelgroup = \"herd\"\nsources = [\"legacy\"]\ntargets = [\"new\"]\n",
        src.0.database_toml("legacy", src.1),
        dst.0.database_toml("new", dst.1),
        quoted.join(", ")
    );
    let config = write_config(dir.path(), &toml);
    Setup {
        dir,
        config,
        listen,
    }
}

/// Runs `pg_dump` (schema and data, or schema only) of `src_db` into `dst_db`.
pub fn dump_into(src: &Cluster, src_db: &str, dst: &Cluster, dst_db: &str, schema_only: bool) {
    let script = format!(
        "set -o pipefail; pg_dump {flag} -h 127.0.0.1 -p {sp} -U postgres {src_db} | psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {dp} -U postgres -d {dst_db} >/dev/null",
        flag = if schema_only { "--schema-only" } else { "" },
        sp = src.port,
        dp = dst.port
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run pg_dump | psql");
    assert!(
        out.status.success(),
        "pg_dump | psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two clusters with `repdb`: pgbench scale 1 on the source, copied whole to the target, as
/// after the seed document's pg_dump/pg_restore.
pub fn pgbench_pair() -> (Cluster, Cluster) {
    let src = Cluster::start();
    let dst = Cluster::start();
    src.create_db("repdb");
    dst.create_db("repdb");
    src.pgbench("repdb", &["-i", "-s", "1", "-q"]);
    dump_into(&src, "repdb", &dst, "repdb", false);
    (src, dst)
}

/// Asserts every pgbench table is identical on both sides.
pub fn assert_pgbench_same(src: &Cluster, dst: &Cluster) {
    for (t, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
    ] {
        let a = table_md5(src, "repdb", t, key);
        let b = table_md5(dst, "repdb", t, key);
        assert_eq!(a, b, "table {t} differs between source and target");
    }
}

/// `drover status --json` parsed.
pub fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = drover_ok(config, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
}

/// The status object of one sync, once the daemon answers.
pub fn sync_status(config: &std::path::Path, sync: &str) -> serde_json::Value {
    let doc = status_json(config);
    doc["syncs"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == sync).cloned())
        .unwrap_or_else(|| panic!("no sync {sync} in status: {doc}"))
}

/// Waits until the daemon's HTTP API answers.
pub fn wait_for_daemon(config: &std::path::Path) {
    eventually(
        Duration::from_secs(30),
        "the daemon to answer status",
        || drover(config, &["status", "--json"]).status.success(),
    );
}

/// `drover wait SYNC --timeout SECS`, asserting it succeeds; returns the seconds it took.
pub fn drover_wait(config: &std::path::Path, sync: &str, timeout_secs: u32) -> f64 {
    let t = std::time::Instant::now();
    drover_ok(
        config,
        &["wait", sync, "--timeout", &timeout_secs.to_string()],
    );
    t.elapsed().as_secs_f64()
}

/// Number of rows left in every delta table of a source.
pub fn delta_rows(c: &Cluster, db: &str) -> i64 {
    let tables = c.psql(db, "SELECT delta_name FROM drover.tables ORDER BY id");
    tables
        .lines()
        .map(|d| {
            c.psql(db, &format!("SELECT count(*) FROM drover.\"{d}\""))
                .parse::<i64>()
                .expect("count")
        })
        .sum()
}

/// Runs pgbench with `args` against `db` in a thread; join it to wait (it asserts success).
pub fn pgbench_in_background(c: &Cluster, db: &str, args: &[&str]) -> std::thread::JoinHandle<()> {
    let port = c.port.to_string();
    let mut all: Vec<String> = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    all.push(db.to_string());
    std::thread::spawn(move || {
        let out = Command::new("pgbench")
            .args(&all)
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// A config for one sync `s` of relgroup `g` (its `tables`, plus `relgroup_extra` lines such as
/// a `[relgroups.g.keys]` table) from `sources` to `targets`, each database named after its
/// dbname on `c`.
pub fn sync_toml(
    c: &Cluster,
    tables: &[&str],
    relgroup_extra: &str,
    sources: &[&str],
    targets: &[&str],
) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|x| format!("\"{x}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let databases: String = sources
        .iter()
        .chain(targets)
        .map(|db| c.database_toml(db, db))
        .collect();
    let targets_line = if targets.is_empty() {
        String::new()
    } else {
        format!("targets = [{}]\n", list(targets))
    };
    format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{databases}[relgroups.g]\ntables = [{}]\n{relgroup_extra}\
         [syncs.s]\nrelgroup = \"g\"\nsources = [{}]\n{targets_line}",
        free_port(),
        list(tables),
        list(sources),
    )
}

/// Writes `toml` into `dir`, runs `drover install`, starts the daemon and waits until it answers.
pub fn install_and_run(dir: &std::path::Path, toml: &str) -> (PathBuf, super::Daemon) {
    let cfg = write_config(dir, toml);
    drover_ok(&cfg, &["install"]);
    let daemon = super::Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    (cfg, daemon)
}

/// A sync's state and last error, as status reports them.
pub fn state_and_error(config: &std::path::Path, sync: &str) -> (String, String) {
    let s = sync_status(config, sync);
    (
        s["state"].as_str().unwrap_or_default().to_string(),
        s["last_error"].as_str().unwrap_or_default().to_string(),
    )
}
