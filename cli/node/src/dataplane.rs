//! From the datastore view to what the dataplane needs, as Calico's calculation graph does:
//! the host state (node addresses, tunnel devices, blackholes for local blocks), the routes
//! the datastore decides (VXLAN: block affinities plus each node's VTEP), and the
//! encapsulation BGP-learned routes get from the pool they fall in (used by [`crate::routes`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_datastore::resources::{EncapMode, IPPool};
use calyx_felix::{
    Encap, HostState, IpipTunnel, MacAddr, RemoteHop, RemoteRoute, Vtep, VxlanTunnel,
};
use ipnet::IpNet;

use super::cluster::ClusterState;
use super::config::Backend;

fn ipip_encap(mode: EncapMode) -> Encap {
    match mode {
        EncapMode::Always => Encap::Ipip,
        EncapMode::CrossSubnet => Encap::IpipCrossSubnet,
        EncapMode::Never => Encap::None,
    }
}

fn vxlan_encap(mode: EncapMode) -> Option<Encap> {
    match mode {
        EncapMode::Always => Some(Encap::Vxlan),
        EncapMode::CrossSubnet => Some(Encap::VxlanCrossSubnet),
        EncapMode::Never => None,
    }
}

fn is_vxlan(pool: &IPPool) -> bool {
    pool.spec.vxlan_mode != EncapMode::Never
}

/// The encapsulation BGP-learned routes get in a pool: IPIP by the pool's `ipipMode`; `None`
/// for a VXLAN pool, whose blocks are routed from the datastore instead (BGP's copy is ignored).
pub fn bgp_encap(pool: &IPPool) -> Option<Encap> {
    if is_vxlan(pool) {
        None
    } else {
        Some(ipip_encap(pool.spec.ipip_mode))
    }
}

/// Whether the node must watch the IPAM blocks: its backend programs routes and some enabled
/// IPv4 pool uses VXLAN (borrowed addresses there are routed from the blocks' allocations; in
/// BGP pools each node originates its own, learned from its kernel).
pub fn needs_blocks(state: &ClusterState, backend: Backend) -> bool {
    backend != Backend::None
        && state
            .pools
            .values()
            .any(|p| !p.spec.disabled && is_vxlan(p))
}

/// The host part of the dataplane this node should have: addresses, tunnels, local blocks.
pub fn host_state(state: &ClusterState, me: &str, backend: Backend) -> HostState {
    let mut host = HostState::default();
    let Some(node) = state.nodes.get(me) else {
        return host;
    };
    let bgp_spec = node.spec.bgp.as_ref();
    host.node_ipv4 = bgp_spec.and_then(|b| b.ipv4_address);
    host.node_ipv6 = bgp_spec.and_then(|b| b.ipv6_address);
    if backend == Backend::None {
        return host;
    }
    // Tunnel devices, when some pool asks for them.
    let v4_pools = || {
        state
            .pools
            .values()
            .filter(|p| p.spec.cidr.addr().is_ipv4() && !p.spec.disabled)
    };
    if v4_pools().any(is_vxlan) {
        if let Some(mac) = node.spec.vxlan_tunnel_mac_addr {
            let mut tunnel = VxlanTunnel::calico(
                MacAddr(mac.0),
                node.spec.ipv4_vxlan_tunnel_addr.map(IpAddr::V4),
            );
            // FelixConfiguration vxlanVNI / vxlanPort (felix recreates the device on a change).
            let felix = super::felixconfig::effective(&state.felix_configs, me);
            tunnel.vni = felix.vxlan_vni.unwrap_or(tunnel.vni);
            tunnel.port = felix.vxlan_port.unwrap_or(tunnel.port);
            host.vxlan_v4 = Some(tunnel);
        }
    }
    // `vxlan-v6.calico`, with the Node's `ipv6VXLANTunnelAddr` and `vxlanTunnelMACAddrV6`.
    let v6_vxlan = state
        .pools
        .values()
        .any(|p| p.spec.cidr.addr().is_ipv6() && !p.spec.disabled && is_vxlan(p));
    if v6_vxlan && host.node_ipv6.is_some() {
        if let Some(mac) = node.spec.vxlan_tunnel_mac_addr_v6 {
            let mut tunnel = VxlanTunnel::calico(
                MacAddr(mac.0),
                node.spec.ipv6_vxlan_tunnel_addr.map(IpAddr::V6),
            );
            let felix = super::felixconfig::effective(&state.felix_configs, me);
            tunnel.vni = felix.vxlan_vni.unwrap_or(tunnel.vni);
            tunnel.port = felix.vxlan_port.unwrap_or(tunnel.port);
            host.vxlan_v6 = Some(tunnel);
        }
    }
    if v4_pools().any(|p| p.spec.ipip_mode != EncapMode::Never) {
        host.ipip = Some(IpipTunnel {
            address: bgp_spec.and_then(|b| b.ipv4_ipip_tunnel_addr),
        });
    }
    host.local_blocks = state.blocks_of(me).collect();
    host
}

