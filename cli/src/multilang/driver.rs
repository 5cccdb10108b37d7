//! The protocol state machine over a child's stdin and stdout, as `MultiLangProtocol` runs it:
//! write one action, then read until the child's status for that action arrives, performing
//! every checkpoint the child asks for on the way (exactly one reply each), skipping garbage.
//!
//! Generic over the two pipes, so it is tested without processes. One action at a time
//! (`perform` takes `&mut self`), and nothing is ever written that the child did not ask for.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use super::protocol::{CheckpointRequest, ChildMessage, DaemonMessage, parse_child_line};

/// Performs the checkpoints a child asks for during one action.
pub(crate) trait CheckpointHandler: Send {
    /// Performs the checkpoint; `None` on success, else the simple name of the Java exception
    /// to answer with.
    fn checkpoint(
        &mut self,
        request: &CheckpointRequest,
    ) -> impl Future<Output = Option<&'static str>> + Send;
}

/// For `initialize` and `leaseLost`, where the Java daemon has no checkpointer.
#[derive(Debug)]
pub(crate) struct NoCheckpoints;

impl CheckpointHandler for NoCheckpoints {
    async fn checkpoint(&mut self, _request: &CheckpointRequest) -> Option<&'static str> {
        Some("InvalidStateException")
    }
}

/// Why an action did not complete; the child cannot be used any more.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    #[error("writing {action} to the child failed: {source}")]
    Write {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the child's answer to {action} failed: {source}")]
    Read {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the child closed its stdout (exited?) while {action} was outstanding")]
    Closed { action: &'static str },
    #[error(
        "the child sent nothing for {action} within timeoutInSeconds ({timeout:?}); it is restarted"
    )]
    TimedOut {
        action: &'static str,
        timeout: Duration,
    },
    #[error("the child answered {action} with a status for {response_for:?}")]
    WrongStatus {
        action: &'static str,
        response_for: String,
    },
}

/// Talks to one child over `writer` (its stdin) and `reader` (its stdout).
#[derive(Debug)]
pub(crate) struct Driver<W, R> {
    writer: W,
    reader: R,
    /// Bounds the wait for each message from the child (`timeoutInSeconds`).
    timeout: Option<Duration>,
    /// Lines skipped so far (blank, not JSON, unknown actions).
    skipped: u64,
    line: Vec<u8>,
}

impl<W, R> Driver<W, R>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncBufRead + Unpin + Send,
{
    pub(crate) fn new(writer: W, reader: R, timeout: Option<Duration>) -> Self {
        Self {
            writer,
            reader,
            timeout,
            skipped: 0,
            line: Vec::with_capacity(256),
        }
    }

    /// How many lines from the child were skipped.
    #[cfg(test)]
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Gives the pipes back (to close stdin and drain stdout).
    pub(crate) fn into_parts(self) -> (W, R) {
        (self.writer, self.reader)
    }

    /// Sends `message` and waits for the child's status for it, answering its checkpoint
    /// requests through `checkpoints` meanwhile.
    pub(crate) async fn perform(
        &mut self,
        message: &DaemonMessage,
        checkpoints: &mut impl CheckpointHandler,
    ) -> Result<(), DriverError> {
        let action = message.action();
        self.write(action, message).await?;
        loop {
            match self.next_message(action).await? {
                ChildMessage::Status { response_for } if response_for == action => return Ok(()),
                ChildMessage::Status { response_for } => {
                    return Err(DriverError::WrongStatus {
                        action,
                        response_for,
                    });
                }
                ChildMessage::Checkpoint(request) => {
                    let error = checkpoints.checkpoint(&request).await;
                    let reply = DaemonMessage::Checkpoint {
                        sequence_number: request.sequence_number,
                        sub_sequence_number: request.sub_sequence_number,
                        error,
                    };
                    self.write(action, &reply).await?;
                }
                ChildMessage::Other { action: other } => {
                    debug!(
                        action = other,
                        "ignoring a message the daemon does not expect"
                    );
                }
            }
        }
    }

    async fn write(
        &mut self,
        action: &'static str,
        message: &DaemonMessage,
    ) -> Result<(), DriverError> {
        let line = message.to_line();
        let result = async {
            self.writer.write_all(&line).await?;
            self.writer.flush().await
        }
        .await;
        result.map_err(|source| DriverError::Write { action, source })
    }

