//! The chaos test's verifier: pure functions over what the producer was told and what the
//! workers logged (`kinesis-cat consume --json --events`), so each check can be shown to catch
//! its violation on a hand-made log.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A user record as the producer made it: its key, its number within the key (production
/// order) and what its receipt said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Partition key.
    pub key: String,
    /// Position in the key's production order, from 0.
    pub n: u64,
    /// When `send` was called (Unix microseconds).
    pub sent_us: u64,
    /// The receipt said stored.
    pub stored: bool,
    /// The receipt said it may be stored more than once.
    pub possibly_duplicated: bool,
}

/// A holding: one processor of one worker process (`worker` names the process, so a
/// restarted worker is another name).
pub type HoldingId = (String, u64);

/// One user record a worker processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The worker process.
    pub worker: String,
    /// The holding within that process.
    pub holding: u64,
    /// The shard it was read from.
    pub shard: String,
    /// Kinesis sequence number.
    pub sequence: String,
    /// Sub-sequence number (0 for a plain record).
    pub sub: u64,
    /// Partition key.
    pub key: String,
    /// Its number within the key, from its data.
    pub n: u64,
    /// When the batch was handed to the processor (Unix microseconds).
    pub at_us: u64,
}

impl Processed {
    fn holding_id(&self) -> HoldingId {
        (self.worker.clone(), self.holding)
    }
    fn position(&self) -> (&str, u64) {
        (&self.sequence, self.sub)
    }
}

/// A processor lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The processor started from this checkpoint.
    Initialize(String),
    /// This checkpoint was written.
    Checkpoint(String),
    /// The lease was lost.
    LeaseLost,
    /// SHARD_END was written.
    ShardEnded,
    /// The worker gave the shard back.
    ShutdownRequested,
}

/// An event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The worker process.
    pub worker: String,
    /// The holding within that process.
    pub holding: u64,
    /// The shard.
    pub shard: String,
    /// What happened.
    pub kind: EventKind,
    /// When (Unix microseconds).
    pub at_us: u64,
}

/// Everything the verifier looks at. `processed` and `events` keep each worker's line order.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    /// Every record the producer sent.
    pub produced: Vec<Produced>,
    /// Every record processing, in each worker's output order.
    pub processed: Vec<Processed>,
    /// Every processor event, in each worker's output order.
    pub events: Vec<Event>,
    /// Parent shards of each shard that has any.
    pub parents: HashMap<String, Vec<String>>,
}

/// What the verifier found: violations (empty when the run is correct) and the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Each broken promise, one line each.
    pub violations: Vec<String>,
    /// Records whose receipt said stored.
    pub stored: usize,
    /// Records processed at least once whose receipt did not say stored (a lost answer, then
    /// an expired or failed retry).
    pub stored_without_receipt: usize,
    /// Record processings in all.
    pub processings: usize,
    /// Processings of a position already processed (in an earlier holding).
    pub consumer_duplicates: usize,
    /// Records stored at more than one position (by the producer's retries).
    pub producer_duplicates: usize,
    /// Holdings that started on a shard another worker had processed before.
    pub failovers: usize,
}

/// Compares decimal sequence numbers (no leading zeros): by length, then digits.
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A checkpoint's stored form (`TRIM_HORIZON`, ..., or `sequence/sub`) as a position; `None`
/// for a sentinel.
fn checkpoint_position(checkpoint: &str) -> Option<(&str, u64)> {
    let (sequence, sub) = checkpoint.split_once('/')?;
    Some((sequence, sub.parse().ok()?))
}

fn compare_position(a: (&str, u64), b: (&str, u64)) -> Ordering {
    compare_sequence(a.0, b.0).then(a.1.cmp(&b.1))
}

/// Runs every check.
pub fn verify(log: &RunLog) -> Verdict {
    let mut verdict = Verdict {
        processings: log.processed.len(),
        ..Verdict::default()
    };
    check_delivery(log, &mut verdict);
    check_order(log, &mut verdict);
    check_duplicates(log, &mut verdict);
    check_exclusive(log, &mut verdict);
    verdict
}

