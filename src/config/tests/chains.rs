//! Chains (issue 10 item 9): a database that receives a table from one sync and is a source
//! of the same table in another is refused, since what the first sync applies there is not
//! captured again. Multi-master syncs and fan-out from one source are not chains.

use super::*;

const NOT_SUPPORTED: &str = "cascading replication (a chain a -> b -> c) is not supported";

#[test]
fn chain_through_a_target_is_refused() {
    let text = format!(
        "{BASE}
        [syncs.onward]
        relgroup = \"g\"
        sources = [\"b\"]
        targets = [\"c\"]
        "
    );
    let msg = load_text_only(&text).unwrap_err().to_string();
    assert_problem(
        &msg,
        "syncs.onward.sources[0]",
        "database \"b\" receives tables public.t1, s.t2 from sync \"s\" and is their source in sync \"onward\"",
    );
    assert_problem(&msg, "syncs.onward.sources[0]", NOT_SUPPORTED);
    assert_problem(&msg, "syncs.onward.sources[0]", "makedelta");
    assert_lines(&msg, 1);
}

#[test]
fn chain_through_a_multi_master_source_is_refused() {
    // b receives t1 from a through the multi-master sync mm, and sends it on to c.
    let text = format!(
        "{BASE}
        [relgroups.m]
        tables = [\"m1\"]
        [syncs.mm]
        relgroup = \"m\"
        sources = [\"a\", \"b\"]
        [syncs.onward]
        relgroup = \"m\"
        sources = [\"b\"]
        targets = [\"c\"]
        "
    );
    let msg = load_text_only(&text).unwrap_err().to_string();
    assert_problem(
        &msg,
        "syncs.onward.sources[0]",
        "database \"b\" receives table public.m1 from sync \"mm\" and is its source in sync \"onward\"",
    );
    assert_lines(&msg, 1);
}

#[test]
fn multi_master_fan_out_and_other_tables_are_not_chains() {
    let text = format!(
        "{BASE}
        [relgroups.m]
        tables = [\"m1\"]
        [syncs.mm]
        relgroup = \"m\"
        sources = [\"a\", \"b\", \"c\"]
        [relgroups.h]
        tables = [\"h1\"]
        [syncs.other_tables]
        relgroup = \"h\"
        sources = [\"b\"]
        targets = [\"c\"]
        [syncs.fan_out]
        relgroup = \"g\"
        sources = [\"a\"]
        targets = [\"c\"]
        "
    );
    load_text_only(&text).unwrap_or_else(|e| panic!("{e}"));
}
