//! What a multi-master round reads (`MultiInput`) and what it decides per table
//! (`TableRound`), shared by the round's read side (`multi`) and its applies (`multi_apply`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::round::keys::Key;
use crate::round::plan::TablePlan;
use crate::round::progress::ProgressCache;
use crate::round::resolve::{Strategies, Strategy};
use crate::round::side::{SourceSide, TargetSide};

pub struct MultiInput<'a> {
    pub sync: &'a str,
    /// Masters, in config order.
    pub sources: &'a [SourceSide],
    /// Every database of the sync, masters included.
    pub databases: &'a [TargetSide],
    /// Parents before children.
    pub tables: &'a [Arc<TablePlan>],
    pub progress: &'a mut ProgressCache,
    pub strategy: &'a Strategies,
    pub limits: &'a crate::round::limits::Limits,
}

/// One table's decisions for this round.
#[derive(Default)]
pub(crate) struct TableRound {
    /// Winner -> keys whose winner it is.
    pub(crate) won: BTreeMap<String, Vec<Key>>,
    /// The winner's change time of each won key (`local_newer`).
    pub(crate) won_at: HashMap<Key, chrono::DateTime<chrono::Utc>>,
    /// A source whose TRUNCATE is pending: every other database reloads the table from it.
    pub(crate) reload_from: Option<String>,
    /// Key-less tables being reloaded: each source's progress towards `reload_from` when the
    /// round began (`multi_images`; an apply that commits moves the cache on).
    pub(crate) reload_prevs: HashMap<String, crate::round::snapshot::Snapshot>,
    /// Per source: retained delta rows.
    pub(crate) retained: HashMap<String, i64>,
    /// Per source: receivers with something pending.
    pub(crate) pending_to: HashMap<String, BTreeSet<String>>,
    /// Per receiver: the increments of delta columns it receives (`increments`).
    pub(crate) incs: crate::round::increments::ByReceiver,
    /// Per receiver: increments the winner's image lacks, for keys new there (`increments`).
    pub(crate) missing: crate::round::increments::ByReceiver,
}

/// The strategy that decides `t`'s conflicts.
pub(crate) fn strategy_of<'a>(input: &MultiInput<'a>, t: &TablePlan) -> &'a Strategy {
    input.strategy.for_table(&t.display)
}
