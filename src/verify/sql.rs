//! The SQL verify sends for one table, built once from the reference's definition: a keyset range
//! read by the side that picks boundaries (the leader), the same range's aggregate on the other
//! sides, the key and row-hash list of a small range, and a batched lookup of keys.
//!
//! Key values cross as text, as the server prints them under drover's pinned session settings,
//! and go back in as `$n::text::type`, so any key type works as a bind parameter. A range is
//! `(lo, hi]` in key order, either end open; bounds are row comparisons, which a btree primary-key
//! index serves directly.

use crate::pg::floats;
use crate::pg::ident::{quote_ident, quote_literal};
use crate::pg::schema::TableMeta;

/// Table alias in every query. Columns are always written `alias."col"`, so a column with the
/// same name as the alias cannot take its place.
const ALIAS: &str = "drover_verify_row_";

/// One key bound: the text form of each key column, in key order.
pub type KeyText = Vec<String>;

/// A key range on one side: `(lo, hi]` where hi is the smallest of `his` in that side's order.
/// No lo means from the start; no his means to the end.
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    pub lo: Option<KeyText>,
    pub his: Vec<KeyText>,
}

impl Bounds {
    /// The bind parameters: lo's key parts, then each hi's.
    pub fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.lo
            .iter()
            .chain(&self.his)
            .flatten()
            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

/// The statements for one table on one database.
#[derive(Debug, Clone)]
pub struct TableSql {
    /// `"schema"."table"`.
    table: String,
    /// `alias."k"` for each key column.
    key_cols: Vec<String>,
    /// `format_type` of each key column, spliced as a cast target: it is the server's own
    /// SQL spelling of the type, quoted where needed.
    key_types: Vec<String>,
    /// ` COLLATE "schema"."name"` of each key column on this database, empty if none.
    key_collations: Vec<String>,
    /// `md5(ROW(...)::text)` over every replicated column, in the reference's order.
    row_hash: String,
}

impl TableSql {
    /// `meta` is the reference's definition; `collations` are this database's collations of the
    /// key columns (`format('%I.%I')` of the collation, None for a type without one).
    pub fn new(meta: &TableMeta, collations: &[Option<String>]) -> TableSql {
        let col = |name: &str| format!("{ALIAS}.{}", quote_ident(name));
        let key_columns = meta.key_columns();
        let values: Vec<String> = meta
            .columns
            .iter()
            // Float text differs between PostgreSQL 11 and 12+ (see `pg::floats`).
            .map(|c| floats::comparable(&c.type_name, &col(&c.name)))
            .collect();
        TableSql {
            table: meta.name.quoted(),
            key_cols: key_columns.iter().map(|c| col(&c.name)).collect(),
            key_types: key_columns.iter().map(|c| c.type_name.clone()).collect(),
            key_collations: (0..key_columns.len())
                .map(|i| match collations.get(i) {
                    Some(Some(c)) => format!(" COLLATE {c}"),
                    _ => String::new(),
                })
                .collect(),
            row_hash: format!("md5(ROW({})::text)", values.join(", ")),
        }
    }

    pub fn key_len(&self) -> usize {
        self.key_cols.len()
    }

    /// `(alias."a", alias."b")`, or the bare column for a one-column key.
    fn key_tuple(&self) -> String {
        tuple(&self.key_cols)
    }

    /// `($n::text::type, ...)` starting at parameter `first`; with `collate`, each part carries
    /// the column's collation (a comparison with a column takes the column's on its own).
    fn param_tuple(&self, first: usize, collate: bool) -> String {
        let parts: Vec<String> = self
            .key_types
            .iter()
            .zip(&self.key_collations)
            .enumerate()
            .map(|(i, (t, c))| {
                let c = if collate { c.as_str() } else { "" };
                format!("(${}::text::{t}{c})", first + i)
            })
            .collect();
        tuple(&parts)
    }

    /// `WHERE` clause for `(lo, min(his)]`; parameters are lo's parts then each hi's.
    fn range_pred(&self, has_lo: bool, his: usize) -> String {
        let mut conds = Vec::new();
        let mut next = 1;
        if has_lo {
            conds.push(format!(
                "{} > {}",
                self.key_tuple(),
                self.param_tuple(next, false)
            ));
            next += self.key_len();
        }
        for _ in 0..his {
            conds.push(format!(
                "{} <= {}",
                self.key_tuple(),
                self.param_tuple(next, false)
            ));
            next += self.key_len();
        }
        if conds.is_empty() {
            "true".to_string()
        } else {
            conds.join(" AND ")
        }
    }

