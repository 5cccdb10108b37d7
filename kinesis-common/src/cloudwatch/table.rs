//! The two tables: which facade metric is published at which level, with which unit and
//! dimensions. The facade names and labels are the libraries' (`kpl/src/metrics.rs`,
//! `kcl/src/metrics.rs`, the lease coordinator's).

use aws_sdk_cloudwatch::types::StandardUnit;
use metrics::Key;

use super::{Granularity, Level, MAX_DIMENSION_VALUE};

/// A consumer dimension that can be turned off (`Operation` always goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// `ShardId`, on per-shard metrics.
    ShardId,
    /// `WorkerIdentifier`, on the worker's lease metrics.
    WorkerIdentifier,
    /// `StreamId` (the stream's name), on per-shard and per-stream metrics.
    StreamId,
}

/// One CloudWatch series a facade key feeds: its name, unit and dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) unit: StandardUnit,
    pub(crate) dimensions: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Table {
    Producer {
        granularity: Granularity,
    },
    Consumer {
        worker: String,
        shard_id: bool,
        worker_identifier: bool,
        stream_id: bool,
    },
}

/// The KPL's metrics (`aws::metrics::constants::filter` and `unit` in the KPL) and ours.
const PRODUCER: &[(&str, Level, Unit)] = &[
    ("UserRecordsReceived", Level::Detailed, Unit::Count),
    ("UserRecordsPending", Level::Detailed, Unit::Count),
    ("UserRecordsPut", Level::Summary, Unit::Count),
    ("UserRecordsDataPut", Level::Detailed, Unit::Bytes),
    ("KinesisRecordsPut", Level::Summary, Unit::Count),
    ("KinesisRecordsDataPut", Level::Detailed, Unit::Bytes),
    ("ErrorsByCode", Level::Summary, Unit::Count),
    ("AllErrors", Level::Summary, Unit::Count),
    ("RetriesPerRecord", Level::Detailed, Unit::Count),
    ("UserRecordExpired", Level::Summary, Unit::Count),
    ("BufferingTime", Level::Summary, Unit::Millis),
    ("RequestTime", Level::Detailed, Unit::Millis),
    ("UserRecordsPerKinesisRecord", Level::Detailed, Unit::Count),
    (
        "KinesisRecordsPerPutRecordsRequest",
        Level::Detailed,
        Unit::Count,
    ),
    // Ours: records a caller lost, or may see twice, are what an operator alarms on.
    ("UserRecordsFailed", Level::Summary, Unit::Count),
    ("UserRecordsPossiblyDuplicated", Level::Summary, Unit::Count),
    ("PutRecordsTimedOut", Level::Detailed, Unit::Count),
    ("PutRecordsConcurrencyLimit", Level::Detailed, Unit::Count),
    (
        "UserRecordsPutWithoutShardMap",
        Level::Detailed,
        Unit::Count,
    ),
];

/// Where a consumer metric belongs: to a shard (label `shard`), to the stream, or to the
/// worker (its leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Shard,
    Stream,
    Worker,
}

/// The KCL's metrics under their Java KCL operations, and ours.
const CONSUMER: &[(&str, &str, Level, Unit, Scope)] = &[
    (
        "RecordsProcessed",
        "ProcessTask",
        Level::Summary,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "DataBytesProcessed",
        "ProcessTask",
        Level::Summary,
        Unit::Bytes,
        Scope::Shard,
    ),
    (
        "MillisBehindLatest",
        "ProcessTask",
        Level::Summary,
        Unit::Millis,
        Scope::Shard,
    ),
    (
        "RecordProcessor.processRecords.Time",
        "ProcessTask",
        Level::Summary,
        Unit::Millis,
        Scope::Shard,
    ),
    (
        "RecordProcessor.Failures",
        "ProcessTask",
        Level::Summary,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "SecondsSinceLastSuccessfulRead",
        "ProcessTask",
        Level::Summary,
        Unit::Seconds,
        Scope::Shard,
    ),
    (
        "GetRecords.Throttled",
        "ProcessTask",
        Level::Detailed,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "GetRecords.ExpiredIterator",
        "ProcessTask",
        Level::Detailed,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "RecordProcessor.shardEnded.Failures",
        "ShutdownTask",
        Level::Summary,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "ShardEnd.Abandoned",
        "ShutdownTask",
        Level::Summary,
        Unit::Count,
        Scope::Shard,
    ),
    (
        "BatchMemory.Bytes",
        "ProcessTask",
        Level::Detailed,
        Unit::Bytes,
        Scope::Stream,
    ),
    (
        "CurrentLeases",
        "RenewAllLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "LostLeases",
        "RenewAllLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "RenewLease.Failures",
        "RenewAllLeases",
        Level::Detailed,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "DuplicateWorkerId",
        "RenewAllLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "TakenLeases",
        "TakeLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "StolenLeases",
        "TakeLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "NumWorkers",
        "TakeLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "NeededLeases",
        "TakeLeases",
        Level::Detailed,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "TargetLeases",
        "TakeLeases",
        Level::Summary,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "TotalLeases",
        "TakeLeases",
        Level::Detailed,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "TakeLeases.Failures",
        "TakeLeases",
        Level::Detailed,
        Unit::Count,
        Scope::Worker,
    ),
    (
        "LeaseCleanup.Deleted",
        "LeaseCleanupManager",
        Level::Detailed,
        Unit::Count,
        Scope::Worker,
    ),
];

