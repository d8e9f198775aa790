//! Source snapshots (`txid_current_snapshot()` text, `xmin:xmax:xip,...`) as progress markers,
//! and the cache of each target's progress that a sync keeps between rounds.

use std::collections::HashMap;

use crate::capture::sql::NOTHING_APPLIED;

/// A validated snapshot text. Only digits, colons and commas: safe to inline as a literal,
/// which COPY (...) TO STDOUT needs because it takes no parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(String);

impl Snapshot {
    pub fn parse(s: &str) -> Option<Snapshot> {
        let mut parts = s.splitn(3, ':');
        let xmin = parts.next()?;
        let xmax = parts.next()?;
        let xip = parts.next()?;
        let num = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !num(xmin) || !num(xmax) || !(xip.is_empty() || xip.split(',').all(num)) {
            return None;
        }
        Some(Snapshot(s.to_string()))
    }

    pub fn nothing_applied() -> Snapshot {
        Snapshot(NOTHING_APPLIED.to_string())
    }

    /// Every transaction older than xmin is finished in this snapshot.
    pub fn xmin(&self) -> i64 {
        self.0
            .split(':')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    }

    /// Every transaction from xmax on was not yet started in this snapshot.
    pub fn xmax(&self) -> i64 {
        self.0
            .split(':')
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    }

    /// "Everything below `x` committed": a valid cut when no transaction below `x` is still
    /// running (`x <= xmin` of the round's snapshot).
    pub fn below(x: i64) -> Snapshot {
        Snapshot(format!("{x}:{x}:"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The snapshot as an SQL expression of type txid_snapshot.
    pub fn sql(&self) -> String {
        format!("'{}'::txid_snapshot", self.0)
    }
}

/// Progress of one sync, per (source, target, table), as last read from or written to targets.
#[derive(Debug, Default)]
pub struct ProgressCache {
    entries: HashMap<(String, String, String), Snapshot>,
    loaded: HashMap<(String, String), bool>,
    /// Sequence values last sent to each target.
    pub sequences: crate::round::sequences::SentValues,
    /// Tables whose changes the next round reads in its first flight.
    pub busy: crate::round::small::Busy,
    /// Targets whose next round applies the whole backlog (see `backlog`).
    pub unbounded: crate::round::backlog::Unbounded,
    /// Source identities, current and as recorded with progress.
    pub identity: crate::round::rewind::Identities,
}

impl ProgressCache {
    pub fn is_loaded(&self, source: &str, target: &str) -> bool {
        self.loaded
            .get(&(source.to_string(), target.to_string()))
            .copied()
            .unwrap_or(false)
    }

    pub fn get(&self, source: &str, target: &str, table: &str) -> Snapshot {
        self.entries
            .get(&(source.to_string(), target.to_string(), table.to_string()))
            .cloned()
            .unwrap_or_else(Snapshot::nothing_applied)
    }

    pub fn set(&mut self, source: &str, target: &str, table: &str, snap: Snapshot) {
        self.entries.insert(
            (source.to_string(), target.to_string(), table.to_string()),
            snap,
        );
    }

    pub fn mark_loaded(&mut self, source: &str, target: &str, loaded: bool) {
        self.loaded
            .insert((source.to_string(), target.to_string()), loaded);
    }

    /// Forget a pair after an error, so the next round re-reads what the target really has.
    pub fn invalidate(&mut self, source: &str, target: &str) {
        self.mark_loaded(source, target, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Snapshot::parse("10:20:12,15").unwrap().xmin(), 10);
        assert_eq!(Snapshot::parse("1:1:").unwrap().xmin(), 1);
        assert!(Snapshot::parse("1:1").is_none());
        assert!(Snapshot::parse("1:x:").is_none());
        assert!(Snapshot::parse("1:2:3,'").is_none());
        assert!(Snapshot::parse("'; drop table x; --:1:").is_none());
    }

    #[test]
    fn cache_defaults_to_nothing_applied() {
        let mut c = ProgressCache::default();
        assert_eq!(c.get("a", "b", "t"), Snapshot::nothing_applied());
        c.set("a", "b", "t", Snapshot::parse("5:9:").unwrap());
        assert_eq!(c.get("a", "b", "t").xmin(), 5);
        assert!(!c.is_loaded("a", "b"));
        c.mark_loaded("a", "b", true);
        assert!(c.is_loaded("a", "b"));
        c.invalidate("a", "b");
        assert!(!c.is_loaded("a", "b"));
    }
}
