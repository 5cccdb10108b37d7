//! The Java MultiLangDaemon's properties, read into the daemon's settings: the keys real
//! deployments and the samples use are honoured, keys that only tune the Java KCL are accepted
//! without effect, and anything else is reported by name (Java ignores it silently).

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use kcl::InitialPosition;

use super::child::ChildCommand;
use super::credentials::CredentialsSpec;
use super::properties::Properties;

/// Why the properties cannot run a daemon.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ConfigError {
    #[error("{key} is required in the properties file")]
    Missing { key: &'static str },
    #[error("{key} = {value:?}: {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaemonConfig {
    pub(crate) command: ChildCommand,
    pub(crate) application_name: String,
    /// The stream's name (from `streamArn` when given).
    pub(crate) stream_name: String,
    pub(crate) table_name: Option<String>,
    pub(crate) worker_id: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) kinesis_endpoint: Option<String>,
    pub(crate) dynamodb_endpoint: Option<String>,
    pub(crate) credentials: CredentialsSpec,
    pub(crate) dynamodb_credentials: Option<CredentialsSpec>,
    pub(crate) initial_position: InitialPosition,
    pub(crate) failover_time: Option<Duration>,
    pub(crate) max_records: Option<i32>,
    pub(crate) idle_time_between_reads: Option<Duration>,
    pub(crate) shard_sync_interval: Option<Duration>,
    pub(crate) parent_poll_interval: Option<Duration>,
    pub(crate) process_empty_batches: bool,
    pub(crate) max_leases_for_worker: Option<NonZeroUsize>,
    /// `timeoutInSeconds`: each message from a child must come within it.
    pub(crate) timeout: Option<Duration>,
    /// How long a whole graceful shutdown may take, the children's answers and the lease
    /// releases both (`shutdownGraceMillis`, or [`DEFAULT_SHUTDOWN_GRACE`] when it is 0 or
    /// unset; the worker's `shutdown_timeout`).
    pub(crate) shutdown_grace: Duration,
    /// `retrievalMode = FANOUT`: the stream consumer to read through (`consumerName`, or the
    /// application name as in the Java KCL); `None`: polling.
    pub(crate) fan_out: Option<String>,
    /// What the report says about keys: unknown ones, ones without effect here.
    pub(crate) notes: Vec<String>,
}

/// Java's default of 0 means the children never hear `shutdownRequested` on SIGTERM; here a
/// shutdown always takes up to this long unless `shutdownGraceMillis` says otherwise: the
/// worker's default, which fits the common 30 s termination grace (Kubernetes, ECS) with the
/// leases handed back inside it.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Keys read into [`DaemonConfig`].
const HONOURED: &[&str] = &[
    "executableName",
    "applicationName",
    "streamName",
    "streamArn",
    "tableName",
    "workerId",
    "regionName",
    "kinesisEndpoint",
    "dynamoDBEndpoint",
    "initialPositionInStream",
    "initialPositionInStreamExtended",
    "failoverTimeMillis",
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "shardSyncIntervalMillis",
    "parentShardPollIntervalMillis",
    "callProcessRecordsEvenForEmptyRecordList",
    "maxLeasesForWorker",
    "timeoutInSeconds",
    "shutdownGraceMillis",
    "retrievalMode",
    "consumerName",
];

/// Keys of the Java daemon that tune what has no equivalent here, or that this daemon does
/// its own way: accepted, noted, no effect.
const NO_EFFECT: &[&str] = &[
    "processingLanguage",
    "maxActiveThreads",
    "cleanupLeasesUponShardCompletion",
    "taskBackoffTimeMillis",
    "metricsBufferTimeMillis",
    "metricsMaxQueueSize",
    "metricsLevel",
    "metricsEnabledDimensions",
    "validateSequenceNumberBeforeCheckpointing",
    "maxLeaseRenewalThreads",
    "maxLeasesToStealAtOneTime",
    "listShardsBackoffTimeInMillis",
    "maxListShardsRetryAttempts",
    "skipShardSyncAtWorkerInitializationIfLeasesExist",
    "shardPrioritization",
    "clientVersionConfig",
    "userAgent",
];

