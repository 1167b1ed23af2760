//! Devices and L2 entries: the underlay, `tunl0`, `vxlan.calico` / `vxlan-v6.calico`, and the
//! permanent neighbour and FDB entries on the VXLAN devices. Few objects and rare changes, so
//! each pass here is level-triggered over all of them.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;

use crate::config::{Config, VXLAN_V4_DEVICE, VXLAN_V6_DEVICE};
use crate::link::{self, VxlanParams, VxlanWant};
use crate::model::{HostState, MacAddr};
use crate::mtu;
use crate::nl::NlSocket;
use crate::plan::Env;
use crate::wire::{NLM_F_CREATE, NLM_F_REPLACE};

/// Underlay facts for one family.
#[derive(Debug, Clone, Copy, Default)]
struct Underlay {
    index: u32,
    mtu: u32,
    subnet: Option<IpNet>,
    local: Option<IpAddr>,
}

fn underlay(
    nl: &mut NlSocket,
    cfg: &Config,
    host: &HostState,
    v6: bool,
) -> Result<Option<Underlay>, String> {
    let node: Option<IpNet> = if v6 {
        host.node_ipv6.map(IpNet::V6)
    } else {
        host.node_ipv4.map(IpNet::V4)
    };
    let (index, mtu) = if let Some(name) = cfg.underlay_interface.clone() {
        match link::get_link(nl, &name).map_err(|e| e.to_string())? {
            Some(l) => (l.index, l.mtu),
            None => return Err(format!("underlay interface {name} not found")),
        }
    } else {
        let Some(node) = node else {
            return Ok(None);
        };
        let addrs = link::addresses(nl, None, v6).map_err(|e| e.to_string())?;
        let Some((idx, _)) = addrs.iter().find(|(_, n)| n.addr() == node.addr()) else {
            return Err(format!(
                "no interface holds the node address {}",
                node.addr()
            ));
        };
        match link::get_link_by_index(nl, *idx).map_err(|e| e.to_string())? {
            Some(l) => (l.index, l.mtu),
            None => return Err(format!("underlay interface {idx} vanished")),
        }
    };
    // The local subnet: from the node address if it carries a prefix, else the kernel's.
    let mut subnet = node
        .filter(|n| n.prefix_len() < n.max_prefix_len())
        .map(|n| n.trunc());
    let mut local = node.map(|n| n.addr());
    if subnet.is_none() || local.is_none() {
        let addrs = link::addresses(nl, Some(index), v6).map_err(|e| e.to_string())?;
        let found = addrs.iter().map(|(_, n)| *n).find(|n| match local {
            Some(ip) => n.addr() == ip,
            None => !matches!(n, IpNet::V6(a) if a.addr().segments()[0] & 0xffc0 == 0xfe80),
        });
        if let Some(n) = found {
            local = local.or(Some(n.addr()));
            if subnet.is_none() && n.prefix_len() < n.max_prefix_len() {
                subnet = Some(n.trunc());
            }
        }
    }
    Ok(Some(Underlay {
        index,
        mtu,
        subnet,
        local,
    }))
}

