//! install / uninstall: idempotent, follows config changes (tables added and removed, pending
//! changes of kept tables preserved), fan-out to two targets, and uninstall leaves nothing.

mod support;

use support::scenario::*;
use support::*;

fn config(c: &Cluster, listen: u16, tables: &[&str], targets: &[&str]) -> String {
    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    let tlist: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let mut toml = format!("[daemon]\nlisten = \"127.0.0.1:{listen}\"\n");
    toml.push_str(&c.database_toml("src", "src"));
    for t in targets {
        toml.push_str(&c.database_toml(t, t));
    }
    toml.push_str(&format!(
        "[relgroups.g]\ntables = [{}]\n[syncs.s]\nrelgroup = \"g\"\nsources = [\"src\"]\ntargets = [{}]\n",
        list.join(", "),
        tlist.join(", ")
    ));
    toml
}

fn triggers(c: &Cluster, table: &str) -> String {
    c.psql(
        "src",
        &format!("SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal"),
    )
}

#[test]
fn reinstall_follows_config_and_uninstall_cleans_up() {
    let c = Cluster::start();
    for db in ["src", "t1", "t2"] {
        c.create_db(db);
        c.psql(db, "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text); CREATE TABLE c (id int PRIMARY KEY, v text);");
    }
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let cfg = write_config(dir.path(), &config(&c, listen, &["a", "b"], &["t1", "t2"]));
    drover_ok(&cfg, &["install"]);
    drover_ok(&cfg, &["install"]); // idempotent
    assert_eq!(
        c.psql(
            "src",
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM drover.tables"
        ),
        "public.a,public.b"
    );
    assert_eq!(
        triggers(&c, "a"),
        "drover_capture_del,drover_capture_ins,drover_capture_trunc,drover_capture_upd"
    );
    assert_eq!(
        c.psql(
            "t1",
            "SELECT count(*) FROM drover.progress WHERE snapshot = '1:1:'"
        ),
        "2"
    );

    // A change to b is pending when the config changes: it must survive the reinstall.
    c.psql("src", "INSERT INTO b VALUES (1, 'kept across reinstall')");
    let cfg = write_config(dir.path(), &config(&c, listen, &["b", "c"], &["t1", "t2"]));
    let out = drover_ok(&cfg, &["install"]);
    assert!(
        out.contains("added: public.c") && out.contains("removed: public.a"),
        "{out}"
    );
    assert_eq!(
        c.psql(
            "src",
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM drover.tables"
        ),
        "public.b,public.c"
    );
    assert_eq!(triggers(&c, "a"), "", "capture removed from a");
    assert_eq!(
        c.psql(
            "t1",
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM drover.progress"
        ),
        "public.b,public.c"
    );

    c.psql("src", "INSERT INTO c VALUES (1, 'new table'); INSERT INTO a VALUES (1, 'not replicated any more')");
    let mut daemon = Daemon::start(&cfg);
    wait_for_daemon(&cfg);
    drover_wait(&cfg, "s", 60);
    for t in ["t1", "t2"] {
        for table in ["b", "c"] {
            assert_eq!(
                table_md5(&c, "src", table, "id"),
                table_md5(&c, t, table, "id"),
                "{table} on {t}"
            );
        }
        assert_eq!(c.psql(t, "SELECT count(*) FROM a"), "0");
    }
    daemon.stop();

    drover_ok(&cfg, &["uninstall"]);
    drover_ok(&cfg, &["uninstall"]); // idempotent
    for db in ["src", "t1", "t2"] {
        assert_eq!(
            c.psql(
                db,
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'drover'"
            ),
            "0"
        );
    }
    assert_eq!(triggers(&c, "b"), "");
    assert_eq!(
        c.psql(
            "src",
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture_%'"
        ),
        "0"
    );
}

#[test]
fn install_reports_missing_table_and_changes_nothing() {
    let c = Cluster::start();
    for db in ["src", "t1"] {
        c.create_db(db);
    }
    c.psql("src", "CREATE TABLE a (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &config(&c, free_port(), &["a", "\\\"Missing\\\""], &["t1"]),
    );
    let out = drover(&cfg, &["install"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("table public.\"Missing\" does not exist"),
        "{stdout}"
    );
    // One transaction per database: the source has no half-installed schema.
    assert_eq!(
        c.psql(
            "src",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'drover'"
        ),
        "0"
    );
    let check = drover(&cfg, &["check"]);
    assert_eq!(check.status.code(), Some(1));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("database \"t1\": table public.a does not exist"),
        "{text}"
    );
}
