//! Kernel-level route model and its netlink encoding and decoding (hand-written for speed).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::wire::{self, *};

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// `RTN_BLACKHOLE`.
pub const RTN_BLACKHOLE: u8 = 6;
/// `RTNH_F_ONLINK`.
pub const RTNH_F_ONLINK: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTM_F_CLONED: u32 = 0x200;

/// What identifies one route in the kernel (per family): table, destination, metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Routing table id.
    pub table: u32,
    /// Destination prefix.
    pub dst: IpNet,
    /// Metric (`RTA_PRIORITY`).
    pub metric: u32,
}

/// One next hop as the kernel stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// Gateway address.
    pub gateway: IpAddr,
    /// Output interface index.
    pub oif: u32,
    /// `onlink`: the gateway is reachable on `oif` without a covering route.
    pub onlink: bool,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteSpec {
    /// `blackhole <dst>`.
    Blackhole,
    /// One next hop.
    Via(NextHop),
    /// Several next hops (sorted, at least two).
    Multipath(Vec<NextHop>),
    /// A route of a shape this crate never writes (seen in the kernel under our protocol).
    Unsupported,
}

impl RouteSpec {
    /// Builds a unicast spec from next hops: sorts and deduplicates, one hop gives `Via`.
    /// Returns `None` for an empty list.
    pub fn unicast(mut hops: Vec<NextHop>) -> Option<RouteSpec> {
        hops.sort();
        hops.dedup();
        match hops.len() {
            0 => None,
            1 => Some(RouteSpec::Via(hops[0])),
            _ => Some(RouteSpec::Multipath(hops)),
        }
    }

