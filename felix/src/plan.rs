//! From the desired state plus what is known about local devices to the exact kernel objects
//! (routes, neighbour and FDB entries). Pure: no I/O.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::fasthash::FastMap;
use crate::model::{DesiredState, Encap, MacAddr, RemoteHop};
use crate::route::{NextHop, RouteKey, RouteSpec};

/// Local facts the plan depends on: table, metric, interface indexes and local subnets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// Managed table.
    pub table: u32,
    /// Route metric from the configuration.
    pub metric: u32,
    /// Underlay interface for IPv4 next hops.
    pub underlay_v4: Option<u32>,
    /// Underlay interface for IPv6 next hops.
    pub underlay_v6: Option<u32>,
    /// `tunl0`, when it exists and is up to date.
    pub tunl0: Option<u32>,
    /// `vxlan.calico`, when it exists.
    pub vxlan_v4: Option<u32>,
    /// `vxlan-v6.calico`, when it exists.
    pub vxlan_v6: Option<u32>,
    /// This node's IPv4 subnet (CrossSubnet).
    pub subnet_v4: Option<Ipv4Net>,
    /// This node's IPv6 subnet (CrossSubnet).
    pub subnet_v6: Option<Ipv6Net>,
}

/// The kernel objects to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes by key.
    pub routes: FastMap<RouteKey, RouteSpec>,
    /// Desired destinations that cannot be programmed now, with the reason (a device is
    /// missing, VTEP unknown, ...). Retried when devices change.
    pub blocked: HashMap<IpNet, String>,
    /// Permanent neighbour entries `(ifindex, tunnel IP) -> VTEP MAC`.
    pub neighbours: HashMap<(u32, IpAddr), MacAddr>,
    /// Permanent FDB entries `(ifindex, VTEP MAC) -> remote node IP`.
    pub fdb: HashMap<(u32, MacAddr), IpAddr>,
}

/// Whether the remote node needs the tunnel: always for IPIP/VXLAN, for the CrossSubnet modes
/// only when `node_ip` lies outside the local subnet (an unknown subnet counts as outside).
pub fn needs_encap(encap: Encap, node_ip: IpAddr, env: &Env) -> bool {
    match encap {
        Encap::None => false,
        Encap::Ipip | Encap::Vxlan => true,
        Encap::IpipCrossSubnet | Encap::VxlanCrossSubnet => !same_subnet(node_ip, env),
    }
}

fn same_subnet(ip: IpAddr, env: &Env) -> bool {
    match ip {
        IpAddr::V4(a) => env.subnet_v4.is_some_and(|n| n.contains(&a)),
        IpAddr::V6(a) => env.subnet_v6.is_some_and(|n| n.contains(&a)),
    }
}

/// The metric as the kernel reports it (IPv6 turns 0 into 1024).
pub fn effective_metric(dst: &IpNet, metric: u32) -> u32 {
    match dst {
        IpNet::V6(_) if metric == 0 => 1024,
        _ => metric,
    }
}

impl Plan {
    /// Compiles `desired` under `env`.
    pub fn compile(desired: &DesiredState, env: &Env) -> Plan {
        let mut plan = Plan::default();
        plan.routes
            .reserve(desired.local_blocks.len() + desired.remote_routes.len());
        let key = |dst: IpNet| RouteKey {
            table: env.table,
            dst: dst.trunc(),
            metric: effective_metric(&dst, env.metric),
        };
        // Remote routes first; several hops or duplicates of one destination become ECMP.
        for r in &desired.remote_routes {
            let dst = r.dst.trunc();
            for hop in &r.hops {
                match resolve_hop(r.encap, dst, hop, env) {
                    Ok((nh, l2)) => {
                        if let Some((ifi, vtep, node)) = l2 {
                            plan.neighbours.insert((ifi, vtep.tunnel_ip), vtep.mac);
                            plan.fdb.insert((ifi, vtep.mac), node);
                        }
                        match plan.routes.entry(key(dst)) {
                            Entry::Vacant(v) => {
                                v.insert(RouteSpec::Via(nh));
                            }
                            Entry::Occupied(mut o) => {
                                let mut hops = o.get().hops().to_vec();
                                hops.push(nh);
                                if let Some(spec) = RouteSpec::unicast(hops) {
                                    o.insert(spec);
                                }
                            }
                        }
                    }
                    Err(why) => {
                        plan.blocked.insert(dst, why);
                    }
                }
            }
        }
        if !plan.blocked.is_empty() {
            let routes = &plan.routes;
            plan.blocked
                .retain(|dst, _| !routes.contains_key(&key(*dst)));
        }
        // A local block wins over a remote route of the same destination.
        for b in &desired.local_blocks {
            plan.blocked.remove(&b.trunc());
            plan.routes.insert(key(*b), RouteSpec::Blackhole);
        }
        plan
    }
}

