//! The handler logic of the `lambda_handler` example, apart from the runtime so that a test can
//! feed it event JSON directly (`examples/tests/lambda_handler.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kinesis_lambda::{
    BatchItem, CorruptRecord, EventDeaggregator, EventError, ExactKinesisEvent, KinesisEvent,
    KinesisEventResponse, LambdaUserRecord, Position, all_processed, retry_from,
};
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};

/// Where the user records go. A real function would write to a database or call a service.
pub trait Sink {
    /// Processes one user record; an error makes the batch fail at it.
    fn process(&mut self, record: &LambdaUserRecord) -> Result<(), String>;

    /// Keeps a corrupt aggregate aside (its user records cannot be recovered, and failing the
    /// batch at it would stop the shard until the record expires).
    fn dead_letter(&mut self, corrupt: &CorruptRecord);
}

/// What a warm execution environment keeps between invocations: the last user record finished
/// per shard. Lost on a cold start, which only means the rest of an aggregate is processed
/// again (at-least-once); a function that must not repeat keeps it in a store of its own.
#[derive(Debug, Default)]
pub struct HandlerState {
    done: HashMap<String, Position>,
}

impl HandlerState {
    /// The last user record finished in `shard_id`, if known.
    pub fn done(&self, shard_id: &str) -> Option<&Position> {
        self.done.get(shard_id)
    }
}

/// One invocation: deaggregate, skip what an earlier try of this batch finished, process in
/// order; at the first failure, answer with the partial batch response that makes Lambda retry
/// from that user record's Kinesis record.
///
/// # Errors
/// [`EventError`] when the event is not a Kinesis event (the invocation fails as a whole).
pub fn handle(
    event: KinesisEvent,
    state: &mut HandlerState,
    sink: &mut impl Sink,
) -> Result<KinesisEventResponse, EventError> {
    let mut batch = EventDeaggregator::new().deaggregate(event)?;
    // A batch comes from one shard; skip per shard anyway, it costs nothing.
    let shards: Vec<String> = batch
        .items()
        .iter()
        .map(|i| i.position().shard_id().to_owned())
        .collect();
    for shard in shards {
        let done = state.done.get(&shard).cloned();
        batch.skip_processed(done.as_ref());
    }
    let stats = *batch.stats();
    tracing::info!(
        kinesis_records = stats.kinesis_records,
        user_records = stats.user_records,
        aggregates = stats.aggregates,
        corrupt = stats.corrupt,
        skipped = stats.skipped,
        "batch"
    );
    for item in batch.items() {
        match item {
            BatchItem::Record(record) => {
                if let Err(error) = sink.process(record) {
                    tracing::warn!(
                        shard = record.shard_id(),
                        sequence_number = record.sequence_number(),
                        sub_sequence_number = record.sub_sequence_number(),
                        %error,
                        "processing failed; Lambda retries from this record"
                    );
                    return Ok(retry_from(record));
                }
            }
            BatchItem::Corrupt(corrupt) => {
                tracing::warn!(
                    shard = corrupt.shard_id(),
                    sequence_number = corrupt.sequence_number(),
                    error = %corrupt.error(),
                    "corrupt KPL aggregate set aside"
                );
                sink.dead_letter(corrupt);
            }
        }
        let position = item.position();
        state.done.insert(position.shard_id().to_owned(), position);
    }
    Ok(all_processed())
}

/// Serves invocations from the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API` and the function's
/// environment, as Lambda sets them) until the runtime stops. The state lives as long as the
/// execution environment. An event that is not a Kinesis event fails its invocation with the
/// error type `EventError`.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve<S: Sink + Send + 'static>(sink: S) -> Result<(), Error> {
    let state = Arc::new(Mutex::new((HandlerState::default(), sink)));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ExactKinesisEvent>| {
        let state = state.clone();
        async move { invoke(&state, event.payload) }
    }))
    .await
}

/// One invocation, its error in the form the runtime reports.
fn invoke<S: Sink>(
    state: &Mutex<(HandlerState, S)>,
    event: ExactKinesisEvent,
) -> Result<KinesisEventResponse, Diagnostic> {
    let diagnostic = |error_type: &str, error_message: String| Diagnostic {
        error_type: error_type.into(),
        error_message,
    };
    // One invocation at a time per execution environment: the lock is never contended.
    let mut guard = state
        .lock()
        .map_err(|_| diagnostic("Poisoned", "an earlier invocation panicked".into()))?;
    let (state, sink) = &mut *guard;
    handle(event.0, state, sink).map_err(|e| diagnostic("EventError", e.to_string()))
}
