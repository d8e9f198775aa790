//! Delta columns (`[relgroups.NAME.delta_columns]`): numeric columns whose changes are
//! captured as increments (new - old) so that concurrent changes on several masters add up.
//! The delta table of such a table carries one increment column per delta column
//! (`drover_inc_1`.. in configured order) and `drover_other`: whether any other column (or
//! the row's existence) changed. A NULL value counts as 0.

use crate::pg::ident::{quote_ident, TableName};
use crate::pg::schema::{Column, TableMeta};

use super::sql::{capture_function, CaptureMode, CaptureObjects, OnTable, Pieces};

/// The delta table column saying a change touched more than the delta columns.
pub const OTHER: &str = "drover_other";

/// The types a delta column may have.
pub const NUMERIC_TYPES: &str = "smallint, integer, bigint, numeric, real or double precision";

/// The delta table column holding the increments of the `i`-th (0-based) delta column.
pub fn inc_name(i: usize) -> String {
    format!("drover_inc_{}", i + 1)
}

fn is_float(type_name: &str) -> bool {
    matches!(type_name, "real" | "double precision")
}

/// Whether a column of this type (`format_type`) can be a delta column.
pub fn is_numeric(type_name: &str) -> bool {
    matches!(type_name, "smallint" | "integer" | "bigint" | "numeric")
        || is_float(type_name)
        || type_name.starts_with("numeric(")
}

/// The type increments of a column of `type_name` are kept in: exact for integers and
/// numeric (a sum may not fit the column's own type), the float itself for floats.
pub fn inc_type(type_name: &str) -> &'static str {
    if is_float(type_name) {
        "double precision"
    } else {
        "numeric"
    }
}

/// The delta columns `configured` for a table, checked against its metadata: each exists, is
/// numeric and not part of the key, and the table has a key. The error names the table, the
/// column, the cause and the fix (callers add the database).
pub fn columns<'m>(
    meta: &'m TableMeta,
    configured: Option<&Vec<String>>,
) -> Result<Vec<&'m Column>, String> {
    let Some(configured) = configured.filter(|c| !c.is_empty()) else {
        return Ok(Vec::new());
    };
    let table = &meta.name;
    let fix = "[relgroups.*.delta_columns]";
    if meta.whole_row() {
        return Err(format!(
            "table {table} has no key, so its delta columns cannot be matched across masters: add a primary key or remove the table from {fix}"
        ));
    }
    let mut out = Vec::new();
    for name in configured {
        let Some(col) = meta.columns.iter().find(|c| &c.name == name) else {
            return Err(format!(
                "table {table} has no column {} (named in {fix}): fix the name or remove it",
                quote_ident(name)
            ));
        };
        if meta.key.contains(name) {
            return Err(format!(
                "column {} of table {table} is a key column and cannot be a delta column: remove it from {fix}",
                quote_ident(name)
            ));
        }
        if !is_numeric(&col.type_name) {
            return Err(format!(
                "delta column {} of table {table} has type {}, not a number ({NUMERIC_TYPES}): remove it from {fix} or change the column's type",
                quote_ident(name),
                col.type_name
            ));
        }
        out.push(col);
    }
    Ok(out)
}

/// Adds the increment columns and `drover_other` to a delta table (new or from an install
/// without them).
pub fn add_columns(objects: &CaptureObjects, incs: &[&Column]) -> String {
    let mut adds: Vec<String> = (incs.iter().enumerate())
        .map(|(i, c)| {
            format!(
                "ADD COLUMN IF NOT EXISTS {} {}",
                inc_name(i),
                inc_type(&c.type_name)
            )
        })
        .collect();
    adds.push(format!(
        "ADD COLUMN IF NOT EXISTS {OTHER} boolean NOT NULL DEFAULT true"
    ));
    format!(
        "ALTER TABLE {} {};\n",
        objects.delta_quoted,
        adds.join(", ")
    )
}

/// Quoted names of `cols`, each prefixed with `p`.
fn with(p: &str, cols: &[&Column]) -> Vec<String> {
    cols.iter()
        .map(|c| format!("{p}{}", quote_ident(&c.name)))
        .collect()
}

/// `ROW(..)::text` of the columns that are neither key nor delta columns, prefixed with `p`;
/// compared as text so that every type compares (json has no equality).
fn others_text(p: &str, meta: &TableMeta, incs: &[&Column]) -> String {
    let others: Vec<&Column> = (meta.columns.iter())
        .filter(|c| !meta.key.contains(&c.name) && !incs.iter().any(|i| i.name == c.name))
        .collect();
    if others.is_empty() {
        "''::text".into()
    } else {
        format!("ROW({})::text", with(p, &others).join(", "))
    }
}

/// The capture function of a table with delta columns, and its triggers.
pub fn create_capture(
    table: &TableName,
    objects: &CaptureObjects,
    meta: &TableMeta,
    key: &[&Column],
    incs: &[&Column],
    on: OnTable,
) -> String {
    let klist = with("", key).join(", ");
    let inc_cols: Vec<String> = (0..incs.len()).map(inc_name).collect();
    let insert = format!(
        "INSERT INTO {} ({klist}, drover_xid, drover_changed_at, {}, {OTHER})",
        objects.delta_quoted,
        inc_cols.join(", ")
    );
    let body = Body {
        meta,
        key,
        incs,
        insert,
        p: Pieces::new(&objects.delta_quoted),
    };
    let body = match on.body_mode() {
        CaptureMode::Statement => body.statement(),
        CaptureMode::Row => body.row(),
    };
    capture_function(table, objects, &body, on)
}

