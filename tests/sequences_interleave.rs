//! `sequence_mode = "interleave"`: the masters of a multi-master sync hand out disjoint
//! sequence values (install sets `INCREMENT BY` and a residue per master, as the non-superuser
//! owner, never moving a sequence backwards), so concurrent inserts taking `DEFAULT nextval`
//! on every master never collide; `check` says when a master's sequence is off and how to fix.

mod support;

use support::scenario::*;
use support::*;

const SEQ: &str = "orders_id_seq";
const ROWS_PER_MASTER: u32 = 200;

/// a, b (masters) and r (receive-only), owned by the non-superuser `app`, each with the same
/// five rows; only a's sequence has been used.
fn setup() -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster::start();
    c.psql("postgres", "CREATE ROLE app LOGIN");
    for db in ["a", "b", "r"] {
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
        c.psql(
            db,
            "SET ROLE app; CREATE TABLE orders (id bigserial PRIMARY KEY, master text NOT NULL, n int NOT NULL); \
             INSERT INTO orders (id, master, n) SELECT g, 'seed', g FROM generate_series(1, 5) g;",
        );
    }
    c.psql("a", &format!("SELECT setval('{SEQ}', 5)"));
    let dir = tempfile::tempdir().unwrap();
    let db = |name: &str| {
        format!("[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"app\"\n", c.port)
    };
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}{}[relgroups.g]\ntables = [\"orders\"]\nsequences = [\"{SEQ}\"]\n\
         sequence_mode = \"interleave\"\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\ntargets = [\"r\"]\n",
        free_port(),
        db("a"),
        db("b"),
        db("r"),
    );
    let cfg = write_config(dir.path(), &toml);
    (c, dir, cfg)
}

/// `drover check`'s stdout, asserting it found problems.
fn check_fails(cfg: &std::path::Path) -> String {
    let out = drover(cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    text
}

/// Each master's sequence as `increment/last_value/is_called`.
fn states(c: &Cluster) -> String {
    ["a", "b"]
        .map(|db| {
            c.psql(
                db,
                &format!("SELECT p.seqincrement || '/' || s.last_value || '/' || s.is_called FROM pg_sequence p, {SEQ} s WHERE p.seqrelid = '{SEQ}'::regclass"),
            )
        })
        .join(" ")
}

#[test]
fn masters_insert_concurrently_without_collisions() {
    let (c, dir, cfg) = setup();
    let before = check_fails(&cfg);
    assert!(
        before.contains(&format!("database \"b\": sequence public.{SEQ} counts by 1, but sync mm interleaves its masters' sequences with INCREMENT BY 2: run `drover install`")),
        "{before}"
    );
    let out = drover_ok(&cfg, &["install"]);
    assert!(
        out.contains(&format!(
            "sync mm: sequence public.{SEQ}: interleaved, INCREMENT BY 2: a ≡ 1, b ≡ 0"
        )),
        "{out}"
    );
    // Both jumped to their class at or past 6, a's next value (b's was 1): a 7, b 6.
    assert_eq!(states(&c), "2/7/false 2/6/false");
    let check = drover_ok(&cfg, &["check"]);
    assert!(
        check.contains(&format!(
            "sequence public.{SEQ}: interleaved on the masters, INCREMENT BY 2"
        )),
        "{check}"
    );
    // Install again: nothing moves.
    let again = drover_ok(&cfg, &["install"]);
    assert!(again.contains("already interleaved, step 2"), "{again}");
    assert_eq!(states(&c), "2/7/false 2/6/false");

    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    let script = dir.path().join("insert.sql");
    let writers: Vec<_> = ["a", "b"]
        .map(|db| {
            std::fs::write(
                script.with_extension(db),
                format!("INSERT INTO orders (master, n) VALUES ('{db}', :client_id);\n"),
            )
            .unwrap();
            let file = script.with_extension(db).display().to_string();
            let per_client = (ROWS_PER_MASTER / 2).to_string();
            pgbench_in_background(&c, db, &["-n", "-c", "2", "-t", &per_client, "-f", &file])
        })
        .into_iter()
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    drover_wait(&cfg, "mm", 60);
    let total = 5 + 2 * ROWS_PER_MASTER;
    let first = table_md5(&c, "a", "orders", "id");
    assert!(first.starts_with(&format!("{total}:")), "{first}");
    for db in ["b", "r"] {
        assert_eq!(table_md5(&c, db, "orders", "id"), first, "orders on {db}");
    }
    for (db, parity) in [("a", 1), ("b", 0)] {
        assert_eq!(
            c.psql(
                db,
                &format!("SELECT count(*) FROM orders WHERE master = '{db}' AND id % 2 = {parity}")
            ),
            ROWS_PER_MASTER.to_string(),
            "{db}'s rows take its class"
        );
        assert_eq!(c.psql(db, "SELECT count(*) FROM drover.conflicts"), "0");
    }
    daemon.stop();

    // Someone resets b's sequence: check names it and the fix; install fixes it, moving no
    // sequence backwards.
    c.psql(
        "b",
        &format!("SET ROLE app; ALTER SEQUENCE {SEQ} INCREMENT BY 1"),
    );
    let problem = check_fails(&cfg);
    assert!(
        problem.contains(&format!("database \"b\": sequence public.{SEQ} counts by 1, but sync mm interleaves its masters' sequences with INCREMENT BY 2: run `drover install` to set it (it never moves a sequence backwards)")),
        "{problem}"
    );
    assert!(!problem.contains("database \"a\": sequence"), "{problem}");
    let high = c.psql("b", "SELECT max(id) FROM orders");
    drover_ok(&cfg, &["install"]);
    drover_ok(&cfg, &["check"]);
    for db in ["a", "b"] {
        let next: i64 = c
            .psql(db, &format!("SELECT nextval('{SEQ}')"))
            .parse()
            .unwrap();
        assert!(
            next > high.parse::<i64>().unwrap(),
            "{db}: {next} after {high}"
        );
    }

    // Same class on both masters: check names both.
    c.psql("b", &format!("SELECT setval('{SEQ}', 100001)"));
    c.psql("a", &format!("SELECT setval('{SEQ}', 100003)"));
    let same = check_fails(&cfg);
    assert!(
        same.contains(&format!(
            "databases \"a\" and \"b\": sequence public.{SEQ} hands out values ≡ 1 (mod 2) on both"
        )),
        "{same}"
    );
}
