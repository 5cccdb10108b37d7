//! Shard maps: starting refreshes (the calls are [`super::listings`]), taking their answers, installing a new map (everything held
//! is routed again, in arrival order), and settling aggregates that landed on another shard
//! than predicted (by default every record of such an aggregate is sent again to the shard that
//! owns it; see [`MisroutedRecords`](crate::config::MisroutedRecords)).

use tokio::time::Instant;
use tracing::warn;

use super::ledger::Resolution;
use super::listings::Listed;

use super::refresh::Finished;
use super::stream::Unsettled;
use super::task::Pipeline;
use crate::client::ErrorClass;
use crate::error::FailureReason;

impl Pipeline {
    // On the pipeline: a listing task needs the API client and the listings set.
    pub(super) fn start_due_refreshes(&mut self, now: Instant) {
        for (index, stream) in self.streams.iter_mut().enumerate() {
            if stream.refresh.due(now) {
                let level = stream.refresh.start();
                self.listings.start(
                    self.api.clone(),
                    index,
                    stream.id.clone(),
                    level,
                    self.config.list_shards_timeout,
                );
            }
        }
    }

    // On the pipeline: routing arms the sweep; a missing stream is answered through the ledger.
    pub(super) fn on_refresh(&mut self, (index, level, result): Listed) {
        let now = Instant::now();
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        match result {
            Ok(map) => {
                let (again, finished) = stream.map_listed(level, map, self.config.ordered, now);
                self.route_all(index, again, now);
                self.settle_unsettled(index, finished == Finished::Current, now);
                self.streams[index].listed();
            }
            Err(error) => {
                stream.listing_failed(level, &error, now);
                if self.config.ordered && !stream.unsettled.is_empty() {
                    // Aggregates that landed on a shard this map does not know: with the hold
                    // lifted, later records of their keys would go first. Their records go
                    // again now, in front of their lanes (some may be stored twice).
                    self.settle_unsettled(index, true, now);
                }
                let stream = &mut self.streams[index];
                if error.class() == ErrorClass::NotFound {
                    // Aggregates that landed on a shard the map did not know wait for a map
                    // that no listing of a deleted stream will give: they are stored where
                    // they landed, and nothing can be sent again.
                    let reason = FailureReason::Rejected {
                        code: error.code().into(),
                        message: error.message().into(),
                    };
                    for landed in stream.take_settleable(true) {
                        self.settle_landing(index, landed, Some(&reason), now);
                    }
                    let stream = &mut self.streams[index];
                    let waiting = stream.not_found(now);
                    for member in waiting {
                        self.resolve(Some(index), member, Resolution::Failed(reason.clone()));
                    }
                } else if !stream.router.is_unmapped()
                    && (!stream.router.has_map() || !error.is_retryable())
                {
                    // Many IAM policies allow PutRecords but not ListShards; a listing may
                    // also fail for long. Waiting for a map would expire every record: send
                    // them alone and let Kinesis route them, until a listing succeeds.
                    warn!(
                        stream = %stream.id,
                        %error,
                        "no shard map: sending records unaggregated, routed by Kinesis, until ListShards succeeds"
                    );
                    self.install_unmapped(index, now);
                }
            }
        }
    }

    /// Sends stream `index` without a map, everything held routed again (see
    /// [`StreamState::install_unmapped`](super::stream::StreamState::install_unmapped)).
    // On the pipeline: routing arms the expiry sweep.
    pub(super) fn install_unmapped(&mut self, index: usize, now: Instant) {
        let again = self.streams[index].install_unmapped(self.config.ordered, now);
        self.route_all(index, again, now);
    }

    /// Settles the aggregates of stream `index` that a map now places (see
    /// [`StreamState::take_settleable`](super::stream::StreamState::take_settleable)).
    // On the pipeline: it settles through the ledger (see `settle_landed`).
    fn settle_unsettled(&mut self, index: usize, current: bool, now: Instant) {
        for entry in self.streams[index].take_settleable(current) {
            self.settle_landed(index, entry, now);
        }
    }

    /// Settles an aggregate that landed on another shard than predicted (see
    /// [`StreamState::settle_landed`](super::stream::StreamState::settle_landed)).
    // On the pipeline: the stored records are answered through the ledger, the others routed
    // again (arming the expiry sweep).
    pub(super) fn settle_landed(&mut self, index: usize, landed: Unsettled, now: Instant) {
        self.settle_landing(index, landed, None, now);
    }

    /// [`settle_landed`](Self::settle_landed); with the stream `gone` (the reason), a record
    /// the landing shard owns counts as stored there and every other one fails with that
    /// reason, possibly stored (nothing can be sent again).
    fn settle_landing(
        &mut self,
        index: usize,
        landed: Unsettled,
        gone: Option<&FailureReason>,
        now: Instant,
    ) {
        let mut settled = self.streams[index].settle_landed(
            landed,
            self.config.misrouted_records,
            self.config.ordered,
            gone.is_some(),
            &self.metrics,
            now,
        );
        if let Some(reason) = gone {
            for member in std::mem::take(&mut settled.route_again) {
                self.resolve(Some(index), member, Resolution::Failed(reason.clone()));
            }
        }
        for (member, resolution) in settled.stored {
            self.resolve(Some(index), member, resolution);
        }
        self.route_all(index, settled.route_again, now);
    }
}
