//! Managed targets (RDS/Aurora style, issue 4 item 6): the target's drover user is not a
//! superuser but owns the tables, and an admin created the seed document's SECURITY DEFINER
//! `public.rds_session_replication_role(role text)`, revoked it from PUBLIC and granted it to
//! that user. Each `replica_role` setting is checked against what it must do on the target:
//! user triggers and foreign keys silenced (auto, function:NAME), or firing (off), or a clear
//! `check` failure (set without the privilege). The server log (log_statement = all) shows
//! whether the helper's session-wide SET was put back before every commit.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use support::scenario::*;
use support::*;

/// The seed document's helper, verbatim.
const SEED_FUNCTION: &str = r#"CREATE OR REPLACE FUNCTION public.rds_session_replication_role(role text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
AS $function$
        DECLARE
                curr_val text := 'unset';
        BEGIN
                EXECUTE 'SET session_replication_role = ' || quote_literal(role);
                EXECUTE 'SHOW session_replication_role' INTO curr_val;
                RETURN curr_val;
        END
$function$;
revoke all on function rds_session_replication_role(text) from public;
grant execute on function rds_session_replication_role(text) to drover;"#;

/// What `check` prints for each method (src/pg/facts.rs `describe`).
const FUNCTION_METHOD: &str = "apply method: session_replication_role = replica through a \
     SECURITY DEFINER function (SELECT \"public\".\"rds_session_replication_role\"('replica'))";
const ORIGIN_METHOD: &str = "apply method: drover.origin guard only";

/// A BEFORE INSERT trigger that makes every insert fail, and an audit trigger recording every
/// row change; both on the replicated table, created by its owner. The audit function names
/// its table with the schema: in drover's apply sessions `search_path` is `pg_catalog, pg_temp`
/// (as in PostgreSQL's own logical replication apply worker, where it is empty).
const USER_TRIGGERS: &str = "SET ROLE drover;
    CREATE TABLE audit (op text NOT NULL, item_id int NOT NULL);
    CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.audit VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
        RETURN NULL;
    END $$;
    CREATE TRIGGER items_audit AFTER INSERT OR UPDATE OR DELETE ON items
        FOR EACH ROW EXECUTE PROCEDURE audit_items();";
const FAILING_TRIGGER: &str = "SET ROLE drover;
    CREATE FUNCTION refuse_items() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'user trigger fired on items row %', NEW.id;
    END $$;
    CREATE TRIGGER items_refuse BEFORE INSERT ON items
        FOR EACH ROW EXECUTE PROCEDURE refuse_items();";

/// One cluster playing both sides: `src` (the legacy server, where drover is `postgres`) and
/// `dst` (the managed target, where drover is the non-superuser `drover`, owner of the
/// database and of its tables, and `postgres` plays the service's admin). Statements are logged
/// with the backend pid, user and database, for `assert_role_reset_before_commit`.
struct Managed {
    c: Cluster,
    dir: tempfile::TempDir,
    listen: u16,
}

