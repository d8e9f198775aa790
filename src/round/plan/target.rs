//! A target of a one-source sync checked on its own, against the plan its sources gave: the
//! sync's plans are read without it when it is down, and it is checked once it answers.

use super::{Found, Side, TablePlan};
use crate::pg::error::PgError;
use crate::pg::ident::TableName;
use crate::pg::schema;

/// What one target adds to a table's plan.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub display: String,
    /// The table's oid there (names its temp key table).
    pub oid: u32,
    /// Tables it references there (ordering).
    pub fk_parents: Vec<TableName>,
}

impl TablePlan {
    /// Checks `target`'s table against the plan's reference (its first source) with the same
    /// checks and messages as `prepare`: it exists, has no nullable key column, and has the
    /// source's columns, types and key.
    pub async fn check_target(
        &self,
        configured: Option<&[String]>,
        target: &Side<'_>,
    ) -> Result<TargetTable, PgError> {
        let display = &self.display;
        let Some(reference) = &self.reference else {
            let msg = format!("table {display}: no plan to check the target against");
            return Err(PgError::internal(target.name, msg));
        };
        let client = crate::pg::connect::checkout(target.pool, target.name).await?;
        let meta = schema::describe(
            &client,
            target.name,
            &self.name,
            target.version_num,
            configured,
        )
        .await?
        .ok_or_else(|| PgError::schema(target.name, format!("table {display} does not exist")))?;
        crate::pg::key_nulls::refuse_nullable(&client, target.name, &meta).await?;
        let mut found = Found {
            reference: Some((reference.0.clone(), reference.1.clone())),
            ..Found::default()
        };
        found.compare(target.name, display, &meta, false)?;
        Ok(TargetTable {
            display: display.clone(),
            oid: meta.oid,
            fk_parents: meta.fk_parents,
        })
    }

    /// This plan with what `target` adds.
    pub fn with_target(&self, target: &str, t: &TargetTable) -> TablePlan {
        let mut p = self.clone();
        p.target_oids.insert(target.to_string(), t.oid);
        for parent in &t.fk_parents {
            if !p.fk_parents.contains(parent) {
                p.fk_parents.push(parent.clone());
            }
        }
        p
    }
}
