//! Whether the pipeline task is alive, and why it stopped if it failed: shared by the handles and
//! receipts, so `send`, `flush` and receipts can say what happened instead of hanging or
//! pretending the records were stored.

use std::sync::{Arc, OnceLock};

#[derive(Debug, Default)]
pub(crate) struct Health {
    failure: OnceLock<Arc<str>>,
}

impl Health {
    /// Records why the pipeline stopped abnormally (the first cause wins).
    pub(crate) fn fail(&self, cause: impl Into<Arc<str>>) {
        let _ = self.failure.set(cause.into());
    }

    /// Why the pipeline stopped abnormally, if it did.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.failure.get().cloned()
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}