impl Managed {
    /// `rows` rows in `items` on both sides (0: the target starts empty).
    fn start(rows: u32) -> Managed {
        let c = Cluster::start_with(ClusterOptions {
            conf: vec![
                ("log_statement".into(), "'all'".into()),
                ("log_line_prefix".into(), "'%p|%u|%d|'".into()),
            ],
            ..Default::default()
        });
        c.psql(
            "postgres",
            "CREATE ROLE drover LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        );
        c.create_db("src");
        c.psql("postgres", "CREATE DATABASE dst OWNER drover");
        let table = "CREATE TABLE items (id int PRIMARY KEY, note text, n int)";
        c.psql("src", table);
        c.psql("dst", &format!("SET ROLE drover; {table}"));
        let fill = format!(
            "INSERT INTO items SELECT g, 'note ' || g, g * 7 FROM generate_series(1, {rows}) g"
        );
        c.psql("src", &fill);
        c.psql("dst", &format!("SET ROLE drover; {fill}"));
        // The admin's part, as in the seed document.
        c.psql("dst", SEED_FUNCTION);
        assert_eq!(
            c.psql(
                "dst",
                "SELECT rolsuper FROM pg_roles WHERE rolname = 'drover'"
            ),
            "f"
        );
        assert_eq!(
            c.psql(
                "dst",
                "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
            ),
            "drover"
        );
        Managed {
            c,
            dir: tempfile::tempdir().expect("temp dir"),
            listen: free_port(),
        }
    }

    fn config(&self, replica_role: &str, initial_copy: &str) -> PathBuf {
        let toml = format!(
            "[daemon]\nlisten = \"127.0.0.1:{}\"\n{}\
             [databases.dst]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"dst\"\nuser = \"drover\"\n\
             replica_role = \"{replica_role}\"\n\
             [relgroups.g]\ntables = [\"public.items\"]\n\
             [syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [\"dst\"]\n\
             initial_copy = \"{initial_copy}\"\n",
            self.listen,
            self.c.database_toml("src", "src"),
            self.c.port
        );
        write_config(self.dir.path(), &toml)
    }

    fn assert_same(&self) {
        assert_eq!(
            table_md5(&self.c, "src", "items", "id"),
            table_md5(&self.c, "dst", "items", "id"),
            "items differs between src and dst"
        );
    }

    /// Distinct audited row ids per operation: "DELETE:1,2|INSERT:3".
    fn audit(&self) -> String {
        self.c.psql(
            "dst",
            "SELECT coalesce(string_agg(op || ':' || ids, '|' ORDER BY op), '') FROM \
             (SELECT op, string_agg(item_id::text, ',' ORDER BY item_id) AS ids \
              FROM (SELECT DISTINCT op, item_id FROM audit) d GROUP BY op) a",
        )
    }
}

/// The `apply method:` line `check` printed for database `db`.
fn apply_method(check: &str, db: &str) -> String {
    let mut lines = check
        .lines()
        .skip_while(|l| !l.starts_with(&format!("database {db} ")));
    lines.next();
    lines
        .take_while(|l| l.starts_with("  "))
        .find(|l| l.trim_start().starts_with("apply method:"))
        .unwrap_or_else(|| panic!("no apply method for {db} in:\n{check}"))
        .trim()
        .to_string()
}

fn ids(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// Cases (a) and (b): with the helper function in use, a failing user trigger and an audit
/// trigger on the target table stay silent during apply, and a foreign key from another table
/// is not checked (the delete of a referenced row is applied, leaving the reference dangling).
fn replica_via_function(replica_role: &str) {
    let m = Managed::start(100);
    m.c.psql(
        "dst",
        "SET ROLE drover; CREATE TABLE refs (item_id int NOT NULL REFERENCES items (id)); \
         INSERT INTO refs VALUES (1), (2), (3), (50);",
    );
    m.c.psql("dst", USER_TRIGGERS);
    m.c.psql("dst", FAILING_TRIGGER);
    // The triggers and the key are live for any other session of the same user.
    let refused = m.c.try_psql(
        "dst",
        "SET ROLE drover; INSERT INTO items VALUES (1000, 'x', 0)",
    );
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("user trigger fired on items row 1000")),
        "{refused:?}"
    );
    let cfg = m.config(replica_role, "never");

    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    assert_eq!(apply_method(&check, "dst"), FUNCTION_METHOD, "{check}");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    m.c.psql(
        "src",
        "UPDATE items SET note = 'changed', n = -n WHERE id <= 20; \
         INSERT INTO items SELECT g, 'new ' || g, g FROM generate_series(101, 150) g; \
         DELETE FROM items WHERE id IN (1, 2, 3, 90);",
    );
    drover_wait(&cfg, "s", 120);
    m.assert_same();
    assert_eq!(m.audit(), "", "user triggers fired during apply");
    // FK not checked: the applied deletes left refs pointing at missing rows.
    assert_eq!(
        m.c.psql(
            "dst",
            "SELECT string_agg(item_id::text, ',' ORDER BY item_id) FROM refs r \
             WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = r.item_id)"
        ),
        "1,2,3"
    );
    let s = sync_status(&cfg, "s");
    assert_eq!(s["state"], "good", "{s}");
    // 17 updated rows and 50 new ones at least (more if the statements split over rounds).
    assert!(s["rows_inserted"].as_u64().unwrap() >= 67, "{s}");
    daemon.stop();
    assert_eq!(daemon.status().and_then(|s| s.code()), Some(0));
    assert_role_reset_before_commit(&m.c, 1);
}

