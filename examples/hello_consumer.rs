//! The classic tutorial consumer, through the consumer library: tails every shard of a stream
//! and prints each user record. Leases and checkpoints live in DynamoDB, so a second copy
//! shares the shards with this one, a restart resumes after the last checkpoint, and resharding
//! is followed (children are read after their parents).
//!
//! ```text
//! cargo run -p kinesis-examples --example hello_consumer [-- --idle-exit SECS]
//! ```
//!
//! The stream is `STREAM_NAME` (default `hello-stream`), the application (and lease table)
//! `APPLICATION_NAME` (default `hello-consumer`); a new application starts at the oldest record
//! (TRIM_HORIZON). Runs until Ctrl-C, or with `--idle-exit SECS` until there has been nothing
//! left to read for that long.

use std::time::Duration;

use kcl::{
    Checkpointer, InitialPosition, InitializeInput, ProcessRecordsInput, Scheduler,
    ShardRecordProcessor,
};
use kinesis_examples::{BoxError, flag, stream_name};

/// Prints the records of one shard.
#[derive(Default)]
struct Printer {
    shard_id: String,
}

impl ShardRecordProcessor for Printer {
    async fn initialize(&mut self, input: InitializeInput) {
        self.shard_id = input.shard_id;
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        for record in &input.records {
            println!(
                "Record: {}, Partition Key: {}, Shard: {}",
                String::from_utf8_lossy(record.data()),
                record.partition_key(),
                self.shard_id
            );
        }
        // Printed, so done: the next reader of this shard starts after these.
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!("checkpoint of {} failed: {error}", self.shard_id);
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if let Err(error) = checkpointer.checkpoint_shard_end().await {
            eprintln!(
                "shard end of {} not checkpointed yet: {error}",
                self.shard_id
            );
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let idle_exit: Option<f64> = flag(&args, "--idle-exit")?;
    let config = aws_config::load_from_env().await;
    let stream = stream_name("hello-stream");
    let application =
        std::env::var("APPLICATION_NAME").unwrap_or_else(|_| "hello-consumer".to_owned());

    let scheduler = Scheduler::builder(application.as_str(), stream.as_str(), |_shard: &str| {
        Printer::default()
    })
    .sdk_config(&config)
    .initial_position(InitialPosition::TrimHorizon)
    .build()?;
    let handle = scheduler.handle();
    let mut worker = tokio::spawn(scheduler.run());

    let idle = async {
        match idle_exit {
            Some(secs) => handle.wait_idle(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        ended = &mut worker => return Ok(ended??),
        _ = tokio::signal::ctrl_c() => eprintln!("Ctrl-C: checkpointing and handing the leases back"),
        () = idle => eprintln!("nothing left to read: checkpointing and handing the leases back"),
    }
    handle.graceful_shutdown().await;
    Ok(worker.await??)
}
