//! [`ProducerBuilder`]: every setting, its default and its Java KPL name.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tracing::Instrument;

use crate::budget::Budget;
use crate::client::{ErrorClass, KinesisApi, KinesisError, SdkKinesis, ShardListing, StreamId};
use crate::config::{MisroutedRecords, ProducerConfig};
use crate::error::ConfigError;
use crate::health::Health;
use crate::inbox::inbox;
use crate::metrics::Metrics;
use crate::pipeline::{Parts, Pipeline, ShardMap};
use crate::producer::{Producer, Shared};
use crate::streams::StreamRegistry;

/// Records queued for the pipeline and not yet taken (see [`crate::inbox`]).
const INBOX_RECORDS: usize = 4 * 1024;

/// Configures a [`Producer`]. Defaults follow the Java/C++ KPL unless noted.
///
/// | Java KPL (`KinesisProducerConfiguration`) | here | default |
/// |---|---|---|
/// | `AggregationEnabled` | [`aggregation`](Self::aggregation) | on |
/// | `AggregationMaxCount` | [`max_aggregate_count`](Self::max_aggregate_count) | unlimited |
/// | `AggregationMaxSize` | [`max_aggregate_size`](Self::max_aggregate_size) | 51,200 bytes |
/// | `CollectionMaxCount` | [`max_batch_records`](Self::max_batch_records) | 500 |
/// | `CollectionMaxSize` | [`max_batch_bytes`](Self::max_batch_bytes) | 5 MiB |
/// | `RecordMaxBufferedTime` | [`linger`](Self::linger) | 100 ms |
/// | `RecordTtl` | [`record_ttl`](Self::record_ttl) | 30 s (`Duration::MAX`: never) |
/// | `RateLimit` | [`rate_limit_percent`](Self::rate_limit_percent) | 150 % |
/// | `FailIfThrottled` | [`fail_if_throttled`](Self::fail_if_throttled) | off |
/// | `MaxConnections` | [`max_concurrent_requests`](Self::max_concurrent_requests) | 24 (adaptive below it) |
/// | `RequestTimeout` | [`request_timeout`](Self::request_timeout) | 6 s (plus time for the call's size) |
/// | `MinConnections`, `ConnectTimeout`, `VerifyCertificate`, `Region`, `KinesisEndpoint`, `KinesisPort`, credentials | the SDK config ([`sdk_config`](Self::sdk_config) / [`client`](Self::client)) | the SDK's |
/// | `MetricsLevel`, `MetricsGranularity`, `MetricsNamespace`, `MetricsUploadDelay`, `CloudwatchEndpoint` | the `metrics` facade recorder the application installs | |
/// | `LogLevel` | the `tracing` subscriber | |
/// | `ThreadingModel`, `ThreadPoolSize`, `NativeExecutable`, `TempDirectory`, `EnableCoreDumps` | none: in-process, on the caller's tokio runtime | |
/// | `getOutstandingRecordsCount()` polling and sleeping | [`max_outstanding_records`](Self::max_outstanding_records), [`max_outstanding_bytes`](Self::max_outstanding_bytes): `send` waits; [`stream_share_percent`](Self::stream_share_percent): one stream's most, with several | 100,000 records, 64 MiB; 75 % |
/// | (none; records of a key may be reordered) | [`ordered`](Self::ordered), [`ordering_lanes`](Self::ordering_lanes) | off (`kinesis-cat produce`: on), 8 lanes per shard |
/// | (none) | [`adaptive_concurrency`](Self::adaptive_concurrency), [`min_backoff`](Self::min_backoff), [`max_backoff`](Self::max_backoff), [`shard_map_refresh_interval`](Self::shard_map_refresh_interval), [`list_shards_timeout`](Self::list_shards_timeout), [`list_shards_at_build`](Self::list_shards_at_build), [`misrouted_records`](Self::misrouted_records), [`max_record_size`](Self::max_record_size) | on, 100 ms, 5 s, 60 s, 30 s, on, resend all, 1 MiB |
#[derive(Debug)]
#[must_use]
pub struct ProducerBuilder {
    stream: StreamId,
    api: Option<Arc<dyn KinesisApi>>,
    config: ProducerConfig,
    jitter_seed: Option<u64>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ProducerBuilder {
    pub(crate) fn new(stream: StreamId) -> Self {
        Self {
            stream,
            api: None,
            config: ProducerConfig::default(),
            jitter_seed: None,
        }
    }

    /// Builds the Kinesis client from an SDK config (region, credentials, endpoint override).
    ///
    /// The config must carry a behavior version, as
    /// `aws_config::load_defaults(BehaviorVersion::latest())` sets: this crate does not choose one
    /// for its users, and the SDK's client panics without one.
    pub fn sdk_config(self, config: &aws_types::SdkConfig) -> Self {
        self.client(aws_sdk_kinesis::Client::new(config))
    }

    /// Uses this Kinesis client's configuration. The producer turns off the client's own
    /// retries: it retries itself, per record, bounded by the record TTL.
    pub fn client(mut self, client: aws_sdk_kinesis::Client) -> Self {
        self.api = Some(Arc::new(SdkKinesis::new(&client)));
        self
    }

    /// Talks to Kinesis through `api` instead of the AWS SDK: a test fake such as
    /// `kpl::testing::FakeKinesis` (feature `test-util`), or a proxy.
    pub fn kinesis_api(mut self, api: impl KinesisApi) -> Self {
        self.api = Some(Arc::new(api));
        self
    }

    setter!(
        /// Aggregate user records into KPL-format records (default on).
        aggregation: bool);
    setter!(
        /// Largest aggregate, in bytes of data plus partition key (default 51,200, the KPL's
        /// AggregationMaxSize).
        max_aggregate_size: usize);
    setter!(
        /// Most user records per aggregate (default unlimited).
        max_aggregate_count: usize);
    setter!(
        /// Most Kinesis records per PutRecords call (default and maximum 500).
        max_batch_records: usize);
    setter!(
        /// Most bytes per PutRecords call (default 5 MiB, the KPL's; at most 10 MiB, the
        /// service's limit since it took 10 MiB records). A record larger than this (on a
        /// stream whose MaxRecordSize was raised) goes in a call of its own.
        max_batch_bytes: usize);
    setter!(
        /// How long a record may wait for others to share its aggregate and call (default
        /// 100 ms, the KPL's RecordMaxBufferedTime; `Duration::MAX`: only full aggregates,
        /// flushes and a pressed budget send). Not waited out while over three quarters of
        /// the outstanding budget is taken: then no more records can come to fill the batch,
        /// so what is ready goes at once.
        linger: Duration);
    setter!(
        /// How long a record may take to be stored, counted from when the pipeline takes it
        /// (normally microseconds after `send`), before it fails with `Expired` (default 30 s;
        /// `Duration::MAX`: never). Applies wherever the record waits: for its aggregate, its
        /// shard's rate limit, a retry, a shard-map refresh; a record in a call in flight waits
        /// for the call's answer (bounded by its timeout) and is failed after it if it expired.
        record_ttl: Duration);
    setter!(
        /// Per-shard send rate as a percentage of the shard limits (default 150).
        rate_limit_percent: u32);
    setter!(
        /// Most records accepted and not yet resolved; `send` waits beyond it (default 100,000).
        max_outstanding_records: usize);
    setter!(
        /// Memory budget for records accepted and not yet resolved; `send` waits beyond it
        /// (default 64 MiB). Each record counts [`record_charge`](crate::record_charge)`(size)`:
        /// twice its data plus partition key, plus 512 bytes of bookkeeping. Measured peak RSS
        /// of a producing process stays within twice this plus 32 MiB (BENCHMARKS.md).
        max_outstanding_bytes: usize);
    setter!(
        /// With several streams ([`Producer::for_stream`](crate::Producer::for_stream)), the
        /// most one stream may hold of [`max_outstanding_records`](Self::max_outstanding_records)
        /// and [`max_outstanding_bytes`](Self::max_outstanding_bytes), in percent (default 75):
        /// a stream throttled for long (or deleted) fills its share and its senders wait, while
        /// the other streams keep the rest. 100: no limit. A single stream may always use the
        /// whole budget.
        stream_share_percent: u32);
    setter!(
        /// Largest user record accepted, data plus partition key (default 1 MiB; up to 10 MiB
        /// for streams whose MaxRecordSize was raised). Records over 5 MiB go in a PutRecords
        /// call of their own; [`max_outstanding_bytes`](Self::max_outstanding_bytes) must hold
        /// [`record_charge`](crate::record_charge) of it.
        max_record_size: usize);
    setter!(
        /// Most PutRecords calls in flight (default 24, the KPL's MaxConnections). With
        /// [`adaptive_concurrency`](Self::adaptive_concurrency) the producer starts at one and
        /// climbs to it while calls answer in the time their size should take.
        max_concurrent_requests: usize);
    setter!(
        /// Adapt the calls in flight and each call's timeout to the endpoint (default on):
        /// the number of calls grows while calls answer in time and halves when one times out
        /// or suddenly takes over twice what its size should; a call's timeout is
        /// `request_timeout` plus three times what its size takes at the throughput observed.
        /// Off: always `max_concurrent_requests` calls and `request_timeout`, which on a slow
        /// link times calls out while they are being stored and sends their records again.
        adaptive_concurrency: bool);
    setter!(
        /// Keep the records of each partition key (each hash key) in the order they were sent:
        /// at most one Kinesis record per ordering lane of a shard is in flight, a retry goes
        /// before anything later of its lane, and after a reshard nothing is sent until the
        /// calls made under the old shard map have settled. While a lane's record is in flight,
        /// what arrives for it fills one aggregate, sent whole when the answer comes (not one
        /// small aggregate per linger waiting behind it). Off (the default): more records in
        /// flight per shard, and a key's records may be stored out of order under retries or
        /// several calls in flight.
        ///
        /// Why off by default: on the producer benchmark (BENCHMARKS.md, a local sink without
        /// shard limits, 1.8 M records/s) order costs 16 % of throughput, more than the 10 %
        /// this project accepts for a default; against real shards, whose limits are far below
        /// what one lane carries, it costs nothing measurable. `kinesis-cat produce` keeps
        /// order by default.
        ///
        /// The order holds for every record answered stored. A record that fails with
        /// [`RecordFailure::may_be_stored`](crate::RecordFailure::may_be_stored) (an attempt's
        /// answer never came, then its TTL ran out) may still be stored by that attempt, after
        /// later records of its key: a record the producer no longer holds cannot hold its lane.
        ordered: bool);
    setter!(
        /// Independent ordering lanes per shard when [`ordered`](Self::ordered) (default 8,
        /// 1..=64): each hash key belongs to one lane, lanes are in flight side by side. More
        /// lanes: more throughput per shard on a slow or far endpoint; fewer: fuller
        /// aggregates at low rates (each lane lingers on its own). One lane keeps the whole
        /// shard in order.
        ordering_lanes: usize);
    setter!(
        /// Fail a throttled record at once with `Throttled` instead of retrying (default off).
        fail_if_throttled: bool);
    setter!(
        /// Smallest retry backoff envelope (default 100 ms, at least 1 ms).
        min_backoff: Duration);
    setter!(
        /// Largest retry backoff envelope (default 5 s, at most one hour).
        max_backoff: Duration);
    setter!(
        /// How often the shard map is refreshed without a reason (default 60 s, at least
        /// 100 ms; `Duration::MAX`: only when a put shows it is stale).
        shard_map_refresh_interval: Duration);
    setter!(
        /// The base timeout of one PutRecords call (default 6 s, the KPL's RequestTimeout;
        /// 1 ms..=10 min). See [`adaptive_concurrency`](Self::adaptive_concurrency).
        request_timeout: Duration);
    setter!(
        /// Timeout of a shard-map listing, all pages (default 30 s; 1 ms..=10 min), `build`'s
        /// included.
        list_shards_timeout: Duration);
    setter!(
        /// List the stream's shards in [`build`](Self::build) (default on): `build` fails at
        /// once for a stream that does not exist or cannot be read, and the first records are
        /// aggregated per shard as soon as they arrive. Off, `build` returns without calling
        /// Kinesis and the pipeline lists the shards in its own task right away; records sent
        /// before the map arrives wait for it (within their TTL) and are then aggregated per
        /// shard as usual, and a stream that cannot be listed fails those records (`Rejected`)
        /// instead of `build`. For a Lambda function's cold start: the listing overlaps the
        /// rest of the initialization (BENCHMARKS.md, "Lambda").
        list_shards_at_build: bool);
    setter!(
        /// What to do with the records of an aggregate stored whole on a shard other than the
        /// one it was built for, after a reshard (default: send every one again, as the C++
        /// KPL does).
        misrouted_records: MisroutedRecords);

    /// Seeds the retry backoff's jitter, so a test run can be repeated exactly (default: a
    /// random seed).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Checks the settings, lists the stream's shards (not with
    /// [`list_shards_at_build`](Self::list_shards_at_build) off), and starts the pipeline
    /// task. Everything the producer does runs in tasks on the caller's tokio runtime: no
    /// thread or runtime of its own.
    ///
    /// Listing failures a retry can fix (throttling, which a fleet deploy meets at
    /// ListShards' per-stream limit; 5xx; connection errors; stale credentials) are retried
    /// with jittered backoff, all within [`list_shards_timeout`](Self::list_shards_timeout).
    /// A listing the credentials may not make (`AccessDeniedException`: many policies allow
    /// PutRecords only) does not fail the build: records are then sent unaggregated, routed
    /// by Kinesis, while the producer keeps trying to list the shards (a warning says so;
    /// [`RecordSuccess::without_shard_map`](crate::RecordSuccess::without_shard_map) and
    /// [`MetricsSnapshot::user_records_put_without_shard_map`](crate::MetricsSnapshot::user_records_put_without_shard_map)
    /// count them).
    ///
    /// # Errors
    /// [`BuildError::Config`] for unusable settings, a missing client or no runtime;
    /// [`BuildError::ListShards`] when the stream does not exist, or the listing kept failing
    /// until `list_shards_timeout` (its [`KinesisError`] has the last error);
    /// [`BuildError::NoOpenShards`] for a stream being deleted.
    pub async fn build(self) -> Result<Producer, BuildError> {
        let config = self.config;
        config.validate()?;
        let api = self.api.ok_or(ConfigError::MissingClient)?;
        tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let map = if config.list_shards_at_build {
            Some(Self::first_map(&self.stream, &*api, &config, self.jitter_seed).await?)
        } else {
            None
        };
        let registry = Arc::new(StreamRegistry::default());
        let (index, share) = registry.index_of(&self.stream);
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        let (sender, receiver) = inbox(INBOX_RECORDS);
        let budget = Arc::new(Budget::new(
            config.max_outstanding_records,
            config.max_outstanding_bytes,
        ));
        let shared = Arc::new(Shared {
            inbox: sender,
            budget: budget.clone(),
            closed: AtomicBool::new(false),
            metrics: metrics.clone(),
            max_record_size: config.max_record_size,
            health: health.clone(),
            registry: registry.clone(),
            share_limit: config.share_limit(),
        });
        let span = tracing::info_span!("kpl_pipeline", stream = %self.stream);
        let pipeline = Pipeline::new(Parts {
            config,
            api,
            inbox: receiver,
            budget,
            metrics,
            health,
            registry,
            jitter_seed: self.jitter_seed,
        });
        let pipeline = match map {
            Some(FirstMap::Listed(map)) => pipeline.with_map(index, map),
            Some(FirstMap::Denied(error)) => {
                tracing::warn!(
                    stream = %self.stream,
                    %error,
                    "the credentials may not list the stream's shards (kinesis:ListShards): records go unaggregated, routed by Kinesis; allow ListShards to aggregate"
                );
                pipeline.without_map(index)
            }
            // Its first refresh is due at once: the listing starts on the pipeline's first turn.
            None => pipeline.with_stream(index),
        };
        tokio::spawn(pipeline.run().instrument(span));
        Ok(Producer::from_shared(shared, index, share))
    }

    /// The stream's shard map, listed within `list_shards_timeout`, each attempt within a third
    /// of it: failures a retry can fix (a hung attempt too) are retried with full-jitter
    /// backoff (`min_backoff` doubling up to `max_backoff`) while time is left.
    async fn first_map(
        stream: &StreamId,
        api: &dyn KinesisApi,
        config: &crate::config::ProducerConfig,
        jitter_seed: Option<u64>,
    ) -> Result<FirstMap, BuildError> {
        let limit = config.list_shards_timeout;
        let deadline = kinesis_common::later(tokio::time::Instant::now(), limit);
        // One attempt may not take all the time: a dead pooled connection (no reset after an
        // idle NAT timeout) hangs one call, the next one answers at once.
        let attempt_limit = (limit / 3).max(limit.min(Duration::from_secs(1)));
        let mut backoff = kinesis_common::Backoff::new(
            config.min_backoff,
            config.max_backoff,
            kinesis_common::Jitter::Full,
        )
        .with_seed(jitter_seed);
        let failed = |source| BuildError::ListShards {
            stream: stream.to_string(),
            source,
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt_deadline =
                kinesis_common::later(tokio::time::Instant::now(), attempt_limit).min(deadline);
            let listing = tokio::time::timeout_at(
                attempt_deadline,
                api.list_shards(stream, &ShardListing::Open),
            )
            .await
            .unwrap_or_else(|_| Err(KinesisError::timeout("ListShards", attempt_limit)));
            let error = match listing {
                Ok(shards) => {
                    let map = ShardMap::from_listing(&shards);
                    if map.shards.is_empty() {
                        return Err(BuildError::NoOpenShards {
                            stream: stream.to_string(),
                        });
                    }
                    return Ok(FirstMap::Listed(map));
                }
                Err(error) if error.class() == ErrorClass::AccessDenied => {
                    return Ok(FirstMap::Denied(error));
                }
                Err(error) if !error.is_retryable() => return Err(failed(error)),
                Err(error) => error,
            };
            let wake = tokio::time::Instant::now() + backoff.delay(attempts);
            if wake >= deadline {
                return Err(failed(error));
            }
            tracing::debug!(%stream, attempts, %error, "listing the shards failed; retrying");
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// What `build` learnt of the stream's shards.
enum FirstMap {
    Listed(ShardMap),
    /// The credentials may not list them: records go without a map.
    Denied(KinesisError),
}

/// Why [`ProducerBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting cannot work, or no client or runtime.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream's shards could not be listed: check the stream name, region, endpoint and
    /// credentials ([`KinesisError::class`] tells not found from access denied).
    #[error("cannot list the shards of stream {stream}")]
    ListShards {
        /// The stream.
        stream: String,
        /// The classified Kinesis error (the SDK error is its source).
        #[source]
        source: KinesisError,
    },
    /// The stream has no open shard (it is being deleted).
    #[error("stream {stream} has no open shard")]
    NoOpenShards {
        /// The stream.
        stream: String,
    },
}

impl BuildError {
    /// The Kinesis error, when listing the shards failed.
    pub fn kinesis_error(&self) -> Option<&KinesisError> {
        match self {
            Self::ListShards { source, .. } => Some(source),
            Self::Config(_) | Self::NoOpenShards { .. } => None,
        }
    }
}
