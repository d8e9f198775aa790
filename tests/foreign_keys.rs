//! Foreign keys on a target where `session_replication_role` cannot be set (issue 10 item 2):
//! the target's drover user owns the tables but is no superuser, so FK checks and actions are
//! live while drover applies. An update of a referenced row must be applied in place (a delete
//! and insert would cascade to, null or be refused by the children); deletes go children first
//! and inserts parents first. Also: no planner switches (item 8) — a key-less table and a
//! configured key without a target index at 1M rows replicate within the normal wait.

mod support;

use std::path::PathBuf;

use support::scenario::*;
use support::*;

/// A parent and three children, one per FK action.
const SCHEMA: &str = "
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, n int);
CREATE TABLE child_cascade (id int PRIMARY KEY,
    parent_id int REFERENCES parent (id) ON DELETE CASCADE, v text);
CREATE TABLE child_null (id int PRIMARY KEY,
    parent_id int REFERENCES parent (id) ON DELETE SET NULL, v text);
CREATE TABLE child_restrict (id int PRIMARY KEY,
    parent_id int REFERENCES parent (id) ON DELETE RESTRICT, v text);";

const FILL: &str = "
INSERT INTO parent SELECT g, 'parent ' || g, g FROM generate_series(1, 2000) g;
INSERT INTO child_cascade SELECT g, g, 'cascade ' || g FROM generate_series(1, 2000) g;
INSERT INTO child_null SELECT g, g, 'null ' || g FROM generate_series(1, 2000) g;
INSERT INTO child_restrict SELECT g, g, 'restrict ' || g FROM generate_series(1, 2000) g;";

const TABLES: [&str; 4] = ["parent", "child_cascade", "child_null", "child_restrict"];

/// One transaction on the source, valid there: parents `upd` updated (non-key columns),
/// parents and children `new` inserted, a child re-parented to a new parent, and the children
/// of parents `gone` deleted, then those parents.
fn workload(upd: (u32, u32), new: (u32, u32), gone: (u32, u32)) -> String {
    let mut sql = format!(
        "BEGIN;\n\
         UPDATE parent SET name = name || ' v2', n = n + 1 WHERE id BETWEEN {} AND {};\n\
         INSERT INTO parent SELECT g, 'new ' || g, g FROM generate_series({}, {}) g;\n",
        upd.0, upd.1, new.0, new.1
    );
    for c in &TABLES[1..] {
        sql.push_str(&format!(
            "INSERT INTO {c} SELECT g, g, 'new ' || g FROM generate_series({}, {}) g;\n\
             UPDATE {c} SET v = 'moved', parent_id = {} WHERE id = {};\n\
             DELETE FROM {c} WHERE parent_id BETWEEN {} AND {};\n",
            new.0, new.1, new.0, upd.0, gone.0, gone.1
        ));
    }
    sql.push_str(&format!(
        "DELETE FROM parent WHERE id BETWEEN {} AND {};\nCOMMIT;",
        gone.0, gone.1
    ));
    sql
}

/// One cluster: `src` (drover is `postgres`) and `dst`, owned by the non-superuser `drover`,
/// who owns its tables and may not set session_replication_role.
struct Fk {
    c: Cluster,
    dir: tempfile::TempDir,
}