/// Prefixes of Java-only key families (KCL 3.x coordinator and worker metrics, lease
/// balancing, graceful handoff, fan-out and polling beans).
const NO_EFFECT_PREFIXES: &[&str] = &[
    "coordinatorState",
    "workerMetrics",
    "workerUtilization",
    "gracefulLeaseHandoff",
    "leaseAssignment",
    "leaseManagement",
    "reBalanceThreshold",
    "dampeningPercentage",
    "allowThroughputOvershoot",
    "disableWorkerMetrics",
    "maxThroughputPerHostKBps",
    "varianceBalancing",
    "lowCpuUtilization",
    "highCpuUtilization",
    "fanout",
    "polling",
    "leaseTable",
    "metrics",
    "kinesisClient",
    "dynamoDbClient",
    "cloudWatchClient",
];

/// `awscredentialsprovider...` keys are matched in any case, as Java does.
fn credentials_key(key: &str) -> Option<&'static str> {
    match key.to_ascii_lowercase().as_str() {
        "awscredentialsprovider" => Some("AwsCredentialsProvider"),
        "awscredentialsproviderdynamodb" => Some("AwsCredentialsProviderDynamoDB"),
        "awscredentialsprovidercloudwatch" => Some("AwsCredentialsProviderCloudWatch"),
        _ => None,
    }
}

impl DaemonConfig {
    pub(crate) fn from_properties(properties: &Properties) -> Result<Self, ConfigError> {
        let mut notes = Vec::new();
        let mut credentials = None;
        let mut dynamodb_credentials = None;
        for (key, value, line) in properties.iter() {
            if let Some(name) = credentials_key(key) {
                match name {
                    "AwsCredentialsProvider" => {
                        credentials = Some(CredentialsSpec::parse(name, value)?);
                    }
                    "AwsCredentialsProviderDynamoDB" => {
                        dynamodb_credentials = Some(CredentialsSpec::parse(name, value)?);
                    }
                    _ => notes.push(format!(
                        "{key} (line {line}): no effect, this daemon sends no CloudWatch metrics"
                    )),
                }
            } else if HONOURED.contains(&key) {
            } else if NO_EFFECT.contains(&key)
                || NO_EFFECT_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                notes.push(format!("{key} (line {line}): accepted, no effect here"));
            } else {
                notes.push(format!(
                    "{key} (line {line}): unknown key, ignored (a typo? keys are case-sensitive)"
                ));
            }
        }
        let text = |key: &'static str| {
            properties
                .get(key)
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let required = |key: &'static str| text(key).ok_or(ConfigError::Missing { key });
        let command =
            ChildCommand::parse(required("executableName")?).ok_or(ConfigError::Missing {
                key: "executableName",
            })?;
        let stream_name = match text("streamArn") {
            Some(arn) => stream_name_from_arn(arn)?,
            None => required("streamName")?.to_owned(),
        };
        let millis = |key: &'static str| -> Result<Option<Duration>, ConfigError> {
            text(key)
                .map(|value| {
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|&ms| ms > 0)
                        .map(Duration::from_millis)
                        .ok_or_else(|| ConfigError::Invalid {
                            key,
                            value: value.to_owned(),
                            expected: "a positive number of milliseconds",
                        })
                })
                .transpose()
        };
        let initial_position = initial_position(
            text("initialPositionInStream"),
            text("initialPositionInStreamExtended"),
        )?;
        let max_records = text("maxRecords")
            .map(|value| {
                value
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        key: "maxRecords",
                        value: value.to_owned(),
                        expected: "a number of records from 1 to 10000",
                    })
            })
            .transpose()?;
        let process_empty_batches = match text("callProcessRecordsEvenForEmptyRecordList") {
            None => false,
            Some(value) => parse_bool("callProcessRecordsEvenForEmptyRecordList", value)?,
        };
        let max_leases_for_worker = text("maxLeasesForWorker")
            .map(|value| {
                value.parse::<usize>().map_err(|_| ConfigError::Invalid {
                    key: "maxLeasesForWorker",
                    value: value.to_owned(),
                    expected: "a positive number of leases",
                })
            })
            .transpose()?
            // Java's default is Integer.MAX_VALUE: no limit.
            .and_then(NonZeroUsize::new);
        let timeout = text("timeoutInSeconds")
            .map(|value| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: "timeoutInSeconds",
                        value: value.to_owned(),
                        expected: "a positive number of seconds",
                    })
            })
            .transpose()?;
        let shutdown_grace = match text("shutdownGraceMillis") {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(value) => match value.parse::<u64>() {
                Ok(0) => DEFAULT_SHUTDOWN_GRACE,
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    return Err(ConfigError::Invalid {
                        key: "shutdownGraceMillis",
                        value: value.to_owned(),
                        expected: "a number of milliseconds",
                    });
                }
            },
        };
        let fan_out = match text("retrievalMode")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("POLLING") => None,
            Some("FANOUT") => Some(
                text("consumerName")
                    .unwrap_or(required("applicationName")?)
                    .to_owned(),
            ),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "retrievalMode",
                    value: other.to_owned(),
                    expected: "FANOUT or POLLING",
                });
            }
        };
        Ok(Self {
            command,
            application_name: required("applicationName")?.to_owned(),
            stream_name,
            table_name: text("tableName").map(str::to_owned),
            worker_id: text("workerId").map(str::to_owned),
            region: text("regionName").map(str::to_owned),
            kinesis_endpoint: text("kinesisEndpoint").map(str::to_owned),
            dynamodb_endpoint: text("dynamoDBEndpoint").map(str::to_owned),
            credentials: credentials.unwrap_or_default(),
            dynamodb_credentials,
            initial_position,
            failover_time: millis("failoverTimeMillis")?,
            max_records,
            idle_time_between_reads: millis("idleTimeBetweenReadsInMillis")?,
            shard_sync_interval: millis("shardSyncIntervalMillis")?,
            parent_poll_interval: millis("parentShardPollIntervalMillis")?,
            process_empty_batches,
            max_leases_for_worker,
            timeout,
            shutdown_grace,
            fan_out,
            notes,
        })
    }
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key,
            value: value.to_owned(),
            expected: "true or false",
        }),
    }
}

