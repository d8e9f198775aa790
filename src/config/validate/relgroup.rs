//! `[relgroups.NAME]`: its `tables` and `sequences` (parsed names, each
//! once, none in both lists) and its `[relgroups.NAME.keys]` sub-table
//! (column lists for tables of this relgroup), `[relgroups.NAME.delta_columns]` (the
//! same shape), `sequence_mode` and `sequence_step`.

use std::collections::BTreeMap;

use super::{choice, required, Problems};
use crate::config::choices::{SequenceMode, DEFAULT_SEQUENCE_MODE};
use crate::config::model::Relgroup;
use crate::config::raw::{Entry, RawRelgroup};
use crate::config::strict::{KeyLists, StrList};
use crate::pg::ident::TableName;

pub(super) fn relgroup(
    path: &str,
    _name: &str,
    entry: &Entry<RawRelgroup>,
    problems: &mut Problems,
) -> Option<Relgroup> {
    let raw = &entry.raw;
    let tables = match required(path, entry, "tables", raw.tables.as_ref(), problems) {
        Some(StrList(list)) if list.is_empty() => {
            problems.push(format!("{path}.tables"), "must list at least one table");
            None
        }
        Some(StrList(list)) => names(path, "tables", "table", list, problems),
        None => None,
    };
    let sequences = match &raw.sequences {
        None => Some(Vec::new()),
        Some(StrList(list)) => names(path, "sequences", "sequence", list, problems),
    };
    let mut ok = true;
    if let (Some(tables), Some(sequences)) = (&tables, &sequences) {
        // Both parsed without duplicates, so positions are list indexes.
        for (i, seq) in sequences.iter().enumerate() {
            if let Some(j) = tables.iter().position(|t| t == seq) {
                problems.push(
                    format!("{path}.sequences[{i}]"),
                    format!("{seq} is listed in both tables (tables[{j}]) and sequences"),
                );
                ok = false;
            }
        }
    }
    let keys = match &raw.keys {
        None => Some(BTreeMap::new()),
        Some(keys) => key_columns((path, "keys"), keys, tables.as_deref(), problems),
    };
    let delta_columns = match &raw.delta_columns {
        None => Some(BTreeMap::new()),
        Some(lists) => key_columns((path, "delta_columns"), lists, tables.as_deref(), problems),
    };
    let sequence_mode = choice(
        path,
        entry,
        raw.sequence_mode.as_ref(),
        DEFAULT_SEQUENCE_MODE,
        problems,
    );
    let sequence_step = sequence_step(path, entry, sequence_mode, problems);
    if !ok {
        return None;
    }
    Some(Relgroup {
        tables: tables?,
        sequences: sequences?,
        keys: keys?,
        sequence_mode: sequence_mode?,
        sequence_step: sequence_step?,
        delta_columns: delta_columns?,
    })
}

/// Largest `sequence_step`: room for far more masters than anyone runs, while
/// a sequence still has billions of values per master.
pub(super) const MAX_SEQUENCE_STEP: i64 = 1000;

/// `sequence_step`: only with `interleave`, 2 to [`MAX_SEQUENCE_STEP`]. Whether it
/// covers every master is checked with the syncs (`sync::check_sequence_steps`).
fn sequence_step(
    path: &str,
    entry: &Entry<RawRelgroup>,
    mode: Option<SequenceMode>,
    problems: &mut Problems,
) -> Option<Option<i64>> {
    let Some(step) = &entry.raw.sequence_step else {
        return (!entry.broken.contains("sequence_step")).then_some(None);
    };
    let key = format!("{path}.sequence_step");
    if mode == Some(SequenceMode::Follow) {
        problems.push(
            key,
            "is only used with sequence_mode = \"interleave\": remove it or set sequence_mode = \"interleave\"",
        );
        return None;
    }
    if !(2..=MAX_SEQUENCE_STEP).contains(&step.0) {
        problems.push(
            key,
            format!(
                "{} is out of range: the step must be from 2 to {MAX_SEQUENCE_STEP} (at least the number of masters)",
                step.0
            ),
        );
        return None;
    }
    Some(Some(step.0))
}

/// Parses a `tables` or `sequences` list: every name valid, each once.
fn names(
    path: &str,
    field: &str,
    what: &str,
    list: &[String],
    problems: &mut Problems,
) -> Option<Vec<TableName>> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<TableName, (usize, &str)> = BTreeMap::new();
    let mut ok = true;
    for (i, text) in list.iter().enumerate() {
        let key = format!("{path}.{field}[{i}]");
        match TableName::parse(text) {
            Err(e) => {
                problems.push(
                    key,
                    format!("invalid {what} name {:?}: {}", e.input, e.kind),
                );
                ok = false;
            }
            Ok(name) => {
                if let Some((j, first)) = seen.get(&name) {
                    let also = if first == text {
                        format!("{field}[{j}]")
                    } else {
                        format!("{field}[{j}] as {first:?}")
                    };
                    problems.push(key, format!("{what} {name} is listed twice (also {also})"));
                    ok = false;
                } else {
                    seen.insert(name.clone(), (i, text));
                    out.push(name);
                }
            }
        }
    }
    ok.then_some(out)
}

/// `[relgroups.NAME.keys]` (or `delta_columns`, the `field`): each table parsed, one of
/// `tables` (not checked when `tables` is `None`, broken and reported already), given
/// once; each column list non-empty, without blanks or duplicates.
fn key_columns(
    (path, field): (&str, &str),
    keys: &KeyLists,
    tables: Option<&[TableName]>,
    problems: &mut Problems,
) -> Option<BTreeMap<TableName, Vec<String>>> {
    let mut out: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    let mut spelled: BTreeMap<TableName, &str> = BTreeMap::new();
    let mut ok = true;
    for (text, columns) in &keys.0 {
        let key = format!("{path}.{field}.{}", toml_key(text));
        // A value of the wrong type is the one problem reported for its key
        // (an unquoted `public.t = [...]` is a table `public`: its name is
        // not worth a second message).
        let columns = match columns {
            Ok(columns) => columns,
            Err(problem) => {
                let at = problem.index.map(|i| format!("[{i}]")).unwrap_or_default();
                problems.push(format!("{key}{at}"), &problem.message);
                ok = false;
                continue;
            }
        };
        match TableName::parse(text) {
            Err(e) => {
                problems.push(&key, e);
                ok = false;
            }
            Ok(table) => {
                if let Some(first) = spelled.get(&table) {
                    problems.push(
                        &key,
                        format!(
                            "table {table} is given twice (also as {field}.{})",
                            toml_key(first)
                        ),
                    );
                    ok = false;
                } else {
                    spelled.insert(table.clone(), text);
                    if tables.is_some_and(|tables| !tables.contains(&table)) {
                        problems.push(
                            &key,
                            format!("table {table} is not in this relgroup's tables"),
                        );
                        ok = false;
                    }
                    out.insert(table, columns.clone());
                }
            }
        }
        if columns.is_empty() {
            problems.push(&key, "must list at least one column");
            ok = false;
        }
        for (i, column) in columns.iter().enumerate() {
            if column.trim().is_empty() {
                problems.push(format!("{key}[{i}]"), "column name must not be empty");
                ok = false;
            } else if let Some(j) = columns[..i].iter().position(|c| c == column) {
                problems.push(
                    format!("{key}[{i}]"),
                    format!("column {column:?} is listed twice (also [{j}])"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// One level of a dotted key as TOML writes it: bare when it can be,
/// quoted otherwise (`t`, but `"public.t"`), so that a table name with dots
/// stays one level in messages.
pub(super) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}