#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Bytes,
    Millis,
    Seconds,
}

impl Unit {
    fn standard(self) -> StandardUnit {
        match self {
            Self::Count => StandardUnit::Count,
            Self::Bytes => StandardUnit::Bytes,
            Self::Millis => StandardUnit::Milliseconds,
            Self::Seconds => StandardUnit::Seconds,
        }
    }
}

fn label<'a>(key: &'a Key, name: &str) -> Option<&'a str> {
    key.labels()
        .find(|label| label.key() == name)
        .map(|label| label.value())
}

/// A dimension value within the API's length (an error message used as a code, say).
fn value(value: &str) -> String {
    match value.char_indices().nth(MAX_DIMENSION_VALUE) {
        Some((end, _)) => value[..end].to_owned(),
        None => value.to_owned(),
    }
}

impl Table {
    pub(crate) fn producer(granularity: Granularity) -> Self {
        Self::Producer { granularity }
    }

    pub(crate) fn consumer(worker: String) -> Self {
        Self::Consumer {
            worker,
            shard_id: true,
            worker_identifier: true,
            stream_id: false,
        }
    }

    pub(crate) fn set_granularity(&mut self, to: Granularity) {
        if let Self::Producer { granularity } = self {
            *granularity = to;
        }
    }

    pub(crate) fn set_dimensions(&mut self, enabled: &[Dimension]) {
        if let Self::Consumer {
            shard_id,
            worker_identifier,
            stream_id,
            ..
        } = self
        {
            *shard_id = enabled.contains(&Dimension::ShardId);
            *worker_identifier = enabled.contains(&Dimension::WorkerIdentifier);
            *stream_id = enabled.contains(&Dimension::StreamId);
        }
    }

    /// The series `key` feeds at `level`: none for a name the table does not know or a
    /// metric above the level.
    pub(crate) fn series(&self, key: &Key, level: Level) -> Vec<Series> {
        match self {
            Self::Producer { granularity } => producer(key, level, *granularity),
            Self::Consumer {
                worker,
                shard_id,
                worker_identifier,
                stream_id,
            } => {
                let Some(&(name, operation, at, unit, scope)) =
                    CONSUMER.iter().find(|entry| entry.0 == key.name())
                else {
                    return Vec::new();
                };
                if at > level {
                    return Vec::new();
                }
                let mut dimensions = vec![("Operation".to_owned(), operation.to_owned())];
                if *stream_id
                    && scope != Scope::Worker
                    && let Some(stream) = label(key, "stream")
                {
                    dimensions.push(("StreamId".to_owned(), value(stream)));
                }
                if *shard_id
                    && scope == Scope::Shard
                    && let Some(shard) = label(key, "shard")
                {
                    dimensions.push(("ShardId".to_owned(), value(shard)));
                }
                if *worker_identifier && scope == Scope::Worker && !worker.is_empty() {
                    dimensions.push(("WorkerIdentifier".to_owned(), value(worker)));
                }
                vec![Series {
                    name: name.to_owned(),
                    unit: unit.standard(),
                    dimensions,
                }]
            }
        }
    }
}

/// The KPL's way: one series per prefix of `[ErrorCode], StreamName, [ShardId]` whose
/// granularity (shard if it holds `ShardId`, stream if `StreamName`, else global) is within
/// the setting.
fn producer(key: &Key, level: Level, granularity: Granularity) -> Vec<Series> {
    let Some(&(name, at, unit)) = PRODUCER.iter().find(|entry| entry.0 == key.name()) else {
        return Vec::new();
    };
    if at > level {
        return Vec::new();
    }
    let mut chain: Vec<(&str, String, Granularity)> = Vec::new();
    if let Some(code) = label(key, "error_code") {
        chain.push(("ErrorCode", value(code), Granularity::Global));
    }
    if let Some(stream) = label(key, "stream") {
        chain.push(("StreamName", value(stream), Granularity::Stream));
        if let Some(shard) = label(key, "shard") {
            chain.push(("ShardId", value(shard), Granularity::Shard));
        }
    }
    (0..=chain.len())
        .filter(|&len| chain[..len].iter().all(|(_, _, g)| *g <= granularity))
        .map(|len| Series {
            name: name.to_owned(),
            unit: unit.standard(),
            dimensions: chain[..len]
                .iter()
                .map(|(name, value, _)| ((*name).to_owned(), value.clone()))
                .collect(),
        })
        .collect()
}
