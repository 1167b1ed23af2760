//! The node daemon's view of the datastore, sized to what a node acts on: pools, nodes, BGP
//! settings and peers, and block affinities (which node owns which block). It is kept current
//! by one watch per prefix ([`ClusterWatch`]).
//!
//! What a node does *not* watch: IPAM blocks' allocations and handles. Those are rewritten on
//! every pod start anywhere in the cluster (a block is ~10 KB of JSON); watching them would make
//! pod churn on one node work for every node and etcd traffic grow with nodes x pods. Which
//! node owns a block is in the affinity keys (`/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`),
//! small values that change only when a block is claimed or released.

use std::collections::BTreeMap;

use calyx_datastore::resources::ipam::AFFINITY_KEY_PREFIX;
use calyx_datastore::resources::ipam::{affinity_from_key, AffinityState, BlockAffinity};
use calyx_datastore::resources::{BGPConfiguration, BGPPeer, IPPool, Kind, Node, Resource};
use calyx_datastore::store::{Listing, Revision, Store, StoreError, Watch, WatchEvent};
use futures::stream::{SelectAll, StreamExt};
use ipnet::IpNet;
use tracing::warn;

use super::felixconfig;

/// The prefixes a node watches: every resource kind Calyx models, and the block affinities.
pub fn watch_prefixes() -> Vec<&'static str> {
    Kind::all()
        .into_iter()
        .map(Kind::key_prefix)
        .chain(std::iter::once(AFFINITY_KEY_PREFIX))
        .chain(std::iter::once(felixconfig::KEY_PREFIX))
        .collect()
}

/// The datastore objects the daemon acts on.
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
    /// Block CIDR -> the node it is affine to (confirmed affinities only).
    pub affinities: BTreeMap<IpNet, String>,
    /// FelixConfiguration resources by name, as stored (see [`felixconfig`]).
    pub felix_configs: BTreeMap<String, serde_json::Value>,
    /// The highest revision applied.
    pub revision: Revision,
}

/// What a change touched, so that the main loop redoes only the work that depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touched {
    /// IP pools.
    pub pools: bool,
    /// Nodes, BGP configurations or peers, or affinities: the BGP plan and the routes.
    pub topology: bool,
}

impl Touched {
    fn of_key(key: &str) -> Touched {
        Touched {
            // FelixConfiguration counts as a pool change: both feed the NAT rules.
            pools: key.starts_with(Kind::IPPool.key_prefix())
                || key.starts_with(felixconfig::KEY_PREFIX),
            topology: true,
        }
    }

    /// Both of two.
    pub fn union(self, other: Touched) -> Touched {
        Touched {
            pools: self.pools || other.pools,
            topology: self.topology || other.topology,
        }
    }
}

impl ClusterState {
    /// The blocks affine to `node`.
    pub fn blocks_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = IpNet> + 'a {
        self.affinities
            .iter()
            .filter(move |(_, n)| n.as_str() == node)
            .map(|(cidr, _)| *cidr)
    }

    /// Applies one event of the watch on `prefix`.
    pub fn apply(&mut self, prefix: &str, event: &WatchEvent) -> Touched {
        let touched = match event {
            WatchEvent::Put(kv) => {
                self.put(&kv.key, &kv.value);
                Touched::of_key(&kv.key)
            }
            WatchEvent::Delete { key, .. } => {
                self.delete(key);
                Touched::of_key(key)
            }
            WatchEvent::Resync(listing) => {
                self.replace_prefix(prefix, listing);
                Touched::of_key(prefix)
            }
        };
        self.revision = self.revision.max(event.revision());
        touched
    }

    /// Replaces everything under `prefix` with `listing` (a fresh listing, or a watch that
    /// could not resume).
    pub fn replace_prefix(&mut self, prefix: &str, listing: &Listing) {
        if prefix == AFFINITY_KEY_PREFIX {
            self.affinities.clear();
        }
        if prefix == felixconfig::KEY_PREFIX {
            self.felix_configs.clear();
        }
        match Kind::all().into_iter().find(|k| k.key_prefix() == prefix) {
            Some(Kind::IPPool) => self.pools.clear(),
            Some(Kind::Node) => self.nodes.clear(),
            Some(Kind::BGPConfiguration) => self.bgp_configs.clear(),
            Some(Kind::BGPPeer) => self.bgp_peers.clear(),
            None => {}
        }
        for kv in &listing.kvs {
            self.put(&kv.key, &kv.value);
        }
        self.revision = self.revision.max(listing.revision);
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if let Some(name) = key.strip_prefix(felixconfig::KEY_PREFIX) {
            match serde_json::from_slice(value) {
                Ok(v) => {
                    self.felix_configs.insert(name.to_string(), v);
                }
                Err(e) => {
                    warn!(%key, error = %e, "ignoring a FelixConfiguration that does not decode")
                }
            }
        } else if let Some((kind, name)) = Kind::from_key(key) {
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
        } else if let Some((host, cidr)) = affinity_from_key(key) {
            match serde_json::from_slice::<BlockAffinity>(value) {
                // A pending claim may still fail and a pending deletion is on its way out:
                // only a confirmed affinity says where the block's addresses live.
                Ok(a) if a.state == AffinityState::Confirmed && !a.deleted => {
                    self.affinities.insert(cidr, host.to_string());
                }
                Ok(_) => {
                    if self.affinities.get(&cidr).is_some_and(|h| h == host) {
                        self.affinities.remove(&cidr);
                    }
                }
                Err(e) => warn!(%key, error = %e, "ignoring a block affinity that does not decode"),
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some(name) = key.strip_prefix(felixconfig::KEY_PREFIX) {
            self.felix_configs.remove(name);
        } else if let Some((kind, name)) = Kind::from_key(key) {
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
        } else if let Some((host, cidr)) = affinity_from_key(key) {
            if self.affinities.get(&cidr).is_some_and(|h| h == host) {
                self.affinities.remove(&cidr);
            }
        }
    }

    /// The pool whose CIDR holds `net`, if any.
    pub fn pool_of(&self, net: &IpNet) -> Option<&IPPool> {
        self.pools.values().find(|p| p.spec.cidr.contains(net))
    }
}

/// The watches of [`watch_prefixes`], merged into one stream of `(prefix, event)`.
pub struct ClusterWatch {
    events: SelectAll<futures::stream::BoxStream<'static, (&'static str, WatchEvent)>>,
}

impl ClusterWatch {
    /// Lists every prefix and starts a watch on each from the revision after its listing.
    pub async fn start<S: Store>(store: &S) -> Result<(ClusterState, ClusterWatch), StoreError> {
        let mut state = ClusterState::default();
        let mut events = SelectAll::new();
        for prefix in watch_prefixes() {
            let listing = store.list(prefix).await?;
            state.replace_prefix(prefix, &listing);
            let watch = store.watch(prefix, listing.revision + 1).await?;
            events.push(stream_of(prefix, watch));
        }
        Ok((state, ClusterWatch { events }))
    }

    /// The next event of any of the watches; `None` once they have all ended.
    pub async fn next(&mut self) -> Option<(&'static str, WatchEvent)> {
        self.events.next().await
    }
}

fn stream_of(
    prefix: &'static str,
    watch: Watch,
) -> futures::stream::BoxStream<'static, (&'static str, WatchEvent)> {
    futures::stream::unfold(watch, move |mut w| async move {
        let event = w.next().await?;
        Some(((prefix, event), w))
    })
    .boxed()
}
