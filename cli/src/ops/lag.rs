//! `kinesis-cat lag --application APP --stream S`: per lease the owner, the checkpoint and how
//! far behind the shard's tip it is; then the application's worst lag.
//!
//! - **Time**: `MillisBehindLatest` of one GetRecords (limit 1) at the checkpoint
//!   (`AT_SEQUENCE_NUMBER` of the checkpointed record, `TRIM_HORIZON` for a lease that has not
//!   started), as the service computes it. A lease at `LATEST` is 0 (it starts at the tip), a
//!   finished one (`SHARD_END`) is 0, one at `AT_TIMESTAMP` is unknown (the timestamp is in the
//!   application's configuration, not in the table).
//! - **Records**: Kinesis has no count of the records after a position, so they are counted
//!   by reading them (kcl's `PollingSource`, deaggregated: user records, as the application
//!   sees them) up to `--count-limit`. Past it the count is unknown and the report says at
//!   least how many.
//!
//! Without `--stream` only owners and checkpoints are known (the lease table of a
//! single-stream application does not name its stream).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kcl::lease::{Checkpoint, Lease};
use kcl::retrieval::{PollingConfig, PollingSource, RecordSource, StartingPosition};
use kinesis_common::{
    ErrorChain, ReadShard, SdkKinesis, ShardIteratorStart, ShardListing, StreamId, Timeouts,
};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{OpsError, all_leases, print_json, retried, runtime, sdk_config};

/// Shards measured at once.
const PARALLEL_SHARDS: usize = 8;

#[derive(Debug, Args)]
pub(crate) struct LagArgs {
    /// Application name (the lease table).
    #[arg(long)]
    application: String,
    /// The stream the application reads (needed to measure the lag; without it only owners
    /// and checkpoints are shown).
    #[arg(long)]
    stream: Option<String>,
    /// Count the records behind by reading at most this many per shard; beyond, the count is
    /// reported as unknown (at least this many).
    #[arg(long, default_value_t = 100_000)]
    count_limit: u64,
    /// Exit with code 5 when the worst lag is above this many milliseconds (the report is
    /// printed either way).
    #[arg(long)]
    fail_above_ms: Option<u64>,
    /// Print one JSON document: {"application", "stream", "shards": [{"shard_id", "owner",
    /// "checkpoint", "millis_behind", "records_behind", "records_behind_at_least", "note"}],
    /// "worst": {"shard_id", "millis_behind", "records_behind"}}; unknown values are null.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    application: String,
    stream: Option<String>,
    shards: Vec<ShardLag>,
    /// The shard furthest behind in time (`null` when no lag is known).
    worst: Option<Worst>,
}

#[derive(Debug, Serialize)]
struct ShardLag {
    shard_id: String,
    owner: Option<String>,
    checkpoint: String,
    millis_behind: Option<i64>,
    /// User records after the checkpoint, when all of them could be counted.
    records_behind: Option<u64>,
    /// When the count stopped at `--count-limit`: at least this many.
    records_behind_at_least: Option<u64>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Worst {
    shard_id: String,
    millis_behind: i64,
    records_behind: Option<u64>,
}

pub(crate) fn run(args: LagArgs) -> Result<(), OpsError> {
    runtime()?.block_on(lag(args))
}

async fn lag(args: LagArgs) -> Result<(), OpsError> {
    let config = sdk_config().await;
    let scan = all_leases(&config, &args.application).await?;
    let leases = &scan.leases;
    let mut shards = Vec::with_capacity(leases.len());
    match &args.stream {
        Some(stream) => {
            let client = aws_sdk_kinesis::Client::new(&config);
            let stream = StreamId::from(stream.as_str());
            // Fails early, with exit 3, on a stream that does not exist.
            kinesis_common::list_shards(&client, &stream, &ShardListing::Open)
                .await
                .map_err(|e| OpsError::kinesis(&format!("listing the shards of {stream}"), &e))?;
            let api =
                SdkKinesis::new(&client).with_timeouts(Timeouts::uniform(Duration::from_secs(10)));
            // A few shards at a time: each costs a few calls, and GetRecords allows 5 calls
            // per second per shard, so shards in parallel do not throttle each other.
            let permits = Arc::new(Semaphore::new(PARALLEL_SHARDS));
            let mut tasks = JoinSet::new();
            for (index, lease) in leases.iter().cloned().enumerate() {
                let (client, api, stream) = (client.clone(), api.clone(), stream.clone());
                let permits = permits.clone();
                let limit = args.count_limit;
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    (index, measure(&client, &api, &stream, &lease, limit).await)
                });
            }
            let mut measured = Vec::with_capacity(leases.len());
            while let Some(joined) = tasks.join_next().await {
                let (index, row) =
                    joined.map_err(|e| OpsError::Failed(format!("a measuring task: {e}")))?;
                measured.push((index, row?));
            }
            measured.sort_by_key(|(index, _)| *index);
            shards.extend(measured.into_iter().map(|(_, row)| row));
        }
        None => {
            for lease in leases {
                shards.push(ShardLag {
                    note: Some("no --stream: lag not measured".into()),
                    ..unmeasured(lease)
                });
            }
        }
    }
    let worst = shards
        .iter()
        .filter_map(|s| s.millis_behind.map(|ms| (ms, s)))
        .max_by_key(|(ms, _)| *ms)
        .map(|(ms, s)| Worst {
            shard_id: s.shard_id.clone(),
            millis_behind: ms,
            records_behind: s.records_behind,
        });
    let report = Report {
        application: args.application.clone(),
        stream: args.stream.clone(),
        shards,
        worst,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_readable(&report)?;
    }
    for row in &scan.skipped {
        eprintln!(
            "kinesis-cat lag: skipped row {}: {}",
            row.lease_key.as_deref().unwrap_or("(no leaseKey)"),
            row.reason
        );
    }
    if let (Some(limit), Some(worst)) = (args.fail_above_ms, &report.worst)
        && worst.millis_behind > i64::try_from(limit).unwrap_or(i64::MAX)
    {
        return Err(OpsError::LagAbove(format!(
            "{} is {} ms behind, above --fail-above-ms {limit}",
            worst.shard_id, worst.millis_behind
        )));
    }
    Ok(())
}

