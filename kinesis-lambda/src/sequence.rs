//! Kinesis sequence numbers compared as the numbers they are.
//!
//! They are decimal strings of up to 128 digits (more than `u128` holds), so they are compared
//! by length, then digit by digit, after leading zeros.

use std::cmp::Ordering;

/// Whether `text` is a non-empty string of ASCII digits.
pub(crate) fn is_sequence_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Compares two sequence numbers numerically (both must pass [`is_sequence_number`]).
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_by_value_not_by_text() {
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(compare("010", "10"), Ordering::Equal);
        assert_eq!(
            compare(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Ordering::Less
        );
        assert_eq!(compare("100", "99"), Ordering::Greater);
    }

    #[test]
    fn accepts_only_digits() {
        assert!(is_sequence_number("0123"));
        assert!(!is_sequence_number(""));
        assert!(!is_sequence_number("12a"));
        assert!(!is_sequence_number("-1"));
    }
}
