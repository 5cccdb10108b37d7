//! Faults for every operation (fail N times, hang, wait, panic) and the log of calls.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::FakeKinesis;
use super::faults::service_error;
use crate::api::operation;
use crate::{ErrorClass, KinesisError};

/// A Kinesis operation of the fake, for faults and the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// ListShards.
    ListShards,
    /// PutRecords.
    PutRecords,
    /// GetShardIterator.
    GetShardIterator,
    /// GetRecords.
    GetRecords,
    /// DescribeStreamSummary.
    DescribeStreamSummary,
    /// RegisterStreamConsumer.
    RegisterStreamConsumer,
    /// DescribeStreamConsumer.
    DescribeStreamConsumer,
    /// SubscribeToShard (the call that opens a subscription, not its events).
    SubscribeToShard,
}

impl Operation {
    /// The name the service gives it, as [`KinesisError::operation`] carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListShards => operation::LIST_SHARDS,
            Self::PutRecords => operation::PUT_RECORDS,
            Self::GetShardIterator => operation::GET_SHARD_ITERATOR,
            Self::GetRecords => operation::GET_RECORDS,
            Self::DescribeStreamSummary => operation::DESCRIBE_STREAM_SUMMARY,
            Self::RegisterStreamConsumer => operation::REGISTER_STREAM_CONSUMER,
            Self::DescribeStreamConsumer => operation::DESCRIBE_STREAM_CONSUMER,
            Self::SubscribeToShard => operation::SUBSCRIBE_TO_SHARD,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one call of an operation does instead of (or before) answering, when injected with
/// [`FakeKinesis::inject`]. Works for every operation, before the operation's own faults
/// (PutRecords' [`CallFault`](super::CallFault)s, ListShards' script, whose
/// [`ListShardsFault`](super::ListShardsFault) is this type).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answers normally (a call a script lets through).
    None,
    /// Fails with this class and code, as given.
    Error {
        /// What the failure means.
        class: ErrorClass,
        /// Its code.
        code: String,
    },
    /// Fails with the service error `code` and `message`, classified by `kinesis-common`'s
    /// table for the operation (as the SDK client classifies it).
    ServiceError {
        /// The error code, e.g. `LimitExceededException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Never answers.
    Hang,
    /// Answers normally after this long.
    Delay(Duration),
    /// Panics (a bug below the caller).
    Panic,
}

impl Fault {
    /// A failure of class `class` with the service's usual code for it
    /// ([`code_for`](Self::code_for)).
    pub fn error(class: ErrorClass) -> Self {
        Self::Error {
            class,
            code: Self::code_for(class).to_owned(),
        }
    }

    /// The code a failure of `class` usually carries: `ProvisionedThroughputExceededException`
    /// (throttled), `InternalFailure` (transient), `ExpiredIteratorException`,
    /// `ResourceNotFoundException`, `AccessDeniedException`, `KMSAccessDeniedException`,
    /// `InvalidArgumentException`; `Malformed` and `Unexpected` otherwise.
    pub fn code_for(class: ErrorClass) -> &'static str {
        match class {
            ErrorClass::Throttled => "ProvisionedThroughputExceededException",
            ErrorClass::Transient => "InternalFailure",
            ErrorClass::ExpiredIterator => "ExpiredIteratorException",
            ErrorClass::NotFound => "ResourceNotFoundException",
            ErrorClass::AccessDenied => "AccessDeniedException",
            ErrorClass::Kms => "KMSAccessDeniedException",
            ErrorClass::InvalidRequest => "InvalidArgumentException",
            ErrorClass::Malformed => "Malformed",
            ErrorClass::Unexpected => "Unexpected",
        }
    }
}

impl FakeKinesis {
    /// The next `times` calls of `operation` fail with `class` (and the code
    /// [`Fault::code_for`] gives it). Faults of one operation are used in the order given,
    /// whatever other operations are called in between.
    pub fn fail(&self, operation: Operation, class: ErrorClass, times: usize) {
        self.inject(operation, std::iter::repeat_n(Fault::error(class), times));
    }

