//! Cross-implementation check against the official Python library (`aws-kinesis-agg` 1.2.3,
//! installed into the test venv by `scripts/test.sh`): its deaggregator reads what our
//! aggregator writes, and ours reads what its aggregator writes, on random records.

use std::io::Write;
use std::process::{Command, Stdio};

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, KinesisRecord, ReceivedRecord, UserRecord, deaggregate,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// (partition key, explicit hash key, data) as both sides report a user record.
type Triple = (String, Option<String>, Vec<u8>);

const ALPHABET: &[char] = &[
    'a', 'b', 'z', '0', '9', '-', 'ж', 'я', '中', '文', '😀', 'é',
];

fn random_records(seed: u64, count: usize) -> Vec<UserRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shared_hash_keys: Vec<String> = (0..5).map(|_| rng.random::<u128>().to_string()).collect();
    (0..count)
        .map(|_| {
            let key_len = if rng.random_ratio(1, 50) {
                256
            } else {
                rng.random_range(1..24)
            };
            let key: String = (0..key_len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect();
            let data_len = match rng.random_range(0..10) {
                0 => 0,
                1 => rng.random_range(3_000..4_500),
                _ => rng.random_range(1..400),
            };
            let data: Vec<u8> = (0..data_len).map(|_| rng.random()).collect();
            let record = UserRecord::new(key, data);
            match rng.random_range(0..8) {
                0 => record.with_explicit_hash_key(rng.random::<u128>().to_string()),
                1 => {
                    record.with_explicit_hash_key(shared_hash_keys[rng.random_range(0..5)].clone())
                }
                2 => record.with_explicit_hash_key(u128::MAX.to_string()),
                _ => record,
            }
        })
        .collect()
}

fn aggregate(records: &[UserRecord], max_size: usize) -> Vec<KinesisRecord> {
    let mut aggregator = Aggregator::new(AggregatorConfig::default().max_size(max_size));
    let mut out = Vec::new();
    for record in records {
        match aggregator.try_add(record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                out.extend(aggregator.finish());
                aggregator.try_add(record).expect("fits an empty aggregate");
            }
            Err(invalid) => panic!("generated an invalid record: {invalid}"),
        }
    }
    out.extend(aggregator.finish());
    out
}

/// Runs the Python bridge in `mode` over JSON lines and parses its JSON lines.
fn python_bridge(mode: &[&str], lines: &[Value]) -> Vec<Value> {
    let script = integration_tests::repo_root().join("tests/compat/kpl_agg_compat.py");
    let mut child = Command::new(integration_tests::python())
        .arg(&script)
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let input: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python ends");
    writer
        .join()
        .expect("writer thread")
        .expect("stdin written");
    assert!(
        output.status.success(),
        "{} {mode:?} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("python wrote JSON"))
        .collect()
}

fn triple(value: &Value) -> Triple {
    (
        value["partition_key"]
            .as_str()
            .expect("partition_key")
            .to_owned(),
        value["explicit_hash_key"].as_str().map(str::to_owned),
        STANDARD
            .decode(value["data"].as_str().expect("data"))
            .expect("base64"),
    )
}

#[test]
fn python_deaggregates_what_we_aggregate() {
    for (seed, max_size) in [(1, 51_200), (2, 5_000), (3, 1 << 20)] {
        let records = random_records(seed, 2_000);
        let aggregates = aggregate(&records, max_size);
        assert!(aggregates.iter().all(|a| a.size() <= max_size));

        // What the Python library must report, bug for bug: a sub-record without an explicit
        // hash key comes back with entry 0 of its aggregate's table when that table is not
        // empty; a lone record we sent plain comes back as a plain record.
        let mut expected: Vec<Triple> = Vec::new();
        let mut rest = records.iter();
        for aggregate in &aggregates {
            let count = deaggregate(&ReceivedRecord::new(
                aggregate.partition_key.clone(),
                aggregate.data.clone(),
            ))
            .len();
            let members: Vec<&UserRecord> = rest.by_ref().take(count).collect();
            let table_first = members.iter().find_map(|r| r.explicit_hash_key.clone());
            for member in &members {
                let ehk = if count == 1 && !aggregate.data.starts_with(&aggregation_proto::MAGIC) {
                    None
                } else {
                    member
                        .explicit_hash_key
                        .clone()
                        .or_else(|| table_first.clone())
                };
                expected.push((member.partition_key.clone(), ehk, member.data.to_vec()));
            }
        }
        assert!(rest.next().is_none());

        let input: Vec<Value> = aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| json!({"partition_key": a.partition_key, "data": STANDARD.encode(&a.data), "sequence_number": i.to_string()}))
            .collect();
        let got: Vec<Triple> = python_bridge(&["decode"], &input)
            .iter()
            .map(triple)
            .collect();
        assert_eq!(got.len(), expected.len(), "seed {seed}");
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "seed {seed}, user record {i}");
        }
    }
}

#[test]
fn we_deaggregate_what_python_aggregates() {
    for seed in [4, 5] {
        let records = random_records(seed, 2_000);
        let input: Vec<Value> = records
            .iter()
            .map(|r| json!({"partition_key": r.partition_key, "explicit_hash_key": r.explicit_hash_key, "data": STANDARD.encode(&r.data)}))
            .collect();
        let aggregates = python_bridge(&["encode"], &input);
        assert!(aggregates.len() > 1, "several aggregates");

        let mut got: Vec<Triple> = Vec::new();
        for (i, aggregate) in aggregates.iter().enumerate() {
            let (key, _, data) = triple(aggregate);
            let received = ReceivedRecord::new(key, data).with_sequence_number(i.to_string());
            let users = aggregation_proto::try_deaggregate(&received)
                .expect("python writes valid aggregates");
            for (sub, user) in users.iter().enumerate() {
                assert!(user.is_aggregated());
                assert_eq!(user.sub_sequence_number(), Some(sub as u64));
                assert_eq!(user.sequence_number(), Some(i.to_string().as_str()));
                got.push((
                    user.partition_key().to_owned(),
                    user.explicit_hash_key().map(str::to_owned),
                    user.data().to_vec(),
                ));
            }
        }
        let expected: Vec<Triple> = records
            .iter()
            .map(|r| {
                (
                    r.partition_key.clone(),
                    r.explicit_hash_key.clone(),
                    r.data.to_vec(),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "seed {seed}");
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "seed {seed}, user record {i}");
        }
    }
}
