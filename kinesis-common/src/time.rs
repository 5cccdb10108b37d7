//! Deadlines that never overflow: settings may be `Duration::MAX` ("never"), and adding that
//! to an [`Instant`] would panic.

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: as far as a deadline needs to go.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + by`, or as far as an [`Instant`] goes (about 30 years) when that overflows.
///
/// ```
/// use std::time::Duration;
/// use kinesis_common::later;
/// let now = tokio::time::Instant::now();
/// assert!(later(now, Duration::MAX) > later(now, Duration::from_secs(3600)));
/// assert_eq!(later(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// ```
pub fn later(start: Instant, by: Duration) -> Instant {
    start
        .checked_add(by)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}
