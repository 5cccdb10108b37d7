//! One record-processor process: started from `executableName`, its stdout read by the
//! [`Driver`], its stderr forwarded to the daemon's stderr line by line with the shard id, and
//! stopped either politely (stdin closed, stdout drained, exit awaited) or by killing it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::driver::Driver;

/// How long a child that was told to stop (stdin closed) may take to exit before it is killed.
/// The Java daemon waits forever; a hung child should not hold a shard's lease forever.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The command a child is started with: `executableName` split on runs of spaces (no shell,
/// no quoting, as the Java daemon does), the program found on `PATH`, the daemon's working
/// directory and environment inherited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildCommand {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
}

impl ChildCommand {
    /// `None` for a blank `executableName`.
    pub(crate) fn parse(executable_name: &str) -> Option<Self> {
        let mut words = executable_name.split(' ').filter(|w| !w.is_empty());
        let program = words.next()?.to_owned();
        Some(Self {
            program,
            args: words.map(str::to_owned).collect(),
        })
    }
}

impl std::fmt::Display for ChildCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start the record processor `{command}` (executableName; it must be on PATH or a path from the working directory): {source}"
)]
pub(crate) struct SpawnError {
    command: String,
    #[source]
    source: std::io::Error,
}

/// A running child.
#[derive(Debug)]
pub(crate) struct Child {
    process: tokio::process::Child,
    pub(crate) driver: Driver<ChildStdin, BufReader<ChildStdout>>,
    stderr: JoinHandle<()>,
}

impl Child {
    /// Starts `command` for `shard_id`; each message from it has `timeout`.
    pub(crate) fn spawn(
        command: &ChildCommand,
        shard_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, SpawnError> {
        let spawn_error = |source| SpawnError {
            command: command.to_string(),
            source,
        };
        let mut process = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A child whose processor is abandoned (dropped) must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let missing = || spawn_error(std::io::Error::other("a pipe to the child is missing"));
        let stdin = process.stdin.take().ok_or_else(missing)?;
        let stdout = process.stdout.take().ok_or_else(missing)?;
        let stderr = process.stderr.take().ok_or_else(missing)?;
        info!(shard = shard_id, pid = process.id(), %command, "record processor started");
        Ok(Self {
            process,
            driver: Driver::new(stdin, BufReader::new(stdout), timeout),
            stderr: tokio::spawn(forward_stderr(
                stderr,
                tokio::io::stderr(),
                shard_id.to_owned(),
            )),
        })
    }

    /// Closes the child's stdin (both client libraries exit on EOF), drains its stdout, and
    /// waits for it to exit, killing it after [`EXIT_WAIT`].
    pub(crate) async fn finish(self, shard_id: &str) {
        let Self {
            mut process,
            driver,
            stderr,
        } = self;
        let (stdin, mut stdout) = driver.into_parts();
        drop(stdin);
        let drained = async {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
            let _ = stderr.await;
            process.wait().await
        };
        match tokio::time::timeout(EXIT_WAIT, drained).await {
            Ok(Ok(status)) if status.success() => {
                info!(shard = shard_id, "record processor exited");
            }
            Ok(Ok(status)) => warn!(shard = shard_id, %status, "record processor exited"),
            Ok(Err(error)) => {
                warn!(shard = shard_id, %error, "waiting for the record processor failed")
            }
            Err(_) => {
                warn!(shard = shard_id, wait = ?EXIT_WAIT, "record processor did not exit after its stdin closed; killing it");
                let _ = process.kill().await;
            }
        }
    }

    /// Kills the child and reaps it.
    pub(crate) async fn kill(mut self, shard_id: &str) {
        if let Err(error) = self.process.kill().await {
            warn!(shard = shard_id, %error, "killing the record processor failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stderr).await;
    }
}

/// Copies the child's stderr to ours as it comes (the Python sample writes without newlines,
/// so partial lines are not held back), each line starting with `[shard id] `.
async fn forward_stderr<R, W>(mut stderr: R, mut out: W, shard_id: String)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let prefix = format!("[{shard_id}] ");
    let mut buffer = vec![0u8; 8192];
    let mut at_line_start = true;
    loop {
        let read = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut text = Vec::with_capacity(read + prefix.len() * 2);
        for &byte in &buffer[..read] {
            if at_line_start {
                text.extend_from_slice(prefix.as_bytes());
            }
            text.push(byte);
            at_line_start = byte == b'\n';
        }
        if out.write_all(&text).await.is_err() {
            break;
        }
        let _ = out.flush().await;
    }
    if !at_line_start {
        let _ = out.write_all(b"\n").await;
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_name_is_split_on_runs_of_spaces() {
        assert_eq!(
            ChildCommand::parse("  node   sample_kcl_app.js --x "),
            Some(ChildCommand {
                program: "node".into(),
                args: vec!["sample_kcl_app.js".into(), "--x".into()],
            })
        );
        assert_eq!(ChildCommand::parse("   "), None);
    }

    #[tokio::test]
    async fn stderr_is_copied_as_it_comes_with_the_shard_id_at_each_line_start() {
        let (mut child_err, daemon_in) = tokio::io::duplex(1024);
        let mut copied = Vec::new();
        let forward = tokio::spawn(async move {
            let mut out = Vec::new();
            forward_stderr(daemon_in, &mut out, "shardId-1".into()).await;
            out
        });
        // The Python sample's way: text without newlines, then a line, then a partial one.
        child_err.write_all(b"Record (a)Record (b)").await.unwrap();
        child_err.write_all(b" end\nnext line\nhalf").await.unwrap();
        drop(child_err);
        copied.extend(forward.await.unwrap());
        assert_eq!(
            String::from_utf8(copied).unwrap(),
            "[shardId-1] Record (a)Record (b) end\n[shardId-1] next line\n[shardId-1] half\n"
        );
    }
}
