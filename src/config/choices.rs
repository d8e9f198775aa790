//! Keys whose value is one of a fixed set of words (`log_format`,
//! `replica_role`, `conflict_strategy`, `initial_copy`, `sequence_mode`): their model enums,
//! defaults, spellings, and the one parser the validator uses for all of
//! them, so a value's spelling lives in exactly one `as_str`.

use std::fmt;

use crate::pg::ident::{is_plain_identifier, quote_ident, quote_literal, TableName};

/// Default `daemon.log_format`: human-readable lines, as before the key
/// existed; `json` is for log shippers.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// Default `databases.*.replica_role`: let drover find out what the role
/// may do, so the same file works on a self-hosted server (superuser) and on
/// a managed one (no superuser).
pub const DEFAULT_REPLICA_ROLE: ReplicaRoleConfig = ReplicaRoleConfig::Auto;

/// Default `syncs.*.conflict_strategy`: the most recent change wins, which
/// is what users of other multi-master tools expect.
pub const DEFAULT_CONFLICT_STRATEGY: ConflictStrategy = ConflictStrategy::Latest;

/// Default `syncs.*.initial_copy`: never copy whole tables, so that starting
/// a sync can never overwrite a target's existing rows by surprise.
pub const DEFAULT_INITIAL_COPY: InitialCopy = InitialCopy::Never;

/// A key with a fixed set of values, each with one spelling.
pub(super) trait Choice: Copy + 'static {
    /// The key's name, for messages (`log_format`).
    const KEY: &'static str;
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// The spelling in the config file.
    fn spelling(self) -> &'static str;
}

/// Parses one of `T::ALL` by its spelling; the error lists them all.
pub(super) fn parse_choice<T: Choice>(s: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.spelling() == s)
        .ok_or_else(|| {
            let spellings: Vec<String> = T::ALL
                .iter()
                .map(|v| format!("`{}`", v.spelling()))
                .collect();
            format!(
                "invalid {} {s:?}, expected one of {}",
                T::KEY,
                spellings.join(", ")
            )
        })
}

/// `daemon.log_format`: how log lines on stderr are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `text`: one human-readable line per event.
    Text,
    /// `json`: one JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The config-file spelling: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Choice for LogFormat {
    const KEY: &'static str = "log_format";
    const ALL: &'static [Self] = &[LogFormat::Text, LogFormat::Json];
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

/// `syncs.*.conflict_strategy`: who wins when a key changed on two sources
/// of a multi-master sync since they last exchanged changes. Every master
/// applies the same rule, so they converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictStrategy {
    /// `latest`: the change with the largest `changed_at` wins, ties broken
    /// by database name. Clock skew is the user's risk.
    Latest,
    /// `priority`: the source ranked first in the sync's `priority` list
    /// wins (see [`super::SyncConfig::priority_order`]).
    Priority,
    /// `abort`: the round fails, the sync is marked bad and the keys are
    /// reported; nothing is applied.
    Abort,
    /// `skip`: neither side is changed and the conflict is logged; the
    /// databases stay different until someone fixes the rows.
    Skip,
}

impl ConflictStrategy {
    /// The config-file spelling (also the `strategy` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStrategy::Latest => "latest",
            ConflictStrategy::Priority => "priority",
            ConflictStrategy::Abort => "abort",
            ConflictStrategy::Skip => "skip",
        }
    }
}

impl Choice for ConflictStrategy {
    const KEY: &'static str = "conflict_strategy";
    const ALL: &'static [Self] = &[
        ConflictStrategy::Latest,
        ConflictStrategy::Priority,
        ConflictStrategy::Abort,
        ConflictStrategy::Skip,
    ];
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

/// Default `relgroups.*.sequence_mode`: sequences follow the one source, as
/// before the key existed.
pub const DEFAULT_SEQUENCE_MODE: SequenceMode = SequenceMode::Follow;

/// `relgroups.*.sequence_mode`: how a relgroup's `sequences` are kept
/// collision-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SequenceMode {
    /// `follow`: each round moves the targets' sequences up to the one
    /// source's values; refused by `check` in a multi-master sync.
    Follow,
    /// `interleave`: in a multi-master sync each master's sequence counts in
    /// steps of `sequence_step` from its own residue, so masters never hand
    /// out the same value; nothing is copied between masters.
    Interleave,
}

impl SequenceMode {
    /// The config-file spelling: `follow` or `interleave`.
    pub fn as_str(self) -> &'static str {
        match self {
            SequenceMode::Follow => "follow",
            SequenceMode::Interleave => "interleave",
        }
    }
}

