//! Held tables of one target of a one-source sync. When a target refuses a table's rows for
//! a data reason (SQLSTATE class 23, integrity: unique, check, not-null, foreign key; class
//! 22, a value the target's type rejects), that table and every table linked to it by a
//! foreign key (either direction, transitively, among the sync's tables) are **held** on that
//! target: their progress stays where it was (their delta rows wait on the source) while the
//! target's other tables go on in rounds without them. A held group is retried alone, with a
//! backoff doubling from `RETRY_FIRST` to `RETRY_MAX`, or at once on `drover retry`; a retry
//! that commits clears the hold. `held_round` runs rounds around this state.
//!
//! Why whole FK groups: a child's rows may reference a parent row the held parent has not
//! received (an FK violation on the target), and a parent's deletes may remove rows a held
//! child still references. Tables in different groups share no foreign key, so committing one
//! without the other breaks no constraint, and each commits its progress rows with its data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pg::error::{ErrorKind, PgError};
use crate::round::plan::TablePlan;

/// First retry of a held group after it was held.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between retries: a fixed row is picked up within this without `drover retry`.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// One held table as status shows it (under its target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldTable {
    pub table: String,
    /// SQLSTATE of the error that held it (`23505`: a unique index refused a row).
    pub sqlstate: String,
    /// The error without row data, unless the reader has the token.
    pub error: String,
    #[serde(skip)]
    pub error_full: String,
    /// The refused key as the server's DETAIL names it (`(id)=(42)`); only to token readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// Held because a foreign key links it to this table, whose rows were refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_with: Option<String>,
    pub since: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Failed attempts since it was held (the first included).
    pub count: u64,
}

impl HeldTable {
    /// Without row data for readers without the token; the full error for those with it.
    pub fn for_reader(&mut self, trusted: bool) {
        if trusted {
            self.error = std::mem::take(&mut self.error_full);
        } else {
            self.keys = None;
        }
    }
}

/// Why a group is held: the error of the table whose rows were refused.
#[derive(Debug, Clone)]
pub struct Cause {
    pub table: String,
    pub sqlstate: String,
    pub error: String,
    pub error_full: String,
    pub keys: Option<String>,
}

#[derive(Debug)]
struct Hold {
    cause: Cause,
    /// The group's tables when it was held (what `drover retry --table` matches).
    tables: Vec<String>,
    since: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    count: u64,
    backoff: Duration,
    next_try: Instant,
}

/// The holds of one target, by the table whose error caused each.
#[derive(Debug)]
pub struct Holds {
    holds: BTreeMap<String, Hold>,
    /// `drover.apply_errors` may say held for a table that is not (a hold cleared, or one an
    /// earlier daemon left): the next round writes the current set.
    pub rows_stale: bool,
}

