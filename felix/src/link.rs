//! Tunnel devices (`tunl0`, `vxlan.calico`, `vxlan-v6.calico`), their addresses, the underlay
//! lookup, and the permanent neighbour / FDB entries on the VXLAN devices.
//!
//! Message builders and comparisons are pure and unit-tested; the `ensure_*` functions drive
//! them over an [`NlSocket`].

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::model::MacAddr;
use crate::nl::{decode, NlFailure, NlSocket};
use crate::wire::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};

/// What the kernel says about one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`"vxlan"`, `"ipip"`, ...).
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// Administratively up.
    pub up: bool,
    /// VXLAN parameters, for a VXLAN device.
    pub vxlan: Option<VxlanParams>,
}

/// The VXLAN parameters that can only be set at creation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanParams {
    /// VNI.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Parent (underlay) interface index.
    pub parent: u32,
    /// Local (source) address.
    pub local: Option<IpAddr>,
}

/// A VXLAN device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanWant {
    /// Device name.
    pub name: String,
    /// Creation-time parameters.
    pub params: VxlanParams,
    /// MAC (the node's VTEP MAC).
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Tunnel address (host prefix).
    pub address: Option<IpAddr>,
}

/// Parses a link message.
pub fn link_state(m: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(v) => s.mtu = *v,
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(b);
                s.mac = Some(MacAddr(mac));
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => s.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut p = VxlanParams::default();
                            for x in v {
                                match x {
                                    InfoVxlan::Id(id) => p.vni = *id,
                                    InfoVxlan::Port(port) => p.port = *port,
                                    InfoVxlan::Link(l) => p.parent = *l,
                                    InfoVxlan::Local(a) => p.local = Some(IpAddr::V4(*a)),
                                    InfoVxlan::Local6(a) => p.local = Some(IpAddr::V6(*a)),
                                    _ => {}
                                }
                            }
                            s.vxlan = Some(p);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// Whether an existing device must be deleted and re-created to become `want`.
pub fn vxlan_needs_recreate(have: &LinkState, want: &VxlanWant) -> bool {
    have.kind.as_deref() != Some("vxlan") || have.vxlan.as_ref() != Some(&want.params)
}

/// `ip link add NAME mtu M address MAC type vxlan id VNI dstport PORT dev PARENT local IP
/// nolearning`.
pub fn vxlan_create_msg(want: &VxlanWant) -> LinkMessage {
    let mut data = vec![
        InfoVxlan::Id(want.params.vni),
        InfoVxlan::Port(want.params.port),
        InfoVxlan::Link(want.params.parent),
        InfoVxlan::Learning(false),
    ];
    match want.params.local {
        Some(IpAddr::V4(a)) => data.push(InfoVxlan::Local(a)),
        Some(IpAddr::V6(a)) => data.push(InfoVxlan::Local6(a)),
        None => {}
    }
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(want.name.clone()),
        LinkAttribute::Mtu(want.mtu),
        LinkAttribute::Address(want.mac.0.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]),
    ];
    m
}

/// `ip link add tunl0 type ipip` (normally the kernel creates `tunl0` with the module).
pub fn ipip_create_msg(mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(crate::config::IPIP_DEVICE.into()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::IpIp)]),
    ];
    m
}

/// `ip link set dev INDEX [mtu M] [address MAC] up|down` in one message.
pub fn link_set_msg(index: u32, mtu: Option<u32>, mac: Option<MacAddr>, up: bool) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    m
}

/// `ip addr add IP/host dev INDEX`.
pub fn addr_msg(index: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
    m
}

/// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
pub fn neigh_msg(index: u32, ip: IpAddr, mac: MacAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes = vec![
        NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }),
        NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
    ];
    m
}

/// `bridge fdb replace MAC dev INDEX dst IP self permanent`.
pub fn fdb_msg(index: u32, mac: MacAddr, dst: Option<IpAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes = vec![NeighbourAttribute::LinkLayerAddress(mac.0.to_vec())];
    if let Some(ip) = dst {
        let bytes = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                bytes,
            )));
    }
    m
}

fn fail(what: &str, f: NlFailure) -> String {
    format!("{what}: {}", f.describe())
}

/// Looks a device up by name.
pub fn get_link(nl: &mut NlSocket, name: &str) -> io::Result<Option<LinkState>> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    get_link_msg(nl, m)
}

/// Looks a device up by index.
pub fn get_link_by_index(nl: &mut NlSocket, index: u32) -> io::Result<Option<LinkState>> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    get_link_msg(nl, m)
}

