//! The route resolver: merges the two sources of remote routes (BGP best routes and the routes
//! the datastore decides) into per-destination updates for felix, as Felix's route resolver
//! does. One changed best route costs one lookup and one [`RouteUpdate`]; nothing here walks
//! the table except a pool change (which can change the encapsulation of every BGP route).
//!
//! The resolver runs as its own task ([`run`], see the diagram in [`crate::tasks`]): it drains
//! the speaker's best-route feed and the main loop's datastore changes, and pushes batches into
//! felix's bounded queue. It never waits on the main loop, so the main loop may wait on the
//! speaker (peer changes) while a route storm is in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use calyx_bgp::BestRouteChange;
use calyx_felix::intern::{Id, Interner};
use calyx_felix::{Encap, ReconcilerHandle, RemoteHop, RemoteRoute, RouteUpdate};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::prefix_map::PrefixMap;
use crate::tasks::{PoolEncap, ResolverInput};

/// The most updates handed to felix in one batch: large enough that a million routes make few
/// batches, small enough that felix starts writing before the storm is over.
const MAX_BATCH: usize = 16_384;

/// The two route sources and the decision between them. Pure: unit-tested without tasks.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Pool CIDR -> encapsulation of BGP routes in it (`None`: a VXLAN pool, whose blocks the
    /// datastore routes).
    pools: Vec<PoolEncap>,
    /// BGP best routes: destination -> next hops, interned in `hop_sets`: a million routes
    /// through a few next hops cost a 4-byte id each, not a hop list (12 bytes a bucket for
    /// IPv4).
    bgp: PrefixMap<Id>,
    hop_sets: Interner<Box<[IpAddr]>>,
    /// Routes the datastore decides (VXLAN blocks); they win over BGP's.
    datastore: HashMap<IpNet, RemoteRoute>,
}

impl Resolver {
    /// How many BGP best routes are held.
    pub fn bgp_routes(&self) -> usize {
        self.bgp.len()
    }

    /// The encapsulation a BGP route to `dst` gets; `None` when BGP must not route it.
    fn encap_for(&self, dst: &IpNet) -> Option<Encap> {
        match self.pools.iter().find(|p| p.cidr.contains(dst)) {
            Some(pool) => pool.bgp_encap,
            // Outside every pool (a ToR's default route, service ranges): plain routing.
            None => Some(Encap::None),
        }
    }

    /// What felix should hold for `dst` now.
    fn resolve(&self, dst: &IpNet) -> Option<RemoteRoute> {
        if let Some(route) = self.datastore.get(dst) {
            return Some(route.clone());
        }
        let hops = self.bgp.get(dst).and_then(|id| self.hop_sets.get(id))?;
        let encap = self.encap_for(dst)?;
        Some(RemoteRoute {
            dst: *dst,
            encap,
            hops: hops
                .iter()
                .map(|ip| RemoteHop::node(self.via(*ip, encap)))
                .collect(),
        })
    }

    /// The gateway a plain BGP route with next hop `hop` goes through: the gateway of the
    /// static host route to `hop` when there is one (a BGPPeer's `reachableBy`, see
    /// [`crate::bgp::static_routes`]), as BIRD's `gateway recursive` resolves the next hop
    /// of a multihop peer through that route; `hop` itself otherwise. Encapsulated routes
    /// keep their hop: the tunnel goes to the node, not to a gateway.
    fn via(&self, hop: IpAddr, encap: Encap) -> IpAddr {
        match self.datastore.get(&IpNet::from(hop)) {
            Some(r) if encap == Encap::None && r.encap == Encap::None => {
                r.hops.first().map_or(hop, |h| h.node_ip)
            }
            _ => hop,
        }
    }

    fn emit(&self, dst: IpNet, out: &mut Vec<RouteUpdate>) {
        out.push(match self.resolve(&dst) {
            Some(route) => RouteUpdate::Upsert(route),
            None => RouteUpdate::Remove(dst),
        });
    }

