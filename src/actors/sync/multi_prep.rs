//! A multi-master sync prepared with the masters that answer. The first source must answer
//! (it holds the lease). Another database that cannot be reached is left out: the plans are
//! read from the others, the rounds run without it (`round::multi_down` probes it), and when it
//! answers the plans are read again with it. A database that was not in the plans read before
//! (`Inputs::settled`) and fails them for any other cause (say, a table that differs) is left
//! out with that error too, so a master rejoining with a wrong schema stops only itself.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;

use super::prepare::{handle, source_side, table_plans, target_side, Inputs, Prepared};
use crate::actors::database::{DatabaseActor, DbHandle, GetPool};
use crate::pg::error::{ErrorKind, PgError};
use crate::round::plan::fk_order;
use crate::round::{evict, fence};

pub(super) async fn prepare_multi(i: Inputs) -> Result<Prepared, PgError> {
    let plan = &i.plan;
    // Databases, then tables, are read concurrently: a daemon starts its first round
    // sooner (catch-up after a stop is timed from the start).
    let results = futures::future::join_all(plan.databases().map(|db| {
        let addr = i.databases[db].clone();
        async move { (db.to_string(), handle(&addr, db).await) }
    }))
    .await;
    let mut handles: HashMap<String, DbHandle> = HashMap::new();
    let mut absent: Vec<PgError> = Vec::new();
    for (db, res) in results {
        match res {
            Ok(h) => drop(handles.insert(db, h)),
            Err(e) if may_wait(&i, &db, &e) => absent.push(e),
            Err(e) => return Err(e),
        }
    }
    let plans = loop {
        let of = |dbs: &[String]| -> Vec<DbHandle> {
            (dbs.iter())
                .filter_map(|d| handles.get(d).cloned())
                .collect()
        };
        let (sources, receive_only) = (of(&plan.sources), of(&plan.targets));
        match table_plans(&i.tables, &sources, &receive_only).await {
            Ok(plans) => break plans,
            Err(e) if handles.contains_key(e.database()) && may_wait(&i, e.database(), &e) => {
                handles.remove(e.database());
                absent.push(e);
            }
            Err(e) => return Err(e),
        }
    };
    let prepared = Prepared {
        sources: (plan.sources.iter())
            .filter_map(|d| handles.get(d).map(source_side))
            .collect(),
        receivers: (plan.databases())
            .filter_map(|d| handles.get(d).map(target_side))
            .collect(),
        tables: fk_order(plans).into_iter().map(Arc::new).collect(),
        unprepared: Vec::new(),
        absent: with_pools(&i.databases, absent).await?,
        read: 0,
    };
    if let Some(f) = &i.former {
        evict::end_former_sessions(&plan.name, f, &prepared.receivers).await;
    }
    fence::take_over(&plan.name, i.term, &prepared.receivers).await?;
    Ok(prepared)
}

/// Whether `db` failing with `e` leaves it out rather than failing the sync: never the first
/// source; a connection failure always; any failure of a database new to the plans.
fn may_wait(i: &Inputs, db: &str, e: &PgError) -> bool {
    if db == i.plan.sources[0] || !i.plan.databases().any(|d| d == db) {
        return false;
    }
    let rejoining = !i.settled.is_empty() && !i.settled.iter().any(|s| s == db);
    e.kind() == ErrorKind::Connection || rejoining
}

/// Each left-out database with its pool (probed by the rounds until it answers).
async fn with_pools(
    databases: &HashMap<String, Addr<DatabaseActor>>,
    absent: Vec<PgError>,
) -> Result<Vec<(PgError, crate::pg::Pool)>, PgError> {
    let mut out = Vec::new();
    for e in absent {
        let db = e.database().to_string();
        let pool = (databases[&db].send(GetPool).await)
            .map_err(|x| PgError::internal(&db, format!("database actor gone: {x}")))?;
        out.push((e, pool));
    }
    Ok(out)
}

impl super::SyncActor {
    /// The databases of the plans in use, which a new reading must not leave out.
    pub(super) fn settled(&self) -> Vec<String> {
        let Some(p) = &self.prepared else {
            return Vec::new();
        };
        p.receivers.iter().map(|r| r.name.clone()).collect()
    }

    /// Masters the plans were read without: failing in status, left out of the rounds and
    /// probed by them until they answer.
    pub(super) fn masters_absent(&mut self, absent: Vec<(PgError, crate::pg::Pool)>) {
        for (e, pool) in absent {
            self.record_error(crate::metrics::failures::Stage::Prepare, &e);
            self.multi_progress.down.unprepared(&e, pool);
        }
    }
}
