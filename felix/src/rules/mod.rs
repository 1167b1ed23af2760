//! Rules on nftables: Calyx's own tables, written as one atomic nf_tables transaction per
//! change and kept equal to the desired rules (level-triggered, like the routes).
//!
//! * [`model`]: the desired ruleset — tables of named address sets and chains, chains as
//!   ordered rule lists — made to change a little at a time.
//! * [`calyx`]: the rules Calyx needs (natOutgoing, accepting workload traffic in the forward
//!   path), built from [`calyx::NatSettings`].
//! * [`policy`]: network policy, per workload, compiled from [`policy::PolicyState`] into
//!   table `inet calyx-policy` (a second engine owns it in the node daemon).
//! * [`RulesEngine`]: writes the difference between the desired rules and the kernel's in one
//!   transaction — planned against what it last wrote when only the desired rules changed,
//!   against a read-back of its tables otherwise — and repairs drift when nf_tables reports a
//!   change by someone else to its tables (flushing or deleting the table, editing a rule) or
//!   every [`RulesConfig::resync_interval`].
//!
//! Ownership: the engine changes only the tables of the desired ruleset (everything in them
//! is Calyx's; anything else found there is removed) and, in foreign chains named by
//! [`model::ChainInsert`], only the rules whose comment starts with `calyx:`.
//!
//! The wire format is hand-written over the crate's netlink helpers ([`nft`]) rather than a
//! library: see the README ("Rules on nftables") for why.

pub mod calyx;
mod engine;
pub mod model;
pub mod nft;
pub mod parse;
pub mod policy;
pub mod sock;
pub mod sync;

pub use engine::{RulesConfig, RulesEngine, RulesHandle, RulesStatus, Worker};
pub use model::Ruleset;

use std::io;

/// Errors of the rules engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink socket could not be opened or configured.
    #[error("nfnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// Reading from or writing to the kernel failed.
    #[error("nf_tables: {0}")]
    Kernel(#[source] io::Error),
    /// The kernel refused a transaction; nothing of it was applied.
    #[error("nf_tables refused the transaction at \"{what}\": {reason}")]
    Transaction {
        /// The first request refused.
        what: String,
        /// The kernel's reason.
        reason: String,
    },
    /// The blocking worker died.
    #[error("rules worker failed: {0}")]
    Worker(String),
}
