//! Settlement: what a PutRecords call's outcome means for each Kinesis record of its batch, as a
//! pure function of the batch, the outcome and the time (the backoff's randomness comes in as a
//! function, so tests choose it).
//!
//! - Stored where predicted (or a plain record anywhere: Kinesis routed it by its own hash
//!   key): every member is stored.
//! - An aggregate stored on another shard: [`Decision::Landed`], for the pipeline to settle
//!   against the current shard map (some members may belong to a sibling after a reshard).
//! - A retryable failure (throttling, 5xx, timeout, connection, a missing answer): retried after
//!   a full-jitter backoff; members whose TTL runs out before then fail as expired.
//! - Anything else: every member fails (`Rejected`, or `Throttled` when failing fast).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::record::{AttemptError, Outgoing, PendingRecord, Target};
use crate::client::{ErrorClass, KinesisError, PutResult};
use crate::error::FailureReason;
use kinesis_common::classify_code;

/// How a call ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The service answered, one result per entry (possibly fewer).
    Entries(Vec<PutResult>),
    /// The call failed as a whole.
    Failed(KinesisError),
    /// No answer within the call's timeout: the records may or may not be stored.
    TimedOut(Duration),
    /// The call's task panicked or was aborted: the records may or may not be stored.
    TaskFailed(String),
}

/// A call's outcome.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
    pub(crate) answer: Answer,
}

/// The settings settlement follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettleRules {
    pub(crate) now: Instant,
    pub(crate) ttl: Option<Duration>,
    pub(crate) fail_if_throttled: bool,
}

/// What to do with (part of) one Kinesis record of the batch.
pub(crate) enum Decision {
    /// Every member is stored there.
    Stored {
        outgoing: Outgoing,
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
    },
    /// An aggregate stored on a shard other than the predicted one.
    Landed {
        outgoing: Outgoing,
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
    },
    /// Send again at `at`. `repack`: members were taken out (expired), so the Kinesis record
    /// must be built again from the rest.
    Retry {
        outgoing: Outgoing,
        at: Instant,
        repack: bool,
    },
    /// These members failed for good.
    Failed {
        members: Vec<PendingRecord>,
        reason: FailureReason,
    },
}

/// Everything a call's outcome decided.
#[derive(Default)]
pub(crate) struct Settlement {
    pub(crate) decisions: Vec<Decision>,
    /// One target per Kinesis record of the batch: each gives its lane's in-flight slot back.
    pub(crate) targets: Vec<Target>,
    /// Shards that throttled in this answer, each once.
    pub(crate) throttled_shards: Vec<Arc<str>>,
    /// Landing shards that differ from the prediction (the map may be stale).
    pub(crate) elsewhere: Vec<Arc<str>>,
    /// Failed user-record attempts by error code.
    pub(crate) errors: Vec<(Arc<str>, usize)>,
    /// User records retried.
    pub(crate) retried: usize,
    /// User records whose attempt got no answer (they may be stored twice once retried).
    pub(crate) unknown_fate: usize,
    /// The call got no answer in time.
    pub(crate) timed_out: bool,
}

impl Settlement {
    fn count_error(&mut self, code: &Arc<str>, records: usize) {
        match self.errors.iter_mut().find(|(c, _)| c == code) {
            Some((_, count)) => *count += records,
            None => self.errors.push((code.clone(), records)),
        }
    }

    fn throttled(&mut self, shard_id: &Arc<str>) {
        if !self.throttled_shards.contains(shard_id) {
            self.throttled_shards.push(shard_id.clone());
        }
    }
}

/// What retrying can do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Throttled,
    Transient,
    Never,
}

fn retry_of(class: Option<ErrorClass>) -> Retry {
    match class {
        Some(ErrorClass::Throttled) => Retry::Throttled,
        Some(ErrorClass::Transient) => Retry::Transient,
        _ => Retry::Never,
    }
}

/// A failure of one entry or of the whole call.
struct EntryFailure {
    error: AttemptError,
    retry: Retry,
    /// The answer never came: the record may be stored.
    unknown: bool,
}

