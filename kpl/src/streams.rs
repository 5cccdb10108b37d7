//! The streams a producer writes to: the handles name them, the pipeline keeps one state per
//! stream. Each gets a small index, handed with every record instead of the name.

use std::sync::{Arc, Mutex, PoisonError};

use crate::client::StreamId;

#[derive(Debug, Default)]
pub(crate) struct StreamRegistry {
    streams: Mutex<Vec<Arc<StreamId>>>,
}

impl StreamRegistry {
    /// The index of `stream`, registering it on first use.
    pub(crate) fn index_of(&self, stream: &StreamId) -> usize {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        match streams.iter().position(|s| **s == *stream) {
            Some(index) => index,
            None => {
                streams.push(Arc::new(stream.clone()));
                streams.len() - 1
            }
        }
    }

    /// The stream of `index`.
    pub(crate) fn get(&self, index: usize) -> Option<Arc<StreamId>> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_their_index() {
        let registry = StreamRegistry::default();
        assert_eq!(registry.index_of(&"a".into()), 0);
        assert_eq!(registry.index_of(&"b".into()), 1);
        assert_eq!(registry.index_of(&"a".into()), 0);
        assert_eq!(registry.get(1).as_deref(), Some(&StreamId::from("b")));
        assert!(registry.get(2).is_none());
    }
}
