//! One source, two targets, one of them down when the sync's plans are read (at daemon start,
//! or when they are read again after a resume): the other target is prepared and runs alone,
//! the down one shows `failing` in status and is prepared (copied, then caught up) once back.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str = "public.herd";

/// Source `src` and target `t2` on `a`, target `t1` on `b` (first in the sync's list), each
/// with table `herd`; the source has 100 rows, the targets none (`initial_copy = if-empty`).
fn config(a: &Cluster, b: &Cluster, dir: &std::path::Path) -> std::path::PathBuf {
    let schema = "CREATE TABLE herd (id int PRIMARY KEY, v text)";
    for (c, db) in [(a, "src"), (b, "t1"), (a, "t2")] {
        c.create_db(db);
        c.psql(db, schema);
    }
    a.psql(
        "src",
        "INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}[relgroups.g]\n\
         tables = [\"{TABLE}\"]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\n\
         targets = [\"t1\", \"t2\"]\ninitial_copy = \"if-empty\"\n",
        free_port(),
        a.database_toml("src", "src"),
        b.database_toml("t1", "t1"),
        a.database_toml("t2", "t2"),
    );
    let cfg = write_config(dir, &toml);
    drover_ok(&cfg, &["install"]);
    cfg
}

fn md5(c: &Cluster, db: &str) -> String {
    table_md5(c, db, TABLE, "id")
}

fn reaches(target: (&Cluster, &str), src: &Cluster, what: &str) {
    eventually(Duration::from_secs(60), what, || {
        md5(target.0, target.1) == md5(src, "src")
    });
}

/// The state and last error of one target in `drover status --json`.
fn target_state(cfg: &std::path::Path, target: &str) -> (String, String) {
    let s = sync_status(cfg, "s");
    let t = s["target_states"]
        .as_array()
        .and_then(|v| v.iter().find(|t| t["target"] == target).cloned())
        .unwrap_or_default();
    let field = |k: &str| t[k].as_str().unwrap_or_default().to_string();
    (field("state"), field("last_error"))
}

fn writes(a: &Cluster, round: u32) {
    a.psql(
        "src",
        &format!("UPDATE herd SET v = v || '{round}' WHERE id % 5 = {round}"),
    );
    a.psql(
        "src",
        &format!("INSERT INTO herd VALUES ({}, 'new')", 1000 + round),
    );
}

#[test]
fn target_down_at_start_does_not_stop_the_other() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(&a, &b, dir.path());
    b.stop_immediate();
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    reaches((&a, "t2"), &a, "t2's initial copy while t1 is down");
    for i in 0..3 {
        writes(&a, i);
        reaches((&a, "t2"), &a, "t2 to receive writes while t1 is down");
    }
    eventually(Duration::from_secs(60), "t1 to show failing", || {
        let (state, error) = target_state(&cfg, "t1");
        state == "failing" && !error.is_empty()
    });
    assert!(delta_rows(&a, "src") > 0, "the source keeps t1's deltas");

    b.restart();
    reaches(
        (&b, "t1"),
        &a,
        "t1 to be copied and catch up after its restart",
    );
    writes(&a, 3);
    reaches((&b, "t1"), &a, "t1 to receive new writes");
    reaches((&a, "t2"), &a, "t2 to receive new writes");
    drover_wait(&cfg, "s", 60);
    assert_eq!(target_state(&cfg, "t1").0, "ok");
    eventually(
        Duration::from_secs(30),
        "deltas purged once both applied",
        || delta_rows(&a, "src") == 0,
    );
    assert!(daemon.is_running());
    daemon.stop();
}

#[test]
fn plans_read_again_while_a_target_is_down() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(&a, &b, dir.path());
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    reaches((&b, "t1"), &a, "t1's initial copy");
    reaches((&a, "t2"), &a, "t2's initial copy");

    b.stop_immediate();
    writes(&a, 0);
    reaches((&a, "t2"), &a, "t2 to receive writes while t1 is down");
    // A resume reads the plans again (columns may have changed while paused).
    drover_ok(&cfg, &["pause", "s"]);
    eventually(Duration::from_secs(30), "the sync to show paused", || {
        sync_status(&cfg, "s")["paused"] == true
    });
    writes(&a, 1);
    drover_ok(&cfg, &["resume", "s"]);
    reaches(
        (&a, "t2"),
        &a,
        "t2 to receive writes after a resume while t1 is down",
    );
    for i in 2..4 {
        writes(&a, i);
        reaches(
            (&a, "t2"),
            &a,
            "t2 to keep receiving writes while t1 is down",
        );
    }
    eventually(Duration::from_secs(60), "t1 to show failing", || {
        target_state(&cfg, "t1").0 == "failing"
    });

    b.restart();
    reaches((&b, "t1"), &a, "t1 to catch up after its restart");
    drover_wait(&cfg, "s", 60);
    assert!(daemon.is_running());
    daemon.stop();
}