    /// `drover_k0, drover_k1, ...` with an optional suffix on each (` DESC`, `::text`).
    fn key_aliases(&self, suffix: &str) -> String {
        (0..self.key_len())
            .map(|i| format!("drover_k{i}{suffix}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The subquery every aggregate reads: key columns and row hash of the rows in range.
    fn hashed_rows(&self, has_lo: bool, his: usize, limit: Option<usize>) -> String {
        let keys: Vec<String> = self
            .key_cols
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS drover_k{i}"))
            .collect();
        let tail = match limit {
            Some(n) => format!(" ORDER BY {} LIMIT {n}", self.key_cols.join(", ")),
            None => String::new(),
        };
        format!(
            "SELECT {}, {} AS drover_h FROM {} {ALIAS} WHERE {}{tail}",
            keys.join(", "),
            self.row_hash,
            self.table,
            self.range_pred(has_lo, his)
        )
    }

    /// The leader's read: the first `limit` rows of the range. One row: count, md5 of the row
    /// hashes in key order, then the text of the last key's columns; no row when it is empty.
    pub fn leader_range(&self, has_lo: bool, his: usize, limit: usize) -> String {
        format!(
            "WITH s AS ({rows}) \
             SELECT (SELECT count(*) FROM s), \
             (SELECT md5(string_agg(drover_h, '' ORDER BY {order})) FROM s), {last} \
             FROM (SELECT {order} FROM s ORDER BY {desc} LIMIT 1) l",
            rows = self.hashed_rows(has_lo, his, Some(limit)),
            order = self.key_aliases(""),
            desc = self.key_aliases(" DESC"),
            last = self.key_aliases("::text"),
        )
    }

    /// A follower's read of a range: count and the same hash as `leader_range`, then whether
    /// the first hi lies after lo in this database's order (true when either is missing).
    pub fn follower_range(&self, has_lo: bool, his: usize) -> String {
        let advances = if has_lo && his > 0 {
            format!(
                "{} > {}",
                self.param_tuple(1 + self.key_len(), true),
                self.param_tuple(1, true)
            )
        } else {
            "true".to_string()
        };
        format!(
            "SELECT count(*), md5(string_agg(drover_h, '' ORDER BY {order})), {advances} \
             FROM ({rows}) s",
            order = self.key_aliases(""),
            rows = self.hashed_rows(has_lo, his, None),
        )
    }

    /// Every key (as text) and row hash in a range small enough to hold.
    pub fn list_range(&self, has_lo: bool, his: usize) -> String {
        format!(
            "SELECT {}, drover_h FROM ({}) s",
            self.key_aliases("::text"),
            self.hashed_rows(has_lo, his, None)
        )
    }

    /// Looks up keys given as one text array per key column: returns the 1-based position of
    /// each key found and its row hash. Equality, unlike ordering, does not depend on collation,
    /// so this settles keys that two servers sort differently.
    pub fn lookup(&self) -> String {
        let arrays: Vec<String> = (1..=self.key_len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let names: Vec<String> = (0..self.key_len())
            .map(|i| format!("drover_c{i}"))
            .collect();
        let on: Vec<String> = self
            .key_cols
            .iter()
            .zip(&self.key_types)
            .zip(&names)
            .map(|((k, t), n)| format!("{k} = k.{n}::{t}"))
            .collect();
        format!(
            "SELECT k.drover_ord, {} FROM unnest({}) WITH ORDINALITY AS k({}, drover_ord) \
             JOIN {} {ALIAS} ON {}",
            self.row_hash,
            arrays.join(", "),
            names.join(", "),
            self.table,
            on.join(" AND ")
        )
    }
}

impl TableSql {
    /// A table with no key, as a multiset: row count, then the sums of the two 64-bit halves of
    /// every row hash as text. The sums do not depend on row order, so nothing is sorted.
    pub fn multiset_sum(&self) -> String {
        let half = |from: usize| {
            format!(
                "coalesce(sum(('x' || substr(drover_h, {from}, 16))::bit(64)::bigint::numeric), 0)"
            )
        };
        format!(
            "SELECT count(*), {} || '/' || {} FROM (SELECT {} AS drover_h FROM {} {ALIAS}) s",
            half(1),
            half(17),
            self.row_hash,
            self.table
        )
    }

    /// Each distinct row hash and how many rows have it, in byte order (the same on every
    /// server), for the merge of two sides whose `multiset_sum` differ.
    pub fn multiset_list(&self) -> String {
        format!(
            "SELECT drover_h, count(*) FROM (SELECT {} AS drover_h FROM {} {ALIAS}) s \
             GROUP BY drover_h ORDER BY drover_h COLLATE \"C\"",
            self.row_hash, self.table
        )
    }
}

/// `--repair` of a table with no key: rows are named by their hash.
impl TableSql {
    fn hash_in(&self, hashes: &[String]) -> String {
        let list: Vec<String> = hashes.iter().map(|h| quote_literal(h)).collect();
        format!("{} IN ({})", self.row_hash, list.join(", "))
    }

    /// The hash, then the `columns`, of every row whose hash is one of `hashes`, copies
    /// included.
    pub fn rows_with_hashes(&self, columns: &str, hashes: &[String]) -> String {
        format!(
            "SELECT {}, {columns} FROM {} {ALIAS} WHERE {}",
            self.row_hash,
            self.table,
            self.hash_in(hashes)
        )
    }

    /// Deletes every row whose hash is one of `hashes`.
    pub fn delete_hashes(&self, hashes: &[String]) -> String {
        format!(
            "DELETE FROM {} AS {ALIAS} WHERE {}",
            self.table,
            self.hash_in(hashes)
        )
    }
}

/// `(a, b)` for several parts, `a` alone for one.
fn tuple(parts: &[String]) -> String {
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::ident::TableName;
    use crate::pg::schema::Column;

    fn meta() -> TableMeta {
        TableMeta {
            oid: 1,
            name: TableName::new("public", "T"),
            columns: vec![
                Column {
                    name: "a".into(),
                    type_name: "integer".into(),
                    needs_value: false,
                },
                Column {
                    name: "x".into(),
                    type_name: "double precision".into(),
                    needs_value: false,
                },
                Column {
                    name: "b\"q".into(),
                    type_name: "text".into(),
                    needs_value: false,
                },
            ],
            key: vec!["a".into(), "b\"q".into()],
            method: crate::pg::schema::KeyMethod::Primary,
            fk_parents: vec![],
            identity_always: vec![],
        }
    }

    #[test]
    fn range_predicates_number_parameters_lo_then_his() {
        let s = TableSql::new(&meta(), &[None, Some("pg_catalog.\"C\"".into())]);
        let r = "drover_verify_row_";
        let k = format!("({r}.\"a\", {r}.\"b\"\"q\")");
        assert_eq!(s.range_pred(false, 0), "true");
        assert_eq!(
            s.range_pred(true, 2),
            format!(
                "{k} > (($1::text::integer), ($2::text::text)) AND \
                 {k} <= (($3::text::integer), ($4::text::text)) AND \
                 {k} <= (($5::text::integer), ($6::text::text))"
            )
        );
        assert_eq!(
            s.range_pred(false, 1),
            format!("{k} <= (($1::text::integer), ($2::text::text))")
        );
        // Comparing two bounds needs the column's collation spelled out.
        assert!(s.follower_range(true, 1).contains(
            "(($3::text::integer), ($4::text::text COLLATE pg_catalog.\"C\")) > \
             (($1::text::integer), ($2::text::text COLLATE pg_catalog.\"C\"))"
        ));
        assert!(s
            .follower_range(false, 1)
            .contains("ORDER BY drover_k0, drover_k1)), true FROM"));
    }

    #[test]
    fn row_hash_uses_float_bits_and_every_column() {
        let s = TableSql::new(&meta(), &[]);
        let r = "drover_verify_row_";
        assert_eq!(
            s.row_hash,
            format!(
                "md5(ROW({r}.\"a\", float8send(CASE WHEN {r}.\"x\" = 'NaN'::float8 \
                 THEN 'NaN'::float8 ELSE {r}.\"x\" END), {r}.\"b\"\"q\")::text)"
            )
        );
        assert!(s
            .lookup()
            .contains("unnest($1::text[], $2::text[]) WITH ORDINALITY"));
        assert!(s
            .leader_range(true, 0, 10)
            .contains("ORDER BY drover_verify_row_.\"a\", drover_verify_row_.\"b\"\"q\" LIMIT 10"));
    }
}
