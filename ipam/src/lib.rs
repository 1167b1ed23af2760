//! Calico-style IPAM: pools, affine blocks, handles; every write a CAS transaction.
//!
//! The data model and etcd layout are Calico's (`/calico/ipam/v2/...`, see
//! [`model`]): IP pools are cut into blocks, a block is affine to one node, and every allocation
//! belongs to a handle (`k8s-pod-network.<containerID>` for pods). [`Ipam`] is the one entry
//! point: [`Ipam::assign`], [`Ipam::assign_ip`], [`Ipam::release_ip`], [`Ipam::release_handle`],
//! [`Ipam::release_node`], [`Ipam::check`], [`Ipam::gc`], [`Ipam::show`], [`Ipam::configure`].
//!
//! Every write is one compare-and-swap transaction guarded by the revisions that were read, and
//! a block and the handle records that point into it change in the same transaction, so that a
//! crash between two writes cannot leak an address.

pub mod block;
pub mod check;
pub mod error;
pub mod fixtures;
mod ipam;
pub mod leak;
pub mod model;
pub mod node;
pub mod pools;
pub mod release;
pub mod retry;
pub mod show;
pub mod types;

pub use error::{IpamError, Result};
pub use ipam::{AssignStats, Ipam};
pub use retry::RetryPolicy;
pub use types::{AllocationAttrs, AssignArgs, Family, TunnelKind};
