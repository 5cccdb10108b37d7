//! `kinesis-cat describe STREAM`: the stream's settings, its shards (hash ranges, open or
//! closed, parents) and its enhanced fan-out consumers.
//!
//! Shards come from kinesis-common's ListShards paging. The settings and the consumers are
//! DescribeStreamSummary and ListStreamConsumers through the SDK client itself: the client
//! layer's `StreamSummary` models only what the libraries use (no encryption, no mode), and
//! it has no ListStreamConsumers. Their errors are classified by kinesis-common like any call.

use clap::Args;
use kinesis_common::{ShardListing, StreamId, classify};
use serde::Serialize;

use super::{OpsError, format_time, print_json, runtime, sdk_config};

#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// Stream name or ARN.
    stream: String,
    /// Print one JSON document: {"stream_name", "stream_arn", "status", "mode",
    /// "retention_hours", "encryption": {"type", "key_id"}, "open_shards", "shards": [{"shard_id",
    /// "open", "parent_shard_id", "adjacent_parent_shard_id", "starting_hash_key",
    /// "ending_hash_key", "starting_sequence_number", "ending_sequence_number"}],
    /// "consumers": [{"name", "arn", "status", "created"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Description {
    stream_name: String,
    stream_arn: String,
    status: String,
    mode: Option<String>,
    retention_hours: i32,
    encryption: Encryption,
    open_shards: usize,
    shards: Vec<ShardInfo>,
    consumers: Vec<ConsumerInfo>,
}

#[derive(Debug, Serialize)]
struct Encryption {
    r#type: Option<String>,
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShardInfo {
    shard_id: String,
    open: bool,
    parent_shard_id: Option<String>,
    adjacent_parent_shard_id: Option<String>,
    starting_hash_key: Option<String>,
    ending_hash_key: Option<String>,
    starting_sequence_number: Option<String>,
    ending_sequence_number: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConsumerInfo {
    name: String,
    arn: String,
    status: String,
    created: Option<String>,
}

pub(crate) fn run(args: DescribeArgs) -> Result<(), OpsError> {
    runtime()?.block_on(describe(args))
}

async fn describe(args: DescribeArgs) -> Result<(), OpsError> {
    let config = sdk_config().await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let stream = StreamId::from(args.stream.as_str());
    let summary = stream
        .apply(
            client.describe_stream_summary(),
            |b, v| b.stream_name(v),
            |b, v| b.stream_arn(v),
        )
        .send()
        .await
        .map_err(|e| {
            OpsError::kinesis(
                &format!("describing {stream}"),
                &classify("DescribeStreamSummary", e),
            )
        })?
        .stream_description_summary
        .ok_or_else(|| OpsError::Failed("DescribeStreamSummary answered no summary".into()))?;
    let shards = kinesis_common::list_shards_as_sent(&client, &stream, &ShardListing::All)
        .await
        .map_err(|e| OpsError::kinesis(&format!("listing the shards of {stream}"), &e))?;
    let mut consumers = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // The ARN goes with every page (the SDK needs it to pick the endpoint).
        let request = client
            .list_stream_consumers()
            .stream_arn(&summary.stream_arn)
            .set_next_token(next_token.clone());
        let page = request.send().await.map_err(|e| {
            OpsError::kinesis(
                "listing the stream's consumers",
                &classify("ListStreamConsumers", e),
            )
        })?;
        for consumer in page.consumers() {
            consumers.push(ConsumerInfo {
                name: consumer.consumer_name.clone(),
                arn: consumer.consumer_arn.clone(),
                status: consumer.consumer_status.as_str().to_owned(),
                created: std::time::SystemTime::try_from(consumer.consumer_creation_timestamp)
                    .ok()
                    .map(format_time),
            });
        }
        // A token that does not move on (or a page without consumers) ends the listing.
        if page.consumers().is_empty() || page.next_token == next_token {
            break;
        }
        next_token = page.next_token;
        if next_token.is_none() {
            break;
        }
    }
    let shards: Vec<ShardInfo> = shards
        .iter()
        .map(|shard| {
            let range = shard.hash_key_range();
            let sequences = shard.sequence_number_range();
            ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                open: sequences.is_none_or(|r| r.ending_sequence_number().is_none()),
                parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                starting_hash_key: range.map(|r| r.starting_hash_key().to_owned()),
                ending_hash_key: range.map(|r| r.ending_hash_key().to_owned()),
                starting_sequence_number: sequences
                    .map(|r| r.starting_sequence_number().to_owned()),
                ending_sequence_number: sequences
                    .and_then(|r| r.ending_sequence_number())
                    .map(str::to_owned),
            }
        })
        .collect();
    let description = Description {
        stream_name: summary.stream_name.clone(),
        stream_arn: summary.stream_arn.clone(),
        status: summary.stream_status.as_str().to_owned(),
        mode: summary
            .stream_mode_details
            .as_ref()
            .map(|m| m.stream_mode.as_str().to_owned()),
        retention_hours: summary.retention_period_hours,
        encryption: Encryption {
            r#type: summary
                .encryption_type
                .as_ref()
                .map(|e| e.as_str().to_owned()),
            key_id: summary.key_id.clone(),
        },
        open_shards: shards.iter().filter(|s| s.open).count(),
        shards,
        consumers,
    };
    if args.json {
        return print_json(&description);
    }
    print_readable(&description)
}

fn print_readable(d: &Description) -> Result<(), OpsError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "stream      {} ({})", d.stream_name, d.stream_arn)?;
    writeln!(
        out,
        "status      {}, mode {}, retention {} h, encryption {}{}",
        d.status,
        d.mode.as_deref().unwrap_or("unknown"),
        d.retention_hours,
        d.encryption.r#type.as_deref().unwrap_or("NONE"),
        d.encryption
            .key_id
            .as_deref()
            .map(|k| format!(" (key {k})"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "shards      {} open, {} closed",
        d.open_shards,
        d.shards.len() - d.open_shards
    )?;
    if d.consumers.is_empty() {
        writeln!(out, "consumers   none (no enhanced fan-out)")?;
    } else {
        for (i, c) in d.consumers.iter().enumerate() {
            writeln!(
                out,
                "{}{} {}{}",
                if i == 0 {
                    "consumers   "
                } else {
                    "            "
                },
                c.name,
                c.status,
                c.created
                    .as_deref()
                    .map(|t| format!(" since {t}"))
                    .unwrap_or_default()
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:<6} {:<45} HASH KEYS",
        "SHARD", "STATE", "PARENTS"
    )?;
    for s in &d.shards {
        let parents: Vec<&str> = s
            .parent_shard_id
            .iter()
            .chain(&s.adjacent_parent_shard_id)
            .map(String::as_str)
            .collect();
        writeln!(
            out,
            "{:<24} {:<6} {:<45} {} .. {}",
            s.shard_id,
            if s.open { "open" } else { "closed" },
            if parents.is_empty() {
                "-".to_owned()
            } else {
                parents.join(",")
            },
            s.starting_hash_key.as_deref().unwrap_or("?"),
            s.ending_hash_key.as_deref().unwrap_or("?"),
        )?;
    }
    out.flush()?;
    Ok(())
}
