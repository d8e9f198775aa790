//! Table name patterns of `drover init --tables / --exclude`, as psql's `\dt` reads them:
//! `*` is any run of characters, `?` one character, and a pattern with a `.` matches
//! `schema.table` (each part on its own), one without matches the table name in any schema.
//! Letters match exactly (no case folding: write names as the catalog stores them).

/// One `--tables` or `--exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    schema: Option<String>,
    table: String,
}

impl Pattern {
    pub fn parse(s: &str) -> Pattern {
        match s.split_once('.') {
            Some((schema, table)) => Pattern {
                schema: Some(schema.to_string()),
                table: table.to_string(),
            },
            None => Pattern {
                schema: None,
                table: s.to_string(),
            },
        }
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        let schema_ok = match &self.schema {
            Some(p) => glob(p, schema),
            None => true,
        };
        schema_ok && glob(&self.table, table)
    }
}

/// `*` and `?` wildcards, everything else literal.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether a table is selected: it matches some `include` (all when none) and no `exclude`.
pub fn selected(include: &[Pattern], exclude: &[Pattern], schema: &str, table: &str) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(schema, table)))
        && !exclude.iter().any(|p| p.matches(schema, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_like_patterns() {
        let p = Pattern::parse("pgbench_*");
        assert!(p.matches("public", "pgbench_history"));
        assert!(p.matches("other", "pgbench_x"));
        assert!(!p.matches("public", "accounts"));
        let q = Pattern::parse("sales.order?");
        assert!(q.matches("sales", "orders"));
        assert!(!q.matches("public", "orders"));
        assert!(!q.matches("sales", "order"));
        assert!(Pattern::parse("*.*").matches("a", "b"));
        assert!(Pattern::parse("a*b*c").matches("s", "aXbYbc"));
        assert!(!Pattern::parse("a*b").matches("s", "aXbY"));
        let inc = [Pattern::parse("pgbench_*")];
        let exc = [Pattern::parse("*_history")];
        assert!(selected(&inc, &exc, "public", "pgbench_accounts"));
        assert!(!selected(&inc, &exc, "public", "pgbench_history"));
        assert!(selected(&[], &[], "public", "t"));
    }
}
