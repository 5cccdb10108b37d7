//! Reading a Lambda Kinesis event with exact arrival times.
//!
//! `aws_lambda_events` 1.2 reads `approximateArrivalTimestamp` by printing the number and
//! taking the digits after the point as milliseconds: `1700000000.5` (500 ms; JSON prints no
//! trailing zeros) becomes 5 ms, `1700000000.25` becomes 25 ms. Every record whose arrival
//! millisecond ends in a zero is affected. [`ExactKinesisEvent`] reads the event with that crate
//! and then puts back the arrival times read as the numbers they are.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::kinesis::KinesisEvent;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::Value;

/// A [`KinesisEvent`] whose arrival times are right to the millisecond (see the module notes):
/// use it as the payload type of a `lambda_runtime` handler, or read it with
/// `serde_json::from_slice`. Costs one extra pass over the event's JSON tree.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kinesis_lambda::ExactKinesisEvent;
///
/// let event: ExactKinesisEvent = serde_json::from_str(r#"{"Records": [{
///     "eventID": "shardId-000000000000:1",
///     "kinesis": {"partitionKey": "1", "data": "", "sequenceNumber": "1",
///                 "approximateArrivalTimestamp": 1700000000.5}}]}"#)?;
/// let arrival = SystemTime::from(event.0.records[0].kinesis.approximate_arrival_timestamp.0);
/// assert_eq!(arrival, SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactKinesisEvent(pub KinesisEvent);

impl From<ExactKinesisEvent> for KinesisEvent {
    fn from(event: ExactKinesisEvent) -> Self {
        event.0
    }
}

impl<'de> Deserialize<'de> for ExactKinesisEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let arrivals: Vec<Option<SystemTime>> = value
            .get("Records")
            .and_then(Value::as_array)
            .map(|records| records.iter().map(arrival).collect())
            .unwrap_or_default();
        let mut event = KinesisEvent::deserialize(value).map_err(D::Error::custom)?;
        for (record, arrival) in event.records.iter_mut().zip(arrivals) {
            if let Some(arrival) = arrival {
                record.kinesis.approximate_arrival_timestamp.0 = arrival.into();
            }
        }
        Ok(Self(event))
    }
}

/// The record's arrival time in whole milliseconds (Kinesis' precision), if it is a number of
/// seconds (or a string of one) after the epoch.
fn arrival(record: &Value) -> Option<SystemTime> {
    let value = record.get("kinesis")?.get("approximateArrivalTimestamp")?;
    let seconds = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // Within f64's precision for any date before the year 287,396: exact milliseconds.
    let millis = (seconds * 1000.0).round();
    (millis < u64::MAX as f64)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(millis as u64))
}
