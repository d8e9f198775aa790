//! How a differing key is shown. Keys travel as the text the server prints for each key column
//! (pinned session settings make that text the same on every server). In JSON a key is an object
//! `{"col": value}`: a JSON number for `smallint`, `integer` and `bigint` columns, the text form as
//! a JSON string for every other type. The text output writes `col=value` with strings quoted and
//! escaped Rust-style, so tabs and quotes stay visible.

use std::cmp::Ordering;

use crate::verify::sql::KeyText;

/// The key columns of a table: names and which ones are integers.
#[derive(Debug, Clone)]
pub struct KeyShape {
    names: Vec<String>,
    integer: Vec<bool>,
}

impl KeyShape {
    /// `columns` are (name, `format_type` output) in key order.
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, &'a str)>) -> KeyShape {
        let (names, integer) = columns
            .into_iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    matches!(t, "smallint" | "integer" | "bigint"),
                )
            })
            .unzip();
        KeyShape { names, integer }
    }

    fn integer_value(&self, i: usize, text: &str) -> Option<i64> {
        if self.integer[i] {
            text.parse().ok()
        } else {
            None
        }
    }

    /// `{"col": value}`; integers as numbers, everything else as its text.
    pub fn to_json(&self, key: &KeyText) -> serde_json::Value {
        let map = self
            .names
            .iter()
            .zip(key)
            .enumerate()
            .map(|(i, (name, text))| {
                let value = match self.integer_value(i, text) {
                    Some(n) => serde_json::Value::from(n),
                    None => serde_json::Value::from(text.as_str()),
                };
                (name.clone(), value)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// `id=5` or `region="eu", name="O'Brien\t"`.
    pub fn display(&self, key: &KeyText) -> String {
        self.names
            .iter()
            .zip(key)
            .enumerate()
            .map(|(i, (name, text))| match self.integer_value(i, text) {
                Some(n) => format!("{name}={n}"),
                None => format!("{name}={text:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A stable order for listing the keys of one range: integers by value, other parts by
    /// their text. Only the listing uses it; ranges follow each server's own order.
    pub fn compare(&self, a: &KeyText, b: &KeyText) -> Ordering {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let o = match (self.integer_value(i, x), self.integer_value(i, y)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x.cmp(y),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> KeyText {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn integers_are_numbers_and_the_rest_text() {
        let shape = KeyShape::new([("id", "bigint"), ("name", "text"), ("n", "numeric")]);
        let k = key(&["42", "a'b\\c\td\"", "1.50"]);
        assert_eq!(
            shape.to_json(&k),
            serde_json::json!({"id": 42, "name": "a'b\\c\td\"", "n": "1.50"})
        );
        assert_eq!(shape.display(&k), r#"id=42, name="a'b\\c\td\"", n="1.50""#);
    }

    #[test]
    fn integers_sort_by_value() {
        let shape = KeyShape::new([("id", "integer"), ("t", "text")]);
        let mut keys = vec![key(&["10", "b"]), key(&["9", "z"]), key(&["10", "a"])];
        keys.sort_by(|a, b| shape.compare(a, b));
        assert_eq!(
            keys,
            vec![key(&["9", "z"]), key(&["10", "a"]), key(&["10", "b"])]
        );
    }
}
