//! Property tests: round trips for arbitrary records, exact size accounting at the limit, and
//! hostile bytes that must never panic nor lose data.

use aggregation_proto::proto::AggregatedRecord;
use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, Deaggregator, HashRange, KinesisRecord, MAGIC, Outcome,
    ReceivedRecord, UserRecord, deaggregate, partition_key_hash, try_deaggregate,
};
use bytes::Bytes;
use md5::{Digest, Md5};
use proptest::prelude::*;
use prost::Message as _;

fn partition_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,16}",
        // Multi-byte UTF-8: Cyrillic, CJK, emoji; up to the 256-character limit.
        "[a-zа-я中文😀]{1,256}",
        Just("x".repeat(256)),
        Just("😀".repeat(256)),
    ]
}

fn explicit_hash_key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => any::<u128>().prop_map(|k| Some(k.to_string())),
        1 => Just(Some(u128::MAX.to_string())),
    ]
}

fn user_record() -> impl Strategy<Value = UserRecord> {
    (
        partition_key(),
        explicit_hash_key(),
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 1000..3000),
        ],
    )
        .prop_map(|(key, ehk, data)| {
            let record = UserRecord::new(key, data);
            match ehk {
                Some(ehk) => record.with_explicit_hash_key(ehk),
                None => record,
            }
        })
}

