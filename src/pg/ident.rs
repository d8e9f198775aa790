//! SQL identifier and literal quoting, and parsing of (optionally
//! schema-qualified) table names the way PostgreSQL's `regclass` input does.
//!
//! Everything drover sends to a server interpolates names through
//! [`quote_ident`] / [`TableName::quoted`] (always quoted, so no keyword or
//! case surprises) and values through [`quote_literal`] or, better, bind
//! parameters. [`TableName`]'s `Display` is the canonical *human* form used in
//! logs, metrics labels and error messages.

use std::fmt;

/// Schema assumed for an unqualified table name. drover does not look at the
/// server's `search_path`: a name in the config file must mean the same table
/// on every database of a sync, so it cannot depend on per-role settings.
pub const DEFAULT_SCHEMA: &str = "public";

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes). The server
/// silently truncates longer ones; we reject them instead so that two names
/// differing only after byte 63 are never mistaken for different tables.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Quotes an identifier for SQL: always wraps it in double quotes and doubles
/// any embedded double quote (`a"b` becomes `"a""b"`). Case is preserved, so
/// pass the identifier as stored in the catalog (already folded).
///
/// PostgreSQL identifiers cannot contain NUL; a string containing one yields
/// a quoted identifier the server will reject.
pub fn quote_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal for SQL with libpq's rules (`postgres_protocol::escape`): single
/// quotes doubled, and a value holding a backslash written as ` E'...'` (with a leading space,
/// so it never fuses with a preceding identifier) with backslashes doubled, so it reads back
/// the same whatever the server's `standard_conforming_strings`. Prefer bind parameters where
/// the protocol allows them; this is for the places it does not (DDL such as
/// `COMMENT ON ... IS '...'`, one-statement batches). A NUL character cannot be represented in
/// a PostgreSQL text value; the server rejects such a literal.
pub fn quote_literal(s: &str) -> String {
    postgres_protocol::escape::escape_literal(s)
}

/// A data value as a literal; the same rules as [`quote_literal`].
pub fn quote_value(s: &str) -> String {
    quote_literal(s)
}

/// A schema-qualified table name, as stored in the catalog (case already
/// folded, quotes removed). Equality is catalog identity: `t`, `public.t`,
/// `"t"` and `PUBLIC.T` all parse to the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema (namespace) name, exactly as in `pg_namespace.nspname`.
    pub schema: String,
    /// Table name, exactly as in `pg_class.relname`.
    pub name: String,
}

/// Why a table name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid table name {input:?}: {kind}")]
pub struct IdentError {
    /// The text that was being parsed, verbatim.
    pub input: String,
    /// What is wrong with it.
    pub kind: IdentErrorKind,
}

/// The specific problem in an [`IdentError`]. Positions are 1-based
/// character (not byte) offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentErrorKind {
    /// Nothing but whitespace.
    #[error("it is empty")]
    Empty,
    /// An opening `"` without its closing `"`.
    #[error("unterminated quoted identifier starting at character {0}")]
    Unterminated(usize),
    /// `""` where a name was expected.
    #[error("zero-length quoted identifier at character {0}")]
    EmptyQuoted(usize),
    /// A dot with no name before or after it (`.t`, `s.`, `s..t`).
    #[error("missing name at character {0}")]
    MissingPart(usize),
    /// Something other than a dot or the end after a name (`"a"b`, `a b`).
    #[error("unexpected {found:?} at character {at} (expected \".\" or the end)")]
    Unexpected {
        /// The offending character.
        found: char,
        /// Where it is.
        at: usize,
    },
    /// Three or more dotted parts (`db.schema.table` is not supported).
    #[error("{0} dotted parts, expected \"table\" or \"schema.table\"")]
    TooManyParts(usize),
    /// A part longer than [`MAX_IDENTIFIER_BYTES`].
    #[error(
        "{0:?} is longer than {MAX_IDENTIFIER_BYTES} bytes (PostgreSQL would silently truncate it)"
    )]
    TooLong(String),
    /// Only digits: PostgreSQL's `regclass` input reads that as an OID.
    #[error("a bare number is read as an OID by PostgreSQL; write it in double quotes if it is a table name")]
    Oid,
}

/// Whitespace as PostgreSQL's `scanner_isspace` sees it.
fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

/// The index of the first non-space character of `chars` at or after `i`.
fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && is_pg_space(chars[i]) {
        i += 1;
    }
    i
}

