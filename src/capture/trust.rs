//! Whether an existing `drover` schema may be trusted by `drover install`. drover keeps its
//! capture functions, delta tables and the capture guard's secret there; a schema that another
//! role created (or may create objects in) could hold objects of that role's choosing, so
//! install refuses it rather than build on it.

use tokio_postgres::Transaction;

use crate::pg::error::PgError;

/// The existing schema's owner, whether that owner is a superuser or the installing role, and
/// the roles other than those that hold CREATE on it (PUBLIC included).
const READ: &str = "SELECT r.rolname::text, r.rolsuper OR r.rolname = current_user, \
     ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END \
           FROM aclexplode(n.nspacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee \
           WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner \
             AND NOT coalesce(g.rolsuper OR g.rolname = current_user, false)) \
     FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'drover'";

/// Refuses a `drover` schema owned by another role (not a superuser, not the installing role)
/// or one other roles may create objects in.
pub async fn check_schema(tx: &Transaction<'_>, db: &str) -> Result<(), PgError> {
    let Some(row) = tx
        .query_opt(READ, &[])
        .await
        .map_err(|e| PgError::query(db, "read the drover schema's owner", e))?
    else {
        return Ok(());
    };
    let (owner, trusted, creators): (String, bool, Vec<String>) =
        (row.get(0), row.get(1), row.get(2));
    if !trusted {
        return Err(PgError::install(
            db,
            format!(
                "schema \"drover\" exists and is owned by \"{owner}\", which is neither a \
                 superuser nor the role drover installs as: it may hold objects of that role's \
                 choosing; check its contents, then drop it (DROP SCHEMA drover CASCADE) or \
                 make the installing role its owner (ALTER SCHEMA drover OWNER TO ...)"
            ),
        ));
    }
    if !creators.is_empty() {
        return Err(PgError::install(
            db,
            format!(
                "schema \"drover\" lets {} create objects in it: revoke that \
                 (REVOKE CREATE ON SCHEMA drover FROM ...) and check its contents",
                creators.join(", ")
            ),
        ));
    }
    Ok(())
}
