//! First stage of loading: the merged file + environment tree from the
//! `config` crate, checked for shape and deserialized into raw structs (every
//! field optional, `deny_unknown_fields`), one entry at a time so that every
//! unknown key, wrong type and bad section is reported with its full dotted
//! path, not just the first one serde trips over. Semantic checks (required
//! keys, references, duplicates) happen in [`super::validate`].
//!
//! Values from the environment are always strings; here they are converted
//! to the key's type: integers for `port`, and comma-separated lists for
//! `tables`, `sequences`, `sources`, `targets` and `priority` (each
//! section's `LIST_KEYS`). Values from the file must already have the right
//! TOML type (`port = "5432"` is an error, `port = 5432` is not). The
//! `[relgroups.NAME.keys]` and `delta_columns` sub-tables cannot be set from the environment: a
//! `DROVER__RELGROUPS__NAME__KEYS__...` value is a string, reported as the
//! wrong type.

use std::collections::{BTreeMap, BTreeSet};

use config::{Value, ValueKind};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

use super::strict::{Bool, Int, KeyLists, SecretStr, Str, StrList};
use super::{suggest, Problems, ENV_ORIGIN};

/// `[daemon]`. Not `Debug`: it holds the API token.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub listen: Option<Str>,
    pub api_token: Option<SecretStr>,
    pub api_token_env: Option<Str>,
    pub api_token_for_reads: Option<Bool>,
    pub log_format: Option<Str>,
    pub lease_timeout: Option<Str>,
    pub lock_timeout: Option<Str>,
    pub statement_timeout: Option<Str>,
    pub round_deadline: Option<Str>,
    pub round_pacing: Option<Str>,
    pub auto_install: Option<Bool>,
}

/// `[databases.NAME]`. Not `Debug`: it holds the password.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub host: Option<Str>,
    pub port: Option<Int>,
    pub dbname: Option<Str>,
    pub user: Option<Str>,
    pub password: Option<SecretStr>,
    pub password_env: Option<Str>,
    pub sslmode: Option<Str>,
    pub sslrootcert: Option<Str>,
    pub sslcert: Option<Str>,
    pub sslkey: Option<Str>,
    pub channel_binding: Option<Str>,
    pub replica_role: Option<Str>,
    pub application_name: Option<Str>,
    pub url: Option<Str>,
    pub conninfo: Option<Str>,
    pub service: Option<Str>,
    /// Filled by [`super::libpq::fill`], not read from the file.
    #[serde(skip)]
    pub sources: super::libpq::ConnectionSources,
}

/// `[relgroups.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelgroup {
    pub tables: Option<StrList>,
    pub sequences: Option<StrList>,
    pub keys: Option<KeyLists>,
    pub sequence_mode: Option<Str>,
    /// `[relgroups.NAME.delta_columns]`: column lists, like `keys`.
    pub delta_columns: Option<KeyLists>,
    pub sequence_step: Option<Int>,
}

/// `[syncs.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub relgroup: Option<Str>,
    pub sources: Option<StrList>,
    pub targets: Option<StrList>,
    pub conflict_strategy: Option<Str>,
    pub priority: Option<StrList>,
    pub initial_copy: Option<Str>,
    /// `[syncs.NAME.table_strategy]`: `"schema.table" = "strategy"`, kept as written.
    pub table_strategy: Option<BTreeMap<String, Str>>,
}

/// What the loader needs to know about a raw section struct beyond serde.
pub(super) trait Section: DeserializeOwned + Default {
    /// What one entry is, for messages ("database").
    const WHAT: &'static str;
    /// Keys whose environment values are comma-separated lists.
    const LIST_KEYS: &'static [&'static str] = &[];
    /// Keys whose environment values are integers.
    const INT_KEYS: &'static [&'static str] = &[];
    /// Keys whose environment values are booleans (`true` / `false`).
    const BOOL_KEYS: &'static [&'static str] = &[];
}

impl Section for RawDaemon {
    const WHAT: &'static str = "daemon section";
    const BOOL_KEYS: &'static [&'static str] = &["api_token_for_reads", "auto_install"];
}
impl Section for RawDatabase {
    const WHAT: &'static str = "database";
    const INT_KEYS: &'static [&'static str] = &["port"];
}
impl Section for RawRelgroup {
    const WHAT: &'static str = "relgroup";
    const LIST_KEYS: &'static [&'static str] = &["tables", "sequences"];
    const INT_KEYS: &'static [&'static str] = &["sequence_step"];
}
impl Section for RawSync {
    const WHAT: &'static str = "sync";
    const LIST_KEYS: &'static [&'static str] = &["sources", "targets", "priority"];
}

