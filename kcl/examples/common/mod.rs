//! What the lease benches (`lease_scale`, `rebalance_bench`) share: their background
//! producers' PutRecords calls, and the JSON line of their samples.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

/// One PutRecords call of `entries`; a failure is printed, not fatal (the next tick puts more).
pub async fn put_entries(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: Vec<PutRecordsRequestEntry>,
) {
    if let Err(error) = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
    {
        eprintln!("producer: {error}");
    }
}

/// The first hash key of each shard of `stream`.
pub async fn shard_starts(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    integration_tests::list_shards(kinesis, stream)
        .await
        .iter()
        .filter_map(|s| s.hash_key_range().map(|r| r.starting_hash_key().to_owned()))
        .collect()
}

/// One small record at each of the hash keys `starts` (a shard's first, for one record per
/// shard).
pub fn one_record_at_each(starts: &[String]) -> Vec<PutRecordsRequestEntry> {
    starts
        .iter()
        .filter_map(|start| {
            PutRecordsRequestEntry::builder()
                .partition_key("k")
                .explicit_hash_key(start)
                .data(Blob::new(b"x".to_vec()))
                .build()
                .ok()
        })
        .collect()
}

/// `{"name":[1.23,null,...],...}` without a JSON dependency.
pub fn json_samples<'a>(samples: impl IntoIterator<Item = (&'a str, &'a [Option<f64>])>) -> String {
    let fields: Vec<String> = samples
        .into_iter()
        .map(|(name, values)| {
            let values: Vec<String> = values
                .iter()
                .map(|v| v.map_or_else(|| "null".to_owned(), |v| format!("{v:.3}")))
                .collect();
            format!("\"{name}\":[{}]", values.join(","))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}
