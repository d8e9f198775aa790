//! drover's configuration: a TOML file (see `config/drover.toml` for a
//! commented example) with every key overridable from the environment.
//!
//! * File: the `--config FILE` argument, else `$DROVER_CONFIG`, else
//!   [`DEFAULT_CONFIG_PATH`].
//! * Environment: `DROVER__SECTION__NAME__KEY=value` overrides (or adds) one
//!   key, e.g. `DROVER__DATABASES__LEGACY__PORT=5433`,
//!   `DROVER__DAEMON__API_TOKEN_ENV=DROVER_TOKEN`, and for lists
//!   comma-separated values, `DROVER__SYNCS__LEGACY_TO_NEW__TARGETS=new,reporting`
//!   or `DROVER__SYNCS__LEDGER__PRIORITY=legacy,new` (a comma inside a
//!   double-quoted table name does not split). Variable names are
//!   case-insensitive; values are taken verbatim (a password `007` stays the
//!   string `007`). The `[relgroups.NAME.keys]` and `[syncs.NAME.table_strategy]`
//!   sub-tables are the things only the file can set.
//! * libpq's conventions (module `libpq`): `url`, `conninfo`, `service` and the `PGHOST`-style
//!   variables fill the connection keys a database leaves unset.
//!
//! Loading never stops at the first mistake: it reports every problem, one
//! per line, as `FILE: dotted.key: message`, e.g.
//! `config/drover.toml: syncs.legacy_to_new.relgroup: no relgroup named "herd2"`.
//! Stages: `raw` checks shape and types entry by entry (with the strict
//! scalar types of `strict`), `validate` checks meaning (required keys,
//! references, duplicates, conflicts) and builds the `model` types, which
//! are re-exported here with the fixed-choice value enums of `choices`.

mod choices;
mod libpq;
mod model;
mod raw;
mod secret;
mod strict;
mod timeouts;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use config::Source as _;

pub use choices::{
    ConflictStrategy, InitialCopy, LogFormat, ReplicaRoleConfig, SequenceMode,
    DEFAULT_CONFLICT_STRATEGY, DEFAULT_INITIAL_COPY, DEFAULT_LOG_FORMAT, DEFAULT_REPLICA_ROLE,
    DEFAULT_SEQUENCE_MODE,
};
pub use libpq::{ConnectionSources, Source as ConnectionSource};
pub use model::{
    Config, Daemon, Database, Relgroup, Secret, SyncConfig, DEFAULT_LEASE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_PORT, DEFAULT_SSLMODE,
};
pub use timeouts::{
    DEFAULT_LOCK_TIMEOUT, DEFAULT_ROUND_DEADLINE, DEFAULT_ROUND_PACING, DEFAULT_STATEMENT_TIMEOUT,
};

/// Config file used when neither `--config` nor `$DROVER_CONFIG` is given:
/// relative to the working directory, like the repository layout.
pub const DEFAULT_CONFIG_PATH: &str = "config/drover.toml";

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_PATH_ENV: &str = "DROVER_CONFIG";

/// Prefix of override variables (`DROVER__...`).
pub const ENV_PREFIX: &str = "DROVER";

/// Level separator in override variables: double, because names and keys
/// contain single underscores (`DROVER__SYNCS__LEGACY_TO_NEW__TARGETS`).
pub const ENV_SEPARATOR: &str = "__";

/// The origin the `config` crate gives values from its `Environment` source.
const ENV_ORIGIN: &str = "the environment";

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key at fault, e.g. `databases.legacy.port` or
    /// `relgroups.herd.tables[2]`; empty when it concerns the whole file.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// Why the configuration could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8, ...).
    #[error("{}: cannot read config file ({how}): {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// How the path was chosen, e.g. `from $DROVER_CONFIG`.
        how: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML. Line and column are the parser's (1-based).
    #[error("{}: line {line}, column {column}: TOML syntax error: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// The file parsed but is wrong in one or more ways; all are listed.
    #[error("{}", render(.path, .problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order by section.
        problems: Vec<Problem>,
    },
    /// `password_env` names a variable that is unset (or empty, or not UTF-8).
    #[error("databases.{database}.password_env: environment variable {var} {problem}")]
    PasswordEnv {
        /// The `[databases.NAME]` name.
        database: String,
        /// The variable `password_env` names.
        var: String,
        /// What is wrong with it, e.g. `is not set`.
        problem: &'static str,
    },
    /// `api_token_env` names a variable that is unset (or empty, or not
    /// UTF-8).
    #[error("daemon.api_token_env: environment variable {var} {problem}")]
    ApiTokenEnv {
        /// The variable `api_token_env` names.
        var: String,
        /// What is wrong with it, e.g. `is not set`.
        problem: &'static str,
    },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let file = path.display();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match p.key.as_str() {
            "" => format!("{file}: {}", p.message),
            key => format!("{file}: {key}: {}", p.message),
        })
        .collect();
    lines.join("\n")
}

/// Collects problems; notes when a key came from the environment.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    /// Dotted keys whose value came from a `DROVER__...` variable.
    env_keys: BTreeSet<String>,
    /// Dotted keys filled from `url`, a service or `PG...` variables, and from which.
    origins: std::collections::BTreeMap<String, String>,
}

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        let key = key.into();
        let mut message = message.to_string();
        let base = key.split('[').next().unwrap_or_default();
        if self.env_keys.contains(base) {
            message.push_str(&format!(
                " (set by environment variable {})",
                env_var_for(base)
            ));
        } else if let Some(source) = self.origins.get(base) {
            message.push_str(&format!(" (taken from {source})"));
        }
        self.list.push(Problem { key, message });
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The override variable for a dotted key: `databases.legacy.port` gives
/// `DROVER__DATABASES__LEGACY__PORT`.
pub fn env_var_for(key: &str) -> String {
    let mut var = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    var.push_str(&key.to_uppercase().replace('.', ENV_SEPARATOR));
    var
}

