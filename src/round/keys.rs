//! Keys held in memory by multi-master rounds: each key column's text form (as the server
//! prints it under drover's pinned session settings), and the COPY text encoding used to send
//! a set of keys back to a server.

/// A primary key: the text of each key column. Primary key columns are never NULL.
pub type Key = Vec<String>;

/// Keys column by column (`width` key columns), for `unnest($1::text[], ...)` parameters.
pub fn by_column<'k>(keys: &[&'k Key], width: usize) -> Vec<Vec<&'k str>> {
    (0..width)
        .map(|i| keys.iter().map(|k| k[i].as_str()).collect())
        .collect()
}

/// [`by_column`]'s arrays as query parameters.
pub fn params<'a>(columns: &'a [Vec<&str>]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    (columns.iter())
        .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Encodes keys as COPY text rows (tab-separated, backslash escapes).
pub fn copy_text(keys: &[&Key]) -> bytes::Bytes {
    let mut out = String::new();
    for key in keys {
        for (i, v) in key.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            escape_into(v, &mut out);
        }
        out.push('\n');
    }
    bytes::Bytes::from(out)
}

fn escape_into(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_copy_specials() {
        let k1: Key = vec!["a\tb".into(), "back\\slash".into()];
        let k2: Key = vec!["new\nline".into(), "cr\r".into()];
        let b = copy_text(&[&k1, &k2]);
        assert_eq!(
            &b[..],
            b"a\\tb\tback\\\\slash\nnew\\nline\tcr\\r\n".as_slice()
        );
    }
}
