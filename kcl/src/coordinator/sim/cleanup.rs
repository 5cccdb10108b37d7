//! Lease cleanup in the simulation: every worker process runs the library's own cleanup loop
//! ([`crate::cleanup::run`], the one a scheduler's worker runs) through its faulty store, with
//! ListShards answered from the simulated stream. The deletion rule (a `SHARD_END` lease goes
//! once every child's lease started and its own parents' leases are gone) has no pure function
//! to call: it lives in `cleanup::clean`, which also repairs missing children through
//! ListShards, so the simulation runs the whole loop rather than a copy of the rule.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregation_proto::HashRange;
use kinesis_common::{BoxFuture, KinesisError, ListShards, Shard, ShardListing, StreamId};
use tokio_util::sync::CancellationToken;

use super::{World, lock};
use crate::InitialPosition;
use crate::consumer::{LatestStarts, ShardContext};
use crate::coordinator::LeaseCoordinator;
use crate::lease::store::LeaseStore;
use crate::metrics::ConsumerMetrics;
use crate::retrieval::RecordsBudget;
use crate::scheduler::{StatusBoard, WorkerConfig};

/// ListShards over the simulated stream: every shard, with its lineage (an answer may hold
/// shards the filter would leave out; the cleanup looks at the lineage itself).
#[derive(Clone)]
pub(super) struct SimShards {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for SimShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimShards").finish_non_exhaustive()
    }
}

impl ListShards for SimShards {
    fn list_shards<'a>(
        &'a self,
        _stream: &'a StreamId,
        _listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        let shards = lock(&self.world)
            .shards
            .iter()
            .map(|(id, shard)| Shard {
                shard_id: id.clone(),
                parent_shard_id: shard.parents.first().cloned(),
                adjacent_parent_shard_id: shard.parents.get(1).cloned(),
                hash_range: HashRange::ALL,
                open: shard.end.is_none(),
            })
            .collect();
        Box::pin(async move { Ok(shards) })
    }
}

/// Starts the cleanup loop of one worker process (every `interval`), stopped by `cancel`.
pub(super) fn start(
    world: Arc<Mutex<World>>,
    store: Arc<dyn LeaseStore>,
    coordinator: LeaseCoordinator,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut config = WorkerConfig::new(InitialPosition::TrimHorizon);
    config.cleanup_interval = interval;
    let context = ShardContext {
        api: SimShards { world },
        fan_out: None,
        stream: StreamId::Name("sim".into()),
        store,
        coordinator,
        config: Arc::new(config),
        metrics: Arc::new(ConsumerMetrics::new("sim")),
        status: Arc::new(StatusBoard::default()),
        latest_starts: Arc::new(LatestStarts::default()),
        budget: RecordsBudget::new(NonZeroUsize::MIN, None),
    };
    tokio::spawn(crate::cleanup::run(context, cancel));
}
