//! Table metadata read from the catalogs: replicated columns with their types, the key, and the
//! foreign-key parents (to order deletes and inserts on a target).

use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::ident::TableName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type()` output, compared across databases.
    pub type_name: String,
    /// NOT NULL without a default (or identity): a row that does not name it fails.
    pub needs_value: bool,
}

/// How rows of a table are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMethod {
    /// The primary key.
    Primary,
    /// Columns named under `[relgroups.X.keys]`.
    Configured,
    /// A unique index (named) whose columns are all NOT NULL.
    Unique(String),
    /// No key: whole-row images (duplicates and all-NULL rows included).
    WholeRow,
}

impl KeyMethod {
    pub fn describe(&self, key: &[String]) -> String {
        match self {
            KeyMethod::Primary => format!("primary key ({})", key.join(", ")),
            KeyMethod::Configured => format!("configured key ({})", key.join(", ")),
            KeyMethod::Unique(i) => format!("unique index {i} ({})", key.join(", ")),
            KeyMethod::WholeRow => "no key: whole-row images".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TableMeta {
    pub oid: u32,
    pub name: TableName,
    /// Columns that replicate, in attnum order: not dropped, not generated.
    pub columns: Vec<Column>,
    /// The key drover uses, in key order (see `method`); empty for whole-row tables.
    pub key: Vec<String>,
    /// Where the key comes from.
    pub method: KeyMethod,
    /// Tables this one references with foreign keys.
    pub fk_parents: Vec<TableName>,
    /// `GENERATED ALWAYS AS IDENTITY` columns: an UPDATE may not set them.
    pub identity_always: Vec<String>,
}

impl TableMeta {
    pub fn whole_row(&self) -> bool {
        self.method == KeyMethod::WholeRow
    }

    pub fn key_columns(&self) -> Vec<&Column> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().find(|c| &c.name == k))
            .collect()
    }
}

/// Reads a table's metadata; `Ok(None)` when it does not exist (or is not a plain or
/// partitioned table).
/// `configured` is the table's `[relgroups.X.keys]` entry: it wins over the primary key; then
/// the primary key; then the unique index on NOT NULL columns with the fewest columns; then
/// whole-row images.
pub async fn describe(
    client: &Client,
    database: &str,
    table: &TableName,
    version_num: i32,
    configured: Option<&[String]>,
) -> Result<Option<TableMeta>, PgError> {
    let purpose = format!("read the definition of table {table}");
    let failed = |e| PgError::query(database, &purpose, e);
    let Some(row) = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(failed)?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let (columns, identity_always) = read_columns(client, oid, version_num)
        .await
        .map_err(failed)?;
    let (method, key) = choose_key(client, oid, configured).await.map_err(failed)?;
    let fk_parents = read_fk_parents(client, oid).await.map_err(failed)?;
    Ok(Some(TableMeta {
        oid,
        name: table.clone(),
        columns,
        key,
        method,
        fk_parents,
        identity_always,
    }))
}

/// The replicated columns of table `oid` in attnum order, and its `GENERATED ALWAYS AS
/// IDENTITY` columns; the catalog columns read depend on the server version.
async fn read_columns(
    client: &Client,
    oid: u32,
    version_num: i32,
) -> Result<(Vec<Column>, Vec<String>), tokio_postgres::Error> {
    let generated = if version_num >= 120_000 {
        "a.attgenerated = ''"
    } else {
        "true"
    };
    let (defaulted, always) = if version_num >= 100_000 {
        ("a.atthasdef OR a.attidentity <> ''", "a.attidentity = 'a'")
    } else {
        ("a.atthasdef", "false")
    };
    let rows = client
        .query(
            &format!(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                 a.attnotnull AND NOT ({defaulted}), {always} FROM pg_attribute a \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND {generated} \
                 ORDER BY a.attnum"
            ),
            &[&oid],
        )
        .await?;
    let identity_always = rows
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| r.get(0))
        .collect();
    let columns = rows
        .into_iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            needs_value: r.get(2),
        })
        .collect();
    Ok((columns, identity_always))
}