/// The config file to use and how it was chosen: `cli_path` if given, else
/// `$DROVER_CONFIG` if set and non-empty, else [`DEFAULT_CONFIG_PATH`].
pub fn config_path(cli_path: Option<&Path>) -> (PathBuf, &'static str) {
    choose_path(cli_path, std::env::var_os(CONFIG_PATH_ENV))
}

fn choose_path(
    cli_path: Option<&Path>,
    env_value: Option<std::ffi::OsString>,
) -> (PathBuf, &'static str) {
    match (cli_path, env_value) {
        (Some(p), _) => (p.to_owned(), "from --config"),
        (None, Some(v)) if !v.is_empty() => (PathBuf::from(v), "from $DROVER_CONFIG"),
        _ => (PathBuf::from(DEFAULT_CONFIG_PATH), "the default path"),
    }
}

/// Loads the configuration: reads the file chosen by [`config_path`],
/// applies `DROVER__...` environment overrides and validates everything.
pub fn load(cli_path: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, how) = config_path(cli_path);
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        how,
        source,
    })?;
    load_text(&text, &path, Some(environment()), &libpq::process_env)
}

/// Loads a configuration from TOML text, without environment overrides (for
/// tests and tools). `path_for_messages` is only used in messages and as
/// [`Config::path`].
pub fn load_from_str(text: &str, path_for_messages: &Path) -> Result<Config, ConfigError> {
    load_text(text, path_for_messages, None, &|_| None)
}

/// Loads TOML text with libpq's environment (`PGPASSWORD`, `PGUSER`, ...) as fallbacks but
/// no `DROVER__` overrides: for a command that builds its own settings (`drover init`).
pub fn load_with_libpq_env(text: &str, path_for_messages: &Path) -> Result<Config, ConfigError> {
    load_text(text, path_for_messages, None, &libpq::process_env)
}

fn environment() -> config::Environment {
    config::Environment::with_prefix(ENV_PREFIX).separator(ENV_SEPARATOR)
}

fn load_text(
    text: &str,
    path: &Path,
    env: Option<config::Environment>,
    libpq_env: libpq::Lookup,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if let Some(env) = env {
        builder = builder.add_source(env);
    }
    let whole_file = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        problems: vec![Problem {
            key: String::new(),
            message,
        }],
    };
    let merged = builder.build().map_err(|e| match e {
        config::ConfigError::FileParse { cause, .. } => syntax_error(path, &cause.to_string()),
        other => whole_file(other.to_string()),
    })?;
    let tree = merged.collect().map_err(|e| whole_file(e.to_string()))?;
    let mut problems = Problems::default();
    let mut raw = raw::collect(tree, &mut problems);
    libpq::fill(&mut raw, &mut problems, libpq_env);
    match validate::validate(raw, path, &mut problems) {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            let mut list = problems.list;
            if list.is_empty() {
                list.push(Problem {
                    key: String::new(),
                    message: "invalid configuration (no details: this is a bug in drover)".into(),
                });
            }
            // Deterministic order, grouped by section entry: by key, with
            // list indexes compared as numbers; same-key problems keep the
            // order they were found in.
            list.sort_by_cached_key(|p| sort_key(&p.key));
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: list,
            })
        }
    }
}

/// `syncs.s.targets[2]` sorts before `syncs.s.targets[10]`.
fn sort_key(key: &str) -> Vec<(String, usize)> {
    key.split('.')
        .flat_map(|part| part.split('['))
        .map(|piece| match piece.strip_suffix(']').map(str::parse) {
            Some(Ok(index)) => (String::new(), index),
            _ => (piece.to_owned(), 0),
        })
        .collect()
}

/// Turns the `toml` crate's multi-line report ("TOML parse error at line L,
/// column C", a source excerpt with a caret, then the message) into one
/// [`ConfigError::Syntax`].
fn syntax_error(path: &Path, report: &str) -> ConfigError {
    let lines: Vec<&str> = report.lines().collect();
    let position = lines.first().and_then(|l| {
        let rest = l.strip_prefix("TOML parse error at line ")?;
        let (line, column) = rest.split_once(", column ")?;
        Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
    });
    match position {
        Some((line, column)) => {
            // Skip the excerpt: lines that are gutter ("  |") or "N | ...".
            let message: Vec<&str> = lines[1..]
                .iter()
                .filter(|l| !l.trim().is_empty() && !is_excerpt_line(l))
                .map(|l| l.trim())
                .collect();
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: message.join("; "),
            }
        }
        None => ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("TOML syntax error: {}", lines.join("; ")),
            }],
        },
    }
}

fn is_excerpt_line(line: &str) -> bool {
    match line.split_once('|') {
        Some((gutter, _)) => gutter.trim().chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// The candidate closest to `word` if it is close enough to be a likely
/// typo (optimal-string-alignment distance at most 2 and less than the
/// longer length).
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, c)| d <= 2 && d < c.chars().count().max(word.chars().count()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance counting a swap of adjacent characters as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests;