#[test]
fn auto_finds_the_helper_function() {
    replica_via_function("auto");
}

#[test]
fn function_named_in_config() {
    replica_via_function("function:public.rds_session_replication_role");
}

/// Case (c): `off` applies through the drover.origin guard; the user's audit trigger fires for
/// every row drover writes.
#[test]
fn off_uses_the_origin_guard_and_user_triggers_fire() {
    let m = Managed::start(100);
    m.c.psql("dst", USER_TRIGGERS);
    let cfg = m.config("off", "never");
    let check = drover_ok(&cfg, &["check"]);
    assert!(check.contains("no problems found"), "{check}");
    assert!(
        apply_method(&check, "dst").starts_with(ORIGIN_METHOD),
        "{check}"
    );
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);

    m.c.psql(
        "src",
        "UPDATE items SET note = 'changed' WHERE id <= 20; \
         INSERT INTO items SELECT g, 'new ' || g, g FROM generate_series(101, 150) g; \
         DELETE FROM items WHERE id BETWEEN 90 AND 95;",
    );
    drover_wait(&cfg, "s", 120);
    m.assert_same();
    // With triggers and foreign keys live, an update arrives as an update in place (a delete
    // + insert would fire ON DELETE actions: issue 10 item 2), an insert as an insert, a
    // delete as a delete: the trigger saw exactly those rows.
    assert_eq!(
        m.audit(),
        format!(
            "DELETE:{}|INSERT:{}|UPDATE:{}",
            ids(90..=95).join(","),
            ids(101..=150).join(","),
            ids(1..=20).join(",")
        )
    );
    assert_eq!(sync_status(&cfg, "s")["state"], "good");
    daemon.stop();
    // No helper calls at all with "off", and drover's sessions did write there.
    let statements = drover_statements(&m.c);
    assert!(statements.iter().any(|(_, s)| s == "COMMIT"));
    assert!(
        !statements
            .iter()
            .any(|(_, s)| s.contains("rds_session_replication_role")),
        "the helper was called with replica_role = off"
    );
}

