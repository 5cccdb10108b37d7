//! Examples live in this folder; run them with `cargo run -p kinesis-examples --example NAME`.
