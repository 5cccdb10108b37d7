//! `kinesis-cat tail STREAM`: reads a stream without leases, like `kcat -C`.
//!
//! Each shard is read by kcl's `PollingSource` (deaggregated, filtered to the shard's hash
//! range, retried), one task per shard, into one channel that only the main loop writes out.
//! A shard's children start once every parent being read has ended, and only after the
//! parent's last records were written, so a key's records come out in order across reshards
//! (parents before children). Shards of different lineages interleave.
//!
//! - `--from trim-horizon`: every shard whose parents are gone from the stream (trimmed, or
//!   none), from its oldest record; children follow.
//! - `--from TIMESTAMP`: the same shards, each from that time (`AT_TIMESTAMP`), children too.
//! - `--from latest` (default): the open shards, from their tip; children of later reshards
//!   from their oldest record.
//! - `--shard ID`: that shard only (its children are named on stderr when it ends).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, SystemTime};

use aggregation_proto::HashRange;
use clap::Args;
use kcl::DeaggregatedRecord;
use kcl::retrieval::{PollingConfig, PollingSource, RecordSource, StartingPosition};
use kinesis_common::{ShardListing, StreamId};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{OpsError, format_time, parse_timestamp, runtime, sdk_config};
use crate::jsonl::encode_base64;

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Stream name or ARN.
    stream: String,
    /// Where to start: latest, trim-horizon, or a time (RFC 3339, 2026-12-08T00:00:00Z).
    #[arg(long, default_value = "latest")]
    from: String,
    /// Read only this shard.
    #[arg(long)]
    shard: Option<String>,
    /// Stop after printing this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Stop once every shard being read is at its tip (or ended without children to read):
    /// what was in the stream when it got there is printed.
    #[arg(long)]
    exit_at_end: bool,
    /// Print {"shard_id", "sequence_number", "sub_sequence_number", "partition_key",
    /// "explicit_hash_key", "arrival" (RFC 3339), "data": base64} per record instead of the
    /// data alone.
    #[arg(long)]
    json: bool,
    /// Time between GetRecords calls on a shard at its tip, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    idle_millis: u64,
}

#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    shard_id: &'a str,
    sequence_number: Option<&'a str>,
    sub_sequence_number: Option<u64>,
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    arrival: Option<String>,
    data: String,
}

/// What a shard's reader tells the main loop.
enum Event {
    Records {
        shard_id: String,
        records: Vec<DeaggregatedRecord>,
        at_tip: bool,
    },
    Ended {
        shard_id: String,
        children: Vec<kinesis_common::ChildShard>,
    },
    Failed {
        shard_id: String,
        error: String,
    },
}

#[derive(Debug, Clone)]
enum Start {
    Latest,
    TrimHorizon,
    At(SystemTime),
}

impl Start {
    fn parse(value: &str) -> Result<Self, OpsError> {
        match value {
            "latest" => Ok(Self::Latest),
            "trim-horizon" => Ok(Self::TrimHorizon),
            other => parse_timestamp(other).map(Self::At).ok_or_else(|| {
                OpsError::Usage(format!(
                    "--from {other:?}: expected latest, trim-horizon or an RFC 3339 time"
                ))
            }),
        }
    }

    /// Where a shard found at the start is read from.
    fn first_position(&self) -> StartingPosition {
        match self {
            Self::Latest => StartingPosition::Latest,
            Self::TrimHorizon => StartingPosition::TrimHorizon,
            Self::At(time) => StartingPosition::AtTimestamp(*time),
        }
    }

    /// Where a child is read from: all of it, or from the time.
    fn child_position(&self) -> StartingPosition {
        match self {
            Self::At(time) => StartingPosition::AtTimestamp(*time),
            Self::Latest | Self::TrimHorizon => StartingPosition::TrimHorizon,
        }
    }
}

pub(crate) fn run(args: TailArgs) -> Result<(), OpsError> {
    runtime()?.block_on(tail(args))
}

