//! Initial copy of a large table to a managed-style target (issue 10 item 3): the target's
//! drover user is not a superuser, owns the table, but may not create in its schema (the
//! PostgreSQL 15+ default for `public`). Rebuilding indexes after the load needs CREATE there,
//! so the copy must load with the indexes in place, decided before it starts, and `check` must
//! say which method the target gets.

mod support;

use support::scenario::*;
use support::*;

/// Rows in the source table: above the rebuild threshold (src/round/indexes.rs).
const ROWS: u32 = 120_000;

const TABLE: &str = "CREATE TABLE big (id int PRIMARY KEY, v text UNIQUE, n int);
                     CREATE INDEX big_n ON big (n);";

/// The `copy method` line `check` printed for database `db`.
fn copy_method(check: &str, db: &str) -> String {
    check
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("copy method on {db}:")))
        .unwrap_or_else(|| panic!("no copy method for {db} in:\n{check}"))
        .trim()
        .to_string()
}

#[test]
fn large_copy_without_create_on_schema_loads_with_indexes_in_place() {
    let c = Cluster::start();
    assert_eq!(c.version_num() / 10_000, 15);
    c.psql(
        "postgres",
        "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
    );
    c.create_db("src");
    c.create_db("dst");
    // The admin owns the database and schema public; drover may create its own schema and
    // owns the replicated table, but may not create anything in public.
    c.psql(
        "dst",
        &format!(
            "GRANT CONNECT, CREATE ON DATABASE dst TO drover; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             REVOKE CREATE ON SCHEMA public FROM drover; \
             {TABLE} ALTER TABLE big OWNER TO drover;"
        ),
    );
    c.psql("src", TABLE);
    c.psql(
        "src",
        &format!(
            "INSERT INTO big SELECT g, 'b' || g, g % 100 FROM generate_series(1, {ROWS}) g; \
             ANALYZE big;"
        ),
    );
    assert_eq!(
        c.psql(
            "src",
            &format!("SELECT reltuples >= {ROWS} FROM pg_class WHERE relname = 'big'")
        ),
        "t"
    );
    assert_eq!(
        c.psql(
            "dst",
            "SELECT has_schema_privilege('drover', 'public', 'CREATE')"
        ),
        "f"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}\
         [databases.dst]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"dst\"\nuser = \"drover\"\n\
         replica_role = \"off\"\n\
         [relgroups.g]\ntables = [\"public.big\"]\n\
         [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
         initial_copy = \"never\"\n",
        free_port(),
        c.database_toml("src", "src"),
        c.port
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    let out = drover_ok(&cfg, &["copy", "s"]);
    assert!(out.contains("public.big -> dst: done: "), "{out}");
    assert_eq!(
        table_md5(&c, "src", "big", "id"),
        table_md5(&c, "dst", "big", "id")
    );
    // Nothing was dropped: the same indexes, valid, and the unique constraint holds.
    let indexes = |db: &str| {
        c.psql(
            db,
            "SELECT string_agg(indexrelid::regclass || ':' || indisvalid, ' ' \
             ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = 'big'::regclass",
        )
    };
    assert_eq!(indexes("dst"), indexes("src"));

    let check = drover_ok(&cfg, &["check"]);
    assert_eq!(
        copy_method(&check, "dst"),
        "copy method on dst: load with indexes in place (role \"drover\" cannot create in schema \"public\")",
        "{check}"
    );
    // Once drover may create in public, it rebuilds, and that copy works as well.
    c.psql("dst", "GRANT CREATE ON SCHEMA public TO drover");
    let check = drover_ok(&cfg, &["check"]);
    assert_eq!(
        copy_method(&check, "dst"),
        "copy method on dst: rebuild indexes after load (large tables)",
        "{check}"
    );
    let before = c.psql(
        "dst",
        "SELECT string_agg(oid::text, ' ') FROM pg_class WHERE relname = 'big_n'",
    );
    let out = drover_ok(&cfg, &["copy", "s"]);
    assert!(out.contains("public.big -> dst: done: "), "{out}");
    assert_eq!(
        table_md5(&c, "src", "big", "id"),
        table_md5(&c, "dst", "big", "id")
    );
    assert_eq!(indexes("dst"), indexes("src"));
    // big_n was dropped and built again: a new relation.
    let after = c.psql(
        "dst",
        "SELECT string_agg(oid::text, ' ') FROM pg_class WHERE relname = 'big_n'",
    );
    assert_ne!(before, after, "big_n was not rebuilt");
}