fn get_link_msg(nl: &mut NlSocket, m: LinkMessage) -> io::Result<Option<LinkState>> {
    let mut out = None;
    let r = nl.dump(
        |buf, seq| {
            crate::nl::emit(
                buf,
                RouteNetlinkMessage::GetLink(m),
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
            )
        },
        |raw| {
            if let Some(RouteNetlinkMessage::NewLink(l)) = decode(&raw) {
                out = Some(link_state(&l));
            }
        },
    );
    match r {
        Ok(()) => Ok(out),
        // ENODEV: no such device.
        Err(e) if e.to_string().contains("No such device") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Addresses on interface `index` of one family: `(address, prefix length)`.
pub fn addresses(nl: &mut NlSocket, index: Option<u32>, v6: bool) -> io::Result<Vec<(u32, IpNet)>> {
    let mut req = AddressMessage::default();
    req.header.family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    if let Some(i) = index {
        req.header.index = i;
    }
    let mut out = Vec::new();
    nl.dump_msg(RouteNetlinkMessage::GetAddress(req), |raw| {
        if let Some(RouteNetlinkMessage::NewAddress(a)) = decode(&raw) {
            if index.is_some_and(|i| i != a.header.index) {
                return;
            }
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push((a.header.index, net));
                }
            }
        }
    })?;
    Ok(out)
}

/// Makes the addresses of family `v6` on `index` exactly `want` (a host prefix), leaving
/// IPv6 link-local addresses alone.
pub fn ensure_address(
    nl: &mut NlSocket,
    index: u32,
    v6: bool,
    want: Option<IpAddr>,
) -> Result<(), String> {
    let have = addresses(nl, Some(index), v6).map_err(|e| e.to_string())?;
    let host = |ip: IpAddr| if ip.is_ipv4() { 32 } else { 128 };
    let mut present = false;
    for (_, net) in have {
        if let IpNet::V6(n) = net {
            if n.addr().segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
        }
        if Some(net.addr()) == want && net.prefix_len() == host(net.addr()) {
            present = true;
            continue;
        }
        nl.request(
            RouteNetlinkMessage::DelAddress(addr_msg(index, net.addr(), net.prefix_len())),
            0,
        )
        .map_err(|f| fail("address delete", f))?;
    }
    if let (Some(ip), false) = (want, present) {
        nl.request(
            RouteNetlinkMessage::NewAddress(addr_msg(index, ip, host(ip))),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|f| fail("address add", f))?;
    }
    Ok(())
}

/// Creates or updates a VXLAN device; returns its index.
pub fn ensure_vxlan(nl: &mut NlSocket, want: &VxlanWant) -> Result<u32, String> {
    let mut have = get_link(nl, &want.name).map_err(|e| e.to_string())?;
    if let Some(h) = &have {
        if vxlan_needs_recreate(h, want) {
            tracing::info!(device = %want.name, "re-creating VXLAN device with new parameters");
            delete_link(nl, h.index)?;
            have = None;
        }
    }
    let index = match have {
        Some(h) => {
            let mtu = (h.mtu != want.mtu).then_some(want.mtu);
            let mac = (h.mac != Some(want.mac)).then_some(want.mac);
            if mtu.is_some() || mac.is_some() || !h.up {
                nl.request(
                    RouteNetlinkMessage::SetLink(link_set_msg(h.index, mtu, mac, true)),
                    0,
                )
                .map_err(|f| fail("link update", f))?;
            }
            h.index
        }
        None => {
            nl.request(
                RouteNetlinkMessage::NewLink(vxlan_create_msg(want)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|f| fail(&format!("create {}", want.name), f))?;
            let h = get_link(nl, &want.name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} vanished after creation", want.name))?;
            nl.request(
                RouteNetlinkMessage::SetLink(link_set_msg(h.index, None, None, true)),
                0,
            )
            .map_err(|f| fail("link up", f))?;
            h.index
        }
    };
    let v6 = matches!(want.params.local, Some(IpAddr::V6(_)));
    ensure_address(nl, index, v6, want.address)?;
    Ok(index)
}

/// Creates (if needed) and configures `tunl0`; returns its index.
pub fn ensure_ipip(nl: &mut NlSocket, mtu: u32, address: Option<IpAddr>) -> Result<u32, String> {
    let have = get_link(nl, crate::config::IPIP_DEVICE).map_err(|e| e.to_string())?;
    let h = match have {
        Some(h) => h,
        None => {
            nl.request(
                RouteNetlinkMessage::NewLink(ipip_create_msg(mtu)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|f| fail("create tunl0 (IPIP support missing in this kernel?)", f))?;
            get_link(nl, crate::config::IPIP_DEVICE)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "tunl0 vanished after creation".to_string())?
        }
    };
    if h.mtu != mtu || !h.up {
        nl.request(
            RouteNetlinkMessage::SetLink(link_set_msg(h.index, Some(mtu), None, true)),
            0,
        )
        .map_err(|f| fail("tunl0 update", f))?;
    }
    ensure_address(nl, h.index, false, address)?;
    Ok(h.index)
}

/// When no pool uses IPIP: `tunl0` (which the kernel may refuse to delete) loses its
/// addresses and goes down.
pub fn disable_ipip(nl: &mut NlSocket) -> Result<(), String> {
    if let Some(h) = get_link(nl, crate::config::IPIP_DEVICE).map_err(|e| e.to_string())? {
        ensure_address(nl, h.index, false, None)?;
        if h.up {
            nl.request(
                RouteNetlinkMessage::SetLink(link_set_msg(h.index, None, None, false)),
                0,
            )
            .map_err(|f| fail("tunl0 down", f))?;
        }
    }
    Ok(())
}

/// Deletes a device by index (no error if already gone).
pub fn delete_link(nl: &mut NlSocket, index: u32) -> Result<(), String> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match nl.request(RouteNetlinkMessage::DelLink(m), 0) {
        Ok(()) => Ok(()),
        Err(f) if f.errno == libc::ENODEV => Ok(()),
        Err(f) => Err(fail("link delete", f)),
    }
}