async fn tail(args: TailArgs) -> Result<(), OpsError> {
    let from = Start::parse(&args.from)?;
    let config = sdk_config().await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = StreamId::from(args.stream.as_str());
    let shards = kinesis_common::list_shards(&client, &stream, &ShardListing::All)
        .await
        .map_err(|e| OpsError::kinesis(&format!("listing the shards of {stream}"), &e))?;
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let first: Vec<_> = match &args.shard {
        Some(id) => {
            let shard = shards
                .iter()
                .find(|s| s.shard_id == *id)
                .ok_or_else(|| OpsError::NotFound(format!("{stream} has no shard {id}")))?;
            vec![shard.clone()]
        }
        None => shards
            .iter()
            .filter(|s| match from {
                Start::Latest => s.open,
                _ => s.parents().all(|p| !listed.contains(p)),
            })
            .cloned()
            .collect(),
    };
    let polling = PollingConfig::default()
        .idle_time_between_reads(Duration::from_millis(args.idle_millis.max(1)));
    let (events, mut received) = mpsc::channel::<Event>(4);
    let mut reading = Reading::default();
    for shard in first {
        reading.start(
            &client,
            &stream,
            &polling,
            &events,
            shard.shard_id,
            shard.hash_range,
            from.first_position(),
        );
    }
    let follow_children = args.shard.is_none();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let interrupted = crate::consume::terminate_signal();
    tokio::pin!(interrupted);
    loop {
        if args.exit_at_end && reading.all_at_tip() {
            break;
        }
        let event = tokio::select! {
            event = received.recv() => event,
            () = &mut interrupted => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::Records {
                shard_id,
                records,
                at_tip,
            } => {
                let left = args.count.map_or(u64::MAX, |count| count - printed);
                let take = records
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let mut buffer = Vec::with_capacity(take * 64);
                for record in &records[..take] {
                    format_record(&mut buffer, &shard_id, record, args.json)?;
                }
                let mut out = stdout.lock();
                out.write_all(&buffer)?;
                out.flush()?;
                printed += take as u64;
                if args.count.is_some_and(|count| printed >= count) {
                    break;
                }
                reading.at_tip(&shard_id, at_tip);
            }
            Event::Ended { shard_id, children } => {
                reading.ended(&shard_id);
                if !follow_children {
                    let names: Vec<&str> = children.iter().map(|c| c.shard_id.as_str()).collect();
                    eprintln!(
                        "kinesis-cat tail: {shard_id} ended; its children: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    );
                    continue;
                }
                for child in children {
                    if reading.ready(&child.shard_id, &child.parent_shard_ids) {
                        reading.start(
                            &client,
                            &stream,
                            &polling,
                            &events,
                            child.shard_id,
                            child.hash_range,
                            from.child_position(),
                        );
                    }
                }
            }
            Event::Failed { shard_id, error } => {
                return Err(OpsError::Failed(format!("reading {shard_id}: {error}")));
            }
        }
        if reading.active.is_empty() {
            // Every shard ended without children to read (a stream being deleted, or
            // `--shard` on a closed shard).
            break;
        }
    }
    reading.stop();
    Ok(())
}

/// The shards being read, and what is known of them.
#[derive(Default)]
struct Reading {
    /// Shards started (read or being read): a child named by both parents starts once.
    started: HashSet<String>,
    /// Shards whose end was reached.
    ended: HashSet<String>,
    /// Shards being read, and whether their last batch reached the tip.
    active: HashMap<String, bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Reading {
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        client: &aws_sdk_kinesis::Client,
        stream: &StreamId,
        config: &PollingConfig,
        events: &mpsc::Sender<Event>,
        shard_id: String,
        hash_range: HashRange,
        position: StartingPosition,
    ) {
        if !self.started.insert(shard_id.clone()) {
            return;
        }
        self.active.insert(shard_id.clone(), false);
        let source = PollingSource::new(
            client.clone(),
            stream.clone(),
            shard_id.clone(),
            Some(hash_range),
            position,
            config.clone(),
        );
        self.tasks
            .push(tokio::spawn(read_shard(source, shard_id, events.clone())));
    }

    /// Whether a child may start now: every parent being (or ever) read has ended.
    fn ready(&self, child: &str, parents: &[String]) -> bool {
        !self.started.contains(child)
            && parents
                .iter()
                .all(|p| !self.started.contains(p) || self.ended.contains(p))
    }

    fn ended(&mut self, shard_id: &str) {
        self.ended.insert(shard_id.to_owned());
        self.active.remove(shard_id);
    }

    fn at_tip(&mut self, shard_id: &str, at_tip: bool) {
        if let Some(state) = self.active.get_mut(shard_id) {
            *state = at_tip;
        }
    }

    fn all_at_tip(&self) -> bool {
        self.active.values().all(|at_tip| *at_tip)
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Reads one shard until its end, sending each batch; stops when the main loop is gone.
async fn read_shard(mut source: PollingSource, shard_id: String, events: mpsc::Sender<Event>) {
    loop {
        let batch = match source.next_batch().await {
            Ok(batch) => batch,
            Err(error) if error.is_fatal() => {
                let error = kinesis_common::ErrorChain(&error).to_string();
                let _ = events.send(Event::Failed { shard_id, error }).await;
                return;
            }
            // Retryable failures are retried inside the source; what comes out is worth a
            // word and another try.
            Err(error) => {
                eprintln!(
                    "kinesis-cat tail: {shard_id}: {}",
                    kinesis_common::ErrorChain(&error)
                );
                continue;
            }
        };
        // An empty answer at the tip: a closed shard never gives one (after its last
        // records comes its end), so a parent is never taken for done before its end.
        let at_tip = batch.records.is_empty()
            && batch.millis_behind_latest == Some(0)
            && batch.shard_end.is_none();
        if !batch.records.is_empty() || at_tip {
            let sent = events
                .send(Event::Records {
                    shard_id: shard_id.clone(),
                    records: batch.records,
                    at_tip,
                })
                .await;
            if sent.is_err() {
                return;
            }
        }
        if let Some(children) = batch.shard_end {
            let _ = events.send(Event::Ended { shard_id, children }).await;
            return;
        }
    }
}

fn format_record(
    buffer: &mut Vec<u8>,
    shard_id: &str,
    record: &DeaggregatedRecord,
    json: bool,
) -> Result<(), OpsError> {
    if json {
        let line = JsonRecord {
            shard_id,
            sequence_number: record.sequence_number(),
            sub_sequence_number: record.sub_sequence_number(),
            partition_key: record.partition_key(),
            explicit_hash_key: record.explicit_hash_key(),
            arrival: record.approximate_arrival_timestamp().map(format_time),
            data: encode_base64(record.data()),
        };
        serde_json::to_writer(&mut *buffer, &line).map_err(std::io::Error::other)?;
    } else {
        buffer.extend_from_slice(record.data());
    }
    buffer.push(b'\n');
    Ok(())
}
