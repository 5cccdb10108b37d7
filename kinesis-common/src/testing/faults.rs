//! The faults a [`FakeKinesis`] injects: scripted per call, or drawn at random rates.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{FakeKinesis, Fault, Operation};
use crate::{ErrorClass, KinesisError, StreamId};

/// What one PutRecords call does, when scripted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallFault {
    /// Stores every entry and answers.
    None,
    /// The entries at these positions fail with `code` (not stored); the rest are stored.
    FailEntries {
        /// Positions in the call.
        positions: Vec<usize>,
        /// The error code, e.g. `ProvisionedThroughputExceededException`.
        code: String,
    },
    /// Nothing is stored; the call fails with this class and code.
    Error {
        /// What the failure means.
        class: ErrorClass,
        /// Its code.
        code: String,
    },
    /// Nothing is stored; the call fails with the service error `code` and `message`,
    /// classified by `kinesis-common`'s table as the SDK client classifies it (so a test follows
    /// that table, e.g. `ExpiredTokenException`).
    ServiceError {
        /// The error code, e.g. `ExpiredTokenException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Stores every entry and answers, after `delay` (an answer that comes late, possibly
    /// after the caller's timeout: the entries are stored all the same).
    Delay(Duration),
    /// Everything is stored, then the answer is lost: the call fails as a dropped connection.
    LoseAnswer,
    /// Nothing is stored and no answer ever comes.
    Hang,
    /// Everything is stored and no answer ever comes.
    StoreThenHang,
    /// The call panics (inside the producer's task).
    Panic,
}

/// What one ListShards call does, when scripted
/// ([`script_list_shards_faults`](FakeKinesis::script_list_shards_faults)): the [`Fault`] every
/// operation takes, carried out the same way (`None`: answers normally; `Delay`: answers after
/// it, with the shards as they are then; `ServiceError`: classified as in
/// [`CallFault::ServiceError`], e.g. `LimitExceededException`: throttled).
pub type ListShardsFault = Fault;

/// Random faults: each rate is a probability per call (or per entry for the entry faults).
/// Fields are public; outside this crate start from [`RandomFaults::none`] and set them.
///
/// ```
/// let mut faults = kinesis_common::testing::RandomFaults::none();
/// faults.throttle_entry = 0.1;
/// faults.list_shards_throttle = 0.5;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RandomFaults {
    /// Per entry: fails with `ProvisionedThroughputExceededException`.
    pub throttle_entry: f64,
    /// Per entry: fails with `InternalFailure`.
    pub internal_entry: f64,
    /// Per call: fails whole with `ProvisionedThroughputExceededException` (nothing stored).
    pub throttle_call: f64,
    /// Per call: fails whole with a 500 `InternalFailure` (nothing stored).
    pub internal_call: f64,
    /// Per call: stored, answer lost.
    pub lose_answer: f64,
    /// Per call: never answers, nothing stored.
    pub hang: f64,
    /// Per call: never answers, everything stored.
    pub store_then_hang: f64,
    /// Per call: fails whole with `ExpiredTokenException` (nothing stored), classified as in
    /// [`CallFault::ServiceError`]: what a fleet meets at every credential rotation.
    pub expired_token_call: f64,
    /// Per call: stored and answered after a random delay of up to [`max_delay`](Self::max_delay)
    /// ([`CallFault::Delay`]).
    pub delay_call: f64,
    /// The longest delay of [`delay_call`](Self::delay_call).
    pub max_delay: Duration,
    /// Per call: the call panics inside the producer's task ([`CallFault::Panic`]).
    pub panic_call: f64,
    /// Per ListShards call: fails with `LimitExceededException` (throttled).
    pub list_shards_throttle: f64,
    /// Per ListShards call: fails with a 500 `InternalFailure`.
    pub list_shards_internal: f64,
    /// Per ListShards call: never answers.
    pub list_shards_hang: f64,
}

impl RandomFaults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }
}

impl FakeKinesis {
    /// The next PutRecords calls do these, in order (then the random faults apply again).
    pub fn script(&self, faults: impl IntoIterator<Item = CallFault>) {
        self.state().script.extend(faults);
    }

    /// The next ListShards calls fail with these classes (`None`: answers normally), with the
    /// code `Injected`.
    pub fn script_list_shards(&self, outcomes: impl IntoIterator<Item = Option<ErrorClass>>) {
        self.script_list_shards_faults(outcomes.into_iter().map(|outcome| match outcome {
            Some(class) => ListShardsFault::Error {
                class,
                code: "Injected".into(),
            },
            None => ListShardsFault::None,
        }));
    }

    /// The next ListShards calls do these, in order (then the random faults apply again).
    pub fn script_list_shards_faults(&self, faults: impl IntoIterator<Item = ListShardsFault>) {
        self.state().list_script.extend(faults);
    }