/// The key drover uses for table `oid` (see [`describe`] for the order of preference).
async fn choose_key(
    client: &Client,
    oid: u32,
    configured: Option<&[String]>,
) -> Result<(KeyMethod, Vec<String>), tokio_postgres::Error> {
    // Primary key first, then valid unique non-partial non-expression indexes whose columns
    // are all NOT NULL, fewest columns first.
    let indexes = client
        .query(
            "SELECT i.indisprimary, c.relname::text, array_agg(a.attname::text ORDER BY k.ord) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL \
             AND i.indexprs IS NULL \
             GROUP BY i.indisprimary, c.relname \
             HAVING i.indisprimary OR bool_and(a.attnotnull) \
             ORDER BY i.indisprimary DESC, count(*), c.relname",
            &[&oid],
        )
        .await?;
    Ok(match (configured, indexes.first()) {
        (Some(cols), _) => (KeyMethod::Configured, cols.to_vec()),
        (None, Some(r)) if r.get::<_, bool>(0) => (KeyMethod::Primary, r.get(2)),
        (None, Some(r)) => (KeyMethod::Unique(r.get(1)), r.get(2)),
        (None, None) => (KeyMethod::WholeRow, Vec::new()),
    })
}

/// The other tables table `oid` references with foreign keys.
async fn read_fk_parents(
    client: &Client,
    oid: u32,
) -> Result<Vec<TableName>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE k.conrelid = $1 AND k.contype = 'f' AND k.confrelid <> k.conrelid",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// Compares a target's definition with the source's; returns each difference as a sentence.
pub fn differences(source: &TableMeta, target: &TableMeta) -> Vec<String> {
    let mut out = Vec::new();
    for c in &source.columns {
        match target.columns.iter().find(|t| t.name == c.name) {
            None => out.push(format!(
                "column \"{}\" is missing: add it here ({}), then the sync goes on by itself",
                c.name, c.type_name
            )),
            Some(t) if t.type_name != c.type_name => out.push(format!(
                "column \"{}\" has type {} (source: {})",
                c.name, t.type_name, c.type_name
            )),
            Some(_) => {}
        }
    }
    // A column only here is the documented intermediate state (added on the target first),
    // fine as long as rows from the source, which do not name it, can be stored.
    for t in only_on(target, source) {
        if t.needs_value {
            out.push(format!(
                "column \"{}\" does not exist on the source and is NOT NULL without a default: \
                 give it a default, drop NOT NULL, or add it on the source",
                t.name
            ));
        }
    }
    if target.method == KeyMethod::WholeRow && source.method != KeyMethod::WholeRow {
        out.push(format!(
            "has no key, the source has a {}",
            source.method.describe(&source.key)
        ));
    } else if target.key != source.key && source.method != KeyMethod::WholeRow {
        out.push(format!(
            "key ({}) differs from the source's {}",
            target.key.join(", "),
            source.method.describe(&source.key)
        ));
    }
    out
}

/// Columns only the target has that rows from the source can leave to their default
/// (nullable or with a default): tolerated drift, Bucardo's `strict_checking = false`.
pub fn tolerated_extra<'a>(source: &'a TableMeta, target: &'a TableMeta) -> Vec<&'a str> {
    only_on(target, source)
        .filter(|c| !c.needs_value)
        .map(|c| c.name.as_str())
        .collect()
}

/// Columns of `here` that `reference` lacks, as differences: for a database that is itself a
/// source (multi-master), whose every column must replicate.
pub fn only_here(reference: &TableMeta, here: &TableMeta) -> Vec<String> {
    only_on(here, reference)
        .map(|c| {
            format!(
                "column \"{}\" does not exist there: add it on every database of the sync",
                c.name
            )
        })
        .collect()
}

fn only_on<'a>(meta: &'a TableMeta, other: &'a TableMeta) -> impl Iterator<Item = &'a Column> {
    meta.columns
        .iter()
        .filter(|c| !other.columns.iter().any(|o| o.name == c.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(cols: &[(&str, bool)]) -> TableMeta {
        TableMeta {
            oid: 1,
            name: TableName::new("public", "t"),
            columns: cols
                .iter()
                .map(|(n, needs)| Column {
                    name: n.to_string(),
                    type_name: "integer".into(),
                    needs_value: *needs,
                })
                .collect(),
            key: vec!["id".into()],
            method: KeyMethod::Primary,
            fk_parents: Vec::new(),
            identity_always: Vec::new(),
        }
    }

    #[test]
    fn target_only_columns_need_a_default_or_null() {
        let src = meta(&[("id", true)]);
        assert!(differences(&src, &meta(&[("id", true), ("note", false)])).is_empty());
        let d = differences(&src, &meta(&[("id", true), ("must", true)]));
        assert!(
            d.len() == 1 && d[0].contains("\"must\"") && d[0].contains("NOT NULL"),
            "{d:?}"
        );
        let d = differences(&meta(&[("id", true), ("extra", false)]), &src);
        assert!(
            d.len() == 1 && d[0].contains("\"extra\" is missing"),
            "{d:?}"
        );
        assert_eq!(
            only_here(&src, &meta(&[("id", true), ("x", false)])).len(),
            1
        );
    }
}
