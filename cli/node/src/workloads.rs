//! This node's workload addresses as its kernel holds them: the host routes of the main table
//! to `cali*` interfaces, one per pod address (the CNI plugin adds them, Calyx's as Calico's).
//!
//! In BGP mode they are the source of the /32s (/128s) a node originates for addresses it
//! borrowed from other nodes' blocks, as in Calico, where BIRD learns these kernel routes and
//! its `calico_aggr` filter exports those in a pool but outside the node's own blocks. Learning
//! them here costs the datastore nothing (the alternative, watching every IPAM block, sends each
//! node one block event per pod started anywhere: see [`crate::borrowed`]), and a pod that is
//! gone is not advertised even when its address leaked in IPAM.
//!
//! How: a netlink socket on the route and link groups, with a socket filter that drops Calyx's
//! own routes (`--route-protocol`) in the kernel, so that a storm of BGP routes felix installs
//! never reaches this socket; a dump of links and routes at start and after the socket
//! overflowed. IPv4 routes removed with their device send no notification, so a deleted link
//! removes the addresses routed through it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use calyx_felix::nl::NlSocket;
use calyx_felix::wire;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTM_GETLINK: u16 = 18;
const RT_TABLE_MAIN: u8 = 254;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const IFLA_IFNAME: u16 = 3;
const RTN_UNICAST: u8 = 1;
/// `struct rtmsg` and `struct ifinfomsg` sizes.
const RTMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;
/// Where the workload interfaces' names start, as Calico names them.
const WORKLOAD_PREFIX: &str = "cali";

/// The workload addresses, kept current by the task [`spawn`] starts: the latest set wins.
pub type Workloads = watch::Receiver<BTreeSet<IpAddr>>;

/// Starts following this node's workload routes until `stop`; the set is empty until the
/// first dump. The caller awaits the task after cancelling `stop`.
pub fn spawn(route_protocol: u8, stop: CancellationToken) -> (Workloads, JoinHandle<()>) {
    let (tx, rx) = watch::channel(BTreeSet::new());
    let task = tokio::spawn(run(tx, route_protocol, stop));
    (rx, task)
}

/// What the kernel holds: interface names by index, workload addresses with their interface.
#[derive(Debug, Default)]
struct Table {
    links: HashMap<u32, String>,
    routes: BTreeMap<IpAddr, u32>,
}

impl Table {
    fn addresses(&self) -> BTreeSet<IpAddr> {
        self.routes.keys().copied().collect()
    }

