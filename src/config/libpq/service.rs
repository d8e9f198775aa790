//! Connection service files (`pg_service.conf`), looked up as libpq does: the file named by
//! `PGSERVICEFILE`, else `~/.pg_service.conf`; then `PGSYSCONFDIR/pg_service.conf`. The first
//! file holding a `[NAME]` section wins. Lines are `key=value`; `#` starts a comment line.

use std::path::{Path, PathBuf};

use super::{Lookup, Pairs};

/// A service's settings and the file they came from.
pub(super) struct Service {
    pub file: PathBuf,
    pub pairs: Pairs,
}

/// The files consulted for services, in order.
pub(super) fn files(env: Lookup) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match env("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => files.extend(env("HOME").map(|h| Path::new(&h).join(".pg_service.conf"))),
    }
    files.extend(env("PGSYSCONFDIR").map(|d| Path::new(&d).join("pg_service.conf")));
    files
}

/// Finds service `name`; an error says which files were read and why it failed.
pub(super) fn find(name: &str, env: Lookup) -> Result<Service, String> {
    let files = files(env);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read service file {}: {e}", file.display())),
        };
        let found = section(&text, name)
            .map_err(|(line, why)| format!("{}, line {line}: {why}", file.display()))?;
        if let Some(pairs) = found {
            return Ok(Service {
                file: file.clone(),
                pairs,
            });
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(format!(
        "definition of service {name:?} not found (looked in: {}; set PGSERVICEFILE or PGSYSCONFDIR)",
        if looked.is_empty() { "no file: neither PGSERVICEFILE, HOME nor PGSYSCONFDIR is set".to_owned() } else { looked.join(", ") }
    ))
}

/// The pairs of section `[name]` in a service file's text, or `None` if absent; a syntax error
/// anywhere in the file is an error (line number, reason), as in libpq.
pub(super) fn section(text: &str, name: &str) -> Result<Option<Pairs>, (usize, String)> {
    let mut current: Option<&str> = None;
    let mut found: Option<Pairs> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section
                .strip_suffix(']')
                .ok_or((i + 1, "syntax error: missing \"]\"".to_owned()))?;
            if found.is_some() {
                // libpq stops reading at the end of the first matching section.
                return Ok(found);
            }
            current = Some(section);
            if section == name {
                found = Some(Vec::new());
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or((i + 1, "syntax error: expected key=value".to_owned()))?;
        let key = key.trim();
        if current == Some(name) {
            if key == "service" {
                return Err((
                    i + 1,
                    "nested service specifications are not supported".into(),
                ));
            }
            if let Some(pairs) = found.as_mut() {
                pairs.push((key.to_owned(), value.trim().to_owned()));
            }
        }
    }
    Ok(found)
}