/// Deletes a device by name if it exists.
pub fn remove_link_named(nl: &mut NlSocket, name: &str) -> Result<(), String> {
    if let Some(h) = get_link(nl, name).map_err(|e| e.to_string())? {
        delete_link(nl, h.index)?;
    }
    Ok(())
}

fn mac_of(v: &[u8]) -> Option<MacAddr> {
    let a: [u8; 6] = v.try_into().ok()?;
    Some(MacAddr(a))
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

/// Neighbour entries by `(ifindex, ip)`: `(MAC, permanent)`.
pub type NeighbourTable = HashMap<(u32, IpAddr), (Option<MacAddr>, bool)>;

/// Current neighbour entries on the given devices: `(ifindex, ip) -> (mac, permanent)`.
pub fn dump_neighbours(nl: &mut NlSocket, devices: &[u32]) -> io::Result<NeighbourTable> {
    let mut out = HashMap::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        for &dev in devices {
            let mut req = NeighbourMessage::default();
            req.header.family = fam;
            // A strict-checked neighbour dump takes the device as NDA_IFINDEX: with it in the
            // header instead the kernel returns nothing at all.
            req.attributes.push(NeighbourAttribute::IfIndex(dev));
            nl.dump_msg(RouteNetlinkMessage::GetNeighbour(req), |raw| {
                let Some(RouteNetlinkMessage::NewNeighbour(n)) = decode(&raw) else {
                    return;
                };
                if n.header.ifindex != dev {
                    return;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(x)) => {
                            ip = Some(IpAddr::V4(*x))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(x)) => {
                            ip = Some(IpAddr::V6(*x))
                        }
                        NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                        _ => {}
                    }
                }
                if let Some(ip) = ip {
                    let perm = n.header.state == NeighbourState::Permanent;
                    out.insert((dev, ip), (mac, perm));
                }
            })?;
        }
    }
    Ok(out)
}