impl Fk {
    /// On the system's PostgreSQL, or on `major` (fetched by `support::versions`).
    fn start(major: Option<u32>) -> Fk {
        // The statement log shows which apply path each round took.
        let c = Cluster::start_with(ClusterOptions {
            conf: vec![("log_statement".into(), "'all'".into())],
            bin_dir: major.map(support::versions::bin_dir),
            ..Default::default()
        });
        if let Some(major) = major {
            assert_eq!(c.version_num() / 10_000, major);
        }
        c.psql(
            "postgres",
            "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        );
        c.create_db("src");
        c.psql("postgres", "CREATE DATABASE dst OWNER drover");
        c.psql("src", &format!("{SCHEMA}{FILL}"));
        c.psql("dst", &format!("SET ROLE drover; {SCHEMA}{FILL}"));
        Fk {
            c,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn config(&self, replica_role: &str) -> PathBuf {
        let toml = format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}\
             [databases.dst]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"dst\"\nuser = \"drover\"\n\
             replica_role = \"{replica_role}\"\n\
             [relgroups.g]\ntables = [\"public.child_restrict\", \"public.child_null\", \
             \"public.parent\", \"public.child_cascade\"]\n\
             [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
             initial_copy = \"never\"\n",
            free_port(),
            self.c.database_toml("src", "src"),
            self.c.port
        );
        write_config(self.dir.path(), &toml)
    }

    fn assert_same(&self, when: &str) {
        for t in TABLES {
            assert_eq!(
                table_md5(&self.c, "src", t, "id"),
                table_md5(&self.c, "dst", t, "id"),
                "{t} differs between src and dst {when}"
            );
        }
    }
}

fn assert_good(cfg: &std::path::Path) {
    let s = sync_status(cfg, "s");
    assert_eq!(s["state"], "good", "{s}");
}

/// Small rounds (the VALUES path), a large round (the COPY path) and `drover copy --table` of
/// the parent, each leaving every table equal to the source's.
fn fk_actions_stay_intact(replica_role: &str, major: Option<u32>) {
    let m = Fk::start(major);
    let cfg = m.config(replica_role);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("drover.origin guard only"), "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    // Small: 30 updated, 20 new, 5 gone per table: well under 200 pending rows.
    m.c.psql("src", &workload((1, 30), (5001, 5020), (41, 45)));
    drover_wait(&cfg, "s", 60);
    m.assert_same("after a small round");
    assert_good(&cfg);
    let log = m.c.log();
    assert!(
        log.contains(
            r#"UPDATE "public"."parent" AS t SET "name" = r."name", "n" = r."n" FROM (VALUES"#
        ),
        "the small round did not update parents in place"
    );
    assert!(
        !log.contains("COPY pg_temp.drover_rows_"),
        "a small round took the COPY path"
    );

    // Large: 900 updated, 300 new, 300 gone: the COPY path.
    m.c.psql("src", &workload((100, 999), (6001, 6300), (1000, 1299)));
    drover_wait(&cfg, "s", 60);
    m.assert_same("after a large round");
    assert_good(&cfg);
    assert!(
        m.c.log().contains("COPY pg_temp.drover_rows_"),
        "the large round did not load its rows into a temp table"
    );

    // A forced copy of the referenced parent leaves its children alone.
    m.c.psql("src", "UPDATE parent SET n = -n WHERE id % 3 = 0");
    let out = drover_ok(&cfg, &["copy", "s", "--table", "public.parent"]);
    assert!(out.contains("public.parent -> dst: done: "), "{out}");
    drover_wait(&cfg, "s", 60);
    m.assert_same("after drover copy --table public.parent");
    assert_good(&cfg);
    daemon.stop();
    assert_eq!(daemon.status().and_then(|s| s.code()), Some(0));
}

#[test]
fn fk_actions_with_replica_role_off() {
    fk_actions_stay_intact("off", None);
}

#[test]
fn fk_actions_on_postgres_10() {
    fk_actions_stay_intact("off", Some(10));
}

#[test]
fn fk_actions_with_replica_role_auto_on_a_non_superuser() {
    fk_actions_stay_intact("auto", None);
}

/// A partitioned target (plain on the source) takes the in-place apply too: UPDATE ... FROM
/// and INSERT ... SELECT route rows to their partitions, small rounds and large.
#[test]
fn partitioned_target_updates_in_place() {
    let c = Cluster::start();
    c.create_db("src");
    c.create_db("dst");
    c.psql("src", "CREATE TABLE ev (id int PRIMARY KEY, v text)");
    c.psql(
        "dst",
        "CREATE TABLE ev (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (MINVALUE) TO (1000);
         CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (1000) TO (MAXVALUE);",
    );
    let fill = "INSERT INTO ev SELECT g, 'v' || g FROM generate_series(1, 2000) g";
    c.psql("src", fill);
    c.psql("dst", fill);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}replica_role = \"off\"\n\
         [relgroups.g]\ntables = [\"ev\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
         initial_copy = \"never\"\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    for sql in [
        "UPDATE ev SET v = 'small' WHERE id BETWEEN 990 AND 1010; DELETE FROM ev WHERE id = 5; \
         INSERT INTO ev VALUES (3000, 'new')",
        "UPDATE ev SET v = 'large' WHERE id % 3 = 0; DELETE FROM ev WHERE id % 7 = 0; \
         INSERT INTO ev SELECT g, 'new' FROM generate_series(4000, 4500) g",
    ] {
        c.psql("src", sql);
        drover_wait(&cfg, "s", 60);
        assert_eq!(
            table_md5(&c, "src", "ev", "id"),
            table_md5(&c, "dst", "ev", "id"),
            "ev differs after: {sql}"
        );
    }
    assert_eq!(sync_status(&cfg, "s")["state"], "good");
    daemon.stop();
}

