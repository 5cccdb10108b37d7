//! A fault-injecting Kinesis endpoint for tests and benchmarks.
//!
//! The local emulator (kinesis-mock) never throttles and never fails a PutRecords entry, so a
//! producer's retry paths cannot be exercised against it. A [`FaultProxy`] sits between an AWS
//! SDK client and the emulator, speaks the same wire protocol (awsJson1_1: `POST /` with
//! `X-Amz-Target: Kinesis_20131202.<Operation>` and a JSON body), and injects the failures the
//! real service produces:
//!
//! - whole-call throttling (HTTP 400 `ProvisionedThroughputExceededException`),
//! - whole-call server errors (HTTP 500 `InternalFailure`, see [`ServerError`]),
//! - partial PutRecords failures: chosen entries are not forwarded and are answered with
//!   `ProvisionedThroughputExceededException` or `InternalFailure`, merged in order with the
//!   upstream's answer for the others,
//! - slow answers, connections closed before or after the upstream processed the request, and
//!   a stall switch that holds requests until it is cleared.
//!
//! With [`Upstream::Sink`] there is no emulator at all: the proxy answers PutRecords itself
//! (success for every entry, shard chosen from the MD5 hash-key ranges of an evenly split
//! stream, increasing sequence numbers per shard), plus ListShards and DescribeStreamSummary
//! for any stream name. That is the local sink for producer benchmarks.
//!
//! [`Upstream::ReadSink`] is the same sink with records to read: at start it generates user
//! records for every shard (random data over random partition keys that route to that shard,
//! optionally packed into KPL aggregates) and then answers GetShardIterator and GetRecords
//! from them, each record's JSON encoded once in advance so an answer is a slice of that
//! encoding between a short prefix and suffix, sent without copying. That is the local source
//! for consumer benchmarks.
//!
//! Which faults to inject is a [`Faults`] value, changeable at run time with
//! [`FaultProxy::set_faults`]; every random choice comes from a generator seeded by
//! [`Faults::seed`]. [`FaultProxy::stats`] counts what happened.
//!
//! # Examples
//!
//! ```no_run
//! use fault_proxy::{FaultProxy, Faults, Upstream};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = std::env::var("AWS_ENDPOINT_URL_KINESIS")?;
//! let proxy = FaultProxy::start(
//!     Upstream::Forward(upstream),
//!     Faults {
//!         partial_failure_rate: 0.1,
//!         seed: 1,
//!         ..Faults::default()
//!     },
//! )
//! .await?;
//! // Point an SDK client at the proxy.
//! let endpoint = proxy.endpoint_url();
//! # let _ = endpoint;
//! // ... run the test, then:
//! println!("{:?}", proxy.stats());
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The `fault-proxy` binary runs one from the command line (`fault-proxy --help`).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod faults;
mod reads;
mod server;
mod shards;
mod sink;
mod stats;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{DEFAULT_FAIL_OPERATIONS, Faults, FaultsError, ServerError};
pub use shards::{even_hash_ranges, partition_key_hash, shard_id};
pub use stats::{FaultCounts, Stats};

use server::{Backend, Forwarder, Shared};

/// Most shards an [`Upstream::Sink`] may have.
pub const MAX_SINK_SHARDS: u32 = 100_000;

