//! The counter series known before anything happens, exported at 0 from startup so that
//! panels show 0 instead of "No data" and `rate()`/`increase()` see the first increment
//! (Prometheus' advice on missing metrics). Known in advance: every sync, its tables, its
//! databases and receivers, each table's conflict strategy, and the fixed values of the
//! `kind`, `stage`, `result` and `winner` labels. Series that depend on what happens (a
//! database only one stage ever touches) are still listed: a 0 is true for them too.

use super::failures::Stage;
use super::{CONFLICTS, ERRORS, ROUNDS, ROWS_DELETED, ROWS_INSERTED, SOURCE_READS};
use crate::pg::error::ErrorKind;
use crate::topology::SyncPlan;

/// One counter series: the metric name and its labels.
pub type Series = (&'static str, Vec<(&'static str, String)>);

/// Every kind label value of `drover_errors_total`.
const KINDS: [ErrorKind; 6] = [
    ErrorKind::Connection,
    ErrorKind::Schema,
    ErrorKind::Data,
    ErrorKind::Contention,
    ErrorKind::Conflict,
    ErrorKind::Other,
];

/// The stages a sync's own attempts fail in (`Listen` belongs to a database, sync "").
const SYNC_STAGES: [Stage; 5] = [
    Stage::Lease,
    Stage::Prepare,
    Stage::Copy,
    Stage::Round,
    Stage::Purge,
];

/// The `winner` label of a conflict that no database won (skip, abort).
const NO_WINNER: &str = "none";

/// Every counter series the syncs of `plans` can produce, each once.
pub fn counter_series(plans: &[SyncPlan]) -> Vec<Series> {
    let mut out = Vec::new();
    let mut listen_dbs: Vec<&str> = Vec::new();
    for p in plans {
        rows_and_rounds(p, &mut out);
        conflicts(p, &mut out);
        for db in p.databases() {
            for stage in SYNC_STAGES {
                errors(&p.name, db, stage, &mut out);
            }
            if !listen_dbs.contains(&db) {
                listen_dbs.push(db);
            }
        }
    }
    for db in listen_dbs {
        errors("", db, Stage::Listen, &mut out);
    }
    out
}

fn rows_and_rounds(p: &SyncPlan, out: &mut Vec<Series>) {
    // One-source syncs (a multi-master round reads every master in its own way).
    if let [source] = p.sources.as_slice() {
        out.push((
            SOURCE_READS,
            vec![("sync", p.name.clone()), ("source", source.clone())],
        ));
    }
    for result in ["good", "bad"] {
        out.push((
            ROUNDS,
            vec![("sync", p.name.clone()), ("result", result.into())],
        ));
    }
    // Receivers: every database that some source sends to (targets, and other masters).
    let receivers: Vec<&str> = p
        .databases()
        .filter(|d| p.sources.iter().any(|s| s != d))
        .collect();
    for t in &p.tables {
        for target in &receivers {
            for name in [ROWS_INSERTED, ROWS_DELETED] {
                out.push((
                    name,
                    vec![
                        ("sync", p.name.clone()),
                        ("table", t.to_string()),
                        ("target", target.to_string()),
                    ],
                ));
            }
        }
    }
}

fn conflicts(p: &SyncPlan, out: &mut Vec<Series>) {
    let winners = p.sources.iter().map(String::as_str).chain([NO_WINNER]);
    for winner in winners {
        for t in &p.tables {
            out.push((
                CONFLICTS,
                vec![
                    ("sync", p.name.clone()),
                    ("table", t.to_string()),
                    ("strategy", p.strategy_for(t).as_str().into()),
                    ("winner", winner.into()),
                ],
            ));
        }
    }
}

fn errors(sync: &str, database: &str, stage: Stage, out: &mut Vec<Series>) {
    for kind in KINDS {
        out.push((
            ERRORS,
            vec![
                ("sync", sync.into()),
                ("database", database.into()),
                ("kind", kind.as_str().into()),
                ("stage", stage.as_str().into()),
            ],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SequenceMode;
    use crate::pg::ident::TableName;
    use crate::round::copy::CopyMode;
    use crate::round::resolve::Strategy;

    fn plan(sources: &[&str], targets: &[&str]) -> SyncPlan {
        SyncPlan {
            name: "s".into(),
            relgroup: "g".into(),
            tables: vec![TableName::new("public", "t")],
            sequences: vec![],
            keys: Default::default(),
            delta_columns: Default::default(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            strategy: Strategy::Latest,
            table_strategy: Default::default(),
            sequence_mode: SequenceMode::Follow,
            sequence_step: 1,
            initial_copy: CopyMode::Never,
        }
    }

    fn has(series: &[Series], name: &str, labels: &[(&str, &str)]) -> bool {
        series.iter().any(|(n, l)| {
            *n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    #[test]
    fn one_source_sync_lists_its_targets_stages_and_kinds() {
        let s = counter_series(&[plan(&["legacy"], &["new"])]);
        let row = [("sync", "s"), ("table", "public.t"), ("target", "new")];
        assert!(has(&s, ROWS_INSERTED, &row));
        assert!(!has(
            &s,
            ROWS_INSERTED,
            &[("sync", "s"), ("table", "public.t"), ("target", "legacy")]
        ));
        assert!(has(&s, ROUNDS, &[("sync", "s"), ("result", "bad")]));
        let err = [
            ("sync", "s"),
            ("database", "new"),
            ("kind", "connection"),
            ("stage", "round"),
        ];
        assert!(has(&s, ERRORS, &err));
        let listen = [
            ("sync", ""),
            ("database", "legacy"),
            ("kind", "data"),
            ("stage", "listen"),
        ];
        assert!(has(&s, ERRORS, &listen));
        let conflict = [
            ("sync", "s"),
            ("table", "public.t"),
            ("strategy", "latest"),
            ("winner", "none"),
        ];
        assert!(has(&s, CONFLICTS, &conflict));
    }

    #[test]
    fn masters_receive_from_each_other_and_each_can_win() {
        let s = counter_series(&[plan(&["a", "b"], &[])]);
        let to_a = [("sync", "s"), ("table", "public.t"), ("target", "a")];
        assert!(has(&s, ROWS_DELETED, &to_a));
        let won_b = [
            ("sync", "s"),
            ("table", "public.t"),
            ("strategy", "latest"),
            ("winner", "b"),
        ];
        assert!(has(&s, CONFLICTS, &won_b));
        let mut names: Vec<String> = s.iter().map(|(n, l)| format!("{n}{l:?}")).collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total, "a series is listed twice");
    }
}
