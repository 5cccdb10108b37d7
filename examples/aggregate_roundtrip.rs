//! Aggregate user records into KPL-format Kinesis records and take them apart again, as a
//! producer and a Lambda consumer would, with no AWS call.
//!
//! `cargo run -p kinesis-examples --example aggregate_roundtrip`

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, KinesisRecord, ReceivedRecord, UserRecord, deaggregate,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    let mut kinesis_records: Vec<KinesisRecord> = Vec::new();
    for i in 0..2_000 {
        let record = UserRecord::new(format!("device-{}", i % 50), format!("reading {i}"));
        match aggregator.try_add(&record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                kinesis_records.extend(aggregator.finish());
                aggregator.try_add(&record)?;
            }
            Err(invalid) => return Err(invalid.into()),
        }
    }
    kinesis_records.extend(aggregator.finish());
    println!(
        "2000 user records -> {} Kinesis records ({} bytes in all)",
        kinesis_records.len(),
        kinesis_records
            .iter()
            .map(KinesisRecord::size)
            .sum::<usize>()
    );

    let mut recovered = 0;
    for (sequence, record) in kinesis_records.iter().enumerate() {
        let received = ReceivedRecord::new(record.partition_key.clone(), record.data.clone())
            .with_sequence_number(sequence.to_string());
        for user in deaggregate(&received) {
            if recovered % 500 == 0 {
                println!(
                    "{} / {:?}: {}",
                    user.partition_key(),
                    user.sub_sequence_number(),
                    String::from_utf8_lossy(user.data())
                );
            }
            recovered += 1;
        }
    }
    println!("recovered {recovered} user records");
    Ok(())
}