/// Every stored record processed; nothing processed that was never sent.
fn check_delivery(log: &RunLog, verdict: &mut Verdict) {
    let sent: HashMap<(&str, u64), &Produced> = log
        .produced
        .iter()
        .map(|p| ((p.key.as_str(), p.n), p))
        .collect();
    let processed: HashSet<(&str, u64)> = log
        .processed
        .iter()
        .map(|p| (p.key.as_str(), p.n))
        .collect();
    for record in &log.produced {
        if record.stored {
            verdict.stored += 1;
            if !processed.contains(&(record.key.as_str(), record.n)) {
                verdict.violations.push(format!(
                    "lost: {}#{} was stored (receipt) and never processed",
                    record.key, record.n
                ));
            }
        } else if processed.contains(&(record.key.as_str(), record.n)) {
            verdict.stored_without_receipt += 1;
        }
    }
    for record in &log.processed {
        if !sent.contains_key(&(record.key.as_str(), record.n)) {
            verdict.violations.push(format!(
                "invented: {}#{} processed by {} on {} at {}/{} was never sent",
                record.key, record.n, record.worker, record.shard, record.sequence, record.sub
            ));
        }
    }
}

/// Per key: production order within each holding, and every processing on a parent shard
/// before any on its children (in time and in production order).
///
/// A record the producer stored twice (its answer was lost, it was sent again) comes again
/// after the records stored between its two copies: a repeat of a record already processed in
/// the holding is a duplicate (counted and checked in [`check_duplicates`]), not disorder; a
/// record processed for the first time must come after every one before it.
fn check_order(log: &RunLog, verdict: &mut Verdict) {
    let mut seen: HashMap<(HoldingId, &str), (u64, HashSet<u64>)> = HashMap::new();
    for record in &log.processed {
        let (highest, numbers) = seen
            .entry((record.holding_id(), record.key.as_str()))
            .or_insert_with(|| (0, HashSet::new()));
        let repeat = numbers.contains(&record.n);
        if !repeat && !numbers.is_empty() && record.n < *highest {
            verdict.violations.push(format!(
                "order: {} processed {}#{} after #{} in holding {}/{} of {}",
                record.worker,
                record.key,
                record.n,
                highest,
                record.worker,
                record.holding,
                record.shard
            ));
        }
        numbers.insert(record.n);
        *highest = (*highest).max(record.n);
    }
    // Per (shard, key): the time span and the numbers processed.
    let mut spans: HashMap<(&str, &str), (u64, u64, HashSet<u64>)> = HashMap::new();
    for record in &log.processed {
        let span = spans
            .entry((record.shard.as_str(), record.key.as_str()))
            .or_insert_with(|| (u64::MAX, 0, HashSet::new()));
        span.0 = span.0.min(record.at_us);
        span.1 = span.1.max(record.at_us);
        span.2.insert(record.n);
    }
    let mut edges: Vec<(&String, &String)> = log
        .parents
        .iter()
        .flat_map(|(child, parents)| parents.iter().map(move |parent| (parent, child)))
        .collect();
    edges.sort();
    for (parent, child) in edges {
        let mut keys: Vec<&str> = spans
            .keys()
            .filter(|(shard, _)| shard == child)
            .map(|(_, key)| *key)
            .collect();
        keys.sort_unstable();
        for key in keys {
            let (Some(p), Some(c)) = (
                spans.get(&(parent.as_str(), key)),
                spans.get(&(child.as_str(), key)),
            ) else {
                continue;
            };
            if p.1 > c.0 {
                verdict.violations.push(format!(
                    "order: {key} was processed on child {child} at {} before parent {parent} finished ({})",
                    c.0, p.1
                ));
            }
            // Records stored on the parent whose answer was lost may be stored again on the
            // child: those are duplicates. Every other child record comes after the parent's.
            let parent_last = p.2.iter().max().copied().unwrap_or(0);
            if let Some(first_new) = c.2.iter().filter(|n| !p.2.contains(n)).min()
                && *first_new < parent_last
            {
                verdict.violations.push(format!(
                    "order: {key}#{first_new} on child {child} precedes #{parent_last} on parent {parent} in production"
                ));
            }
        }
    }
}

