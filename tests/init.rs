//! `drover init` (issue 14): on a pgbench schema it writes a config that `check` accepts, that
//! names each table's key method (pgbench_history: whole-row images), that replicates, that
//! holds no password, and that lists the tables it cannot replicate as comments with the
//! reason. It never overwrites a file.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const EXTRA_SOURCE: &str = "
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
CREATE TABLE only_here (id int PRIMARY KEY);
CREATE TABLE drift (id int PRIMARY KEY, v text);
CREATE TABLE tmp_skip (id int PRIMARY KEY);
CREATE TABLE m (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one;";

const EXTRA_TARGET: &str = "
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
CREATE TABLE drift (id int PRIMARY KEY, v int);
CREATE TABLE tmp_skip (id int PRIMARY KEY);
CREATE TABLE m (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);";

/// Runs `drover init ARGS` (no config file exists); returns exit code, stdout, stderr.
fn init(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["init"];
    all.extend_from_slice(args);
    let out = drover(&dir.join("no-such-config.toml"), &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_on_pgbench_writes_a_config_that_check_accepts() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    c.psql("src", EXTRA_SOURCE);
    c.psql("dst", EXTRA_TARGET);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drover.toml");
    let source = format!("postgresql://postgres:sekret@127.0.0.1:{}/src", c.port);
    let target = format!(
        "postgresql://postgres@127.0.0.1:{}/dst?sslmode=disable",
        c.port
    );
    let args = [
        "--source",
        &source,
        "--target",
        &target,
        "--exclude",
        "tmp_*",
        "--output",
        out.to_str().unwrap(),
    ];
    let (code, _, err) = init(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    eprintln!("{text}");
    assert!(
        !text.contains("sekret"),
        "the password was written:\n{text}"
    );
    assert!(text.contains(&format!(
        "url = \"postgresql://postgres@127.0.0.1:{}/src\"",
        c.port
    )));
    for want in [
        "  # no key: whole-row images (rows are matched by all their columns, duplicates included; a primary key is faster)\n  \"public.pgbench_history\",\n",
        "  # primary key (aid)\n  \"public.pgbench_accounts\",\n",
        "  # primary key (id, k)\n  \"public.m\",\n",
        "#  \"public.only_here\",  # does not exist on the target: create it there first",
        "#  \"public.drift\",  # differs on the target: column \"v\" has type integer (source: text)",
        "#  \"public.scratch\",  # unlogged: a crash empties it",
        "#  \"public.m1\",  # a partition of public.m: it replicates with its partitioned table",
        "#  \"public.mv\",  # a materialized view",
    ] {
        assert!(text.contains(want), "init lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("tmp_skip"), "--exclude ignored:\n{text}");

    // Never overwrites.
    let (code, _, err) = init(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

    // check accepts it and names pgbench_history's key method; it replicates.
    let toml = text.replace("127.0.0.1:9187", &format!("127.0.0.1:{}", free_port()));
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    for want in [
        "public.pgbench_history: ok, no key: whole-row images",
        "public.pgbench_accounts: ok, primary key (aid)",
        "no problems found",
    ] {
        assert!(check.contains(want), "check lacks {want:?}:\n{check}");
    }
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.pgbench("src", &["-n", "-t", "200"]);
    drover_wait(&cfg, "main", 60);
    for (t, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_history", "md5_row_::text"),
    ] {
        eventually(Duration::from_secs(30), &format!("{t} to match"), || {
            table_md5(&c, "src", t, key) == table_md5(&c, "dst", t, key)
        });
    }
    daemon.stop();
}

#[test]
fn init_with_nothing_to_replicate_says_why() {
    let c = Cluster::start();
    c.create_db("a");
    c.create_db("b");
    c.psql("a", "CREATE TABLE lonely (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let url = |db: &str| format!("postgresql://postgres@127.0.0.1:{}/{db}", c.port);
    let (code, stdout, err) = init(dir.path(), &["--source", &url("a"), "--target", &url("b")]);
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        err.contains("public.lonely: does not exist on the target"),
        "{err}"
    );
}
