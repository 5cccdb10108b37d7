//! Support for the chaos test (`cli/tests/chaos.rs`): a TCP proxy that slows, holds or resets
//! connections, worker processes with their output parsed, and the verifier.
//!
//! The test lives in the `kinesis-cat` crate because only there is the worker binary built
//! for the test (`CARGO_BIN_EXE_kinesis-cat`).

pub mod tcp_proxy;
pub mod verify;
pub mod worker;
