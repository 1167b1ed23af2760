//! The node daemon's view of the datastore: pools, nodes, BGP settings and IPAM blocks, kept
//! current from one watch on `/calico/`.

use std::collections::BTreeMap;

use calyx_datastore::resources::ipam::{block_cidr_from_key, AllocationBlock};
use calyx_datastore::resources::{BGPConfiguration, BGPPeer, IPPool, Kind, Node, Resource};
use calyx_datastore::store::{KeyValue, Revision, WatchEvent};
use ipnet::IpNet;
use tracing::warn;

/// Everything under `/calico/` that the node daemon acts on.
pub const WATCH_PREFIX: &str = "/calico/";

/// The datastore objects the daemon acts on, at one revision.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// IP pools by name.
    pub pools: BTreeMap<String, IPPool>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// BGP configurations by name (`default`, `node.<name>`).
    pub bgp_configs: BTreeMap<String, BGPConfiguration>,
    /// BGP peers by name.
    pub bgp_peers: BTreeMap<String, BGPPeer>,
    /// IPAM blocks by CIDR.
    pub blocks: BTreeMap<IpNet, AllocationBlock>,
    /// The revision this state reflects.
    pub revision: Revision,
}

impl ClusterState {
    /// A state built from a listing of [`WATCH_PREFIX`].
    pub fn from_kvs(kvs: &[KeyValue], revision: Revision) -> Self {
        let mut state = ClusterState::default();
        for kv in kvs {
            state.put(&kv.key, &kv.value);
        }
        state.revision = revision;
        state
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Put(kv) => self.put(&kv.key, &kv.value),
            WatchEvent::Delete { key, .. } => self.delete(key),
            WatchEvent::Resync(listing) => {
                *self = ClusterState::from_kvs(&listing.kvs, listing.revision);
            }
        }
        self.revision = self.revision.max(event.revision());
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if let Some((kind, name)) = Kind::from_key(key) {
            let (resource, dropped) = match Resource::from_json_lenient(kind, value) {
                Ok(decoded) => decoded,
                Err(e) => {
                    warn!(%key, error = %e, "ignoring a stored resource that does not decode");
                    return;
                }
            };
            if !dropped.is_empty() {
                tracing::debug!(%key, ?dropped, "ignored fields Calyx does not model");
            }
            let name = name.to_string();
            match resource {
                Resource::IPPool(p) => {
                    self.pools.insert(name, p);
                }
                Resource::Node(n) => {
                    self.nodes.insert(name, n);
                }
                Resource::BGPConfiguration(c) => {
                    self.bgp_configs.insert(name, c);
                }
                Resource::BGPPeer(p) => {
                    self.bgp_peers.insert(name, p);
                }
            }
        } else if let Some(cidr) = block_cidr_from_key(key) {
            match serde_json::from_slice::<AllocationBlock>(value) {
                Ok(block) => {
                    self.blocks.insert(cidr, block);
                }
                Err(e) => warn!(%key, error = %e, "ignoring an IPAM block that does not decode"),
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some((kind, name)) = Kind::from_key(key) {
            match kind {
                Kind::IPPool => {
                    self.pools.remove(name);
                }
                Kind::Node => {
                    self.nodes.remove(name);
                }
                Kind::BGPConfiguration => {
                    self.bgp_configs.remove(name);
                }
                Kind::BGPPeer => {
                    self.bgp_peers.remove(name);
                }
            }
        } else if let Some(cidr) = block_cidr_from_key(key) {
            self.blocks.remove(&cidr);
        }
    }

    /// The pool whose CIDR holds `net`, if any.
    pub fn pool_of(&self, net: &IpNet) -> Option<&IPPool> {
        self.pools.values().find(|p| p.spec.cidr.contains(net))
    }
}
