//! Errors of the lease coordinator (besides [`super::CoordinatorConfigError`]).

use std::time::Duration;

use crate::lease::{LeaseError, LeaseErrorKind};

/// Why [`LeaseCoordinator::start`](super::LeaseCoordinator::start) refused to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `start` was already called.
    #[error("the lease coordinator was already started")]
    AlreadyStarted,
    /// The coordinator was shut down (or its cancellation token cancelled) before it started.
    #[error("the lease coordinator was shut down")]
    ShutDown,
    /// Called outside a tokio runtime.
    #[error("the lease coordinator must be started inside a tokio runtime")]
    NoRuntime,
}

/// Why a write to a held lease failed (a checkpoint, a handoff answer: see
/// [`Checkpointer`](crate::Checkpointer) and [`LeaseCoordinator`](super::LeaseCoordinator)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeldLeaseError {
    /// This worker does not hold the lease (never did, or lost or released it).
    #[error("lease {lease_key} is not held by this worker")]
    NotHeld {
        /// The lease.
        lease_key: String,
    },
    /// The write failed. When the error is [`LeaseError::LeaseLost`], the coordinator has
    /// already dropped the lease from its held set (and published that); otherwise the lease
    /// is still held and the write may be retried.
    #[error("write to held lease {lease_key} failed")]
    Write {
        /// The lease.
        lease_key: String,
        /// The lease table's error.
        #[source]
        source: LeaseError,
    },
}

impl HeldLeaseError {
    /// The lease concerned.
    pub fn lease_key(&self) -> &str {
        match self {
            Self::NotHeld { lease_key } | Self::Write { lease_key, .. } => lease_key,
        }
    }

    /// Whether the lease is no longer held: [`NotHeld`](Self::NotHeld), or a write that found
    /// the lease taken ([`LeaseError::LeaseLost`]). The caller should stop processing the shard.
    pub fn is_lease_lost(&self) -> bool {
        match self {
            Self::NotHeld { .. } => true,
            Self::Write { source, .. } => source.is_lease_lost(),
        }
    }

    /// Whether retrying can succeed (the lease is still held and the failure was transient).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotHeld { .. } => false,
            Self::Write { source, .. } => source.is_retryable(),
        }
    }
}

/// The error for a request the coordinator gave up waiting for.
pub(crate) fn timed_out(operation: &'static str, table: &str, after: Duration) -> LeaseError {
    LeaseError::Dynamo {
        operation,
        table: table.to_owned(),
        kind: LeaseErrorKind::Transient,
        source: format!("no answer within {after:?}").into(),
    }
}

/// `call` (a lease table `operation` on `table`), abandoned after `limit` as [`timed_out`].
pub(crate) async fn within<T>(
    operation: &'static str,
    table: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(operation, table, limit)),
    }
}

/// The error for a write whose outcome the coordinator could not settle (retryable: the
/// holding is kept).
pub(crate) fn unresolved(table: &str, why: &'static str) -> LeaseError {
    LeaseError::Dynamo {
        operation: "UpdateItem",
        table: table.to_owned(),
        kind: LeaseErrorKind::Transient,
        source: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lease_errors_say_what_to_do() {
        let not_held = HeldLeaseError::NotHeld {
            lease_key: "shard-1".into(),
        };
        assert!(not_held.is_lease_lost());
        assert!(!not_held.is_retryable());
        assert_eq!(
            not_held.to_string(),
            "lease shard-1 is not held by this worker"
        );

        let lost = HeldLeaseError::Write {
            lease_key: "shard-1".into(),
            source: LeaseError::LeaseLost {
                lease_key: "shard-1".into(),
            },
        };
        assert!(lost.is_lease_lost());
        assert!(!lost.is_retryable());

        let slow = HeldLeaseError::Write {
            lease_key: "shard-2".into(),
            source: timed_out("UpdateItem", "leases", Duration::from_millis(500)),
        };
        assert_eq!(slow.lease_key(), "shard-2");
        assert!(!slow.is_lease_lost());
        assert!(slow.is_retryable());
        assert_eq!(
            kinesis_common::ErrorChain(&slow).to_string(),
            "write to held lease shard-2 failed: DynamoDB UpdateItem on table leases failed \
             (transient): no answer within 500ms"
        );
    }
}
