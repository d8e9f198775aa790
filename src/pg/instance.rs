//! This process's instance id: a short random tag, drawn once at start, that ends the
//! `application_name` of every session the process opens (`drover:apply:new #3f9a1c2e`). The
//! lease row records the holder's id, so a daemon that takes a lease over can find and end
//! the sessions of a former holder that froze inside a target transaction (`round::evict`),
//! and only those: another daemon's sessions carry another id.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;

static ID: LazyLock<String> = LazyLock::new(random_id);

/// This process's id: 8 lowercase hex digits.
pub fn id() -> &'static str {
    &ID
}

/// What ends the `application_name` of this process's sessions.
pub fn tag() -> String {
    format!(" #{}", id())
}

/// SQL that is true for a `pg_stat_activity` row of the process whose id is `$1`. An exact
/// suffix comparison, not LIKE: an id read from the catalog is data, never a pattern.
pub const SESSION_OF_SQL: &str = "right(application_name, length($1::text) + 2) = ' #' || $1::text";

/// 32 bits from SipHash under keys the standard library draws from the operating system's
/// random source, mixed with the time and process id.
fn random_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_stable_and_short() {
        assert_eq!(id().len(), 8);
        assert!(id().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id(), id());
        assert_eq!(tag(), format!(" #{}", id()));
    }
}
