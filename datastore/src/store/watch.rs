//! The consumer side of a watch: a bounded stream of [`WatchEvent`]s fed by a backend task.

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{KeyValue, Listing, Revision};

/// How many events may wait in a watch before the producer waits for the consumer: a slow
/// consumer pushes back instead of growing memory without limit.
pub(crate) const WATCH_BUFFER: usize = 1024;

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
    /// The watch could not resume from where it was (the history it needed was compacted):
    /// this is the whole state under the prefix now. Consumers replace what they hold with it;
    /// later events follow from `listing.revision + 1`.
    Resync(Listing),
}

impl WatchEvent {
    /// The revision this event brings the consumer to.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Resync(listing) => listing.revision,
        }
    }
}

/// A running watch. Dropping it stops the task behind it.
#[derive(Debug)]
pub struct Watch {
    events: mpsc::Receiver<WatchEvent>,
    _stop: DropGuard,
}

impl Watch {
    /// Creates the channel pair: the `Watch` for the consumer, and the sender plus cancellation
    /// token for the backend task that feeds it.
    pub(crate) fn channel() -> (Self, mpsc::Sender<WatchEvent>, CancellationToken) {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let token = CancellationToken::new();
        let watch = Watch {
            events: rx,
            _stop: token.clone().drop_guard(),
        };
        (watch, tx, token)
    }

    /// The next event; `None` once the store behind the watch is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }
}
