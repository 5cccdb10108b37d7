//! The processor timeout as a watchdog: a processor call is abandoned once it has gone the
//! timeout without a sign of progress, not once it has run that long. Every checkpoint call
//! through the processor's [`Checkpointer`] is a sign of progress and starts the timeout
//! again, so a slow batch that checkpoints as it goes is never restarted from its checkpoint
//! over and over, while a processor that hangs is still replaced one timeout after it last
//! checkpointed.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use kinesis_common::later;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::checkpointer::Checkpointer;

/// The watchdog of one processor (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Watchdog {
    limit: Option<Duration>,
    progress: watch::Receiver<()>,
    /// Whether the last watched call made a checkpoint call.
    progressed: bool,
}

/// A processor call went the whole timeout without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stalled;

impl Watchdog {
    /// A watchdog of `limit` (`None`: calls are never abandoned) that `checkpointer` feeds.
    pub(super) fn new(limit: Option<Duration>, checkpointer: &mut Checkpointer) -> Self {
        let (progress_tx, progress) = watch::channel(());
        checkpointer.report_progress(progress_tx);
        Self {
            limit,
            progress,
            progressed: false,
        }
    }

    /// Runs `call` until it returns, or until it has gone the limit without progress.
    pub(super) async fn watch<T>(&mut self, call: impl Future<Output = T>) -> Result<T, Stalled> {
        // Progress reported before this call says nothing about it.
        self.progress.mark_unchanged();
        self.progressed = false;
        let result = self.run(call).await;
        // A checkpoint call in the poll that completed `call` was not seen as a change yet.
        self.progressed |= self.progress.has_changed().unwrap_or(false);
        result
    }

    /// Whether the last watched call made a checkpoint call (successful or not).
    pub(super) fn progressed(&self) -> bool {
        self.progressed
    }

    async fn run<T>(&mut self, call: impl Future<Output = T>) -> Result<T, Stalled> {
        let mut call = pin!(call);
        let mut deadline = self.limit.map(|limit| later(Instant::now(), limit));
        let mut fed = true;
        loop {
            tokio::select! {
                biased;
                output = &mut call => return Ok(output),
                changed = self.progress.changed(), if fed => match changed {
                    Ok(()) => {
                        self.progressed = true;
                        deadline = self.limit.map(|limit| later(Instant::now(), limit));
                    }
                    // The checkpointer is gone (never while it is borrowed by `call`): only
                    // the deadline is left.
                    Err(_) => fed = false,
                },
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Err(Stalled);
                }
            }
        }
    }
}
