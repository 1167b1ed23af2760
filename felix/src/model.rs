//! The desired state the node daemon hands to the reconciler: plain data, no kernel details.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An Ethernet MAC address (a VTEP MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The text given to [`MacAddr::from_str`] is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if p.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

/// How traffic to a remote block is carried, from the pool's `ipipMode` / `vxlanMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encap {
    /// No encapsulation: `<block> via <node IP> dev <underlay>`.
    #[default]
    None,
    /// IPIP always: `<block> via <node IP> dev tunl0 onlink`.
    Ipip,
    /// IPIP only when the remote node is outside this node's subnet.
    IpipCrossSubnet,
    /// VXLAN always: `<block> via <remote tunnel IP> dev vxlan.calico onlink`.
    Vxlan,
    /// VXLAN only when the remote node is outside this node's subnet.
    VxlanCrossSubnet,
}

impl Encap {
    /// Whether this mode may need the IPIP device.
    pub fn uses_ipip(self) -> bool {
        matches!(self, Encap::Ipip | Encap::IpipCrossSubnet)
    }
    /// Whether this mode may need a VXLAN device.
    pub fn uses_vxlan(self) -> bool {
        matches!(self, Encap::Vxlan | Encap::VxlanCrossSubnet)
    }
}

/// A remote node's VXLAN tunnel endpoint, from its Node resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vtep {
    /// The address of the remote node's `vxlan.calico` (or `vxlan-v6.calico`) device.
    pub tunnel_ip: IpAddr,
    /// The MAC address of the remote node's VXLAN device.
    pub mac: MacAddr,
}

/// One next hop of a remote route: a remote node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteHop {
    /// The remote node's underlay address (BGP next hop / Node address).
    pub node_ip: IpAddr,
    /// The remote node's VTEP; required when the route ends up VXLAN-encapsulated.
    pub vtep: Option<Vtep>,
}

impl RemoteHop {
    /// A next hop without VXLAN information (plain or IPIP routing).
    pub fn node(node_ip: IpAddr) -> Self {
        RemoteHop {
            node_ip,
            vtep: None,
        }
    }
}

/// A block (or borrowed /32, /128) hosted by other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteRoute {
    /// The destination prefix.
    pub dst: IpNet,
    /// The pool's encapsulation.
    pub encap: Encap,
    /// One or more next hops; several become one multipath (ECMP) route.
    pub hops: Vec<RemoteHop>,
}

/// Settings of this node's IPIP device `tunl0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpipTunnel {
    /// This node's IPIP tunnel address (`ipv4IPIPTunnelAddr`).
    pub address: Option<Ipv4Addr>,
}

/// Settings of one of this node's VXLAN devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanTunnel {
    /// VXLAN network identifier (Calico: 4096).
    pub vni: u32,
    /// UDP destination port (Calico: 4789).
    pub port: u16,
    /// This node's VTEP MAC.
    pub mac: MacAddr,
    /// This node's VXLAN tunnel address (`ipv4VXLANTunnelAddr` / `ipv6VXLANTunnelAddr`).
    pub address: Option<IpAddr>,
}

impl VxlanTunnel {
    /// Calico's defaults (VNI 4096, port 4789) with the given MAC and address.
    pub fn calico(mac: MacAddr, address: Option<IpAddr>) -> Self {
        VxlanTunnel {
            vni: 4096,
            port: 4789,
            mac,
            address,
        }
    }
}

/// Everything of the desired state except the remote routes: node addresses, local blocks
/// (blackholes) and tunnel devices. Small, so it is replaced whole
/// ([`crate::ReconcilerHandle::set_host`]); the remote routes, which may number a million, move
/// as [`RouteUpdate`]s instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// This node's IPv4 underlay address with its subnet prefix length (see
    /// [`DesiredState::node_ipv4`]).
    pub node_ipv4: Option<Ipv4Net>,
    /// This node's IPv6 underlay address with its prefix length.
    pub node_ipv6: Option<Ipv6Net>,
    /// Blocks affine to this node: each becomes a `blackhole` route.
    pub local_blocks: Vec<IpNet>,
    /// `tunl0`; `None` when no pool uses IPIP.
    pub ipip: Option<IpipTunnel>,
    /// `vxlan.calico`; `None` when no IPv4 pool uses VXLAN.
    pub vxlan_v4: Option<VxlanTunnel>,
    /// `vxlan-v6.calico`; `None` when no IPv6 pool uses VXLAN.
    pub vxlan_v6: Option<VxlanTunnel>,
}