/// Brings devices in line; returns the resulting environment and the problems met.
pub(crate) fn reconcile_links(
    nl: &mut NlSocket,
    cfg: &Config,
    host: &HostState,
) -> (Env, Vec<String>) {
    let mut env = Env {
        table: cfg.table,
        metric: cfg.metric,
        ..Default::default()
    };
    let mut errors = Vec::new();
    let mut under = [None, None];
    for (i, v6) in [false, true].into_iter().enumerate() {
        match underlay(nl, cfg, host, v6) {
            Ok(u) => under[i] = u,
            Err(e) => errors.push(e),
        }
    }
    let [u4, u6] = under;
    env.underlay_v4 = u4.map(|u| u.index);
    env.underlay_v6 = u6.map(|u| u.index);
    env.subnet_v4 = u4.and_then(|u| match u.subnet {
        Some(IpNet::V4(n)) => Some(n),
        _ => None,
    });
    env.subnet_v6 = u6.and_then(|u| match u.subnet {
        Some(IpNet::V6(n)) => Some(n),
        _ => None,
    });
    let desired = host;
    // IPIP
    if let Some(ipip) = &desired.ipip {
        let m = mtu::tunnel_mtu(cfg.ipip_mtu, u4.map(|u| u.mtu), mtu::IPIP_OVERHEAD);
        match link::ensure_ipip(nl, m, ipip.address.map(IpAddr::V4)) {
            Ok(i) => env.tunl0 = Some(i),
            Err(e) => errors.push(e),
        }
    } else if let Err(e) = link::disable_ipip(nl) {
        errors.push(e);
    }
    // VXLAN
    let vx = [
        (
            &desired.vxlan_v4,
            u4,
            VXLAN_V4_DEVICE,
            cfg.vxlan_mtu,
            mtu::VXLAN_V4_OVERHEAD,
        ),
        (
            &desired.vxlan_v6,
            u6,
            VXLAN_V6_DEVICE,
            cfg.vxlan_v6_mtu,
            mtu::VXLAN_V6_OVERHEAD,
        ),
    ];
    let mut idx = [None, None];
    for (i, (want, under, name, mtu_cfg, overhead)) in vx.into_iter().enumerate() {
        match (want, under) {
            (Some(t), Some(u)) => {
                let w = VxlanWant {
                    name: name.to_string(),
                    params: VxlanParams {
                        vni: t.vni,
                        port: t.port,
                        parent: u.index,
                        local: u.local,
                    },
                    mac: t.mac,
                    mtu: mtu::tunnel_mtu(mtu_cfg, Some(u.mtu), overhead),
                    address: t.address,
                };
                match link::ensure_vxlan(nl, &w) {
                    Ok(ix) => idx[i] = Some(ix),
                    Err(e) => errors.push(e),
                }
            }
            (Some(_), None) => errors.push(format!("{name}: underlay interface unknown")),
            (None, _) => {
                if let Err(e) = link::remove_link_named(nl, name) {
                    errors.push(e);
                }
            }
        }
    }
    env.vxlan_v4 = idx[0];
    env.vxlan_v6 = idx[1];
    for e in &errors {
        tracing::warn!(error = %e, "dataplane device problem");
    }
    (env, errors)
}

/// Makes the permanent neighbour and FDB entries on the VXLAN devices of `env` exactly
/// `neighbours` and `fdb` (dumps both tables: run it when the wanted set changed or on a
/// full resync only).
pub(crate) fn reconcile_l2(
    nl: &mut NlSocket,
    env: &Env,
    neighbours: &HashMap<(u32, IpAddr), MacAddr>,
    fdb: &HashMap<(u32, MacAddr), IpAddr>,
) -> Result<(), String> {
    let devices: Vec<u32> = [env.vxlan_v4, env.vxlan_v6].into_iter().flatten().collect();
    let have_n = link::dump_neighbours(nl, &devices).map_err(|e| e.to_string())?;
    let have_f = link::dump_fdb(nl, &devices).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    // FDB first, so that a neighbour's MAC already leads somewhere.
    for (&(dev, mac), &ip) in fdb {
        if have_f.get(&(dev, mac)) != Some(&ip) {
            if let Err(f) = nl.request(
                RouteNetlinkMessage::NewNeighbour(link::fdb_msg(dev, mac, Some(ip))),
                NLM_F_CREATE | NLM_F_REPLACE,
            ) {
                errors.push(format!("fdb {mac} -> {ip}: {}", f.describe()));
            }
        }
    }
    for (&(dev, mac), _) in have_f.iter() {
        if !fdb.contains_key(&(dev, mac)) {
            if let Err(f) = nl.request(
                RouteNetlinkMessage::DelNeighbour(link::fdb_msg(dev, mac, None)),
                0,
            ) {
                // Gone already is fine.
                if f.errno != libc::ENOENT {
                    errors.push(format!("fdb {mac} removal: {}", f.describe()));
                }
            }
        }
    }
    for (&(dev, ip), &mac) in neighbours {
        if have_n.get(&(dev, ip)) != Some(&(Some(mac), true)) {
            if let Err(f) = nl.request(
                RouteNetlinkMessage::NewNeighbour(link::neigh_msg(dev, ip, mac)),
                NLM_F_CREATE | NLM_F_REPLACE,
            ) {
                errors.push(format!("neighbour {ip} -> {mac}: {}", f.describe()));
            }
        }
    }
    for (&(dev, ip), &(mac, perm)) in have_n.iter() {
        if perm && !neighbours.contains_key(&(dev, ip)) {
            if let Err(f) = nl.request(
                RouteNetlinkMessage::DelNeighbour(link::neigh_msg(
                    dev,
                    ip,
                    mac.unwrap_or_default(),
                )),
                0,
            ) {
                if f.errno != libc::ENOENT {
                    errors.push(format!("neighbour {ip} removal: {}", f.describe()));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