    /// The next calls of `operation` do these, one each, in order (then answer normally).
    pub fn inject(&self, operation: Operation, faults: impl IntoIterator<Item = Fault>) {
        let mut state = self.state();
        state
            .faults
            .extend(faults.into_iter().map(|fault| (operation, fault)));
    }

    /// Drops the faults still queued for `operation` ([`fail`](Self::fail),
    /// [`inject`](Self::inject)); the standing ones are switched off by their setters.
    pub fn clear_faults(&self, operation: Operation) {
        self.state().faults.retain(|(op, _)| *op != operation);
    }

    /// While set, every call of `operation` never answers.
    pub fn set_hang(&self, operation: Operation, hang: bool) {
        switch(&mut self.state().hangs, operation, hang);
    }

    /// While set, every call of `operation` panics.
    pub fn set_panic(&self, operation: Operation, panic: bool) {
        switch(&mut self.state().panics, operation, panic);
    }

    /// Every call of `operation` waits `delay` (tokio time) before it is carried out (zero:
    /// none). A subscription's events are not delayed: see
    /// [`set_idle_event_interval`](Self::set_idle_event_interval).
    pub fn set_delay(&self, operation: Operation, delay: Duration) {
        let mut state = self.state();
        if delay.is_zero() {
            state.delays.remove(&operation);
        } else {
            state.delays.insert(operation, delay);
        }
    }

    /// When each call of `operation` came (tokio time), in order.
    pub fn calls(&self, operation: Operation) -> Vec<Instant> {
        self.state()
            .call_log
            .iter()
            .filter(|(op, _)| *op == operation)
            .map(|(_, at)| *at)
            .collect()
    }

    /// How many calls of `operation` came.
    pub fn call_count(&self, operation: Operation) -> usize {
        self.calls(operation).len()
    }

    /// Every call of every operation, in order, with when it came.
    pub fn call_log(&self) -> Vec<(Operation, Instant)> {
        self.state().call_log.clone()
    }

