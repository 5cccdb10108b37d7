//! The read sink's data: user records generated per shard at startup, each Kinesis record
//! already encoded as its GetRecords JSON fragment, and GetShardIterator / GetRecords over
//! them.
//!
//! A shard's fragments lie back to back in one buffer, each followed by a comma, so the
//! `Records` array of any run of consecutive records is one contiguous slice: a GetRecords
//! answer is that slice (shared, not copied) between a short prefix and suffix, sent as three
//! body chunks.
//!
//! Positions are indexes into a shard's Kinesis records. Record `i` has sequence number
//! counter `i + 1` (see [`SinkShard::write_sequence_number`]) and arrived at
//! `base + i` milliseconds, where `base` lies `records_per_shard` ms before the sink started,
//! so every record is in the past and arrival times increase by 1 ms per record.
//! `MillisBehindLatest` is the arrival-time distance from the last record returned to the
//! shard's last record: the number of records left, in milliseconds; 0 at the end.
//! Shard iterators are `fault-proxy-iterator:<shard index>:<position>` and never expire.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::time::{SystemTime, UNIX_EPOCH};

use aggregation_proto::{AddError, Aggregator, AggregatorConfig, UserRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Response, StatusCode};
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Deserialize;

use crate::shards::{ShardMap, SinkShard, partition_key_hash};
use crate::sink::Refusal;
use crate::wire::{
    ACCOUNT_ID, Body, json_response, json_response_chunks, stream_name, write_json_string_contents,
};

/// Most records one GetRecords call may ask for (and the default `Limit`).
pub(crate) const MAX_GET_RECORDS_LIMIT: i64 = 10_000;
/// Most data bytes one GetRecords answer carries (the service's 10 MiB); at least one record
/// is returned whatever its size.
pub(crate) const MAX_GET_RECORDS_BYTES: u64 = 10 * 1024 * 1024;
/// Prefix of the read sink's shard iterators.
const ITERATOR_PREFIX: &str = "fault-proxy-iterator:";
/// Characters of a generated partition key.
const KEY_CHARS: usize = 16;
/// Seed of every random choice of the generated data (keys, key picks, record bytes).
const SEED: u64 = 0x6b69_6e65_7369_7321;
/// Largest data set a read sink generates (its estimated size in memory).
const MAX_ESTIMATED_BYTES: u128 = 16 << 30;
/// Most data bytes in one record (with its 16-character key, within the service's 1 MiB).
const MAX_RECORD_SIZE: usize = 1024 * 1024 - KEY_CHARS;

/// What a read sink generates for each shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadSpec {
    pub(crate) records_per_shard: u64,
    pub(crate) record_size: usize,
    pub(crate) aggregated: bool,
    pub(crate) keys: usize,
}

impl ReadSpec {
    /// Why this spec cannot be generated for `shards` shards, if it cannot.
    pub(crate) fn check(&self, shards: u32) -> Result<(), String> {
        if self.keys == 0 {
            return Err("keys must be at least 1".to_owned());
        }
        if self.record_size > MAX_RECORD_SIZE {
            return Err(format!(
                "record_size {} is over {MAX_RECORD_SIZE} bytes (1 MiB with a {KEY_CHARS}-character key)",
                self.record_size
            ));
        }
        // Base64 data plus about 150 bytes of JSON per fragment, and the index entries.
        let per_record = self.record_size as u128 * 4 / 3 + 170;
        let estimate = u128::from(shards) * u128::from(self.records_per_shard) * per_record;
        if estimate > MAX_ESTIMATED_BYTES {
            return Err(format!(
                "{shards} shards x {} records of {} bytes need about {} MiB; the limit is {} MiB",
                self.records_per_shard,
                self.record_size,
                estimate >> 20,
                MAX_ESTIMATED_BYTES >> 20
            ));
        }
        Ok(())
    }
}