impl Choice for SequenceMode {
    const KEY: &'static str = "sequence_mode";
    const ALL: &'static [Self] = &[SequenceMode::Follow, SequenceMode::Interleave];
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

/// `syncs.*.initial_copy`: whether a sync copies whole tables to its
/// targets before replicating changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitialCopy {
    /// `never`: only changes captured after `install` are replicated.
    Never,
    /// `if-empty`: copy a table to a target where it has no rows.
    IfEmpty,
    /// `always`: replace each target table's rows with the source's.
    Always,
}

impl InitialCopy {
    /// The config-file spelling: `never`, `if-empty` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialCopy::Never => "never",
            InitialCopy::IfEmpty => "if-empty",
            InitialCopy::Always => "always",
        }
    }
}

impl Choice for InitialCopy {
    const KEY: &'static str = "initial_copy";
    const ALL: &'static [Self] = &[
        InitialCopy::Never,
        InitialCopy::IfEmpty,
        InitialCopy::Always,
    ];
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConflictStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for InitialCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `databases.*.replica_role`: how drover, applying changes to this
/// database, sets `session_replication_role = replica` (which also silences
/// user triggers and foreign-key checks). Without it, loop prevention relies
/// on the `drover.origin` setting alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplicaRoleConfig {
    /// `auto`: use `SET` if the role may, else do without.
    Auto,
    /// `set`: `SET LOCAL session_replication_role` (needs a superuser, or
    /// PostgreSQL 15+'s `GRANT SET ON PARAMETER`); failing is an error.
    Set,
    /// `function:NAME`: call a `SECURITY DEFINER` helper taking the role
    /// name, as managed services have their users create (e.g.
    /// `function:public.rds_session_replication_role`).
    Function {
        /// Schema, as in the catalog (folded, unquoted). Always set once parsed: the
        /// name must be qualified (`None` only where code builds one by hand).
        schema: Option<String>,
        /// Function name, as in the catalog (folded, unquoted).
        name: String,
    },
    /// `off`: never touch `session_replication_role`.
    Off,
}

impl ReplicaRoleConfig {
    /// Parses `auto`, `set`, `off` or `function:NAME`, where NAME is
    /// `schema.function` read like a table name ([`TableName::parse`]:
    /// unquoted parts fold to lower case, quoted parts keep case); an
    /// unqualified name is refused.
    pub(super) fn parse(s: &str) -> Result<ReplicaRoleConfig, String> {
        const EXPECTED: &str = "expected one of `auto`, `set`, `function:NAME`, `off`";
        let Some(text) = s.strip_prefix("function:") else {
            return match s {
                "auto" => Ok(ReplicaRoleConfig::Auto),
                "set" => Ok(ReplicaRoleConfig::Set),
                "off" => Ok(ReplicaRoleConfig::Off),
                _ => Err(format!("invalid replica_role {s:?}, {EXPECTED}")),
            };
        };
        if text.trim().is_empty() {
            return Err(format!(
                "{s:?} names no function, e.g. \"function:public.rds_session_replication_role\""
            ));
        }
        let parsed = TableName::parse(text)
            .map_err(|e| format!("invalid function name {text:?}: {}", e.kind))?;
        // TableName::parse puts an unqualified name in `public`; find out
        // whether it was qualified by asking the same parser whether one
        // more leading part makes it three parts (the only error possible
        // once `text` parsed).
        let qualified = TableName::parse(&format!("\"_\".{text}")).is_err();
        if !qualified {
            // drover's sessions search pg_catalog only: an unqualified name would not be found,
            // and must not be found wherever another role could create one.
            return Err(format!(
                "{s:?}: name the function with its schema, e.g. \"function:public.{}\"",
                text.trim()
            ));
        }
        Ok(ReplicaRoleConfig::Function {
            schema: Some(parsed.schema),
            name: parsed.name,
        })
    }

    /// The statement that sets `session_replication_role` to `role`
    /// (`replica`, or `origin` to restore it) the way this setting says:
    /// for [`ReplicaRoleConfig::Function`] a call of the function, e.g.
    /// `SELECT "public"."rds_session_replication_role"('replica')` (an
    /// unqualified name stays unqualified); otherwise the built-in
    /// `SET LOCAL session_replication_role = 'replica'`, which lasts until
    /// the transaction ends. With `Off` the caller sets nothing and should not
    /// run it; with `Auto` it is what to try.
    pub fn sql_call(&self, role: &str) -> String {
        match self {
            ReplicaRoleConfig::Function { schema, name } => {
                let function = match schema {
                    Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
                    None => quote_ident(name),
                };
                format!("SELECT {function}({})", quote_literal(role))
            }
            ReplicaRoleConfig::Auto | ReplicaRoleConfig::Set | ReplicaRoleConfig::Off => {
                format!(
                    "SET LOCAL session_replication_role = {}",
                    quote_literal(role)
                )
            }
        }
    }
}

