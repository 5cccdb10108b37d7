//! [`list_shards`]: every shard of a stream, following every page of ListShards.

use aggregation_proto::HashRange;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};

use crate::error::{ErrorClass, KinesisError, classify};
use crate::stream::StreamId;

/// One shard as ListShards describes it. (Not `#[non_exhaustive]`: the workspace's tests and
/// fakes build shards field by field.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard id (`shardId-000000000000`).
    pub shard_id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent_shard_id: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys it owns (while open) or owned.
    pub hash_range: HashRange,
    /// Whether it still takes records (it has no ending sequence number).
    pub open: bool,
}

impl Shard {
    /// An open shard without parents, for tests and fakes.
    pub fn new(shard_id: impl Into<String>, hash_range: HashRange) -> Self {
        Self {
            shard_id: shard_id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_range,
            open: true,
        }
    }

    /// Its parents: none, one (a split) or two (a merge).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent_shard_id
            .as_deref()
            .into_iter()
            .chain(self.adjacent_parent_shard_id.as_deref())
    }
}

/// Which shards to list. (Not `#[non_exhaustive]`: fakes answer each listing exhaustively.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardListing {
    /// Every shard still within the stream's retention, open or closed.
    All,
    /// The open shards only (the `AT_LATEST` filter): what a producer routes to, without the
    /// pages of closed shards a stream that was resharded often keeps for its retention.
    Open,
    /// Every shard whose id sorts after this one (the `AFTER_SHARD_ID` filter): where a closed
    /// shard's children are.
    After(String),
    /// The shards open at this time (the `AT_TIMESTAMP` filter).
    AtTimestamp(std::time::SystemTime),
}

/// Lists the shards of `stream`, following every page. Not bounded in time: callers wrap it in
/// their own timeout.
///
/// # Errors
/// The classified error of the first page that failed, or [`ErrorClass::Malformed`] for a shard
/// without a valid hash-key range.
pub async fn list_shards(
    client: &Client,
    stream: &StreamId,
    listing: &ShardListing,
) -> Result<Vec<Shard>, KinesisError> {
    list_shards_as_sent(client, stream, listing)
        .await?
        .iter()
        .map(|shard| {
            let hash_range = shard
                .hash_key_range()
                .and_then(|r| {
                    HashRange::from_decimal(r.starting_hash_key(), r.ending_hash_key()).ok()
                })
                .ok_or_else(|| {
                    KinesisError::new(
                        OPERATION,
                        ErrorClass::Malformed,
                        "InvalidHashKeyRange",
                        format!("shard {} has no valid hash key range", shard.shard_id()),
                    )
                })?;
            Ok(Shard {
                shard_id: shard.shard_id().to_owned(),
                parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                hash_range,
                open: shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none()),
            })
        })
        .collect()
}

const OPERATION: &str = "ListShards";

/// Like [`list_shards`], with the shards as the SDK describes them (sequence-number ranges
/// included): for tools and tests that need the raw answer.
///
/// # Errors
/// The classified error of the first page that failed.
pub async fn list_shards_as_sent(
    client: &Client,
    stream: &StreamId,
    listing: &ShardListing,
) -> Result<Vec<aws_sdk_kinesis::types::Shard>, KinesisError> {
    let filter = match listing {
        ShardListing::All => None,
        ShardListing::Open => Some(ShardFilter::builder().r#type(ShardFilterType::AtLatest)),
        ShardListing::After(shard_id) => Some(
            ShardFilter::builder()
                .r#type(ShardFilterType::AfterShardId)
                .shard_id(shard_id),
        ),
        ShardListing::AtTimestamp(at) => Some(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from(*at)),
        ),
    }
    .map(|builder| builder.build())
    .transpose()
    .map_err(|error| {
        KinesisError::new(
            OPERATION,
            ErrorClass::InvalidRequest,
            "ConstructionFailure",
            error.to_string(),
        )
    })?;
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // A request names either the stream (and filter) or a next token, never both.
        let request = match next_token.take() {
            Some(token) => client.list_shards().next_token(token),
            None => stream
                .apply(
                    client.list_shards(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                )
                .set_shard_filter(filter.clone()),
        };
        let page = request
            .send()
            .await
            .map_err(|error| classify(OPERATION, error))?;
        shards.extend_from_slice(page.shards());
        match page.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(shards),
        }
    }
}
