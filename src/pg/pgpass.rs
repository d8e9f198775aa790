//! Password lookup in a libpq password file (`~/.pgpass`).
//!
//! The rules are libpq's (PostgreSQL 15 `passwordFromFile`), so an existing `.pgpass` behaves
//! the same for drover as for psql: the file is `$PGPASSFILE` or `$HOME/.pgpass`; each line is
//! `host:port:database:user:password`; a field that is exactly `*` matches anything; `\:` and
//! `\\` escape; lines starting with `#` are comments; the first matching line wins. An empty host
//! is looked up as `localhost`. On Unix the file is ignored, with a warning, when it grants any
//! access to group or others. Passwords are never logged.
//!
//! Unlike libpq, a Unix socket directory given as host is matched literally (libpq maps its
//! compiled-in default socket directory to `localhost`), and the home directory comes only from
//! `$HOME`.

use std::path::{Path, PathBuf};

/// Looks up a password the way libpq does: file from `$PGPASSFILE`, else `$HOME/.pgpass`; lines
/// `host:port:database:user:password`, `*` matches anything, `\:` and `\\` escape, `#` comment
/// lines; first match wins. Returns `None` when there is no file or no match (or the first
/// matching line has an empty password, which libpq also treats as no password). On Unix, a
/// file with any group/other permission bits is ignored with a `tracing::warn` naming the file,
/// as libpq does.
pub fn lookup(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    lookup_in(&default_path()?, host, port, dbname, user)
}

/// [`lookup`] against an explicit password file.
pub fn lookup_in(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let contents = read_private(path)?;
    let host = if host.is_empty() { "localhost" } else { host };
    let port = port.to_string();
    for (index, line) in contents.split(|&b| b == b'\n').enumerate() {
        if line.first() == Some(&b'#') {
            continue;
        }
        let mut rest = trim_crlf(line);
        if rest.is_empty() {
            continue;
        }
        let mut matched = true;
        for token in [host, port.as_str(), dbname, user] {
            match match_field(rest, token) {
                Some(after) => rest = after,
                None => {
                    matched = false;
                    break;
                }
            }
        }
        if !matched {
            continue;
        }
        let password = unescape_password(rest);
        if password.is_empty() {
            return None;
        }
        return match String::from_utf8(password) {
            Ok(password) => Some(password),
            Err(_) => {
                tracing::warn!(
                    file = %path.display(),
                    line = index + 1,
                    "password in password file is not valid UTF-8, ignoring it"
                );
                None
            }
        };
    }
    None
}

/// Opens the file once and checks the permissions of that handle (fstat), so a file swapped
/// in after the check cannot be read in place of the one checked.
fn read_private(path: &Path) -> Option<Vec<u8>> {
    let warn = |e: std::io::Error| {
        tracing::warn!(file = %path.display(), error = %e, "cannot read password file, ignoring it");
    };
    let not_plain = || {
        tracing::warn!(file = %path.display(), "password file is not a plain file, ignoring it");
    };
    // Only so that opening cannot block on a FIFO; the checks that count are on the handle.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        // No password file is the normal case, not worth a warning.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn(e);
            return None;
        }
        Ok(_) => {
            not_plain();
            return None;
        }
    }
    let mut file = std::fs::File::open(path).map_err(warn).ok()?;
    let meta = file.metadata().map_err(warn).ok()?;
    if !meta.is_file() {
        not_plain();
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // libpq rejects any group/other bit (S_IRWXG | S_IRWXO), not only read.
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less; ignoring it"
            );
            return None;
        }
    }
    let mut contents = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut contents)
        .map_err(warn)
        .ok()?;
    Some(contents)
}

fn default_path() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(file) if !file.is_empty() => Some(PathBuf::from(file)),
        _ => std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| Path::new(&home).join(".pgpass")),
    }
}

/// Strips trailing `\r`/`\n` like libpq's `pg_strip_crlf`.
fn trim_crlf(mut line: &[u8]) -> &[u8] {
    while let [head @ .., b'\r' | b'\n'] = line {
        line = head;
    }
    line
}

