//! What a sync's rounds need, read once the lease is held: each database's pool and facts,
//! each table's plan (parents first), then the fencing epoch taken over on every receiver.
//!
//! A one-source sync is prepared in two parts: the sync (its source and the table plans the
//! source gives) and each target on its own (`prepare_target`: facts, table checks, eviction
//! of a former holder's sessions, fencing). A target that cannot be prepared is left out and
//! retried by its lane, so one target that is down does not stop the others. A multi-master
//! sync is prepared with the masters that answer (`multi_prep`).

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;

use crate::actors::database::{DatabaseActor, DbHandle, GetHandle};
use crate::actors::table::{Prepare, PrepareTarget, TableActor};
use crate::pg::error::PgError;
use crate::round::plan::{fk_order, TargetTable};
use crate::round::side::{SourceSide, TargetSide};
use crate::round::target::Lane;
use crate::round::{evict, fence, TablePlan};
use crate::topology::SyncPlan;

/// Everything a round needs, built once the lease is held.
pub struct Prepared {
    pub sources: Vec<SourceSide>,
    /// Databases that receive: with one source, every target prepared so far; with several
    /// (multi-master), every database of the sync.
    pub receivers: Vec<TargetSide>,
    pub tables: Vec<Arc<TablePlan>>,
    /// Targets that could not be prepared, with why (one-source syncs).
    pub unprepared: Vec<(String, PgError)>,
    /// Multi-master: databases the plans were read without, with why and their pool.
    pub absent: Vec<(PgError, crate::pg::Pool)>,
    /// Which reading of the plans this is (`SyncActor::plans_read`).
    pub read: u64,
}

impl Prepared {
    /// The lane of one target of a one-source sync, once that target is prepared.
    pub fn lane(&self, plan: &SyncPlan, target: &str) -> Option<Lane> {
        let t = self.receivers.iter().find(|r| r.name == target)?;
        Some(Lane {
            sync: plan.name.clone(),
            source: self.sources[0].clone(),
            target: t.clone(),
            tables: self.tables.clone(),
            sequences: plan.sequences.clone(),
            shared: None,
        })
    }

    /// These plans with a target prepared later.
    pub fn with_target(&self, ready: &ReadyTarget) -> Prepared {
        let mut p = self.clone_sides();
        p.receivers.retain(|r| r.name != ready.side.name);
        p.receivers.push(ready.side.clone());
        p.tables = add_target(&self.tables, ready);
        p
    }

    fn clone_sides(&self) -> Prepared {
        Prepared {
            sources: self.sources.clone(),
            receivers: self.receivers.clone(),
            tables: self.tables.clone(),
            unprepared: Vec::new(),
            absent: Vec::new(),
            read: self.read,
        }
    }
}

/// A target prepared on its own: its side and what it adds to each table's plan.
pub struct ReadyTarget {
    pub side: TargetSide,
    pub tables: Vec<TargetTable>,
}

/// The sync's plans with `ready`'s oids and foreign-key parents, parents first again.
pub fn add_target(tables: &[Arc<TablePlan>], ready: &ReadyTarget) -> Vec<Arc<TablePlan>> {
    let plans = tables
        .iter()
        .map(
            |t| match ready.tables.iter().find(|r| r.display == t.display) {
                Some(r) => t.with_target(&ready.side.name, r),
                None => (**t).clone(),
            },
        )
        .collect();
    fk_order(plans).into_iter().map(Arc::new).collect()
}

/// What `prepare` reads from.
pub struct Inputs {
    pub plan: SyncPlan,
    pub databases: HashMap<String, Addr<DatabaseActor>>,
    pub tables: Vec<Addr<TableActor>>,
    /// A former lease holder whose open transactions are ended first.
    pub former: Option<evict::Former>,
    /// The lease's number: fencing under an older lease is dropped (`fence::begin`).
    pub term: u64,
    /// One-source syncs: the targets to prepare with the sync (the others are their lanes').
    pub targets: Vec<String>,
    /// Multi-master: the databases of the plans read before, if any. Any other database that
    /// fails to prepare is left out instead of failing the sync (`multi_prep`).
    pub settled: Vec<String>,
}