    /// Logs a call of `operation` and carries out the faults injected for it: an error to
    /// return, or a hang, a panic, a wait.
    pub(super) async fn enter(&self, operation: Operation) -> Result<(), KinesisError> {
        let (fault, hangs, panics, delay) = {
            let mut state = self.state();
            state.call_log.push((operation, Instant::now()));
            let fault = state
                .faults
                .iter()
                .position(|(op, _)| *op == operation)
                .and_then(|index| state.faults.remove(index))
                .map(|(_, fault)| fault);
            (
                fault,
                state.hangs.contains(&operation),
                state.panics.contains(&operation),
                state.delays.get(&operation).copied(),
            )
        };
        // The lock is released: a panic here does not poison the state for other callers.
        if panics {
            panic!("FakeKinesis: injected panic in {operation}");
        }
        if hangs {
            std::future::pending::<()>().await;
        }
        if let Some(fault) = fault {
            carry_out(operation, fault).await?;
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

/// Puts `operation` in `set` (`on`) or takes it out: a standing fault switched.
fn switch(set: &mut BTreeSet<Operation>, operation: Operation, on: bool) {
    if on {
        set.insert(operation);
    } else {
        set.remove(&operation);
    }
}

/// Does what `fault` says a call of `operation` does: fail, hang, wait, panic, or nothing.
pub(super) async fn carry_out(operation: Operation, fault: Fault) -> Result<(), KinesisError> {
    match fault {
        Fault::None => {}
        Fault::Error { class, code } => {
            return Err(KinesisError::new(
                operation.as_str(),
                class,
                code,
                "injected by the fake",
            ));
        }
        Fault::ServiceError { code, message } => {
            return Err(service_error(operation.as_str(), &code, &message));
        }
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::Panic => panic!("FakeKinesis: injected panic in {operation}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ListShards, ShardListing, StreamId};

    fn fake() -> FakeKinesis {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake
    }

    async fn list(fake: &FakeKinesis) -> Result<usize, KinesisError> {
        let shards = fake
            .list_shards(&StreamId::from("s"), &ShardListing::All)
            .await?;
        Ok(shards.len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_used_n_times_then_the_call_answers() {
        let fake = fake();
        fake.fail(Operation::ListShards, ErrorClass::Throttled, 2);
        fake.fail(Operation::GetRecords, ErrorClass::Transient, 1);
        for _ in 0..2 {
            let error = list(&fake).await.unwrap_err();
            assert_eq!(error.class(), ErrorClass::Throttled);
            assert_eq!(error.code(), "ProvisionedThroughputExceededException");
            assert_eq!(error.operation(), "ListShards");
        }
        assert_eq!(list(&fake).await.unwrap(), 1);
        assert_eq!(fake.call_count(Operation::ListShards), 3);
        assert_eq!(fake.list_shards_calls(), 3, "kpl's counter counts them too");
        assert_eq!(fake.call_count(Operation::GetRecords), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_faults_are_cleared_per_operation() {
        let fake = fake();
        fake.fail(Operation::ListShards, ErrorClass::Transient, 5);
        fake.fail(Operation::GetRecords, ErrorClass::Transient, 1);
        fake.clear_faults(Operation::ListShards);
        assert_eq!(list(&fake).await.unwrap(), 1);
        assert_eq!(fake.state().faults.len(), 1, "GetRecords' stays");
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_error_is_classified_by_the_table() {
        let fake = fake();
        fake.inject(
            Operation::ListShards,
            [Fault::ServiceError {
                code: "LimitExceededException".into(),
                message: "Rate exceeded".into(),
            }],
        );
        assert_eq!(
            list(&fake).await.unwrap_err().class(),
            ErrorClass::Throttled
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_is_waited_in_tokio_time_and_logged_at_the_call() {
        let fake = fake();
        let started = Instant::now();
        fake.inject(
            Operation::ListShards,
            [Fault::Delay(Duration::from_secs(3))],
        );
        list(&fake).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        fake.set_delay(Operation::ListShards, Duration::from_millis(500));
        list(&fake).await.unwrap();
        list(&fake).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        fake.set_delay(Operation::ListShards, Duration::ZERO);
        list(&fake).await.unwrap();
        let calls = fake.calls(Operation::ListShards);
        let offsets: Vec<Duration> = calls.iter().map(|at| *at - started).collect();
        assert_eq!(
            offsets,
            [0, 3_000, 3_500, 4_000].map(Duration::from_millis),
            "each call is logged when it comes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_never_answers_until_cleared() {
        let fake = fake();
        fake.inject(Operation::ListShards, [Fault::Hang]);
        let hung = tokio::time::timeout(Duration::from_secs(3600), list(&fake)).await;
        assert!(hung.is_err());
        assert_eq!(list(&fake).await.unwrap(), 1, "one call only");
        fake.set_hang(Operation::ListShards, true);
        let hung = tokio::time::timeout(Duration::from_secs(3600), list(&fake)).await;
        assert!(hung.is_err());
        fake.set_hang(Operation::ListShards, false);
        assert_eq!(list(&fake).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_leaves_the_fake_usable() {
        let fake = Arc::new(fake());
        fake.inject(Operation::ListShards, [Fault::Panic]);
        let task = {
            let fake = Arc::clone(&fake);
            tokio::spawn(async move { list(&fake).await })
        };
        assert!(task.await.unwrap_err().is_panic());
        fake.set_panic(Operation::ListShards, true);
        let task = {
            let fake = Arc::clone(&fake);
            tokio::spawn(async move { list(&fake).await })
        };
        assert!(task.await.unwrap_err().is_panic());
        fake.set_panic(Operation::ListShards, false);
        assert_eq!(list(&fake).await.unwrap(), 1);
    }

    #[test]
    fn operations_carry_the_service_names() {
        assert_eq!(Operation::GetShardIterator.to_string(), "GetShardIterator");
        assert_eq!(
            Operation::RegisterStreamConsumer.as_str(),
            "RegisterStreamConsumer"
        );
    }
}
