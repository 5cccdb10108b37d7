//! Which open shard owns which hash keys, from ListShards.

use std::sync::Arc;

use aggregation_proto::HashRange;
use aws_sdk_kinesis::Client;

use crate::stream::StreamId;

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

/// ListShards failed or returned something unusable.
#[derive(Debug, thiserror::Error)]
#[error("ListShards on {stream} failed: {reason}")]
pub(crate) struct ShardMapError {
    stream: String,
    reason: String,
}

impl ShardMapError {
    pub(crate) fn task(error: tokio::task::JoinError) -> Self {
        Self {
            stream: String::new(),
            reason: format!("the refresh task failed: {error}"),
        }
    }
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

    /// Lists the stream's open shards, following every page.
    pub(crate) async fn fetch(client: &Client, stream: &StreamId) -> Result<Self, ShardMapError> {
        let error = |reason: String| ShardMapError {
            stream: stream.to_string(),
            reason,
        };
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = match &next_token {
                // With a token, the stream must not be named again.
                Some(token) => client.list_shards().next_token(token),
                None => stream.apply(
                    client.list_shards(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                ),
            };
            let page = request
                .send()
                .await
                .map_err(|e| error(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string()))?;
            for shard in page.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none());
                if !open {
                    continue;
                }
                let range = shard.hash_key_range().ok_or_else(|| {
                    error(format!("shard {} has no hash key range", shard.shard_id()))
                })?;
                let range =
                    HashRange::from_decimal(range.starting_hash_key(), range.ending_hash_key())
                        .map_err(|e| error(e.to_string()))?;
                shards.push(Shard {
                    id: shard.shard_id().into(),
                    range,
                });
            }
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        shards.sort_by_key(|s| s.range.start());
        Ok(Self { shards })
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
