//! Leases for the stream's shards: shard sync at start and on a timer ([`sync_shards`], with
//! the Java KCL's rules in [`plan`]), and child leases when a parent ends ([`child_lease`]).

mod plan;

use kinesis_common::{KinesisError, ListShards, ShardListing};
use tracing::{debug, info};

use crate::InitialPosition;
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease, LeaseError};
use crate::retrieval::{ChildShard, StreamId};

/// ListShards or a lease read or write failed during a sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardSyncError {
    /// ListShards failed: check the stream name or ARN, the region and the credentials.
    #[error("ListShards on {stream} failed ({code})")]
    ListShards {
        /// The stream.
        stream: String,
        /// The service's error code, or a description of the client-side failure.
        code: String,
        /// Whether retrying can help (throttling, a server or network error).
        retryable: bool,
        /// The failed call, classified (boxed: it is large, and rare).
        #[source]
        source: Box<KinesisError>,
    },
    /// The lease table could not be read or written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

impl ShardSyncError {
    pub(crate) fn list_shards(stream: &StreamId, error: KinesisError) -> Self {
        Self::ListShards {
            stream: stream.to_string(),
            code: error.code().to_owned(),
            retryable: error.is_retryable(),
            source: Box::new(error),
        }
    }

    /// Whether retrying the sync can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ListShards { retryable, .. } => *retryable,
            Self::Lease(error) => error.is_retryable(),
        }
    }
}

/// Creates the leases the Java KCL's rules call for (see [`plan`]); returns how many.
pub(crate) async fn sync_shards<A: ListShards + ?Sized>(
    api: &A,
    stream: &StreamId,
    store: &dyn LeaseStore,
    initial: &InitialPosition,
) -> Result<usize, ShardSyncError> {
    let shards = api
        .list_shards(stream, &ShardListing::All)
        .await
        .map_err(|error| ShardSyncError::list_shards(stream, error))?;
    let leases = store.list().await?;
    let at_initial = match initial {
        InitialPosition::AtTimestamp(at) if leases.is_empty() => Some(
            api.list_shards(stream, &ShardListing::AtTimestamp(*at))
                .await
                .map_err(|error| ShardSyncError::list_shards(stream, error))?,
        ),
        _ => None,
    };
    let new = plan::new_leases(&shards, at_initial.as_deref(), &leases, initial);
    let mut created = 0;
    for lease in &new {
        if store.create_if_absent(lease).await? {
            debug!(lease_key = %lease.lease_key, checkpoint = %lease.checkpoint, "lease created");
            created += 1;
        }
    }
    if created > 0 {
        info!(created, shards = shards.len(), "shard sync created leases");
    }
    Ok(created)
}

/// The lease of a child shard, created when its parent ends: at `TRIM_HORIZON`, with every
/// parent the stream names (as the Java KCL's `createLeaseForChildShard`).
pub(crate) fn child_lease(child: &ChildShard) -> Lease {
    let mut lease = Lease::new(child.shard_id.clone(), Checkpoint::TrimHorizon);
    lease.parent_shard_ids = child.parent_shard_ids.clone();
    lease.hash_key_range = Some((
        child.hash_range.start().to_string(),
        child.hash_range.end().to_string(),
    ));
    lease
}
