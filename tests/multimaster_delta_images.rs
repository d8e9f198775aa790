//! Delta columns when a key's winner sends its row image: the image carries the winner's
//! counter, which is right for a master that lacks the key only after the increments it is
//! still to receive are taken into account, and never right for a master that holds the key.
//! Two ways a receiver fell behind one master and not the other: a master down (the same happens
//! when one master's apply fails in a round the others commit), and a bounded round whose cut
//! leaves the winner's newest increments for the next round.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

/// `t(id, n, note)` with keys 1..=20, and `bulk`, big enough (10,001 rows) that one update of
/// it is over a multi-master round's budget (`multi_backlog::MULTI_BUDGET`).
const TABLES: &str = "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text); \
     INSERT INTO t SELECT i, 0, 'seed' FROM generate_series(1, 20) AS i; \
     CREATE TABLE bulk (id int PRIMARY KEY, v text); \
     INSERT INTO bulk SELECT i, 'seed' FROM generate_series(1, 10001) AS i;";

/// Masters a and b on one cluster, c on another (it gets stopped), `t.n` a delta column; the
/// daemon running and converged.
struct Three {
    ab: Cluster,
    cc: Cluster,
    cfg: std::path::PathBuf,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Three {
    fn start() -> Three {
        let (ab, cc) = (Cluster::start(), Cluster::start());
        let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n", free_port());
        for (cl, db) in [(&ab, "a"), (&ab, "b"), (&cc, "c")] {
            cl.create_db(db);
            cl.psql(db, TABLES);
            toml.push_str(&cl.database_toml(db, db));
        }
        toml.push_str(
            "[relgroups.g]\ntables = [\"t\", \"bulk\"]\n[relgroups.g.delta_columns]\nt = [\"n\"]\n\
             [syncs.s]\nrelgroup = \"g\"\nsources = [\"a\", \"b\", \"c\"]\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let (cfg, daemon) = install_and_run(dir.path(), &toml);
        drover_wait(&cfg, "s", 60);
        Three {
            ab,
            cc,
            cfg,
            daemon,
            _dir: dir,
        }
    }

    /// With c down: a inserts key 500 at 7 and b receives it; then the daemon stops.
    fn key_500_made_while_c_is_down(&mut self, on_a_first: &str) {
        self.cc.stop_immediate();
        if !on_a_first.is_empty() {
            self.ab.psql("a", on_a_first);
        }
        self.ab
            .psql("a", "INSERT INTO t VALUES (500, 7, 'new on a')");
        let ab = &self.ab;
        eventually(Duration::from_secs(60), "key 500 on b", || {
            ab.psql("b", "SELECT count(*) FROM t WHERE id = 500") == "1"
        });
        self.daemon.stop();
    }

    /// c back, the daemon started again and caught up: every master holds `n` at key 500 and
    /// the same tables.
    fn converges_at(&mut self, n: &str) {
        self.cc.restart();
        self.daemon = Daemon::start(&self.cfg);
        wait_for_daemon(&self.cfg);
        drover_wait(&self.cfg, "s", 120);
        // A second wait: what the first round left for the next one is applied too.
        drover_wait(&self.cfg, "s", 60);
        let dbs = [(&self.ab, "a"), (&self.ab, "b"), (&self.cc, "c")];
        for (cl, db) in dbs {
            assert_eq!(
                cl.psql(db, "SELECT n FROM t WHERE id = 500"),
                n,
                "key 500 on {db}"
            );
        }
        for table in ["t", "bulk"] {
            let a = table_md5(&self.ab, "a", table, "id");
            assert_eq!(a, table_md5(&self.ab, "b", table, "id"), "{table}: b");
            assert_eq!(a, table_md5(&self.cc, "c", table, "id"), "{table}: c");
        }
        self.daemon.stop();
    }
}

#[test]
fn a_winner_image_keeps_the_increment_a_receiver_has_not_sent_yet() {
    let mut s = Three::start();
    s.key_500_made_while_c_is_down("");
    // b adds to the key. When c returns, a's insert (pending to c only) wins the row and its
    // image goes to b and c; b's 5 has not reached a yet.
    s.ab.psql("b", "UPDATE t SET n = n + 5 WHERE id = 500");
    s.converges_at("12");
}

#[test]
fn a_bounded_round_sends_no_increment_twice_to_a_key_new_to_the_receiver() {
    let mut s = Three::start();
    // c's backlog from a is over a round's budget, so c's first round is cut below a's newest
    // transactions: the insert of key 500 is in it, a's later 11 is not, and the image a sends
    // (read at the round's snapshot) already holds the 11.
    s.key_500_made_while_c_is_down("UPDATE bulk SET v = 'changed on a'");
    s.ab.psql("a", "UPDATE t SET n = n + 11 WHERE id = 500");
    s.converges_at("18");
}
