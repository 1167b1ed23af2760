//! The node daemon's view of the datastore, sized to what a node acts on: pools, nodes, BGP
//! settings and peers, and block affinities (which node owns which block). It is kept current
//! by one watch per prefix ([`ClusterWatch`]).
//!
//! Which node owns a block is in the affinity keys (`/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`),
//! small values that change only when a block is claimed or released. IPAM handles are never
//! watched. The IPAM blocks themselves (rewritten on every pod start anywhere, a block is up to
//! ~10 KB of JSON) are watched only while some pool uses VXLAN and the daemon programs routes
//! ([`ClusterWatch::watch_blocks`]), because in VXLAN mode an address borrowed from another
//! node's block is recorded nowhere else: [`crate::borrowed`] says why and what that costs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calyx_datastore::resources::ipam::{affinity_from_key, AffinityState, BlockAffinity};
use calyx_datastore::resources::ipam::{AFFINITY_KEY_PREFIX, BLOCK_KEY_PREFIX};
use calyx_datastore::resources::{
    BGPConfiguration, BGPFilter, BGPPeer, IPPool, Kind, Node, Resource,
};
use calyx_datastore::store::{Listing, Revision, Store, StoreError, Watch, WatchEvent};
use futures::stream::{SelectAll, StreamExt};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::felixconfig;
use crate::borrowed::BorrowedView;

/// The prefixes a node watches: every resource kind the daemon acts on, the block affinities,
/// and FelixConfigurations (kept as stored JSON, see [`felixconfig`], rather than decoded as
/// the datastore's kind). IPReservations are not watched: IPAM reads them when it assigns.
pub fn watch_prefixes() -> Vec<&'static str> {
    Kind::all()
        .into_iter()
        .filter(|k| !matches!(k, Kind::FelixConfiguration | Kind::IPReservation))
        .map(Kind::key_prefix)
        .chain(std::iter::once(AFFINITY_KEY_PREFIX))
        .chain(std::iter::once(felixconfig::KEY_PREFIX))
        .collect()
}

/// [`watch_prefixes`], plus the IPAM blocks when `blocks` (what a node watches while some pool
/// uses VXLAN, see [`crate::borrowed`]; the watch benchmark measures both).
pub fn daemon_prefixes(blocks: bool) -> Vec<&'static str> {
    let mut prefixes = watch_prefixes();
    if blocks {
        prefixes.push(BLOCK_KEY_PREFIX);
    }
    prefixes
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
    /// BGP filters by name (what `BGPPeer.filters` names).
    pub bgp_filters: BTreeMap<String, BGPFilter>,
    /// Block CIDR -> the node it is affine to (confirmed affinities only).
    pub affinities: BTreeMap<IpNet, String>,
    /// Addresses used on another node than their block's (only while the blocks are watched:
    /// some pool uses VXLAN).
    pub borrowed: BorrowedView,
    /// This node's workload addresses from its kernel (BGP mode; see [`crate::workloads`]).
    pub local_workloads: BTreeSet<IpAddr>,
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
    /// IPAM blocks: only the borrowed addresses that changed are redone
    /// ([`BorrowedView::take_dirty`]), not the topology.
    pub blocks: bool,
}

impl Touched {
    fn of_key(key: &str) -> Touched {
        let blocks = key.starts_with(BLOCK_KEY_PREFIX);
        Touched {
            // FelixConfiguration counts as a pool change: both feed the NAT rules.
            pools: key.starts_with(Kind::IPPool.key_prefix())
                || key.starts_with(felixconfig::KEY_PREFIX),
            topology: !blocks,
            blocks,
        }
    }

