//! How an initial copy loads a table on a target, decided before the copy starts: a large
//! table is loaded without its indexes and they are rebuilt after (see `indexes`), but only
//! when the target's role can drop and recreate them. A managed target's role often owns the
//! tables without CREATE on their schema (the PostgreSQL 15+ default for `public`), and
//! `CREATE INDEX` / `ADD CONSTRAINT` need it; finding that out by failing would roll the copy
//! back and retry it forever. `drover check` prints the same decision.

use tokio_postgres::GenericClient;

use crate::pg::error::PgError;
use crate::round::indexes::REBUILD_MIN_ROWS;

/// The method one (target, table) copy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMethod {
    /// Drop the table's indexes, load, rebuild them in the same transaction.
    RebuildIndexes,
    /// Load with the indexes in place, for the reason given.
    IndexesInPlace(String),
}

impl CopyMethod {
    /// What `check` prints for a target whose role may (`None`) or may not rebuild.
    pub fn describe_rights(blocker: Option<&str>) -> String {
        match blocker {
            None => "rebuild indexes after load (large tables)".into(),
            Some(why) => format!("load with indexes in place ({why})"),
        }
    }
}

/// Decides how to copy a table of about `rows` source rows into the target `client` is
/// connected to (as the role that will copy).
pub async fn decide(
    client: &impl GenericClient,
    dst: &str,
    quoted: &str,
    rows: f64,
) -> Result<CopyMethod, PgError> {
    if rows < REBUILD_MIN_ROWS {
        return Ok(CopyMethod::IndexesInPlace("small table".into()));
    }
    Ok(match rebuild_blocker(client, dst, quoted).await? {
        None => CopyMethod::RebuildIndexes,
        Some(why) => CopyMethod::IndexesInPlace(why),
    })
}

/// Why the current role could not drop and recreate the indexes of table `quoted` (a quoted
/// name), or None when it can: it must own the table (DROP INDEX, ALTER TABLE) and may create
/// in the table's schema (CREATE INDEX, ADD CONSTRAINT). Indexes outside the default
/// tablespace stay in place too: the rebuilt ones would land in the default one.
pub async fn rebuild_blocker(
    client: &impl GenericClient,
    dst: &str,
    quoted: &str,
) -> Result<Option<String>, PgError> {
    let row = client
        .query_opt(
            "SELECT current_user::text, n.nspname::text, c.relkind::text, \
                    pg_has_role(c.relowner, 'USAGE'), has_schema_privilege(n.oid, 'CREATE'), \
                    (SELECT min(s.spcname::text) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                     JOIN pg_tablespace s ON s.oid = ic.reltablespace WHERE i.indrelid = c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1)",
            &[&quoted],
        )
        .await
        .map_err(|e| PgError::query(dst, "read index privileges for the copy", e))?
        .ok_or_else(|| PgError::schema(dst, format!("table {quoted} does not exist")))?;
    let (role, schema): (String, String) = (row.get(0), row.get(1));
    let (relkind, owner, create): (String, bool, bool) = (row.get(2), row.get(3), row.get(4));
    let tablespace: Option<String> = row.get(5);
    Ok(blocker(&Rights {
        role: &role,
        schema: &schema,
        plain: relkind == "r",
        owner,
        create,
        tablespace: tablespace.as_deref(),
    }))
}

/// What the target said about the role and the table.
struct Rights<'a> {
    role: &'a str,
    schema: &'a str,
    /// A plain table (partitioned parents have no indexes of their own to rebuild).
    plain: bool,
    owner: bool,
    create: bool,
    /// A non-default tablespace holding one of the table's indexes.
    tablespace: Option<&'a str>,
}

fn blocker(r: &Rights) -> Option<String> {
    if !r.plain {
        Some("a partitioned table".into())
    } else if !r.owner {
        Some(format!("role \"{}\" does not own the table", r.role))
    } else if !r.create {
        Some(format!(
            "role \"{}\" cannot create in schema \"{}\"",
            r.role, r.schema
        ))
    } else {
        r.tablespace
            .map(|s| format!("an index is in tablespace \"{s}\", a rebuild would move it"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(owner: bool, create: bool) -> Rights<'static> {
        Rights {
            role: "drover",
            schema: "public",
            plain: true,
            owner,
            create,
            tablespace: None,
        }
    }

    #[test]
    fn rebuild_needs_owner_and_create() {
        assert_eq!(blocker(&rights(true, true)), None);
        assert_eq!(
            blocker(&rights(true, false)).as_deref(),
            Some("role \"drover\" cannot create in schema \"public\"")
        );
        assert_eq!(
            blocker(&rights(false, true)).as_deref(),
            Some("role \"drover\" does not own the table")
        );
        assert_eq!(
            CopyMethod::describe_rights(blocker(&rights(true, false)).as_deref()),
            "load with indexes in place (role \"drover\" cannot create in schema \"public\")"
        );
    }
}