    /// One best-route change from the speaker.
    pub fn on_bgp(&mut self, change: BestRouteChange, out: &mut Vec<RouteUpdate>) {
        if change.withdrawn || change.next_hops.is_empty() {
            match self.bgp.remove(&change.prefix) {
                Some(old) => self.hop_sets.release(old),
                None => return,
            }
        } else {
            let hop_sets = &mut self.hop_sets;
            let same = |id: Id| {
                hop_sets
                    .get(id)
                    .is_some_and(|h| **h == change.next_hops[..])
            };
            if self.bgp.get(&change.prefix).is_some_and(same) {
                return;
            }
            let id = hop_sets.intern_by(&change.next_hops[..], |h| Box::from(h));
            if let Some(old) = self.bgp.insert(change.prefix, id) {
                hop_sets.release(old);
            }
        }
        if !self.datastore.contains_key(&change.prefix) {
            self.emit(change.prefix, out);
        }
    }

    /// The speaker was restarted: the routes of its previous feed are gone.
    pub fn on_bgp_reset(&mut self, out: &mut Vec<RouteUpdate>) {
        let gone: Vec<IpNet> = self.bgp.take_keys();
        self.hop_sets = Interner::default();
        for dst in gone {
            self.emit(dst, out);
        }
    }

    /// Datastore-decided routes that changed (`None`: no longer decided by the datastore).
    pub fn on_datastore(
        &mut self,
        changes: Vec<(IpNet, Option<RemoteRoute>)>,
        out: &mut Vec<RouteUpdate>,
    ) {
        for (dst, route) in changes {
            let plain = |r: Option<&RemoteRoute>| r.is_some_and(|r| r.encap == Encap::None);
            let host = dst.prefix_len() == dst.max_prefix_len();
            let resolves_hops = host && (plain(route.as_ref()) || plain(self.datastore.get(&dst)));
            match route {
                Some(r) => {
                    self.datastore.insert(dst, r);
                }
                None => {
                    self.datastore.remove(&dst);
                }
            }
            self.emit(dst, out);
            // A static route to a BGP next hop came, changed or went: the BGP routes through
            // that hop resolve anew. A walk of the table, but only for plain host routes from
            // the datastore (`reachableBy`, a handful, changed by hand), never for the VXLAN
            // routes that follow pods.
            if resolves_hops {
                let hop = dst.addr();
                let through: Vec<IpNet> = self
                    .bgp
                    .iter()
                    .filter(|(d, id)| {
                        let via_hop = self.hop_sets.get(*id).is_some_and(|h| h.contains(&hop));
                        via_hop && !self.datastore.contains_key(d)
                    })
                    .map(|(d, _)| d)
                    .collect();
                for d in through {
                    self.emit(d, out);
                }
            }
        }
    }

    /// The pools changed: re-resolve the BGP routes whose encapsulation changed.
    pub fn on_pools(&mut self, pools: Vec<PoolEncap>, out: &mut Vec<RouteUpdate>) {
        if pools == self.pools {
            return;
        }
        let before = std::mem::replace(&mut self.pools, pools);
        let old = Resolver {
            pools: before,
            ..Resolver::default()
        };
        let changed: Vec<IpNet> = self
            .bgp
            .iter()
            .map(|(dst, _)| dst)
            .filter(|dst| !self.datastore.contains_key(dst))
            .filter(|dst| old.encap_for(dst) != self.encap_for(dst))
            .collect();
        for dst in changed {
            self.emit(dst, out);
        }
    }
}

/// Counters the resolver keeps for the status endpoint.
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// BGP best routes held.
    pub bgp_routes: AtomicU64,
    /// Updates handed to felix.
    pub updates_sent: AtomicU64,
}

/// The resolver task: until `stop`, or until felix stops.
pub async fn run(
    mut inputs: mpsc::Receiver<ResolverInput>,
    felix: ReconcilerHandle,
    stats: Arc<ResolverStats>,
    stop: CancellationToken,
) {
    let mut resolver = Resolver::default();
    let mut feed: Option<mpsc::Receiver<BestRouteChange>> = None;
    let mut out: Vec<RouteUpdate> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            input = inputs.recv() => match input {
                Some(input) => handle(&mut resolver, input, &mut feed, &mut out),
                None => return,
            },
            change = next_change(&mut feed) => match change {
                Some(change) => resolver.on_bgp(change, &mut out),
                // The speaker is gone; a restarted one sends a new feed.
                None => feed = None,
            },
        }
        // Everything already queued joins this batch, without waiting for more.
        while out.len() < MAX_BATCH {
            if let Ok(input) = inputs.try_recv() {
                handle(&mut resolver, input, &mut feed, &mut out);
                continue;
            }
            match feed.as_mut().map(mpsc::Receiver::try_recv) {
                Some(Ok(change)) => resolver.on_bgp(change, &mut out),
                _ => break,
            }
        }
        stats
            .bgp_routes
            .store(resolver.bgp_routes() as u64, Ordering::Relaxed);
        if out.is_empty() {
            continue;
        }
        let batch = std::mem::take(&mut out);
        let n = batch.len() as u64;
        // Felix's queue is bounded: this waits while felix is behind, which is the point (the
        // speaker's feed then fills and the RIB slows down, instead of memory growing).
        if let Err(e) = felix.update_routes(batch).await {
            warn!(error = %e, "the dataplane stopped taking route updates");
            return;
        }
        stats.updates_sent.fetch_add(n, Ordering::Relaxed);
    }
}

