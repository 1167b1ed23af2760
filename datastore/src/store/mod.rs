//! The [`Store`] trait: a revisioned key-value store with compare-and-swap, multi-key
//! transactions and watches, and its two backends ([`memory::MemoryStore`] for unit tests and
//! [`etcd::EtcdStore`] for everything users run).
//!
//! The trait speaks raw keys and bytes; typed resources sit on top of it (see
//! [`crate::resources`]). Every write that depends on something the caller read is guarded by
//! the revision it read, so that two writers racing on one key cannot both win.

pub mod etcd;
pub mod memory;
mod watch;

use std::time::Duration;

use async_trait::async_trait;

pub use watch::{Watch, WatchEvent};

/// An etcd-style revision: a store-wide counter that grows by one with every successful write.
pub type Revision = i64;

/// One key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool`.
    pub key: String,
    /// The stored bytes (JSON for every Calico object).
    pub value: Vec<u8>,
    /// The revision of the write that created the key.
    pub create_revision: Revision,
    /// The revision of the last write to the key: what a compare-and-swap is guarded by.
    pub mod_revision: Revision,
}

/// The keys under a prefix, read at one consistent revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys in lexical order.
    pub kvs: Vec<KeyValue>,
    /// The store revision at which the listing was read; a watch from `revision + 1` misses
    /// nothing that happened after it.
    pub revision: Revision,
}

/// A condition that must hold for a transaction to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    Absent(String),
    /// The key exists, whatever its revision.
    Exists(String),
    /// The key exists and was last modified at exactly this revision.
    ModRevision(String, Revision),
}

impl Precondition {
    /// The key this condition is about.
    pub fn key(&self) -> &str {
        match self {
            Precondition::Absent(k) | Precondition::Exists(k) | Precondition::ModRevision(k, _) => {
                k
            }
        }
    }
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create or overwrite a key.
    Put {
        /// The key to write.
        key: String,
        /// The bytes to store.
        value: Vec<u8>,
    },
    /// Delete a key (no error when it is absent; guard it with a [`Precondition`] if that matters).
    Delete {
        /// The key to delete.
        key: String,
    },
}

impl Operation {
    /// A put of `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Operation::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Operation::Delete { key: key.into() }
    }
}

/// An all-or-nothing transaction: when every precondition holds, every operation is applied at
/// one new revision; otherwise nothing is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Conditions checked atomically before anything is written.
    pub preconditions: Vec<Precondition>,
    /// The writes, applied in order.
    pub operations: Vec<Operation>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a precondition.
    pub fn when(mut self, precondition: Precondition) -> Self {
        self.preconditions.push(precondition);
        self
    }

    /// Adds a write.
    pub fn then(mut self, operation: Operation) -> Self {
        self.operations.push(operation);
        self
    }
}

/// Errors of the store backends.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key already there.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The key that exists.
        key: String,
    },
    /// An update or delete found no such key.
    #[error("{key} does not exist")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A guarded write found the key changed since the caller read it.
    #[error("{key} was modified concurrently (expected revision {expected}, found {found})")]
    Conflict {
        /// The key that changed.
        key: String,
        /// The revision the caller read.
        expected: Revision,
        /// The revision now in the store (0 when the key is gone).
        found: Revision,
    },
    /// A transaction's preconditions did not all hold.
    #[error("transaction preconditions failed")]
    TransactionFailed,
    /// The store could not be reached or did not answer in time.
    #[error("datastore unavailable at {endpoints}: {reason}")]
    Unavailable {
        /// The endpoints that were tried.
        endpoints: String,
        /// What went wrong.
        reason: String,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision.
        compacted: Revision,
    },
    /// The backend configuration is unusable (bad endpoint, unreadable TLS file, ...).
    #[error("datastore configuration: {0}")]
    Config(String),
    /// Any other backend error.
    #[error("datastore error: {0}")]
    Backend(String),
}

/// How long a single store request may take before it counts as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A revisioned key-value store: the contract both backends implement with identical semantics
/// (checked by one conformance suite that runs against each).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key that starts with `prefix`, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Applies a transaction; returns the revision it was written at, or
    /// [`StoreError::TransactionFailed`] (nothing written) when a precondition did not hold.
    async fn transaction(&self, txn: Transaction) -> Result<Revision, StoreError>;

    /// Watches every key under `prefix`, starting with the changes at `from_revision`
    /// (inclusive). Reconnects by itself; when the revision it needs was compacted it re-lists
    /// and delivers [`WatchEvent::Resync`], then goes on.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch, StoreError>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it is there.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let txn = Transaction::new()
            .when(Precondition::Absent(key.to_string()))
            .then(Operation::put(key, value));
        match self.transaction(txn).await {
            Err(StoreError::TransactionFailed) => Err(StoreError::AlreadyExists {
                key: key.to_string(),
            }),
            other => other,
        }
    }

    /// Overwrites `key` only if it is still at `expected` (the `mod_revision` the caller read).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let txn = Transaction::new()
            .when(Precondition::ModRevision(key.to_string(), expected))
            .then(Operation::put(key, value));
        match self.transaction(txn).await {
            Err(StoreError::TransactionFailed) => Err(self.explain_conflict(key, expected).await),
            other => other,
        }
    }

    /// Deletes `key`; when `expected` is given, only if it is still at that revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let guard = match expected {
            Some(rev) => Precondition::ModRevision(key.to_string(), rev),
            None => Precondition::Exists(key.to_string()),
        };
        let txn = Transaction::new().when(guard).then(Operation::delete(key));
        match self.transaction(txn).await {
            Err(StoreError::TransactionFailed) => Err(match expected {
                Some(rev) => self.explain_conflict(key, rev).await,
                None => StoreError::NotFound {
                    key: key.to_string(),
                },
            }),
            other => other,
        }
    }

    /// Turns a failed guarded write into the precise error: the key is gone, or it moved on.
    async fn explain_conflict(&self, key: &str, expected: Revision) -> StoreError {
        match self.get(key).await {
            Ok(None) => StoreError::NotFound {
                key: key.to_string(),
            },
            Ok(Some(kv)) => StoreError::Conflict {
                key: key.to_string(),
                expected,
                found: kv.mod_revision,
            },
            Err(e) => e,
        }
    }
}

/// The end of the key range that holds every key starting with `prefix` (etcd's `range_end`).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // An empty (or all-0xff) prefix means "every key": etcd spells that as "\0".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
