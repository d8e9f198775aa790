//! `relgroups.*.sequences`, `[relgroups.NAME.keys]`, and
//! `syncs.*.conflict_strategy`, `priority`, `initial_copy`.

use std::collections::BTreeMap;

use super::*;

/// BASE plus relgroup `m` (its own tables) and a multi-master sync `mm` over
/// a, b and c, followed by `extra` lines inside `[syncs.mm]`.
fn multi_master(extra: &str) -> String {
    format!(
        r#"{BASE}
        [relgroups.m]
        tables = ["m1"]
        [syncs.mm]
        relgroup = "m"
        sources = ["a", "b", "c"]
        {extra}
        "#
    )
}

#[test]
fn sequences_and_keys_are_read() {
    let cfg = load_text_only(BASE).unwrap();
    let g = &cfg.relgroups["g"];
    assert!(g.sequences.is_empty() && g.keys.is_empty());

    let cfg = load_text_only(&BASE.replace(
        r#"tables = ["t1", "s.t2"]"#,
        r#"tables = ["t1", "s.t2", '"Odd"']
        sequences = ["t1_id_seq", "S.Seq2"]
        [relgroups.g.keys]
        T1 = ["a", "B"]
        "S.t2" = ["id"]
        '"Odd"' = ["Mixed Case", "x"]"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let g = &cfg.relgroups["g"];
    assert_eq!(
        g.sequences,
        [
            TableName::new("public", "t1_id_seq"),
            TableName::new("s", "seq2")
        ]
    );
    let expected: BTreeMap<TableName, Vec<String>> = [
        (TableName::new("public", "t1"), vec!["a".into(), "B".into()]),
        (TableName::new("s", "t2"), vec!["id".into()]),
        (
            TableName::new("public", "Odd"),
            vec!["Mixed Case".into(), "x".into()],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(g.keys, expected);

    // sequences is a list key in the environment; keys is not settable there.
    let cfg = with_env(
        BASE,
        &[("DROVER__RELGROUPS__G__SEQUENCES", r#"a_seq, s."B,seq""#)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.relgroups["g"].sequences,
        [
            TableName::new("public", "a_seq"),
            TableName::new("s", "B,seq")
        ]
    );
    let msg = with_env(BASE, &[("DROVER__RELGROUPS__G__KEYS__T1", "a,b")])
        .unwrap_err()
        .to_string();
    assert_problem(
        &msg,
        "relgroups.g.keys.t1",
        r#"expected an array of strings, found string "a,b" (write ["a,b"]) (set by environment variable DROVER__RELGROUPS__G__KEYS__T1)"#,
    );
    assert_lines(&msg, 1);
}

#[test]
fn sequence_and_key_mistakes_are_reported() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["t", "u", "v"]
        sequences = ["q", "public.q", "a.b.c"]
        [relgroups.h.keys]
        t = ["a", "b", "a"]
        "public.T" = ["c"]
        w = ["x"]
        u = []
        v = ["ok", 1]
        "x.y.z" = ["a"]
        "s.t" = "id"
        [relgroups.i]
        tables = ["t", "s.u"]
        sequences = ["s.U", "t_seq"]
        [relgroups.i.keys]
        public.t = ["id"]
        [relgroups.j]
        tables = ["t"]
        [relgroups.j.keys]
        t = ["", " "]
        "#
    ));
    assert_problem(
        &msg,
        "relgroups.h.sequences[1]",
        r#"sequence public.q is listed twice (also sequences[0] as "q")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.sequences[2]",
        r#"invalid sequence name "a.b.c": 3 dotted parts"#,
    );
    // Keys are checked in the order of their names: "public.T" before t.
    assert_problem(
        &msg,
        "relgroups.h.keys.t",
        r#"table public.t is given twice (also as keys."public.T")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.keys.t[2]",
        r#"column "a" is listed twice (also [0])"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.keys.w",
        "table public.w is not in this relgroup's tables",
    );
    assert_problem(&msg, "relgroups.h.keys.u", "must list at least one column");
    assert_problem(
        &msg,
        "relgroups.h.keys.v[1]",
        "wrong type: expected a string, found integer 1",
    );
    assert_problem(
        &msg,
        r#"relgroups.h.keys."x.y.z""#,
        r#"invalid table name "x.y.z": 3 dotted parts"#,
    );
    assert_problem(
        &msg,
        r#"relgroups.h.keys."s.t""#,
        r#"expected an array of strings, found string "id" (write ["id"])"#,
    );
    assert_problem(
        &msg,
        "relgroups.i.sequences[0]",
        "s.u is listed in both tables (tables[1]) and sequences",
    );
    assert_problem(
        &msg,
        "relgroups.i.keys.public",
        r#"found a table (a schema-qualified table name must be quoted: "public.t" = ["id"])"#,
    );
    assert_problem(
        &msg,
        "relgroups.j.keys.t[0]",
        "column name must not be empty",
    );
    assert_problem(
        &msg,
        "relgroups.j.keys.t[1]",
        "column name must not be empty",
    );
    assert_lines(&msg, 13);

    // With tables broken, keys are not checked against them; other shapes.
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["a.b.c"]
        sequences = "s"
        keys = ["t"]
        "#
    ));
    assert_problem(&msg, "relgroups.h.tables[0]", "3 dotted parts");
    assert_problem(
        &msg,
        "relgroups.h.sequences",
        r#"expected an array of strings, found string "s""#,
    );
    assert_problem(
        &msg,
        "relgroups.h.keys",
        r#"wrong type: expected a table of column lists ("TABLE" = ["COLUMN", ...]), found an array"#,
    );
    assert_lines(&msg, 3);
    let msg = errors(&format!(
        "{BASE}\n[relgroups.h]\ntables = [\"a.b.c\"]\n[relgroups.h.keys]\nt = [\"id\"]\n"
    ));
    assert_problem(&msg, "relgroups.h.tables[0]", "3 dotted parts");
    assert_lines(&msg, 1);
}

#[test]
fn sync_strategy_keys_are_read_with_defaults() {
    let cfg = load_text_only(BASE).unwrap();
    let s = &cfg.syncs["s"];
    assert_eq!(s.conflict_strategy, ConflictStrategy::Latest);
    assert_eq!(s.conflict_strategy, DEFAULT_CONFLICT_STRATEGY);
    assert!(s.priority.is_empty());
    assert_eq!(s.initial_copy, InitialCopy::Never);
    assert_eq!(s.initial_copy, DEFAULT_INITIAL_COPY);
    assert_eq!(s.priority_order(), ["a"]);

    let cfg = load_text_only(&multi_master(
        r#"conflict_strategy = "priority"
        priority = ["c", "a"]
        initial_copy = "if-empty""#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let mm = &cfg.syncs["mm"];
    assert_eq!(mm.conflict_strategy, ConflictStrategy::Priority);
    assert_eq!(mm.conflict_strategy.as_str(), "priority");
    assert_eq!(mm.priority, ["c", "a"]);
    assert_eq!(mm.priority_order(), ["c", "a", "b"]);
    assert_eq!(mm.initial_copy, InitialCopy::IfEmpty);

    for (strategy, expected) in [
        ("latest", ConflictStrategy::Latest),
        ("abort", ConflictStrategy::Abort),
        ("skip", ConflictStrategy::Skip),
    ] {
        let cfg = load_text_only(&multi_master(&format!(
            "conflict_strategy = \"{strategy}\"\ninitial_copy = \"always\""
        )))
        .unwrap();
        assert_eq!(cfg.syncs["mm"].conflict_strategy, expected);
        assert_eq!(cfg.syncs["mm"].initial_copy, InitialCopy::Always);
    }

    // Every new sync key from the environment; priority is a list.
    let cfg = with_env(
        &multi_master(""),
        &[
            ("DROVER__SYNCS__MM__CONFLICT_STRATEGY", "priority"),
            ("DROVER__SYNCS__MM__PRIORITY", "b, c"),
            ("DROVER__SYNCS__MM__INITIAL_COPY", "always"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mm = &cfg.syncs["mm"];
    assert_eq!(mm.conflict_strategy, ConflictStrategy::Priority);
    assert_eq!(mm.priority_order(), ["b", "c", "a"]);
    assert_eq!(mm.initial_copy, InitialCopy::Always);
}

#[test]
fn sync_strategy_mistakes_are_reported() {
    let msg = errors(&multi_master(
        r#"conflict_strategy = "priority"
        priority = ["b", "zz", "b", "a"]
        initial_copy = "if_empty"
        [syncs.s2]
        relgroup = "m"
        sources = ["a"]
        targets = ["b"]
        conflict_strategy = "newest"
        priority = ["a"]
        [syncs.s3]
        relgroup = "g"
        sources = ["c"]
        targets = ["a"]
        priority = ["c"]
        [syncs.s4]
        relgroup = "g"
        sources = ["c"]
        targets = ["b"]
        conflict_strategy = "priority"
        "#,
    ));
    assert_problem(
        &msg,
        "syncs.mm.priority[1]",
        r#""zz" is not a source of this sync (sources: "a", "b", "c")"#,
    );
    assert_problem(
        &msg,
        "syncs.mm.priority[2]",
        r#"database "b" is listed twice (also priority[0])"#,
    );
    assert_problem(
        &msg,
        "syncs.mm.initial_copy",
        "invalid initial_copy \"if_empty\", expected one of `never`, `if-empty`, `always`",
    );
    // With the strategy itself wrong, priority is not judged against it.
    assert_problem(
        &msg,
        "syncs.s2.conflict_strategy",
        "invalid conflict_strategy \"newest\", expected one of `latest`, `priority`, `abort`, `skip`",
    );
    assert_problem(
        &msg,
        "syncs.s3.priority",
        r#"is only used with conflict_strategy = "priority" (this sync's is "latest")"#,
    );
    assert_problem(
        &msg,
        "syncs.s4.priority",
        r#"missing required key "priority": conflict_strategy = "priority" needs the sources in order of precedence"#,
    );
    assert_lines(&msg, 6);

    let msg = errors(
        &multi_master("conflict_strategy = \"priority\"\npriority = []").replace(
            r#"targets = ["b"]"#,
            r#"targets = ["b"]
        conflict_strategy = "priority"
        priority = ["b"]"#,
        ),
    );
    assert_problem(&msg, "syncs.mm.priority", "must list at least one source");
    assert_problem(
        &msg,
        "syncs.s.priority[0]",
        r#""b" is not a source of this sync (it is a target, and only sources' changes can conflict)"#,
    );
    assert_lines(&msg, 2);

    let msg = with_env(
        &multi_master(""),
        &[
            ("DROVER__SYNCS__MM__PRIORITY", "a"),
            ("DROVER__SYNCS__MM__CONFLICT_STRATEGY", "Latest"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert_problem(
        &msg,
        "syncs.mm.conflict_strategy",
        "invalid conflict_strategy \"Latest\", expected one of `latest`, `priority`, `abort`, `skip` (set by environment variable DROVER__SYNCS__MM__CONFLICT_STRATEGY)",
    );
    assert_lines(&msg, 1);
    // A strategy of the wrong type is not taken for the default.
    let msg = errors(&multi_master("conflict_strategy = 1\npriority = [\"a\"]"));
    assert_problem(
        &msg,
        "syncs.mm.conflict_strategy",
        "expected a string, found integer 1",
    );
    assert_lines(&msg, 1);
    let msg = errors(&multi_master("priority = \"a\""));
    assert_problem(&msg, "syncs.mm.priority", "expected an array of strings");
    assert_lines(&msg, 1);
}

#[test]
fn two_syncs_writing_one_sequence_into_one_database_conflict() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["other"]
        sequences = ["public.seq"]
        [relgroups.k]
        tables = ["third"]
        sequences = ["seq"]
        [syncs.s2]
        relgroup = "h"
        sources = ["a"]
        targets = ["c"]
        [syncs.s3]
        relgroup = "k"
        sources = ["b"]
        targets = ["c"]
        "#
    ));
    assert_problem(
        &msg,
        "syncs.s3.targets[0]",
        r#"syncs "s2" and "s3" both write into database "c" the same relation: public.seq"#,
    );
    assert_lines(&msg, 1);
}
