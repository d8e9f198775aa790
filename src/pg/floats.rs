//! Float values in a form that compares equal across PostgreSQL majors. With
//! extra_float_digits = 3, PostgreSQL 11 and older print 17 significant digits (`0.1` is
//! `0.100000000000000006`) and 12+ the shortest text that reads back exactly (`0.1`): the
//! same value, different text. Both read back to the same bits, so comparisons that go
//! through text (verify's row hashes, whole-row images) use the bits instead.

/// `float8send(CASE WHEN c = 'NaN' THEN 'NaN' ELSE c END)`: the value's bits, with every NaN
/// made the one NaN that the text 'NaN' reads back as (PostgreSQL treats all NaNs as equal).
/// Sessions pin bytea_output = hex (`pg::connect`), so its text is the same everywhere.
pub fn bits(ty: &str, col: &str) -> String {
    format!("{ty}send(CASE WHEN {col} = 'NaN'::{ty} THEN 'NaN'::{ty} ELSE {col} END)")
}

/// The expression for column `col` of type `type_name` (`format_type`) whose text is the same
/// on every major: floats as their bits, everything else as it is.
pub fn comparable(type_name: &str, col: &str) -> String {
    match type_name {
        "double precision" => bits("float8", col),
        "real" => bits("float4", col),
        _ => col.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_bits_others_as_they_are() {
        assert_eq!(
            comparable("real", "r.\"x\""),
            "float4send(CASE WHEN r.\"x\" = 'NaN'::float4 THEN 'NaN'::float4 ELSE r.\"x\" END)"
        );
        assert_eq!(comparable("numeric", "\"n\""), "\"n\"");
    }
}