/// Case (d): `set` for a user that may not set session_replication_role is a `check` problem
/// naming the database and the setting.
#[test]
fn set_without_the_privilege_fails_check() {
    let m = Managed::start(10);
    let cfg = m.config("set", "never");
    let out = drover(&cfg, &["check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    let problem = text
        .lines()
        .find(|l| l.contains("database \"dst\"") && l.contains("replica_role = \"set\""))
        .unwrap_or_else(|| panic!("no problem line naming dst and replica_role:\n{text}"));
    assert!(problem.contains("permission denied"), "{problem}");
    eprintln!("{text}");
    // The source (a superuser) is fine with "set": only dst is a problem.
    assert!(!text.contains("database \"src\": replica_role"), "{text}");
}

/// Case (e): the helper sets the role for the whole session, so drover must set it back before
/// each commit. Initial copy into an empty target (with the failing trigger in place), then
/// many rounds; the statement log shows no commit in replica mode on any drover session, and a
/// new session of the drover user starts in origin mode.
#[test]
fn helper_role_is_reset_before_every_commit() {
    let m = Managed::start(0);
    m.c.psql(
        "src",
        "INSERT INTO items SELECT g, 'note ' || g, g FROM generate_series(1, 5000) g",
    );
    m.c.psql("dst", USER_TRIGGERS);
    m.c.psql("dst", FAILING_TRIGGER);
    let cfg = m.config("auto", "always");
    drover_ok(&cfg, &["install"]);
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    // The initial copy first: a change made before its snapshot would ride along with it
    // instead of getting a round (and a commit) of its own.
    drover_wait(&cfg, "s", 60);
    const ROUNDS: u32 = 40;
    for i in 1..=ROUNDS {
        m.c.psql(
            "src",
            &format!(
                "UPDATE items SET n = n + 1 WHERE id % {ROUNDS} = {}; \
                 INSERT INTO items VALUES ({}, 'round {i}', {i})",
                i % ROUNDS,
                10_000 + i
            ),
        );
        drover_wait(&cfg, "s", 60);
    }
    m.assert_same();
    assert_eq!(m.audit(), "", "user triggers fired during copy or apply");
    let s = sync_status(&cfg, "s");
    assert_eq!(s["state"], "good", "{s}");
    assert!(s["rounds"].as_u64().unwrap() >= u64::from(ROUNDS), "{s}");
    assert!(
        s["copy"]
            .as_array()
            .is_some_and(|c| c.iter().all(|t| t["state"] == "done") && !c.is_empty()),
        "{s}"
    );
    daemon.stop();
    assert_eq!(daemon.status().and_then(|s| s.code()), Some(0));
    // The copy and each round committed once with the helper's role put back.
    assert_role_reset_before_commit(&m.c, 1 + ROUNDS as usize);
    let fresh = psql_as(
        &m.c,
        "drover",
        "dst",
        "SELECT current_user || ' ' || current_setting('session_replication_role')",
    );
    assert_eq!(fresh, "drover origin");
}

/// The statements drover's sessions ran on dst, as (backend pid, statement), from the server
/// log (log_statement = all, prefix `pid|user|db|`).
fn drover_statements(c: &Cluster) -> Vec<(String, String)> {
    c.log()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '|');
            let (Some(pid), Some("drover"), Some("dst"), Some(rest)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            let stmt = rest
                .strip_prefix("LOG:  statement: ")
                .or_else(|| rest.strip_prefix("LOG:  execute "))?;
            Some((pid.to_string(), stmt.trim().to_string()))
        })
        .collect()
}

/// Session state while replaying the log.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Origin,
    /// The helper set 'replica'.
    Replica,
    /// The helper set 'origin' again after 'replica', in the same transaction.
    Reset,
}

/// Replays the statement log of every drover session on dst: a helper call with 'replica'
/// puts the session in replica mode until a call with 'origin' or a ROLLBACK; no COMMIT may
/// come while in replica mode. Asserts that at least `min_commits` commits came after a reset.
fn assert_role_reset_before_commit(c: &Cluster, min_commits: usize) {
    let mut sessions: HashMap<String, Role> = HashMap::new();
    let (mut resets_committed, mut helper_calls) = (0, 0);
    for (pid, stmt) in drover_statements(c) {
        let role = sessions.entry(pid.clone()).or_insert(Role::Origin);
        if stmt.contains("rds_session_replication_role\"('replica')") {
            helper_calls += 1;
            *role = Role::Replica;
        } else if stmt.contains("rds_session_replication_role\"('origin')") {
            if *role == Role::Replica {
                *role = Role::Reset;
            }
        } else if stmt == "ROLLBACK" {
            *role = Role::Origin;
        } else if stmt == "COMMIT" {
            assert!(
                *role != Role::Replica,
                "backend {pid} committed while session_replication_role was still replica"
            );
            if *role == Role::Reset {
                resets_committed += 1;
            }
            *role = Role::Origin;
        }
    }
    assert!(helper_calls > 0, "no helper calls in the server log");
    assert!(
        resets_committed >= min_commits,
        "only {resets_committed} commits after a reset to origin (expected at least \
         {min_commits}); {helper_calls} helper calls"
    );
    eprintln!("{helper_calls} helper calls, {resets_committed} commits after a reset to origin");
}

/// Runs `sql` with psql as `user` in a session of its own; returns trimmed stdout.
fn psql_as(c: &Cluster, user: &str, db: &str, sql: &str) -> String {
    let out = run_with_timeout(
        std::process::Command::new(std::path::Path::new(DEFAULT_BIN_DIR).join("psql"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(c.port.to_string())
            .args(["-U", user, "-d", db, "-c", sql]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "psql as {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
