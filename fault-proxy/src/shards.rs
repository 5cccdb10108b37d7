//! The sink's shard layout: hash-key ranges, shard lookup and per-shard sequence numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use md5::{Digest, Md5};

/// The hash key of a partition key: its MD5 digest read as a big-endian unsigned 128-bit integer.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
    u128::from_be_bytes(digest)
}

/// `[start, end]` hash-key ranges of `shards` shards that split the 128-bit hash space evenly,
/// the way the service's CreateStream does: shard `i` starts at `i * floor(2^128 / shards)`
/// and ends just before the next one; the last shard ends at `2^128 - 1`. (kinesis-mock
/// divides `2^128 - 1` instead, which differs only for a power-of-two shard count: its
/// boundaries are then a few keys lower.)
///
/// Returns nothing for zero shards.
pub fn even_hash_ranges(shards: u32) -> Vec<(u128, u128)> {
    match shards {
        0 => return Vec::new(),
        // 2^128 / 1 does not fit in a u128.
        1 => return vec![(0, u128::MAX)],
        _ => {}
    }
    let n = u128::from(shards);
    // floor(2^128 / n) without overflowing: 2^128 = u128::MAX + 1.
    let width = u128::MAX / n + u128::from(u128::MAX % n == n - 1);
    (0..n)
        .map(|i| {
            let start = i * width;
            let end = if i == n - 1 {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            (start, end)
        })
        .collect()
}

/// The shard id Kinesis gives shard number `index`: `shardId-` and 12 digits.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// One shard of the sink.
#[derive(Debug)]
pub(crate) struct SinkShard {
    pub(crate) id: String,
    pub(crate) start: u128,
    pub(crate) end: u128,
    /// Decimal digits every sequence number of this shard starts with.
    seq_prefix: String,
    /// The last sequence counter handed out.
    seq: AtomicU64,
}

impl SinkShard {
    /// Appends the next sequence number of this shard to `out`.
    ///
    /// Sequence numbers are `49`, the shard index as 10 digits and a counter as 20 digits (32
    /// digits in all, never a leading zero), so they increase within a shard both as numbers
    /// and as strings.
    pub(crate) fn write_next_sequence_number(&self, out: &mut Vec<u8>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.write_sequence_number(out, n);
    }

    /// Appends the sequence number with counter `n` to `out` (the shard's `n`-th record has
    /// counter `n`; counter 0 is [`starting_sequence_number`](Self::starting_sequence_number)).
    pub(crate) fn write_sequence_number(&self, out: &mut Vec<u8>, mut n: u64) {
        out.extend_from_slice(self.seq_prefix.as_bytes());
        // 20 zero-padded digits (u64::MAX has 20), without going through `fmt`.
        let mut digits = [b'0'; 20];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
    }

    /// The counter of `sequence_number` if it is one of this shard's (`None` for any other
    /// string, including other shards' sequence numbers).
    pub(crate) fn sequence_counter(&self, sequence_number: &str) -> Option<u64> {
        let counter = sequence_number.strip_prefix(self.seq_prefix.as_str())?;
        if counter.len() != 20 || !counter.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // 20 digits may exceed u64::MAX: such a counter lies past every record anyway.
        Some(counter.parse::<u64>().unwrap_or(u64::MAX))
    }

    /// Makes `n` the last counter handed out, so later PutRecords answers continue after the
    /// read sink's pre-generated records.
    pub(crate) fn set_last_counter(&self, n: u64) {
        self.seq.store(n, Ordering::Relaxed);
    }

    /// The sequence number before the shard's first record.
    pub(crate) fn starting_sequence_number(&self) -> String {
        format!("{}{:020}", self.seq_prefix, 0)
    }
}

/// The sink's shards, in hash-key order.
#[derive(Debug)]
pub(crate) struct ShardMap {
    shards: Vec<SinkShard>,
}

impl ShardMap {
    pub(crate) fn even(shards: u32) -> Self {
        let shards = even_hash_ranges(shards)
            .into_iter()
            .zip(0u32..)
            .map(|((start, end), index)| SinkShard {
                id: shard_id(index),
                start,
                end,
                seq_prefix: format!("49{index:010}"),
                seq: AtomicU64::new(0),
            })
            .collect();
        Self { shards }
    }

    pub(crate) fn shards(&self) -> &[SinkShard] {
        &self.shards
    }

    /// The shard whose range holds `hash_key`.
    pub(crate) fn shard_for(&self, hash_key: u128) -> Option<&SinkShard> {
        let index = self.shards.partition_point(|shard| shard.end < hash_key);
        self.shards.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_hash_space() {
        for n in [1u32, 2, 3, 4, 7, 10, 64, 1000] {
            let ranges = even_hash_ranges(n);
            assert_eq!(ranges.len(), n as usize);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[ranges.len() - 1].1, u128::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "{n} shards: gap or overlap");
            }
        }
        assert!(even_hash_ranges(0).is_empty());
    }

    #[test]
    fn ranges_match_create_stream() {
        // Values CreateStream gives a 2-, 4- and 3-shard stream.
        assert_eq!(even_hash_ranges(2)[1].0, 1u128 << 127);
        let four = even_hash_ranges(4);
        assert_eq!(four[1].0, 85070591730234615865843651857942052864);
        assert_eq!(four[0].1, 85070591730234615865843651857942052863);
        let three = even_hash_ranges(3);
        assert_eq!(three[1].0, 113427455640312821154458202477256070485);
        assert_eq!(three[2].0, 226854911280625642308916404954512140970);
    }

    #[test]
    fn md5_hash_key() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(
            partition_key_hash("a"),
            0x0cc175b9c0f1b6a831c399e269772661u128
        );
    }

    #[test]
    fn lookup_and_sequence_numbers() {
        let map = ShardMap::even(4);
        assert_eq!(
            map.shard_for(0).map(|s| s.id.as_str()),
            Some("shardId-000000000000")
        );
        assert_eq!(
            map.shard_for(u128::MAX).map(|s| s.id.as_str()),
            Some("shardId-000000000003")
        );
        let boundary = map.shards()[2].start;
        assert_eq!(map.shard_for(boundary).map(|s| s.start), Some(boundary));
        assert_eq!(
            map.shard_for(boundary - 1).map(|s| s.end),
            Some(boundary - 1)
        );

        let shard = &map.shards()[2];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        shard.write_next_sequence_number(&mut a);
        shard.write_next_sequence_number(&mut b);
        let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        assert_eq!(a.len(), 32);
        assert!(a < b && shard.starting_sequence_number() < a, "{a} {b}");
        assert!(a.starts_with("490000000002"));
        assert!(
            a.ends_with("00000000000000000001") && b.ends_with("02"),
            "{a} {b}"
        );
    }
}
