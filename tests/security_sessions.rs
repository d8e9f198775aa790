//! Hostile roles on a shared server (issue 11, sessions and schema objects). An unprivileged
//! role `app` may CREATE in `public` (PostgreSQL 14 and older by default; granted here on the
//! system server) and plants functions and an operator there that would win over `pg_catalog`
//! for calls without an exact match (the CVE-2018-1058 pattern). Each planted object records
//! that it ran (a row in `public.planted_marker` with the caller's application_name, and a
//! WARNING in the server log), so the tests can check that none of drover's sessions ever ran
//! one. The same role tries to write without being captured (`SET drover.origin`), owns a fake
//! `rds_session_replication_role` helper, and pre-creates a `drover` schema.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

/// Rows of a round that goes through the COPY path (more than the small-round limit).
const BIG: u32 = 600;

/// What `app` plants in `public` of a database: each object writes a marker and a WARNING,
/// then does what the `pg_catalog` original would. `app` runs it as whoever calls it.
const PLANTED: &str = r#"
SET ROLE app;
CREATE TABLE public.planted_marker (what text NOT NULL, app_name text, who text);
GRANT ALL ON public.planted_marker TO PUBLIC;
CREATE FUNCTION public.planted_ran(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE WARNING 'planted % ran in %', what, current_setting('application_name');
  BEGIN
    INSERT INTO public.planted_marker VALUES (what, current_setting('application_name'), session_user);
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
END $$;
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a integer[]) RETURNS SETOF integer LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('unnest(integer[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('unnest(bigint[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a character varying[]) RETURNS SETOF character varying LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('unnest(varchar[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.jsonb_build_object(k text, v integer) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('jsonb_build_object(text, integer)'); RETURN pg_catalog.jsonb_build_object(k, v); END $$;
CREATE FUNCTION public.jsonb_build_object(k text, v text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('jsonb_build_object(text, text)'); RETURN pg_catalog.jsonb_build_object(k, v); END $$;
CREATE FUNCTION public.planted_eq(a character varying, b character varying) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.planted_ran('= (varchar, varchar)'); RETURN a::text OPERATOR(pg_catalog.=) b::text; END $$;
CREATE OPERATOR public.= (LEFTARG = character varying, RIGHTARG = character varying, PROCEDURE = public.planted_eq);
RESET ROLE;
"#;

/// The replicated tables: an integer key with an array and a varchar column, and a varchar key.
const TABLES: &str =
    "CREATE TABLE public.items (id int PRIMARY KEY, code varchar(20), tags text[], note text);
CREATE TABLE public.vk (k varchar(20) PRIMARY KEY, n int);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.items, public.vk TO app;";

fn fill(from: u32, to: u32) -> String {
    format!(
        "INSERT INTO public.items SELECT g, 'c' || g, ARRAY['t' || g, 'u'], 'note ' || g FROM generate_series({from}, {to}) g;
         INSERT INTO public.vk SELECT 'k' || g, g FROM generate_series({from}, {to}) g;"
    )
}

/// A cluster with `app` (no superuser) and databases `names`, each with the tables and, where
/// `plant`, app's objects in `public`.
fn shared_cluster(names: &[&str], plant: bool) -> Cluster {
    let c = Cluster::start();
    c.psql("postgres", "CREATE ROLE app LOGIN NOSUPERUSER");
    for db in names {
        c.create_db(db);
        // PostgreSQL 14 and older: every role may create objects in public.
        c.psql(db, "GRANT CREATE ON SCHEMA public TO PUBLIC");
        c.psql(db, TABLES);
        if plant {
            c.psql(db, PLANTED);
        }
    }
    c
}

fn psql_as(c: &Cluster, user: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = run_with_timeout(
        std::process::Command::new(std::path::Path::new(DEFAULT_BIN_DIR).join("psql"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(c.port.to_string())
            .args(["-U", user, "-d", db, "-f", "-"]),
        Some(sql),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The marker rows left by drover's sessions (application_name `drover:...`).
fn drover_markers(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT coalesce(string_agg(what || ' in ' || app_name, '; '), '') FROM public.planted_marker \
         WHERE app_name LIKE 'drover%'",
    )
}

fn assert_same(c: &Cluster, a: &str, b: &str) {
    for (t, key) in [("public.items", "id"), ("public.vk", "k")] {
        assert_eq!(
            table_md5(c, a, t, key),
            table_md5(c, b, t, key),
            "{t} differs between {a} and {b}"
        );
    }
}

fn assert_nothing_planted_ran(c: &Cluster, dbs: &[&str]) {
    for db in dbs {
        assert_eq!(drover_markers(c, db), "", "planted objects ran on {db}");
    }
    let log = c.log();
    let ran: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("planted") && l.contains("ran in drover"))
        .map(str::trim)
        .collect();
    assert!(
        ran.is_empty(),
        "planted objects ran in drover sessions: {ran:?}"
    );
}

fn one_way_config(c: &Cluster, extra_sync: &str) -> Setup {
    let mut s = one_way((c, "src"), (c, "dst"), &["public.items", "public.vk"]);
    if !extra_sync.is_empty() {
        let toml = std::fs::read_to_string(&s.config).unwrap() + extra_sync;
        s.config = write_config(s.dir.path(), &toml);
    }
    s
}

/// Install, initial copy, small and COPY-path rounds with inserts, updates and deletes,
/// `drover copy` and `drover verify`: none of app's planted objects ever runs in a drover
/// session, on the source or the target.
#[test]
fn planted_functions_and_operators_never_run() {
    let c = shared_cluster(&["src", "dst"], true);
    c.psql("src", &fill(1, 50));
    let s = one_way_config(&c, "initial_copy = \"if-empty\"\n");
    drover_ok(&s.config, &["check"]);
    drover_ok(&s.config, &["install"]);
    let mut daemon = Daemon::start(&s.config);
    wait_for_daemon(&s.config);
    // `wait` follows captured changes; the initial copy shows in the rows.
    eventually(Duration::from_secs(60), "the initial copy", || {
        table_md5(&c, "src", "public.vk", "k") == table_md5(&c, "dst", "public.vk", "k")
    });
    assert_same(&c, "src", "dst");

    // Small rounds.
    c.psql(
        "src",
        "UPDATE public.items SET note = 'changed', tags = ARRAY['x'] WHERE id <= 10;
         DELETE FROM public.items WHERE id BETWEEN 11 AND 15;
         UPDATE public.vk SET n = -n WHERE n <= 10;
         DELETE FROM public.vk WHERE n BETWEEN 11 AND 15;",
    );
    c.psql("src", &fill(51, 60));
    drover_wait(&s.config, "legacy_to_new", 120);
    assert_same(&c, "src", "dst");
    // A COPY-path round.
    c.psql("src", &fill(61, 60 + BIG));
    c.psql("src", "UPDATE public.vk SET n = n + 1 WHERE n > 100");
    drover_wait(&s.config, "legacy_to_new", 120);
    assert_same(&c, "src", "dst");
    daemon.stop();

    drover_ok(&s.config, &["copy", "legacy_to_new"]);
    assert_same(&c, "src", "dst");
    drover_ok(&s.config, &["verify", "legacy_to_new"]);
    assert_nothing_planted_ran(&c, &["src", "dst"]);
}

/// `app` sets drover.origin (any value, or drover's sync name) and writes: its writes are
/// still captured and replicated.
#[test]
fn setting_drover_origin_does_not_skip_capture() {
    let c = shared_cluster(&["src", "dst"], false);
    c.psql("src", &fill(1, 20));
    c.psql("dst", &fill(1, 20));
    let s = one_way_config(&c, "");
    drover_ok(&s.config, &["install"]);
    let mut daemon = Daemon::start(&s.config);
    wait_for_daemon(&s.config);
    for origin in ["x", "legacy_to_new"] {
        psql_as(
            &c,
            "app",
            "src",
            &format!(
                "SET drover.origin = '{origin}';
                 INSERT INTO public.items VALUES (1000 + length('{origin}'), 'h', '{{}}', 'hostile');
                 UPDATE public.items SET note = 'hostile {origin}' WHERE id <= 5;
                 DELETE FROM public.vk WHERE n = length('{origin}');
                 BEGIN; SELECT set_config('drover.origin', '{origin}', true);
                 UPDATE public.items SET note = 'hostile local' WHERE id = 6; COMMIT;"
            ),
        )
        .expect("app writes");
    }
    drover_wait(&s.config, "legacy_to_new", 120);
    assert_same(&c, "src", "dst");
    daemon.stop();
    // The secret drover's sessions use is not readable by app.
    let read = psql_as(&c, "app", "src", "SELECT * FROM drover.secret");
    assert!(read.is_err(), "app read drover.secret: {read:?}");
}

/// A SECURITY DEFINER `public.rds_session_replication_role` owned by `app` (which may set
/// session_replication_role here) is not used by `replica_role = "auto"`.
#[test]
fn helper_owned_by_another_role_is_refused() {
    let c = shared_cluster(&["src"], false);
    c.psql(
        "postgres",
        "CREATE ROLE drover LOGIN NOSUPERUSER; CREATE DATABASE dst OWNER drover;
         GRANT SET ON PARAMETER session_replication_role TO app;",
    );
    c.psql("dst", "GRANT CREATE ON SCHEMA public TO PUBLIC");
    c.psql("dst", &format!("SET ROLE drover; {TABLES}"));
    c.psql(
        "dst",
        r#"SET ROLE app;
        CREATE TABLE public.planted_marker (what text NOT NULL, app_name text, who text);
        GRANT ALL ON public.planted_marker TO PUBLIC;
        CREATE FUNCTION public.rds_session_replication_role(role text) RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
          INSERT INTO public.planted_marker VALUES ('helper', current_setting('application_name'), session_user);
          EXECUTE 'SET session_replication_role = ' || quote_literal(role);
          RETURN current_setting('session_replication_role');
        END $$;"#,
    );
    let s = one_way_config(&c, "");
    let toml = std::fs::read_to_string(&s.config).unwrap().replace(
        "dbname = \"dst\"\nuser = \"postgres\"",
        "dbname = \"dst\"\nuser = \"drover\"",
    );
    let cfg = write_config(s.dir.path(), &toml);
    let check = drover_ok(&cfg, &["check"]);
    assert!(
        check.contains("drover.origin guard only"),
        "auto used app's helper:\n{check}"
    );
    assert_eq!(drover_markers(&c, "dst"), "", "app's helper ran");
}

/// `drover install` refuses a `drover` schema that another role created first.
#[test]
fn install_refuses_a_drover_schema_owned_by_another_role() {
    let c = shared_cluster(&["src", "dst"], false);
    c.psql("dst", "GRANT CREATE ON DATABASE dst TO app");
    psql_as(&c, "app", "dst", "CREATE SCHEMA drover").expect("app creates the schema");
    let s = one_way_config(&c, "");
    let out = drover(&s.config, &["install"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "install accepted app's schema:\n{text}"
    );
    assert!(
        text.contains("owned by") && text.contains("\"app\""),
        "the error names the owner:\n{text}"
    );
}

/// Multi-master with conflicts: the same keys changed on both masters between rounds, and
/// `app` writing with `drover.origin` set on one of them. Both converge, conflicts are logged,
/// nothing ping-pongs, and none of app's planted objects runs in a drover session.
#[test]
fn multi_master_conflicts_with_planted_objects() {
    let c = shared_cluster(&["a", "b"], true);
    for db in ["a", "b"] {
        c.psql(db, &fill(1, 40));
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}{}[relgroups.herd]\ntables = [\"public.items\", \"public.vk\"]\n\
         [syncs.mm]\nrelgroup = \"herd\"\nsources = [\"a\", \"b\"]\n",
        free_port(),
        c.database_toml("a", "a"),
        c.database_toml("b", "b")
    );
    let cfg = write_config(dir.path(), &toml);
    drover_ok(&cfg, &["install"]);
    // Both masters change the same keys before any round runs.
    for db in ["a", "b"] {
        c.psql(
            db,
            &format!(
                "UPDATE public.items SET note = 'on {db}', tags = ARRAY['{db}'] WHERE id <= 10;
                 UPDATE public.vk SET n = n + length('{db}') WHERE n <= 10;
                 DELETE FROM public.vk WHERE n BETWEEN 30 AND 32;"
            ),
        );
    }
    psql_as(
        &c,
        "app",
        "b",
        "SET drover.origin = 'mm'; INSERT INTO public.items VALUES (500, 'h', '{}', 'hostile');
         UPDATE public.vk SET n = 0 WHERE k = 'k20';",
    )
    .expect("app writes");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "mm", 120);
    assert_same(&c, "a", "b");
    let conflicts = c.psql("a", "SELECT count(*) FROM drover.conflicts");
    assert_ne!(
        conflicts, "0",
        "the same keys changed on both: conflicts expected"
    );
    for db in ["a", "b"] {
        eventually(Duration::from_secs(30), "delta tables to drain", || {
            delta_rows(&c, db) == 0
        });
    }
    daemon.stop();
    assert_nothing_planted_ran(&c, &["a", "b"]);
}