    /// Both of two.
    pub fn union(self, other: Touched) -> Touched {
        Touched {
            pools: self.pools || other.pools,
            topology: self.topology || other.topology,
            blocks: self.blocks || other.blocks,
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
        if prefix == BLOCK_KEY_PREFIX {
            // Replaced as a whole so that only the addresses that differ become dirty.
            self.borrowed.replace(listing);
            self.revision = self.revision.max(listing.revision);
            return;
        }
        if prefix == felixconfig::KEY_PREFIX {
            self.felix_configs.clear();
        }
        match Kind::all().into_iter().find(|k| k.key_prefix() == prefix) {
            Some(Kind::IPPool) => self.pools.clear(),
            Some(Kind::Node) => self.nodes.clear(),
            Some(Kind::BGPConfiguration) => self.bgp_configs.clear(),
            Some(Kind::BGPPeer) => self.bgp_peers.clear(),
            Some(Kind::BGPFilter) => self.bgp_filters.clear(),
            Some(Kind::FelixConfiguration | Kind::IPReservation) | None => {}
        }
        for kv in &listing.kvs {
            self.put(&kv.key, &kv.value);
        }
        self.revision = self.revision.max(listing.revision);
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(BLOCK_KEY_PREFIX) {
            self.borrowed.put(key, value);
        } else if let Some(name) = key.strip_prefix(felixconfig::KEY_PREFIX) {
            match serde_json::from_slice(value) {
                Ok(v) => {
                    self.felix_configs.insert(name.to_string(), v);
                }
                Err(e) => {
                    warn!(%key, error = %e, "ignoring a FelixConfiguration that does not decode")
                }
            }
        } else if let Some((kind, name)) = Kind::from_key(key) {
            // Lenient: fields of a newer Calico are kept, not refused.
            let resource = match Resource::from_json(kind, value) {
                Ok(decoded) => decoded,
                Err(e) => {
                    warn!(%key, error = %e, "ignoring a stored resource that does not decode");
                    return;
                }
            };
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
                Resource::BGPFilter(f) => {
                    self.bgp_filters.insert(name, f);
                }
                Resource::FelixConfiguration(_) | Resource::IPReservation(_) => {}
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
        if key.starts_with(BLOCK_KEY_PREFIX) {
            self.borrowed.delete(key);
        } else if let Some(name) = key.strip_prefix(felixconfig::KEY_PREFIX) {
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
                Kind::BGPFilter => {
                    self.bgp_filters.remove(name);
                }
                Kind::FelixConfiguration | Kind::IPReservation => {}
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

/// The watches of [`watch_prefixes`], merged into one stream of `(prefix, event)`, and the
/// block watch while it is wanted.
pub struct ClusterWatch {
    events: SelectAll<futures::stream::BoxStream<'static, (&'static str, WatchEvent)>>,
    /// Ends the block watch; `None` while the blocks are not watched.
    blocks: Option<CancellationToken>,
}

impl ClusterWatch {
    /// Lists every prefix of [`watch_prefixes`] and starts a watch on each from the revision
    /// after its listing.
    pub async fn start<S: Store>(store: &S) -> Result<(ClusterState, ClusterWatch), StoreError> {
        ClusterWatch::start_on(store, watch_prefixes()).await
    }

    /// Lists each of `prefixes` and starts a watch on each from the revision after its
    /// listing.
    pub async fn start_on<S: Store>(
        store: &S,
        prefixes: Vec<&'static str>,
    ) -> Result<(ClusterState, ClusterWatch), StoreError> {
        let mut state = ClusterState::default();
        let mut events = SelectAll::new();
        for prefix in prefixes {
            let listing = store.list(prefix).await?;
            state.replace_prefix(prefix, &listing);
            let watch = store.watch(prefix, listing.revision + 1).await?;
            events.push(stream_of(prefix, watch));
        }
        Ok((
            state,
            ClusterWatch {
                events,
                blocks: None,
            },
        ))
    }

    /// Starts (`wanted`) or ends the watch of the IPAM blocks. Started: the blocks are listed
    /// into `state` and watched from there. Ended: `state`'s borrowed addresses are dropped
    /// (each becomes a change, so their routes go).
    pub async fn watch_blocks<S: Store>(
        &mut self,
        store: &S,
        state: &mut ClusterState,
        wanted: bool,
    ) -> Result<(), StoreError> {
        match (&self.blocks, wanted) {
            (None, true) => {
                let listing = store.list(BLOCK_KEY_PREFIX).await?;
                state.replace_prefix(BLOCK_KEY_PREFIX, &listing);
                let watch = store.watch(BLOCK_KEY_PREFIX, listing.revision + 1).await?;
                let token = CancellationToken::new();
                self.events.push(
                    stream_of(BLOCK_KEY_PREFIX, watch)
                        .take_until(token.clone().cancelled_owned())
                        .boxed(),
                );
                self.blocks = Some(token);
            }
            (Some(token), false) => {
                token.cancel();
                self.blocks = None;
                state.borrowed.replace(&Listing::default());
            }
            _ => {}
        }
        Ok(())
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