/// Item 8 at 1M rows: a key-less table and a configured key without an index on the target,
/// thousands of deletes and updates, applied without planner switches (a nested loop over
/// either table would take minutes, past the wait's deadline).
#[test]
fn million_row_tables_without_a_target_index() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE bare (id int, v text);
             CREATE TABLE conf (id int NOT NULL, v text);
             INSERT INTO bare SELECT g, 'v' || g FROM generate_series(1, 1000000) g;
             INSERT INTO conf SELECT g, 'v' || g FROM generate_series(1, 1000000) g;",
        );
    }
    // The source has an index for its own queries; the target has none.
    c.psql("src", "CREATE INDEX ON conf (id); ANALYZE conf, bare;");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}replica_role = \"off\"\n\
         [relgroups.g]\ntables = [\"bare\", \"conf\"]\n\
         [relgroups.g.keys]\n\"public.conf\" = [\"id\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
         initial_copy = \"never\"\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql(
        "src",
        "BEGIN;
         DELETE FROM bare WHERE id % 500 = 0;
         UPDATE bare SET v = v || ' changed' WHERE id % 499 = 1;
         DELETE FROM conf WHERE id % 500 = 0;
         UPDATE conf SET v = v || ' changed' WHERE id % 499 = 1;
         INSERT INTO conf SELECT g, 'new' FROM generate_series(1000001, 1002000) g;
         COMMIT;",
    );
    drover_wait(&cfg, "s", 120);
    for (t, order) in [("bare", "md5_row_::text"), ("conf", "id")] {
        assert_eq!(
            table_md5(&c, "src", t, order),
            table_md5(&c, "dst", t, order),
            "{t} differs"
        );
    }
    assert_eq!(sync_status(&cfg, "s")["state"], "good");
    daemon.stop();
}

/// Multi-master between two non-superuser masters (the origin guard only, FKs live on both):
/// each master's updates of referenced parents reach the other in place.
#[test]
fn multimaster_fk_actions_stay_intact() {
    let c = Cluster::start();
    c.psql(
        "postgres",
        "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
    );
    for db in ["a", "b"] {
        c.psql("postgres", &format!("CREATE DATABASE {db} OWNER drover"));
        c.psql(db, &format!("SET ROLE drover; {SCHEMA}{FILL}"));
    }
    let db = |name: &str| {
        format!(
            "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{name}\"\nuser = \"drover\"\n",
            c.port
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}\
         [relgroups.g]\ntables = [\"public.child_restrict\", \"public.child_null\", \
         \"public.parent\", \"public.child_cascade\"]\n\
         [syncs.mm]\nrelgroup = \"g\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        db("a"),
        db("b")
    );
    let cfg = write_config(dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("drover.origin guard only"), "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    c.psql("a", &workload((1, 30), (5001, 5020), (41, 45)));
    c.psql("b", &workload((50, 80), (7001, 7020), (91, 95)));
    drover_wait(&cfg, "mm", 60);
    c.psql("a", &workload((100, 999), (6001, 6300), (1000, 1299)));
    drover_wait(&cfg, "mm", 60);
    for t in TABLES {
        assert_eq!(
            table_md5(&c, "a", t, "id"),
            table_md5(&c, "b", t, "id"),
            "{t} differs between the masters"
        );
    }
    assert_eq!(sync_status(&cfg, "mm")["state"], "good");
    daemon.stop();
}

/// Updating in place must not wedge where two rows swap values of a unique index other than
/// the key in one round (an UPDATE checks each row as it goes; DELETE + INSERT of both is
/// valid): a table no foreign key references is then applied as delete + insert. Small and
/// large rounds.
#[test]
fn unique_swaps_in_place_do_not_wedge() {
    let c = Cluster::start();
    for db in ["src", "dst"] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE slots (id int PRIMARY KEY, pos int NOT NULL UNIQUE, v text);
             INSERT INTO slots SELECT g, g, 'v' || g FROM generate_series(1, 1000) g;",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}replica_role = \"off\"\n\
         [relgroups.g]\ntables = [\"slots\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
         initial_copy = \"never\"\n",
        free_port(),
        c.database_toml("src", "src"),
        c.database_toml("dst", "dst"),
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    for sql in [
        // Rows 1 and 2 swap positions: a small round.
        "BEGIN; UPDATE slots SET pos = -pos, v = 'swapped' WHERE id IN (1, 2);
         UPDATE slots SET pos = 3 + pos WHERE id IN (1, 2); COMMIT;",
        // Every position reversed: a large round.
        "BEGIN; UPDATE slots SET pos = -pos; UPDATE slots SET pos = 1001 + pos; COMMIT;",
    ] {
        c.psql("src", sql);
        drover_wait(&cfg, "s", 60);
        assert_eq!(
            table_md5(&c, "src", "slots", "id"),
            table_md5(&c, "dst", "slots", "id"),
            "slots differs after: {sql}"
        );
    }
    assert_eq!(sync_status(&cfg, "s")["state"], "good");
    daemon.stop();
}
