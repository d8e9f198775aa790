//! What a sync's rounds need, read once the lease is held: each database's pool and facts,
//! each table's plan (parents first), then the fencing epoch taken over on every receiver.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;

use crate::actors::database::{DatabaseActor, DbHandle, GetHandle};
use crate::actors::table::{Prepare, TableActor};
use crate::pg::error::PgError;
use crate::round::plan::fk_order;
use crate::round::side::{SourceSide, TargetSide};
use crate::round::target::Lane;
use crate::round::{evict, fence, TablePlan};
use crate::topology::SyncPlan;

/// Everything a round needs, built once the lease is held.
pub struct Prepared {
    pub sources: Vec<SourceSide>,
    /// Databases that receive: with one source, every other database; with several
    /// (multi-master), every database of the sync.
    pub receivers: Vec<TargetSide>,
    pub tables: Vec<Arc<TablePlan>>,
}

impl Prepared {
    /// The lane of one target of a one-source sync.
    pub fn lane(&self, plan: &SyncPlan, target: &str) -> Option<Lane> {
        let t = self.receivers.iter().find(|r| r.name == target)?;
        Some(Lane {
            sync: plan.name.clone(),
            source: self.sources[0].clone(),
            target: t.clone(),
            tables: self.tables.clone(),
            sequences: plan.sequences.clone(),
        })
    }
}

/// What `prepare` reads from.
pub struct Inputs {
    pub plan: SyncPlan,
    pub databases: HashMap<String, Addr<DatabaseActor>>,
    pub tables: Vec<Addr<TableActor>>,
    /// A former lease holder whose open transactions are ended first.
    pub former: Option<evict::Former>,
}

pub async fn prepare(i: Inputs) -> Result<Prepared, PgError> {
    let plan = &i.plan;
    // Databases, then tables, are read concurrently: a daemon starts its first round
    // sooner (catch-up after a stop is timed from the start).
    let handles: HashMap<String, DbHandle> =
        futures::future::try_join_all(plan.databases().map(|db| {
            let addr = i.databases[db].clone();
            async move {
                let h = addr
                    .send(GetHandle)
                    .await
                    .map_err(|e| PgError::internal(db, format!("database actor gone: {e}")))??;
                Ok::<_, PgError>((db.to_string(), h))
            }
        }))
        .await?
        .into_iter()
        .collect();
    let source_handles: Vec<DbHandle> = plan.sources.iter().map(|d| handles[d].clone()).collect();
    let receive_only: Vec<DbHandle> = plan.targets.iter().map(|d| handles[d].clone()).collect();
    let first = &plan.sources[0];
    let plans: Vec<TablePlan> = futures::future::try_join_all(i.tables.iter().map(|t| {
        let msg = Prepare {
            sources: source_handles.clone(),
            targets: receive_only.clone(),
        };
        async move {
            let p = t
                .send(msg)
                .await
                .map_err(|e| PgError::internal(first, format!("table actor gone: {e}")))??;
            Ok::<_, PgError>((*p).clone())
        }
    }))
    .await?;
    let receivers: Vec<&str> = if plan.sources.len() > 1 {
        plan.databases().collect()
    } else {
        plan.receivers_of(first).collect()
    };
    let side = |h: &DbHandle| SourceSide {
        name: h.name.clone(),
        pool: h.pool.clone(),
    };
    let prepared = Prepared {
        sources: source_handles.iter().map(side).collect(),
        receivers: receivers
            .iter()
            .map(|d| TargetSide {
                name: d.to_string(),
                pool: handles[*d].pool.clone(),
                replica_role: handles[*d].facts.replica_role.clone(),
            })
            .collect(),
        tables: fk_order(plans).into_iter().map(Arc::new).collect(),
    };
    // A former holder frozen mid-transaction would hold the locks our rounds need.
    if let Some(f) = &i.former {
        evict::end_former_sessions(&plan.name, f, &prepared.receivers).await;
    }
    // Before the first commit under this lease: a former holder's commits now fail.
    fence::take_over(&plan.name, &prepared.receivers).await?;
    Ok(prepared)
}
