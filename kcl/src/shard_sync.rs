//! Leases for the stream's shards: created for new shards at start and on a timer, and for
//! child shards when their parent ends.

use std::collections::HashSet;

use aws_sdk_kinesis::Client;
use tracing::debug;

use crate::lease::{Checkpoint, Lease, LeaseError, LeaseTable};
use crate::retrieval::{ChildShard, StreamId};
use crate::scheduler::InitialPosition;

/// ListShards or a lease write failed during a sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardSyncError {
    /// ListShards failed.
    #[error("ListShards on {stream} failed: {message}")]
    ListShards {
        /// The stream.
        stream: String,
        /// The SDK's error, with its context.
        message: String,
    },
    /// A lease could not be written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone)]
struct ShardInfo {
    id: String,
    parents: Vec<String>,
    range: Option<(String, String)>,
    open: bool,
}

/// Creates a lease for every shard that has none. New leaf shards start at the initial
/// position; with TRIM_HORIZON or AT_TIMESTAMP, closed ancestors get leases too so history is
/// read parents first. Children of a shard that has a lease start at TRIM_HORIZON.
pub(crate) async fn sync_shards(
    kinesis: &Client,
    stream: &StreamId,
    table: &LeaseTable,
    initial: &InitialPosition,
) -> Result<usize, ShardSyncError> {
    let shards = list_shards(kinesis, stream).await?;
    let existing: HashSet<String> = table
        .list()
        .await?
        .into_iter()
        .map(|l| l.lease_key)
        .collect();
    let known: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut created = 0;
    for shard in &shards {
        if existing.contains(&shard.id) {
            continue;
        }
        let parents_with_leases = shard.parents.iter().any(|p| existing.contains(p));
        let checkpoint = if parents_with_leases {
            Checkpoint::TrimHorizon
        } else {
            match initial {
                // Only the open shards matter when starting at the tip.
                InitialPosition::Latest if !shard.open => continue,
                InitialPosition::Latest => Checkpoint::Latest,
                InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
                InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
            }
        };
        let mut lease = Lease::new(shard.id.clone(), checkpoint);
        // Parents gone from the stream (trimmed) cannot hold their children back.
        lease.parent_shard_ids = shard
            .parents
            .iter()
            .filter(|p| known.contains(p.as_str()))
            .cloned()
            .collect();
        lease.hash_key_range = shard.range.clone();
        if table.create_if_absent(&lease).await? {
            debug!(shard = %shard.id, "lease created");
            created += 1;
        }
    }
    Ok(created)
}

/// Creates leases for the children of a finished shard (from GetRecords' ChildShards).
pub(crate) async fn create_child_leases(
    table: &LeaseTable,
    children: &[ChildShard],
) -> Result<(), LeaseError> {
    for child in children {
        let mut lease = Lease::new(child.shard_id.clone(), Checkpoint::TrimHorizon);
        lease.parent_shard_ids = child.parent_shard_ids.clone();
        lease.hash_key_range = Some((
            child.hash_range.start().to_string(),
            child.hash_range.end().to_string(),
        ));
        table.create_if_absent(&lease).await?;
    }
    Ok(())
}

async fn list_shards(client: &Client, stream: &StreamId) -> Result<Vec<ShardInfo>, ShardSyncError> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = match (&next_token, stream) {
            (Some(token), _) => client.list_shards().next_token(token),
            (None, StreamId::Name(name)) => client.list_shards().stream_name(name),
            (None, StreamId::Arn(arn)) => client.list_shards().stream_arn(arn),
        };
        let page = request
            .send()
            .await
            .map_err(|e| ShardSyncError::ListShards {
                stream: format!("{stream:?}"),
                message: aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
            })?;
        for shard in page.shards() {
            shards.push(ShardInfo {
                id: shard.shard_id().to_owned(),
                parents: shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
                range: shard.hash_key_range().map(|r| {
                    (
                        r.starting_hash_key().to_owned(),
                        r.ending_hash_key().to_owned(),
                    )
                }),
                open: shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none()),
            });
        }
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() {
            return Ok(shards);
        }
    }
}