/// One target of a one-source sync, prepared on its own.
pub struct TargetInputs {
    pub sync: String,
    pub name: String,
    pub database: Addr<DatabaseActor>,
    pub tables: Vec<Addr<TableActor>>,
    pub former: Option<evict::Former>,
    pub term: u64,
}

pub(super) async fn handle(addr: &Addr<DatabaseActor>, db: &str) -> Result<DbHandle, PgError> {
    addr.send(GetHandle)
        .await
        .map_err(|e| PgError::internal(db, format!("database actor gone: {e}")))?
}

/// Table plans from `sources` (and, for multi-master, every other database as `targets`).
pub(super) async fn table_plans(
    tables: &[Addr<TableActor>],
    sources: &[DbHandle],
    targets: &[DbHandle],
) -> Result<Vec<TablePlan>, PgError> {
    let first = &sources[0].name;
    futures::future::try_join_all(tables.iter().map(|t| {
        let msg = Prepare {
            sources: sources.to_vec(),
            targets: targets.to_vec(),
        };
        async move {
            let p = t
                .send(msg)
                .await
                .map_err(|e| PgError::internal(first, format!("table actor gone: {e}")))??;
            Ok::<_, PgError>((*p).clone())
        }
    }))
    .await
}

pub(super) fn target_side(h: &DbHandle) -> TargetSide {
    TargetSide {
        name: h.name.clone(),
        pool: h.pool.clone(),
        replica_role: h.facts.replica_role.clone(),
    }
}

pub(super) fn source_side(h: &DbHandle) -> SourceSide {
    SourceSide {
        name: h.name.clone(),
        pool: h.pool.clone(),
    }
}

/// Prepares a one-source sync (a multi-master sync: `multi_prep::prepare_multi`).
pub async fn prepare(i: Inputs) -> Result<Prepared, PgError> {
    let plan = &i.plan;
    let source = &plan.sources[0];
    let source_handle = handle(&i.databases[source], source).await?;
    let plans = table_plans(&i.tables, std::slice::from_ref(&source_handle), &[]).await?;
    fence::begin(&plan.name, i.term);
    let mut prepared = Prepared {
        sources: vec![source_side(&source_handle)],
        receivers: Vec::new(),
        tables: fk_order(plans).into_iter().map(Arc::new).collect(),
        unprepared: Vec::new(),
        absent: Vec::new(),
        read: 0,
    };
    // Targets are prepared concurrently and each on its own: one that is down is left out.
    let results = futures::future::join_all(i.targets.iter().map(|t| {
        prepare_target(TargetInputs {
            sync: plan.name.clone(),
            name: t.clone(),
            database: i.databases[t].clone(),
            tables: i.tables.clone(),
            former: i.former.clone(),
            term: i.term,
        })
    }))
    .await;
    for (t, res) in i.targets.iter().zip(results) {
        match res {
            Ok(ready) => prepared = prepared.with_target(&ready),
            Err(e) => prepared.unprepared.push((t.clone(), e)),
        }
    }
    Ok(prepared)
}

/// Prepares one target: its facts, its tables checked against the sync's plans, a former
/// holder's sessions ended there, and its fencing epoch taken before its first commit.
pub async fn prepare_target(i: TargetInputs) -> Result<ReadyTarget, PgError> {
    let h = handle(&i.database, &i.name).await?;
    let tables = futures::future::try_join_all(i.tables.iter().map(|t| {
        let msg = PrepareTarget(h.clone());
        let db = h.name.clone();
        async move {
            t.send(msg)
                .await
                .map_err(|e| PgError::internal(&db, format!("table actor gone: {e}")))?
        }
    }))
    .await?;
    let side = target_side(&h);
    let receivers = std::slice::from_ref(&side);
    // A former holder frozen mid-transaction would hold the locks our rounds need.
    if let Some(f) = &i.former {
        evict::end_former_sessions(&i.sync, f, receivers).await;
    }
    // Before this target's first commit under this lease: a former holder's commits fail.
    fence::take_over_target(&i.sync, i.term, &side).await?;
    Ok(ReadyTarget { side, tables })
}
