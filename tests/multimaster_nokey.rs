//! Key-less (whole-row) tables across masters: each master's row images (inserts, deletes,
//! updates as delete+insert) reach every other database as a multiset, so a row inserted on
//! any master appears once on every database, duplicates and NULLs included; a TRUNCATE on one
//! master reloads the table from it and keeps the writes it had not seen.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::scenario::*;
use support::*;

const TABLE: &str =
    "CREATE TABLE hist (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))";

/// Masters a and b, receive-only r, and a scratch database x (not in the sync) where the test
/// computes the expected multiset; all start with the same rows, two of them identical.
fn setup() -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster::start();
    for db in ["a", "b", "r", "x"] {
        c.create_db(db);
        c.psql(db, TABLE);
        c.psql(
            db,
            "INSERT INTO hist VALUES (1, 1, 1, 5, '2020-01-01', 'seed'), (1, 1, 1, 5, '2020-01-01', 'seed'), \
             (NULL, NULL, NULL, NULL, NULL, NULL)",
        );
    }
    let toml = sync_toml(&c, &["public.hist"], "", &["a", "b"], &["r"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &toml);
    (c, dir, cfg)
}

/// `n` inserts on `db`, one per transaction, with duplicates (within and across masters) and
/// NULLs; the same statement without the COMMITs gives the expected rows on x.
fn inserts(n: u32, commit: bool) -> String {
    let commit = if commit { "COMMIT;" } else { "" };
    format!(
        "DO $$ BEGIN FOR i IN 1..{n} LOOP \
         INSERT INTO hist VALUES (i % 10, CASE WHEN i % 7 = 0 THEN NULL ELSE i % 3 END, i % 25, \
         -i % 4, CASE WHEN i % 5 = 0 THEN NULL ELSE timestamp '2021-01-01' + (i % 20) * interval '1 s' END, \
         CASE WHEN i % 11 = 0 THEN NULL ELSE 'f' || (i % 6) END); {commit} \
         END LOOP; END $$"
    )
}

fn md5(c: &Cluster, db: &str) -> String {
    table_md5(c, db, "hist", "md5_row_::text")
}

/// Every database of the sync holds exactly x's multiset.
fn assert_all_expected(c: &Cluster, cfg: &std::path::Path) {
    drover_wait(cfg, "s", 120);
    let want = md5(c, "x");
    for db in ["a", "b", "r"] {
        assert_eq!(
            md5(c, db),
            want,
            "hist on {db} differs from the expected multiset"
        );
    }
}

/// Runs `sql` on a and b at the same time.
fn on_both(c: &Cluster, sql_a: &str, sql_b: &str) {
    std::thread::scope(|s| {
        s.spawn(|| c.psql("a", sql_a));
        s.spawn(|| c.psql("b", sql_b));
    });
}

#[test]
fn inserts_deletes_and_updates_on_two_masters() {
    let (c, _dir, cfg) = setup();
    drover_ok(&cfg, &["check"]);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    // Concurrent inserts on both masters: x gets both masters' rows.
    on_both(&c, &inserts(300, true), &inserts(200, true));
    c.psql("x", &inserts(300, false));
    c.psql("x", &inserts(200, false));
    assert_all_expected(&c, &cfg);
    let n = c.psql("a", "SELECT count(*) FROM hist");
    assert_eq!(n, "503", "each row once on every master");

    // Delete one of two identical rows (on b); update a row (on a).
    let one_copy =
        "DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE filler = 'seed' LIMIT 1)";
    let update =
        "UPDATE hist SET delta = 999, filler = 'updated' WHERE tid IS NULL AND filler IS NULL";
    c.psql("b", one_copy);
    c.psql("a", update);
    c.psql("x", one_copy);
    c.psql("x", update);
    assert_all_expected(&c, &cfg);

    // Two identical rows; each master deletes one copy at the same time: both go everywhere.
    c.psql(
        "a",
        "INSERT INTO hist VALUES (7, 7, 7, 7, NULL, 'twin'), (7, 7, 7, 7, NULL, 'twin')",
    );
    c.psql(
        "x",
        "INSERT INTO hist VALUES (7, 7, 7, 7, NULL, 'twin'), (7, 7, 7, 7, NULL, 'twin')",
    );
    assert_all_expected(&c, &cfg);
    let del = "DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE filler = 'twin' LIMIT 1)";
    on_both(&c, del, del);
    c.psql("x", "DELETE FROM hist WHERE filler = 'twin'");
    assert_all_expected(&c, &cfg);

    // No loops: the deltas drain and nothing more is applied.
    eventually(Duration::from_secs(30), "delta tables to drain", || {
        delta_rows(&c, "a") == 0 && delta_rows(&c, "b") == 0
    });
    assert_all_expected(&c, &cfg);
    drover_ok(&cfg, &["verify", "s"]);
    daemon.stop();
}