/// One deserialized table, with what went wrong in it.
#[derive(Default)]
pub(super) struct Entry<T> {
    pub raw: T,
    /// Keys present but unusable (wrong type, ...), already reported: not
    /// to be reported again as missing.
    pub broken: BTreeSet<String>,
    /// The entry was not a table at all (already reported).
    pub invalid: bool,
    /// Every value in it came from the environment (a misspelt name in a
    /// `DROVER__...` variable creates such an entry).
    pub env_only: bool,
}

/// The whole file, shape-checked.
#[derive(Default)]
pub(super) struct RawConfig {
    pub daemon: Option<Entry<RawDaemon>>,
    pub databases: BTreeMap<String, Entry<RawDatabase>>,
    pub relgroups: BTreeMap<String, Entry<RawRelgroup>>,
    pub syncs: BTreeMap<String, Entry<RawSync>>,
}

const TOP_KEYS: &[&str] = &["daemon", "databases", "relgroups", "syncs"];

/// Longest section entry name: names may end up in PostgreSQL object names.
const MAX_NAME_BYTES: usize = 63;

/// Splits the `config` crate's merged tree into raw sections, reporting
/// every structural problem.
pub(super) fn collect(tree: config::Map<String, Value>, problems: &mut Problems) -> RawConfig {
    let mut raw = RawConfig::default();
    let tree: BTreeMap<String, Value> = tree.into_iter().collect();
    for (key, value) in &tree {
        note_env_origins(key, value, problems);
    }
    for (key, value) in tree {
        match key.as_str() {
            "daemon" => raw.daemon = Some(entry("daemon", value, problems)),
            "databases" => raw.databases = section("databases", value, problems),
            "relgroups" => raw.relgroups = section("relgroups", value, problems),
            "syncs" => raw.syncs = section("syncs", value, problems),
            _ => {
                let msg = unknown_key(&key, TOP_KEYS);
                problems.push(key, msg);
            }
        }
    }
    raw
}

/// Records which dotted keys were set from the environment, so that messages
/// about them can name the variable.
fn note_env_origins(path: &str, value: &Value, problems: &mut Problems) {
    if let ValueKind::Table(table) = &value.kind {
        for (k, v) in table {
            note_env_origins(&format!("{path}.{k}"), v, problems);
        }
    } else if value.origin() == Some(ENV_ORIGIN) {
        problems.env_keys.insert(path.to_owned());
    }
}

fn unknown_key(key: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown key {key:?}");
    match suggest(key, known.iter().copied()) {
        Some(s) => msg.push_str(&format!(" (did you mean {s:?}?)")),
        None => msg.push_str(&format!(" (expected one of: {})", known.join(", "))),
    }
    msg
}

fn kind_name(value: &Value) -> &'static str {
    match value.kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "an array",
    }
}

/// `[databases]` etc.: a table of named entries.
fn section<T: Section>(
    path: &str,
    value: Value,
    problems: &mut Problems,
) -> BTreeMap<String, Entry<T>> {
    let found = kind_name(&value);
    let ValueKind::Table(table) = value.kind else {
        problems.push(
            path,
            format!(
                "expected a table of {}s ([{path}.NAME] sections), found {found}",
                T::WHAT
            ),
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, value) in table.into_iter().collect::<BTreeMap<_, _>>() {
        let key = format!("{path}.{name}");
        if let Err(why) = check_name(&name) {
            problems.push(&key, format!("invalid {} name {name:?}: {why}", T::WHAT));
        }
        out.insert(name, entry(&key, value, problems));
    }
    out
}

/// Names of databases, relgroups and syncs: they appear in environment
/// variable names (which the `config` crate lower-cases, and where `__`
/// separates levels), in metric labels and possibly in PostgreSQL object
/// names, so keep them simple.
fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok {
        Err("names must be a lower-case ASCII letter followed by lower-case letters, digits and underscores, so that DROVER__SECTION__NAME__KEY environment variables can address them")
    } else if name.contains("__") {
        Err("names must not contain \"__\", the level separator of DROVER__SECTION__NAME__KEY environment variables")
    } else if name.len() > MAX_NAME_BYTES {
        Err("names must be at most 63 bytes long")
    } else {
        Ok(())
    }
}