/// One shard's encoded records.
struct ShardData {
    /// The fragments, each followed by `,`.
    json: Bytes,
    /// Where each record's fragment starts; one more entry, the buffer's length, at the end.
    offsets: Vec<usize>,
    /// Data bytes of the records before each index (`data_before[i]`), `len() + 1` entries.
    data_before: Vec<u64>,
}

impl ShardData {
    /// Kinesis records in the shard.
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The end of a GetRecords answer that starts at `start`: at most `limit` records and
    /// [`MAX_GET_RECORDS_BYTES`] of data, but at least one record when any is left.
    fn page_end(&self, start: usize, limit: usize) -> usize {
        let end = start.saturating_add(limit).min(self.len());
        let before = |i: usize| self.data_before.get(i).copied().unwrap_or(0);
        let budget = before(start).saturating_add(MAX_GET_RECORDS_BYTES);
        if before(end) <= budget {
            return end;
        }
        // The last index in start..=end whose data still fits.
        let fits = self
            .data_before
            .get(start..=end)
            .map_or(0, |window| window.partition_point(|&b| b <= budget));
        (start + fits.saturating_sub(1)).max(start + 1).min(end)
    }

    /// The `Records` array contents (fragments joined by commas) of records `start..end`, as
    /// a slice of the shard's buffer (no copy).
    fn records_json(&self, start: usize, end: usize) -> Bytes {
        if start >= end {
            return Bytes::new();
        }
        let from = self.offsets.get(start).copied().unwrap_or(0);
        // Leave out the comma after the last fragment.
        let to = self
            .offsets
            .get(end)
            .map_or(from, |&to| to.saturating_sub(1));
        if from <= to && to <= self.json.len() {
            self.json.slice(from..to)
        } else {
            Bytes::new()
        }
    }
}

/// Appends shards' records as JSON fragments.
struct ShardBuilder<'a> {
    shard: &'a SinkShard,
    base_ms: u64,
    json: Vec<u8>,
    offsets: Vec<usize>,
    data_before: Vec<u64>,
}

impl<'a> ShardBuilder<'a> {
    fn new(shard: &'a SinkShard, base_ms: u64, capacity: usize) -> Self {
        Self {
            shard,
            base_ms,
            json: Vec::with_capacity(capacity),
            offsets: vec![0],
            data_before: vec![0],
        }
    }

    /// Appends a Kinesis record with the next sequence number.
    fn push(&mut self, partition_key: &str, data: &[u8]) {
        let index = self.offsets.len() as u64 - 1;
        let arrival_ms = self.base_ms + index;
        let json = &mut self.json;
        json.extend_from_slice(b"{\"SequenceNumber\":\"");
        self.shard.write_sequence_number(json, index + 1);
        // Writing to a Vec cannot fail.
        let _ = write!(
            json,
            "\",\"ApproximateArrivalTimestamp\":{}.{:03},\"Data\":\"",
            arrival_ms / 1000,
            arrival_ms % 1000
        );
        let start = json.len();
        json.resize(start + data.len().div_ceil(3) * 4, 0);
        let written = STANDARD
            .encode_slice(data, json.get_mut(start..).unwrap_or_default())
            .unwrap_or(0);
        json.truncate(start + written);
        json.extend_from_slice(b"\",\"PartitionKey\":\"");
        write_json_string_contents(json, partition_key);
        json.extend_from_slice(b"\",\"EncryptionType\":\"NONE\"},");
        self.offsets.push(json.len());
        let before = self.data_before.last().copied().unwrap_or(0);
        self.data_before.push(before + data.len() as u64);
    }

    fn finish(self) -> ShardData {
        self.shard.set_last_counter(self.offsets.len() as u64 - 1);
        ShardData {
            json: Bytes::from(self.json),
            offsets: self.offsets,
            data_before: self.data_before,
        }
    }
}

/// The read sink's records, every shard's (see the module docs).
pub(crate) struct ReadData {
    spec: ReadSpec,
    shards: Vec<ShardData>,
    /// Arrival time of every shard's first record, in epoch milliseconds.
    base_ms: u64,
}