#[test]
fn truncate_reloads_from_the_master_and_keeps_unseen_writes() {
    let (c, _dir, cfg) = setup();
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql("b", &inserts(50, true));
    c.psql("x", &inserts(50, false));
    assert_all_expected(&c, &cfg);

    // With the daemon stopped: a truncates and inserts; b inserts rows a has not seen.
    daemon.stop();
    let after = "INSERT INTO hist VALUES (42, NULL, 1, 1, NULL, 'after truncate'), (42, NULL, 1, 1, NULL, 'after truncate')";
    let unseen = "INSERT INTO hist VALUES (43, 2, 2, 2, NULL, 'unseen on b')";
    c.psql("a", "TRUNCATE hist");
    c.psql("a", after);
    c.psql("b", unseen);
    c.psql("x", "TRUNCATE hist");
    c.psql("x", after);
    c.psql("x", unseen);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_ok(&cfg, &["kick", "s"]);
    assert_all_expected(&c, &cfg);

    // Writes on b while a truncates again, racing the rounds: all masters stay identical.
    on_both(&c, "TRUNCATE hist", &inserts(200, true));
    drover_wait(&cfg, "s", 120);
    eventually(Duration::from_secs(30), "the masters to converge", || {
        md5(&c, "a") == md5(&c, "b") && md5(&c, "a") == md5(&c, "r")
    });
    daemon.stop();
}

