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
}

/// A processor call went the whole timeout without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stalled;

impl Watchdog {
    /// A watchdog of `limit` (`None`: calls are never abandoned) that `checkpointer` feeds.
    pub(super) fn new(limit: Option<Duration>, checkpointer: &mut Checkpointer) -> Self {
        let (progress_tx, progress) = watch::channel(());
        checkpointer.report_progress(progress_tx);
        Self { limit, progress }
    }

    /// Runs `call` until it returns, or until it has gone the limit without progress.
    pub(super) async fn watch<T>(&mut self, call: impl Future<Output = T>) -> Result<T, Stalled> {
        let Some(limit) = self.limit else {
            return Ok(call.await);
        };
        // Progress reported before this call says nothing about it.
        self.progress.mark_unchanged();
        let mut call = pin!(call);
        let mut deadline = later(Instant::now(), limit);
        let mut fed = true;
        loop {
            tokio::select! {
                biased;
                output = &mut call => return Ok(output),
                changed = self.progress.changed(), if fed => match changed {
                    Ok(()) => deadline = later(Instant::now(), limit),
                    // The checkpointer is gone (never while it is borrowed by `call`): only
                    // the deadline is left.
                    Err(_) => fed = false,
                },
                () = sleep_until(deadline) => return Err(Stalled),
            }
        }
    }
}