/// The dot-separated names of a table name (see [`TableName::parse`]), unquoted and folded.
fn split_parts(chars: &[char]) -> Result<Vec<String>, IdentErrorKind> {
    let mut parts: Vec<String> = Vec::new();
    let mut i = skip_space(chars, 0);
    if i == chars.len() {
        return Err(IdentErrorKind::Empty);
    }
    loop {
        // At the start of a name.
        let part = if chars.get(i) == Some(&'"') {
            quoted_part(chars, &mut i)?
        } else {
            bare_part(chars, &mut i)?
        };
        if part.len() > MAX_IDENTIFIER_BYTES {
            return Err(IdentErrorKind::TooLong(part));
        }
        parts.push(part);
        i = skip_space(chars, i);
        match chars.get(i) {
            None => return Ok(parts),
            Some('.') => {
                i = skip_space(chars, i + 1);
                if i == chars.len() {
                    return Err(IdentErrorKind::MissingPart(i + 1));
                }
            }
            Some(&found) => return Err(IdentErrorKind::Unexpected { found, at: i + 1 }),
        }
    }
}

/// The `"quoted"` name opening at `chars[*i]`, `""` read as `"`; moves `*i` past it.
fn quoted_part(chars: &[char], i: &mut usize) -> Result<String, IdentErrorKind> {
    let start = *i;
    let mut name = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => return Err(IdentErrorKind::Unterminated(start + 1)),
            Some('"') if chars.get(*i + 1) == Some(&'"') => {
                name.push('"');
                *i += 2;
            }
            Some('"') => {
                *i += 1;
                break;
            }
            Some(&c) => {
                name.push(c);
                *i += 1;
            }
        }
    }
    if name.is_empty() {
        return Err(IdentErrorKind::EmptyQuoted(start + 1));
    }
    Ok(name)
}

/// The unquoted name at `chars[*i]`, up to a dot or space, ASCII letters folded to lower
/// case; moves `*i` past it.
fn bare_part(chars: &[char], i: &mut usize) -> Result<String, IdentErrorKind> {
    let start = *i;
    while *i < chars.len() && chars[*i] != '.' && !is_pg_space(chars[*i]) {
        *i += 1;
    }
    if *i == start {
        return Err(IdentErrorKind::MissingPart(*i + 1));
    }
    Ok(chars[start..*i]
        .iter()
        .map(char::to_ascii_lowercase)
        .collect())
}

impl TableName {
    /// Builds a name from already-folded catalog parts (no parsing, no case
    /// folding). Use [`TableName::parse`] for user input.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `table` or `schema.table` following PostgreSQL's `regclass`
    /// input rules (`SplitIdentifierString`): unquoted parts run to the next
    /// dot or whitespace and fold ASCII letters to lower case (`ÜBER` is
    /// `Über`, as on a UTF-8 server); quoted parts keep case and read `""` as
    /// one `"`; whitespace around names and dots is ignored; an unqualified
    /// name is in schema [`DEFAULT_SCHEMA`]. Stricter than the server in
    /// four ways: three-part names, zero-length quoted names and parts over
    /// [`MAX_IDENTIFIER_BYTES`] are errors rather than a cross-database
    /// reference, a lookup of `""`, or silent truncation; an all-digit
    /// input is an error rather than an OID.
    pub fn parse(s: &str) -> Result<TableName, IdentError> {
        let err = |kind| IdentError {
            input: s.to_owned(),
            kind,
        };
        let chars: Vec<char> = s.chars().collect();
        if !chars.is_empty() && chars.iter().all(char::is_ascii_digit) {
            return Err(err(IdentErrorKind::Oid));
        }
        let mut parts = split_parts(&chars).map_err(err)?;
        match parts.len() {
            1 => Ok(TableName {
                schema: DEFAULT_SCHEMA.to_owned(),
                name: parts.pop().unwrap_or_default(),
            }),
            2 => {
                let name = parts.pop().unwrap_or_default();
                let schema = parts.pop().unwrap_or_default();
                Ok(TableName { schema, name })
            }
            n => Err(err(IdentErrorKind::TooManyParts(n))),
        }
    }

    /// SQL form, both parts always quoted: `"public"."pgbench_accounts"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::str::FromStr for TableName {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::parse(s)
    }
}

/// Canonical human form: each part bare when it is a plain lower-case
/// identifier that is not a keyword, quoted otherwise, e.g.
/// `public.pgbench_accounts` or `"Sales Dept"."Order ""Lines"" ü"`.
/// Parsing this form gives back the same [`TableName`].
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_part(f, &self.schema)?;
        f.write_str(".")?;
        write_part(f, &self.name)
    }
}

