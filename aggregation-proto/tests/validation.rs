//! Bad input gets a typed error that names the limit; the aggregate is left untouched.

use aggregation_proto::{AddError, Aggregator, AggregatorConfig, RecordError, UserRecord};

fn add(record: UserRecord) -> Result<(), AddError> {
    Aggregator::new(AggregatorConfig::default()).try_add(&record)
}

#[test]
fn partition_key_must_have_1_to_256_characters() {
    assert_eq!(
        add(UserRecord::new("", "x")),
        Err(RecordError::EmptyPartitionKey.into())
    );
    assert_eq!(
        add(UserRecord::new("k".repeat(257), "x")),
        Err(RecordError::PartitionKeyTooLong { chars: 257 }.into())
    );
    // 256 four-byte characters are 1,024 bytes and still a valid key.
    assert_eq!(add(UserRecord::new("😀".repeat(256), "x")), Ok(()));
    assert_eq!(
        add(UserRecord::new("😀".repeat(257), "x")),
        Err(RecordError::PartitionKeyTooLong { chars: 257 }.into())
    );
}

#[test]
fn explicit_hash_key_must_be_a_128_bit_decimal() {
    for bad in [
        "",
        "-1",
        "+1",
        "0x10",
        "1.0",
        " 1",
        "340282366920938463463374607431768211456",
    ] {
        let error = add(UserRecord::new("k", "x").with_explicit_hash_key(bad)).expect_err(bad);
        assert!(
            matches!(
                error,
                AddError::Invalid(RecordError::InvalidExplicitHashKey { .. })
            ),
            "{bad:?}: {error}"
        );
        assert!(error.to_string().contains("2^128-1"), "{error}");
    }
    assert_eq!(
        add(UserRecord::new("k", "x").with_explicit_hash_key("0")),
        Ok(())
    );
}

#[test]
fn a_record_too_large_for_any_aggregate_says_the_limit() {
    let mut aggregator = Aggregator::new(AggregatorConfig::default().max_size(100));
    let error = aggregator
        .try_add(&UserRecord::new("key", vec![0u8; 98]))
        .expect_err("too large");
    assert_eq!(
        error,
        AddError::Invalid(RecordError::RecordTooLarge {
            size: 101,
            max_size: 100
        })
    );
    assert!(error.to_string().contains("limit is 100 bytes"), "{error}");
    // Exactly at the limit it goes alone, as a plain record.
    aggregator
        .try_add(&UserRecord::new("key", vec![0u8; 97]))
        .expect("fits alone");
    assert_eq!(
        aggregator.try_add(&UserRecord::new("key", "x")),
        Err(AddError::Full)
    );
    let plain = aggregator.finish().expect("one record");
    assert_eq!(plain.size(), 100);
    assert_eq!(plain.data.len(), 97);
}

#[test]
fn a_rejected_record_leaves_the_aggregate_as_it_was() {
    let mut aggregator = Aggregator::new(AggregatorConfig::default().max_count(2));
    aggregator
        .try_add(&UserRecord::new("a", "1"))
        .expect("fits");
    let size = aggregator.size();
    assert!(aggregator.try_add(&UserRecord::new("", "2")).is_err());
    assert_eq!((aggregator.len(), aggregator.size()), (1, size));
    aggregator
        .try_add(&UserRecord::new("b", "2"))
        .expect("fits");
    assert_eq!(
        aggregator.fits(&UserRecord::new("c", "3")),
        Ok(false),
        "max count"
    );
    assert_eq!(
        aggregator.try_add(&UserRecord::new("c", "3")),
        Err(AddError::Full)
    );
    assert_eq!(aggregator.len(), 2);
    assert!(aggregator.finish().is_some());
    assert!(aggregator.is_empty());
    assert_eq!(aggregator.size(), 0);
    assert!(aggregator.finish().is_none());
}