/// The L2 entries a VXLAN hop needs: `(device, VTEP, remote node IP)`.
pub(crate) type L2 = Option<(u32, crate::model::Vtep, IpAddr)>;

/// The kernel key of destination `dst` (truncated) under `env`.
pub(crate) fn route_key(dst: IpNet, env: &Env) -> RouteKey {
    RouteKey {
        table: env.table,
        dst: dst.trunc(),
        metric: effective_metric(&dst, env.metric),
    }
}

/// One hop of a remote route under `env`: the kernel next hop and the L2 entries it needs, or
/// why it cannot be programmed now.
pub(crate) fn resolve_hop(
    encap: Encap,
    dst: IpNet,
    hop: &RemoteHop,
    env: &Env,
) -> Result<(NextHop, L2), String> {
    let v6 = matches!(dst, IpNet::V6(_));
    if v6 != hop.node_ip.is_ipv6() {
        return Err(format!(
            "next hop {} is not of the family of {dst}",
            hop.node_ip
        ));
    }
    if !needs_encap(encap, hop.node_ip, env) {
        let oif = if v6 { env.underlay_v6 } else { env.underlay_v4 };
        let oif = oif.ok_or_else(|| "underlay interface not found".to_string())?;
        return Ok((
            NextHop {
                gateway: hop.node_ip,
                oif,
                onlink: false,
            },
            None,
        ));
    }
    if encap.uses_ipip() {
        if v6 {
            return Err("IPIP carries IPv4 only".into());
        }
        let oif = env
            .tunl0
            .ok_or_else(|| "tunl0 missing (IPIP unavailable or not configured)".to_string())?;
        return Ok((
            NextHop {
                gateway: hop.node_ip,
                oif,
                onlink: true,
            },
            None,
        ));
    }
    let (dev, name) = if v6 {
        (env.vxlan_v6, crate::config::VXLAN_V6_DEVICE)
    } else {
        (env.vxlan_v4, crate::config::VXLAN_V4_DEVICE)
    };
    let oif = dev.ok_or_else(|| format!("{name} missing"))?;
    let vtep = hop
        .vtep
        .ok_or_else(|| format!("no VTEP known for node {}", hop.node_ip))?;
    if vtep.tunnel_ip.is_ipv6() != v6 {
        return Err(format!(
            "VTEP tunnel address {} of the wrong family",
            vtep.tunnel_ip
        ));
    }
    Ok((
        NextHop {
            gateway: vtep.tunnel_ip,
            oif,
            onlink: true,
        },
        Some((oif, vtep, hop.node_ip)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RemoteRoute, Vtep};

    fn env() -> Env {
        Env {
            table: 254,
            metric: 0,
            underlay_v4: Some(2),
            underlay_v6: Some(2),
            tunl0: Some(3),
            vxlan_v4: Some(4),
            vxlan_v6: Some(5),
            subnet_v4: Some("192.168.1.0/24".parse().unwrap()),
            subnet_v6: Some("fd00:1::/64".parse().unwrap()),
        }
    }

    fn vtep(ip: &str, last: u8) -> Vtep {
        Vtep {
            tunnel_ip: ip.parse().unwrap(),
            mac: MacAddr([0x66, 0, 0, 0, 0, last]),
        }
    }

    fn rr(dst: &str, encap: Encap, hops: &[(&str, Option<Vtep>)]) -> RemoteRoute {
        RemoteRoute {
            dst: dst.parse().unwrap(),
            encap,
            hops: hops
                .iter()
                .map(|(ip, v)| RemoteHop {
                    node_ip: ip.parse().unwrap(),
                    vtep: *v,
                })
                .collect(),
        }
    }

    fn spec_of(p: &Plan, dst: &str) -> RouteSpec {
        let dst: IpNet = dst.parse().unwrap();
        let k = RouteKey {
            table: 254,
            dst,
            metric: effective_metric(&dst, 0),
        };
        p.routes.get(&k).cloned().unwrap()
    }

    #[test]
    fn every_kind() {
        let d = DesiredState {
            local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
            remote_routes: vec![
                rr("10.65.1.0/26", Encap::None, &[("192.168.1.11", None)]),
                rr("10.65.2.0/26", Encap::Ipip, &[("192.168.1.12", None)]),
                rr(
                    "10.65.3.0/26",
                    Encap::Vxlan,
                    &[("192.168.1.13", Some(vtep("10.65.3.0", 3)))],
                ),
            ],
            ..Default::default()
        };
        let p = Plan::compile(&d, &env());
        assert_eq!(spec_of(&p, "10.65.0.0/26"), RouteSpec::Blackhole);
        let via = |gw: &str, oif, onlink| {
            RouteSpec::Via(NextHop {
                gateway: gw.parse().unwrap(),
                oif,
                onlink,
            })
        };
        assert_eq!(spec_of(&p, "10.65.1.0/26"), via("192.168.1.11", 2, false));
        assert_eq!(spec_of(&p, "10.65.2.0/26"), via("192.168.1.12", 3, true));
        assert_eq!(spec_of(&p, "10.65.3.0/26"), via("10.65.3.0", 4, true));
        assert_eq!(
            p.neighbours.get(&(4, "10.65.3.0".parse().unwrap())),
            Some(&MacAddr([0x66, 0, 0, 0, 0, 3]))
        );
        assert_eq!(
            p.fdb.get(&(4, MacAddr([0x66, 0, 0, 0, 0, 3]))),
            Some(&"192.168.1.13".parse().unwrap())
        );
        assert!(p.blocked.is_empty());
    }

    #[test]
    fn cross_subnet() {
        let d = DesiredState {
            remote_routes: vec![
                rr(
                    "10.65.1.0/26",
                    Encap::VxlanCrossSubnet,
                    &[("192.168.1.11", Some(vtep("10.65.1.0", 1)))],
                ),
                rr(
                    "10.65.2.0/26",
                    Encap::VxlanCrossSubnet,
                    &[("192.168.2.11", Some(vtep("10.65.2.0", 2)))],
                ),
                rr(
                    "10.65.3.0/26",
                    Encap::IpipCrossSubnet,
                    &[("192.168.1.5", None)],
                ),
                rr(
                    "10.65.4.0/26",
                    Encap::IpipCrossSubnet,
                    &[("10.9.9.9", None)],
                ),
            ],
            ..Default::default()
        };
        let p = Plan::compile(&d, &env());
        assert_eq!(spec_of(&p, "10.65.1.0/26").hops()[0].oif, 2);
        assert_eq!(spec_of(&p, "10.65.2.0/26").hops()[0].oif, 4);
        assert_eq!(spec_of(&p, "10.65.3.0/26").hops()[0].oif, 2);
        assert_eq!(spec_of(&p, "10.65.4.0/26").hops()[0].oif, 3);
        // Only the encapsulated VXLAN node gets L2 entries.
        assert_eq!(p.neighbours.len(), 1);
        assert_eq!(p.fdb.len(), 1);
        // Unknown subnet: cross-subnet is assumed.
        let mut e = env();
        e.subnet_v4 = None;
        let p = Plan::compile(&d, &e);
        assert_eq!(spec_of(&p, "10.65.1.0/26").hops()[0].oif, 4);
    }

    #[test]
    fn ecmp_and_merge() {
        let d = DesiredState {
            remote_routes: vec![
                rr(
                    "10.65.1.0/26",
                    Encap::None,
                    &[("192.168.1.11", None), ("192.168.1.12", None)],
                ),
                rr("10.65.1.0/26", Encap::None, &[("192.168.1.13", None)]),
            ],
            ..Default::default()
        };
        let p = Plan::compile(&d, &env());
        assert_eq!(spec_of(&p, "10.65.1.0/26").hops().len(), 3);
    }

    #[test]
    fn blocked_and_v6() {
        let mut e = env();
        e.tunl0 = None;
        e.vxlan_v6 = None;
        let d = DesiredState {
            local_blocks: vec!["fd00:10::/122".parse().unwrap()],
            remote_routes: vec![
                rr("10.65.2.0/26", Encap::Ipip, &[("192.168.1.12", None)]),
                rr(
                    "fd00:10::40/122",
                    Encap::Vxlan,
                    &[("fd00:1::2", Some(vtep("fd00:10::40", 9)))],
                ),
                rr("10.65.3.0/26", Encap::Vxlan, &[("192.168.1.13", None)]),
                rr("fd00:10::80/122", Encap::None, &[("fd00:1::3", None)]),
            ],
            ..Default::default()
        };
        let p = Plan::compile(&d, &e);
        assert_eq!(p.blocked.len(), 3, "{:?}", p.blocked);
        assert!(p.blocked[&"10.65.3.0/26".parse().unwrap()].contains("VTEP"));
        assert_eq!(spec_of(&p, "fd00:10::/122"), RouteSpec::Blackhole);
        assert_eq!(spec_of(&p, "fd00:10::80/122").hops()[0].oif, 2);
        assert!(p
            .routes
            .keys()
            .all(|k| k.dst.addr().is_ipv4() || k.metric == 1024));
    }
}
