//! From the datastore snapshot and the BGP best routes to the reconciler's desired state, as
//! Calico's calculation graph does: blackholes for local blocks, VXLAN routes computed from the
//! datastore (block affinities plus each node's VTEP), and BGP-learned routes with the
//! encapsulation of the pool they fall in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_datastore::resources::{EncapMode, IPPool};
use calyx_felix::{
    DesiredState, Encap, IpipTunnel, MacAddr, RemoteHop, RemoteRoute, Vtep, VxlanTunnel,
};
use ipnet::IpNet;

use super::cluster::ClusterState;
use super::config::Backend;

/// BGP best routes: prefix → next hops (several when multipath).
pub type BgpRoutes = BTreeMap<IpNet, Vec<IpAddr>>;

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

/// The dataplane this node should have.
pub fn desired_state(
    state: &ClusterState,
    me: &str,
    backend: Backend,
    bgp: &BgpRoutes,
) -> DesiredState {
    let mut desired = DesiredState::default();
    let Some(node) = state.nodes.get(me) else {
        return desired;
    };
    let bgp_spec = node.spec.bgp.as_ref();
    desired.node_ipv4 = bgp_spec.and_then(|b| b.ipv4_address);
    desired.node_ipv6 = bgp_spec.and_then(|b| b.ipv6_address);
    if backend == Backend::None {
        return desired;
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
            desired.vxlan_v4 = Some(VxlanTunnel::calico(
                MacAddr(mac.0),
                node.spec.ipv4_vxlan_tunnel_addr.map(IpAddr::V4),
            ));
        }
    }
    if v4_pools().any(|p| p.spec.ipip_mode != EncapMode::Never) {
        desired.ipip = Some(IpipTunnel {
            address: bgp_spec.and_then(|b| b.ipv4_ipip_tunnel_addr),
        });
    }

    let mut remote: BTreeMap<IpNet, RemoteRoute> = BTreeMap::new();
    for (cidr, block) in &state.blocks {
        let owner = block.affine_host();
        if owner == Some(me) {
            desired.local_blocks.push(*cidr);
            continue;
        }
        // VXLAN routes come from the datastore: no BGP needed.
        let Some(pool) = state.pool_of(cidr) else {
            continue;
        };
        let Some(encap) = vxlan_encap(pool.spec.vxlan_mode) else {
            continue;
        };
        let Some(peer) = owner.and_then(|o| state.nodes.get(o)) else {
            continue;
        };
        let (Some(node_ip), Some(tunnel_ip), Some(mac)) = (
            peer.spec.bgp.as_ref().and_then(|b| b.ipv4_address),
            peer.spec.ipv4_vxlan_tunnel_addr,
            peer.spec.vxlan_tunnel_mac_addr,
        ) else {
            continue;
        };
        if cidr.addr().is_ipv6() {
            continue;
        }
        remote.insert(
            *cidr,
            RemoteRoute {
                dst: *cidr,
                encap,
                hops: vec![RemoteHop {
                    node_ip: IpAddr::V4(node_ip.addr()),
                    vtep: Some(Vtep {
                        tunnel_ip: IpAddr::V4(tunnel_ip),
                        mac: MacAddr(mac.0),
                    }),
                }],
            },
        );
    }

    if backend == Backend::Bgp {
        for (prefix, hops) in bgp {
            if hops.is_empty()
                || remote.contains_key(prefix)
                || desired.local_blocks.contains(prefix)
            {
                continue;
            }
            let pool = state.pool_of(prefix);
            // Blocks of VXLAN pools are routed from the datastore above.
            if pool.is_some_and(is_vxlan) {
                continue;
            }
            let encap = pool.map_or(Encap::None, |p| ipip_encap(p.spec.ipip_mode));
            remote.insert(
                *prefix,
                RemoteRoute {
                    dst: *prefix,
                    encap,
                    hops: hops.iter().map(|ip| RemoteHop::node(*ip)).collect(),
                },
            );
        }
    }
    desired.remote_routes = remote.into_values().collect();
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use calyx_datastore::resources::ipam::AllocationBlock;
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
            let block = AllocationBlock::new_affine(cidr.parse().unwrap(), host).unwrap();
            s.blocks.insert(cidr.parse().unwrap(), block);
        }
        s
    }

    #[test]
    fn vxlan_routes_come_from_the_datastore() {
        let d = desired_state(
            &state(EncapMode::Always),
            "a",
            Backend::Vxlan,
            &BgpRoutes::new(),
        );
        assert_eq!(
            d.local_blocks,
            vec!["10.65.0.0/26".parse::<IpNet>().unwrap()]
        );
        assert_eq!(d.remote_routes.len(), 1);
        let r = &d.remote_routes[0];
        assert_eq!(r.dst.to_string(), "10.65.1.0/26");
        assert_eq!(r.encap, Encap::Vxlan);
        assert_eq!(r.hops[0].node_ip.to_string(), "192.168.1.2");
        assert_eq!(
            r.hops[0].vtep.as_ref().unwrap().tunnel_ip.to_string(),
            "10.65.1.0"
        );
        let tunnel = d.vxlan_v4.unwrap();
        assert_eq!(tunnel.address.unwrap().to_string(), "10.65.0.0");
        assert!(d.ipip.is_none());
    }

    #[test]
    fn bgp_routes_are_used_for_pools_without_vxlan() {
        let mut bgp = BgpRoutes::new();
        bgp.insert(
            "10.65.1.0/26".parse().unwrap(),
            vec!["192.168.1.2".parse().unwrap()],
        );
        bgp.insert(
            "0.0.0.0/0".parse().unwrap(),
            vec!["192.168.1.254".parse().unwrap()],
        );
        // Our own block echoed back by a reflector must not become a remote route.
        bgp.insert(
            "10.65.0.0/26".parse().unwrap(),
            vec!["192.168.1.3".parse().unwrap()],
        );
        let d = desired_state(&state(EncapMode::Never), "a", Backend::Bgp, &bgp);
        let dsts: Vec<String> = d.remote_routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "10.65.1.0/26"]);
        assert!(d.remote_routes.iter().all(|r| r.encap == Encap::None));
        assert!(d.vxlan_v4.is_none());

        // The same pool switched to VXLAN: the datastore route wins, BGP's is ignored.
        let d = desired_state(&state(EncapMode::CrossSubnet), "a", Backend::Bgp, &bgp);
        let block = d
            .remote_routes
            .iter()
            .find(|r| r.dst.to_string() == "10.65.1.0/26")
            .unwrap();
        assert_eq!(block.encap, Encap::VxlanCrossSubnet);
    }

    #[test]
    fn backend_none_programs_nothing() {
        let d = desired_state(
            &state(EncapMode::Always),
            "a",
            Backend::None,
            &BgpRoutes::new(),
        );
        assert!(d.local_blocks.is_empty() && d.remote_routes.is_empty() && d.vxlan_v4.is_none());
    }
}