impl fmt::Debug for ReadData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadData")
            .field("spec", &self.spec)
            .field("shards", &self.shards.len())
            .field(
                "kinesis_records",
                &self.shards.iter().map(ShardData::len).sum::<usize>(),
            )
            .field(
                "json_bytes",
                &self.shards.iter().map(|s| s.json.len()).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

/// `keys` random keys grouped by the shard they route to, plus one random key for each shard
/// that none routes to.
fn key_pools(map: &ShardMap, keys: usize, rng: &mut StdRng) -> Vec<Vec<String>> {
    let shards = map.shards();
    let index_of = |key: &str| {
        let hash = partition_key_hash(key);
        shards.partition_point(|shard| shard.end < hash)
    };
    let mut pools: Vec<Vec<String>> = vec![Vec::new(); shards.len()];
    for _ in 0..keys {
        let key = Alphanumeric.sample_string(rng, KEY_CHARS);
        if let Some(pool) = pools.get_mut(index_of(&key)) {
            pool.push(key);
        }
    }
    let mut missing = pools.iter().filter(|pool| pool.is_empty()).count();
    while missing > 0 {
        let key = Alphanumeric.sample_string(rng, KEY_CHARS);
        if let Some(pool) = pools.get_mut(index_of(&key))
            && pool.is_empty()
        {
            pool.push(key);
            missing -= 1;
        }
    }
    pools
}

/// Generates and encodes one shard's records.
fn generate_shard(
    shard: &SinkShard,
    index: usize,
    keys: &[String],
    spec: ReadSpec,
    base_ms: u64,
) -> ShardData {
    let mut rng =
        StdRng::seed_from_u64(SEED ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let records = usize::try_from(spec.records_per_shard).unwrap_or(usize::MAX);
    let capacity = records.saturating_mul(spec.record_size.div_ceil(3) * 4 + 150);
    let mut builder = ShardBuilder::new(shard, base_ms, capacity);
    let mut data = vec![0u8; spec.record_size];
    let mut aggregator = spec
        .aggregated
        .then(|| Aggregator::new(AggregatorConfig::default()));
    for _ in 0..spec.records_per_shard {
        rng.fill_bytes(&mut data);
        let key = keys
            .get(rng.random_range(0..keys.len().max(1)))
            .map_or("k", String::as_str);
        let Some(aggregator) = aggregator.as_mut() else {
            builder.push(key, &data);
            continue;
        };
        let record = UserRecord::new(key, Bytes::copy_from_slice(&data));
        match aggregator.try_add(&record) {
            Ok(()) => continue,
            Err(AddError::Full) => {
                if let Some(done) = aggregator.finish() {
                    builder.push(&done.partition_key, &done.data);
                }
                if aggregator.try_add(&record).is_ok() {
                    continue;
                }
            }
            Err(_) => {
                if let Some(done) = aggregator.finish() {
                    builder.push(&done.partition_key, &done.data);
                }
            }
        }
        // Too large for any aggregate: on its own, as the KPL sends it.
        builder.push(key, &data);
    }
    if let Some(done) = aggregator.as_mut().and_then(Aggregator::finish) {
        builder.push(&done.partition_key, &done.data);
    }
    builder.finish()
}

impl ReadData {
    /// Generates every shard's records (in parallel, one thread per core; deterministic:
    /// the same spec gives the same records whatever the thread count). Sets each shard's
    /// sequence counter past its records.
    pub(crate) fn generate(map: &ShardMap, spec: ReadSpec) -> Self {
        let shards = map.shards();
        let mut rng = StdRng::seed_from_u64(SEED);
        let pools = key_pools(map, spec.keys, &mut rng);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let base_ms = now_ms.saturating_sub(spec.records_per_shard);
        let threads = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .clamp(1, shards.len().max(1));
        let per_thread = shards.len().div_ceil(threads).max(1);
        let mut slots: Vec<Option<ShardData>> = shards.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            for (chunk, slots) in slots.chunks_mut(per_thread).enumerate() {
                let pools = &pools;
                scope.spawn(move || {
                    for (offset, slot) in slots.iter_mut().enumerate() {
                        let index = chunk * per_thread + offset;
                        if let (Some(shard), Some(keys)) = (shards.get(index), pools.get(index)) {
                            *slot = Some(generate_shard(shard, index, keys, spec, base_ms));
                        }
                    }
                });
            }
        });
        let shards = slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| ShardData {
                    json: Bytes::new(),
                    offsets: vec![0],
                    data_before: vec![0],
                })
            })
            .collect();
        Self {
            spec,
            shards,
            base_ms,
        }
    }

    /// Kinesis records (aggregates count once) of each shard.
    #[cfg(test)]
    pub(crate) fn kinesis_records(&self) -> Vec<usize> {
        self.shards.iter().map(ShardData::len).collect()
    }

    /// Answers GetShardIterator.
    pub(crate) fn get_shard_iterator(
        &self,
        map: &ShardMap,
        input: &GetShardIteratorInput<'_>,
    ) -> Result<Response<Body>, Refusal> {
        let stream = stream_name(input.stream_name.as_deref(), input.stream_arn.as_deref());
        let shard_id = input.shard_id.as_ref();
        let found = shard_id
            .strip_prefix("shardId-")
            .and_then(|digits| digits.parse::<usize>().ok())
            .and_then(|index| Some((index, map.shards().get(index)?, self.shards.get(index)?)))
            .filter(|(_, shard, _)| shard.id == shard_id);
        let Some((index, shard, data)) = found else {
            return Err(Refusal::resource_not_found(format!(
                "Shard {shard_id} in stream {stream} under account {ACCOUNT_ID} does not exist"
            )));
        };
        let len = data.len();
        let kind = input.shard_iterator_type.as_ref();
        let position = match kind {
            "TRIM_HORIZON" => 0,
            "LATEST" => len,
            "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER" => {
                let Some(sequence_number) = input.starting_sequence_number.as_deref() else {
                    return Err(Refusal::invalid_argument(format!(
                        "StartingSequenceNumber is required for ShardIteratorType {kind}"
                    )));
                };
                let Some(counter) = shard.sequence_counter(sequence_number) else {
                    return Err(Refusal::invalid_argument(format!(
                        "StartingSequenceNumber {sequence_number} used in GetShardIterator on \
                         shard {shard_id} in stream {stream} under account {ACCOUNT_ID} is \
                         invalid because it did not come from this stream."
                    )));
                };
                // Record i has counter i + 1.
                let counter = usize::try_from(counter).unwrap_or(usize::MAX);
                let at = if kind == "AT_SEQUENCE_NUMBER" {
                    counter.saturating_sub(1)
                } else {
                    counter
                };
                at.min(len)
            }
            "AT_TIMESTAMP" => {
                let Some(seconds) = input.timestamp else {
                    return Err(Refusal::invalid_argument(
                        "Timestamp is required for ShardIteratorType AT_TIMESTAMP".to_owned(),
                    ));
                };
                // The first record that arrived at or after the timestamp (whole microseconds,
                // so 1.123 s is 1123 ms and not 1123.0000001).
                let micros = (seconds * 1e6).round();
                let millis = if micros <= 0.0 {
                    0
                } else {
                    (micros as u64).div_ceil(1000)
                };
                let at = millis.saturating_sub(self.base_ms);
                usize::try_from(at).unwrap_or(usize::MAX).min(len)
            }
            other => {
                return Err(Refusal::validation(format!(
                    "1 validation error detected: Value '{other}' at 'shardIteratorType' failed \
                     to satisfy constraint: Member must satisfy enum value set: \
                     [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
                )));
            }
        };
        let mut out = Vec::with_capacity(64);
        let _ = write!(
            out,
            "{{\"ShardIterator\":\"{ITERATOR_PREFIX}{index}:{position}\"}}"
        );
        Ok(json_response(StatusCode::OK, out))
    }

    /// Answers GetRecords; also returns how many Kinesis records the answer holds.
    pub(crate) fn get_records(
        &self,
        input: &GetRecordsInput<'_>,
    ) -> Result<(Response<Body>, u64), Refusal> {
        let limit = input.limit.unwrap_or(MAX_GET_RECORDS_LIMIT);
        if !(1..=MAX_GET_RECORDS_LIMIT).contains(&limit) {
            return Err(Refusal::validation(format!(
                "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy \
                 constraint: Member must have value between 1 and {MAX_GET_RECORDS_LIMIT}"
            )));
        }
        let parsed = input
            .shard_iterator
            .strip_prefix(ITERATOR_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(shard, position)| {
                Some((
                    shard.parse::<usize>().ok()?,
                    position.parse::<usize>().ok()?,
                ))
            })
            .and_then(|(shard, position)| {
                let data = self.shards.get(shard)?;
                (position <= data.len()).then_some((shard, data, position))
            });
        let Some((shard, data, start)) = parsed else {
            return Err(Refusal::invalid_argument(format!(
                "Invalid ShardIterator: {:?} was not issued by this fault-proxy read sink",
                input.shard_iterator
            )));
        };
        let end = data.page_end(start, usize::try_from(limit).unwrap_or(1));
        let mut suffix = Vec::with_capacity(96);
        let _ = write!(
            suffix,
            "],\"NextShardIterator\":\"{ITERATOR_PREFIX}{shard}:{end}\",\"MillisBehindLatest\":{}}}",
            data.len() - end
        );
        let body = Body::from_chunks([
            Bytes::from_static(b"{\"Records\":["),
            data.records_json(start, end),
            Bytes::from(suffix),
        ]);
        Ok((
            json_response_chunks(StatusCode::OK, body),
            (end - start) as u64,
        ))
    }
}

