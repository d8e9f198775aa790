//! `[syncs.NAME.table_strategy]`, `relgroups.*.sequence_mode` and
//! `sequence_step`.

use super::*;

/// BASE plus relgroup `m` (tables m1, s.m2; sequence m1_id_seq) with `group`
/// lines, and a multi-master sync `mm` over a, b and c with `sync` lines
/// (which may open sub-tables: they come last).
fn multi_master(group: &str, sync: &str) -> String {
    format!(
        r#"{BASE}
        [relgroups.m]
        tables = ["m1", "s.m2"]
        sequences = ["m1_id_seq"]
        {group}
        [syncs.mm]
        relgroup = "m"
        sources = ["a", "b", "c"]
        {sync}
        "#
    )
}

#[test]
fn table_strategy_and_sequence_mode_are_read() {
    let cfg = load_text_only(&multi_master("", "")).unwrap();
    let (m, mm) = (&cfg.relgroups["m"], &cfg.syncs["mm"]);
    assert_eq!(m.sequence_mode, SequenceMode::Follow);
    assert_eq!(m.sequence_step, None);
    assert!(mm.table_strategy.is_empty());
    let m2 = TableName::new("s", "m2");
    assert_eq!(*mm.strategy_for(&m2), ConflictStrategy::Latest);

    let cfg = load_text_only(&multi_master(
        "sequence_mode = \"interleave\"\nsequence_step = 4",
        "priority = [\"b\"]\n[syncs.mm.table_strategy]\n\"S.M2\" = \"priority\"\nm1 = \"skip\"",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let (m, mm) = (&cfg.relgroups["m"], &cfg.syncs["mm"]);
    assert_eq!(m.sequence_mode, SequenceMode::Interleave);
    assert_eq!(m.sequence_step, Some(4));
    assert_eq!(mm.conflict_strategy, ConflictStrategy::Latest);
    assert_eq!(mm.priority, ["b"]);
    assert_eq!(*mm.strategy_for(&m2), ConflictStrategy::Priority);
    assert_eq!(
        *mm.strategy_for(&TableName::new("public", "m1")),
        ConflictStrategy::Skip
    );
    // Interleave without a step: the sync's number of masters, decided later.
    let cfg = load_text_only(&multi_master("sequence_mode = \"interleave\"", "")).unwrap();
    assert_eq!(cfg.relgroups["m"].sequence_step, None);
}

#[test]
fn table_strategy_mistakes_name_the_key() {
    let msg = errors(&multi_master(
        "",
        "[syncs.mm.table_strategy]\n\"public.nope\" = \"latest\"",
    ));
    assert_problem(
        &msg,
        r#"syncs.mm.table_strategy."public.nope""#,
        r#"table public.nope is not in relgroup "m"'s tables: add it there or remove this entry"#,
    );
    assert_lines(&msg, 1);
    let msg = errors(&multi_master(
        "",
        "[syncs.mm.table_strategy]\nm1 = \"newest\"\n\"s.m2\" = \"priority\"",
    ));
    assert_problem(
        &msg,
        "syncs.mm.table_strategy.m1",
        "invalid conflict_strategy \"newest\", expected one of `latest`, `priority`, `abort`, `skip`",
    );
    assert_problem(
        &msg,
        r#"syncs.mm.table_strategy."s.m2""#,
        "\"priority\" needs the sync's priority list: add priority = [...]",
    );
    assert_lines(&msg, 2);

    // The same table twice, in two spellings; priority listed but unused.
    let msg = errors(&multi_master(
        "",
        "priority = [\"a\"]\n[syncs.mm.table_strategy]\nm1 = \"skip\"\n\"public.M1\" = \"abort\"",
    ));
    assert_problem(
        &msg,
        r#"syncs.mm.table_strategy."public.M1""#,
        "table public.m1 is given twice (also as table_strategy.m1)",
    );
    assert_lines(&msg, 1);
    let msg = errors(&multi_master(
        "",
        "priority = [\"a\"]\n[syncs.mm.table_strategy]\nm1 = \"skip\"",
    ));
    assert_problem(
        &msg,
        "syncs.mm.priority",
        "is only used with conflict_strategy = \"priority\" (this sync's is \"latest\") or a table_strategy of \"priority\"",
    );
    assert_lines(&msg, 1);
}

#[test]
fn sequence_mode_mistakes_name_the_key() {
    let msg = errors(&multi_master("sequence_mode = \"stripe\"", ""));
    assert_problem(
        &msg,
        "relgroups.m.sequence_mode",
        "invalid sequence_mode \"stripe\", expected one of `follow`, `interleave`",
    );
    assert_lines(&msg, 1);
    let msg = errors(&multi_master("sequence_step = 4", ""));
    assert_problem(
        &msg,
        "relgroups.m.sequence_step",
        "is only used with sequence_mode = \"interleave\"",
    );
    assert_lines(&msg, 1);
    let msg = errors(&multi_master(
        "sequence_mode = \"interleave\"\nsequence_step = 1",
        "",
    ));
    assert_problem(
        &msg,
        "relgroups.m.sequence_step",
        "1 is out of range: the step must be from 2 to 1000",
    );
    let msg = errors(&multi_master(
        "sequence_mode = \"interleave\"\nsequence_step = 2",
        "",
    ));
    assert_problem(
        &msg,
        "relgroups.m.sequence_step",
        "2 is less than the 3 masters of sync \"mm\": each master needs its own residue; set sequence_step to at least 3",
    );
    assert_lines(&msg, 1);
    // From the environment, as an integer.
    let cfg = with_env(
        &multi_master("sequence_mode = \"interleave\"", ""),
        &[("DROVER__RELGROUPS__M__SEQUENCE_STEP", "8")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.relgroups["m"].sequence_step, Some(8));
}

#[test]
fn delta_columns_are_read_and_their_mistakes_name_the_key() {
    let cfg = load_text_only(&multi_master(
        "[relgroups.m.delta_columns]\n\"S.M2\" = [\"n\", \"Total\"]",
        "",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let deltas = &cfg.relgroups["m"].delta_columns;
    assert_eq!(deltas[&TableName::new("s", "m2")], ["n", "Total"]);
    assert!(
        load_text_only(&multi_master("", "")).unwrap().relgroups["m"]
            .delta_columns
            .is_empty()
    );
    let msg = errors(&multi_master(
        "[relgroups.m.delta_columns]\n\"public.nope\" = [\"n\"]\nm1 = [\"n\", \"n\"]",
        "",
    ));
    assert_problem(
        &msg,
        r#"relgroups.m.delta_columns."public.nope""#,
        "table public.nope is not in this relgroup's tables",
    );
    assert_problem(
        &msg,
        "relgroups.m.delta_columns.m1[1]",
        "column \"n\" is listed twice (also [0])",
    );
    assert_lines(&msg, 2);
}
