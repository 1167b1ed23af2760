//! Calico's IPAM objects and keys, from `calyx-datastore`.

pub use calyx_datastore::resources::ipam::*;
