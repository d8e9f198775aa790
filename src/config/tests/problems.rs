//! Problem reports for the original keys: unknown keys, missing keys,
//! wrong types, bad values, references and write conflicts.

use super::*;

#[test]
fn unknown_keys_are_named_with_their_full_path() {
    let msg = errors(&format!(
        r#"{BASE}
        [databases.x]
        hots = "h"
        host = "h"
        dbname = "d"
        user = "u"
        sslmoed = "require"
        [database.y]
        host = "h"
        [daemon]
        listen_addr = "1.2.3.4:5"
        [relgroups.h]
        table = ["t"]
        [syncs.z]
        relgroup = "g"
        sources = ["a"]
        target = ["c"]
        "#
    ));
    assert_problem(
        &msg,
        "databases.x.hots",
        r#"unknown key "hots" (did you mean "host"?)"#,
    );
    assert_problem(&msg, "databases.x.sslmoed", r#"did you mean "sslmode"?"#);
    assert_problem(
        &msg,
        "database",
        r#"unknown key "database" (did you mean "databases"?)"#,
    );
    assert_problem(&msg, "daemon.listen_addr", r#"unknown key "listen_addr""#);
    assert_problem(&msg, "relgroups.h.table", r#"did you mean "tables"?"#);
    assert_problem(&msg, "syncs.z.target", r#"did you mean "targets"?"#);
    // relgroups.h then also lacks "tables"; syncs.z needs 2 databases.
    assert_problem(&msg, "relgroups.h.tables", "missing required key");
    assert_problem(&msg, "syncs.z", "at least two distinct databases");
    assert_lines(&msg, 8);

    let msg = errors("[databases.a]\nfrobnicate = 1\n");
    assert_problem(
        &msg,
        "databases.a.frobnicate",
        "expected one of: host, port, dbname",
    );
}

#[test]
fn missing_required_keys_are_all_reported() {
    let msg = errors(
        r#"
        [databases.a]
        port = 5432
        [relgroups.g]
        [syncs.s]
        targets = ["a"]
        "#,
    );
    for key in [
        "databases.a.host",
        "databases.a.dbname",
        "databases.a.user",
        "relgroups.g.tables",
        "syncs.s.relgroup",
        "syncs.s.sources",
    ] {
        let name = key.rsplit('.').next().unwrap();
        assert_problem(&msg, key, &format!("missing required key {name:?}"));
    }
    assert_lines(&msg, 6);
}

#[test]
fn wrong_types_are_all_reported() {
    let msg = errors(
        r#"
        [daemon]
        listen = 9187
        [databases.a]
        host = 5
        port = "5432"
        dbname = true
        user = ["u"]
        password = 12345
        [databases.b]
        host = "h"
        dbname = "d"
        user = "u"
        port = 54.32
        sslmode = { x = 1 }
        [relgroups.g]
        tables = "public.t"
        [relgroups.h]
        tables = ["t", 1, "u", false]
        [syncs.s]
        relgroup = "g"
        sources = "a"
        targets = ["b"]
        "#,
    );
    assert_problem(
        &msg,
        "daemon.listen",
        "expected a string, found integer 9187",
    );
    assert_problem(
        &msg,
        "databases.a.host",
        "expected a string, found integer 5",
    );
    assert_problem(
        &msg,
        "databases.a.port",
        r#"expected an integer, found string "5432""#,
    );
    assert_problem(
        &msg,
        "databases.a.dbname",
        "expected a string, found boolean true",
    );
    assert_problem(
        &msg,
        "databases.a.user",
        "expected a string, found an array",
    );
    assert_problem(
        &msg,
        "databases.a.password",
        "expected a string, found integer",
    );
    assert!(!msg.contains("12345"), "password leaked:\n{msg}");
    assert_problem(
        &msg,
        "databases.b.port",
        "expected an integer, found float 54.32",
    );
    assert_problem(
        &msg,
        "databases.b.sslmode",
        "expected a string, found a table",
    );
    assert_problem(
        &msg,
        "relgroups.g.tables",
        r#"expected an array of strings, found string "public.t""#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[1]",
        "expected a string, found integer 1",
    );
    assert_problem(&msg, "syncs.s.sources", "expected an array of strings");
    // Broken keys are not reported again as missing.
    assert!(!msg.contains("missing required"), "{msg}");
    // One problem per key: tables[3] (false) is not reached once tables[1]
    // is found wrong.
    assert_lines(&msg, 11);

    let msg = errors("databases = 5\nrelgroups = []\n[syncs]\nx = \"y\"\n");
    assert_problem(
        &msg,
        "databases",
        "expected a table of databases ([databases.NAME] sections), found an integer",
    );
    assert_problem(&msg, "relgroups", "found an array");
    assert_problem(
        &msg,
        "syncs.x",
        "expected a table ([syncs.x]), found a string",
    );
    assert_lines(&msg, 3);
}

#[test]
fn bad_values_are_reported() {
    let msg = errors(&format!(
        r#"{BASE}
        [daemon]
        listen = "localhost:9187"
        [databases.x]
        host = ""
        port = 70000
        dbname = "d"
        user = "u"
        sslmode = "verify_full"
        [databases.y]
        host = "h"
        port = 0
        dbname = "d"
        user = " "
        sslmode = "disable"
        sslrootcert = "/ca.pem"
        password = "p"
        password_env = "P"
        "#
    ));
    assert_problem(
        &msg,
        "daemon.listen",
        r#""localhost:9187" is not a socket address"#,
    );
    assert_problem(&msg, "databases.x.host", "must not be empty");
    assert_problem(
        &msg,
        "databases.x.port",
        "port 70000 is out of range (1-65535)",
    );
    assert_problem(
        &msg,
        "databases.x.sslmode",
        r#"invalid sslmode "verify_full", expected one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"#,
    );
    assert_problem(&msg, "databases.y.port", "port 0 is out of range");
    assert_problem(&msg, "databases.y.user", "must not be empty");
    assert_problem(&msg, "databases.y.sslrootcert", r#"sslmode is "disable""#);
    assert_problem(
        &msg,
        "databases.y.password_env",
        "either password or password_env, not both",
    );
    assert_lines(&msg, 8);
}

#[test]
fn invalid_section_names_are_reported() {
    let msg = errors(&format!(
        r#"{BASE}
        [databases.Legacy]
        host = "h"
        dbname = "d"
        user = "u"
        [relgroups."my group"]
        tables = ["t"]
        [relgroups.a__b]
        tables = ["t"]
        "#
    ));
    assert_problem(
        &msg,
        "databases.Legacy",
        r#"invalid database name "Legacy": names must be a lower-case"#,
    );
    assert_problem(
        &msg,
        "relgroups.my group",
        r#"invalid relgroup name "my group""#,
    );
    assert_problem(&msg, "relgroups.a__b", r#"must not contain "__""#);
    assert_lines(&msg, 3);
}

#[test]
fn relgroup_tables_are_checked() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["t", "public.t", '"t"', "a.b.c", 'x."y', "", "Other.T", 'other."T"', "other.t"]
        [relgroups.e]
        tables = []
        "#
    ));
    assert_problem(
        &msg,
        "relgroups.h.tables[1]",
        r#"table public.t is listed twice (also tables[0] as "t")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[2]",
        r#"table public.t is listed twice (also tables[0] as "t")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[3]",
        r#"invalid table name "a.b.c": 3 dotted parts"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[4]",
        "unterminated quoted identifier",
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[5]",
        r#"invalid table name "": it is empty"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[8]",
        r#"table other.t is listed twice (also tables[6] as "Other.T")"#,
    );
    assert_problem(&msg, "relgroups.e.tables", "must list at least one table");
    assert_lines(&msg, 7);
}

#[test]
fn sync_references_are_checked() {
    let msg = errors(&format!(
        r#"{BASE}
        [syncs.legacy_to_new]
        relgroup = "herd2"
        sources = ["a", "zz"]
        targets = ["b", "b", "a"]
        [syncs.alone]
        relgroup = "g"
        sources = ["c"]
        [syncs.nothing]
        relgroup = "g"
        sources = []
        targets = ["c"]
        [syncs.self]
        relgroup = "g"
        sources = ["c"]
        targets = ["c"]
        "#
    ));
    assert_problem(
        &msg,
        "syncs.legacy_to_new.relgroup",
        r#"no relgroup named "herd2""#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.sources[1]",
        r#"no database named "zz" (defined: "a", "b", "c")"#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.targets[1]",
        r#"database "b" is listed twice (also targets[0])"#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.targets[2]",
        r#"database "a" is both a source and a target (sources[0])"#,
    );
    assert_problem(
        &msg,
        "syncs.alone",
        "a sync needs at least two distinct databases among sources and targets, found 1: \"c\"",
    );
    assert_problem(
        &msg,
        "syncs.nothing.sources",
        "must list at least one database",
    );
    assert_problem(&msg, "syncs.self.targets[0]", "both a source and a target");
    assert_problem(&msg, "syncs.self", "found 1");
    assert_lines(&msg, 8);

    // The exact wording promised in the module documentation.
    let msg = errors(&BASE.replace(r#"relgroup = "g""#, r#"relgroup = "herd2""#));
    assert_eq!(
        msg,
        format!(r#"{FILE}: syncs.s.relgroup: no relgroup named "herd2" (defined: "g")"#)
    );
    let msg = errors(&BASE.replace(r#"relgroup = "g""#, r#"relgroup = "gg""#));
    assert!(
        msg.ends_with(r#"no relgroup named "gg" (did you mean "g"?)"#),
        "{msg}"
    );
}

#[test]
fn two_syncs_writing_one_table_into_one_database_conflict() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["public.t1", "other"]
        [syncs.second]
        relgroup = "h"
        sources = ["c"]
        targets = ["b"]
        [syncs.third]
        relgroup = "g"
        sources = ["a", "b"]
        "#
    ));
    assert_problem(
        &msg,
        "syncs.second.targets[0]",
        r#"syncs "s" and "second" both write into database "b" the same table: public.t1"#,
    );
    // third is multi-master: it writes into its sources a and b.
    assert_problem(
        &msg,
        "syncs.third.sources[1]",
        r#"syncs "s" and "third" both write into database "b" the same tables: public.t1, s.t2"#,
    );
    assert_lines(&msg, 2);

    // Different targets, or one source shared, are fine.
    let ok = format!(
        r#"{BASE}
        [syncs.fanout]
        relgroup = "g"
        sources = ["a"]
        targets = ["c"]
        "#
    );
    load_text_only(&ok).unwrap();
}

#[test]
fn every_problem_is_on_its_own_line() {
    let msg = errors(
        r#"
        bogus = 1
        [daemon]
        listen = "nope"
        [databases.a]
        hots = "x"
        [relgroups.g]
        tables = ["a.b.c"]
        [syncs.s]
        relgroup = "nope"
        sources = ["nope"]
        "#,
    );
    assert_lines(&msg, 10);
    // Sorted by key, so grouped by section entry.
    let keys: Vec<&str> = msg.lines().map(|l| l.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        keys,
        [
            "bogus",
            "daemon.listen",
            "databases.a.dbname",
            "databases.a.host",
            "databases.a.hots",
            "databases.a.user",
            "relgroups.g.tables[0]",
            "syncs.s",
            "syncs.s.relgroup",
            "syncs.s.sources[0]",
        ]
    );
}
