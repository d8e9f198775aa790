//! Source snapshots (`txid_current_snapshot()` text, `xmin:xmax:xip,...`) as progress markers.

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

    /// Transactions listed as running in this snapshot.
    fn xip(&self) -> impl Iterator<Item = i64> + '_ {
        (self.0.split(':').nth(2).unwrap_or_default().split(',')).filter_map(|x| x.parse().ok())
    }

    /// Transaction `xid` (committed) is visible in this snapshot, as
    /// `txid_visible_in_snapshot` says.
    pub fn sees(&self, xid: i64) -> bool {
        xid < self.xmin() || (xid < self.xmax() && !self.xip().any(|x| x == xid))
    }

    /// Every transaction visible in this snapshot is visible in `later` (snapshots of one
    /// source taken in that order): `later` started no earlier, and each transaction it
    /// lists as running was running here too or had not started.
    pub fn within(&self, later: &Snapshot) -> bool {
        let xmax = self.xmax();
        self.xmax() <= later.xmax()
            && later
                .xip()
                .filter(|x| *x < xmax)
                .all(|x| self.xip().any(|y| y == x))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The snapshot as an SQL expression of type txid_snapshot.
    pub fn sql(&self) -> String {
        format!("'{}'::txid_snapshot", self.0)
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
    fn within_follows_visibility() {
        let s = |t: &str| Snapshot::parse(t).unwrap();
        let nothing = Snapshot::nothing_applied();
        assert!(nothing.within(&s("10:20:12,15")));
        assert!(s("10:20:12,15").within(&s("10:20:12,15")));
        // 12 finished meanwhile, 20..25 started and 22 still runs.
        assert!(s("10:20:12,15").within(&s("15:25:15,22")));
        // 13 was finished (visible) in the first: it cannot run again in the second.
        assert!(!s("10:20:12,15").within(&s("13:25:13")));
        // Taken earlier.
        assert!(!s("15:25:15,22").within(&s("10:20:12,15")));
        assert!(Snapshot::below(12).within(&s("12:20:")));
        assert!(!s("12:20:").within(&Snapshot::below(12)));
    }

    #[test]
    fn sees_like_txid_visible_in_snapshot() {
        let s = Snapshot::parse("10:20:12,15").unwrap();
        assert!(s.sees(9) && s.sees(13) && s.sees(19));
        assert!(!s.sees(12) && !s.sees(15) && !s.sees(20) && !s.sees(25));
    }
}
