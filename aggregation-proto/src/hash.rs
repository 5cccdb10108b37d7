//! Hash keys: where Kinesis sends a record, and which shard a record belongs to.

use md5::{Digest, Md5};

use crate::error::{HashRangeError, RecordError};

/// The hash key Kinesis derives from a partition key: its MD5 digest (of the UTF-8 bytes) read
/// as a big-endian unsigned 128-bit integer.
///
/// ```
/// use aggregation_proto::partition_key_hash;
/// assert_eq!(partition_key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
/// ```
pub fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Parses an explicit hash key: a decimal integer in `0..=2^128-1`, digits only.
///
/// # Errors
/// [`RecordError::InvalidExplicitHashKey`] saying what is wrong.
///
/// ```
/// use aggregation_proto::parse_explicit_hash_key;
/// assert_eq!(parse_explicit_hash_key("340282366920938463463374607431768211455").unwrap(), u128::MAX);
/// assert!(parse_explicit_hash_key("340282366920938463463374607431768211456").is_err());
/// assert!(parse_explicit_hash_key("-1").is_err());
/// ```
pub fn parse_explicit_hash_key(value: &str) -> Result<u128, RecordError> {
    let invalid = |reason| RecordError::InvalidExplicitHashKey {
        value: value.chars().take(64).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("but it is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("but it has a character that is not a digit 0-9"));
    }
    value
        .parse::<u128>()
        .map_err(|_| invalid("but it is greater than 2^128-1"))
}

/// An inclusive range of hash keys, as a shard's `HashKeyRange` describes it.
///
/// ```
/// use aggregation_proto::HashRange;
/// let lower_half = HashRange::from_decimal("0", "170141183460469231731687303715884105727").unwrap();
/// assert!(lower_half.contains(0));
/// assert!(!lower_half.contains(u128::MAX));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRange {
    start: u128,
    end: u128,
}

impl HashRange {
    /// Every hash key: the range of a stream's only shard.
    pub const ALL: HashRange = HashRange {
        start: 0,
        end: u128::MAX,
    };

    /// The range `start..=end`.
    ///
    /// # Errors
    /// [`HashRangeError`] if `start > end`.
    pub fn new(start: u128, end: u128) -> Result<Self, HashRangeError> {
        if start > end {
            return Err(HashRangeError {
                start: start.to_string(),
                end: end.to_string(),
                reason: "the start is greater than the end",
            });
        }
        Ok(Self { start, end })
    }

    /// The range between two decimal strings, as ListShards returns them.
    ///
    /// # Errors
    /// [`HashRangeError`] if either bound is not a decimal 128-bit integer or `start > end`.
    pub fn from_decimal(start: &str, end: &str) -> Result<Self, HashRangeError> {
        let parse = |value: &str| {
            parse_explicit_hash_key(value).map_err(|_| HashRangeError {
                start: start.to_owned(),
                end: end.to_owned(),
                reason: "a bound is not a decimal integer from 0 to 2^128-1",
            })
        };
        Self::new(parse(start)?, parse(end)?)
    }

    /// The first hash key in the range.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// The last hash key in the range (inclusive).
    pub fn end(&self) -> u128 {
        self.end
    }

    /// Whether `hash_key` lies in the range.
    pub fn contains(&self, hash_key: u128) -> bool {
        self.start <= hash_key && hash_key <= self.end
    }
}