    /// All next hops (empty for a blackhole).
    pub fn hops(&self) -> &[NextHop] {
        match self {
            RouteSpec::Blackhole | RouteSpec::Unsupported => &[],
            RouteSpec::Via(h) => std::slice::from_ref(h),
            RouteSpec::Multipath(v) => v,
        }
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteSpec::Blackhole => write!(f, "blackhole"),
            RouteSpec::Unsupported => write!(f, "(unsupported route)"),
            _ => {
                for (i, h) in self.hops().iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    write!(f, "via {} ifindex {}", h.gateway, h.oif)?;
                    if h.onlink {
                        write!(f, " onlink")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// How a route write treats an existing route with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create; fail with `EEXIST` if any route (ours or not) holds the key.
    Create,
    /// Replace a route of ours that the kernel holds under this key.
    Replace,
}

fn family(dst: &IpNet) -> u8 {
    match dst {
        IpNet::V4(_) => AF_INET,
        IpNet::V6(_) => AF_INET6,
    }
}

fn put_ip(buf: &mut Vec<u8>, ty: u16, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => put_attr(buf, ty, &a.octets()),
        IpAddr::V6(a) => put_attr(buf, ty, &a.octets()),
    }
}

fn put_rtmsg(buf: &mut Vec<u8>, key: &RouteKey, proto: u8, kind: u8, flags: u32) {
    let table_byte = if key.table < 256 { key.table as u8 } else { 0 };
    buf.extend_from_slice(&[
        family(&key.dst),
        key.dst.prefix_len(),
        0,
        0,
        table_byte,
        proto,
        RT_SCOPE_UNIVERSE,
        kind,
    ]);
    buf.extend_from_slice(&flags.to_ne_bytes());
}

fn put_key_attrs(buf: &mut Vec<u8>, key: &RouteKey) {
    match key.dst {
        IpNet::V4(n) => put_attr(buf, RTA_DST, &n.network().octets()),
        IpNet::V6(n) => put_attr(buf, RTA_DST, &n.network().octets()),
    }
    put_u32(buf, RTA_TABLE, key.table);
    if key.metric != 0 {
        put_u32(buf, RTA_PRIORITY, key.metric);
    }
}

/// Appends an `RTM_NEWROUTE` for `key`/`spec` owned by protocol `proto`.
pub fn encode_new(
    buf: &mut Vec<u8>,
    seq: u32,
    ack: bool,
    mode: WriteMode,
    proto: u8,
    key: &RouteKey,
    spec: &RouteSpec,
) {
    encode_new_src(buf, seq, ack, mode, proto, key, spec, None);
}

/// [`encode_new`] with a preferred source address (`src`, RTA_PREFSRC) on a unicast route;
/// a `src` of the other family than the route's is left out.
#[allow(clippy::too_many_arguments)] // one message's fields
pub fn encode_new_src(
    buf: &mut Vec<u8>,
    seq: u32,
    ack: bool,
    mode: WriteMode,
    proto: u8,
    key: &RouteKey,
    spec: &RouteSpec,
    src: Option<IpAddr>,
) {
    let src = src.filter(|s| s.is_ipv4() == key.dst.addr().is_ipv4());
    let mut flags = NLM_F_REQUEST | NLM_F_CREATE;
    flags |= match mode {
        WriteMode::Create => NLM_F_EXCL,
        WriteMode::Replace => NLM_F_REPLACE,
    };
    if ack {
        flags |= NLM_F_ACK;
    }
    let start = begin_msg(buf, RTM_NEWROUTE, flags, seq);
    match spec {
        RouteSpec::Blackhole | RouteSpec::Unsupported => {
            put_rtmsg(buf, key, proto, RTN_BLACKHOLE, 0);
            put_key_attrs(buf, key);
        }
        RouteSpec::Via(h) => {
            let f = if h.onlink { RTNH_F_ONLINK as u32 } else { 0 };
            put_rtmsg(buf, key, proto, RTN_UNICAST, f);
            put_key_attrs(buf, key);
            put_ip(buf, RTA_GATEWAY, &h.gateway);
            put_u32(buf, RTA_OIF, h.oif);
            if let Some(src) = &src {
                put_ip(buf, RTA_PREFSRC, src);
            }
        }
        RouteSpec::Multipath(hops) => {
            put_rtmsg(buf, key, proto, RTN_UNICAST, 0);
            put_key_attrs(buf, key);
            let mut mp = Vec::with_capacity(hops.len() * 24);
            for h in hops {
                let gw_len = match h.gateway {
                    IpAddr::V4(_) => 8,
                    IpAddr::V6(_) => 20,
                };
                let len = (8 + gw_len) as u16;
                mp.extend_from_slice(&len.to_ne_bytes());
                mp.push(if h.onlink { RTNH_F_ONLINK } else { 0 });
                mp.push(0); // hops = weight - 1
                mp.extend_from_slice(&(h.oif as i32).to_ne_bytes());
                put_ip(&mut mp, RTA_GATEWAY, &h.gateway);
            }
            put_attr(buf, RTA_MULTIPATH, &mp);
            if let Some(src) = &src {
                put_ip(buf, RTA_PREFSRC, src);
            }
        }
    }
    end_msg(buf, start);
}

/// Appends an `RTM_DELROUTE` that only matches a route of protocol `proto` (the kernel checks
/// the protocol on delete, so a foreign route with the same key is never hit).
pub fn encode_del(buf: &mut Vec<u8>, seq: u32, ack: bool, proto: u8, key: &RouteKey) {
    let mut flags = NLM_F_REQUEST;
    if ack {
        flags |= NLM_F_ACK;
    }
    let start = begin_msg(buf, RTM_DELROUTE, flags, seq);
    put_rtmsg(buf, key, proto, 0, 0);
    put_key_attrs(buf, key);
    end_msg(buf, start);
}

/// Appends a strict-checked dump request for `table`, protocol `proto`, family of `v6`.
pub fn encode_dump(buf: &mut Vec<u8>, seq: u32, v6: bool, table: u32, proto: u8) {
    let start = begin_msg(buf, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let table_byte = if table < 256 { table as u8 } else { 0 };
    let fam = if v6 { AF_INET6 } else { AF_INET };
    buf.extend_from_slice(&[fam, 0, 0, 0, table_byte, proto, 0, 0]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    put_u32(buf, RTA_TABLE, table);
    end_msg(buf, start);
}

/// A route read from a dump or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRoute {
    /// Its key.
    pub key: RouteKey,
    /// Its protocol.
    pub protocol: u8,
    /// `rtm_type`.
    pub kind: u8,
    /// The spec, when the route is of a shape this crate writes (blackhole or unicast via
    /// gateways); `None` for anything else (a unicast route without gateway, say).
    pub spec: Option<RouteSpec>,
    /// Its preferred source address (`src`), if any.
    pub prefsrc: Option<IpAddr>,
}

fn ip_from(fam: u8, v: &[u8]) -> Option<IpAddr> {
    match fam {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(v.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(v.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

/// Parses the payload of an `RTM_NEWROUTE` / `RTM_DELROUTE`. Returns `None` for families other
/// than IPv4/IPv6, cloned (cache) entries, and malformed messages.
pub fn parse(payload: &[u8]) -> Option<ParsedRoute> {
    let h = payload.get(..12)?;
    let fam = h[0];
    if fam != AF_INET && fam != AF_INET6 {
        return None;
    }
    let dst_len = h[1];
    let mut table = h[4] as u32;
    let protocol = h[5];
    let kind = h[7];
    let rtm_flags = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    if rtm_flags & RTM_F_CLONED != 0 {
        return None;
    }
    let mut dst: Option<IpAddr> = None;
    let mut gw: Option<IpAddr> = None;
    let mut prefsrc: Option<IpAddr> = None;
    let mut oif = 0u32;
    let mut metric = 0u32;
    let mut mp: Option<&[u8]> = None;
    for (ty, v) in wire::attrs(&payload[12..]) {
        match ty {
            RTA_DST => dst = ip_from(fam, v),
            RTA_GATEWAY => gw = ip_from(fam, v),
            RTA_PREFSRC => prefsrc = ip_from(fam, v),
            RTA_OIF => oif = get_u32(v)?,
            RTA_PRIORITY => metric = get_u32(v)?,
            RTA_TABLE => table = get_u32(v)?,
            RTA_MULTIPATH => mp = Some(v),
            _ => {}
        }
    }
    let dst = match dst {
        Some(a) => IpNet::new(a, dst_len).ok()?,
        None if fam == AF_INET => IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, dst_len).ok()?),
        None => IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, dst_len).ok()?),
    };
    let key = RouteKey { table, dst, metric };
    let spec = if kind == RTN_BLACKHOLE {
        Some(RouteSpec::Blackhole)
    } else if kind != RTN_UNICAST {
        None
    } else if let Some(mut m) = mp {
        let mut hops = Vec::new();
        while m.len() >= 8 {
            let len = u16::from_ne_bytes([m[0], m[1]]) as usize;
            if len < 8 || len > m.len() {
                break;
            }
            let flags = m[2];
            let ifi = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]) as u32;
            let mut hgw = None;
            for (ty, v) in wire::attrs(&m[8..len]) {
                if ty == RTA_GATEWAY {
                    hgw = ip_from(fam, v);
                }
            }
            if let Some(g) = hgw {
                hops.push(NextHop {
                    gateway: g,
                    oif: ifi,
                    onlink: flags & RTNH_F_ONLINK != 0,
                });
            }
            m = &m[align4(len).min(m.len())..];
        }
        RouteSpec::unicast(hops)
    } else {
        gw.map(|g| {
            RouteSpec::Via(NextHop {
                gateway: g,
                oif,
                onlink: rtm_flags & RTNH_F_ONLINK as u32 != 0,
            })
        })
    };
    Some(ParsedRoute {
        key,
        protocol,
        kind,
        spec,
        prefsrc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteProtocol, RouteType};
    use netlink_packet_route::RouteNetlinkMessage;

    fn key(s: &str) -> RouteKey {
        RouteKey {
            table: 254,
            dst: s.parse().unwrap(),
            metric: 0,
        }
    }

    /// Decodes our bytes with netlink-packet-route, an independent implementation.
    fn decode_independent(buf: &[u8]) -> netlink_packet_route::route::RouteMessage {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf).unwrap();
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))
            | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => m,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn blackhole_roundtrip_and_independent_decode() {
        let k = key("10.65.1.0/26");
        let mut buf = Vec::new();
        encode_new(
            &mut buf,
            1,
            true,
            WriteMode::Create,
            80,
            &k,
            &RouteSpec::Blackhole,
        );
        let m = decode_independent(&buf);
        assert_eq!(m.header.kind, RouteType::BlackHole);
        assert_eq!(m.header.protocol, RouteProtocol::Other(80));
        assert_eq!(m.header.destination_prefix_length, 26);
        let raw = wire::messages(&buf).next().unwrap();
        assert_ne!(raw.flags & NLM_F_EXCL, 0);
        let p = parse(raw.payload).unwrap();
        assert_eq!(p.key, k);
        assert_eq!(p.spec, Some(RouteSpec::Blackhole));
        assert_eq!(p.protocol, 80);
    }

