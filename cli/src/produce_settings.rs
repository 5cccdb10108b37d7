//! The producer's main settings on `kinesis-cat produce`, each named after its builder method
//! and mapped to the Java KPL's name; unset flags keep the library's defaults.

use std::time::Duration;

use clap::Args;
use kpl::ProducerBuilder;

#[derive(Debug, Args)]
pub(crate) struct ProducerSettings {
    /// How long a record may wait for others to share its aggregate and call, in milliseconds
    /// (KPL RecordMaxBufferedTime; default 100).
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// Largest aggregate, data plus partition keys, in bytes (KPL AggregationMaxSize; default
    /// 51200).
    #[arg(long, value_name = "BYTES")]
    aggregation_max_size: Option<usize>,
    /// Most user records per aggregate (KPL AggregationMaxCount; default unlimited).
    #[arg(long, value_name = "N")]
    aggregation_max_count: Option<usize>,
    /// How long a record may take to be stored before it fails as expired, in milliseconds
    /// (KPL RecordTtl; default 30000).
    #[arg(long, value_name = "MS")]
    record_ttl_ms: Option<u64>,
    /// Per-shard send rate as a percentage of the shard limits (KPL RateLimit; default 150).
    /// `--rate` limits the lines read per second instead.
    #[arg(long, value_name = "PERCENT")]
    rate_limit_percent: Option<u32>,
    /// Memory budget: bytes of records accepted and not yet answered; reading waits beyond it
    /// (default 64 MiB; each record counts twice its size plus 512 bytes).
    #[arg(long, value_name = "BYTES")]
    max_outstanding_bytes: Option<usize>,
    /// Records accepted and not yet answered; reading waits beyond it (default 100000).
    #[arg(long, value_name = "N")]
    max_outstanding_records: Option<usize>,
    /// Most PutRecords calls in flight (KPL MaxConnections; default 24).
    #[arg(long, value_name = "N")]
    max_concurrent_requests: Option<usize>,
}

impl ProducerSettings {
    /// The builder with every setting given; the builder's `build` checks their ranges.
    pub(crate) fn apply(&self, mut builder: ProducerBuilder) -> ProducerBuilder {
        if let Some(ms) = self.linger_ms {
            builder = builder.linger(Duration::from_millis(ms));
        }
        if let Some(bytes) = self.aggregation_max_size {
            builder = builder.max_aggregate_size(bytes);
        }
        if let Some(count) = self.aggregation_max_count {
            builder = builder.max_aggregate_count(count);
        }
        if let Some(ms) = self.record_ttl_ms {
            builder = builder.record_ttl(Duration::from_millis(ms));
        }
        if let Some(percent) = self.rate_limit_percent {
            builder = builder.rate_limit_percent(percent);
        }
        if let Some(bytes) = self.max_outstanding_bytes {
            builder = builder.max_outstanding_bytes(bytes);
        }
        if let Some(records) = self.max_outstanding_records {
            builder = builder.max_outstanding_records(records);
        }
        if let Some(calls) = self.max_concurrent_requests {
            builder = builder.max_concurrent_requests(calls);
        }
        builder
    }
}
