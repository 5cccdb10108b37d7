//! Registering the application's stream consumer: idempotent, and done only when it is ACTIVE.
//!
//! ```text
//! stream ARN ─► DescribeStreamConsumer ─ ACTIVE ────────────────────────────► done
//!                  │  ▲                 ─ CREATING / DELETING ─► wait, ask again
//!                  │  └──── wait ◄───── ResourceInUse (registered meanwhile)
//!                  └ not found ─► RegisterStreamConsumer ─ ACTIVE ─► done; else wait
//! ```
//!
//! A consumer being deleted (by an operator, or a previous deployment) is waited out and
//! registered again; several workers starting at once all end up with the same consumer.

use std::time::Duration;

use kinesis_common::{ConsumerStatus, KinesisError, SdkKinesis, StreamConsumers};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::FanOutConfig;
use crate::retrieval::error::{Class, RetrievalError};
use crate::retrieval::types::StreamId;

/// An ACTIVE stream consumer, ready for [`FanOutSource`](super::FanOutSource)s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredConsumer {
    /// The stream's ARN.
    pub stream_arn: String,
    /// The consumer's name.
    pub consumer_name: String,
    /// The consumer's ARN (what SubscribeToShard takes).
    pub consumer_arn: String,
}

/// Why the stream consumer could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A call failed in a way retrying cannot fix: the stream does not exist, access is
    /// denied (the credentials need `kinesis:RegisterStreamConsumer` and
    /// `kinesis:DescribeStreamConsumer`), or the consumer name is invalid (1 to 128 of
    /// `a-zA-Z0-9_.-`).
    #[error("registering stream consumer {consumer_name:?}")]
    Failed {
        /// The consumer name.
        consumer_name: String,
        /// The failed call.
        #[source]
        source: RetrievalError,
    },
    /// The consumer was not ACTIVE within the
    /// [`registration_timeout`](FanOutConfig::registration_timeout) (still CREATING, still
    /// DELETING, or the calls kept failing: `last_problem` says which). A stream has at most
    /// 20 consumers: a `LimitExceededException` here means deregistering an unused one.
    #[error("stream consumer {consumer_name:?} not ACTIVE after {waited:?} (last: {last_problem})")]
    NotActive {
        /// The consumer name.
        consumer_name: String,
        /// How long registration waited.
        waited: Duration,
        /// The last state or error seen.
        last_problem: String,
    },
}

/// Registers `consumer_name` on `stream` if it is not registered yet, and waits until it is
/// ACTIVE. Calling it again, from any number of workers, returns
/// the same consumer.
///
/// # Errors
///
/// [`RegistrationError`]: a fatal call error, or the consumer not ACTIVE in time.
pub async fn register_stream_consumer(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamId,
    consumer_name: &str,
    config: &FanOutConfig,
) -> Result<RegisteredConsumer, RegistrationError> {
    let api = SdkKinesis::new(client).with_timeouts(config.timeouts());
    register(&api, stream, consumer_name, config).await
}

/// [`register_stream_consumer`] over any implementation of the calls.
pub(crate) async fn register<A: StreamConsumers + ?Sized>(
    api: &A,
    stream: &StreamId,
    consumer_name: &str,
    config: &FanOutConfig,
) -> Result<RegisteredConsumer, RegistrationError> {
    let started = Instant::now();
    let deadline = started + config.registration_timeout;
    let fatal = |error: KinesisError| RegistrationError::Failed {
        consumer_name: consumer_name.to_owned(),
        source: error.into(),
    };
    let mut stream_arn = None;
    // What the calls said last: a call cut at the deadline has nothing to say.
    let mut last_seen: Option<String> = None;
    loop {
        let step = async {
            let arn = match &stream_arn {
                Some(arn) => arn,
                None => stream_arn.insert(api.stream_arn(stream).await?),
            };
            match api.describe_consumer(arn, consumer_name).await {
                Err(error) if error.class() == Class::NotFound => {
                    info!(consumer_name, stream_arn = %arn, "registering the stream consumer");
                    api.register_consumer(arn, consumer_name).await
                }
                other => other,
            }
        };
        // Each call is bounded by the client (the read timeout, in production); this bounds
        // them by the registration timeout whatever the client, so a call that never answers
        // cannot outlive it.
        let Ok(result) = tokio::time::timeout_at(deadline, step).await else {
            return Err(RegistrationError::NotActive {
                consumer_name: consumer_name.to_owned(),
                waited: Instant::now() - started,
                last_problem: last_seen.unwrap_or_else(|| "Timeout".to_owned()),
            });
        };
        let last_problem = match result {
            Ok(consumer) if consumer.status == ConsumerStatus::Active => {
                info!(consumer_name, consumer_arn = %consumer.consumer_arn, "stream consumer is ACTIVE");
                return Ok(RegisteredConsumer {
                    stream_arn: stream_arn.unwrap_or_default(),
                    consumer_name: consumer_name.to_owned(),
                    consumer_arn: consumer.consumer_arn,
                });
            }
            Ok(consumer) => {
                debug!(consumer_name, status = ?consumer.status, "waiting for the stream consumer");
                format!("{:?}", consumer.status).to_uppercase()
            }
            // ResourceInUse: another worker registered it meanwhile, or it is being deleted.
            Err(error) if error.is_retryable() => {
                warn!(
                    consumer_name,
                    code = error.code(),
                    "stream consumer registration: retrying"
                );
                error.code().to_owned()
            }
            Err(error) => return Err(fatal(error)),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(RegistrationError::NotActive {
                consumer_name: consumer_name.to_owned(),
                waited: now - started,
                last_problem,
            });
        }
        last_seen = Some(last_problem);
        tokio::time::sleep(config.registration_poll_interval.min(deadline - now)).await;
    }
}