    #[test]
    fn source_address_roundtrip_only_on_its_family() {
        let k = key("10.65.2.0/26");
        let spec = RouteSpec::Via(NextHop {
            gateway: "192.168.1.12".parse().unwrap(),
            oif: 7,
            onlink: false,
        });
        let src: IpAddr = "192.168.1.20".parse().unwrap();
        let mut buf = Vec::new();
        encode_new_src(
            &mut buf,
            1,
            true,
            WriteMode::Replace,
            99,
            &k,
            &spec,
            Some(src),
        );
        let p = parse(wire::messages(&buf).next().unwrap().payload).unwrap();
        assert_eq!(
            (p.prefsrc, p.spec, p.protocol),
            (Some(src), Some(spec.clone()), 99)
        );
        // An IPv6 source is not put on an IPv4 route.
        let mut buf = Vec::new();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        encode_new_src(
            &mut buf,
            1,
            true,
            WriteMode::Create,
            80,
            &k,
            &spec,
            Some(v6),
        );
        let p = parse(wire::messages(&buf).next().unwrap().payload).unwrap();
        assert_eq!(p.prefsrc, None);
    }

    #[test]
    fn ipip_onlink_route_message() {
        // `10.65.2.0/26 via 192.168.1.12 dev tunl0 onlink proto 80`
        let k = key("10.65.2.0/26");
        let spec = RouteSpec::Via(NextHop {
            gateway: "192.168.1.12".parse().unwrap(),
            oif: 7,
            onlink: true,
        });
        let mut buf = Vec::new();
        encode_new(&mut buf, 5, false, WriteMode::Replace, 80, &k, &spec);
        let m = decode_independent(&buf);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        let raw = wire::messages(&buf).next().unwrap();
        assert_ne!(raw.flags & NLM_F_REPLACE, 0);
        assert_eq!(raw.flags & NLM_F_ACK, 0);
        assert_eq!(parse(raw.payload).unwrap().spec, Some(spec));
    }

