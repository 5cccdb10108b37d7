//! Shard maps: starting refreshes (the calls are [`super::listings`]), taking their answers, installing a new map (everything held
//! is routed again, in arrival order), and settling aggregates that landed on another shard
//! than predicted (by default every record of such an aggregate is sent again to the shard that
//! owns it; see [`MisroutedRecords`]).

use aggregation_proto::KinesisRecord;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ledger::Resolution;
use super::listings::Listed;
use super::record::{AttemptError, PendingRecord};
use super::refresh::Finished;
use super::shard_map::ShardMap;
use super::stream::Unsettled;
use super::task::Pipeline;
use crate::client::ErrorClass;
use crate::config::MisroutedRecords;
use crate::error::FailureReason;

impl Pipeline {
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

    pub(super) fn on_refresh(&mut self, (index, level, result): Listed) {
        let now = Instant::now();
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        match result {
            Ok(map) => {
                let finished = stream.refresh.finish(level, true, now);
                if !stream.router.has_map() || !map.same_shards(&stream.router.map) {
                    debug!(stream = %stream.id, shards = map.shards.len(), "shard map changed");
                    self.install(index, map, now);
                } else if !self.streams[index].waiting_for_map.is_empty() {
                    let waiting = std::mem::take(&mut self.streams[index].waiting_for_map);
                    for member in waiting {
                        self.route(index, member, now);
                    }
                }
                self.settle_unsettled(index, finished == Finished::Current, now);
                let stream = &mut self.streams[index];
                if stream
                    .hold
                    .is_some_and(|held| stream.refresh.satisfies(held))
                {
                    stream.hold = None;
                }
            }
            Err(error) => {
                stream.refresh.finish(level, false, now);
                warn!(
                    stream = %stream.id,
                    %error,
                    failures = stream.refresh.failures(),
                    "shard map refresh failed; retrying with backoff"
                );
                // Sending with a stale map beats stalling until every record expires.
                stream.hold = None;
                if self.config.ordered && !stream.unsettled.is_empty() {
                    // Aggregates that landed on a shard this map does not know: with the hold
                    // lifted, later records of their keys would go first. Their records go
                    // again now, in front of their lanes (some may be stored twice).
                    self.settle_unsettled(index, true, now);
                }
                let stream = &mut self.streams[index];
                if error.class() == ErrorClass::NotFound {
                    // No such stream: no map will come, and no put could store these. Listed
                    // again only when a record for it needs a map.
                    stream.refresh.park(now);
                    let waiting = std::mem::take(&mut stream.waiting_for_map);
                    let reason = FailureReason::Rejected {
                        code: error.code().into(),
                        message: error.message().into(),
                    };
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

    /// Replaces stream `index`'s map: everything not in flight is routed again against it, in
    /// arrival order. With order kept, nothing is sent until the calls made under the old map
    /// have settled.
    pub(super) fn install(&mut self, index: usize, map: ShardMap, now: Instant) {
        let displaced = self.streams[index].router.install(map, now);
        self.route_again(index, displaced, now);
    }

    /// Sends stream `index` without a map (see `Router::install_unmapped`), everything held
    /// routed again as by [`install`](Self::install).
    pub(super) fn install_unmapped(&mut self, index: usize, now: Instant) {
        let displaced = self.streams[index].router.install_unmapped(now);
        self.route_again(index, displaced, now);
    }

    /// Routes `displaced` (what the old map held), the ready queue and the records waiting for
    /// a map again, in arrival order, behind a barrier when order is kept.
    fn route_again(&mut self, index: usize, mut displaced: Vec<PendingRecord>, now: Instant) {
        let ordered = self.config.ordered;
        let stream = &mut self.streams[index];
        stream.ready.drain_members(&mut displaced);
        displaced.append(&mut stream.waiting_for_map);
        if ordered {
            stream.barrier = stream.calls_in_flight;
        }
        displaced.sort_by_key(|m| m.sequence);
        for member in displaced {
            self.route(index, member, now);
        }
    }

    /// Settles the aggregates waiting for a map that knows where they landed. With a current
    /// map that still does not know the shard (it closed meanwhile), every record goes again.
    fn settle_unsettled(&mut self, index: usize, current: bool, now: Instant) {
        let unsettled = std::mem::take(&mut self.streams[index].unsettled);
        for entry in unsettled {
            let known = self.streams[index]
                .router
                .map
                .position(&entry.shard_id)
                .is_some();
            if known || current {
                self.settle_landed(index, entry, now);
            } else {
                self.streams[index].unsettled.push(entry);
            }
        }
    }

    /// Settles an aggregate stored whole on `shard_id`: when that shard owns every record of
    /// it, all of them count as stored there; otherwise a record that shard owns counts as
    /// stored there under [`MisroutedRecords::ResendOutOfRange`], and every other record
    /// (every record, by default) is sent again to the shard that owns it.
    pub(super) fn settle_landed(&mut self, index: usize, landed: Unsettled, now: Instant) {
        let Unsettled {
            outgoing,
            shard_id,
            sequence_number,
            positions,
            expired_hash_keys,
        } = landed;
        let (shard_id, sequence_number) = (&shard_id, &sequence_number);
        let policy = self.config.misrouted_records;
        let ordered = self.config.ordered;
        let range = {
            let router = &self.streams[index].router;
            router
                .map
                .position(shard_id)
                .map(|i| router.map.shards[i].range)
        };
        let error = AttemptError::new(
            "Misrouted",
            format!(
                "stored on {shard_id} after a reshard, outside the hash range of some of its records; sent again to the shards that own them"
            ),
        );
        // An aggregate whose every record the landing shard owns (built for a child just
        // merged into it, say) is where it belongs: every consumer reads it once as it is.
        let all_owned = range.is_some_and(|r| {
            outgoing
                .members
                .iter()
                .map(|member| member.hash_key)
                .chain(expired_hash_keys.iter().copied())
                .all(|hash_key| r.contains(hash_key))
        });
        let mut resend: Vec<PendingRecord> = Vec::new();
        let kinesis_bytes = KinesisRecord::size(&outgoing.record);
        let (mut stored, mut stored_bytes) = (0, 0);
        for (position, mut member) in positions.into_iter().zip(outgoing.members) {
            let owned = range.is_some_and(|r| r.contains(member.hash_key));
            if owned && (all_owned || policy == MisroutedRecords::ResendOutOfRange) {
                stored += 1;
                stored_bytes += member.size();
                self.resolve(
                    Some(index),
                    member,
                    Resolution::Stored {
                        shard_id: shard_id.clone(),
                        sequence_number: sequence_number.clone(),
                        sub_sequence_number: Some(position),
                    },
                );
                continue;
            }
            if let Some(last) = member.attempts.last_mut() {
                last.error_code = Some(error.code.clone());
                last.error_message = Some(error.message.clone());
            }
            member.possibly_duplicated = true;
            member.ready_since = now;
            resend.push(member);
        }
        if stored > 0 {
            // The Kinesis record is stored, whoever of its records it counts for.
            self.metrics.kinesis_record_put(
                &self.streams[index].metrics,
                stored,
                stored_bytes,
                kinesis_bytes,
            );
        }
        if resend.is_empty() {
            return;
        }
        let stream = &mut self.streams[index];
        self.metrics
            .error(&stream.metrics, "Misrouted", resend.len());
        self.metrics
            .possibly_duplicated(&stream.metrics, resend.len());
        if ordered {
            // Older than anything their lanes hold now.
            let unowned = stream.router.route_first(resend, None, now);
            stream.waiting_for_map.extend(unowned);
        } else {
            for member in resend {
                self.route(index, member, now);
            }
        }
    }
}
