//! Capture for tables with no usable key: the delta table holds whole-row images with a sign
//! (+1 a row that appeared, -1 a row that went; an update is both), so duplicate rows and
//! all-NULL rows replicate as a multiset, and insert-only tables stream incrementally.

use super::sql::{capture_function, CaptureMode, CaptureObjects, OnTable, Pieces};
use crate::pg::ident::{quote_ident, TableName};
use crate::pg::schema::Column;

/// The image delta table: every replicated column, the sign, and the usual bookkeeping.
pub fn create_delta(objects: &CaptureObjects, columns: &[Column]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}, ", quote_ident(&c.name), c.type_name))
        .collect();
    format!(
        "CREATE TABLE {delta} ({cols}drover_sign smallint NOT NULL DEFAULT 1, drover_xid bigint NOT NULL, \
         drover_changed_at timestamptz NOT NULL, drover_truncate boolean NOT NULL DEFAULT false);
CREATE INDEX ON {delta} (drover_xid);
",
        delta = objects.delta_quoted,
        cols = cols.concat(),
    )
}

/// The image capture function and its triggers.
pub fn create_capture(
    table: &TableName,
    objects: &CaptureObjects,
    columns: &[Column],
    on: OnTable,
) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list = names.join(", ");
    let delta = &objects.delta_quoted;
    let insert =
        format!("INSERT INTO {delta} ({list}, drover_sign, drover_xid, drover_changed_at)");
    let Pieces {
        stamp,
        truncate,
        guard,
        notify,
    } = Pieces::new(delta);
    let body = match on.body_mode() {
        CaptureMode::Statement => format!(
            "BEGIN
  {guard}
  IF TG_OP = 'INSERT' THEN
    {insert} SELECT {list}, 1, {stamp} FROM drover_new;
  ELSIF TG_OP = 'UPDATE' THEN
    {insert} SELECT {list}, -1, {stamp} FROM drover_old UNION ALL SELECT {list}, 1, {stamp} FROM drover_new;
  ELSIF TG_OP = 'DELETE' THEN
    {insert} SELECT {list}, -1, {stamp} FROM drover_old;
  ELSE
    {truncate}
  END IF;
  IF FOUND THEN {notify} END IF;
  RETURN NULL;
END"
        ),
        CaptureMode::Row => {
            let new_vals: Vec<String> = names.iter().map(|k| format!("NEW.{k}")).collect();
            let old_vals: Vec<String> = names.iter().map(|k| format!("OLD.{k}")).collect();
            let (nv, ov) = (new_vals.join(", "), old_vals.join(", "));
            format!(
                "BEGIN
  {guard}
  IF TG_OP = 'TRUNCATE' THEN
    {truncate}
  ELSE
    IF TG_OP <> 'INSERT' THEN
      {insert} VALUES ({ov}, -1, {stamp});
    END IF;
    IF TG_OP <> 'DELETE' THEN
      {insert} VALUES ({nv}, 1, {stamp});
    END IF;
  END IF;
  {notify}
  RETURN NULL;
END"
            )
        }
    };
    capture_function(table, objects, &body, on)
}
