//! Calico-v3-style resources and the [`Store`](store::Store) trait with an etcd v3 backend and an
//! in-memory backend: revisions, compare-and-swap, multi-key transactions and watches.
//!
//! Keys and values follow Calico's etcdv3 layout (see `DESIGN.md`), so that an existing Calico
//! etcd can be read and the YAML users already have applies unchanged.

pub mod client;
pub mod migration;
pub mod policy;
pub mod resources;
pub mod selector;
pub mod store;
pub mod wep_client;
