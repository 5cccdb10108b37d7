//! `kinesis-cat agg encode|decode`: the KPL aggregation format on JSON lines.

use std::io::{BufWriter, Read, Write};
use std::time::{Duration, SystemTime};

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, DEFAULT_MAX_AGGREGATE_SIZE, DeaggregatedRecord,
    Deaggregator, KinesisRecord, ReceivedRecord, UserRecord,
};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::jsonl::{CliError, decode_base64, encode_base64, for_each_line, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum AggCommand {
    /// Aggregate user records (JSON lines {"partition_key", "explicit_hash_key", "data": base64})
    /// into Kinesis records (same shape, one line each).
    Encode {
        /// Largest Kinesis record to emit, in bytes of data plus partition key.
        #[arg(long, default_value_t = DEFAULT_MAX_AGGREGATE_SIZE)]
        max_size: usize,
        /// Most user records per aggregate.
        #[arg(long)]
        max_count: Option<usize>,
    },
    /// Deaggregate Kinesis records (JSON lines {"partition_key", "data": base64,
    /// "sequence_number"}) into user records, one line each.
    Decode {
        /// Read one AWS Lambda Kinesis event ({"Records": [{"kinesis": {...}}]}) instead.
        #[arg(long)]
        lambda: bool,
    },
}

pub(crate) fn run(command: AggCommand) -> Result<(), CliError> {
    let stdin = std::io::stdin().lock();
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let result = match command {
        AggCommand::Encode {
            max_size,
            max_count,
        } => {
            let config = AggregatorConfig::default()
                .max_size(max_size)
                .max_count(max_count.unwrap_or(usize::MAX));
            encode(stdin, &mut stdout, config)
        }
        AggCommand::Decode { lambda: false } => decode_lines(stdin, &mut stdout),
        AggCommand::Decode { lambda: true } => decode_lambda(stdin, &mut stdout),
    };
    // Whatever was decoded before an error is still flushed: every line out is whole.
    stdout.flush()?;
    result
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecordLine {
    partition_key: String,
    #[serde(default)]
    explicit_hash_key: Option<String>,
    data: String,
}

#[derive(Debug, Serialize)]
struct KinesisRecordLine<'a> {
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: String,
}

impl<'a> From<&'a KinesisRecord> for KinesisRecordLine<'a> {
    fn from(record: &'a KinesisRecord) -> Self {
        Self {
            partition_key: &record.partition_key,
            explicit_hash_key: record.explicit_hash_key.as_deref(),
            data: encode_base64(&record.data),
        }
    }
}

fn encode(
    input: impl std::io::BufRead,
    out: &mut impl Write,
    config: AggregatorConfig,
) -> Result<(), CliError> {
    let mut aggregator = Aggregator::new(config);
    let result = for_each_line(input, |line, parsed: UserRecordLine| {
        let data = decode_base64("data", &parsed.data).map_err(|e| CliError::line(line, e))?;
        let mut record = UserRecord::new(parsed.partition_key, data);
        record.explicit_hash_key = parsed.explicit_hash_key;
        match aggregator.try_add(&record) {
            Ok(()) => Ok(()),
            Err(AddError::Full) => {
                if let Some(finished) = aggregator.finish() {
                    write_line(out, &KinesisRecordLine::from(&finished))?;
                }
                aggregator
                    .try_add(&record)
                    .map_err(|e| CliError::line(line, e))
            }
            Err(invalid) => Err(CliError::line(line, invalid)),
        }
    });
    // The records before a bad line are valid: emit them before reporting it.
    if let Some(finished) = aggregator.finish() {
        write_line(out, &KinesisRecordLine::from(&finished))?;
    }
    result
}

#[derive(Debug, Deserialize)]
struct KinesisRecordInput {
    partition_key: String,
    data: String,
    #[serde(default)]
    sequence_number: Option<String>,
}

#[derive(Debug, Serialize)]
struct UserRecordOutput<'a> {
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: String,
    sequence_number: Option<&'a str>,
    sub_sequence_number: Option<u64>,
    aggregated: bool,
}

impl<'a> From<&'a DeaggregatedRecord> for UserRecordOutput<'a> {
    fn from(record: &'a DeaggregatedRecord) -> Self {
        Self {
            partition_key: record.partition_key(),
            explicit_hash_key: record.explicit_hash_key(),
            data: encode_base64(record.data()),
            sequence_number: record.sequence_number(),
            sub_sequence_number: record.sub_sequence_number(),
            aggregated: record.is_aggregated(),
        }
    }
}

fn write_deaggregated(
    out: &mut impl Write,
    record: &ReceivedRecord,
    buffer: &mut Vec<DeaggregatedRecord>,
) -> Result<(), CliError> {
    buffer.clear();
    // Lenient (the KCL's rules): a corrupt aggregate comes out whole, never dropped.
    let _outcome = Deaggregator::new().deaggregate_into(record, buffer);
    for user in buffer.iter() {
        write_line(out, &UserRecordOutput::from(user))?;
    }
    Ok(())
}

fn decode_lines(input: impl std::io::BufRead, out: &mut impl Write) -> Result<(), CliError> {
    let mut buffer = Vec::new();
    for_each_line(input, |line, parsed: KinesisRecordInput| {
        let data = decode_base64("data", &parsed.data).map_err(|e| CliError::line(line, e))?;
        let mut record = ReceivedRecord::new(parsed.partition_key, data);
        record.sequence_number = parsed.sequence_number.map(Into::into);
        write_deaggregated(out, &record, &mut buffer)
    })
}

#[derive(Debug, Deserialize)]
struct LambdaEvent {
    #[serde(rename = "Records")]
    records: Vec<LambdaRecord>,
}

#[derive(Debug, Deserialize)]
struct LambdaRecord {
    kinesis: LambdaKinesis,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LambdaKinesis {
    partition_key: String,
    data: String,
    #[serde(default)]
    sequence_number: Option<String>,
    /// Seconds since the epoch, with a fraction.
    #[serde(default)]
    approximate_arrival_timestamp: Option<f64>,
}

fn decode_lambda(mut input: impl Read, out: &mut impl Write) -> Result<(), CliError> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let event: LambdaEvent = serde_json::from_str(&text)
        .map_err(|e| CliError::BadInput(format!("not a Lambda Kinesis event: {e}")))?;
    let mut buffer = Vec::new();
    for (index, entry) in event.records.into_iter().enumerate() {
        let kinesis = entry.kinesis;
        let data = decode_base64("data", &kinesis.data)
            .map_err(|e| CliError::BadInput(format!("Records[{index}].kinesis: {e}")))?;
        let mut record = ReceivedRecord::new(kinesis.partition_key, data);
        record.sequence_number = kinesis.sequence_number.map(Into::into);
        record.approximate_arrival_timestamp = kinesis
            .approximate_arrival_timestamp
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .map(|since_epoch| SystemTime::UNIX_EPOCH + since_epoch);
        write_deaggregated(out, &record, &mut buffer)?;
    }
    Ok(())
}
