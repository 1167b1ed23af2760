//! The crate's error type.

use std::net::IpAddr;

use calyx_datastore::store::StoreError;

use crate::Family;

/// Everything an IPAM operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The datastore failed (after the retry bound, for transient errors).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Compare-and-swap conflicts did not stop within the retry bound.
    #[error("{operation}: still conflicting with concurrent writers after {attempts} attempts")]
    TooManyConflicts {
        /// What was being done.
        operation: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// No address could be found for the request.
    #[error("no free {family} address for node {node}: {reason}")]
    Exhausted {
        /// The address family asked for.
        family: Family,
        /// The node asked for.
        node: String,
        /// Why none could be found.
        reason: String,
    },
    /// The requested address is in use by another handle.
    #[error("{ip} is already allocated (handle {holder})")]
    AlreadyAllocated {
        /// The address.
        ip: IpAddr,
        /// The handle that holds it.
        holder: String,
    },
    /// The address is not in any configured (enabled) pool.
    #[error("{ip} is not in any enabled IP pool")]
    NotInPool {
        /// The address.
        ip: IpAddr,
    },
    /// The address is not allocated.
    #[error("{ip} is not allocated")]
    NotAllocated {
        /// The address.
        ip: IpAddr,
    },
    /// A pool's node selector does not parse.
    #[error("IP pool {pool}: bad nodeSelector {selector:?}: {reason}")]
    BadSelector {
        /// The pool name.
        pool: String,
        /// The selector text.
        selector: String,
        /// The parser's message.
        reason: String,
    },
    /// A stored value could not be decoded.
    #[error("cannot decode {key}: {reason}")]
    Decode {
        /// The key whose value is bad.
        key: String,
        /// The decoder's message.
        reason: String,
    },
    /// The caller asked for something that cannot be done.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl IpamError {
    /// True for errors worth retrying (the datastore was unavailable, or conflicts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IpamError::Store(StoreError::Unavailable { .. })
                | IpamError::Store(StoreError::Conflict { .. })
                | IpamError::Store(StoreError::TransactionFailed)
                | IpamError::TooManyConflicts { .. }
        )
    }
}

/// Result with [`IpamError`].
pub type Result<T, E = IpamError> = std::result::Result<T, E>;