fn handle(
    resolver: &mut Resolver,
    input: ResolverInput,
    feed: &mut Option<mpsc::Receiver<BestRouteChange>>,
    out: &mut Vec<RouteUpdate>,
) {
    match input {
        ResolverInput::Pools(pools) => resolver.on_pools(pools, out),
        ResolverInput::Datastore(changes) => resolver.on_datastore(changes, out),
        ResolverInput::BgpFeed(rx) => {
            resolver.on_bgp_reset(out);
            *feed = Some(rx);
        }
    }
}

async fn next_change(
    feed: &mut Option<mpsc::Receiver<BestRouteChange>>,
) -> Option<BestRouteChange> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn best(prefix: &str, hops: &[&str]) -> BestRouteChange {
        BestRouteChange {
            prefix: net(prefix),
            next_hops: hops.iter().map(|h| h.parse().unwrap()).collect(),
            withdrawn: hops.is_empty(),
        }
    }

    fn pool(cidr: &str, bgp_encap: Option<Encap>) -> PoolEncap {
        PoolEncap {
            cidr: net(cidr),
            bgp_encap,
        }
    }

    fn summary(out: &[RouteUpdate]) -> Vec<String> {
        out.iter()
            .map(|u| match u {
                RouteUpdate::Upsert(r) => format!("+{} {:?} {}", r.dst, r.encap, r.hops.len()),
                RouteUpdate::Remove(d) => format!("-{d}"),
                RouteUpdate::ReplaceAll(v) => format!("={}", v.len()),
            })
            .collect()
    }

    #[test]
    fn one_best_route_change_is_one_update() {
        let mut r = Resolver::default();
        let mut out = Vec::new();
        r.on_pools(vec![pool("10.65.0.0/16", Some(Encap::Ipip))], &mut out);
        assert!(out.is_empty(), "no BGP routes yet: nothing to redo");
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.2"]), &mut out);
        r.on_bgp(best("0.0.0.0/0", &["192.168.1.254"]), &mut out);
        // The same best route again costs nothing.
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.2"]), &mut out);
        assert_eq!(summary(&out), ["+10.65.1.0/26 Ipip 1", "+0.0.0.0/0 None 1"]);
        out.clear();
        r.on_bgp(best("10.65.1.0/26", &[]), &mut out);
        r.on_bgp(best("10.65.9.0/26", &[]), &mut out);
        assert_eq!(summary(&out), ["-10.65.1.0/26"]);
        assert_eq!(r.bgp_routes(), 1);
    }

    #[test]
    fn datastore_routes_win_and_hand_back() {
        let mut r = Resolver::default();
        let mut out = Vec::new();
        r.on_pools(vec![pool("10.65.0.0/16", None)], &mut out);
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.2"]), &mut out);
        assert_eq!(summary(&out), ["-10.65.1.0/26"], "VXLAN pool: BGP ignored");
        out.clear();
        let vxlan = RemoteRoute {
            dst: net("10.65.1.0/26"),
            encap: Encap::Vxlan,
            hops: vec![RemoteHop::node("192.168.1.2".parse().unwrap())],
        };
        r.on_datastore(vec![(net("10.65.1.0/26"), Some(vxlan))], &mut out);
        assert_eq!(summary(&out), ["+10.65.1.0/26 Vxlan 1"]);
        out.clear();
        // A BGP change under a datastore route is remembered but changes nothing.
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.3"]), &mut out);
        assert!(out.is_empty());
        // The pool goes back to BGP routing: the datastore drops the route, BGP's shows.
        r.on_pools(vec![pool("10.65.0.0/16", Some(Encap::None))], &mut out);
        assert!(out.is_empty(), "the datastore route still stands");
        r.on_datastore(vec![(net("10.65.1.0/26"), None)], &mut out);
        assert_eq!(summary(&out), ["+10.65.1.0/26 None 1"]);
    }

    #[test]
    fn a_pool_change_redoes_only_the_routes_in_it() {
        let mut r = Resolver::default();
        let mut out = Vec::new();
        r.on_pools(vec![pool("10.65.0.0/16", Some(Encap::None))], &mut out);
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.2"]), &mut out);
        r.on_bgp(best("172.16.0.0/24", &["192.168.1.254"]), &mut out);
        out.clear();
        r.on_pools(
            vec![pool("10.65.0.0/16", Some(Encap::IpipCrossSubnet))],
            &mut out,
        );
        assert_eq!(summary(&out), ["+10.65.1.0/26 IpipCrossSubnet 1"]);
        out.clear();
        r.on_bgp_reset(&mut out);
        let mut got = summary(&out);
        got.sort();
        assert_eq!(got, ["-10.65.1.0/26", "-172.16.0.0/24"]);
        assert_eq!(r.bgp_routes(), 0);
    }

    #[test]
    fn a_static_route_to_the_next_hop_resolves_it_recursively() {
        let mut r = Resolver::default();
        let mut out = Vec::new();
        r.on_pools(vec![pool("10.65.0.0/16", Some(Encap::Ipip))], &mut out);
        // A ToR two hops away announces a default route and a pool block.
        r.on_bgp(best("0.0.0.0/0", &["10.9.0.1"]), &mut out);
        r.on_bgp(best("10.65.1.0/26", &["10.9.0.1"]), &mut out);
        out.clear();
        let hop = |out: &[RouteUpdate], dst: &str| -> Option<String> {
            out.iter().find_map(|u| match u {
                RouteUpdate::Upsert(r) if r.dst == net(dst) => Some(r.hops[0].node_ip.to_string()),
                _ => None,
            })
        };
        // reachableBy: 10.9.0.1/32 via 192.168.1.1.
        let static_route = RemoteRoute {
            dst: net("10.9.0.1/32"),
            encap: Encap::None,
            hops: vec![RemoteHop::node("192.168.1.1".parse().unwrap())],
        };
        r.on_datastore(vec![(net("10.9.0.1/32"), Some(static_route))], &mut out);
        assert_eq!(hop(&out, "10.9.0.1/32").as_deref(), Some("192.168.1.1"));
        assert_eq!(hop(&out, "0.0.0.0/0").as_deref(), Some("192.168.1.1"));
        assert_eq!(
            hop(&out, "10.65.1.0/26").as_deref(),
            Some("10.9.0.1"),
            "IPIP: the node"
        );
        out.clear();
        // A new route through that hop resolves at once; the static route going undoes it.
        r.on_bgp(best("172.16.0.0/24", &["10.9.0.1"]), &mut out);
        assert_eq!(hop(&out, "172.16.0.0/24").as_deref(), Some("192.168.1.1"));
        out.clear();
        r.on_datastore(vec![(net("10.9.0.1/32"), None)], &mut out);
        assert_eq!(hop(&out, "0.0.0.0/0").as_deref(), Some("10.9.0.1"));
        assert_eq!(hop(&out, "172.16.0.0/24").as_deref(), Some("10.9.0.1"));
        // VXLAN host routes (borrowed addresses) never walk the table.
        out.clear();
        let vxlan = RemoteRoute {
            dst: net("10.9.0.1/32"),
            encap: Encap::Vxlan,
            hops: vec![RemoteHop::node("192.168.1.7".parse().unwrap())],
        };
        r.on_datastore(vec![(net("10.9.0.1/32"), Some(vxlan))], &mut out);
        assert_eq!(summary(&out), ["+10.9.0.1/32 Vxlan 1"]);
    }

    #[test]
    fn multipath_routes_keep_every_hop() {
        let mut r = Resolver::default();
        let mut out = Vec::new();
        r.on_bgp(
            best("10.65.1.0/26", &["192.168.1.2", "192.168.1.3"]),
            &mut out,
        );
        r.on_bgp(
            best("10.65.1.0/26", &["192.168.1.2", "192.168.1.3"]),
            &mut out,
        );
        assert_eq!(summary(&out), ["+10.65.1.0/26 None 2"]);
        out.clear();
        r.on_bgp(best("10.65.1.0/26", &["192.168.1.3"]), &mut out);
        assert_eq!(summary(&out), ["+10.65.1.0/26 None 1"]);
    }
}