impl HostState {
    /// Whether `other` differs in anything the devices depend on (node addresses, tunnels);
    /// local blocks are routes only.
    pub fn devices_differ(&self, other: &HostState) -> bool {
        self.node_ipv4 != other.node_ipv4
            || self.node_ipv6 != other.node_ipv6
            || self.ipip != other.ipip
            || self.vxlan_v4 != other.vxlan_v4
            || self.vxlan_v6 != other.vxlan_v6
    }
}

/// One change to the remote routes the reconciler programs
/// ([`crate::ReconcilerHandle::update_routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpdate {
    /// Adds or replaces the route to `route.dst` (all its hops, its encapsulation).
    Upsert(RemoteRoute),
    /// Removes the route to this destination (no-op if absent).
    Remove(IpNet),
    /// Replaces the whole set of remote routes with these (a full resync from the producer);
    /// only the differences cost kernel work. Several entries for one destination are merged
    /// into one multipath route, as in [`DesiredState::remote_routes`].
    ReplaceAll(Vec<RemoteRoute>),
}

impl RouteUpdate {
    /// How many routes this update carries (its weight in the bounded update queue).
    pub fn weight(&self) -> usize {
        match self {
            RouteUpdate::Upsert(_) | RouteUpdate::Remove(_) => 1,
            RouteUpdate::ReplaceAll(v) => v.len().max(1),
        }
    }
}

/// Everything the dataplane of this node should hold. Built by the node daemon from IPAM
/// blocks, BGP best routes and the datastore's Node resources. Handed over whole
/// ([`crate::ReconcilerHandle::set_desired`]) it is [`HostState`] plus a
/// [`RouteUpdate::ReplaceAll`] of the remote routes; a producer with many routes sends the
/// host part and route deltas instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    /// This node's IPv4 underlay address with its subnet prefix length (Node `ipv4Address`,
    /// e.g. `192.168.1.10/24`). Used as VXLAN local address, to find the underlay interface
    /// when none is configured, and for CrossSubnet decisions.
    pub node_ipv4: Option<Ipv4Net>,
    /// This node's IPv6 underlay address with its prefix length.
    pub node_ipv6: Option<Ipv6Net>,
    /// Blocks affine to this node: each becomes a `blackhole` route.
    pub local_blocks: Vec<IpNet>,
    /// Blocks and borrowed addresses hosted elsewhere.
    pub remote_routes: Vec<RemoteRoute>,
    /// `tunl0`; `None` when no pool uses IPIP (the device is then emptied and set down).
    pub ipip: Option<IpipTunnel>,
    /// `vxlan.calico`; `None` when no IPv4 pool uses VXLAN (the device is then removed).
    pub vxlan_v4: Option<VxlanTunnel>,
    /// `vxlan-v6.calico`; `None` when no IPv6 pool uses VXLAN (the device is then removed).
    pub vxlan_v6: Option<VxlanTunnel>,
}

impl DesiredState {
    /// Splits into the host part and the remote routes.
    pub fn into_parts(self) -> (HostState, Vec<RemoteRoute>) {
        let DesiredState {
            node_ipv4,
            node_ipv6,
            local_blocks,
            remote_routes,
            ipip,
            vxlan_v4,
            vxlan_v6,
        } = self;
        (
            HostState {
                node_ipv4,
                node_ipv6,
                local_blocks,
                ipip,
                vxlan_v4,
                vxlan_v6,
            },
            remote_routes,
        )
    }

    /// Joins a host part and remote routes.
    pub fn from_parts(host: HostState, remote_routes: Vec<RemoteRoute>) -> DesiredState {
        let HostState {
            node_ipv4,
            node_ipv6,
            local_blocks,
            ipip,
            vxlan_v4,
            vxlan_v6,
        } = host;
        DesiredState {
            node_ipv4,
            node_ipv6,
            local_blocks,
            remote_routes,
            ipip,
            vxlan_v4,
            vxlan_v6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let d = DesiredState {
            node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
            local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
            remote_routes: vec![RemoteRoute {
                dst: "10.65.1.0/26".parse().unwrap(),
                encap: Encap::Ipip,
                hops: vec![RemoteHop::node("192.168.1.11".parse().unwrap())],
            }],
            ipip: Some(IpipTunnel::default()),
            ..Default::default()
        };
        let (h, r) = d.clone().into_parts();
        assert_eq!(h.local_blocks, d.local_blocks);
        assert_eq!(DesiredState::from_parts(h, r), d);
    }
}
