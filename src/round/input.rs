//! What a round of one source reads: the sync, the source, its targets, the tables and the
//! progress cache it updates. Every apply path of a one-source round takes it.

use std::sync::Arc;

use crate::round::limits::Limits;
use crate::round::plan::TablePlan;
use crate::round::progress::ProgressCache;
use crate::round::side::{SourceSide, TargetSide};

/// Everything a round reads; the progress cache is updated in place.
pub struct RoundInput<'a> {
    pub sync: &'a str,
    pub source: &'a SourceSide,
    pub targets: &'a [TargetSide],
    /// Parents before children.
    pub tables: &'a [Arc<TablePlan>],
    pub progress: &'a mut ProgressCache,
    pub limits: &'a Limits,
}