/// Settles `batch` (the Kinesis records of one call, in order) against `outcome`.
/// `backoff(attempts)` gives the wait before the next attempt of a record tried that many times.
pub(crate) fn settle(
    batch: Vec<Outgoing>,
    outcome: &CallOutcome,
    rules: SettleRules,
    backoff: &mut dyn FnMut(u32) -> Duration,
) -> Settlement {
    let mut settlement = Settlement::default();
    let whole_call = whole_call_failure(&outcome.answer);
    settlement.timed_out = matches!(outcome.answer, Answer::TimedOut(_));
    let entries: &[PutResult] = match &outcome.answer {
        Answer::Entries(entries) => entries,
        _ => &[],
    };
    let missing = EntryFailure {
        error: AttemptError::new(
            "MissingResult",
            "PutRecords answered fewer results than records sent",
        ),
        retry: Retry::Transient,
        unknown: true,
    };
    // Entry errors share their text: one allocation per distinct error in the call.
    let mut shared: Vec<EntryFailure> = Vec::new();
    for (position, mut outgoing) in batch.into_iter().enumerate() {
        settlement.targets.push(outgoing.target.clone());
        let failure: &EntryFailure = match (&whole_call, entries.get(position)) {
            (Some(failure), _) => failure,
            (
                None,
                Some(PutResult::Stored {
                    shard_id,
                    sequence_number,
                }),
            ) => {
                for member in &mut outgoing.members {
                    if member.answer_wanted() {
                        member.record_attempt(outcome.started, outcome.duration, None);
                    } else {
                        // Nobody reads the attempts of a record without a receipt.
                        member.attempt_count = member.attempt_count.saturating_add(1);
                    }
                }
                let shard_id: Arc<str> = shard_id.as_str().into();
                let sequence_number: Arc<str> = sequence_number.as_str().into();
                if *shard_id == *outgoing.target.shard_id {
                    settlement.decisions.push(Decision::Stored {
                        outgoing,
                        shard_id,
                        sequence_number,
                    });
                } else {
                    settlement.elsewhere.push(shard_id.clone());
                    let decision = if outgoing.aggregated {
                        Decision::Landed {
                            outgoing,
                            shard_id,
                            sequence_number,
                        }
                    } else {
                        // A plain record is routed by its own hash key: it is where it belongs.
                        Decision::Stored {
                            outgoing,
                            shard_id,
                            sequence_number,
                        }
                    };
                    settlement.decisions.push(decision);
                }
                continue;
            }
            (None, Some(PutResult::Failed { code, message })) => {
                let index = match shared
                    .iter()
                    .position(|f| &*f.error.code == code && &*f.error.message == message)
                {
                    Some(index) => index,
                    None => {
                        shared.push(EntryFailure {
                            error: AttemptError::new(code.as_str(), message.as_str()),
                            retry: retry_of(classify_code(code)),
                            unknown: false,
                        });
                        shared.len() - 1
                    }
                };
                &shared[index]
            }
            (None, None) => &missing,
        };
        fail(&mut settlement, outgoing, failure, outcome, rules, backoff);
    }
    settlement
}

fn whole_call_failure(answer: &Answer) -> Option<EntryFailure> {
    match answer {
        Answer::Entries(_) => None,
        Answer::Failed(error) => Some(EntryFailure {
            error: AttemptError::new(error.code(), error.message()),
            retry: retry_of(Some(error.class())),
            // The request may have been carried out before the connection failed.
            unknown: matches!(
                error.code(),
                "Timeout" | "ResponseError" | "DispatchFailure"
            ),
        }),
        Answer::TimedOut(limit) => Some(EntryFailure {
            error: AttemptError::new("Timeout", format!("no answer within {limit:?}")),
            retry: Retry::Transient,
            unknown: true,
        }),
        Answer::TaskFailed(why) => Some(EntryFailure {
            error: AttemptError::new("TaskFailed", why.as_str()),
            retry: Retry::Transient,
            unknown: true,
        }),
    }
}

