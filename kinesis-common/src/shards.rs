//! [`list_shards`]: every shard of a stream, following every page of ListShards: the pager
//! behind [`SdkKinesis`](crate::SdkKinesis), public for tools that hold a bare SDK client.

use aggregation_proto::HashRange;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};

use crate::api::{Shard, ShardListing};
use crate::error::{ErrorClass, KinesisError, classify};
use crate::stream::StreamId;

/// Lists the shards of `stream`, following every page. Not bounded in time: callers wrap it in
/// their own timeout. Retries are the client's as given (an [`SdkKinesis`](crate::SdkKinesis)
/// turned them off).
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
