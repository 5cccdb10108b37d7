//! Sequence numbers: decimal strings of up to 128 digits, compared as numbers (more digits
//! than a `u128` holds, so never parsed). Here because every reader needs them: the consumer,
//! Lambda functions, tools.

use std::cmp::Ordering;

/// Most digits a Kinesis sequence number has.
pub const MAX_SEQUENCE_NUMBER_DIGITS: usize = 128;

/// Compares two decimal sequence numbers as the integers they spell: leading zeros are
/// ignored, then the longer number is the larger, then equal lengths compare digit by digit.
///
/// Never parses into a fixed-width integer, so sequence numbers of any length compare right.
/// Both arguments are expected to be decimal digits ([`is_sequence_number`]); anything else
/// still gets a consistent (total) order but not a meaningful one.
///
/// ```
/// use std::cmp::Ordering;
/// use aggregation_proto::compare_sequence_numbers;
/// assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
/// assert_eq!(compare_sequence_numbers("007", "7"), Ordering::Equal);
/// ```
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether `value` can be a Kinesis sequence number: 1 to [`MAX_SEQUENCE_NUMBER_DIGITS`]
/// ASCII digits.
///
/// ```
/// use aggregation_proto::is_sequence_number;
/// assert!(is_sequence_number("49590338271490256608559692538361571095921575989136588898"));
/// assert!(!is_sequence_number("TRIM_HORIZON"));
/// assert!(!is_sequence_number(""));
/// ```
pub fn is_sequence_number(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_SEQUENCE_NUMBER_DIGITS
        && value.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_not_lexicographic() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("10", "9"), Ordering::Greater);
        assert_eq!(compare_sequence_numbers("100", "99"), Ordering::Greater);
        assert_eq!(compare_sequence_numbers("12", "12"), Ordering::Equal);
        assert_eq!(compare_sequence_numbers("12", "13"), Ordering::Less);
    }

    #[test]
    fn leading_zeros_are_ignored() {
        assert_eq!(compare_sequence_numbers("0010", "10"), Ordering::Equal);
        assert_eq!(compare_sequence_numbers("0009", "10"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("0", "000"), Ordering::Equal);
        assert_eq!(compare_sequence_numbers("0", "1"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("", "0"), Ordering::Equal);
    }

    #[test]
    fn longer_than_u128() {
        // u128::MAX has 39 digits; real sequence numbers have 56 and may grow to 128.
        let max = "9".repeat(MAX_SEQUENCE_NUMBER_DIGITS);
        let below = format!("{}8", "9".repeat(MAX_SEQUENCE_NUMBER_DIGITS - 1));
        assert_eq!(compare_sequence_numbers(&below, &max), Ordering::Less);
        assert_eq!(compare_sequence_numbers(&max, &below), Ordering::Greater);
        let real = "49590338271490256608559692538361571095921575989136588898";
        let next = "49590338271490256608559692538361571095921575989136588899";
        assert_eq!(compare_sequence_numbers(real, next), Ordering::Less);
        // Differing only far beyond u128's range.
        let a = format!("1{}", "0".repeat(60));
        let b = format!("1{}1", "0".repeat(59));
        assert_eq!(compare_sequence_numbers(&a, &b), Ordering::Less);
        assert!(is_sequence_number(&max));
        assert!(!is_sequence_number(&format!("{max}0")));
    }

    #[test]
    fn order_matches_big_integers() {
        // Every pair of these, compared as strings, must order like the numbers they spell.
        let values = ["0", "1", "9", "10", "11", "99", "100", "101", "999", "1000"];
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                assert_eq!(compare_sequence_numbers(a, b), i.cmp(&j), "{a} vs {b}");
                let padded = format!("000{a}");
                assert_eq!(
                    compare_sequence_numbers(&padded, b),
                    i.cmp(&j),
                    "{padded} vs {b}"
                );
            }
        }
    }

    #[test]
    fn validity() {
        assert!(is_sequence_number("0"));
        assert!(!is_sequence_number("-1"));
        assert!(!is_sequence_number("1 "));
        assert!(!is_sequence_number("SHARD_END"));
        assert!(!is_sequence_number("１")); // a full-width digit is not ASCII
    }
}
