//! TableActor: one per (sync, table). Owns the table's plan (columns, key, quoted SQL), checks
//! that every database of the sync agrees on the table, and keeps the table's counters, which
//! status shows per table (`table_states`).

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::actors::database::DbHandle;
use crate::pg::error::PgError;
use crate::pg::ident::TableName;
use crate::round::plan::{Side, TablePlan, TargetTable};
use crate::status::TableStatus;

/// Builds (or rebuilds, after a schema error) the table's plan.
#[derive(Message)]
#[rtype(result = "Result<Arc<TablePlan>, PgError>")]
pub struct Prepare {
    pub sources: Vec<DbHandle>,
    pub targets: Vec<DbHandle>,
}

/// Checks one target against the table's plan (`TablePlan::check_target`), after `Prepare`.
#[derive(Message)]
#[rtype(result = "Result<TargetTable, PgError>")]
pub struct PrepareTarget(pub DbHandle);

/// Rows a round applied to this table.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Applied {
    pub inserted: u64,
    pub deleted: u64,
}

/// The table's status, for `/status`.
#[derive(Message)]
#[rtype(result = "TableStatus")]
pub struct GetTableStatus;

pub struct TableActor {
    pub table: TableName,
    /// Key columns from `[relgroups.X.keys]`, if any.
    pub configured_key: Option<Vec<String>>,
    plan: Option<Arc<TablePlan>>,
    pub inserted: u64,
    pub deleted: u64,
    last_applied: Option<DateTime<Utc>>,
}

impl TableActor {
    pub fn new(table: TableName, configured_key: Option<Vec<String>>) -> Self {
        TableActor {
            table,
            configured_key,
            plan: None,
            inserted: 0,
            deleted: 0,
            last_applied: None,
        }
    }

    fn status(&self) -> TableStatus {
        let (key, key_method) = match &self.plan {
            None => (Vec::new(), "unknown"),
            Some(p) if p.whole_row => (unquoted(&p.cols), "whole_row"),
            Some(p) => (unquoted(&p.key), "key"),
        };
        TableStatus {
            table: self.table.to_string(),
            key,
            key_method: key_method.into(),
            rows_inserted: self.inserted,
            rows_deleted: self.deleted,
            last_applied: self.last_applied,
        }
    }
}

/// Column names as the user wrote them (the plan keeps them quoted for SQL).
fn unquoted(cols: &[String]) -> Vec<String> {
    (cols.iter())
        .map(
            |c| match c.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => c.clone(),
            },
        )
        .collect()
}

fn side(h: &DbHandle) -> Side<'_> {
    Side {
        name: &h.name,
        pool: &h.pool,
        version_num: h.facts.version_num,
    }
}

impl Actor for TableActor {
    type Context = Context<Self>;
}

impl Handler<Prepare> for TableActor {
    type Result = ResponseActFuture<Self, Result<Arc<TablePlan>, PgError>>;

    fn handle(&mut self, msg: Prepare, _: &mut Context<Self>) -> Self::Result {
        let table = self.table.clone();
        let key = self.configured_key.clone();
        let fut = async move {
            let s: Vec<Side> = msg.sources.iter().map(side).collect();
            let t: Vec<Side> = msg.targets.iter().map(side).collect();
            TablePlan::prepare(&table, key.as_deref(), &s, &t)
                .await
                .map(Arc::new)
        };
        Box::pin(fut.into_actor(self).map(|res, act, _| {
            if let Ok(p) = &res {
                act.plan = Some(p.clone());
            }
            res
        }))
    }
}

impl Handler<PrepareTarget> for TableActor {
    type Result = ResponseFuture<Result<TargetTable, PgError>>;

    fn handle(&mut self, msg: PrepareTarget, _: &mut Context<Self>) -> Self::Result {
        let plan = self.plan.clone();
        let key = self.configured_key.clone();
        let display = self.table.to_string();
        Box::pin(async move {
            let Some(plan) = plan else {
                let text = format!("table {display}: plans not read yet");
                return Err(PgError::internal(&msg.0.name, text));
            };
            plan.check_target(key.as_deref(), &side(&msg.0)).await
        })
    }
}

impl Handler<Applied> for TableActor {
    type Result = ();

    fn handle(&mut self, msg: Applied, _: &mut Context<Self>) {
        self.inserted += msg.inserted;
        self.deleted += msg.deleted;
        self.last_applied = Some(Utc::now());
    }
}

impl Handler<GetTableStatus> for TableActor {
    type Result = MessageResult<GetTableStatus>;

    fn handle(&mut self, _: GetTableStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::unquoted;

    #[test]
    fn column_names_lose_their_sql_quotes() {
        let cols = [
            "\"id\"".to_string(),
            "\"Odd \"\"x\"\"\"".to_string(),
            "plain".to_string(),
        ];
        assert_eq!(unquoted(&cols), ["id", "Odd \"x\"", "plain"]);
    }
}