/// The config-file spelling; a function name in the canonical form that
/// parses back to the same value (`function:public.f`, `function:"F"`).
impl fmt::Display for ReplicaRoleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if is_plain_identifier(s) {
                s.to_owned()
            } else {
                quote_ident(s)
            }
        };
        match self {
            ReplicaRoleConfig::Auto => f.write_str("auto"),
            ReplicaRoleConfig::Set => f.write_str("set"),
            ReplicaRoleConfig::Off => f.write_str("off"),
            ReplicaRoleConfig::Function { schema, name } => {
                f.write_str("function:")?;
                if let Some(schema) = schema {
                    write!(f, "{}.", part(schema))?;
                }
                f.write_str(&part(name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(schema: Option<&str>, name: &str) -> ReplicaRoleConfig {
        ReplicaRoleConfig::Function {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn choices_round_trip_through_their_spelling() {
        for v in LogFormat::ALL {
            assert_eq!(parse_choice::<LogFormat>(v.as_str()), Ok(*v));
        }
        for v in ConflictStrategy::ALL {
            assert_eq!(parse_choice::<ConflictStrategy>(&v.to_string()), Ok(*v));
        }
        for v in InitialCopy::ALL {
            assert_eq!(parse_choice::<InitialCopy>(v.as_str()), Ok(*v));
        }
        assert_eq!(InitialCopy::IfEmpty.as_str(), "if-empty");
        assert_eq!(
            parse_choice::<InitialCopy>("if_empty"),
            Err(
                "invalid initial_copy \"if_empty\", expected one of `never`, `if-empty`, `always`"
                    .to_owned()
            )
        );
        assert!(parse_choice::<LogFormat>("JSON").is_err());
    }

    #[test]
    fn replica_role_parses_every_form() {
        let p = ReplicaRoleConfig::parse;
        assert_eq!(p("auto"), Ok(ReplicaRoleConfig::Auto));
        assert_eq!(p("set"), Ok(ReplicaRoleConfig::Set));
        assert_eq!(p("off"), Ok(ReplicaRoleConfig::Off));
        for unqualified in ["function:f", "function: F ", r#"function:"a.b""#] {
            let e = p(unqualified).unwrap_err();
            assert!(e.contains("with its schema"), "{e}");
        }
        assert_eq!(p("function:public.f"), Ok(function(Some("public"), "f")));
        assert_eq!(
            p("function:Ops.Set_Role"),
            Ok(function(Some("ops"), "set_role"))
        );
        assert_eq!(
            p(r#"function:"My.Schema"."Fn ""x""""#),
            Ok(function(Some("My.Schema"), r#"Fn "x""#))
        );
        assert!(p("Auto").unwrap_err().contains("expected one of `auto`"));
        assert!(p("function").unwrap_err().contains("invalid replica_role"));
        assert!(p("function:").unwrap_err().contains("names no function"));
        assert!(p("function:  ").unwrap_err().contains("names no function"));
        let e = p("function:a.b.c").unwrap_err();
        assert!(
            e.starts_with(r#"invalid function name "a.b.c": 3 dotted parts"#),
            "{e}"
        );
        let e = p(r#"function:"f"#).unwrap_err();
        assert!(e.contains("unterminated quoted identifier"), "{e}");
    }

    #[test]
    fn replica_role_sql_call_quotes_everything() {
        assert_eq!(
            function(Some("public"), "rds_session_replication_role").sql_call("replica"),
            r#"SELECT "public"."rds_session_replication_role"('replica')"#
        );
        assert_eq!(
            function(Some("s"), r#"we"ird"#).sql_call("it's"),
            r#"SELECT "s"."we""ird"('it''s')"#
        );
        for v in [ReplicaRoleConfig::Auto, ReplicaRoleConfig::Set] {
            assert_eq!(
                v.sql_call("origin"),
                "SET LOCAL session_replication_role = 'origin'"
            );
        }
    }

    #[test]
    fn replica_role_display_parses_back() {
        for s in [
            "auto",
            "set",
            "off",
            "function:public.f",
            r#"function:"Odd Schema"."F""#,
            r#"function:public."select""#,
        ] {
            let v = ReplicaRoleConfig::parse(s).unwrap();
            assert_eq!(v.to_string(), s);
            assert_eq!(ReplicaRoleConfig::parse(&v.to_string()), Ok(v));
        }
        assert_eq!(DEFAULT_REPLICA_ROLE.to_string(), "auto");
    }
}