fn unmeasured(lease: &Lease) -> ShardLag {
    ShardLag {
        shard_id: lease.lease_key.clone(),
        owner: lease.holder().map(str::to_owned),
        checkpoint: lease.checkpoint.to_string(),
        millis_behind: None,
        records_behind: None,
        records_behind_at_least: None,
        note: None,
    }
}

/// The lag of one lease's checkpoint.
async fn measure<A: ReadShard>(
    client: &aws_sdk_kinesis::Client,
    api: &A,
    stream: &StreamId,
    lease: &Lease,
    count_limit: u64,
) -> Result<ShardLag, OpsError> {
    let row = unmeasured(lease);
    let (iterator_start, position) = match &lease.checkpoint {
        Checkpoint::ShardEnd => {
            return Ok(ShardLag {
                millis_behind: Some(0),
                records_behind: Some(0),
                note: Some("finished (SHARD_END)".into()),
                ..row
            });
        }
        Checkpoint::Latest => {
            return Ok(ShardLag {
                millis_behind: Some(0),
                records_behind: Some(0),
                note: Some("LATEST: starts at the tip".into()),
                ..row
            });
        }
        Checkpoint::AtTimestamp => {
            return Ok(ShardLag {
                note: Some(
                    "AT_TIMESTAMP: the time is the application's setting, not in the table".into(),
                ),
                ..row
            });
        }
        Checkpoint::TrimHorizon => (
            ShardIteratorStart::TrimHorizon,
            StartingPosition::TrimHorizon,
        ),
        Checkpoint::Sequence {
            sequence_number,
            sub_sequence_number,
        } => (
            ShardIteratorStart::AtSequence(sequence_number.clone()),
            StartingPosition::AfterSequence {
                sequence_number: sequence_number.clone(),
                sub_sequence_number: *sub_sequence_number,
            },
        ),
    };
    let shard_id = lease.lease_key.as_str();
    let millis = retried(|| async {
        let iterator = api
            .get_shard_iterator(stream, shard_id, &iterator_start)
            .await?;
        Ok(api
            .get_records(stream, &iterator, 1)
            .await?
            .millis_behind_latest)
    })
    .await;
    let millis = match millis {
        Ok(millis) => millis,
        Err(error) => {
            return Ok(ShardLag {
                note: Some(format!("not measured: {}", ErrorChain(&error))),
                ..row
            });
        }
    };
    let (records, complete) = count_behind(client, stream, shard_id, position, count_limit).await?;
    Ok(ShardLag {
        millis_behind: millis,
        records_behind: complete.then_some(records),
        records_behind_at_least: (!complete).then_some(records),
        note: (!complete).then(|| format!("more than --count-limit {count_limit} records behind")),
        ..row
    })
}

/// Counts the user records after `position` up to the tip (or the shard's end); `false` when
/// it stopped at `limit` first.
async fn count_behind(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamId,
    shard_id: &str,
    position: StartingPosition,
    limit: u64,
) -> Result<(u64, bool), OpsError> {
    let config = PollingConfig::default()
        .prefetch(false)
        .give_up_after(Some(Duration::from_secs(30)));
    let mut source = PollingSource::new(
        client.clone(),
        stream.clone(),
        shard_id.to_owned(),
        None,
        position,
        config,
    );
    let mut counted = 0u64;
    loop {
        let batch = source.next_batch().await.map_err(|e| {
            OpsError::Failed(format!(
                "counting the records of {shard_id}: {}",
                ErrorChain(&e)
            ))
        })?;
        counted += batch.records.len() as u64;
        if counted >= limit {
            return Ok((counted, false));
        }
        if batch.shard_end.is_some() || batch.millis_behind_latest == Some(0) {
            return Ok((counted, true));
        }
    }
}

fn print_readable(report: &Report) -> Result<(), OpsError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<40} {:<62} {:>12} {:>12}",
        "SHARD", "OWNER", "CHECKPOINT", "BEHIND_MS", "RECORDS"
    )?;
    for s in &report.shards {
        let records = match (s.records_behind, s.records_behind_at_least) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) => format!(">={n}"),
            (None, None) => "?".to_owned(),
        };
        writeln!(
            out,
            "{:<24} {:<40} {:<62} {:>12} {:>12}{}",
            s.shard_id,
            s.owner.as_deref().unwrap_or("-"),
            s.checkpoint,
            s.millis_behind.map_or("?".to_owned(), |ms| ms.to_string()),
            records,
            s.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        )?;
    }
    match &report.worst {
        Some(w) => writeln!(
            out,
            "worst: {} is {} ms behind{}",
            w.shard_id,
            w.millis_behind,
            w.records_behind
                .map(|n| format!(", {n} records"))
                .unwrap_or_default()
        )?,
        None => writeln!(out, "worst: unknown")?,
    }
    out.flush()?;
    Ok(())
}