    /// While set, every ListShards call never answers (as
    /// [`set_hang`](Self::set_hang)`(Operation::ListShards, hang)`).
    pub fn set_list_shards_hang(&self, hang: bool) {
        self.set_hang(Operation::ListShards, hang);
    }

    /// Random faults from now on, drawn from a generator seeded with `seed`.
    pub fn set_random_faults(&self, faults: RandomFaults, seed: u64) {
        let mut state = self.state();
        state.random = faults;
        state.rng = StdRng::seed_from_u64(seed);
    }

    /// Calls for `stream` draw from `faults` instead of the rates of
    /// [`set_random_faults`](Self::set_random_faults) (one generator for all), until
    /// [`clear_stream_faults`](Self::clear_stream_faults): a stream throttled for long next to
    /// healthy ones, say.
    pub fn set_stream_faults(&self, stream: impl Into<StreamId>, faults: RandomFaults) {
        self.state().stream_random.insert(stream.into(), faults);
    }

    /// Calls for `stream` draw from the rates of [`set_random_faults`](Self::set_random_faults)
    /// again.
    pub fn clear_stream_faults(&self, stream: impl Into<StreamId>) {
        self.state().stream_random.remove(&stream.into());
    }

    /// PutRecords calls take time: they cross one link of `bytes_per_sec`, one after another,
    /// and are answered `latency` after they crossed it (None: answered after `latency` only).
    /// ListShards answers at once.
    pub fn set_link(&self, bytes_per_sec: Option<f64>, latency: Duration) {
        let mut state = self.state();
        state.link_bytes_per_sec = bytes_per_sec;
        state.latency = latency;
    }

    pub(super) fn next_fault(
        &self,
        stream: &StreamId,
        entries: usize,
    ) -> (CallFault, Vec<Option<&'static str>>) {
        let mut state = self.state();
        if let Some(fault) = state.script.pop_front() {
            return (fault, vec![None; entries]);
        }
        let random = state.rates(stream);
        let rng = &mut state.rng;
        let fault = if chance(rng, random.hang) {
            CallFault::Hang
        } else if chance(rng, random.store_then_hang) {
            CallFault::StoreThenHang
        } else if chance(rng, random.panic_call) {
            CallFault::Panic
        } else if chance(rng, random.expired_token_call) {
            CallFault::ServiceError {
                code: "ExpiredTokenException".into(),
                message: "The security token included in the request is expired".into(),
            }
        } else if chance(rng, random.throttle_call) {
            CallFault::Error {
                class: ErrorClass::Throttled,
                code: "ProvisionedThroughputExceededException".into(),
            }
        } else if chance(rng, random.internal_call) {
            CallFault::Error {
                class: ErrorClass::Transient,
                code: "InternalFailure".into(),
            }
        } else if chance(rng, random.lose_answer) {
            CallFault::LoseAnswer
        } else if chance(rng, random.delay_call) {
            CallFault::Delay(random.max_delay.mul_f64(rng.random::<f64>()))
        } else {
            CallFault::None
        };
        let per_entry = (0..entries)
            .map(|_| {
                if chance(rng, random.throttle_entry) {
                    Some("ProvisionedThroughputExceededException")
                } else if chance(rng, random.internal_entry) {
                    Some("InternalFailure")
                } else {
                    None
                }
            })
            .collect();
        (fault, per_entry)
    }

    /// What the next ListShards call does: the script first, then the random rates.
    pub(super) fn next_list_fault(&self, stream: &StreamId) -> ListShardsFault {
        let mut state = self.state();
        if let Some(fault) = state.list_script.pop_front() {
            return fault;
        }
        let random = state.rates(stream);
        let rng = &mut state.rng;
        if chance(rng, random.list_shards_hang) {
            ListShardsFault::Hang
        } else if chance(rng, random.list_shards_throttle) {
            ListShardsFault::ServiceError {
                code: "LimitExceededException".into(),
                message: "Rate exceeded for stream (injected)".into(),
            }
        } else if chance(rng, random.list_shards_internal) {
            ListShardsFault::ServiceError {
                code: "InternalFailure".into(),
                message: "injected by the fake".into(),
            }
        } else {
            ListShardsFault::None
        }
    }
}

/// Draws `true` with probability `p`, drawing nothing when `p` is zero (so a rate left at zero
/// does not change the sequence the others draw from).
pub(super) fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// A service error as the SDK client reports it: classified by `kinesis-common`'s table (by
/// operation, code and message); a code the table does not know is `Unexpected`.
pub(super) fn service_error(operation: &'static str, code: &str, message: &str) -> KinesisError {
    let class = crate::classify_error(operation, code, message).unwrap_or(ErrorClass::Unexpected);
    KinesisError::new(operation, class, code, message)
}