/// Duplicates only after the checkpoint a new holding started from, that checkpoint never
/// behind one already written, and the producer's duplicates flagged on their receipts.
fn check_duplicates(log: &RunLog, verdict: &mut Verdict) {
    // Events per holding, and the holdings of each shard in start order.
    let mut starts: HashMap<HoldingId, (u64, &str, &str)> = HashMap::new();
    let mut checkpoints: Vec<(u64, &str, HoldingId, &str)> = Vec::new();
    for event in &log.events {
        let id = (event.worker.clone(), event.holding);
        match &event.kind {
            EventKind::Initialize(checkpoint) => {
                starts.insert(id, (event.at_us, event.shard.as_str(), checkpoint.as_str()));
            }
            EventKind::Checkpoint(checkpoint) => {
                checkpoints.push((event.at_us, event.shard.as_str(), id, checkpoint.as_str()));
            }
            _ => {}
        }
    }
    // Each holding's start must not be behind a checkpoint written before it started.
    for (id, (started, shard, from)) in &starts {
        let from_position = checkpoint_position(from);
        for (at, cp_shard, cp_holding, checkpoint) in &checkpoints {
            if cp_shard != shard || at > started || cp_holding == id {
                continue;
            }
            let behind = match (from_position, checkpoint_position(checkpoint)) {
                (Some(from), Some(written)) => compare_position(from, written) == Ordering::Less,
                (None, Some(_)) => *from != "SHARD_END",
                _ => false,
            };
            if behind {
                verdict.violations.push(format!(
                    "checkpoint went back: holding {}/{} of {shard} started from {from}, but {checkpoint} was written before by {}/{}",
                    id.0, id.1, cp_holding.0, cp_holding.1
                ));
            }
        }
    }
    let mut seen: HashMap<(&str, &str, u64), HoldingId> = HashMap::new();
    for record in &log.processed {
        let id = record.holding_id();
        let slot = (record.shard.as_str(), record.sequence.as_str(), record.sub);
        // Nothing at or before where the holding started.
        if let Some((_, _, from)) = starts.get(&id)
            && let Some(from) = checkpoint_position(from)
            && compare_position(record.position(), from) != Ordering::Greater
        {
            verdict.violations.push(format!(
                "duplicate: {}/{} processed {}/{} on {}, at or before its start checkpoint {}/{}",
                record.worker,
                record.holding,
                record.sequence,
                record.sub,
                record.shard,
                from.0,
                from.1
            ));
        }
        match seen.get(&slot) {
            Some(first) if *first == id => verdict.violations.push(format!(
                "duplicate: {}/{} processed {}/{} on {} twice in one holding",
                record.worker, record.holding, record.sequence, record.sub, record.shard
            )),
            Some(_) => verdict.consumer_duplicates += 1,
            None => {
                seen.insert(slot, id);
            }
        }
    }
    // Where each record was stored: (shard, sequence, sub-sequence).
    type Positions<'a> = HashSet<(&'a str, &'a str, u64)>;
    let mut positions: HashMap<(&str, u64), Positions<'_>> = HashMap::new();
    for record in &log.processed {
        positions
            .entry((record.key.as_str(), record.n))
            .or_default()
            .insert((record.shard.as_str(), record.sequence.as_str(), record.sub));
    }
    let flagged: HashMap<(&str, u64), bool> = log
        .produced
        .iter()
        .map(|p| ((p.key.as_str(), p.n), p.possibly_duplicated || !p.stored))
        .collect();
    let mut doubled: Vec<(&str, u64)> = positions
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(record, _)| *record)
        .collect();
    doubled.sort_unstable();
    for record in doubled {
        verdict.producer_duplicates += 1;
        if flagged.get(&record) == Some(&false) {
            verdict.violations.push(format!(
                "duplicate: {}#{} is stored at {} positions but its receipt did not say possibly_duplicated",
                record.0,
                record.1,
                positions[&record].len()
            ));
        }
    }
}

/// No two holdings processing the same shard at overlapping times.
fn check_exclusive(log: &RunLog, verdict: &mut Verdict) {
    let mut spans: BTreeMap<(&str, HoldingId), (u64, u64)> = BTreeMap::new();
    for record in &log.processed {
        let span = spans
            .entry((record.shard.as_str(), record.holding_id()))
            .or_insert((record.at_us, record.at_us));
        span.0 = span.0.min(record.at_us);
        span.1 = span.1.max(record.at_us);
    }
    let mut per_shard: BTreeMap<&str, Vec<(u64, u64, HoldingId)>> = BTreeMap::new();
    for ((shard, id), (from, to)) in spans {
        per_shard.entry(shard).or_default().push((from, to, id));
    }
    for (shard, mut holdings) in per_shard {
        holdings.sort();
        for pair in holdings.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.0 < a.1 {
                verdict.violations.push(format!(
                    "overlap: {shard} processed by {}/{} until {} and by {}/{} from {}",
                    a.2.0, a.2.1, a.1, b.2.0, b.2.1, b.0
                ));
            }
            if a.2.0 != b.2.0 {
                verdict.failovers += 1;
            }
        }
    }
}

