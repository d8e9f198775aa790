//! The config file `drover init` writes: databases (URLs without their password), one relgroup
//! with every table that can replicate (each with the key method it gets), the tables that
//! cannot commented out with the reason, and one sync. Pure text, unit-tested.

use std::fmt::Write;

use crate::pg::ident::TableName;

/// Names of the two databases, the relgroup and the sync in the written file.
pub const SOURCE: &str = "source";
pub const TARGET: &str = "target";
pub const GROUP: &str = "main";

/// What `init` decided for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replicates, identified as described (`primary key (aid)`, ...).
    Replicate { key: String },
    /// Cannot replicate, for this reason (with the fix).
    Refuse(String),
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub table: TableName,
    pub verdict: Verdict,
}

/// Everything the file says.
pub struct Draft {
    pub source_url: String,
    pub target_url: String,
    /// How the tables were chosen, for the header (`schemas public; tables pgbench_*`).
    pub selection: String,
    pub tables: Vec<Candidate>,
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `url` without a password: `user:secret@` loses `:secret`, a `password=` parameter goes.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}{}", &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

fn database(out: &mut String, name: &str, url: &str) {
    let _ = writeln!(out, "[databases.{name}]");
    let _ = writeln!(out, "url = {}", toml_str(&without_password(url)));
    let _ = writeln!(
        out,
        "# The password is never written here. Either name an environment variable that holds it:\n\
         # password_env = \"{}_PGPASSWORD\"\n\
         # or put it in ~/.pgpass (or $PGPASSFILE, mode 0600), as for psql.\n",
        name.to_uppercase()
    );
}

/// The config text.
pub fn render(d: &Draft) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# drover config written by `drover init` ({}).\n\
         # Review it (every table below says how its rows are identified), then run\n\
         #   drover --config FILE check && drover --config FILE install && drover --config FILE run\n\
         # Every key is explained in config/drover.toml of the drover source.\n",
        d.selection
    );
    let _ = writeln!(out, "[daemon]\nlisten = \"127.0.0.1:9187\"\n");
    database(&mut out, SOURCE, &d.source_url);
    database(&mut out, TARGET, &d.target_url);
    let _ = writeln!(out, "[relgroups.{GROUP}]\ntables = [");
    for c in &d.tables {
        if let Verdict::Replicate { key } = &c.verdict {
            let _ = writeln!(out, "  # {key}");
            let _ = writeln!(out, "  {},", toml_str(&c.table.to_string()));
        }
    }
    let _ = writeln!(out, "]");
    let refused: Vec<&Candidate> = d
        .tables
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Refuse(_)))
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(
            out,
            "# Not replicated (fix the cause, then add the table above):"
        );
        for c in refused {
            if let Verdict::Refuse(why) = &c.verdict {
                let _ = writeln!(out, "#  {},  # {why}", toml_str(&c.table.to_string()));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n[syncs.{GROUP}]\nrelgroup = \"{GROUP}\"\nsources = [\"{SOURCE}\"]\ntargets = [\"{TARGET}\"]\n\
         # Copy whole tables before replicating changes: \"never\" (default: only changes made\n\
         # after drover install flow), \"if-empty\" (tables with no rows on the target), \"always\".\n\
         # initial_copy = \"if-empty\""
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_file() {
        assert_eq!(
            without_password("postgresql://u:s%40cret@h:5432/db?sslmode=require&password=x"),
            "postgresql://u@h:5432/db?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://h/db?password=x"),
            "postgres://h/db"
        );
        assert_eq!(
            without_password("postgresql://u@h/db"),
            "postgresql://u@h/db"
        );
        assert_eq!(
            without_password("postgresql://u:p@[::1]"),
            "postgresql://u@[::1]"
        );
    }

    #[test]
    fn refused_tables_are_comments_with_their_reason() {
        let d = Draft {
            source_url: "postgresql://u:pw@a/db".into(),
            target_url: "postgresql://u@b/db".into(),
            selection: "all schemas".into(),
            tables: vec![
                Candidate {
                    table: TableName::new("public", "t"),
                    verdict: Verdict::Replicate {
                        key: "primary key (id)".into(),
                    },
                },
                Candidate {
                    table: TableName::new("Sales", "x\"y"),
                    verdict: Verdict::Refuse("unlogged".into()),
                },
            ],
        };
        let text = render(&d);
        assert!(!text.contains("pw"), "{text}");
        assert!(
            text.contains("  # primary key (id)\n  \"public.t\",\n"),
            "{text}"
        );
        assert!(
            text.contains("#  \"\\\"Sales\\\".\\\"x\\\"\\\"y\\\"\",  # unlogged"),
            "{text}"
        );
        let cfg = crate::config::load_from_str(&text, std::path::Path::new("init.toml"))
            .expect("init writes a valid config");
        assert_eq!(cfg.relgroups[GROUP].tables.len(), 1);
    }
}
