//! One target's round of a one-source sync, as its target actor runs it: its own source
//! snapshot, its own apply transaction, its sequences, all within `daemon.round_deadline`.
//! A round past the deadline is dropped: the source transaction's guard and the target's
//! transaction roll back (a session that does not answer is closed by its TCP timeouts), so
//! a stuck target never holds the source's snapshot longer than that.

use std::sync::Arc;
use std::time::Instant;

use crate::pg::error::PgError;
use crate::pg::ident::TableName;
use crate::round::batch::ReadShared;
use crate::round::held_round::{self, HeldInput};
use crate::round::hold::{Groups, Holds};
use crate::round::limits::Limits;
use crate::round::plan::TablePlan;
use crate::round::progress::ProgressCache;
use crate::round::report::{RoundReport, TargetReport};
use crate::round::sequences as seq;
use crate::round::side::{SourceSide, TargetSide};

/// What one target's rounds read and write: the sync's source, this target, the tables
/// (parents first) and the sequences to move along.
pub struct Lane {
    pub sync: String,
    pub source: SourceSide,
    pub target: TargetSide,
    pub tables: Vec<Arc<TablePlan>>,
    pub sequences: Vec<TableName>,
    /// The sync's source actor, which shares one read between targets at the same progress.
    pub shared: Option<ReadShared>,
}

/// Runs one round for the lane's target; `cache` is that target's progress, `holds` its
/// held tables (`hold`: they wait while the others go on).
pub async fn run_target_round(
    lane: &Lane,
    cache: &mut ProgressCache,
    limits: &Limits,
    holds: &mut Holds,
) -> RoundReport {
    let started = Instant::now();
    let targets = std::slice::from_ref(&lane.target);
    let round = async {
        let input = HeldInput {
            sync: &lane.sync,
            source: &lane.source,
            target: &lane.target,
            tables: &lane.tables,
            progress: &mut *cache,
            limits,
            shared: lane.shared.as_ref(),
        };
        let mut report = held_round::run(input, &mut *holds).await;
        if report.ok() {
            let sent = &mut cache.sequences;
            if let Err(e) = seq::sync(&lane.source, targets, &lane.sequences, sent).await {
                report.source_error = Some(e);
            }
        }
        report
    };
    match tokio::time::timeout(limits.round_deadline, round).await {
        Ok(report) => report,
        Err(_) => {
            // Whatever the round did is rolled back: read the target's progress again.
            cache.invalidate(&lane.source.name, &lane.target.name);
            let mut report = RoundReport::empty();
            report.targets.push(TargetReport {
                target: lane.target.name.clone(),
                result: Err(PgError::Deadline {
                    database: lane.target.name.clone(),
                    secs: limits.round_deadline.as_secs(),
                }),
                tables: Default::default(),
            });
            report.duration = started.elapsed();
            report.held = holds.list(&Groups::new(&lane.tables));
            report
        }
    }
}
