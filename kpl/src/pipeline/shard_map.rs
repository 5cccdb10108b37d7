//! Which open shard owns which hash keys, from ListShards.

use std::sync::Arc;

use aggregation_proto::HashRange;

/// One open shard.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) id: Arc<str>,
    pub(crate) range: HashRange,
}

/// The open shards of a stream, sorted by the start of their hash range.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardMap {
    pub(crate) shards: Vec<Shard>,
}

impl ShardMap {
    /// The index of the shard owning `hash_key`; `None` while the open shards do not cover it
    /// (between a reshard and the next refresh).
    pub(crate) fn lookup(&self, hash_key: u128) -> Option<usize> {
        let after = self.shards.partition_point(|s| s.range.start() <= hash_key);
        let index = after.checked_sub(1)?;
        self.shards[index].range.contains(hash_key).then_some(index)
    }

    /// The index of the shard with this id.
    pub(crate) fn position(&self, shard_id: &str) -> Option<usize> {
        self.shards.iter().position(|s| &*s.id == shard_id)
    }

    /// The open shards among `shards` (a ListShards answer).
    pub(crate) fn from_listing(shards: &[kinesis_common::Shard]) -> Self {
        let mut open: Vec<Shard> = shards
            .iter()
            .filter(|s| s.open)
            .map(|s| Shard {
                id: s.shard_id.as_str().into(),
                range: s.hash_range,
            })
            .collect();
        open.sort_by_key(|s| s.range.start());
        Self { shards: open }
    }

    /// Whether both maps name the same shards.
    pub(crate) fn same_shards(&self, other: &Self) -> bool {
        self.shards.len() == other.shards.len()
            && self
                .shards
                .iter()
                .zip(&other.shards)
                .all(|(a, b)| a.id == b.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(bounds: &[(u128, u128)]) -> ShardMap {
        ShardMap {
            shards: bounds
                .iter()
                .enumerate()
                .map(|(i, &(start, end))| Shard {
                    id: format!("shardId-{i:012}").into(),
                    range: HashRange::new(start, end).expect("ordered"),
                })
                .collect(),
        }
    }

    #[test]
    fn lookup_finds_the_owning_shard() {
        let half = u128::MAX / 2;
        let m = map(&[(0, half), (half + 1, u128::MAX)]);
        assert_eq!(m.lookup(0), Some(0));
        assert_eq!(m.lookup(half), Some(0));
        assert_eq!(m.lookup(half + 1), Some(1));
        assert_eq!(m.lookup(u128::MAX), Some(1));
    }

    #[test]
    fn lookup_reports_gaps() {
        let m = map(&[(0, 10), (20, 30)]);
        assert_eq!(m.lookup(15), None);
        assert_eq!(m.lookup(31), None);
        assert_eq!(ShardMap::default().lookup(5), None);
    }
}
