//! What to inject: [`Faults`] and its parts.

use std::time::Duration;

/// The operations faults apply to by default: `PutRecords` only.
pub const DEFAULT_FAIL_OPERATIONS: &[&str] = &["PutRecords"];

/// The faults a [`FaultProxy`](crate::FaultProxy) injects.
///
/// `Faults::default()` injects nothing. Every `*_rate` is a probability in `0.0..=1.0`, drawn
/// per request (per entry for [`partial_failure_rate`](Self::partial_failure_rate)) from a
/// random generator seeded with [`seed`](Self::seed), so a sequential test sees the same faults
/// on every run. Concurrent requests draw in arrival order, which is not reproducible.
///
/// Faults apply only to the operations named in [`fail_operations`](Self::fail_operations)
/// (default: `PutRecords`); every other operation passes straight through.
///
/// For a request that faults apply to, the proxy first waits while [`stall`](Self::stall) is
/// set, then draws, in this order: dropped connection, whole-call throttling, whole-call server
/// error, delay, lost response and per-entry failures (a draw is skipped when its rate is 0 or
/// an earlier draw already decided the outcome). A dropped connection or a whole-call error
/// means the request never reaches the upstream. A delay applies to whatever answer is sent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fault_proxy::Faults;
///
/// let faults = Faults {
///     partial_failure_rate: 0.25,
///     delay: Duration::from_millis(50),
///     delay_rate: 0.1,
///     seed: 7,
///     ..Faults::default()
/// };
/// assert!(faults.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Seed of the random generator that decides every fault. [`FaultProxy::set_faults`]
    /// re-seeds it. Default 0.
    ///
    /// [`FaultProxy::set_faults`]: crate::FaultProxy::set_faults
    pub seed: u64,
    /// Probability that a whole call is answered HTTP 400
    /// `{"__type":"ProvisionedThroughputExceededException",...}` without reaching the upstream.
    pub throttle_rate: f64,
    /// Probability that a whole call is answered with [`server_error`](Self::server_error)
    /// without reaching the upstream.
    pub internal_error_rate: f64,
    /// The answer used for [`internal_error_rate`](Self::internal_error_rate). Default
    /// [`ServerError::InternalFailure`] (HTTP 500).
    pub server_error: ServerError,
    /// Probability, per PutRecords entry, that the entry is not forwarded and its response
    /// entry carries an error code instead (see
    /// [`partial_failure_internal_share`](Self::partial_failure_internal_share)).
    pub partial_failure_rate: f64,
    /// Share of the injected entry failures that are `InternalFailure`; the rest are
    /// `ProvisionedThroughputExceededException`. Default 0.0 (all throughput errors).
    pub partial_failure_internal_share: f64,
    /// Extra time before the answer is written (after the upstream, if any, has answered), with
    /// probability [`delay_rate`](Self::delay_rate). Default zero.
    pub delay: Duration,
    /// Probability that a request is delayed by [`delay`](Self::delay). Default 0.0, so setting
    /// `delay` alone does nothing.
    pub delay_rate: f64,
    /// Probability that the proxy reads the request and then closes the TCP connection without
    /// answering; the request never reaches the upstream.
    pub drop_connection_rate: f64,
    /// Probability that the proxy forwards the request, lets the upstream process it, and then
    /// closes the TCP connection without answering: the write happened but the client never
    /// hears about it (what a client-side timeout or a reset after the fact looks like).
    pub lose_response_rate: f64,
    /// Operations (the part after the `.` in `X-Amz-Target`, e.g. `PutRecords`, `ListShards`)
    /// that faults apply to. Default [`DEFAULT_FAIL_OPERATIONS`].
    pub fail_operations: Vec<String>,
    /// Hold every request for a [`fail_operations`](Self::fail_operations) operation without
    /// answering until this is cleared with [`FaultProxy::set_faults`]; held requests then
    /// continue (with the faults in force at that time). For backpressure tests.
    ///
    /// [`FaultProxy::set_faults`]: crate::FaultProxy::set_faults
    pub stall: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            throttle_rate: 0.0,
            internal_error_rate: 0.0,
            server_error: ServerError::InternalFailure,
            partial_failure_rate: 0.0,
            partial_failure_internal_share: 0.0,
            delay: Duration::ZERO,
            delay_rate: 0.0,
            drop_connection_rate: 0.0,
            lose_response_rate: 0.0,
            fail_operations: DEFAULT_FAIL_OPERATIONS
                .iter()
                .map(|op| (*op).to_owned())
                .collect(),
            stall: false,
        }
    }
}

