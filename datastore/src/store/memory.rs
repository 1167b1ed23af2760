//! An in-memory [`Store`] with etcd's semantics (revisions, compare-and-swap, transactions,
//! watches from a revision, compaction), for unit tests of the crates above the datastore.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::debug;

use super::watch::WATCH_BUFFER;
use super::{
    KeyValue, Listing, Operation, Precondition, Revision, Store, StoreError, Transaction, Watch,
    WatchEvent,
};

#[derive(Debug, Default)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// Every event since `compacted`, in revision order, kept for watches that start in the past.
    history: Vec<WatchEvent>,
    /// Events at or below this revision are gone.
    compacted: Revision,
}

impl State {
    fn listing(&self, prefix: &str) -> Listing {
        Listing {
            kvs: self
                .kvs
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect(),
            revision: self.revision,
        }
    }

    fn holds(&self, precondition: &Precondition) -> bool {
        match precondition {
            Precondition::Absent(k) => !self.kvs.contains_key(k),
            Precondition::Exists(k) => self.kvs.contains_key(k),
            Precondition::ModRevision(k, rev) => {
                self.kvs.get(k).is_some_and(|kv| kv.mod_revision == *rev)
            }
        }
    }
}

/// The in-memory store. Cloning shares the same data.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 1 (etcd starts there too).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER * 4);
        let state = State {
            revision: 1,
            ..State::default()
        };
        MemoryStore {
            state: Arc::new(Mutex::new(state)),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic in one of our own short critical sections, which hold
        // no invariant half-done across a panic point; the data is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets history up to and including `revision`, as etcd's compaction does: a watch that
    /// starts at or below it gets a [`WatchEvent::Resync`].
    pub fn compact(&self, revision: Revision) {
        let mut state = self.lock();
        state.compacted = state.compacted.max(revision.min(state.revision));
        let keep_from = state.compacted;
        state.history.retain(|e| e.revision() > keep_from);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        Ok(self.lock().listing(prefix))
    }

    async fn transaction(&self, txn: Transaction) -> Result<Revision, StoreError> {
        let mut state = self.lock();
        if !txn.preconditions.iter().all(|p| state.holds(p)) {
            return Err(StoreError::TransactionFailed);
        }
        if txn.operations.is_empty() {
            return Ok(state.revision);
        }
        let revision = state.revision + 1;
        let mut changed = false;
        for op in txn.operations {
            let event = match op {
                Operation::Put { key, value } => {
                    let create_revision = state
                        .kvs
                        .get(&key)
                        .map_or(revision, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                    };
                    state.kvs.insert(key, kv.clone());
                    WatchEvent::Put(kv)
                }
                Operation::Delete { key } => {
                    if state.kvs.remove(&key).is_none() {
                        continue;
                    }
                    WatchEvent::Delete { key, revision }
                }
            };
            changed = true;
            state.history.push(event.clone());
            // No receiver is not an error: nobody watches.
            let _ = self.events.send(event);
        }
        if changed {
            state.revision = revision;
        }
        Ok(state.revision)
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch, StoreError> {
        let (watch, tx, stop) = Watch::channel();
        // Take the backlog and subscribe under one lock so that no event falls in between.
        let (backlog, mut live) = {
            let state = self.lock();
            let backlog = if from_revision <= state.compacted {
                vec![WatchEvent::Resync(state.listing(prefix))]
            } else {
                state
                    .history
                    .iter()
                    .filter(|e| e.revision() >= from_revision && event_key(e).starts_with(prefix))
                    .cloned()
                    .collect()
            };
            (backlog, self.events.subscribe())
        };
        let store = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for event in backlog {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            // After a resync, events the listing already holds are skipped.
            let mut floor: Revision = 0;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    received = live.recv() => received,
                };
                let event = match event {
                    Ok(e) if e.revision() > floor && event_key(&e).starts_with(prefix.as_str()) => {
                        e
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(%prefix, missed, "memory watch fell behind; re-listing");
                        let listing = store.lock().listing(&prefix);
                        floor = listing.revision;
                        WatchEvent::Resync(listing)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(watch)
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put(kv) => &kv.key,
        WatchEvent::Delete { key, .. } => key,
        WatchEvent::Resync(_) => "",
    }
}