/// Routes the datastore decides, without BGP: every other node's block in a VXLAN pool, via
/// that node's VTEP (block affinity + the node's tunnel address and MAC), as Felix's
/// `l3_route_resolver` derives them; in BGP mode also the static `<peer>/32 via <gateway>`
/// routes of BGPPeers' `reachableBy` (see [`crate::bgp::static_routes`]). Cost grows with the
/// blocks of the cluster, not with the routes BGP carries.
pub fn datastore_routes(
    state: &ClusterState,
    me: &str,
    backend: Backend,
) -> BTreeMap<IpNet, RemoteRoute> {
    let mut routes = BTreeMap::new();
    if backend == Backend::None {
        return routes;
    }
    if backend == Backend::Bgp {
        for (peer, gateway) in super::bgp::static_routes(state, me) {
            let dst = IpNet::from(peer);
            routes.insert(
                dst,
                RemoteRoute {
                    dst,
                    encap: Encap::None,
                    hops: vec![RemoteHop::node(gateway)],
                },
            );
        }
    }
    for (cidr, owner) in &state.affinities {
        if owner == me {
            continue;
        }
        if let Some(route) = vxlan_route(state, *cidr, owner) {
            routes.insert(*cidr, route);
        }
    }
    routes
}

/// A route for `dst` to `node`'s VTEP when `dst` is in a VXLAN pool and `node` has a VTEP of
/// `dst`'s family (IPv6: the node's IPv6 address, `ipv6VXLANTunnelAddr` and
/// `vxlanTunnelMACAddrV6`, as Felix's `vxlan_resolver` pairs them).
fn vxlan_route(state: &ClusterState, dst: IpNet, node: &str) -> Option<RemoteRoute> {
    let pool = state.pool_of(&dst)?;
    let encap = vxlan_encap(pool.spec.vxlan_mode)?;
    let peer = state.nodes.get(node)?;
    let bgp = peer.spec.bgp.as_ref();
    let (node_ip, tunnel_ip, mac) = match dst {
        IpNet::V4(_) => (
            IpAddr::V4(bgp?.ipv4_address?.addr()),
            IpAddr::V4(peer.spec.ipv4_vxlan_tunnel_addr?),
            peer.spec.vxlan_tunnel_mac_addr?,
        ),
        IpNet::V6(_) => (
            IpAddr::V6(bgp?.ipv6_address?.addr()),
            IpAddr::V6(peer.spec.ipv6_vxlan_tunnel_addr?),
            peer.spec.vxlan_tunnel_mac_addr_v6?,
        ),
    };
    Some(RemoteRoute {
        dst,
        encap,
        hops: vec![RemoteHop {
            node_ip,
            vtep: Some(Vtep {
                tunnel_ip,
                mac: MacAddr(mac.0),
            }),
        }],
    })
}

