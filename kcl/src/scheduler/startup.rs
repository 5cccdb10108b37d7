//! Starting a worker: the lease table and the first shard sync, each retried with backoff while
//! it fails for a reason that can pass (throttling, a server or network error, a table still
//! being created), so a worker started during a DynamoDB or Kinesis hiccup starts late instead
//! of not at all. A failure retrying cannot fix (no such stream, access denied) is returned.

use std::future::Future;

use kinesis_common::{Backoff, ErrorChain, Jitter, ListShards};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::{SchedulerError, WorkerConfig};
use crate::lease::store::LeaseStore;
use crate::retrieval::StreamId;
use crate::shard_sync::sync_shards;

/// Creates the table (if missing) and runs the first shard sync. `Ok(false)` when `shutdown`
/// fired first.
pub(crate) async fn start<A: ListShards + ?Sized>(
    api: &A,
    stream: &StreamId,
    store: &dyn LeaseStore,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<bool, SchedulerError> {
    let created = retry("creating the lease table", config, shutdown, || async {
        store.create_table().await.map_err(|error| {
            let retryable = error.is_retryable();
            (SchedulerError::from(error), retryable)
        })
    })
    .await?;
    if created.is_none() {
        return Ok(false);
    }
    let synced = retry("the first shard sync", config, shutdown, || async {
        sync_shards(api, stream, store, &config.initial)
            .await
            .map_err(|error| {
                let retryable = error.is_retryable();
                (SchedulerError::from(error), retryable)
            })
    })
    .await?;
    Ok(synced.is_some())
}

/// Runs `step` until it succeeds (`Some`), fails for good (`Err`), or `shutdown` fires
/// (`None`).
async fn retry<T, F, Fut>(
    what: &'static str,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<Option<T>, SchedulerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, (SchedulerError, bool)>>,
{
    let mut backoff = Backoff::new(config.retry_min, config.retry_max, Jitter::Stretch);
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(None),
            outcome = step() => outcome,
        };
        match outcome {
            Ok(value) => return Ok(Some(value)),
            Err((error, false)) => return Err(error),
            Err((error, true)) => {
                let wait = backoff.next_delay();
                warn!(
                    step = what,
                    attempt = backoff.attempts(),
                    retry_in = ?wait,
                    error = %ErrorChain(&error),
                    "worker start failed; retrying"
                );
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