/// A GetShardIterator request, borrowing from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct GetShardIteratorInput<'a> {
    #[serde(rename = "StreamName", borrow, default)]
    pub(crate) stream_name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow, default)]
    pub(crate) stream_arn: Option<Cow<'a, str>>,
    #[serde(rename = "ShardId", borrow)]
    pub(crate) shard_id: Cow<'a, str>,
    #[serde(rename = "ShardIteratorType", borrow)]
    pub(crate) shard_iterator_type: Cow<'a, str>,
    #[serde(rename = "StartingSequenceNumber", borrow, default)]
    pub(crate) starting_sequence_number: Option<Cow<'a, str>>,
    /// Epoch seconds, as the SDK sends timestamps.
    #[serde(rename = "Timestamp", default)]
    pub(crate) timestamp: Option<f64>,
}

/// A GetRecords request, borrowing from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct GetRecordsInput<'a> {
    #[serde(rename = "ShardIterator", borrow)]
    pub(crate) shard_iterator: Cow<'a, str>,
    #[serde(rename = "Limit", default)]
    pub(crate) limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregation_proto::{Deaggregator, ReceivedRecord};
    use http_body_util::BodyExt;

    fn spec(records_per_shard: u64, record_size: usize, aggregated: bool) -> ReadSpec {
        ReadSpec {
            records_per_shard,
            record_size,
            aggregated,
            keys: 50,
        }
    }

    async fn body(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn iterator(map: &ShardMap, data: &ReadData, shard: &str, kind: &str) -> Response<Body> {
        let json =
            format!(r#"{{"StreamName":"s","ShardId":"{shard}","ShardIteratorType":"{kind}"}}"#);
        let input: GetShardIteratorInput<'_> = serde_json::from_str(&json).unwrap();
        data.get_shard_iterator(map, &input).unwrap()
    }

    #[tokio::test]
    async fn pages_are_valid_json_and_cover_every_record() {
        let map = ShardMap::even(3);
        let data = ReadData::generate(&map, spec(250, 10, false));
        assert_eq!(data.kinesis_records(), vec![250; 3]);
        let first = body(iterator(
            &map,
            &data,
            "shardId-000000000001",
            "TRIM_HORIZON",
        ))
        .await;
        let mut it = first["ShardIterator"].as_str().unwrap().to_owned();
        let mut seen = Vec::new();
        loop {
            let input = GetRecordsInput {
                shard_iterator: it.clone().into(),
                limit: Some(100),
            };
            let (response, n) = data.get_records(&input).unwrap();
            let page = body(response).await;
            let records = page["Records"].as_array().unwrap();
            assert_eq!(records.len() as u64, n);
            for record in records {
                let key = record["PartitionKey"].as_str().unwrap();
                let hash = partition_key_hash(key);
                let shard = &map.shards()[1];
                assert!(shard.start <= hash && hash <= shard.end, "key routed");
                let bytes = STANDARD.decode(record["Data"].as_str().unwrap()).unwrap();
                assert_eq!(bytes.len(), 10);
                seen.push(record["SequenceNumber"].as_str().unwrap().to_owned());
            }
            it = page["NextShardIterator"].as_str().unwrap().to_owned();
            if records.is_empty() {
                assert_eq!(page["MillisBehindLatest"], 0);
                break;
            }
        }
        assert_eq!(seen.len(), 250);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen[0], "49000000000100000000000000000001");
    }

    #[tokio::test]
    async fn aggregates_hold_every_user_record() {
        let map = ShardMap::even(2);
        let data = ReadData::generate(&map, spec(2_000, 100, true));
        let records = data.kinesis_records();
        assert!(records.iter().all(|&n| n > 1 && n < 20), "{records:?}");
        let deaggregator = Deaggregator::new();
        let mut total = 0;
        for shard in 0..2 {
            let page = body(
                data.get_records(&GetRecordsInput {
                    shard_iterator: format!("{ITERATOR_PREFIX}{shard}:0").into(),
                    limit: None,
                })
                .unwrap()
                .0,
            )
            .await;
            for record in page["Records"].as_array().unwrap() {
                let bytes = STANDARD.decode(record["Data"].as_str().unwrap()).unwrap();
                assert!(bytes.len() + KEY_CHARS <= 51_200);
                let received =
                    ReceivedRecord::new(record["PartitionKey"].as_str().unwrap().to_owned(), bytes);
                let mut out = Vec::new();
                deaggregator.deaggregate_into(&received, &mut out).unwrap();
                assert!(
                    out.iter()
                        .all(|r| r.is_aggregated() && r.data().len() == 100)
                );
                total += out.len();
            }
        }
        assert_eq!(total, 4_000);
    }

    #[test]
    fn pages_stop_at_ten_mebibytes() {
        let map = ShardMap::even(1);
        let data = ReadData::generate(&map, spec(25, 1_000_000, false));
        let shard = &data.shards[0];
        assert_eq!(shard.page_end(0, 10_000), 10);
        assert_eq!(shard.page_end(10, 10_000), 20);
        assert_eq!(shard.page_end(20, 10_000), 25);
        assert_eq!(shard.page_end(25, 10_000), 25);
        assert_eq!(shard.page_end(3, 2), 5);
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec(1, 1, false).check(1).is_ok());
        assert!(
            ReadSpec {
                keys: 0,
                ..spec(1, 1, false)
            }
            .check(1)
            .is_err()
        );
        assert!(spec(1, 2 << 20, false).check(1).is_err());
        assert!(spec(1 << 40, 100, false).check(4).is_err());
    }

    #[test]
    fn every_shard_gets_a_key() {
        let map = ShardMap::even(64);
        let pools = key_pools(&map, 1, &mut StdRng::seed_from_u64(1));
        assert!(pools.iter().all(|pool| !pool.is_empty()));
        assert_eq!(pools.iter().map(Vec::len).sum::<usize>(), 64);
    }
}
