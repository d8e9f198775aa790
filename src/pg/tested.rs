//! The PostgreSQL majors drover's tests run against (10 to 18, see tests/versions.rs): an
//! older server is named by `check` as a problem, since nothing there has been tried.

/// `server_version_num` of the oldest tested major.
pub const OLDEST_TESTED: i32 = 100_000;
/// The newest tested major.
pub const NEWEST_TESTED_MAJOR: i32 = 18;

/// The problem text for a server older than the tested range, None when it is in range (or
/// newer: a newer major is not refused).
pub fn untested(version_num: i32) -> Option<String> {
    (version_num < OLDEST_TESTED).then(|| {
        format!(
            "PostgreSQL {} to {NEWEST_TESTED_MAJOR} are tested; {} is older: upgrade the server \
             before replicating with drover",
            OLDEST_TESTED / 10_000,
            major(version_num)
        )
    })
}

/// The major as PostgreSQL names it: `9.6` before 10, `15` from 10 on.
fn major(version_num: i32) -> String {
    if version_num >= 100_000 {
        (version_num / 10_000).to_string()
    } else {
        format!("{}.{}", version_num / 10_000, version_num / 100 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_than_10_is_named_with_the_tested_range() {
        assert_eq!(
            untested(90_624).as_deref(),
            Some(
                "PostgreSQL 10 to 18 are tested; 9.6 is older: upgrade the server before \
                 replicating with drover"
            )
        );
        assert_eq!(
            untested(80_423).map(|p| p.contains("; 8.4 is older")),
            Some(true)
        );
        assert_eq!(untested(100_023), None);
        assert_eq!(untested(180_004), None);
        assert_eq!(untested(190_000), None);
    }
}