/// One table (`[daemon]` or `[databases.NAME]`, ...) into its raw struct.
fn entry<T: Section>(path: &str, value: Value, problems: &mut Problems) -> Entry<T> {
    let found = kind_name(&value);
    let ValueKind::Table(table) = value.kind else {
        problems.push(path, format!("expected a table ([{path}]), found {found}"));
        return Entry {
            invalid: true,
            ..Entry::default()
        };
    };
    let mut table: BTreeMap<String, Value> = table.into_iter().collect();
    let fields = struct_fields::<T>();
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        problems.push(format!("{path}.{key}"), unknown_key(&key, fields));
    }
    let env_only = !table.is_empty() && table.values().all(|v| v.origin() == Some(ENV_ORIGIN));
    for (key, value) in table.iter_mut() {
        if value.origin() == Some(ENV_ORIGIN) {
            convert_env_value(key, value, T::LIST_KEYS, T::INT_KEYS);
            convert_env_bool(key, value, T::BOOL_KEYS);
        }
    }
    let mut broken = BTreeSet::new();
    // Deserialize; on error report it, drop the offending key and go again,
    // so that every bad key is reported. Each round removes one key.
    loop {
        let value = Value::new(None, ValueKind::Table(table.clone().into_iter().collect()));
        match T::deserialize(value) {
            Ok(raw) => {
                return Entry {
                    raw,
                    broken,
                    invalid: false,
                    env_only,
                }
            }
            Err(e) => {
                let (key, message) = split_error(e);
                let top = key
                    .as_deref()
                    .map(|k| k.split(['.', '[']).next().unwrap_or_default().to_owned());
                match (key, top) {
                    (Some(key), Some(top)) if table.remove(&top).is_some() => {
                        problems.push(format!("{path}.{key}"), message);
                        broken.insert(top);
                    }
                    _ => {
                        problems.push(path, message);
                        return Entry {
                            invalid: true,
                            ..Entry::default()
                        };
                    }
                }
            }
        }
    }
}

/// Environment values are strings: give list and integer keys their type.
fn convert_env_value(key: &str, value: &mut Value, lists: &[&str], ints: &[&str]) {
    let ValueKind::String(s) = &value.kind else {
        return;
    };
    let origin = Some(ENV_ORIGIN.to_owned());
    if lists.contains(&key) {
        let items = split_list(s)
            .into_iter()
            .map(|item| Value::new(origin.as_ref(), item))
            .collect::<Vec<_>>();
        *value = Value::new(origin.as_ref(), items);
    } else if ints.contains(&key) {
        if let Ok(n) = s.trim().parse::<i64>() {
            *value = Value::new(origin.as_ref(), n);
        }
    }
}

/// Environment values are strings: `true` / `false` for boolean keys become booleans
/// (anything else stays a string and is reported as the wrong type).
fn convert_env_bool(key: &str, value: &mut Value, bools: &[&str]) {
    let ValueKind::String(s) = &value.kind else {
        return;
    };
    if bools.contains(&key) {
        if let Ok(b) = s.trim().parse::<bool>() {
            *value = Value::new(Some(&ENV_ORIGIN.to_owned()), b);
        }
    }
}

/// Splits `a, b,"c,d"` at commas outside double quotes (a quoted table
/// name may contain a comma), trimming whitespace; an empty or blank string
/// is the empty list.
pub(super) fn split_list(s: &str) -> Vec<String> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current).trim().to_owned()),
            _ => current.push(c),
        }
    }
    items.push(current.trim().to_owned());
    items
}

/// The dotted key (relative to the entry) and message of a `config` crate
/// deserialization error.
fn split_error(e: config::ConfigError) -> (Option<String>, String) {
    match e {
        config::ConfigError::At { error, key, .. } => (key, error.to_string()),
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => (
            key,
            format!("wrong type: expected {expected}, found {unexpected}"),
        ),
        config::ConfigError::NotFound(key) => (Some(key), "missing required key".to_owned()),
        other => (None, other.to_string()),
    }
}

/// The field names of a derived `Deserialize` struct, read by handing it a
/// deserializer that only records what `deserialize_struct` is asked for.
pub(super) fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe done"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}