impl Default for Holds {
    fn default() -> Holds {
        Holds {
            holds: BTreeMap::new(),
            rows_stale: true,
        }
    }
}

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Holds the group of `cause.table` (or counts another failure of it).
    pub fn hold(&mut self, cause: Cause, group: Vec<String>, now: Instant) {
        let at = Utc::now();
        let h = self.holds.entry(cause.table.clone()).or_insert(Hold {
            cause: cause.clone(),
            tables: group.clone(),
            since: at,
            last_seen: at,
            count: 0,
            backoff: RETRY_FIRST / 2,
            next_try: now,
        });
        h.count += 1;
        h.cause = cause;
        h.tables = group;
        h.last_seen = at;
        h.backoff = (h.backoff * 2).min(RETRY_MAX);
        h.next_try = now + h.backoff;
    }

    /// A retry failed for another reason than the data: try again after the same backoff.
    pub fn postpone(&mut self, cause_table: &str, now: Instant) {
        if let Some(h) = self.holds.get_mut(cause_table) {
            h.next_try = now + h.backoff;
        }
    }

    /// A retry committed: the group is released.
    pub fn release(&mut self, cause_table: &str) {
        if self.holds.remove(cause_table).is_some() {
            self.rows_stale = true;
        }
    }

    /// Forgets holds whose table left the sync.
    pub fn keep_only(&mut self, tables: &[Arc<TablePlan>]) {
        let before = self.holds.len();
        self.holds
            .retain(|t, _| tables.iter().any(|p| p.display == *t));
        self.rows_stale |= self.holds.len() != before;
    }

    /// `drover retry`: holds whose group has `table` (every hold when None) are retried by the
    /// next round. Returns how many tables that covers.
    pub fn ask(&mut self, table: Option<&str>, now: Instant) -> usize {
        let mut n = 0;
        for h in self.holds.values_mut() {
            if table.map_or(true, |t| h.tables.iter().any(|x| x == t)) {
                h.next_try = now;
                n += h.tables.len();
            }
        }
        n
    }

    /// Held groups (by cause) whose retry is due.
    pub fn due(&self, now: Instant) -> Vec<String> {
        (self.holds.iter())
            .filter(|(_, h)| h.next_try <= now)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Time until the next retry is due, if any group is held.
    pub fn next_retry(&self, now: Instant) -> Option<Duration> {
        let next = self.holds.values().map(|h| h.next_try).min()?;
        Some(next.saturating_duration_since(now))
    }

    /// Every table held now: each hold's group as the current plans link them.
    pub fn held_tables(&self, groups: &Groups) -> Vec<String> {
        let mut all: Vec<String> = (self.holds.keys()).flat_map(|t| groups.of(t)).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The tables of the group held for `cause_table`.
    pub fn group_of(&self, cause_table: &str, groups: &Groups) -> Vec<String> {
        groups.of(cause_table)
    }

    /// One entry per held table, for status and the metric.
    pub fn list(&self, groups: &Groups) -> Vec<HeldTable> {
        let mut out = Vec::new();
        for (cause, h) in &self.holds {
            for t in groups.of(cause) {
                let linked = t != *cause;
                out.push(HeldTable {
                    sqlstate: h.cause.sqlstate.clone(),
                    error: h.cause.error.clone(),
                    error_full: h.cause.error_full.clone(),
                    keys: (!linked).then(|| h.cause.keys.clone()).flatten(),
                    held_with: linked.then(|| cause.clone()),
                    since: h.since,
                    last_seen: h.last_seen,
                    count: h.count,
                    table: t,
                });
            }
        }
        out.sort_by(|a, b| a.table.cmp(&b.table));
        out
    }
}

/// The sync's tables split into groups linked by foreign keys (either direction,
/// transitively). A table referencing a table outside the sync is a group of its own.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Table name -> group number; names in the order of the plans.
    of: Vec<(String, usize)>,
}