    /// Applies one netlink message (a dump reply or a notification).
    fn apply(&mut self, ty: u16, payload: &[u8], route_protocol: u8) {
        match ty {
            wire::RTM_NEWLINK => {
                if let Some((index, name)) = parse_link(payload) {
                    self.links.insert(index, name);
                }
            }
            wire::RTM_DELLINK => {
                if let Some((index, _)) = parse_link(payload) {
                    self.links.remove(&index);
                    self.routes.retain(|_, oif| *oif != index);
                }
            }
            wire::RTM_NEWROUTE => {
                if let Some(route) = parse_route(payload) {
                    let workload = route.protocol != route_protocol
                        && route.kind == RTN_UNICAST
                        && route
                            .oif
                            .and_then(|i| self.links.get(&i))
                            .is_some_and(|n| n.starts_with(WORKLOAD_PREFIX));
                    match (workload, route.oif) {
                        (true, Some(oif)) => {
                            self.routes.insert(route.dst, oif);
                        }
                        // Replaced by a route that is not a workload's.
                        _ => {
                            self.routes.remove(&route.dst);
                        }
                    }
                }
            }
            wire::RTM_DELROUTE => {
                if let Some(route) = parse_route(payload) {
                    if self
                        .routes
                        .get(&route.dst)
                        .is_some_and(|oif| route.oif.is_none_or(|o| o == *oif))
                    {
                        self.routes.remove(&route.dst);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A host route of the main table.
struct HostRoute {
    dst: IpAddr,
    oif: Option<u32>,
    protocol: u8,
    kind: u8,
}

/// A /32 or /128 route of the main table; `None` for anything else.
fn parse_route(payload: &[u8]) -> Option<HostRoute> {
    let header = payload.get(..RTMSG_LEN)?;
    let (family, dst_len, table, protocol, kind) =
        (header[0], header[1], header[4], header[5], header[7]);
    let full = match i32::from(family) {
        libc::AF_INET => 32,
        libc::AF_INET6 => 128,
        _ => return None,
    };
    if dst_len != full {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    let mut table = u32::from(table);
    for (ty, value) in wire::attrs(payload.get(RTMSG_LEN..)?) {
        match ty {
            RTA_DST => {
                dst = match value.len() {
                    4 => <[u8; 4]>::try_from(value)
                        .ok()
                        .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                    16 => <[u8; 16]>::try_from(value)
                        .ok()
                        .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                    _ => None,
                }
            }
            RTA_OIF => oif = wire::get_u32(value),
            RTA_TABLE => table = wire::get_u32(value).unwrap_or(table),
            _ => {}
        }
    }
    (table == u32::from(RT_TABLE_MAIN)).then_some(())?;
    Some(HostRoute {
        dst: dst?,
        oif,
        protocol,
        kind,
    })
}

/// Index and name of a link message.
fn parse_link(payload: &[u8]) -> Option<(u32, String)> {
    let header = payload.get(..IFINFOMSG_LEN)?;
    let index = u32::from_ne_bytes(header.get(4..8)?.try_into().ok()?);
    let name = wire::attrs(payload.get(IFINFOMSG_LEN..)?)
        .find(|(ty, _)| *ty == IFLA_IFNAME)
        .map(|(_, v)| {
            String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned()
        })
        .unwrap_or_default();
    Some((index, name))
}

/// Dumps the links, then the routes, into a fresh table (blocking: run off the runtime).
fn dump(route_protocol: u8) -> io::Result<Table> {
    let mut nl = NlSocket::open()?;
    let mut table = Table::default();
    let request = |ty: u16, header_len: usize| {
        move |buf: &mut Vec<u8>, seq: u32| {
            let start = wire::begin_msg(buf, ty, wire::NLM_F_REQUEST | wire::NLM_F_DUMP, seq);
            buf.extend(std::iter::repeat_n(0u8, header_len));
            wire::end_msg(buf, start);
        }
    };
    nl.dump(request(RTM_GETLINK, IFINFOMSG_LEN), |m| {
        table.apply(m.ty, m.payload, route_protocol);
    })?;
    nl.dump(request(wire::RTM_GETROUTE, RTMSG_LEN), |m| {
        table.apply(m.ty, m.payload, route_protocol);
    })?;
    Ok(table)
}

/// Follows the kernel until `stop`, publishing the address set whenever it changes.
async fn run(tx: watch::Sender<BTreeSet<IpAddr>>, route_protocol: u8, stop: CancellationToken) {
    let mut pause = Duration::from_millis(200);
    loop {
        match follow(&tx, route_protocol, &stop).await {
            Ok(()) => return,
            Err(e) => {
                // An overflowed socket (ENOBUFS) lost events: start over from a dump.
                info!(error = %e, "re-reading this node's workload routes");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One subscription: socket first (so nothing falls between the dump and the events), dump,
/// then events. Returns `Ok` on `stop`, an error when the socket fails or overflowed.
async fn follow(
    tx: &watch::Sender<BTreeSet<IpAddr>>,
    route_protocol: u8,
    stop: &CancellationToken,
) -> io::Result<()> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    {
        let s = sock.socket_mut();
        s.bind_auto()?;
        for group in [RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            s.add_membership(group)?;
        }
        let _ = s.set_rx_buf_sz(4 * 1024 * 1024);
        if let Err(e) = drop_own_routes(s, route_protocol) {
            warn!(error = %e, "no socket filter: Calyx's own route events are read and skipped");
        }
    }
    let mut table = tokio::task::spawn_blocking(move || dump(route_protocol))
        .await
        .map_err(io::Error::other)??;
    tx.send_replace(table.addresses());
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        buf.clear();
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            received = sock.recv(&mut buf) => received?,
        }
        for m in wire::messages(&buf) {
            table.apply(m.ty, m.payload, route_protocol);
        }
        let now = table.addresses();
        tx.send_if_modified(|current| {
            let changed = *current != now;
            if changed {
                *current = now;
            }
            changed
        });
    }
}

/// Attaches a classic BPF filter that drops route messages of protocol `route_protocol`
/// (felix's routes: up to a million during a BGP storm) before they are queued on `socket`.
/// Every other message passes.
#[allow(unsafe_code)]
fn drop_own_routes(socket: &netlink_sys::Socket, route_protocol: u8) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The low byte of `nlmsg_type` (a host-order u16 at offset 4), and `rtm_protocol` (offset
    // 5 of the rtmsg after the 16-byte header).
    let type_low: u32 = if cfg!(target_endian = "little") { 4 } else { 5 };
    let protocol_at: u32 = 16 + 5;
    let ld_b = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut program = [
        op(ld_b, 0, 0, type_low),
        op(jeq, 2, 0, u32::from(wire::RTM_NEWROUTE)),
        op(jeq, 1, 0, u32::from(wire::RTM_DELROUTE)),
        op(ret, 0, 0, u32::MAX),
        op(ld_b, 0, 0, protocol_at),
        op(jeq, 0, 1, u32::from(route_protocol)),
        op(ret, 0, 0, 0),
        op(ret, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, both alive on this stack frame for the call; the
    // kernel copies the program and only reads `fprog.len` instructions. A bad fd yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast::<libc::c_void>(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_msg(dst: [u8; 4], dst_len: u8, protocol: u8, oif: u32) -> Vec<u8> {
        let mut m = vec![
            libc::AF_INET as u8,
            dst_len,
            0,
            0,
            RT_TABLE_MAIN,
            protocol,
            253,
            1,
        ];
        m.extend([0u8; 4]);
        wire::put_attr(&mut m, RTA_DST, &dst);
        wire::put_u32(&mut m, RTA_OIF, oif);
        m
    }

    fn link_msg(index: u32, name: &str) -> Vec<u8> {
        let mut m = vec![0u8; IFINFOMSG_LEN];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        wire::put_attr(&mut m, IFLA_IFNAME, &n);
        m
    }

    /// The socket filter against the kernel, in a namespace of its own: routes of Calyx's
    /// protocol never arrive, others do.
    #[test]
    fn the_socket_filter_drops_only_calyx_routes() {
        let seen = calyx_felix::run_in_new_netns(|| -> Result<Vec<IpAddr>, String> {
            let run = |args: &[&str]| {
                let ok = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    Ok(())
                } else {
                    Err(format!("ip {args:?} failed"))
                }
            };
            let mut sock = netlink_sys::Socket::new(NETLINK_ROUTE).map_err(|e| e.to_string())?;
            sock.bind_auto().map_err(|e| e.to_string())?;
            sock.add_membership(RTNLGRP_IPV4_ROUTE)
                .map_err(|e| e.to_string())?;
            drop_own_routes(&sock, 80).map_err(|e| e.to_string())?;
            sock.set_non_blocking(true).map_err(|e| e.to_string())?;
            run(&[
                "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
            ])?;
            run(&["link", "set", "dummy0", "up"])?;
            run(&[
                "route",
                "add",
                "10.9.0.1/32",
                "dev",
                "dummy0",
                "proto",
                "80",
            ])?;
            run(&[
                "route",
                "add",
                "10.9.0.2/32",
                "dev",
                "dummy0",
                "proto",
                "boot",
            ])?;
            let mut seen = Vec::new();
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            for _ in 0..100 {
                buf.clear();
                match sock.recv(&mut buf, 0) {
                    Ok(_) => {
                        for m in wire::messages(&buf) {
                            if m.ty == wire::RTM_NEWROUTE {
                                seen.extend(parse_route(m.payload).map(|r| r.dst));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
                if seen.contains(&"10.9.0.2".parse().unwrap()) {
                    break;
                }
            }
            Ok(seen)
        });
        let seen = match seen {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) => {
                eprintln!("SKIPPED the_socket_filter_drops_only_calyx_routes: {e}");
                return;
            }
            Err(e) => {
                eprintln!("SKIPPED the_socket_filter_drops_only_calyx_routes: no namespace: {e}");
                return;
            }
        };
        let want: Vec<IpAddr> = vec!["10.9.0.2".parse().unwrap()];
        assert_eq!(seen, want);
    }

    #[test]
    fn workload_routes_follow_links_and_routes() {
        let mut t = Table::default();
        t.apply(wire::RTM_NEWLINK, &link_msg(7, "cali1234"), 80);
        t.apply(wire::RTM_NEWLINK, &link_msg(2, "eth0"), 80);
        t.apply(wire::RTM_NEWROUTE, &route_msg([10, 0, 0, 5], 32, 3, 7), 80);
        // Not workloads: another device, a block route, Calyx's own protocol.
        t.apply(wire::RTM_NEWROUTE, &route_msg([10, 0, 0, 6], 32, 3, 2), 80);
        t.apply(wire::RTM_NEWROUTE, &route_msg([10, 0, 1, 0], 26, 3, 7), 80);
        t.apply(wire::RTM_NEWROUTE, &route_msg([10, 0, 0, 7], 32, 80, 7), 80);
        let want: BTreeSet<IpAddr> = ["10.0.0.5".parse().unwrap()].into();
        assert_eq!(t.addresses(), want);
        t.apply(wire::RTM_DELROUTE, &route_msg([10, 0, 0, 5], 32, 3, 7), 80);
        assert!(t.addresses().is_empty());
        // A deleted device takes its routes without a route event (IPv4).
        t.apply(wire::RTM_NEWROUTE, &route_msg([10, 0, 0, 8], 32, 3, 7), 80);
        assert_eq!(t.addresses().len(), 1);
        t.apply(wire::RTM_DELLINK, &link_msg(7, "cali1234"), 80);
        assert!(t.addresses().is_empty());
    }
}
