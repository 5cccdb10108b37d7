//! `kinesis-cat agg` driven as a script would drive it: JSON lines in, JSON lines out.

mod common;

use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{kinesis_cat_offline, run_with_input};
use serde_json::{Value, json};

fn kinesis_cat(args: &[&str], stdin: &str) -> Output {
    run_with_input(kinesis_cat_offline(args), stdin)
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .expect("utf-8 stdout")
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stdout line is whole JSON"))
        .collect()
}

fn user_line(key: &str, ehk: Option<&str>, data: &[u8]) -> String {
    json!({"partition_key": key, "explicit_hash_key": ehk, "data": STANDARD.encode(data)})
        .to_string()
}

#[test]
fn encode_then_decode_round_trips() {
    let input: String = (0..300)
        .map(|i| {
            let ehk = (i % 7 == 0).then(|| (i as u128 * 1_000_003).to_string());
            user_line(
                &format!("ключ-{}", i % 13),
                ehk.as_deref(),
                &vec![i as u8; i % 400],
            ) + "\n"
        })
        .collect();
    let encoded = kinesis_cat(&["agg", "encode", "--max-size", "20000"], &input);
    assert!(
        encoded.status.success(),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    let kinesis_records = lines(&encoded);
    assert!(
        kinesis_records.len() > 1,
        "several aggregates under 20,000 bytes"
    );
    for record in &kinesis_records {
        let size = record["partition_key"].as_str().expect("key").len()
            + STANDARD
                .decode(record["data"].as_str().expect("data"))
                .expect("base64")
                .len();
        assert!(size <= 20_000, "{size}");
    }

    let decode_input: String = kinesis_records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"partition_key": r["partition_key"], "data": r["data"], "sequence_number": format!("{}", 1000 + i)})
                .to_string()
                + "\n"
        })
        .collect();
    let decoded = kinesis_cat(&["agg", "decode"], &decode_input);
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let users = lines(&decoded);
    assert_eq!(users.len(), 300);
    for (i, user) in users.iter().enumerate() {
        let expected: Value =
            serde_json::from_str(input.lines().nth(i).expect("line")).expect("json");
        assert_eq!(
            user["partition_key"], expected["partition_key"],
            "record {i}"
        );
        assert_eq!(
            user["explicit_hash_key"], expected["explicit_hash_key"],
            "record {i}"
        );
        assert_eq!(user["data"], expected["data"], "record {i}");
        assert_eq!(user["aggregated"], true);
        assert!(user["sub_sequence_number"].is_u64());
        assert!(user["sequence_number"].is_string());
    }
}

#[test]
fn a_plain_record_decodes_as_itself() {
    let input = json!({"partition_key": "pk", "data": STANDARD.encode(b"hello")}).to_string();
    let decoded = kinesis_cat(&["agg", "decode"], &input);
    assert!(decoded.status.success());
    assert_eq!(
        lines(&decoded),
        vec![
            json!({"partition_key": "pk", "explicit_hash_key": null, "data": STANDARD.encode(b"hello"),
                    "sequence_number": null, "sub_sequence_number": null, "aggregated": false})
        ]
    );
}

#[test]
fn bad_lines_name_the_line_and_leave_no_garbage() {
    let good = user_line("a", None, b"1");
    let cases = [
        ("{not json", "invalid JSON"),
        (
            r#"{"partition_key": "a", "data": "***"}"#,
            "not valid base64",
        ),
        (
            &user_line(&"k".repeat(257), None, b"x"),
            "257 Unicode characters",
        ),
        (&user_line("a", Some("12x"), b"x"), "explicit hash key"),
    ];
    for (bad, problem) in cases {
        let input = format!("{good}\n{good}\n{bad}\n{good}\n");
        let output = kinesis_cat(&["agg", "encode"], &input);
        assert!(!output.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("line 3"), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        // The two good records before the bad line come out whole, as one aggregate.
        let out = lines(&output);
        assert_eq!(out.len(), 1, "{bad}");
        let decoded = kinesis_cat(
            &["agg", "decode"],
            &json!({"partition_key": out[0]["partition_key"], "data": out[0]["data"]}).to_string(),
        );
        assert_eq!(lines(&decoded).len(), 2);
    }

    let output = kinesis_cat(
        &["agg", "decode"],
        "{\"partition_key\": \"a\", \"data\": \"!\"}\n",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 1"));
    assert!(output.stdout.is_empty());
}

#[test]
fn decodes_a_lambda_event() {
    let aggregate = kinesis_cat(
        &["agg", "encode"],
        &[user_line("x", None, b"one"), user_line("y", None, b"two")].join("\n"),
    );
    let aggregate = &lines(&aggregate)[0];
    let event = json!({"Records": [
        {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": aggregate["partition_key"],
                     "sequenceNumber": "4959", "data": aggregate["data"],
                     "approximateArrivalTimestamp": 1_700_000_000.25},
         "eventSource": "aws:kinesis", "eventID": "shardId-000000000000:4959"},
        {"kinesis": {"partitionKey": "plain", "sequenceNumber": "4960", "data": STANDARD.encode(b"three")}}
    ]});
    let output = kinesis_cat(&["agg", "decode", "--lambda"], &event.to_string());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let users = lines(&output);
    let summary: Vec<_> = users
        .iter()
        .map(|u| {
            (
                u["partition_key"].clone(),
                u["sequence_number"].clone(),
                u["sub_sequence_number"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("x"), json!("4959"), json!(0)),
            (json!("y"), json!("4959"), json!(1)),
            (json!("plain"), json!("4960"), json!(null)),
        ]
    );
}