/// The route for one address used on another node than its block's ([`crate::borrowed`]):
/// in a VXLAN pool, a /32 to the VTEP of the node using it, as Felix derives it from the
/// block's allocation attributes. `None` when the address is not borrowed, is used here (the
/// CNI plugin's route to the pod's interface serves it), or is not in a VXLAN pool (BGP
/// carries the /32 its node originates).
pub fn borrowed_route(
    state: &ClusterState,
    me: &str,
    backend: Backend,
    ip: IpAddr,
) -> Option<RemoteRoute> {
    if backend == Backend::None {
        return None;
    }
    let node = state.borrowed.node_of(&ip)?;
    if node == me {
        return None;
    }
    vxlan_route(state, IpNet::from(ip), node)
}

/// [`borrowed_route`] for every borrowed address: after a topology change (a node's VTEP, a
/// pool's mode), when any of them may have changed.
pub fn borrowed_routes(
    state: &ClusterState,
    me: &str,
    backend: Backend,
) -> BTreeMap<IpNet, RemoteRoute> {
    state
        .borrowed
        .all()
        .filter_map(|(ip, _)| borrowed_route(state, me, backend, ip))
        .map(|r| (r.dst, r))
        .collect()
}

/// The changes that take `old` to `new`, one update per destination that differs.
pub fn route_changes(
    old: &BTreeMap<IpNet, RemoteRoute>,
    new: &BTreeMap<IpNet, RemoteRoute>,
) -> Vec<(IpNet, Option<RemoteRoute>)> {
    let mut changes: Vec<(IpNet, Option<RemoteRoute>)> = old
        .keys()
        .filter(|dst| !new.contains_key(dst))
        .map(|dst| (*dst, None))
        .collect();
    changes.extend(
        new.iter()
            .filter(|(dst, r)| old.get(dst) != Some(r))
            .map(|(dst, r)| (*dst, Some(r.clone()))),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use calyx_datastore::resources::{
        IPPoolSpec, MacAddr as DsMac, Node, NodeBGPSpec, NodeSpec, ObjectMeta,
    };

    fn node(name: &str, ip: &str, tunnel: &str, mac: [u8; 6]) -> Node {
        Node {
            metadata: ObjectMeta::named(name),
            spec: NodeSpec {
                bgp: Some(NodeBGPSpec {
                    ipv4_address: Some(ip.parse().unwrap()),
                    ..Default::default()
                }),
                ipv4_vxlan_tunnel_addr: Some(tunnel.parse().unwrap()),
                vxlan_tunnel_mac_addr: Some(DsMac(mac)),
                ..Default::default()
            },
            status: None,
            extra: Default::default(),
        }
    }

    fn state(vxlan: EncapMode) -> ClusterState {
        let mut s = ClusterState::default();
        let mut spec = IPPoolSpec::new("10.65.0.0/16".parse().unwrap());
        spec.vxlan_mode = vxlan;
        s.pools.insert("p".into(), IPPool::new("p", spec));
        s.nodes.insert(
            "a".into(),
            node("a", "192.168.1.1/24", "10.65.0.0", [0x66, 0, 0, 0, 0, 1]),
        );
        s.nodes.insert(
            "b".into(),
            node("b", "192.168.1.2/24", "10.65.1.0", [0x66, 0, 0, 0, 0, 2]),
        );
        for (cidr, host) in [("10.65.0.0/26", "a"), ("10.65.1.0/26", "b")] {
            s.affinities.insert(cidr.parse().unwrap(), host.to_string());
        }
        s
    }

    #[test]
    fn vxlan_routes_come_from_the_datastore() {
        let s = state(EncapMode::Always);
        let host = host_state(&s, "a", Backend::Vxlan);
        assert_eq!(
            host.local_blocks,
            vec!["10.65.0.0/26".parse::<IpNet>().unwrap()]
        );
        let tunnel = host.vxlan_v4.unwrap();
        assert_eq!(tunnel.address.unwrap().to_string(), "10.65.0.0");
        assert!(host.ipip.is_none());
        let routes = datastore_routes(&s, "a", Backend::Vxlan);
        assert_eq!(routes.len(), 1);
        let r = &routes[&"10.65.1.0/26".parse().unwrap()];
        assert_eq!(r.encap, Encap::Vxlan);
        assert_eq!(r.hops[0].node_ip.to_string(), "192.168.1.2");
        assert_eq!(
            r.hops[0].vtep.as_ref().unwrap().tunnel_ip.to_string(),
            "10.65.1.0"
        );
    }

    #[test]
    fn bgp_routes_take_the_pools_encapsulation_unless_the_pool_is_vxlan() {
        let never = state(EncapMode::Never);
        assert!(datastore_routes(&never, "a", Backend::Bgp).is_empty());
        assert_eq!(bgp_encap(&never.pools["p"]), Some(Encap::None));
        let mut ipip = state(EncapMode::Never);
        if let Some(p) = ipip.pools.get_mut("p") {
            p.spec.ipip_mode = EncapMode::CrossSubnet;
        }
        assert_eq!(bgp_encap(&ipip.pools["p"]), Some(Encap::IpipCrossSubnet));
        assert!(host_state(&ipip, "a", Backend::Bgp).ipip.is_some());
        // A VXLAN pool: BGP's copy is ignored, the datastore route is used.
        let vxlan = state(EncapMode::CrossSubnet);
        assert_eq!(bgp_encap(&vxlan.pools["p"]), None);
        let routes = datastore_routes(&vxlan, "a", Backend::Bgp);
        assert_eq!(
            routes[&"10.65.1.0/26".parse().unwrap()].encap,
            Encap::VxlanCrossSubnet
        );
    }

    #[test]
    fn changes_name_only_what_differs() {
        let before = datastore_routes(&state(EncapMode::Always), "a", Backend::Vxlan);
        let mut s = state(EncapMode::Always);
        s.nodes.insert(
            "c".into(),
            node("c", "192.168.1.3/24", "10.65.2.0", [0x66, 0, 0, 0, 0, 3]),
        );
        s.affinities
            .insert("10.65.2.0/26".parse().unwrap(), "c".to_string());
        s.affinities.remove(&"10.65.1.0/26".parse().unwrap());
        let after = datastore_routes(&s, "a", Backend::Vxlan);
        let changes = route_changes(&before, &after);
        let summary: Vec<(String, bool)> = changes
            .iter()
            .map(|(d, r)| (d.to_string(), r.is_some()))
            .collect();
        assert_eq!(
            summary,
            [
                ("10.65.1.0/26".to_string(), false),
                ("10.65.2.0/26".to_string(), true)
            ]
        );
        assert!(route_changes(&after, &after).is_empty());
    }

    /// `state` plus node c, and c using 10.65.0.5 from a's block.
    fn borrowing_state(vxlan: EncapMode) -> ClusterState {
        let mut s = state(vxlan);
        s.nodes.insert(
            "c".into(),
            node("c", "192.168.1.3/24", "10.65.2.0", [0x66, 0, 0, 0, 0, 3]),
        );
        let cidr: IpNet = "10.65.0.0/26".parse().unwrap();
        let mut block =
            calyx_datastore::resources::ipam::AllocationBlock::new_affine(cidr, "a").unwrap();
        for (ordinal, user) in [(1usize, "a"), (5, "c")] {
            let mut secondary = BTreeMap::new();
            secondary.insert("node".to_string(), user.to_string());
            block
                .attributes
                .push(calyx_datastore::resources::ipam::AllocationAttribute {
                    handle_id: Some(format!("h{ordinal}")),
                    secondary,
                });
            block.allocations[ordinal] = Some(block.attributes.len() - 1);
        }
        s.borrowed.put(
            &calyx_datastore::resources::ipam::block_key(&cidr),
            &serde_json::to_vec(&block).unwrap(),
        );
        s
    }

    #[test]
    fn borrowed_addresses_are_routed_to_the_vtep_of_the_node_using_them() {
        let s = borrowing_state(EncapMode::Always);
        let ip: IpAddr = "10.65.0.5".parse().unwrap();
        // On b (a third node) and on a (the block's owner): a /32 to c's VTEP, over a's block.
        for me in ["a", "b"] {
            let r = borrowed_route(&s, me, Backend::Vxlan, ip).unwrap();
            assert_eq!(r.dst.to_string(), "10.65.0.5/32");
            assert_eq!(r.hops[0].node_ip.to_string(), "192.168.1.3");
            let all = borrowed_routes(&s, me, Backend::Vxlan);
            assert_eq!(all.len(), 1);
        }
        // On c itself the pod's own interface route serves it.
        assert!(borrowed_route(&s, "c", Backend::Vxlan, ip).is_none());
        // a's own allocation is not borrowed.
        assert!(borrowed_route(&s, "b", Backend::Vxlan, "10.65.0.1".parse().unwrap()).is_none());
        // Not a VXLAN pool: BGP carries c's /32 instead.
        let bgp = borrowing_state(EncapMode::Never);
        assert!(borrowed_route(&bgp, "b", Backend::Bgp, ip).is_none());
        assert!(borrowed_route(&s, "b", Backend::None, ip).is_none());
    }

    #[test]
    fn ipv6_vxlan_blocks_go_to_the_ipv6_vtep() {
        let mut s = state(EncapMode::Always);
        let mut spec = IPPoolSpec::new("fd10::/64".parse().unwrap());
        spec.vxlan_mode = EncapMode::Always;
        s.pools.insert("p6".into(), IPPool::new("p6", spec));
        for (name, last) in [("a", 1u8), ("b", 2)] {
            let n = s.nodes.get_mut(name).unwrap();
            if let Some(bgp) = n.spec.bgp.as_mut() {
                bgp.ipv6_address = Some(format!("fd00::{last}/64").parse().unwrap());
            }
            n.spec.ipv6_vxlan_tunnel_addr = Some(format!("fd10::{last}:0").parse().unwrap());
            n.spec.vxlan_tunnel_mac_addr_v6 = Some(DsMac([0x66, 6, 0, 0, 0, last]));
        }
        s.affinities
            .insert("fd10::2:0/122".parse().unwrap(), "b".to_string());
        let host = host_state(&s, "a", Backend::Vxlan);
        let v6 = host.vxlan_v6.expect("vxlan-v6.calico wanted");
        assert_eq!(v6.address.unwrap().to_string(), "fd10::1:0");
        assert!(host.vxlan_v4.is_some());
        let routes = datastore_routes(&s, "a", Backend::Vxlan);
        let r = &routes[&"fd10::2:0/122".parse().unwrap()];
        assert_eq!(r.encap, Encap::Vxlan);
        assert_eq!(r.hops[0].node_ip.to_string(), "fd00::2");
        let vtep = r.hops[0].vtep.as_ref().unwrap();
        assert_eq!(vtep.tunnel_ip.to_string(), "fd10::2:0");
        assert_eq!(vtep.mac.0, [0x66, 6, 0, 0, 0, 2]);
        // The IPv4 block still goes to the IPv4 VTEP.
        assert_eq!(
            routes[&"10.65.1.0/26".parse().unwrap()].hops[0]
                .node_ip
                .to_string(),
            "192.168.1.2"
        );
        // Without an IPv6 address the node gets no IPv6 device.
        if let Some(bgp) = s.nodes.get_mut("a").unwrap().spec.bgp.as_mut() {
            bgp.ipv6_address = None;
        }
        assert!(host_state(&s, "a", Backend::Vxlan).vxlan_v6.is_none());
        assert!(needs_blocks(&s, Backend::Vxlan));
    }

    #[test]
    fn backend_none_programs_nothing() {
        let s = state(EncapMode::Always);
        let host = host_state(&s, "a", Backend::None);
        assert!(host.local_blocks.is_empty() && host.vxlan_v4.is_none());
        assert!(datastore_routes(&s, "a", Backend::None).is_empty());
    }
}
