//! Failures of the application and of the services on one worker: read errors, processors
//! that panic or hang, a hung shutdown, a startup during an outage.

use std::time::Duration;

use super::*;
use kinesis_common::ErrorClass as Class;
use kinesis_common::testing::Operation;

#[tokio::test(start_paused = true)]
async fn read_errors_on_a_kept_lease_never_redeliver_or_skip() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(7),
        ..worker_config()
    };
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    for round in 0..6 {
        fleet.stream.put_n(&s0, &format!("r{round}"), 20);
        match round {
            0 => fleet
                .stream
                .fail(Operation::GetRecords, Class::Transient, 3),
            1 => fleet.stream.expire_iterators(),
            // Errors the source does not retry on its own: the consumer keeps its lease and
            // its position and tries again.
            2 => fleet
                .stream
                .fail(Operation::GetRecords, Class::Unexpected, 2),
            3 => fleet
                .stream
                .fail(Operation::GetRecords, Class::AccessDenied, 2),
            4 => {
                fleet
                    .stream
                    .fail(Operation::GetRecords, Class::InvalidRequest, 1);
                fleet
                    .stream
                    .fail(Operation::GetShardIterator, Class::Transient, 2);
            }
            _ => fleet.stream.expire_iterators(),
        }
        fleet
            .wait_delivered((round + 1) * 20, Duration::from_secs(60))
            .await;
    }
    assert_eq!(fleet.duplicates(), 0, "nothing delivered twice");
    assert_eq!(fleet.counts().len(), 120);
    // Never released, lost or taken again.
    assert_eq!(fleet.store.writes_of("take"), std::slice::from_ref(&s0));
    assert!(fleet.store.writes_of("release").is_empty());
    assert!(
        fleet
            .events(&s0)
            .iter()
            .all(|e| !matches!(e, Event::LeaseLost))
    );
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_processor_starts_over_from_its_last_checkpoint_and_keeps_the_lease() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(10),
        ..worker_config()
    };
    *fleet.script.panic_in.lock().unwrap() = Some(2);
    fleet.stream.put_n(&s0, "r", 50);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    fleet.wait_delivered(50, Duration::from_secs(60)).await;
    // The panicking batch was not recorded (it panicked first): nothing delivered twice.
    assert_eq!(fleet.duplicates(), 0);
    assert_eq!(w1.handle.metrics().processor_failures, 1);
    // The lease stayed: one take, two initializations from the checkpoints of the time.
    assert_eq!(fleet.store.writes_of("take"), std::slice::from_ref(&s0));
    let inits: Vec<Checkpoint> = fleet
        .events(&s0)
        .into_iter()
        .filter_map(|e| match e {
            Event::Initialize(input) => Some(input.checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0], Checkpoint::TrimHorizon);
    assert!(matches!(inits[1], Checkpoint::Sequence { .. }), "{inits:?}");
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_processor_that_asks_for_a_restart_starts_over_from_its_last_checkpoint() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(10),
        ..worker_config()
    };
    *fleet.script.restart_in.lock().unwrap() = Some(2);
    let sequences = fleet.stream.put_n(&s0, "r", 50);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    fleet.wait_delivered(50, Duration::from_secs(60)).await;
    assert_eq!(fleet.duplicates(), 0);
    assert_eq!(w1.handle.metrics().processor_failures, 1);
    assert_eq!(fleet.store.writes_of("take"), std::slice::from_ref(&s0));
    let inits: Vec<Checkpoint> = fleet
        .events(&s0)
        .into_iter()
        .filter_map(|e| match e {
            Event::Initialize(input) => Some(input.checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(inits.len(), 2, "{inits:?}");
    // Two batches of ten were checkpointed before the third asked for the restart.
    assert_eq!(inits[1], Checkpoint::sequence(sequences[19].clone(), 0));
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restart_before_the_first_checkpoint_of_a_latest_lease_skips_nothing() {
    // The lease is at LATEST (no checkpoint yet) and the processor panics on its first batch:
    // the restarted processor must get that batch again, and what arrived meanwhile, rather
    // than a fresh LATEST iterator that starts after all of it.
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "old", 5);
    let config = WorkerConfig {
        initial: InitialPosition::Latest,
        ..worker_config()
    };
    *fleet.script.panic_in.lock().unwrap() = Some(0);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    wait_for("reading at LATEST", Duration::from_secs(30), || {
        fleet.stream.call_count(Operation::GetRecords) > 0
    })
    .await;
    fleet.stream.put_n(&s0, "new", 10);
    wait_for("a restart", Duration::from_secs(30), || {
        w1.handle.metrics().processor_failures == 1
    })
    .await;
    fleet.stream.put_n(&s0, "later", 10);
    fleet.wait_delivered(20, Duration::from_secs(30)).await;
    let counts = fleet.counts();
    assert!(
        (0..10).all(|i| counts.contains_key(&format!("new-{i}"))),
        "{counts:?}"
    );
    // (The "old" records, put just before the worker started, fall within the clock-skew
    // margin of the restarted read and may come too: duplicates, never gaps.)
    let inits: Vec<Checkpoint> = fleet
        .events(&s0)
        .into_iter()
        .filter_map(|e| match e {
            Event::Initialize(input) => Some(input.checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(inits, vec![Checkpoint::Latest, Checkpoint::Latest]);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_latest_lease_failing_over_before_its_first_checkpoint_skips_nothing() {
    // w1 reads a lease at LATEST, is given records, and stops without checkpointing; w2 takes
    // the lease while it is still at LATEST. A fresh LATEST iterator would skip everything
    // that arrived since w1's first read; w2 starts at that first read instead.
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        initial: InitialPosition::Latest,
        ..worker_config()
    };
    *fleet.script.no_checkpoints.lock().unwrap() = true;
    *fleet.script.hang_on_shutdown.lock().unwrap() = true;
    let w1 = fleet.worker_with("w1", config.clone(), coordinator_config());
    wait_for("w1 reading at LATEST", Duration::from_secs(30), || {
        fleet.stream.call_count(Operation::GetRecords) > 0
    })
    .await;
    let noted = fleet.lease(&s0).unwrap();
    assert_eq!(noted.checkpoint, Checkpoint::Latest);
    assert!(noted.latest_started_at.is_some(), "{noted:?}");
    fleet.stream.put_n(&s0, "new", 10);
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    // w1 stops without a checkpoint (its processor never answers the shutdown request).
    let _ = w1.stop().await;
    assert_eq!(fleet.lease(&s0).unwrap().checkpoint, Checkpoint::Latest);
    fleet.stream.put_n(&s0, "later", 5);
    let w2 = fleet.worker_with("w2", config, coordinator_config());
    wait_for("w2 delivering", Duration::from_secs(60), || {
        let by_w2: std::collections::HashSet<String> = fleet
            .deliveries()
            .into_iter()
            .filter(|d| d.worker == "w2")
            .map(|d| d.data)
            .collect();
        (0..10).all(|i| by_w2.contains(&format!("new-{i}")))
            && (0..5).all(|i| by_w2.contains(&format!("later-{i}")))
    })
    .await;
    *fleet.script.hang_on_shutdown.lock().unwrap() = false;
    w2.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_latest_first_read_that_could_not_be_noted_is_kept_and_noted_at_the_next_read() {
    // The note of the first read fails (DynamoDB hiccup): the worker still reads, keeps the
    // time in the process, and after a processor restart reads from it and stores it.
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        initial: InitialPosition::Latest,
        ..worker_config()
    };
    *fleet.script.panic_in.lock().unwrap() = Some(0);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    w1.store.faults().fail_next.insert("note_latest_start", 1);
    wait_for("reading at LATEST", Duration::from_secs(30), || {
        fleet.stream.call_count(Operation::GetRecords) > 0
    })
    .await;
    assert_eq!(fleet.lease(&s0).unwrap().latest_started_at, None);
    fleet.stream.put_n(&s0, "new", 10);
    wait_for("a restart", Duration::from_secs(30), || {
        w1.handle.metrics().processor_failures == 1
    })
    .await;
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    let counts = fleet.counts();
    assert!(
        (0..10).all(|i| counts.contains_key(&format!("new-{i}"))),
        "the restarted processor starts at the first read: {counts:?}"
    );
    // Stored at the second read (and removed again by the first checkpoint since).
    assert_eq!(
        fleet.store.writes_of("note_latest_start"),
        std::slice::from_ref(&s0)
    );
    assert_eq!(fleet.lease(&s0).unwrap().latest_started_at, None);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn empty_reads_reach_the_processor_only_when_asked() {
    for enabled in [false, true] {
        let fleet = Fleet::new(1);
        let s0 = shard_id(0);
        let config = WorkerConfig {
            process_empty_batches: enabled,
            ..worker_config()
        };
        fleet.stream.put_n(&s0, "r", 3);
        let w1 = fleet.worker_with("w1", config, coordinator_config());
        fleet.wait_delivered(3, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let empty = fleet
            .script
            .empty_batches
            .load(std::sync::atomic::Ordering::SeqCst);
        if enabled {
            assert!(
                empty >= 5,
                "{empty} empty batches in 2 s of 100 ms idle reads"
            );
        } else {
            assert_eq!(empty, 0);
        }
        w1.stop().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_processor_times_out_and_the_shard_starts_over() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(10),
        processor_timeout: Some(Duration::from_secs(2)),
        ..worker_config()
    };
    *fleet.script.hang_in.lock().unwrap() = Some(1);
    fleet.stream.put_n(&s0, "r", 40);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    let took = fleet.wait_delivered(40, Duration::from_secs(60)).await;
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(fleet.duplicates(), 0);
    assert_eq!(w1.handle.metrics().processor_failures, 1);
    assert_eq!(fleet.store.writes_of("take"), std::slice::from_ref(&s0));
    w1.stop().await.unwrap();
}

/// The `Initialize` checkpoints of `shard`'s processors, in order.
fn initializations(fleet: &Fleet, shard: &str) -> Vec<Checkpoint> {
    fleet
        .events(shard)
        .into_iter()
        .filter_map(|e| match e {
            Event::Initialize(input) => Some(input.checkpoint),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_slow_batch_that_checkpoints_as_it_goes_is_never_restarted() {
    // The batch takes 3 x processor_timeout but checkpoints every 0.5 x: the timeout is a
    // watchdog for a processor that makes no progress, not a budget for a whole batch (a
    // budget would restart this batch from its checkpoint over and over).
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(12),
        processor_timeout: Some(Duration::from_secs(2)),
        ..worker_config()
    };
    *fleet.script.slow_batch.lock().unwrap() = Some(SlowBatch {
        steps: 6,
        every: Duration::from_secs(1),
        then_hang: false,
    });
    fleet.stream.put_n(&s0, "r", 40);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    let took = fleet.wait_delivered(40, Duration::from_secs(60)).await;
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert_eq!(w1.handle.metrics().processor_failures, 0);
    assert_eq!(fleet.duplicates(), 0);
    assert_eq!(initializations(&fleet, &s0).len(), 1);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_processor_that_stops_making_progress_is_restarted_one_timeout_after_its_last_checkpoint()
{
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(12),
        processor_timeout: Some(Duration::from_secs(2)),
        ..worker_config()
    };
    // Two checkpoints a second apart (each resets the watchdog), then nothing.
    *fleet.script.slow_batch.lock().unwrap() = Some(SlowBatch {
        steps: 2,
        every: Duration::from_secs(1),
        then_hang: true,
    });
    let sequences = fleet.stream.put_n(&s0, "r", 40);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    let restarted = wait_for("a restart", Duration::from_secs(60), || {
        initializations(&fleet, &s0).len() == 2
    })
    .await;
    // Last progress 2 s into the batch, the watchdog fires 2 s later, then the restart
    // backoff (100 ms).
    assert!(
        restarted >= Duration::from_secs(4) && restarted < Duration::from_secs(5),
        "{restarted:?}"
    );
    assert_eq!(w1.handle.metrics().processor_failures, 1);
    // The second processor starts from the hung one's last checkpoint: the whole batch.
    assert_eq!(
        initializations(&fleet, &s0)[1],
        Checkpoint::sequence(sequences[11].clone(), 0)
    );
    // The hung batch was checkpointed but never recorded: the rest follows, once each.
    fleet.wait_delivered(28, Duration::from_secs(60)).await;
    assert_eq!(fleet.duplicates(), 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_hands_a_hung_processors_lease_back_after_the_timeout() {
    let fleet = Fleet::new(2);
    let (s0, s1) = (shard_id(0), shard_id(1));
    let config = WorkerConfig {
        processor_timeout: None,
        shutdown_timeout: Duration::from_secs(4),
        ..worker_config()
    };
    fleet.stream.put_n(&s0, "a", 5);
    fleet.stream.put_n(&s1, "b", 5);
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    // One processor hangs in process_records (no processor timeout), every one in
    // shutdown_requested.
    hang_processors(&fleet, &w1, &s0).await;
    let started = Instant::now();
    w1.stop().await.unwrap();
    let took = started.elapsed();
    // The processors get the timeout less two renew intervals (1 s) kept for the releases;
    // the whole shutdown stays within the timeout.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took <= Duration::from_secs(4), "{took:?}");
    // Both leases handed back anyway.
    assert!(
        fleet.owners().values().all(Option::is_none),
        "{:?}",
        fleet.owners()
    );
}

#[tokio::test(start_paused = true)]
async fn startup_retries_transient_dynamodb_and_kinesis_failures() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "r", 3);
    fleet.stream.refuse_a_few_times(Operation::ListShards);
    let w1 = fleet.worker("w1");
    w1.store.faults().fail_next.insert("CreateTable", 2);
    w1.store.faults().fail_next.insert("Scan", 2);
    fleet.wait_delivered(3, Duration::from_secs(60)).await;
    assert!(fleet.stream.call_count(Operation::ListShards) >= 6);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn startup_fails_at_once_on_a_fatal_error() {
    let fleet = Fleet::new(1);
    fleet.stream.fail(Operation::ListShards, Class::NotFound, 1);
    let w1 = fleet.worker("w1");
    let result = tokio::time::timeout(Duration::from_secs(5), w1.task)
        .await
        .expect("returns at once")
        .unwrap();
    let error = result.expect_err("no such stream");
    assert!(
        matches!(&error, SchedulerError::ShardSync(sync) if !sync.is_retryable()),
        "{error:?}"
    );
}