impl Faults {
    /// No faults at all (the same as `Faults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks that every rate is a probability in `0.0..=1.0`.
    ///
    /// # Errors
    ///
    /// [`FaultsError::InvalidRate`] naming the first field that is out of range or NaN.
    pub fn validate(&self) -> Result<(), FaultsError> {
        let rates = [
            ("throttle_rate", self.throttle_rate),
            ("internal_error_rate", self.internal_error_rate),
            ("partial_failure_rate", self.partial_failure_rate),
            (
                "partial_failure_internal_share",
                self.partial_failure_internal_share,
            ),
            ("delay_rate", self.delay_rate),
            ("drop_connection_rate", self.drop_connection_rate),
            ("lose_response_rate", self.lose_response_rate),
        ];
        for (field, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::InvalidRate { field, value });
            }
        }
        Ok(())
    }

    /// Whether faults apply to `operation` (an `X-Amz-Target` operation name).
    pub fn applies_to(&self, operation: &str) -> bool {
        self.fail_operations.iter().any(|op| op == operation)
    }

    /// Whether any fault needs a random draw (false for the default, which keeps the
    /// fault-free path free of the generator's lock).
    pub(crate) fn is_random(&self) -> bool {
        self.throttle_rate > 0.0
            || self.internal_error_rate > 0.0
            || self.partial_failure_rate > 0.0
            || (self.delay_rate > 0.0 && !self.delay.is_zero())
            || self.drop_connection_rate > 0.0
            || self.lose_response_rate > 0.0
    }
}

/// The whole-call error injected by [`Faults::internal_error_rate`].
///
/// The 5xx variants are what the AWS SDK's standard retry strategy classifies as transient;
/// the 400 variants are the stale-credential answers a token rotation or a clock jump brings,
/// which the SDK does not retry and our classification does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerError {
    /// HTTP 500 `{"__type":"InternalFailure",...}`: the AWS common error. The Rust SDK has no
    /// model for it, so it surfaces as an unhandled service error with code `InternalFailure`.
    #[default]
    InternalFailure,
    /// HTTP 500 `{"__type":"InternalFailureException",...}`: the error Kinesis models for its
    /// operations; the Rust SDK surfaces it as the modeled `InternalFailureException`.
    InternalFailureException,
    /// HTTP 503 `{"__type":"ServiceUnavailable",...}`.
    ServiceUnavailable,
    /// HTTP 400 `{"__type":"ExpiredTokenException",...}`: the session token expired.
    ExpiredToken,
    /// HTTP 400 `{"__type":"InvalidSignatureException","message":"Signature expired: ..."}`:
    /// the request was signed too long before it arrived (a clock jump, a frozen process).
    SignatureExpired,
}

impl ServerError {
    /// The HTTP status code of the answer.
    pub fn status(self) -> u16 {
        match self {
            Self::InternalFailure | Self::InternalFailureException => 500,
            Self::ServiceUnavailable => 503,
            Self::ExpiredToken | Self::SignatureExpired => 400,
        }
    }

    /// The message of the answer's JSON body.
    pub fn message(self) -> &'static str {
        match self {
            Self::ExpiredToken => "The security token included in the request is expired",
            Self::SignatureExpired => {
                "Signature expired: 20261207T100000Z is now earlier than 20261207T100500Z (20261207T101000Z - 5 min.)"
            }
            _ => "Injected by fault-proxy.",
        }
    }

    /// The `__type` of the answer's JSON body.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InternalFailure => "InternalFailure",
            Self::InternalFailureException => "InternalFailureException",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::ExpiredToken => "ExpiredTokenException",
            Self::SignatureExpired => "InvalidSignatureException",
        }
    }
}

/// Why a [`Faults`] value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultsError {
    /// A rate is not a probability.
    #[error("{field} must be within 0.0..=1.0, got {value}")]
    InvalidRate {
        /// The field's name.
        field: &'static str,
        /// The refused value.
        value: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_no_faults_on_put_records() {
        let faults = Faults::default();
        assert!(!faults.is_random());
        assert!(!faults.stall);
        assert!(faults.applies_to("PutRecords"));
        assert!(!faults.applies_to("ListShards"));
        assert!(faults.validate().is_ok());
    }

    #[test]
    fn delay_without_rate_is_not_random() {
        let faults = Faults {
            delay: Duration::from_secs(1),
            ..Faults::default()
        };
        assert!(!faults.is_random());
    }

    #[test]
    fn rates_are_validated() {
        for bad in [-0.1, 1.01, f64::NAN] {
            let faults = Faults {
                delay_rate: bad,
                ..Faults::default()
            };
            assert!(matches!(
                faults.validate(),
                Err(FaultsError::InvalidRate {
                    field: "delay_rate",
                    ..
                })
            ));
        }
    }
}