/// Current unicast FDB entries with a remote address on the given devices.
pub fn dump_fdb(nl: &mut NlSocket, devices: &[u32]) -> io::Result<HashMap<(u32, MacAddr), IpAddr>> {
    let mut out = HashMap::new();
    for &dev in devices {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        req.header.ifindex = dev;
        nl.dump_msg(RouteNetlinkMessage::GetNeighbour(req), |raw| {
            let Some(RouteNetlinkMessage::NewNeighbour(n)) = decode(&raw) else {
                return;
            };
            if n.header.ifindex != dev {
                return;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => ip = ip_of(b),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(x)) => {
                        ip = Some(IpAddr::V4(*x))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(x)) => {
                        ip = Some(IpAddr::V6(*x))
                    }
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                if mac.0[0] & 1 == 0 && mac != MacAddr::default() {
                    out.insert((dev, mac), ip);
                }
            }
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::emit;
    use crate::wire;

    fn roundtrip(msg: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let mut buf = Vec::new();
        emit(&mut buf, msg, NLM_F_REQUEST, 1);
        let raw = wire::messages(&buf).next().unwrap();
        decode(&raw).unwrap()
    }

    fn want() -> VxlanWant {
        VxlanWant {
            name: "vxlan.calico".into(),
            params: VxlanParams {
                vni: 4096,
                port: 4789,
                parent: 2,
                local: Some("192.168.1.10".parse().unwrap()),
            },
            mac: MacAddr([0x66, 1, 2, 3, 4, 5]),
            mtu: 1450,
            address: Some("10.65.0.0".parse().unwrap()),
        }
    }

    #[test]
    fn vxlan_create_message_roundtrips_and_matches() {
        let w = want();
        let RouteNetlinkMessage::NewLink(m) =
            roundtrip(RouteNetlinkMessage::NewLink(vxlan_create_msg(&w)))
        else {
            panic!()
        };
        let s = link_state(&m);
        assert_eq!(s.name, "vxlan.calico");
        assert_eq!(s.mtu, 1450);
        assert_eq!(s.mac, Some(w.mac));
        assert_eq!(s.kind.as_deref(), Some("vxlan"));
        assert_eq!(s.vxlan.as_ref(), Some(&w.params));
        assert!(!vxlan_needs_recreate(&s, &w));
        let mut w2 = w.clone();
        w2.params.vni = 1;
        assert!(vxlan_needs_recreate(&s, &w2));
        let mut w3 = w.clone();
        w3.mtu = 1400; // MTU changes are done in place
        assert!(!vxlan_needs_recreate(&s, &w3));
    }

    #[test]
    fn tunl0_messages() {
        let RouteNetlinkMessage::NewLink(m) =
            roundtrip(RouteNetlinkMessage::NewLink(ipip_create_msg(1480)))
        else {
            panic!()
        };
        let s = link_state(&m);
        assert_eq!(s.name, "tunl0");
        assert_eq!(s.kind.as_deref(), Some("ipip"));
        assert_eq!(s.mtu, 1480);
        let RouteNetlinkMessage::SetLink(m) = roundtrip(RouteNetlinkMessage::SetLink(
            link_set_msg(7, Some(1480), None, true),
        )) else {
            panic!()
        };
        assert_eq!(m.header.index, 7);
        assert!(m.header.flags.contains(LinkFlags::Up));
        assert!(m.header.change_mask.contains(LinkFlags::Up));
        let RouteNetlinkMessage::NewAddress(a) = roundtrip(RouteNetlinkMessage::NewAddress(
            addr_msg(7, "10.65.0.1".parse().unwrap(), 32),
        )) else {
            panic!()
        };
        assert_eq!(a.header.prefix_len, 32);
        assert_eq!(a.header.index, 7);
    }

    #[test]
    fn neighbour_and_fdb_messages() {
        let mac = MacAddr([0x66, 0, 0, 0, 0, 9]);
        let RouteNetlinkMessage::NewNeighbour(n) = roundtrip(RouteNetlinkMessage::NewNeighbour(
            neigh_msg(4, "10.65.3.0".parse().unwrap(), mac),
        )) else {
            panic!()
        };
        assert_eq!(n.header.state, NeighbourState::Permanent);
        assert!(n
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(mac.0.to_vec())));
        let RouteNetlinkMessage::NewNeighbour(f) = roundtrip(RouteNetlinkMessage::NewNeighbour(
            fdb_msg(4, mac, Some("192.168.1.13".parse().unwrap())),
        )) else {
            panic!()
        };
        assert_eq!(f.header.family, AddressFamily::Bridge);
        assert!(f.header.flags.contains(NeighbourFlags::Own));
        assert!(f
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Other(
                vec![192, 168, 1, 13]
            ))));
    }
}

/// One address of a host interface (for node IP autodetection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub index: u32,
    /// Whether the interface is administratively up.
    pub up: bool,
    /// The address with its prefix length.
    pub address: IpNet,
}

/// Every address of one family on the interfaces of this network namespace, in the kernel's
/// order (interface index, then address order).
pub fn interface_addresses(v6: bool) -> io::Result<Vec<InterfaceAddress>> {
    let mut nl = NlSocket::open()?;
    let mut links: HashMap<u32, Option<LinkState>> = HashMap::new();
    let mut out = Vec::new();
    for (index, address) in addresses(&mut nl, None, v6)? {
        if let std::collections::hash_map::Entry::Vacant(slot) = links.entry(index) {
            slot.insert(get_link_by_index(&mut nl, index)?);
        }
        if let Some(Some(link)) = links.get(&index) {
            out.push(InterfaceAddress {
                interface: link.name.clone(),
                index,
                up: link.up,
                address,
            });
        }
    }
    Ok(out)
}