/// What both capture function bodies are made of.
struct Body<'a> {
    meta: &'a TableMeta,
    key: &'a [&'a Column],
    incs: &'a [&'a Column],
    /// `INSERT INTO delta (key.., drover_xid, drover_changed_at, incs.., drover_other)`.
    insert: String,
    p: Pieces,
}

impl Body<'_> {
    /// The delta columns' values prefixed with `p`, NULL as 0, with `sign`.
    fn values(&self, p: &str, sign: &str) -> String {
        (with(p, self.incs).iter())
            .map(|c| format!("{sign}coalesce({c}, 0)"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Statement triggers: an UPDATE sums +new and -old per key (a changed key is a delete
    /// of the old key and an insert of the new one).
    fn statement(&self) -> String {
        let klist = with("", self.key).join(", ");
        let sums: Vec<String> = (0..self.incs.len())
            .map(|i| format!("sum(drover_i{i})"))
            .collect();
        let alias = |sign: &str| -> String {
            (with("", self.incs).iter().enumerate())
                .map(|(i, c)| format!("{sign}coalesce({c}, 0) AS drover_i{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Pieces { stamp, guard, .. } = self.p;
        format!(
            "BEGIN
  {guard}
  IF TG_OP = 'INSERT' THEN
    {insert} SELECT {klist}, {stamp}, {new}, true FROM drover_new;
  ELSIF TG_OP = 'UPDATE' THEN
    {insert} SELECT {klist}, {stamp}, {sums}, count(*) FILTER (WHERE drover_s > 0) <> count(*) FILTER (WHERE drover_s < 0) OR count(DISTINCT drover_o) > 1
      FROM (SELECT {klist}, {new_a}, 1 AS drover_s, {others} AS drover_o FROM drover_new
            UNION ALL SELECT {klist}, {old_a}, -1, {others} FROM drover_old) AS x GROUP BY {klist};
  ELSIF TG_OP = 'DELETE' THEN
    {insert} SELECT {klist}, {stamp}, {old}, true FROM drover_old;
  ELSE
    {truncate}
  END IF;
  IF FOUND THEN {notify} END IF;
  RETURN NULL;
END",
            insert = self.insert,
            truncate = self.p.truncate,
            notify = self.p.notify,
            new = self.values("", ""),
            old = self.values("", "-"),
            sums = sums.join(", "),
            new_a = alias(""),
            old_a = alias("-"),
            others = others_text("", self.meta, self.incs),
        )
    }

    /// A row trigger: one delta row per change, two when the key changed.
    fn row(&self) -> String {
        let nk = with("NEW.", self.key).join(", ");
        let ok = with("OLD.", self.key).join(", ");
        let diff: Vec<String> = (with("NEW.", self.incs).iter().zip(with("OLD.", self.incs)))
            .map(|(n, o)| format!("coalesce({n}, 0) - coalesce({o}, 0)"))
            .collect();
        let Pieces { stamp, guard, .. } = self.p;
        format!(
            "BEGIN
  {guard}
  IF TG_OP = 'TRUNCATE' THEN
    {truncate}
  ELSIF TG_OP = 'INSERT' THEN
    {insert} VALUES ({nk}, {stamp}, {new}, true);
  ELSIF TG_OP = 'DELETE' THEN
    {insert} VALUES ({ok}, {stamp}, {old}, true);
  ELSIF ROW({ok}) IS NOT DISTINCT FROM ROW({nk}) THEN
    {insert} VALUES ({nk}, {stamp}, {diff}, {on} IS DISTINCT FROM {oo});
  ELSE
    {insert} VALUES ({nk}, {stamp}, {new}, true);
    {insert} VALUES ({ok}, {stamp}, {old}, true);
  END IF;
  {notify}
  RETURN NULL;
END",
            insert = self.insert,
            truncate = self.p.truncate,
            notify = self.p.notify,
            new = self.values("NEW.", ""),
            old = self.values("OLD.", "-"),
            diff = diff.join(", "),
            on = others_text("NEW.", self.meta, self.incs),
            oo = others_text("OLD.", self.meta, self.incs),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::schema::KeyMethod;

    fn meta() -> TableMeta {
        let col = |n: &str, t: &str| Column {
            name: n.into(),
            type_name: t.into(),
            needs_value: false,
        };
        TableMeta {
            oid: 1,
            name: TableName::new("public", "t"),
            columns: vec![
                col("id", "integer"),
                col("n", "bigint"),
                col("note", "text"),
                col("f", "numeric(12,2)"),
            ],
            key: vec!["id".into()],
            method: KeyMethod::Primary,
            fk_parents: Vec::new(),
            identity_always: Vec::new(),
        }
    }

    #[test]
    fn delta_columns_are_numeric_non_key_columns_that_exist() {
        let m = meta();
        let cols = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let names = |r: Vec<&Column>| r.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(columns(&m, cols(&["n", "f"]).as_ref()).unwrap()),
            ["n", "f"]
        );
        let err = columns(&m, cols(&["note"]).as_ref()).unwrap_err();
        assert!(
            err.contains("delta column \"note\" of table public.t has type text, not a number"),
            "{err}"
        );
        let err = columns(&m, cols(&["nope"]).as_ref()).unwrap_err();
        assert!(
            err.contains("table public.t has no column \"nope\""),
            "{err}"
        );
        let err = columns(&m, cols(&["id"]).as_ref()).unwrap_err();
        assert!(
            err.contains("column \"id\" of table public.t is a key column"),
            "{err}"
        );
        assert!(columns(&m, None).unwrap().is_empty());
    }
}