/// libpq's `pwdfMatchesString`: if the field at the start of `buf` matches `token`, returns
/// what follows the field's terminating `:`.
fn match_field<'a>(buf: &'a [u8], token: &str) -> Option<&'a [u8]> {
    if let Some(rest) = buf.strip_prefix(b"*:") {
        return Some(rest);
    }
    let token = token.as_bytes();
    let (mut i, mut t) = (0, 0);
    while i < buf.len() {
        let escaped = buf[i] == b'\\';
        if escaped {
            i += 1;
        }
        let c = *buf.get(i)?;
        if c == b':' && t == token.len() && !escaped {
            return Some(&buf[i + 1..]);
        }
        if token.get(t) != Some(&c) {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

/// The password runs to the first unescaped `:` (anything after is ignored, as in libpq).
fn unescape_password(rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() && rest[i] != b':' {
        if rest[i] == b'\\' && i + 1 < rest.len() {
            i += 1;
        }
        out.push(rest[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, contents).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn exact_match_and_first_match_wins() {
        let (_dir, path) = file(
            "db1:5432:app:alice:first\n\
             db1:5432:app:alice:second\n\
             db1:5433:app:alice:otherport\n",
        );
        assert_eq!(
            lookup_in(&path, "db1", 5432, "app", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup_in(&path, "db1", 5433, "app", "alice").as_deref(),
            Some("otherport")
        );
        assert_eq!(lookup_in(&path, "db1", 5432, "app", "bob"), None);
        assert_eq!(lookup_in(&path, "db2", 5432, "app", "alice"), None);
        // Prefixes must not match: "db" is not "db1", "app" is not "ap".
        assert_eq!(lookup_in(&path, "db", 5432, "app", "alice"), None);
        assert_eq!(lookup_in(&path, "db1", 5432, "ap", "alice"), None);
    }

    #[test]
    fn wildcards_only_as_whole_field() {
        let (_dir, path) = file(
            "*x:5432:*:*:literal\n\
             specific:*:*:bob:bobpw\n\
             *:*:*:*:fallback\n",
        );
        assert_eq!(
            lookup_in(&path, "anyhost", 1, "d", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            lookup_in(&path, "specific", 6000, "any", "bob").as_deref(),
            Some("bobpw")
        );
        assert_eq!(
            lookup_in(&path, "*x", 5432, "d", "u").as_deref(),
            Some("literal")
        );
    }

    #[test]
    fn escapes() {
        let (_dir, path) = file(
            "\\:\\:1:5432:db:u:v6pw\n\
             h:5432:db:back\\\\slash:pa\\:ss\\\\word:ignored-field\n",
        );
        assert_eq!(
            lookup_in(&path, "::1", 5432, "db", "u").as_deref(),
            Some("v6pw")
        );
        assert_eq!(
            lookup_in(&path, "h", 5432, "db", "back\\slash").as_deref(),
            Some("pa:ss\\word")
        );
        // An unescaped colon in the name does not match an escaped one.
        assert_eq!(lookup_in(&path, "h", 5432, "db", "backslash"), None);
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let (_dir, path) = file(
            "# h:5432:db:u:commented\r\n\
             \r\n\
             h:5432:db:u:real\r\n",
        );
        assert_eq!(
            lookup_in(&path, "h", 5432, "db", "u").as_deref(),
            Some("real")
        );
    }

    #[test]
    fn empty_host_is_localhost() {
        let (_dir, path) = file("localhost:5432:db:u:local\n");
        assert_eq!(
            lookup_in(&path, "", 5432, "db", "u").as_deref(),
            Some("local")
        );
    }

    #[test]
    fn empty_password_stops_search() {
        let (_dir, path) = file("h:5432:db:u:\n*:*:*:*:later\n");
        assert_eq!(lookup_in(&path, "h", 5432, "db", "u"), None);
    }

    #[test]
    fn missing_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup_in(&dir.path().join("nope"), "h", 1, "d", "u"), None);
        assert_eq!(lookup_in(dir.path(), "h", 1, "d", "u"), None);
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_access_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = file("*:*:*:*:secret\n");
        assert_eq!(
            lookup_in(&path, "h", 1, "d", "u").as_deref(),
            Some("secret")
        );
        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(lookup_in(&path, "h", 1, "d", "u"), None, "mode {mode:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            lookup_in(&path, "h", 1, "d", "u").as_deref(),
            Some("secret")
        );
    }

    /// A private file and a world-readable one are swapped in at the path in a loop: the
    /// password of the world-readable one must never be used (the check is on the handle read).
    #[cfg(unix)]
    #[test]
    fn permissions_are_checked_on_the_file_read() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        std::fs::write(&good, "*:*:*:*:private\n").unwrap();
        std::fs::write(&bad, "*:*:*:*:exposed\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("pgpass");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let tmp = dir.path().join("swap");
                for target in [&good, &bad].into_iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, &path).unwrap();
                }
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let mut leaked = 0;
            for _ in 0..20_000 {
                if std::time::Instant::now() > deadline {
                    break;
                }
                if lookup_in(&path, "h", 1, "d", "u").as_deref() == Some("exposed") {
                    leaked += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
            assert_eq!(
                leaked, 0,
                "world-readable file's password used {leaked} times"
            );
        });
    }

    #[test]
    fn lookup_uses_pgpassfile() {
        let (_dir, path) = file("envhost:5432:db:u:fromenv\n");
        // Only this test touches PGPASSFILE.
        std::env::set_var("PGPASSFILE", &path);
        let found = lookup("envhost", 5432, "db", "u");
        std::env::remove_var("PGPASSFILE");
        assert_eq!(found.as_deref(), Some("fromenv"));
    }
}
