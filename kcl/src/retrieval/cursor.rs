//! [`Cursor`]: where a shard was left, and the one place that turns received Kinesis records
//! into the user records to deliver (deaggregation, the per-sub-record hash-range filter, and
//! the skip of everything at or below the last delivered position). Polling and enhanced
//! fan-out both read through it, so both deliver exactly the same records.

use std::cmp::Ordering;

use aggregation_proto::{DeaggregatedRecord, Deaggregator, HashRange, Outcome, ReceivedRecord};

use super::sequence::{Position, compare_sequence_numbers};

/// One shard's read position (see the fetcher's module docs for how a source resumes from it).
pub(crate) struct Cursor {
    deaggregator: Deaggregator,
    /// The sequence number of the last Kinesis record received: every sub-record of a Kinesis
    /// record is handled in the same step, so that record was dealt with entirely.
    pub(crate) resume_at: Option<String>,
    /// The (sequence, sub-sequence) of the last user record delivered, or the checkpoint of
    /// `AfterSequence` before anything was delivered. Every user record at or below it is
    /// skipped.
    pub(crate) floor: Option<Position>,
}

/// What [`Cursor::take`] made of a list of Kinesis records.
pub(crate) struct Taken {
    /// The user records to deliver, in order.
    pub(crate) records: Vec<DeaggregatedRecord>,
    /// User records at or below the floor, dropped.
    pub(crate) skipped: usize,
    /// Sub-records outside the shard's hash range, dropped.
    pub(crate) filtered: usize,
}

impl Cursor {
    /// A cursor that filters to `hash_range` (if given) and skips at or below `floor`.
    pub(crate) fn new(hash_range: Option<HashRange>, floor: Option<Position>) -> Self {
        let mut deaggregator = Deaggregator::new();
        if let Some(range) = hash_range {
            deaggregator = deaggregator.hash_range(range);
        }
        Self {
            deaggregator,
            resume_at: None,
            floor,
        }
    }

    /// The sequence number a new read should start at (`AT_SEQUENCE_NUMBER`): the last Kinesis
    /// record received, else the floor's; the skip drops what was delivered already.
    pub(crate) fn restart_at(&self) -> Option<&str> {
        self.resume_at.as_deref().or(self
            .floor
            .as_ref()
            .map(|floor| floor.sequence_number.as_str()))
    }

    /// Deaggregates, filters and skips `records`, and moves the position past them.
    pub(crate) fn take(&mut self, records: Vec<ReceivedRecord>) -> Taken {
        let mut out = Vec::with_capacity(records.len());
        let (mut skipped, mut filtered) = (0, 0);
        let last_sequence_number = records
            .last()
            .and_then(|record| record.sequence_number.as_deref())
            .map(str::to_owned);
        for record in records {
            let first = out.len();
            let order = match (&self.floor, record.sequence_number.as_deref()) {
                (Some(floor), Some(sequence_number)) => Some(compare_sequence_numbers(
                    sequence_number,
                    &floor.sequence_number,
                )),
                _ => None,
            };
            // The record moves into its user records: no copy, no extra reference counts.
            match self.deaggregator.deaggregate_owned_into(record, &mut out) {
                Ok(Outcome::Aggregated { filtered: n, .. }) => filtered += n,
                Ok(_) => {}
                // This deaggregator is lenient (the KCL's rules): corrupt input comes back whole.
                Err(error) => tracing::error!(%error, "a lenient deaggregator failed"),
            }
            let (Some(floor), Some(order)) = (&self.floor, order) else {
                continue;
            };
            let keep_from = match order {
                Ordering::Less => out.len(),
                Ordering::Greater => first,
                Ordering::Equal => out
                    .iter()
                    .skip(first)
                    .position(|user| {
                        user.sub_sequence_number().unwrap_or(0) > floor.sub_sequence_number
                    })
                    .map_or(out.len(), |offset| first + offset),
            };
            skipped += keep_from - first;
            out.drain(first..keep_from);
        }
        if let Some(sequence_number) = last_sequence_number {
            self.resume_at = Some(sequence_number);
        }
        if let Some(last) = out.last()
            && let Some(sequence_number) = last.sequence_number()
        {
            self.floor = Some(Position {
                sequence_number: sequence_number.to_owned(),
                sub_sequence_number: last.sub_sequence_number().unwrap_or(0),
            });
        }
        Taken {
            records: out,
            skipped,
            filtered,
        }
    }
}
