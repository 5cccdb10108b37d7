//! The builder refuses every timing that cannot work, with a typed error naming it.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::coordinator::CoordinatorConfigError;
use crate::retrieval::PollingConfig;
use crate::{Scheduler, SchedulerBuilder, SchedulerError};

use super::Recorder;

fn builder() -> SchedulerBuilder<impl Fn(&str) -> Recorder + Send + Sync + 'static> {
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build(),
    );
    Scheduler::builder("app", "stream", |_: &str| -> Recorder { unreachable!() })
        .clients(kinesis, dynamodb)
}

fn refused(
    builder: SchedulerBuilder<impl Fn(&str) -> Recorder + Send + Sync + 'static>,
) -> CoordinatorConfigError {
    match builder.build() {
        Err(SchedulerError::Config(error)) => error,
        Err(other) => panic!("not a config error: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn every_timing_is_validated_zero_and_huge() {
    let day = Duration::from_secs(86_400);
    let huge = Duration::MAX;
    assert_eq!(
        refused(builder().failover_time(Duration::ZERO)),
        CoordinatorConfigError::ZeroFailoverTime
    );
    assert!(matches!(
        refused(builder().failover_time(huge)),
        CoordinatorConfigError::TooLong {
            setting: "failover_time",
            ..
        }
    ));
    assert_eq!(
        refused(builder().renew_interval(Duration::ZERO)),
        CoordinatorConfigError::ZeroRenewInterval
    );
    assert!(matches!(
        refused(builder().renew_interval(day)),
        CoordinatorConfigError::RenewIntervalTooLong { .. }
    ));
    assert_eq!(
        refused(builder().take_interval(Duration::ZERO)),
        CoordinatorConfigError::ZeroTakeInterval
    );
    assert!(matches!(
        refused(builder().take_interval(huge)),
        CoordinatorConfigError::TooLong {
            setting: "take_interval",
            ..
        }
    ));
    assert_eq!(
        refused(builder().handoff_timeout(Duration::ZERO)),
        CoordinatorConfigError::ZeroHandoffTimeout
    );
    for (setting, zero, too_long) in [
        (
            "shard_sync_interval",
            builder().shard_sync_interval(Duration::ZERO),
            builder().shard_sync_interval(huge),
        ),
        (
            "parent_poll_interval",
            builder().parent_poll_interval(Duration::ZERO),
            builder().parent_poll_interval(huge),
        ),
        (
            "cleanup_interval",
            builder().cleanup_interval(Duration::ZERO),
            builder().cleanup_interval(huge),
        ),
        (
            "shutdown_timeout",
            builder().shutdown_timeout(Duration::ZERO),
            builder().shutdown_timeout(huge),
        ),
        (
            "processor_timeout",
            builder().processor_timeout(Some(Duration::ZERO)),
            builder().processor_timeout(Some(huge)),
        ),
        (
            "retry_backoff_min",
            builder().retry_backoff(Duration::ZERO, Duration::from_secs(1)),
            builder().retry_backoff(huge, huge),
        ),
    ] {
        assert_eq!(
            refused(zero),
            CoordinatorConfigError::Zero { setting },
            "{setting}"
        );
        assert!(
            matches!(refused(too_long), CoordinatorConfigError::TooLong { setting: s, .. } if s == setting),
            "{setting}"
        );
    }
    // Polling settings clamp what is too small and refuse what is too long.
    for polling in [
        PollingConfig::default().idle_time_between_reads(huge),
        PollingConfig::default().request_timeout(huge),
        PollingConfig::default().throttle_backoff(Duration::ZERO, huge),
        PollingConfig::default().min_time_between_calls(huge),
        PollingConfig::default().give_up_after(Some(huge)),
    ] {
        assert!(matches!(
            refused(builder().polling(polling)),
            CoordinatorConfigError::TooLong { .. }
        ));
    }
    assert_eq!(
        refused(builder().worker_id("")),
        CoordinatorConfigError::EmptyWorkerId
    );
    // What is allowed is accepted, up to a day, and max_leases_for_worker is there.
    let scheduler = builder()
        .failover_time(day)
        .take_interval(day)
        .shard_sync_interval(day)
        .cleanup_interval(day)
        .processor_timeout(None)
        .max_leases_for_worker(NonZeroUsize::new(3).unwrap())
        .polling(PollingConfig::default().min_time_between_calls(Duration::ZERO))
        .build()
        .expect("valid");
    assert_eq!(
        scheduler.coordinator.max_leases_for_worker(),
        NonZeroUsize::new(3)
    );
    assert!(matches!(
        Scheduler::builder("app", "stream", |_: &str| -> Recorder { unreachable!() }).build(),
        Err(SchedulerError::MissingClients)
    ));
}

#[test]
fn fan_out_needs_a_valid_consumer_name_and_is_off_by_default() {
    for bad in ["", "has space", "slash/name", &"x".repeat(129)] {
        assert_eq!(
            refused(builder().fan_out(bad)),
            CoordinatorConfigError::InvalidConsumerName {
                name: bad.chars().take(140).collect()
            },
            "{bad:?}"
        );
    }
    assert!(builder().fan_out("my-app.v2_blue").build().is_ok());
    let scheduler = builder().build().unwrap();
    assert_eq!(scheduler.worker.retrieval, crate::Retrieval::Polling);
    // Fan-out settings are checked only when fan-out is on.
    let huge = crate::retrieval::FanOutConfig::default().read_timeout(Duration::from_secs(200_000));
    assert!(builder().fan_out_config(huge.clone()).build().is_ok());
    assert!(matches!(
        refused(builder().fan_out("app").fan_out_config(huge)),
        CoordinatorConfigError::TooLong {
            setting: "fan_out.read_timeout",
            ..
        }
    ));
}
