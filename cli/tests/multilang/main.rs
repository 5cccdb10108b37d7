//! The MultiLangDaemon without a JVM (`kinesis-cat multilang`, `kcl-multilang`) against
//! kinesis-mock and DynamoDB Local, running the real client libraries installed by
//! `scripts/test.sh` into `.cache/multilang`: the unmodified amazon-kclpy 3.2.0 sample, a Node
//! processor on aws-kcl 2.3.2, faulty children, and the drop-in command lines.

#[path = "../common/mod.rs"]
mod common;
mod dropin;
mod faults;
mod node;
mod python;
mod support;
