//! Format constants and the service limits this crate enforces.

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that ends every aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Bytes every aggregated record spends on framing: magic plus digest.
pub const AGGREGATION_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

/// The KPL's default `AggregationMaxSize`: aggregates of at most this many bytes (data plus
/// partition key). Smaller than the 1 MiB record limit on purpose: small aggregates spread load
/// across shards and cut latency.
pub const DEFAULT_MAX_AGGREGATE_SIZE: usize = 51_200;

/// Kinesis' default `MaxRecordSize` (data plus partition key) for one record.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// Partition keys are 1 to 256 Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