/// Where a [`FaultProxy`] sends the requests it does not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upstream {
    /// Forward every request unchanged (same method, path, headers and body, except for the
    /// entries that [`Faults::partial_failure_rate`] removes from a PutRecords body) to a
    /// Kinesis endpoint such as kinesis-mock: `http://host:port`. Only plain HTTP.
    ///
    /// Requests are forwarded with their original signature, which no longer matches when
    /// entries were removed: fine for emulators, which do not check signatures.
    Forward(String),
    /// No upstream: answer PutRecords, PutRecord, ListShards, DescribeStreamSummary and
    /// DescribeStream for any stream name, as a stream of `shards` shards that split the hash
    /// space evenly (like CreateStream). Every entry succeeds (unless a fault says otherwise) on
    /// the shard whose range holds the MD5 of its partition key (or its ExplicitHashKey), with
    /// increasing sequence numbers per shard. Requests beyond the service limits (more than
    /// 500 entries, more than 5 MiB, a record over 1 MiB, a partition key of 0 or more than 256
    /// characters, an invalid ExplicitHashKey) are refused with HTTP 400; other operations
    /// get HTTP 400 `UnknownOperationException`.
    Sink {
        /// Number of shards, 1 to [`MAX_SINK_SHARDS`].
        shards: u32,
    },
    /// A [`Sink`](Self::Sink) for a stream whose MaxRecordSize was raised (UpdateMaxRecordSize,
    /// 1 to 10 MiB): records up to `max_record_size` bytes of data, and PutRecords requests up
    /// to 10 MiB, as the service allows for such streams.
    LargeRecordSink {
        /// Number of shards, 1 to [`MAX_SINK_SHARDS`].
        shards: u32,
        /// Most bytes of data in one record, 1 MiB to 10 MiB.
        max_record_size: usize,
    },
    /// A [`Sink`](Self::Sink) with records to read: also answers GetShardIterator
    /// (`TRIM_HORIZON`, `LATEST`, `AT_SEQUENCE_NUMBER`, `AFTER_SEQUENCE_NUMBER`,
    /// `AT_TIMESTAMP`) and GetRecords, from records generated when the proxy starts.
    ///
    /// Each shard gets `records_per_shard` user records of `record_size` random bytes, each
    /// with a partition key drawn from `keys` random 16-character keys: the keys whose MD5
    /// routes to that shard (plus one more random key for a shard that none routes to). With
    /// `aggregated`, consecutive user records are packed into KPL aggregates of at most
    /// 51,200 bytes ([`aggregation_proto::Aggregator`]'s default); otherwise each user record
    /// is a Kinesis record. The data is the same on every start (fixed seeds).
    ///
    /// Kinesis records get increasing sequence numbers (`49`, the shard index as 10 digits, a
    /// counter from 1 as 20 digits) and arrival times 1 ms apart ending when the proxy
    /// started. GetRecords returns up to `Limit` records (default and maximum 10,000) and at
    /// most 10 MiB of data, a `NextShardIterator` (never null: the shards stay open, there
    /// are never `ChildShards`) and `MillisBehindLatest` (the arrival-time distance to the
    /// shard's last record); past the last record it returns empty pages with
    /// `MillisBehindLatest` 0. Iterators never expire and no read limits (5 calls or 2 MiB
    /// per second per shard) apply. PutRecords is answered as by the sink, after the generated
    /// sequence numbers, but such records are not readable.
    ///
    /// Memory: about `shards * records_per_shard * (record_size * 4 / 3 + 150)` bytes; a data
    /// set estimated above 16 GiB is refused. Generating takes about a second per few hundred
    /// MB, on all cores, before [`FaultProxy::start`] returns.
    ReadSink {
        /// Number of shards, 1 to [`MAX_SINK_SHARDS`].
        shards: u32,
        /// User records per shard.
        records_per_shard: u64,
        /// Bytes of random data per user record (at most 1 MiB minus the 16-byte key).
        record_size: usize,
        /// Pack the user records into KPL aggregates.
        aggregated: bool,
        /// Distinct random partition keys, at least 1.
        keys: usize,
    },
}

/// Why a [`FaultProxy`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The [`Upstream::Forward`] URL is not a plain `http://host:port` URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUpstream {
        /// The refused URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The [`Upstream::Sink`] shard count is 0 or above [`MAX_SINK_SHARDS`].
    #[error("a sink needs 1 to {MAX_SINK_SHARDS} shards, got {shards}")]
    InvalidShardCount {
        /// The refused shard count.
        shards: u32,
    },
    /// The [`Upstream::LargeRecordSink`] record size is outside 1 MiB to 10 MiB.
    #[error("a stream's MaxRecordSize is 1 MiB to 10 MiB, got {max_record_size} bytes")]
    InvalidMaxRecordSize {
        /// The refused size.
        max_record_size: usize,
    },
    /// The [`Upstream::ReadSink`] data cannot be generated (no keys, records too large, or
    /// too much data).
    #[error("invalid read sink: {0}")]
    InvalidReadSink(String),
    /// The initial [`Faults`] are invalid.
    #[error("invalid faults")]
    InvalidFaults(#[source] FaultsError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Not called within a Tokio runtime.
    #[error("FaultProxy::start must run within a Tokio runtime")]
    NoRuntime,
}

