//! Aggregated records made by the official Python library (and crafted with its schema), each
//! with the user records it must yield.

use std::path::{Path, PathBuf};

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, DeaggregationError, Deaggregator, Outcome,
    PassThroughReason, ReceivedRecord, UserRecord, deaggregate, try_deaggregate,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    aggregated_partition_key: String,
    records: Vec<ExpectedRecord>,
}

#[derive(Deserialize)]
struct ExpectedRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: String,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kpl-aggregation")
}

fn load(name: &str) -> (ReceivedRecord, Vector) {
    let dir = data_dir();
    let bin = std::fs::read(dir.join(format!("{name}.bin"))).expect("vector .bin");
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("vector .json");
    let vector: Vector = serde_json::from_str(&json).expect("vector json");
    let received = ReceivedRecord::new(vector.aggregated_partition_key.clone(), bin)
        .with_sequence_number("49590338271490256608559692538361571095921575989136588898");
    (received, vector)
}

fn user_records(vector: &Vector) -> Vec<UserRecord> {
    vector
        .records
        .iter()
        .map(|r| {
            let record = UserRecord::new(
                r.partition_key.clone(),
                STANDARD.decode(&r.data).expect("base64"),
            );
            match &r.explicit_hash_key {
                Some(key) => record.with_explicit_hash_key(key.clone()),
                None => record,
            }
        })
        .collect()
}

const PYTHON_VECTORS: [&str; 7] = [
    "py_ehk",
    "py_empty_data",
    "py_full_64k",
    "py_mixed_ehk",
    "py_shared_pk",
    "py_single",
    "py_unicode_pk",
];

#[test]
fn python_aggregates_yield_their_records() {
    for name in PYTHON_VECTORS.into_iter().chain(["crafted_tags"]) {
        let (received, vector) = load(name);
        let records = try_deaggregate(&received).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = user_records(&vector);
        assert_eq!(records.len(), expected.len(), "{name}");
        for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
            assert_eq!(got.partition_key(), want.partition_key, "{name} record {i}");
            assert_eq!(
                got.explicit_hash_key(),
                want.explicit_hash_key.as_deref(),
                "{name} record {i}"
            );
            assert_eq!(got.data(), want.data, "{name} record {i}");
            assert_eq!(got.sub_sequence_number(), Some(i as u64), "{name}");
            assert_eq!(
                got.sequence_number(),
                received.sequence_number.as_deref(),
                "{name}"
            );
            assert!(got.is_aggregated(), "{name}");
        }
    }
}

#[test]
fn absent_explicit_hash_key_index_is_none() {
    let (received, _) = load("py_mixed_ehk");
    let keys: Vec<_> = deaggregate(&received)
        .into_iter()
        .map(|r| r.explicit_hash_key().map(str::to_owned))
        .collect();
    assert!(keys[0].is_none() && keys[2].is_none(), "{keys:?}");
    assert!(keys[1].is_some(), "{keys:?}");
}

/// Our encoder writes the same bytes as the reference for the same records (fields in order
/// 1, 2, 3; key tables de-duplicated in first-seen order).
#[test]
fn our_aggregates_are_byte_identical_to_the_python_library() {
    for name in PYTHON_VECTORS {
        let (received, vector) = load(name);
        let mut aggregator = Aggregator::new(AggregatorConfig::default().max_size(1 << 20));
        let records = user_records(&vector);
        for record in &records {
            aggregator
                .try_add(record)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if records.len() == 1 {
            // One user record goes out plain: no aggregation overhead.
            let plain = aggregator.finish().expect("one record");
            assert_eq!(plain.data, records[0].data, "{name}");
            continue;
        }
        let expected_size = aggregator.size();
        let ours = aggregator.finish().expect("records were added");
        assert_eq!(ours.size(), expected_size, "{name}: size() must be exact");
        assert_eq!(
            ours.partition_key, vector.aggregated_partition_key,
            "{name}"
        );
        assert_eq!(
            ours.data, received.data,
            "{name}: bytes differ from the Python library's"
        );
    }
}

#[test]
fn zero_record_aggregate_yields_nothing() {
    let (received, _) = load("crafted_zero_records");
    let mut out = Vec::new();
    let outcome = Deaggregator::new()
        .deaggregate_into(&received, &mut out)
        .expect("valid");
    assert_eq!(
        outcome,
        Outcome::Aggregated {
            records: 0,
            filtered: 0
        }
    );
    assert!(out.is_empty());
}

#[test]
fn key_index_out_of_range_passes_the_whole_record_through() {
    let (received, _) = load("crafted_empty_pk_table");
    let records = deaggregate(&received);
    assert_eq!(records.len(), 1);
    assert!(!records[0].is_aggregated());
    assert_eq!(records[0].data(), received.data, "no byte may be lost");
    assert_eq!(records[0].sub_sequence_number(), None);

    let mut out = Vec::new();
    let outcome = Deaggregator::new()
        .deaggregate_into(&received, &mut out)
        .expect("lenient");
    assert!(matches!(
        outcome,
        Outcome::PassedThrough(PassThroughReason::Corrupt(
            DeaggregationError::PartitionKeyIndexOutOfRange {
                sub_record: 0,
                index: 0,
                table_len: 0
            }
        ))
    ));

    let error = try_deaggregate(&received).expect_err("strict mode reports corruption");
    assert_eq!(
        error,
        DeaggregationError::PartitionKeyIndexOutOfRange {
            sub_record: 0,
            index: 0,
            table_len: 0
        }
    );
}

#[test]
fn a_flipped_bit_fails_the_digest_and_passes_through() {
    let (received, _) = load("py_shared_pk");
    let mut data = received.data.to_vec();
    data[10] ^= 1;
    let tampered = ReceivedRecord::new(received.partition_key.clone(), data.clone());
    let mut out = Vec::new();
    let outcome = Deaggregator::new()
        .strict(true)
        .deaggregate_into(&tampered, &mut out);
    assert_eq!(
        outcome,
        Ok(Outcome::PassedThrough(PassThroughReason::DigestMismatch))
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data(), data);
}

#[test]
fn full_aggregates_are_not_added_to() {
    let (_, vector) = load("py_full_64k");
    let mut aggregator = Aggregator::new(AggregatorConfig::default().max_size(65_536));
    let mut emitted = Vec::new();
    for record in user_records(&vector) {
        match aggregator.try_add(&record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                emitted.extend(aggregator.finish());
                aggregator
                    .try_add(&record)
                    .expect("fits an empty aggregate");
            }
            Err(other) => panic!("{other}"),
        }
    }
    emitted.extend(aggregator.finish());
    // The Python library under-fills (62,212 of 65,536 bytes): we pack it all into one.
    assert_eq!(emitted.len(), 1);
    assert!(emitted[0].size() <= 65_536);
}
