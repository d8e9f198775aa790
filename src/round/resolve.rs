//! Multi-master conflict resolution for one key: pure logic, no I/O.
//!
//! A change to key k on source i is *pending for* j while k has a delta row on i that j's
//! progress does not cover. Sources i and j conflict on k when each has a change the other has
//! not heard of. A source whose change another pending source has already heard of is
//! superseded: that other source's current row already reflects it. Among the remaining
//! candidates, a single one wins without conflict; several are a conflict, decided by the sync's
//! strategy so every master picks the same winner.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::pg::error::PgError;
use crate::round::report::ConflictRecord;

/// How conflicts are decided (the sync's `conflict_strategy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Largest `changed_at` wins; ties go to the database whose name sorts first.
    Latest,
    /// The first database of this list wins; unlisted sources rank after, in `sources` order.
    Priority(Vec<String>),
    /// The round fails without applying anything.
    Abort,
    /// Neither side is applied; the conflict is logged.
    Skip,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Latest => "latest",
            Strategy::Priority(_) => "priority",
            Strategy::Abort => "abort",
            Strategy::Skip => "skip",
        }
    }
}

/// The sync's strategy with its per-table overrides (`table_strategy`), keyed by the
/// table's display name (`TablePlan::display`, `ConflictRecord::table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategies {
    pub default: Strategy,
    pub tables: BTreeMap<String, Strategy>,
}

impl Strategies {
    /// The strategy deciding conflicts on the table displayed as `table`.
    pub fn for_table(&self, table: &str) -> &Strategy {
        self.tables.get(table).unwrap_or(&self.default)
    }
}

/// One source's pending change to a key.
#[derive(Debug, Clone)]
pub struct Change {
    pub changed_at: DateTime<Utc>,
    /// The receivers this change has not reached yet.
    pub pending_to: BTreeSet<String>,
    /// With delta columns: whether another column (or the row's existence) changed. Always
    /// true without them.
    pub other: bool,
    /// With delta columns: per receiver, each delta column's summed increments (as text).
    pub incs: BTreeMap<String, Vec<String>>,
    /// With delta columns: each column's increments past the round's cut (`multi_backlog`),
    /// negated (as text): what takes this source's row image, read at its round snapshot, back
    /// to the cut. Empty without delta columns.
    pub past_cut: Vec<String>,
}

/// What to do with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whose current row (or its absence) every other database gets; None with `skip`.
    pub winner: Option<String>,
    /// The sources in conflict, when there was one.
    pub conflict: Option<Vec<String>>,
}

/// Decides one key. `changes` maps each source with a pending change to that change;
/// `sources` is the sync's source order (for priority ties).
pub fn decide(
    changes: &BTreeMap<String, Change>,
    strategy: &Strategy,
    sources: &[String],
) -> Decision {
    let pending: Vec<&String> = changes.keys().collect();
    // i is superseded when another pending source j has already heard i's change.
    let superseded = |i: &String| {
        pending
            .iter()
            .any(|j| *j != i && !changes[i].pending_to.contains(*j))
    };
    let mut candidates: Vec<&String> = pending.iter().copied().filter(|i| !superseded(i)).collect();
    if candidates.is_empty() {
        // Everyone has heard everyone: their rows already agree; any of them will do.
        return Decision {
            winner: latest(changes, &pending).cloned(),
            conflict: None,
        };
    }
    if candidates.len() == 1 {
        return Decision {
            winner: Some(candidates[0].clone()),
            conflict: None,
        };
    }
    candidates.sort();
    let conflict = Some(candidates.iter().map(|c| (*c).clone()).collect());
    let winner = match strategy {
        Strategy::Latest => latest(changes, &candidates).cloned(),
        Strategy::Priority(list) => {
            let rank = |db: &String| {
                list.iter().position(|p| p == db).unwrap_or(
                    list.len()
                        + sources
                            .iter()
                            .position(|s| s == db)
                            .unwrap_or(usize::MAX / 2),
                )
            };
            candidates
                .iter()
                .min_by_key(|c| rank(c))
                .map(|c| (*c).clone())
        }
        Strategy::Abort | Strategy::Skip => None,
    };
    Decision { winner, conflict }
}

/// A TRUNCATE pending from `from` reloads the table everywhere from `from`: it wins every key,
/// and each other source's change that `from` has not heard of is erased: a conflict, logged.
pub fn truncated(changes: &BTreeMap<String, Change>, from: &str) -> Decision {
    let mut involved: Vec<String> = (changes.iter())
        .filter(|(s, c)| *s != from && c.pending_to.contains(from))
        .map(|(s, _)| s.clone())
        .collect();
    let conflict = (!involved.is_empty()).then(|| {
        involved.push(from.to_string());
        involved.sort();
        involved
    });
    Decision {
        winner: Some(from.to_string()),
        conflict,
    }
}

/// The source with the newest change; ties go to the name that sorts first.
fn latest<'a>(changes: &BTreeMap<String, Change>, among: &[&'a String]) -> Option<&'a String> {
    among.iter().copied().max_by(|a, b| {
        changes[*a]
            .changed_at
            .cmp(&changes[*b].changed_at)
            .then_with(|| b.cmp(a))
    })
}

/// How many conflicting keys an `abort` error lists.
const ABORT_KEYS_SHOWN: usize = 20;