/// A running fault-injecting Kinesis endpoint (see the [crate docs](crate)).
///
/// Serves HTTP/1.1 on a local port from a background task. Dropping the handle aborts that
/// task and closes every connection; [`shutdown`](Self::shutdown) does the same and waits
/// until the port is released.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` with a free port.
    ///
    /// # Errors
    ///
    /// See [`StartError`].
    pub async fn start(upstream: Upstream, faults: Faults) -> Result<Self, StartError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream, faults).await
    }

    /// Starts a proxy listening on `addr` (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// See [`StartError`].
    pub async fn start_on(
        addr: SocketAddr,
        upstream: Upstream,
        faults: Faults,
    ) -> Result<Self, StartError> {
        faults.validate().map_err(StartError::InvalidFaults)?;
        let backend = match upstream {
            Upstream::Forward(url) => match Forwarder::new(&url) {
                Ok(forwarder) => Backend::Forward(Box::new(forwarder)),
                Err(reason) => return Err(StartError::InvalidUpstream { url, reason }),
            },
            Upstream::Sink { shards } => {
                if shards == 0 || shards > MAX_SINK_SHARDS {
                    return Err(StartError::InvalidShardCount { shards });
                }
                Backend::Sink(sink::Sink::new(shards))
            }
            Upstream::LargeRecordSink {
                shards,
                max_record_size,
            } => {
                if shards == 0 || shards > MAX_SINK_SHARDS {
                    return Err(StartError::InvalidShardCount { shards });
                }
                if !(sink::MAX_RECORD_DATA..=sink::MAX_RAISED_RECORD_DATA)
                    .contains(&max_record_size)
                {
                    return Err(StartError::InvalidMaxRecordSize { max_record_size });
                }
                Backend::Sink(sink::Sink::new(shards).with_max_record_size(max_record_size))
            }
            Upstream::ReadSink {
                shards,
                records_per_shard,
                record_size,
                aggregated,
                keys,
            } => {
                if shards == 0 || shards > MAX_SINK_SHARDS {
                    return Err(StartError::InvalidShardCount { shards });
                }
                let spec = reads::ReadSpec {
                    records_per_shard,
                    record_size,
                    aggregated,
                    keys,
                };
                spec.check(shards).map_err(StartError::InvalidReadSink)?;
                tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
                let generate =
                    tokio::task::spawn_blocking(move || sink::Sink::with_reads(shards, spec));
                match generate.await {
                    Ok(sink) => Backend::Sink(sink),
                    Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => return Err(StartError::NoRuntime),
                }
            }
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(faults, backend));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = runtime.spawn(server::serve(listener, Arc::clone(&shared), shutdown_rx));
        tracing::debug!(%addr, "fault proxy listening");
        Ok(Self {
            addr,
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The URL to give an SDK client as its endpoint: `http://127.0.0.1:<port>`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults, for requests that have not drawn theirs yet, and re-seeds the
    /// random generator with `faults.seed`. Clearing [`Faults::stall`] releases every held
    /// request.
    ///
    /// # Errors
    ///
    /// [`FaultsError`] when a rate is not a probability; the faults in force do not change.
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        // Hold the generator while swapping so no request draws from the old seed with the
        // new faults.
        let mut rng = self.shared.lock_rng();
        *rng = StdRng::seed_from_u64(faults.seed);
        self.shared.faults.send_replace(faults);
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting connections, closes every open one (requests in flight, stalled ones
    /// included, get no answer) and waits until the background task has finished.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes still stops the proxy (through `Drop`).
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
        }
        self.task = None;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<FaultProxy>();
        assert_send_sync::<Faults>();
        assert_send_sync::<Stats>();
        assert_send_sync::<StartError>();
    }

    #[tokio::test]
    async fn start_refuses_bad_configuration() {
        for url in [
            "ftp://x",
            "https://127.0.0.1:1",
            "http://127.0.0.1:1/path",
            "nope",
        ] {
            let result =
                FaultProxy::start(Upstream::Forward(url.to_owned()), Faults::default()).await;
            assert!(
                matches!(result, Err(StartError::InvalidUpstream { .. })),
                "{url}: {result:?}"
            );
        }
        let result = FaultProxy::start(Upstream::Sink { shards: 0 }, Faults::default()).await;
        assert!(matches!(
            result,
            Err(StartError::InvalidShardCount { shards: 0 })
        ));
        for max_record_size in [1024 * 1024 - 1, 10 * 1024 * 1024 + 1] {
            let result = FaultProxy::start(
                Upstream::LargeRecordSink {
                    shards: 1,
                    max_record_size,
                },
                Faults::default(),
            )
            .await;
            assert!(
                matches!(result, Err(StartError::InvalidMaxRecordSize { .. })),
                "{max_record_size}: {result:?}"
            );
        }
        let bad = Faults {
            throttle_rate: 2.0,
            ..Faults::default()
        };
        let result = FaultProxy::start(Upstream::Sink { shards: 1 }, bad.clone()).await;
        assert!(matches!(result, Err(StartError::InvalidFaults(_))));

        let proxy = FaultProxy::start(Upstream::Sink { shards: 1 }, Faults::default())
            .await
            .unwrap();
        assert!(proxy.set_faults(bad).is_err());
        assert_eq!(proxy.faults(), Faults::default());
        assert!(proxy.endpoint_url().starts_with("http://127.0.0.1:"));
        proxy.shutdown().await;
    }
}