/// Worst time from `send` to the first processing, over the records stored (microseconds).
pub fn worst_lag_us(log: &RunLog) -> u64 {
    let first = first_processing(log);
    log.produced
        .iter()
        .filter_map(|p| {
            first
                .get(&(p.key.as_str(), p.n))
                .map(|at| at.saturating_sub(p.sent_us))
        })
        .max()
        .unwrap_or(0)
}

fn first_processing(log: &RunLog) -> HashMap<(&str, u64), u64> {
    let mut first: HashMap<(&str, u64), u64> = HashMap::new();
    for record in &log.processed {
        let at = first
            .entry((record.key.as_str(), record.n))
            .or_insert(u64::MAX);
        *at = (*at).min(record.at_us);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produced(key: &str, n: u64) -> Produced {
        Produced {
            key: key.into(),
            n,
            sent_us: n * 10,
            stored: true,
            possibly_duplicated: false,
        }
    }

    fn processed(
        worker: &str,
        holding: u64,
        shard: &str,
        seq: u64,
        key: &str,
        n: u64,
        at: u64,
    ) -> Processed {
        Processed {
            worker: worker.into(),
            holding,
            shard: shard.into(),
            sequence: (1000 + seq).to_string(),
            sub: 0,
            key: key.into(),
            n,
            at_us: at,
        }
    }

    fn event(worker: &str, holding: u64, shard: &str, kind: EventKind, at: u64) -> Event {
        Event {
            worker: worker.into(),
            holding,
            shard: shard.into(),
            kind,
            at_us: at,
        }
    }

    /// Two records of key k on shard s0, read by w1, which dies after checkpointing the
    /// first; w2 takes over from that checkpoint and reads the second again; then a child.
    fn good_log() -> RunLog {
        RunLog {
            produced: (0..4).map(|n| produced("k", n)).collect(),
            processed: vec![
                processed("w1", 1, "s0", 0, "k", 0, 100),
                processed("w1", 1, "s0", 1, "k", 1, 200),
                processed("w2", 1, "s0", 1, "k", 1, 300),
                processed("w2", 1, "s0", 2, "k", 2, 310),
                processed("w2", 2, "s1", 0, "k", 3, 400),
            ],
            events: vec![
                event(
                    "w1",
                    1,
                    "s0",
                    EventKind::Initialize("TRIM_HORIZON".into()),
                    90,
                ),
                event("w1", 1, "s0", EventKind::Checkpoint("1000/0".into()), 150),
                event("w2", 1, "s0", EventKind::Initialize("1000/0".into()), 290),
                event("w2", 1, "s0", EventKind::Checkpoint("1002/0".into()), 320),
                event("w2", 1, "s0", EventKind::ShardEnded, 330),
                event(
                    "w2",
                    2,
                    "s1",
                    EventKind::Initialize("TRIM_HORIZON".into()),
                    390,
                ),
            ],
            parents: HashMap::from([("s1".into(), vec!["s0".into()])]),
        }
    }

    fn violations(log: &RunLog) -> Vec<String> {
        verify(log).violations
    }

    fn assert_caught(log: &RunLog, what: &str) {
        let found = violations(log);
        assert!(
            found.iter().any(|v| v.starts_with(what)),
            "expected a {what:?} violation, got {found:?}"
        );
    }

    #[test]
    fn a_correct_run_passes_and_is_counted() {
        let verdict = verify(&good_log());
        assert_eq!(verdict.violations, Vec::<String>::new());
        assert_eq!(verdict.stored, 4);
        assert_eq!(verdict.processings, 5);
        assert_eq!(verdict.consumer_duplicates, 1);
        assert_eq!(verdict.producer_duplicates, 0);
        assert_eq!(verdict.failovers, 1);
    }

    #[test]
    fn catches_a_lost_record() {
        let mut log = good_log();
        log.processed.retain(|p| p.n != 2);
        assert_caught(&log, "lost");
    }

    #[test]
    fn a_record_without_a_stored_receipt_may_be_missing() {
        let mut log = good_log();
        log.processed.retain(|p| p.n != 2);
        log.produced[2].stored = false;
        assert_eq!(violations(&log), Vec::<String>::new());
    }

    #[test]
    fn catches_an_invented_record() {
        let mut log = good_log();
        log.processed.push(processed("w2", 1, "s0", 3, "k", 9, 315));
        assert_caught(&log, "invented");
    }

    #[test]
    fn catches_disorder_within_a_holding() {
        let mut log = good_log();
        log.processed[0].n = 1;
        log.processed[1].n = 0;
        assert_caught(&log, "order");
    }

    #[test]
    fn catches_a_child_processed_before_its_parent_finished() {
        let mut log = good_log();
        log.processed[4].at_us = 305;
        assert_caught(&log, "order");
    }

    #[test]
    fn catches_a_child_record_produced_before_a_parent_record() {
        let mut log = good_log();
        // #1 read only on the child, while the parent went on to #2.
        log.processed.retain(|p| p.n != 1);
        log.processed
            .insert(2, processed("w2", 2, "s1", 1, "k", 1, 399));
        let found = violations(&log);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("k#1 on child s1 precedes #2 on parent"),
            "{found:?}"
        );
    }

    #[test]
    fn a_replayed_aggregate_is_a_duplicate_not_disorder() {
        let mut log = good_log();
        // #1 and #2 stored again after #2 (a lost answer), flagged; and again on the child.
        log.processed
            .insert(4, processed("w2", 1, "s0", 6, "k", 1, 311));
        log.processed
            .insert(5, processed("w2", 1, "s0", 7, "k", 2, 311));
        log.processed
            .insert(6, processed("w2", 2, "s1", 0, "k", 2, 399));
        log.processed[7].sequence = "1001".into();
        log.produced[1].possibly_duplicated = true;
        log.produced[2].possibly_duplicated = true;
        let verdict = verify(&log);
        assert_eq!(verdict.violations, Vec::<String>::new());
        assert_eq!(verdict.producer_duplicates, 2);
        // A new record out of order is still caught.
        log.processed
            .insert(6, processed("w2", 1, "s0", 8, "k", 0, 312));
        log.processed[6].sub = 1;
        assert_caught(&log, "order");
    }

    #[test]
    fn catches_a_duplicate_within_a_holding() {
        let mut log = good_log();
        log.processed
            .insert(4, processed("w2", 1, "s0", 2, "k", 2, 311));
        assert_caught(&log, "duplicate");
    }

    #[test]
    fn catches_a_duplicate_before_the_start_checkpoint() {
        let mut log = good_log();
        // w2 starts from 1000/0 but processes 1000/0 again.
        log.processed
            .insert(2, processed("w2", 1, "s0", 0, "k", 0, 295));
        assert_caught(&log, "duplicate");
    }

    #[test]
    fn catches_a_checkpoint_that_went_back() {
        let mut log = good_log();
        // w1 had written 1001/0 before w2 started from 1000/0.
        log.events[1].kind = EventKind::Checkpoint("1001/0".into());
        assert_caught(&log, "checkpoint went back");
    }

    #[test]
    fn catches_an_unflagged_producer_duplicate() {
        let mut log = good_log();
        // #2 stored twice on s0 at different positions.
        log.processed
            .insert(4, processed("w2", 1, "s0", 5, "k", 2, 312));
        assert_caught(&log, "duplicate");
        log.produced[2].possibly_duplicated = true;
        let verdict = verify(&log);
        assert_eq!(verdict.violations, Vec::<String>::new());
        assert_eq!(verdict.producer_duplicates, 1);
    }

    #[test]
    fn catches_overlapping_holdings() {
        let mut log = good_log();
        log.processed[1].at_us = 305;
        assert_caught(&log, "overlap");
    }

    #[test]
    fn worst_lag() {
        // k#3 sent at 30, processed at 400.
        assert_eq!(worst_lag_us(&good_log()), 370);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence("99", "100"), Ordering::Less);
        assert_eq!(compare_sequence("101", "100"), Ordering::Greater);
    }
}
