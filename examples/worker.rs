//! A consumer worker as production code has it: a processor that checkpoints every N records or
//! every T seconds, whichever comes first (a checkpoint is a DynamoDB write: once per record
//! would cost a write per record), and a graceful shutdown on Ctrl-C or SIGTERM that
//! checkpoints what was processed and hands the leases back to the other workers.
//!
//! ```text
//! cargo run -p kinesis-examples --example worker [-- --every N] [--interval SECS] [--idle-exit SECS]
//! ```
//!
//! Defaults: every 1,000 records or 10 s. The stream is `STREAM_NAME` (default
//! `hello-stream`), the application `APPLICATION_NAME` (default `hello-worker`). Run two
//! copies and they share the shards; stop one and the other takes its shards over.

use std::time::{Duration, Instant};

use kcl::{
    Checkpointer, InitialPosition, InitializeInput, ProcessRecordsInput, Scheduler,
    ShardRecordProcessor,
};
use kinesis_examples::{BoxError, flag, stream_name};

/// How often a processor checkpoints.
#[derive(Clone, Copy)]
struct Every {
    records: u64,
    interval: Duration,
}

struct Worker {
    every: Every,
    shard_id: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    processed: u64,
}

impl Worker {
    fn new(every: Every) -> Self {
        Self {
            every,
            shard_id: String::new(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            processed: 0,
        }
    }

    async fn checkpoint(&mut self, checkpointer: &mut Checkpointer, why: &str) {
        if self.since_checkpoint == 0 {
            return;
        }
        match checkpointer.checkpoint().await {
            Ok(()) => {
                println!(
                    "{}: checkpointed after {} records ({why}), {} in all",
                    self.shard_id, self.since_checkpoint, self.processed
                );
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
            }
            // Not fatal: the records since the last checkpoint are read again by whoever
            // holds the shard next (at-least-once), and the next batch tries again.
            Err(error) => eprintln!("{}: checkpoint failed: {error}", self.shard_id),
        }
    }
}

impl ShardRecordProcessor for Worker {
    async fn initialize(&mut self, input: InitializeInput) {
        println!("{}: starting after {:?}", input.shard_id, input.checkpoint);
        self.shard_id = input.shard_id;
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        // The application's work goes here; this one counts.
        self.processed += input.records.len() as u64;
        self.since_checkpoint += input.records.len() as u64;
        if self.since_checkpoint >= self.every.records {
            self.checkpoint(checkpointer, "record count").await;
        } else if self.last_checkpoint.elapsed() >= self.every.interval {
            self.checkpoint(checkpointer, "interval").await;
        }
    }

    async fn lease_lost(&mut self) {
        // Another worker holds the shard now: checkpointing would fail, and must not be tried.
        println!(
            "{}: lease lost after {} records",
            self.shard_id, self.processed
        );
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        // Required: the children are read only once the parent's end is checkpointed.
        if let Err(error) = checkpointer.checkpoint_shard_end().await {
            eprintln!("{}: shard end not checkpointed yet: {error}", self.shard_id);
        } else {
            println!(
                "{}: shard ended after {} records",
                self.shard_id, self.processed
            );
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        self.checkpoint(checkpointer, "shutdown").await;
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let every = Every {
        records: flag(&args, "--every")?.unwrap_or(1_000),
        interval: Duration::from_secs_f64(flag(&args, "--interval")?.unwrap_or(10.0)),
    };
    let idle_exit: Option<f64> = flag(&args, "--idle-exit")?;
    let config = aws_config::load_from_env().await;
    let stream = stream_name("hello-stream");
    let application =
        std::env::var("APPLICATION_NAME").unwrap_or_else(|_| "hello-worker".to_owned());

    let scheduler = Scheduler::builder(application.as_str(), stream.as_str(), move |_: &str| {
        Worker::new(every)
    })
    .sdk_config(&config)
    .initial_position(InitialPosition::TrimHorizon)
    .build()?;
    let handle = scheduler.handle();
    println!(
        "worker {} on {stream} ({application})",
        scheduler.worker_id()
    );
    let mut worker = tokio::spawn(scheduler.run());

    let idle = async {
        match idle_exit {
            Some(secs) => handle.wait_idle(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        ended = &mut worker => return Ok(ended??),
        () = terminate_signal() => println!("shutting down: checkpointing, handing the leases back"),
        () = idle => println!("idle: checkpointing, handing the leases back"),
    }
    handle.graceful_shutdown().await;
    worker.await??;
    let metrics = handle.metrics();
    println!(
        "shut down gracefully after {} records",
        metrics.records_processed
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM (what a container runtime sends).
async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