/// `arn:aws[^:]*:kinesis:<region>:<12 digits>:stream/<name>`: the name.
fn stream_name_from_arn(arn: &str) -> Result<String, ConfigError> {
    let invalid = || ConfigError::Invalid {
        key: "streamArn",
        value: arn.to_owned(),
        expected: "arn:aws:kinesis:<region>:<12-digit account>:stream/<name>",
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_word, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid());
    };
    let name = resource.strip_prefix("stream/").ok_or_else(invalid)?;
    let valid = arn_word == "arn"
        && partition.starts_with("aws")
        && service == "kinesis"
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(invalid())
    }
}

fn initial_position(
    position: Option<&str>,
    extended: Option<&str>,
) -> Result<InitialPosition, ConfigError> {
    let at_timestamp = |value: &str| -> Result<InitialPosition, ConfigError> {
        let seconds = value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| ConfigError::Invalid {
                key: "initialPositionInStreamExtended",
                value: value.to_owned(),
                expected: "a time in seconds since the epoch (AT_TIMESTAMP)",
            })?;
        Ok(InitialPosition::AtTimestamp(
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds),
        ))
    };
    if let Some(extended) = extended {
        return at_timestamp(extended);
    }
    match position.map(str::to_ascii_uppercase).as_deref() {
        None | Some("LATEST") => Ok(InitialPosition::Latest),
        Some("TRIM_HORIZON") => Ok(InitialPosition::TrimHorizon),
        Some("AT_TIMESTAMP") => Err(ConfigError::Missing {
            key: "initialPositionInStreamExtended",
        }),
        Some(other) => Err(ConfigError::Invalid {
            key: "initialPositionInStream",
            value: other.to_owned(),
            expected: "TRIM_HORIZON, LATEST or AT_TIMESTAMP",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::from_properties(&Properties::parse(text.as_bytes()).unwrap())
    }

    /// The Python sample's properties file, as shipped (comments trimmed).
    const PYTHON_SAMPLE: &str = "executableName = sample_kclpy_app.py\n\
        streamArn = arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample\n\
        streamName = kclpysample\n\
        applicationName = PythonKCLSample\n\
        AwsCredentialsProvider = DefaultCredentialsProvider\n\
        processingLanguage = python/3.8\n\
        initialPositionInStream = TRIM_HORIZON\n\
        regionName = us-east-1\n";

    #[test]
    fn the_python_sample_properties() {
        let config = config(PYTHON_SAMPLE).unwrap();
        assert_eq!(config.command.program, "sample_kclpy_app.py");
        assert_eq!(config.stream_name, "kclpysample");
        assert_eq!(config.application_name, "PythonKCLSample");
        assert_eq!(config.initial_position, InitialPosition::TrimHorizon);
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        assert!(config.credentials.is_default());
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(config.timeout, None);
        assert_eq!(config.notes.len(), 1, "{:?}", config.notes);
        assert!(config.notes[0].starts_with("processingLanguage"));
    }

    #[test]
    fn every_honoured_key() {
        let config = config(
            "executableName = node  app.js\nstreamName = s\napplicationName = a\n\
             tableName = t\nworkerId = w\nkinesisEndpoint = http://k\ndynamoDBEndpoint = http://d\n\
             failoverTimeMillis = 5000\nmaxRecords = 50\nidleTimeBetweenReadsInMillis = 250\n\
             shardSyncIntervalMillis = 1000\nparentShardPollIntervalMillis = 2000\n\
             callProcessRecordsEvenForEmptyRecordList = TRUE\nmaxLeasesForWorker = 3\n\
             timeoutInSeconds = 7\nshutdownGraceMillis = 1500\nretrievalMode = POLLING\n\
             initialPositionInStreamExtended = 1700000000\n\
             awscredentialsprovider = ProfileCredentialsProvider|dev\n\
             AWSCredentialsProviderDynamoDB = EnvironmentVariableCredentialsProvider\n\
             cleanupLeasesUponShardCompletion = true\nmetricsLevel = NONE\nstreamname = typo\n",
        )
        .unwrap();
        assert_eq!(config.command.args, vec!["app.js".to_owned()]);
        assert_eq!(config.table_name.as_deref(), Some("t"));
        assert_eq!(config.worker_id.as_deref(), Some("w"));
        assert_eq!(config.kinesis_endpoint.as_deref(), Some("http://k"));
        assert_eq!(config.dynamodb_endpoint.as_deref(), Some("http://d"));
        assert_eq!(config.failover_time, Some(Duration::from_secs(5)));
        assert_eq!(config.max_records, Some(50));
        assert_eq!(
            config.idle_time_between_reads,
            Some(Duration::from_millis(250))
        );
        assert_eq!(config.shard_sync_interval, Some(Duration::from_secs(1)));
        assert_eq!(config.parent_poll_interval, Some(Duration::from_secs(2)));
        assert!(config.process_empty_batches);
        assert_eq!(config.max_leases_for_worker, NonZeroUsize::new(3));
        assert_eq!(config.timeout, Some(Duration::from_secs(7)));
        assert_eq!(config.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(
            config.initial_position,
            InitialPosition::AtTimestamp(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
            )
        );
        assert_eq!(
            config.credentials,
            CredentialsSpec::parse("AwsCredentialsProvider", "ProfileCredentialsProvider|dev")
                .unwrap()
        );
        assert!(config.dynamodb_credentials.is_some());
        // No effect: two; unknown: the lower-case typo, by name.
        assert_eq!(config.notes.len(), 3, "{:?}", config.notes);
        assert!(
            config
                .notes
                .iter()
                .any(|n| n.starts_with("streamname (line 23): unknown key"))
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            config("streamName = s\napplicationName = a\n").unwrap_err(),
            ConfigError::Missing {
                key: "executableName"
            }
        );
        assert_eq!(
            config("executableName = x\napplicationName = a\n").unwrap_err(),
            ConfigError::Missing { key: "streamName" }
        );
        let bad = |extra: &str| {
            config(&format!(
                "executableName = x\nstreamName = s\napplicationName = a\n{extra}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        assert!(bad("failoverTimeMillis = soon").starts_with("failoverTimeMillis = \"soon\""));
        assert!(bad("maxRecords = 0").starts_with("maxRecords"));
        assert!(bad("timeoutInSeconds = -1").starts_with("timeoutInSeconds"));
        assert!(bad("retrievalMode = PUSH").starts_with("retrievalMode"));
        assert!(
            bad("initialPositionInStream = AT_TIMESTAMP")
                .contains("initialPositionInStreamExtended")
        );
        assert!(bad("streamArn = arn:aws:kinesis:us-east-1:123:stream/s").starts_with("streamArn"));
        assert!(bad("AwsCredentialsProvider = com.example.Mine").contains("com.example.Mine"));
    }

    #[test]
    fn fanout_reads_through_the_application_or_the_named_consumer() {
        let base = "executableName = x\nstreamName = s\napplicationName = a\n";
        let fan_out = |extra: &str| config(&format!("{base}{extra}")).unwrap().fan_out;
        assert_eq!(fan_out(""), None);
        assert_eq!(fan_out("retrievalMode = POLLING\n"), None);
        assert_eq!(fan_out("retrievalMode = FANOUT\n").as_deref(), Some("a"));
        assert_eq!(
            fan_out("retrievalMode = fanout\nconsumerName = c\n").as_deref(),
            Some("c")
        );
    }
}