    /// The next message, skipping lines that are not one; each message has `timeout`.
    async fn next_message(&mut self, action: &'static str) -> Result<ChildMessage, DriverError> {
        let deadline = self
            .timeout
            .map(|timeout| (Instant::now() + timeout, timeout));
        loop {
            self.line.clear();
            let read = self.reader.read_until(b'\n', &mut self.line);
            let read = match deadline {
                Some((at, timeout)) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| DriverError::TimedOut { action, timeout })?,
                None => read.await,
            };
            match read {
                Ok(0) => return Err(DriverError::Closed { action }),
                Ok(_) => {}
                Err(source) => return Err(DriverError::Read { action, source }),
            }
            match parse_child_line(&self.line) {
                Some(message) => return Ok(message),
                None => {
                    self.skipped += 1;
                    if !self.line.trim_ascii().is_empty() {
                        debug!(
                            line = %String::from_utf8_lossy(self.line.trim_ascii()),
                            "skipping a line from the child that is not a message"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};

    use super::*;

    /// Records requests and answers from a script.
    #[derive(Debug, Default, Clone)]
    struct Recorded {
        requests: Arc<Mutex<Vec<CheckpointRequest>>>,
        answer: Option<&'static str>,
    }

    impl CheckpointHandler for Recorded {
        async fn checkpoint(&mut self, request: &CheckpointRequest) -> Option<&'static str> {
            self.requests.lock().unwrap().push(request.clone());
            self.answer
        }
    }

    /// A driver and the child's ends of its pipes.
    struct Pipes {
        driver: Driver<DuplexStream, BufReader<DuplexStream>>,
        /// What the daemon wrote, line by line.
        child_stdin: tokio::io::Lines<BufReader<DuplexStream>>,
        child_stdout: DuplexStream,
    }

    fn pipes(timeout: Option<Duration>) -> Pipes {
        let (daemon_out, child_in) = duplex(64 * 1024);
        let (child_out, daemon_in) = duplex(64 * 1024);
        Pipes {
            driver: Driver::new(daemon_out, BufReader::new(daemon_in), timeout),
            child_stdin: BufReader::new(child_in).lines(),
            child_stdout: child_out,
        }
    }

    async fn read_json(lines: &mut tokio::io::Lines<BufReader<DuplexStream>>) -> Value {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("a line from the daemon");
        serde_json::from_str(&line).unwrap()
    }

    fn init() -> DaemonMessage {
        DaemonMessage::Initialize {
            shard_id: "shardId-000000000001".into(),
            sequence_number: Some("TRIM_HORIZON".into()),
            sub_sequence_number: Some(0),
        }
    }

    #[tokio::test]
    async fn an_action_completes_on_its_status_skipping_garbage_and_other_actions() {
        let Pipes {
            mut driver,
            mut child_stdin,
            mut child_stdout,
        } = pipes(None);
        let child = tokio::spawn(async move {
            let message = read_json(&mut child_stdin).await;
            assert_eq!(message["action"], "initialize");
            assert_eq!(message["shardId"], "shardId-000000000001");
            // Python's framing, free text, a blank line, broken JSON, an unknown action.
            child_stdout
                .write_all(
                    b"hello from print()\n\n{\"action\"\n{\"action\":\"shutdown\"}\n\n{\"action\": \"status\", \"responseFor\": \"initialize\"}\n",
                )
                .await
                .unwrap();
            child_stdin
        });
        driver.perform(&init(), &mut NoCheckpoints).await.unwrap();
        assert_eq!(driver.skipped(), 4);
        // Nothing else was written.
        let mut child_stdin = child.await.unwrap();
        drop(driver);
        assert_eq!(child_stdin.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn checkpoints_mid_action_get_exactly_one_reply_each() {
        let Pipes {
            mut driver,
            mut child_stdin,
            mut child_stdout,
        } = pipes(None);
        let handler = Recorded {
            answer: Some("IllegalArgumentException"),
            ..Recorded::default()
        };
        let requests = handler.requests.clone();
        let child = tokio::spawn(async move {
            let message = read_json(&mut child_stdin).await;
            assert_eq!(message["action"], "processRecords");
            let mut replies = Vec::new();
            for request in [
                json!({"action": "checkpoint", "sequenceNumber": "17", "subSequenceNumber": 2}),
                json!({"action": "checkpoint", "sequenceNumber": null}),
            ] {
                child_stdout
                    .write_all(format!("\n{request}\n").as_bytes())
                    .await
                    .unwrap();
                // The child blocks until the reply comes.
                replies.push(read_json(&mut child_stdin).await);
            }
            child_stdout
                .write_all(b"{\"action\":\"status\",\"responseFor\":\"processRecords\"}\n")
                .await
                .unwrap();
            replies
        });
        let batch = DaemonMessage::ProcessRecords {
            records: Vec::new(),
            millis_behind_latest: Some(0),
        };
        let mut handler = handler;
        driver.perform(&batch, &mut handler).await.unwrap();
        let replies = child.await.unwrap();
        assert_eq!(
            replies,
            vec![
                json!({"action": "checkpoint", "sequenceNumber": "17", "subSequenceNumber": 2, "error": "IllegalArgumentException"}),
                // Node sends no sub-sequence: null comes back.
                json!({"action": "checkpoint", "sequenceNumber": null, "subSequenceNumber": null, "error": "IllegalArgumentException"}),
            ]
        );
        assert_eq!(requests.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn no_checkpointer_during_initialize() {
        let Pipes {
            mut driver,
            mut child_stdin,
            mut child_stdout,
        } = pipes(None);
        let child = tokio::spawn(async move {
            read_json(&mut child_stdin).await;
            child_stdout
                .write_all(b"{\"action\":\"checkpoint\",\"sequenceNumber\":\"1\",\"subSequenceNumber\":0}\n")
                .await
                .unwrap();
            let reply = read_json(&mut child_stdin).await;
            child_stdout
                .write_all(b"{\"action\":\"status\",\"responseFor\":\"initialize\"}\n")
                .await
                .unwrap();
            reply
        });
        driver.perform(&init(), &mut NoCheckpoints).await.unwrap();
        assert_eq!(child.await.unwrap()["error"], "InvalidStateException");
    }

    #[tokio::test]
    async fn a_status_for_another_action_fails() {
        let Pipes {
            mut driver,
            child_stdin,
            mut child_stdout,
        } = pipes(None);
        child_stdout
            .write_all(b"{\"action\":\"status\",\"responseFor\":\"processRecords\"}\n")
            .await
            .unwrap();
        let error = driver
            .perform(&init(), &mut NoCheckpoints)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DriverError::WrongStatus { action: "initialize", response_for } if response_for == "processRecords"),
            "{error}"
        );
        drop(child_stdin);
    }

    #[tokio::test]
    async fn a_child_that_exits_mid_action_fails_it() {
        let Pipes {
            mut driver,
            child_stdin,
            mut child_stdout,
        } = pipes(None);
        child_stdout.write_all(b"half a line").await.unwrap();
        drop(child_stdout);
        let error = driver
            .perform(&DaemonMessage::ShardEnded, &mut NoCheckpoints)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                DriverError::Closed {
                    action: "shardEnded"
                }
            ),
            "{error}"
        );
        // A child whose stdin is gone fails the write.
        drop(child_stdin);
        let error = driver
            .perform(&DaemonMessage::LeaseLost, &mut NoCheckpoints)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                DriverError::Write {
                    action: "leaseLost",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_bounds_each_message_and_restarts_after_one() {
        let timeout = Duration::from_secs(10);
        let Pipes {
            mut driver,
            mut child_stdin,
            mut child_stdout,
        } = pipes(Some(timeout));
        let started = Instant::now();
        let child = tokio::spawn(async move {
            read_json(&mut child_stdin).await;
            // 8 s, a checkpoint; 8 s more, garbage (does not restart the clock); 1 s, status:
            // 17 s in all, never 10 s without a message.
            tokio::time::sleep(Duration::from_secs(8)).await;
            child_stdout
                .write_all(b"{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n")
                .await
                .unwrap();
            read_json(&mut child_stdin).await;
            tokio::time::sleep(Duration::from_secs(8)).await;
            child_stdout.write_all(b"noise\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            child_stdout
                .write_all(b"{\"action\":\"status\",\"responseFor\":\"shutdownRequested\"}\n")
                .await
                .unwrap();
            (child_stdin, child_stdout)
        });
        let mut handler = Recorded::default();
        driver
            .perform(&DaemonMessage::ShutdownRequested, &mut handler)
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(17));
        let _pipes = child.await.unwrap();
        // Now the child never answers: the action fails after exactly the timeout.
        let started = Instant::now();
        let error = driver
            .perform(&DaemonMessage::LeaseLost, &mut NoCheckpoints)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), timeout);
        assert!(
            matches!(error, DriverError::TimedOut { action: "leaseLost", timeout: t } if t == timeout),
            "{error}"
        );
    }
}
