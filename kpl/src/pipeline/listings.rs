//! The ListShards calls in flight, one task per stream refresh: started with the stream's
//! demand level, bounded by `list_shards_timeout` (the client layer sets no bound), and
//! answered as a new map or an error. A task that panics answers as a failed refresh of its
//! stream, so the refresh state never waits on a task that is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tracing::Instrument;

use super::shard_map::ShardMap;
use crate::client::{ErrorClass, KinesisApi, KinesisError, ListShards, ShardListing, StreamId};

/// A finished listing: the stream's index, the demand level it served, and the map or error.
pub(super) type Listed = (usize, u64, Result<ShardMap, KinesisError>);

/// ListShards tasks in flight.
#[derive(Default)]
pub(super) struct Listings {
    tasks: JoinSet<Listed>,
    /// The stream and demand level of each task, to answer for a task that panicked.
    started: HashMap<Id, (usize, u64)>,
}

impl Listings {
    /// Lists stream `id` (index `index`) for demand `level`, within `limit`.
    pub(super) fn start(
        &mut self,
        api: Arc<dyn KinesisApi>,
        index: usize,
        id: Arc<StreamId>,
        level: u64,
        limit: Duration,
    ) {
        let span = tracing::debug_span!("list_shards", stream = %id);
        let task = self.tasks.spawn(
            async move {
                // The producer routes to open shards only: closed ones are pages for nothing.
                let listing = api.list_shards(&id, &ShardListing::Open);
                let result = match tokio::time::timeout(limit, listing).await {
                    Err(_) => Err(KinesisError::timeout("ListShards", limit)),
                    Ok(listing) => listing.and_then(|shards| {
                        let map = ShardMap::from_listing(&shards);
                        if map.shards.is_empty() {
                            Err(KinesisError::new(
                                "ListShards",
                                ErrorClass::Transient,
                                "NoOpenShards",
                                format!("stream {id} has no open shard"),
                            ))
                        } else {
                            Ok(map)
                        }
                    }),
                };
                (index, level, result)
            }
            .instrument(span),
        );
        self.started.insert(task.id(), (index, level));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next finished listing; `None` when none is in flight.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a finished task not taken stays in the set).
    pub(super) async fn next(&mut self) -> Option<Listed> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((task, listed)) => {
                    self.started.remove(&task);
                    return Some(listed);
                }
                Err(error) => {
                    let Some((index, level)) = self.started.remove(&error.id()) else {
                        continue;
                    };
                    return Some((
                        index,
                        level,
                        Err(KinesisError::new(
                            "ListShards",
                            ErrorClass::Transient,
                            "TaskFailed",
                            format!("the refresh task failed: {error}"),
                        )),
                    ));
                }
            }
        }
    }
}