/// `conflict_strategy = "abort"` found conflicts: nothing is applied.
pub fn abort_error(conflicts: &[ConflictRecord]) -> PgError {
    let mut shown: Vec<String> = (conflicts.iter())
        .map(|c| format!("{} {}", c.table, c.key))
        .collect();
    shown.sort();
    shown.truncate(ABORT_KEYS_SHOWN);
    let mut involved: Vec<String> = conflicts.iter().flat_map(|c| c.involved.clone()).collect();
    involved.sort();
    involved.dedup();
    let more = if conflicts.len() > ABORT_KEYS_SHOWN {
        "; ..."
    } else {
        ""
    };
    PgError::Conflict {
        databases: involved.join(", "),
        message: format!(
            "{} conflicting key(s) and conflict_strategy = \"abort\": nothing applied",
            conflicts.len(),
        ),
        keys: format!("; {}{more}", shown.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn change(t: i64, to: &[&str]) -> Change {
        Change {
            changed_at: at(t),
            pending_to: to.iter().map(|s| s.to_string()).collect(),
            other: true,
            incs: BTreeMap::new(),
            past_cut: Vec::new(),
        }
    }

    fn srcs() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn one_pending_source_wins_without_conflict() {
        let ch = BTreeMap::from([("a".to_string(), change(1, &["b", "c"]))]);
        let d = decide(&ch, &Strategy::Latest, &srcs());
        assert_eq!(
            d,
            Decision {
                winner: Some("a".into()),
                conflict: None
            }
        );
    }

    #[test]
    fn both_unheard_is_a_conflict_latest_wins() {
        let ch = BTreeMap::from([
            ("a".to_string(), change(5, &["b"])),
            ("b".to_string(), change(7, &["a"])),
        ]);
        let d = decide(&ch, &Strategy::Latest, &srcs());
        assert_eq!(d.winner.as_deref(), Some("b"));
        assert_eq!(d.conflict, Some(vec!["a".to_string(), "b".to_string()]));
    }

    #[test]
    fn latest_tie_goes_to_first_name() {
        let ch = BTreeMap::from([
            ("b".to_string(), change(5, &["a"])),
            ("a".to_string(), change(5, &["b"])),
        ]);
        assert_eq!(
            decide(&ch, &Strategy::Latest, &srcs()).winner.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_newer_change_made_after_hearing_the_other_is_no_conflict() {
        // a's change reached b (only c still lacks it); then b changed the key again.
        let ch = BTreeMap::from([
            ("a".to_string(), change(9, &["c"])),
            ("b".to_string(), change(3, &["a", "c"])),
        ]);
        let d = decide(&ch, &Strategy::Priority(vec!["a".into()]), &srcs());
        assert_eq!(
            d,
            Decision {
                winner: Some("b".into()),
                conflict: None
            }
        );
    }

    #[test]
    fn priority_and_unlisted_order() {
        let ch = BTreeMap::from([
            ("a".to_string(), change(9, &["b", "c"])),
            ("b".to_string(), change(1, &["a", "c"])),
            ("c".to_string(), change(5, &["a", "b"])),
        ]);
        let d = decide(&ch, &Strategy::Priority(vec!["c".into()]), &srcs());
        assert_eq!(d.winner.as_deref(), Some("c"));
        let ch2: BTreeMap<_, _> = ch.into_iter().filter(|(k, _)| k != "c").collect();
        // Neither listed: sources order decides.
        let d = decide(&ch2, &Strategy::Priority(vec!["c".into()]), &srcs());
        assert_eq!(d.winner.as_deref(), Some("a"));
    }

    #[test]
    fn abort_and_skip_have_no_winner() {
        let ch = BTreeMap::from([
            ("a".to_string(), change(1, &["b"])),
            ("b".to_string(), change(2, &["a"])),
        ]);
        for s in [Strategy::Abort, Strategy::Skip] {
            let d = decide(&ch, &s, &srcs());
            assert_eq!(d.winner, None);
            assert!(d.conflict.is_some());
        }
    }

    #[test]
    fn a_truncate_erases_unheard_changes_as_conflicts() {
        let ch = BTreeMap::from([
            ("a".to_string(), change(1, &["b"])),
            ("b".to_string(), change(9, &["a", "c"])),
            ("c".to_string(), change(2, &["b"])),
        ]);
        let d = truncated(&ch, "a");
        assert_eq!(d.winner.as_deref(), Some("a"));
        assert_eq!(d.conflict, Some(vec!["a".to_string(), "b".to_string()]));
        let heard = BTreeMap::from([("c".to_string(), change(2, &["b"]))]);
        assert_eq!(truncated(&heard, "a").conflict, None);
    }

    #[test]
    fn a_table_override_beats_the_default() {
        let s = Strategies {
            default: Strategy::Latest,
            tables: BTreeMap::from([("public.t".to_string(), Strategy::Skip)]),
        };
        assert_eq!(s.for_table("public.t"), &Strategy::Skip);
        assert_eq!(s.for_table("public.u"), &Strategy::Latest);
    }

    #[test]
    fn mutual_knowledge_is_no_conflict() {
        let ch = BTreeMap::from([
            ("a".to_string(), change(1, &["c"])),
            ("b".to_string(), change(2, &["c"])),
        ]);
        let d = decide(&ch, &Strategy::Abort, &srcs());
        assert_eq!(
            d,
            Decision {
                winner: Some("b".into()),
                conflict: None
            }
        );
    }
}
