//! One round of a sync: read what changed on a source under one snapshot, apply it to each
//! target in one transaction together with the progress marker, then purge what every receiver
//! has applied. See docs/design.md ("Batching by snapshot") for why this loses and duplicates
//! nothing.
//!
//! `plan` prepares per-table SQL, `snapshot` holds progress markers, `apply` runs a
//! one-source round (`small` applies small ones without COPY; `in_place` updates rows in place where FKs are live), `multi` a multi-master round
//! (`gather` reads pending keys, `resolve`
//! picks winners, `winners` sends their rows, `keys` encodes keys), `in_place` applies
//! updates in place where foreign keys are live, `purge` trims delta tables, `timing` profiles
//! a round's steps, `backlog` keeps bounded rounds from wedging, `signature` notices column
//! changes on a source between rounds, `rewind` stops rounds when a source or target moved
//! backwards. `fence` refuses commits after a takeover; `evict` ends the transactions a
//! frozen former holder left open. `target` runs one target's round of a one-source sync (its
//! own snapshot and transaction, within `limits`: lock and statement timeouts, a deadline);
//! `clock` measures each
//! master's clock offset; `hold` keeps a table the target refuses (and its FK group) back on that target alone, and
//! `held_round` runs a target's round around those holds. `batch` is a source read that the
//! targets at the same progress share (the source actor's), `batch_apply` one target's round
//! from it.

pub mod apply;
pub mod apply_steps;
pub mod backlog;
pub mod batch;
pub mod batch_apply;
pub mod batch_copy;
pub mod batch_rows;
pub mod batch_share;
pub mod clock;
pub mod conflict_log;
pub mod copy;
pub mod copy_apply;
pub mod copy_method;
pub mod evict;
pub mod fence;
pub mod gather;
pub mod held_round;
pub mod hold;
pub mod in_place;
pub mod increments;
pub mod indexes;
pub mod input;
pub mod keys;
pub mod limits;
pub mod local_newer;
pub mod multi;
pub(crate) mod multi_apply;
pub mod multi_backlog;
pub mod multi_down;
mod multi_images;
pub(crate) mod multi_input;
pub mod multi_rewind;
pub mod opening;
pub mod pending;
pub mod plan;
pub mod progress;
pub mod purge;
pub mod report;
pub mod resolve;
pub mod rewind;
pub mod sequences;
pub mod session;
pub mod side;
pub mod signature;
pub mod small;
pub mod snapshot;
pub mod source_snapshot;
pub mod target;
pub mod timing;
pub mod winners;

pub use apply::run_round;
pub use input::RoundInput;
pub use plan::TablePlan;
pub use report::{RoundReport, TargetReport};