fn fail(
    settlement: &mut Settlement,
    mut outgoing: Outgoing,
    failure: &EntryFailure,
    outcome: &CallOutcome,
    rules: SettleRules,
    backoff: &mut dyn FnMut(u32) -> Duration,
) {
    settlement.count_error(&failure.error.code, outgoing.members.len());
    for member in &mut outgoing.members {
        member.record_attempt(outcome.started, outcome.duration, Some(&failure.error));
        if failure.unknown {
            member.possibly_duplicated = true;
        }
    }
    if failure.retry == Retry::Throttled {
        settlement.throttled(&outgoing.target.shard_id);
    }
    let reason = match failure.retry {
        Retry::Never => Some(FailureReason::Rejected {
            code: failure.error.code.clone(),
            message: failure.error.message.clone(),
        }),
        Retry::Throttled if rules.fail_if_throttled => Some(FailureReason::Throttled),
        _ => None,
    };
    if let Some(reason) = reason {
        settlement.decisions.push(Decision::Failed {
            members: outgoing.members,
            reason,
        });
        return;
    }
    let attempts = outgoing
        .members
        .iter()
        .map(|m| m.attempt_count)
        .max()
        .unwrap_or(1);
    let at = rules.now + backoff(attempts);
    let (live, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut outgoing.members)
        .into_iter()
        .partition(|m| m.deadline(rules.ttl).is_none_or(|deadline| at < deadline));
    let repack = outgoing.aggregated && !expired.is_empty();
    if !expired.is_empty() {
        settlement.decisions.push(Decision::Failed {
            members: expired,
            reason: FailureReason::Expired,
        });
    }
    if live.is_empty() {
        return;
    }
    if failure.unknown {
        settlement.unknown_fate += live.len();
    }
    settlement.retried += live.len();
    outgoing.members = live;
    settlement.decisions.push(Decision::Retry {
        outgoing,
        at,
        repack,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::Incoming;
    use aggregation_proto::{KinesisRecord, UserRecord};

    fn member(sequence: u64, arrived: Instant) -> PendingRecord {
        PendingRecord::new(
            Incoming {
                record: UserRecord::new("k", "v"),
                hash_key: 1,
                reply: None,
                charge: 1,
                stream: 0,
            },
            0,
            sequence,
            arrived,
        )
    }

    fn outgoing(shard: &str, members: Vec<PendingRecord>) -> Outgoing {
        Outgoing {
            record: KinesisRecord::from(UserRecord::new("k", "v")),
            aggregated: members.len() > 1,
            members,
            target: Target {
                shard_id: shard.into(),
                shard: 0,
                lane: 0,
                map_epoch: 1,
            },
            due: Instant::now(),
        }
    }

    /// Plain records for these shards, in order: one member each, sequences 0, 1, ...
    fn singles(now: Instant, shards: &[&str]) -> Vec<Outgoing> {
        (0..)
            .zip(shards)
            .map(|(sequence, shard)| outgoing(shard, vec![member(sequence, now)]))
            .collect()
    }

    fn rules(now: Instant) -> SettleRules {
        SettleRules {
            now,
            ttl: Some(Duration::from_secs(30)),
            fail_if_throttled: false,
        }
    }

    fn stored(shard: &str, sequence: &str) -> PutResult {
        PutResult::Stored {
            shard_id: shard.into(),
            sequence_number: sequence.into(),
        }
    }

    fn failed(code: &str) -> PutResult {
        PutResult::Failed {
            code: code.into(),
            message: "m".into(),
        }
    }

    /// A call started at `now` and answered 5 ms later with these entries.
    fn answered(now: Instant, entries: Vec<PutResult>) -> CallOutcome {
        CallOutcome {
            started: now,
            duration: Duration::from_millis(5),
            answer: Answer::Entries(entries),
        }
    }

    fn kinds(settlement: &Settlement) -> Vec<&'static str> {
        settlement
            .decisions
            .iter()
            .map(|d| match d {
                Decision::Stored { .. } => "stored",
                Decision::Landed { .. } => "landed",
                Decision::Retry { .. } => "retry",
                Decision::Failed { .. } => "failed",
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_settle_one_by_one_and_throttled_shards_count_once() {
        let now = Instant::now();
        let batch = vec![
            outgoing("a", vec![member(0, now), member(1, now)]),
            outgoing("a", vec![member(2, now)]),
            outgoing("a", vec![member(3, now)]),
            outgoing("b", vec![member(4, now), member(5, now)]),
            outgoing("b", vec![member(6, now)]),
        ];
        let outcome = answered(
            now,
            vec![
                stored("a", "1"),
                failed("ProvisionedThroughputExceededException"),
                failed("ProvisionedThroughputExceededException"),
                stored("c", "2"),
                failed("AccessDeniedException"),
            ],
        );
        let settlement = settle(batch, &outcome, rules(now), &mut |_| {
            Duration::from_millis(50)
        });
        assert_eq!(
            kinds(&settlement),
            ["stored", "retry", "retry", "landed", "failed"]
        );
        assert_eq!(settlement.throttled_shards, [Arc::<str>::from("a")]);
        assert_eq!(settlement.targets.len(), 5);
        assert_eq!(settlement.elsewhere, [Arc::<str>::from("c")]);
        assert_eq!(settlement.retried, 2);
        assert_eq!(settlement.unknown_fate, 0);
        let codes: Vec<(&str, usize)> = settlement.errors.iter().map(|(c, n)| (&**c, *n)).collect();
        assert_eq!(
            codes,
            [
                ("ProvisionedThroughputExceededException", 2),
                ("AccessDeniedException", 1)
            ]
        );
        // The two throttled entries share one error text.
        let texts: Vec<*const str> = settlement
            .decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Retry { outgoing, .. } => Some(Arc::as_ptr(
                    outgoing.members[0].attempts[0].error_code.as_ref().unwrap(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(texts[0], texts[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_retries_everything_and_marks_it_possibly_duplicated() {
        let now = Instant::now();
        let batch = singles(now, &["a", "b"]);
        let outcome = CallOutcome {
            started: now,
            duration: Duration::from_secs(6),
            answer: Answer::TimedOut(Duration::from_secs(6)),
        };
        let settlement = settle(batch, &outcome, rules(now), &mut |_| {
            Duration::from_millis(50)
        });
        assert_eq!(kinds(&settlement), ["retry", "retry"]);
        assert!(settlement.timed_out);
        assert_eq!(settlement.unknown_fate, 2);
        for decision in &settlement.decisions {
            if let Decision::Retry { outgoing, at, .. } = decision {
                assert!(outgoing.members[0].possibly_duplicated);
                assert_eq!(*at, now + Duration::from_millis(50));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn members_whose_ttl_ends_before_the_retry_expire() {
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(29)).await;
        let now = Instant::now();
        let old = member(0, start);
        let young = member(1, now);
        let mut batch = vec![outgoing("a", vec![old, young])];
        batch[0].aggregated = true;
        let outcome = answered(now, vec![failed("InternalFailure")]);
        let settlement = settle(batch, &outcome, rules(now), &mut |_| Duration::from_secs(2));
        assert_eq!(kinds(&settlement), ["failed", "retry"]);
        match &settlement.decisions[1] {
            Decision::Retry {
                outgoing, repack, ..
            } => {
                assert!(*repack);
                assert_eq!(outgoing.members.len(), 1);
            }
            _ => unreachable!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missing_answers_are_retried_as_unknown_and_fail_fast_fails_throttling() {
        let now = Instant::now();
        let batch = singles(now, &["a", "a"]);
        let outcome = answered(now, vec![failed("ProvisionedThroughputExceededException")]);
        let mut fast = rules(now);
        fast.fail_if_throttled = true;
        let settlement = settle(batch, &outcome, fast, &mut |_| Duration::from_millis(50));
        assert_eq!(kinds(&settlement), ["failed", "retry"]);
        assert_eq!(settlement.unknown_fate, 1, "the missing answer");
        assert!(matches!(
            settlement.decisions[0],
            Decision::Failed {
                reason: FailureReason::Throttled,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_record_stored_elsewhere_is_stored() {
        let now = Instant::now();
        let batch = vec![outgoing("a", vec![member(0, now)])];
        let outcome = answered(now, vec![stored("child", "9")]);
        let settlement = settle(batch, &outcome, rules(now), &mut |_| Duration::ZERO);
        assert_eq!(kinds(&settlement), ["stored"]);
        assert_eq!(settlement.elsewhere.len(), 1, "yet the map may be stale");
    }
}