    #[test]
    fn multipath_v6_roundtrip() {
        let k = RouteKey {
            table: 1000,
            dst: "fd00:10::/122".parse().unwrap(),
            metric: 1024,
        };
        let spec = RouteSpec::unicast(vec![
            NextHop {
                gateway: "fd00::3".parse().unwrap(),
                oif: 2,
                onlink: false,
            },
            NextHop {
                gateway: "fd00::2".parse().unwrap(),
                oif: 2,
                onlink: true,
            },
        ])
        .unwrap();
        let mut buf = Vec::new();
        encode_new(&mut buf, 9, true, WriteMode::Create, 80, &k, &spec);
        let m = decode_independent(&buf);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::MultiPath(v) if v.len() == 2)));
        let p = parse(wire::messages(&buf).next().unwrap().payload).unwrap();
        assert_eq!(p.key, k);
        assert_eq!(p.spec, Some(spec));
    }

    #[test]
    fn delete_carries_protocol() {
        let k = key("10.65.3.0/26");
        let mut buf = Vec::new();
        encode_del(&mut buf, 3, true, 80, &k);
        let m = decode_independent(&buf);
        assert_eq!(m.header.protocol, RouteProtocol::Other(80));
        let p = parse(wire::messages(&buf).next().unwrap().payload).unwrap();
        assert_eq!(p.key, k);
    }

    #[test]
    fn dump_request_is_well_formed() {
        let mut buf = Vec::new();
        encode_dump(&mut buf, 1, false, 254, 80);
        let raw = wire::messages(&buf).next().unwrap();
        assert_eq!(raw.ty, RTM_GETROUTE);
        assert_eq!(raw.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(raw.payload[5], 80);
    }

    proptest::proptest! {
        #[test]
        fn v4_roundtrip(addr: u32, len in 0u8..=32, gw: u32, oif in 1u32..1000, onlink: bool,
                        table in 1u32..5000, metric: u32) {
            let dst = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc());
            let k = RouteKey { table, dst, metric };
            let spec = RouteSpec::Via(NextHop { gateway: IpAddr::V4(gw.into()), oif, onlink });
            let mut buf = Vec::new();
            encode_new(&mut buf, 1, false, WriteMode::Create, 80, &k, &spec);
            let p = parse(wire::messages(&buf).next().unwrap().payload).unwrap();
            proptest::prop_assert_eq!(p.key, k);
            proptest::prop_assert_eq!(p.spec, Some(spec));
        }
    }
}