impl Groups {
    pub fn new(tables: &[Arc<TablePlan>]) -> Groups {
        let n = tables.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        for (i, t) in tables.iter().enumerate() {
            for fk in &t.fk_parents {
                if let Some(j) = tables.iter().position(|x| x.name == *fk) {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let of = (0..n)
            .map(|i| (tables[i].display.clone(), root(&mut parent, i)))
            .collect();
        Groups { of }
    }

    /// The tables in `table`'s group (itself alone when it is not in the sync's tables).
    pub fn of(&self, table: &str) -> Vec<String> {
        match self.of.iter().find(|(t, _)| t == table) {
            Some((_, g)) => (self.of.iter())
                .filter(|(_, x)| x == g)
                .map(|(t, _)| t.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    /// How many groups the tables `names` span.
    pub fn count(&self, names: &[&str]) -> usize {
        let mut seen: Vec<usize> = (self.of.iter())
            .filter(|(t, _)| names.contains(&t.as_str()))
            .map(|(_, g)| *g)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

/// A failure that holds a table: a data error (class 22 or 23) on the target.
pub fn is_data_error(e: &PgError) -> bool {
    matches!(e, PgError::Query { .. }) && e.kind() == ErrorKind::Data
}

/// The table (index into `tables`) whose rows the target refused: the table the server names
/// in the error (constraint violations name it), else the `COPY t, line n` context of a
/// value the target's type rejects during a COPY, else the only group the round applied.
pub fn attribute(e: &PgError, tables: &[Arc<TablePlan>], groups: &Groups) -> Option<usize> {
    let PgError::Query { source, .. } = e else {
        return None;
    };
    let db = source.as_db_error()?;
    if let Some(name) = db.table() {
        let schema = db.schema();
        let found = tables
            .iter()
            .position(|t| t.name.name == name && schema.map_or(true, |s| t.name.schema == s));
        if found.is_some() {
            return found;
        }
    }
    if let Some(rel) = db.where_().and_then(copy_relation) {
        let hits: Vec<usize> = (0..tables.len())
            .filter(|&i| tables[i].name.name == rel)
            .collect();
        if hits.len() == 1 {
            return Some(hits[0]);
        }
    }
    let names: Vec<&str> = tables.iter().map(|t| t.display.as_str()).collect();
    (groups.count(&names) == 1 && !tables.is_empty()).then_some(0)
}

/// `COPY t, line 3, column v: "..."` -> `t` (the relation name as COPY FROM reports it).
fn copy_relation(context: &str) -> Option<&str> {
    let line = context.lines().find(|l| l.starts_with("COPY "))?;
    let rest = &line["COPY ".len()..];
    Some(rest.split(", line ").next()?.trim())
}

/// The key in a constraint violation's DETAIL: `Key (id)=(42) already exists.` -> `(id)=(42)`.
pub fn keys_from_detail(detail: &str) -> Option<String> {
    let rest = detail.strip_prefix("Key ")?;
    const ENDS: [&str; 4] = [
        " already exists.",
        " is not present in table",
        " is still referenced from table",
        " conflicts with existing key",
    ];
    let end = ENDS.iter().filter_map(|e| rest.find(e)).min()?;
    Some(rest[..end].to_string())
}

/// What status and `drover.apply_errors` say about a refused table.
pub fn cause_of(e: &PgError, table: &str) -> Cause {
    let (sqlstate, keys) = match e {
        PgError::Query { source, .. } => (
            source.code().map(|c| c.code().to_string()),
            (source.as_db_error())
                .and_then(|d| d.detail())
                .and_then(keys_from_detail),
        ),
        _ => (None, None),
    };
    Cause {
        table: table.to_string(),
        sqlstate: sqlstate.unwrap_or_default(),
        error: e.redacted(),
        error_full: e.to_string(),
        keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::plan::test_plan;

    fn plans() -> Vec<Arc<TablePlan>> {
        let plan = |n: &str| test_plan("public", n, &[("id", "integer")], 1);
        let p = plan("p");
        let mut c = plan("c");
        let mut g = plan("g");
        let a = plan("a");
        c.fk_parents = vec![p.name.clone()];
        g.fk_parents = vec![c.name.clone()];
        [a, p, c, g].into_iter().map(Arc::new).collect()
    }

    #[test]
    fn groups_follow_foreign_keys_transitively() {
        let g = Groups::new(&plans());
        assert_eq!(g.of("public.a"), ["public.a"]);
        assert_eq!(g.of("public.g"), ["public.p", "public.c", "public.g"]);
        assert_eq!(g.count(&["public.a", "public.c", "public.g"]), 2);
    }

    #[test]
    fn holds_back_off_and_release() {
        let groups = Groups::new(&plans());
        let mut h = Holds::default();
        let now = Instant::now();
        let cause = |t: &str| Cause {
            table: t.into(),
            sqlstate: "23505".into(),
            error: "duplicate".into(),
            error_full: "duplicate; detail: Key (v)=(x) already exists.".into(),
            keys: Some("(v)=(x)".into()),
        };
        h.hold(cause("public.p"), groups.of("public.p"), now);
        assert_eq!(h.held_tables(&groups), ["public.c", "public.g", "public.p"]);
        assert!(h.due(now).is_empty());
        assert_eq!(h.next_retry(now), Some(RETRY_FIRST));
        h.hold(cause("public.p"), groups.of("public.p"), now);
        assert_eq!(h.next_retry(now), Some(RETRY_FIRST * 2), "doubles");
        let list = h.list(&groups);
        assert_eq!(list.len(), 3);
        let c = list.iter().find(|t| t.table == "public.c").unwrap();
        assert_eq!(c.held_with.as_deref(), Some("public.p"));
        assert!(c.keys.is_none());
        assert_eq!(
            list.iter().find(|t| t.table == "public.p").unwrap().count,
            2
        );
        assert_eq!(h.ask(Some("public.a"), now), 0);
        assert_eq!(h.ask(Some("public.g"), now), 3);
        assert_eq!(h.due(now), ["public.p"]);
        h.rows_stale = false;
        h.release("public.p");
        assert!(h.is_empty() && h.rows_stale);
    }

    #[test]
    fn keys_and_copy_context() {
        assert_eq!(
            keys_from_detail("Key (id, v)=(1, a) already exists.").as_deref(),
            Some("(id, v)=(1, a)")
        );
        assert_eq!(
            keys_from_detail("Key (p_id)=(7) is not present in table \"p\".").as_deref(),
            Some("(p_id)=(7)")
        );
        assert_eq!(keys_from_detail("Failing row contains (1, null)."), None);
        assert_eq!(
            copy_relation("COPY herd, line 3, column v: \"xyz\""),
            Some("herd")
        );
    }
}
