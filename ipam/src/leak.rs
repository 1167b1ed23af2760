//! The leak rule shared by the node agent's garbage collector and `calyx ipam check`: which
//! allocations a WorkloadEndpoint accounts for, and which are never garbage.
//!
//! An allocation is *claimed* by a WorkloadEndpoint when the endpoint's `containerID` is the
//! container part of the allocation's handle (`<network>.<containerID>`, as the CNI plugin names
//! it) or when the endpoint lists the address in `ipNetworks` (as calicoctl's `ipam check`
//! matches). Either match is enough: a wrong "claimed" only delays a release, a wrong
//! "unclaimed" would free a live pod's address.

use std::collections::HashSet;
use std::net::IpAddr;

use calyx_datastore::resources::ipam::AllocationAttribute;
use calyx_datastore::resources::WorkloadEndpoint;
use ipnet::IpNet;

use crate::types::{attr_keys, is_tunnel_type};

/// Handle prefixes of addresses that belong to the node itself, not to a workload.
const NODE_HANDLE_PREFIXES: [&str; 4] = [
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "vxlan-v6-tunnel-addr-",
    "wireguard",
];

/// True when an allocation is never garbage: it has no handle (a reservation), or it is a
/// node's tunnel or WireGuard address (by `type` attribute or by handle). Those live as long
/// as their node and are released by `calyx delete node`.
pub fn gc_exempt(attr: &AllocationAttribute) -> bool {
    let Some(handle) = &attr.handle_id else {
        return true;
    };
    let tunnel_type = attr
        .secondary
        .get(attr_keys::TYPE)
        .is_some_and(|t| is_tunnel_type(t) || t.to_ascii_lowercase().contains("wireguard"));
    tunnel_type || NODE_HANDLE_PREFIXES.iter().any(|p| handle.starts_with(p))
}

/// The container ID in a pod handle `<network>.<containerID>`; `None` for other handles.
pub fn handle_container_id(handle: &str) -> Option<&str> {
    handle
        .split_once('.')
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// What a set of WorkloadEndpoints accounts for.
#[derive(Debug, Clone, Default)]
pub struct WorkloadClaims {
    container_ids: HashSet<String>,
    ips: HashSet<IpAddr>,
}

impl WorkloadClaims {
    /// The claims of `endpoints`.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a WorkloadEndpoint>) -> Self {
        let mut claims = WorkloadClaims::default();
        for w in endpoints {
            claims.add(w);
        }
        claims
    }

    /// Adds one endpoint's claims.
    pub fn add(&mut self, w: &WorkloadEndpoint) {
        if !w.spec.container_id.is_empty() {
            self.container_ids.insert(w.spec.container_id.clone());
        }
        for n in &w.spec.ip_networks {
            // `10.0.0.5/32`, or a bare address from another writer.
            let ip = n
                .parse::<IpNet>()
                .map(|net| net.addr())
                .or_else(|_| n.parse::<IpAddr>());
            if let Ok(ip) = ip {
                self.ips.insert(ip);
            }
        }
    }

    /// True when some endpoint accounts for the allocation of `ip` by `handle`.
    pub fn claims(&self, handle: &str, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
            || handle_container_id(handle).is_some_and(|c| self.container_ids.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn attr(handle: Option<&str>, kind: Option<&str>) -> AllocationAttribute {
        let mut secondary = BTreeMap::new();
        if let Some(k) = kind {
            secondary.insert(attr_keys::TYPE.to_string(), k.to_string());
        }
        AllocationAttribute {
            handle_id: handle.map(str::to_string),
            secondary,
        }
    }

    fn wep(container: &str, ips: &[&str]) -> WorkloadEndpoint {
        let mut w = WorkloadEndpoint::from_json(
            br#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1-k8s-p-eth0","namespace":"default"},"spec":{}}"#,
        )
        .expect("valid endpoint");
        w.spec.container_id = container.to_string();
        w.spec.ip_networks = ips.iter().map(|s| s.to_string()).collect();
        w
    }

    #[test]
    fn node_addresses_and_reservations_are_exempt() {
        assert!(gc_exempt(&attr(None, None)));
        assert!(gc_exempt(&attr(Some("vxlan-tunnel-addr-n1"), None)));
        assert!(gc_exempt(&attr(Some("ipip-tunnel-addr-n1"), None)));
        assert!(gc_exempt(&attr(Some("vxlan-v6-tunnel-addr-n1"), None)));
        assert!(gc_exempt(&attr(Some("wireguard-tunnel-addr-n1"), None)));
        assert!(gc_exempt(&attr(Some("x"), Some("vxlanTunnelAddress"))));
        assert!(!gc_exempt(&attr(Some("k8s-pod-network.abc"), None)));
    }

    #[test]
    fn endpoints_claim_by_container_or_address() {
        let claims = WorkloadClaims::new([&wep("abc", &["10.0.0.5/32"]), &wep("", &["fd00::7"])]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert!(claims.claims("k8s-pod-network.abc", ip("10.9.9.9")));
        assert!(claims.claims("k8s-pod-network.zzz", ip("10.0.0.5")));
        assert!(claims.claims("other", ip("fd00::7")));
        assert!(!claims.claims("k8s-pod-network.zzz", ip("10.0.0.6")));
        assert!(!claims.claims("abc", ip("10.0.0.6")));
        assert_eq!(handle_container_id("k8s-pod-network."), None);
    }
}
