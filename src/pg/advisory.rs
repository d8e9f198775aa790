//! Keys of drover's advisory locks: FNV-1a of a purpose prefix and a sync's name, so they are
//! stable across versions and daemons, and locks of different purposes never collide.

/// The advisory-lock key for `prefix` (e.g. `drover:sync:`) and `name`.
pub fn key(prefix: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.bytes().chain(name.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_of_prefix_and_name() {
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(super::key("", ""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(
            super::key("drover:sync:", "s"),
            super::key("drover:round:", "s")
        );
    }
}