/// A psql session on b that runs `sql` in a transaction it leaves open (holding its locks).
fn open_on_b(c: &Cluster, sql: &str) -> std::process::Child {
    let mut b = Command::new("psql")
        .args(["-XAtq", "-h", "127.0.0.1", "-p", &c.port.to_string()])
        .args(["-U", "postgres", "-d", "b", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let stdin = b.stdin.as_mut().expect("psql stdin");
    writeln!(stdin, "BEGIN; {sql};").unwrap();
    stdin.flush().unwrap();
    eventually(Duration::from_secs(10), "b's open transaction", || {
        c.psql("b", "SELECT count(*) FROM pg_locks WHERE mode = 'RowExclusiveLock' AND relation = 'hist'::regclass AND granted") == "1"
    });
    b
}

/// Once drover's apply on b waits for a lock (`what`), commits b's open transaction.
fn commit_when_drover_waits(c: &Cluster, mut b: std::process::Child, what: &str) {
    eventually(Duration::from_secs(20), what, || {
        c.psql(
            "b",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drover:%' AND wait_event_type = 'Lock'",
        ) != "0"
    });
    writeln!(b.stdin.as_mut().unwrap(), "COMMIT;").unwrap();
    drop(b.stdin.take());
    assert!(b.wait().unwrap().success(), "b's transaction");
}

/// b inserts in a transaction left open while a truncates: b's round snapshot misses the
/// insert, b's reload waits for it, and it is added back on b after the reload (and sent to
/// the others by the next round), so every database ends with it.
#[test]
fn truncate_keeps_a_write_committed_during_the_reload() {
    let (c, _dir, cfg) = setup();
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    let late = "INSERT INTO hist VALUES (44, 4, 4, 4, NULL, 'late on b')";
    let b = open_on_b(&c, late);
    c.psql("a", "TRUNCATE hist");
    commit_when_drover_waits(&c, b, "the reload on b to wait for b's insert");
    c.psql("x", "TRUNCATE hist");
    c.psql("x", late);
    drover_ok(&cfg, &["kick", "s"]);
    assert_all_expected(&c, &cfg);
    daemon.stop();
}

/// b deletes 9 of 10 identical copies in a transaction left open while a deletes one copy:
/// drover's delete of a's copy on b picks one of the copies b's transaction holds and waits.
/// When b commits, READ COMMITTED skips that copy (it is gone), and a single statement would
/// leave b one copy too many for good (what a CI run of the test above once hit). The apply
/// deletes again, with a fresh snapshot, for the copies still wanted: all end with none.
#[test]
fn a_copy_deleted_by_a_local_transaction_does_not_absorb_a_remote_delete() {
    let (c, _dir, cfg) = setup();
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let ten = "INSERT INTO hist SELECT 9, 9, 9, 9, NULL, 'ten' FROM generate_series(1, 10)";
    c.psql("a", ten);
    c.psql("x", ten);
    assert_all_expected(&c, &cfg);
    let nine =
        "DELETE FROM hist WHERE ctid IN (SELECT ctid FROM hist WHERE filler = 'ten' LIMIT 9)";
    let b = open_on_b(&c, nine);
    let one = "DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE filler = 'ten' LIMIT 1)";
    c.psql("a", one);
    commit_when_drover_waits(&c, b, "drover's delete on b to wait for b's");
    c.psql("x", "DELETE FROM hist WHERE filler = 'ten'");
    assert_all_expected(&c, &cfg);
    daemon.stop();
}

/// Three masters, one row once on each: a and b each delete it while r inserts another copy,
/// all in one round. Each database sums the others' changes per row before applying, so all end
/// with the sum (1 - 1 - 1 + 1 = 0 copies); applied sender by sender, r would keep none and a
/// and b one.
#[test]
fn three_masters_sum_concurrent_deletes_and_an_insert() {
    let (c, dir, _) = setup();
    let toml = sync_toml(&c, &["public.hist"], "", &["a", "b", "r"], &[]);
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let one = "DELETE FROM hist WHERE tid IS NULL";
    c.psql("a", one);
    c.psql("b", one);
    c.psql(
        "r",
        "INSERT INTO hist VALUES (NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    c.psql("x", one);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    assert_all_expected(&c, &cfg);
    daemon.stop();
}

/// A backlog over the round budget (`multi_backlog`) behind a TRUNCATE: the reload copies a's
/// rows as of the round's cut, not the rows above it that later rounds send.
#[test]
fn bounded_rounds_after_a_truncate() {
    let (c, _dir, cfg) = setup();
    drover_ok(&cfg, &["install"]);
    c.psql("a", "TRUNCATE hist");
    let batches = "DO $$ BEGIN FOR i IN 1..25 LOOP \
         INSERT INTO hist SELECT g % 10, i, NULL, g, NULL, 'bulk' FROM generate_series(1, 1000) g; COMMIT; \
         END LOOP; END $$";
    c.psql("a", batches);
    c.psql("b", &inserts(100, true));
    c.psql("x", "TRUNCATE hist");
    c.psql("x", &batches.replace("COMMIT;", ""));
    c.psql("x", &inserts(100, false));
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    // Without the cut taken into account, b and r got a's rows above it twice.
    assert_all_expected(&c, &cfg);
    daemon.stop();
}

#[test]
fn pgbench_history_on_two_masters() {
    let c = Cluster::start();
    for db in ["a", "b"] {
        c.create_db(db);
        c.pgbench(db, &["-i", "-s", "1", "-q"]);
    }
    let tables = [
        "public.pgbench_accounts",
        "public.pgbench_branches",
        "public.pgbench_tellers",
        "public.pgbench_history",
    ];
    let toml = sync_toml(&c, &tables, "", &["a", "b"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    let args = ["-n", "-c", "2", "-T", "10"];
    let (out_a, out_b) = std::thread::scope(|s| {
        let a = s.spawn(|| c.pgbench("a", &args));
        let b = s.spawn(|| c.pgbench("b", &args));
        (a.join().unwrap(), b.join().unwrap())
    });
    let txs = |out: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.starts_with("number of transactions actually processed"))
            .unwrap_or_else(|| panic!("no transaction count in {out}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = txs(&out_a) + txs(&out_b);
    drover_wait(&cfg, "s", 120);
    let order = "md5_row_::text";
    let want = table_md5(&c, "a", "pgbench_history", order);
    assert_eq!(table_md5(&c, "b", "pgbench_history", order), want);
    assert!(
        want.starts_with(&format!("{total}:")),
        "{want}: expected {total} rows"
    );
    daemon.stop();
}

/// Masters on PostgreSQL 10 and 17 as a non-superuser owner (the drover.origin guard alone
/// keeps applies from being captured), with floats whose text differs between the majors:
/// images match by their bits, so deletes and updates find their rows on the other major.
#[test]
fn keyless_masters_on_postgres_10_and_17_as_non_superuser() {
    let old = support::versions::cluster(10);
    let new = support::versions::cluster(17);
    for (c, db) in [(&old, "a"), (&new, "b")] {
        c.psql("postgres", "CREATE ROLE app LOGIN");
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        c.psql(
            db,
            "SET ROLE app; CREATE TABLE m (n int, f float8, r real, note text); \
             INSERT INTO m SELECT g % 5, g / 10.0, g / 3.0, 'seed' FROM generate_series(1, 30) g;",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = |c: &Cluster, name: &str| {
        format!("[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"app\"\n", c.port)
    };
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.g]\ntables = [\"m\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        db(&old, "a"),
        db(&new, "b")
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["check"]);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    for i in 0..20 {
        old.psql(
            "a",
            &format!("SET ROLE app; INSERT INTO m VALUES ({i}, {i} / 7.0, 0.1, 'a')"),
        );
        new.psql(
            "b",
            &format!("SET ROLE app; INSERT INTO m VALUES ({i}, {i} / 7.0, 0.1, 'b')"),
        );
    }
    drover_wait(&cfg, "mm", 60);
    old.psql(
        "a",
        "SET ROLE app; DELETE FROM m WHERE ctid = (SELECT ctid FROM m WHERE f = 0.3 LIMIT 1)",
    );
    new.psql(
        "b",
        "SET ROLE app; UPDATE m SET note = 'updated on b' WHERE f = 2.9 OR (note = 'a' AND n = 3)",
    );
    drover_wait(&cfg, "mm", 60);
    // Floats by their bits: their text differs between PostgreSQL 10 and 12+.
    let rows = "(SELECT n, float8send(f) AS f, float4send(r) AS r, note FROM m)";
    let want = table_md5(&old, "a", rows, "md5_row_::text");
    assert_eq!(table_md5(&new, "b", rows, "md5_row_::text"), want);
    assert!(want.starts_with("69:"), "{want}");
    let updated = new.psql("b", "SELECT count(*) FROM m WHERE note = 'updated on b'");
    assert_eq!(updated, "2");
    daemon.stop();
}