fn write_part(f: &mut fmt::Formatter<'_>, part: &str) -> fmt::Result {
    if is_plain_identifier(part) {
        f.write_str(part)
    } else {
        f.write_str(&quote_ident(part))
    }
}

/// True when `s` can be written without quotes and still mean itself:
/// `[a-z_][a-z0-9_$]*`, at most [`MAX_IDENTIFIER_BYTES`] long and not one of
/// the [`QUOTED_KEYWORDS`].
pub fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && s.len() <= MAX_IDENTIFIER_BYTES
        && QUOTED_KEYWORDS.binary_search(&s).is_err()
}

/// Keywords that [`TableName`]'s `Display` always quotes: PostgreSQL's
/// `RESERVED_KEYWORD` and `TYPE_FUNC_NAME_KEYWORD` categories (the ones that
/// cannot be a bare table or schema name), as of PostgreSQL 17. Sorted, for
/// binary search. Unreserved and column-name keywords are left bare: they
/// are valid table names. Missing a future keyword only makes a log line less
/// pretty; SQL always goes through [`quote_ident`].
pub const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_either_string_syntax() {
        assert_eq!(quote_value(r"it's a \ path"), r" E'it''s a \\ path'");
        assert_eq!(quote_value(""), "''");
    }

    fn t(schema: &str, name: &str) -> TableName {
        TableName::new(schema, name)
    }

    fn kind(input: &str) -> IdentErrorKind {
        TableName::parse(input).unwrap_err().kind
    }

    #[test]
    fn quote_ident_always_quotes_and_doubles_quotes() {
        assert_eq!(quote_ident("abc"), r#""abc""#);
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_ident(r#""""#), r#""""""""#);
        assert_eq!(quote_ident("Sales Dept"), r#""Sales Dept""#);
        assert_eq!(quote_ident("select"), r#""select""#);
        assert_eq!(quote_ident(""), r#""""#);
    }

    #[test]
    fn quote_literal_reads_back_under_either_string_syntax() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        // standard_conforming_strings = off would read '\t' as a tab: the E'' form with
        // doubled backslashes reads back the same under either setting.
        assert_eq!(quote_literal(r"C:\temp\n"), r" E'C:\\temp\\n'");
        assert_eq!(quote_literal("''"), "''''''");
        assert_eq!(quote_literal(""), "''");
        assert_eq!(quote_literal("ü\"x"), "'ü\"x'");
    }

    #[test]
    fn parses_plain_and_qualified_names() {
        assert_eq!(TableName::parse("t").unwrap(), t("public", "t"));
        assert_eq!(TableName::parse("public.t").unwrap(), t("public", "t"));
        assert_eq!(TableName::parse(r#""t""#).unwrap(), t("public", "t"));
        assert_eq!(TableName::parse("PUBLIC.T").unwrap(), t("public", "t"));
        assert_eq!(
            TableName::parse("  sales . orders\t").unwrap(),
            t("sales", "orders")
        );
        assert_eq!("app.Users".parse::<TableName>().unwrap(), t("app", "users"));
    }

    #[test]
    fn parses_nasty_names() {
        // Checked against PostgreSQL 15's regclass input.
        let cases = [
            (
                r#""Sales Dept" . "Order ""Lines"" ü""#,
                t("Sales Dept", r#"Order "Lines" ü"#),
            ),
            (r#" public . "a.b" "#, t("public", "a.b")),
            ("my-table", t("public", "my-table")),
            (r#"a"b"#, t("public", r#"a"b"#)),
            ("SELECT", t("public", "select")),
            ("postgres_schema.select", t("postgres_schema", "select")),
            ("ÜBER", t("public", "Über")),
            (r#""ÜBER""#, t("public", "ÜBER")),
            (r#""CamelCase"."MixedTable""#, t("CamelCase", "MixedTable")),
            (r#""with space""#, t("public", "with space")),
            (r#""  ""#, t("public", "  ")),
            (r#""""""#, t("public", "\"")),
            (r#""12345""#, t("public", "12345")),
            ("t$1", t("public", "t$1")),
            ("日本.表", t("日本", "表")),
        ];
        for (input, want) in cases {
            assert_eq!(TableName::parse(input).unwrap(), want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_bad_names_with_the_input_in_the_message() {
        assert_eq!(kind(""), IdentErrorKind::Empty);
        assert_eq!(kind("  \t"), IdentErrorKind::Empty);
        assert_eq!(kind(r#""abc"#), IdentErrorKind::Unterminated(1));
        assert_eq!(kind(r#"s."a""b"#), IdentErrorKind::Unterminated(3));
        assert_eq!(kind(r#""""#), IdentErrorKind::EmptyQuoted(1));
        assert_eq!(kind(r#"public."""#), IdentErrorKind::EmptyQuoted(8));
        assert_eq!(kind("a..b"), IdentErrorKind::MissingPart(3));
        assert_eq!(kind(".a"), IdentErrorKind::MissingPart(1));
        assert_eq!(kind("a."), IdentErrorKind::MissingPart(3));
        assert_eq!(kind("a . "), IdentErrorKind::MissingPart(5));
        assert_eq!(
            kind(r#""a"b"#),
            IdentErrorKind::Unexpected { found: 'b', at: 4 }
        );
        assert_eq!(
            kind("a b"),
            IdentErrorKind::Unexpected { found: 'b', at: 3 }
        );
        assert_eq!(kind("x.y.z"), IdentErrorKind::TooManyParts(3));
        assert_eq!(kind(r#"db."s.x"."t""#), IdentErrorKind::TooManyParts(3));
        assert_eq!(kind("12345"), IdentErrorKind::Oid);
        let long = "a".repeat(64);
        assert_eq!(kind(&long), IdentErrorKind::TooLong(long.clone()));
        assert!(TableName::parse(&"a".repeat(63)).is_ok());
        // 32 two-byte characters = 64 bytes.
        assert!(matches!(kind(&"ü".repeat(32)), IdentErrorKind::TooLong(_)));

        let e = TableName::parse(r#"sales."Orders"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(r#""sales.\"Orders""#), "{msg}");
        assert!(msg.contains("unterminated"), "{msg}");
        let msg = TableName::parse("a.b.c").unwrap_err().to_string();
        assert!(
            msg.contains(r#""a.b.c""#) && msg.contains("3 dotted parts"),
            "{msg}"
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases = [
            ("public.pgbench_accounts", "public.pgbench_accounts"),
            ("pgbench_accounts", "public.pgbench_accounts"),
            (
                r#""Sales Dept"."Order ""Lines"" ü""#,
                r#""Sales Dept"."Order ""Lines"" ü""#,
            ),
            (r#""select""#, r#"public."select""#),
            ("Public.T", "public.t"),
            (r#"public."a.b""#, r#"public."a.b""#),
            ("my-table", r#"public."my-table""#),
            ("_t$1", "public._t$1"),
            (r#""1abc""#, r#"public."1abc""#),
            ("ÜBER", r#"public."Über""#),
            // Unreserved / column-name keywords are fine bare.
            ("public.name", "public.name"),
            ("int", "public.int"),
        ];
        for (input, shown) in cases {
            let parsed = TableName::parse(input).unwrap();
            assert_eq!(parsed.to_string(), shown, "input {input:?}");
            assert_eq!(TableName::parse(shown).unwrap(), parsed, "input {input:?}");
        }
    }

    #[test]
    fn quoted_always_quotes_both_parts() {
        assert_eq!(
            TableName::parse("pgbench_accounts").unwrap().quoted(),
            r#""public"."pgbench_accounts""#
        );
        assert_eq!(
            t("Sales Dept", r#"Order "Lines""#).quoted(),
            r#""Sales Dept"."Order ""Lines""""#
        );
    }

    #[test]
    fn keyword_list_is_sorted_and_lower_case() {
        for pair in QUOTED_KEYWORDS.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        for kw in QUOTED_KEYWORDS {
            assert_eq!(kw.to_ascii_lowercase(), *kw);
            assert!(!is_plain_identifier(kw));
        }
        assert!(is_plain_identifier("pgbench_accounts"));
        assert!(!is_plain_identifier("Users"));
        assert!(!is_plain_identifier("1x"));
        assert!(!is_plain_identifier("$x"));
        assert!(!is_plain_identifier(""));
    }

    #[test]
    fn equal_names_sort_and_hash_together() {
        use std::collections::BTreeSet;
        let set: BTreeSet<TableName> = ["t", "public.t", r#""t""#, "PUBLIC.T", "a.t"]
            .iter()
            .map(|s| TableName::parse(s).unwrap())
            .collect();
        assert_eq!(set.len(), 2);
    }
}
