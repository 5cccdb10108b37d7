//! The ready queue of one stream: Kinesis records cleared by their shard's rate limit (and the
//! ordering rule), waiting for a PutRecords call; and how a call's batch is cut from it.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::record::{Outgoing, PendingRecord};

/// Records cleared to send, with their total size.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// The earliest due time of the items (kept so the dispatch checks need no scan).
    min_due: Option<Instant>,
}

impl ReadyQueue {
    pub(crate) fn push(&mut self, outgoing: Outgoing) {
        self.bytes += outgoing.size();
        self.min_due = Some(self.min_due.map_or(outgoing.due, |d| d.min(outgoing.due)));
        self.items.push_back(outgoing);
    }

    fn recompute_due(&mut self) {
        self.min_due = self.items.iter().map(|o| o.due).min();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub(crate) fn pop_front(&mut self) -> Option<Outgoing> {
        let outgoing = self.items.pop_front()?;
        self.bytes -= outgoing.size();
        self.recompute_due();
        Some(outgoing)
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Outgoing> {
        self.items.iter()
    }

    /// Whether a full batch is waiting.
    pub(crate) fn full(&self, max_records: usize, max_bytes: usize) -> bool {
        self.items.len() >= max_records || self.bytes >= max_bytes
    }

    /// The earliest due time of what is waiting.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.min_due
    }

    /// Cuts the next PutRecords batch from the front.
    pub(crate) fn take_batch(&mut self, max_records: usize, max_bytes: usize) -> Vec<Outgoing> {
        let (count, bytes) = batch_len(
            self.items.iter().map(Outgoing::size),
            max_records,
            max_bytes,
        );
        self.bytes -= bytes;
        let batch = self.items.drain(..count).collect();
        self.recompute_due();
        batch
    }

    /// Everything waiting, leaving the queue empty (a map change re-routes it).
    pub(crate) fn drain_members(&mut self, into: &mut Vec<PendingRecord>) {
        self.bytes = 0;
        self.min_due = None;
        for outgoing in self.items.drain(..) {
            into.extend(outgoing.members);
        }
    }

    /// Drops the members `keep` refuses (the expiry sweep), packing the rest again. Returns
    /// the targets of Kinesis records that went entirely (their lanes counted them as in
    /// flight).
    pub(crate) fn retain_records(
        &mut self,
        keep: &mut impl FnMut(&PendingRecord) -> bool,
        aggregation: Option<aggregation_proto::AggregatorConfig>,
        expired: &mut Vec<PendingRecord>,
    ) -> Vec<super::record::Target> {
        let mut dropped_lanes = Vec::new();
        if !self
            .items
            .iter()
            .any(|o| o.members.iter().any(|m| !keep(m)))
        {
            return dropped_lanes;
        }
        let mut rebuilt = VecDeque::new();
        for outgoing in self.items.drain(..) {
            let target = outgoing.target.clone();
            let kept = super::lanes::retain_outgoing(outgoing, keep, aggregation, expired);
            if kept.is_empty() {
                dropped_lanes.push(target);
            }
            rebuilt.extend(kept);
        }
        self.bytes = rebuilt.iter().map(Outgoing::size).sum();
        self.items = rebuilt;
        self.recompute_due();
        dropped_lanes
    }
}

/// How many of the records with these sizes (in queue order) go into the next PutRecords
/// call, and their total size: at most `max_records`, at most `max_bytes`, and at least one.
pub(crate) fn batch_len(
    sizes: impl Iterator<Item = usize>,
    max_records: usize,
    max_bytes: usize,
) -> (usize, usize) {
    let mut count = 0;
    let mut bytes = 0;
    for size in sizes {
        if count == max_records || (count > 0 && bytes + size > max_bytes) {
            break;
        }
        count += 1;
        bytes += size;
    }
    (count, bytes)
}

#[cfg(test)]
mod tests {
    use super::batch_len;
    use crate::config::{DEFAULT_BATCH_BYTES, PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS};

    #[test]
    fn batches_stop_at_500_records() {
        let sizes = std::iter::repeat_n(100, 1_200);
        assert_eq!(
            batch_len(sizes, PUT_RECORDS_MAX_RECORDS, PUT_RECORDS_MAX_BYTES),
            (500, 50_000)
        );
    }

    #[test]
    fn batches_stop_before_their_byte_limit() {
        let mib = 1024 * 1024;
        // Five 1 MiB records fill the default 5 MiB exactly; the sixth waits.
        let sizes = std::iter::repeat_n(mib, 8);
        assert_eq!(
            batch_len(sizes, PUT_RECORDS_MAX_RECORDS, DEFAULT_BATCH_BYTES),
            (5, 5 * mib)
        );
        // The service's limit, 10 MiB.
        let sizes = std::iter::repeat_n(mib, 12);
        assert_eq!(
            batch_len(sizes, PUT_RECORDS_MAX_RECORDS, PUT_RECORDS_MAX_BYTES),
            (10, 10 * mib)
        );
        let sizes = [51_200; 200].into_iter();
        let (count, bytes) = batch_len(sizes, PUT_RECORDS_MAX_RECORDS, DEFAULT_BATCH_BYTES);
        assert_eq!(count, DEFAULT_BATCH_BYTES / 51_200);
        assert!(bytes <= DEFAULT_BATCH_BYTES);
    }

    #[test]
    fn a_record_over_the_call_limit_goes_alone() {
        let ten_mib = 10 * 1024 * 1024;
        let sizes = [100, ten_mib, 100];
        let first = batch_len(sizes.into_iter(), 500, DEFAULT_BATCH_BYTES);
        assert_eq!(first, (1, 100));
        let second = batch_len(sizes[1..].iter().copied(), 500, DEFAULT_BATCH_BYTES);
        assert_eq!(second, (1, ten_mib));
    }

    #[test]
    fn a_batch_holds_at_least_one_record() {
        assert_eq!(batch_len([10, 10].into_iter(), 500, 5), (1, 10));
        assert_eq!(batch_len(std::iter::empty(), 500, 5), (0, 0));
    }
}