/// Aggregates `records` in order, checking the size promise at every step.
fn aggregate_all(records: &[UserRecord], config: AggregatorConfig) -> Vec<KinesisRecord> {
    let mut aggregator = Aggregator::new(config);
    let mut out = Vec::new();
    let finish = |aggregator: &mut Aggregator, out: &mut Vec<KinesisRecord>| {
        let promised = aggregator.size();
        let len = aggregator.len();
        if let Some(record) = aggregator.finish() {
            assert_eq!(
                record.size(),
                promised,
                "size() must equal the emitted size"
            );
            assert!(record.size() <= config.get_max_size(), "over the limit");
            assert!(len <= config.get_max_count());
            out.push(record);
        }
    };
    for record in records {
        match aggregator.try_add(record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                finish(&mut aggregator, &mut out);
                aggregator
                    .try_add(record)
                    .expect("a valid record fits an empty aggregate");
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    finish(&mut aggregator, &mut out);
    out
}

fn deaggregate_all(records: &[KinesisRecord]) -> Vec<UserRecord> {
    records
        .iter()
        .flat_map(|r| {
            let received = ReceivedRecord::new(r.partition_key.clone(), r.data.clone());
            let users = try_deaggregate(&received).expect("our aggregates are valid");
            if users.len() == 1 && !users[0].is_aggregated() {
                // A lone record went out plain: its explicit hash key travels outside the data.
                return vec![UserRecord {
                    partition_key: r.partition_key.clone(),
                    explicit_hash_key: r.explicit_hash_key.clone(),
                    data: r.data.clone(),
                }];
            }
            users
                .into_iter()
                .map(|u| UserRecord {
                    partition_key: u.partition_key().to_owned(),
                    explicit_hash_key: u.explicit_hash_key().map(str::to_owned),
                    data: u.data_bytes(),
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(
        records in proptest::collection::vec(user_record(), 1..200),
        max_size in prop_oneof![Just(51_200usize), 2_000usize..20_000, Just(1 << 20)],
        max_count in prop_oneof![Just(usize::MAX), 1usize..20],
    ) {
        let config = AggregatorConfig::default().max_size(max_size).max_count(max_count);
        let fitting: Vec<_> = records
            .into_iter()
            .filter(|r| r.partition_key.len() + r.data.len() <= max_size)
            .collect();
        let aggregates = aggregate_all(&fitting, config);
        prop_assert_eq!(deaggregate_all(&aggregates), fitting);
    }

    /// The prost-generated decoder reads our bytes as the same records.
    #[test]
    fn prost_reads_our_aggregates(records in proptest::collection::vec(user_record(), 2..50)) {
        let aggregates = aggregate_all(&records, AggregatorConfig::default().max_size(1 << 22));
        prop_assert_eq!(aggregates.len(), 1);
        let data = &aggregates[0].data;
        prop_assert_eq!(&data[..4], &MAGIC);
        let body = &data[4..data.len() - 16];
        let digest = Md5::digest(body);
        prop_assert_eq!(&data[data.len() - 16..], digest.as_slice());
        let message = AggregatedRecord::decode(body).expect("prost decodes it");
        prop_assert_eq!(message.records.len(), records.len());
        for (sub, record) in message.records.iter().zip(&records) {
            prop_assert_eq!(
                &message.partition_key_table[sub.partition_key_index as usize],
                &record.partition_key
            );
            prop_assert_eq!(
                sub.explicit_hash_key_index.map(|i| message.explicit_hash_key_table[i as usize].clone()),
                record.explicit_hash_key.clone()
            );
            prop_assert_eq!(&sub.data, &record.data);
        }
    }

    /// With the limit set to exactly the size of all records in one aggregate they fit in one;
    /// one byte less and they no longer do.
    #[test]
    fn exact_size_at_the_limit(records in proptest::collection::vec(user_record(), 2..60)) {
        let unlimited = aggregate_all(&records, AggregatorConfig::default().max_size(1 << 22));
        let exact = unlimited[0].size();
        let at_limit = aggregate_all(&records, AggregatorConfig::default().max_size(exact));
        prop_assert_eq!(at_limit.len(), 1);
        prop_assert_eq!(at_limit[0].size(), exact);
        let below = aggregate_all(&records, AggregatorConfig::default().max_size(exact - 1));
        prop_assert!(below.len() >= 2);
        prop_assert_eq!(deaggregate_all(&below), records);
    }

    /// Random bytes, with or without the magic and a correct digest: no panic, no loss.
    #[test]
    fn hostile_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), framed in any::<bool>()) {
        let data = if framed { frame(&body) } else { body };
        check_no_loss(Bytes::from(data));
    }

    /// Valid aggregates with bytes flipped or cut, re-framed with a correct digest so the
    /// parser sees the damage.
    #[test]
    fn mutated_aggregates_never_panic(
        records in proptest::collection::vec(user_record(), 2..20),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let aggregates = aggregate_all(&records, AggregatorConfig::default().max_size(1 << 22));
        let data = &aggregates[0].data;
        let mut body = data[4..data.len() - 16].to_vec();
        for (at, value) in flips {
            let i = at.index(body.len());
            body[i] ^= value;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        check_no_loss(Bytes::from(frame(&body)));
        // Truncated without re-framing: the digest no longer matches.
        check_no_loss(data.slice(..cut.index(data.len())));
    }

    #[test]
    fn filter_keeps_exactly_the_records_in_range(
        records in proptest::collection::vec(user_record(), 2..80),
        bound in any::<u128>(),
    ) {
        let aggregates = aggregate_all(&records, AggregatorConfig::default().max_size(1 << 22));
        let range = HashRange::new(0, bound).expect("ordered");
        let mut out = Vec::new();
        let received = ReceivedRecord::new(aggregates[0].partition_key.clone(), aggregates[0].data.clone());
        let outcome = Deaggregator::new().hash_range(range).deaggregate_into(&received, &mut out).expect("valid");
        let expected: Vec<_> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| range.contains(r.hash_key().expect("valid key")))
            .map(|(i, r)| (i as u64, r.data.clone()))
            .collect();
        let got: Vec<_> = out.iter().map(|r| (r.sub_sequence_number().expect("aggregated"), r.data_bytes())).collect();
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(outcome, Outcome::Aggregated { records: expected.len(), filtered: records.len() - expected.len() });
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(body);
    data.extend_from_slice(&Md5::digest(body));
    data
}

/// Lenient deaggregation of anything yields either the record itself or sub-records that lie
/// inside it; strict deaggregation returns a value or an error, never a panic.
fn check_no_loss(data: Bytes) {
    let received = ReceivedRecord::new("pk", data.clone());
    let records = deaggregate(&received);
    if records.len() == 1 && !records[0].is_aggregated() {
        assert_eq!(records[0].data(), data);
    } else {
        assert!(records.iter().all(|r| r.is_aggregated()));
    }
    let _ = try_deaggregate(&received);
    let _ = Deaggregator::new()
        .hash_range(HashRange::new(0, partition_key_hash("pk")).expect("ordered"))
        .deaggregate_into(&received, &mut Vec::new());
}

#[test]
fn many_keys_need_multi_byte_varint_indexes() {
    // 20,000 distinct keys: table indexes up to 19,999 take three-byte varints.
    let records: Vec<_> = (0..20_000)
        .map(|i| {
            let record = UserRecord::new(format!("key-{i}"), vec![(i % 251) as u8; i % 7]);
            if i % 3 == 0 {
                record.with_explicit_hash_key((i as u128 * 7_919).to_string())
            } else {
                record
            }
        })
        .collect();
    let aggregates = aggregate_all(&records, AggregatorConfig::default().max_size(10 << 20));
    assert_eq!(aggregates.len(), 1);
    assert_eq!(deaggregate_all(&aggregates), records);
}
