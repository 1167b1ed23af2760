//! Small public types: address family, assign requests, attributes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::AllocationAttribute;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// `ipv4` / `ipv6`, as in etcd keys.
    pub fn key_part(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Both families.
    pub fn both() -> [Family; 2] {
        [Family::V4, Family::V6]
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Calico's secondary attribute keys.
pub mod attr_keys {
    /// The node the address is used on.
    pub const NODE: &str = "node";
    /// The pod name.
    pub const POD: &str = "pod";
    /// The pod namespace.
    pub const NAMESPACE: &str = "namespace";
    /// When the address was allocated.
    pub const TIMESTAMP: &str = "timestamp";
    /// What the address is for (tunnel addresses; absent for pods).
    pub const TYPE: &str = "type";
}

/// What an address is used for (Calico's `type` attribute; pods have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunnelKind {
    /// The IPIP tunnel device address (`tunl0`).
    Ipip,
    /// The VXLAN tunnel device address (`vxlan.calico`).
    Vxlan,
    /// The IPv6 VXLAN tunnel device address (`vxlan-v6.calico`).
    VxlanV6,
}

impl TunnelKind {
    /// Calico's `type` attribute value.
    pub fn attr_type(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
        }
    }

    /// Calico's handle ID for this node's tunnel address.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Ipip => format!("ipip-tunnel-addr-{node}"),
            TunnelKind::Vxlan => format!("vxlan-tunnel-addr-{node}"),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
        }
    }

    /// The family the tunnel address is of.
    pub fn family(self) -> Family {
        match self {
            TunnelKind::Ipip | TunnelKind::Vxlan => Family::V4,
            TunnelKind::VxlanV6 => Family::V6,
        }
    }
}

/// True when a `type` attribute marks a tunnel address.
pub fn is_tunnel_type(t: &str) -> bool {
    t.ends_with("TunnelAddress")
}

/// The attributes a caller gives an allocation (the handle, node and timestamp are added by
/// the IPAM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttrs {
    /// Pod name.
    pub pod: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Calico's `type` (tunnel addresses).
    pub kind: Option<String>,
    /// Anything else to keep with the allocation.
    pub extra: BTreeMap<String, String>,
}

impl AllocationAttrs {
    /// Attributes of a pod's address.
    pub fn pod(namespace: &str, pod: &str) -> Self {
        AllocationAttrs {
            pod: Some(pod.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        }
    }

    /// The stored attribute: `{handle_id, secondary: {node, pod, namespace, timestamp, type}}`.
    pub(crate) fn to_attribute(&self, handle: &str, node: &str) -> AllocationAttribute {
        let mut secondary = self.extra.clone();
        secondary.insert(attr_keys::NODE.to_string(), node.to_string());
        if let Some(p) = &self.pod {
            secondary.insert(attr_keys::POD.to_string(), p.clone());
        }
        if let Some(n) = &self.namespace {
            secondary.insert(attr_keys::NAMESPACE.to_string(), n.clone());
        }
        if let Some(t) = &self.kind {
            secondary.insert(attr_keys::TYPE.to_string(), t.clone());
        }
        secondary.insert(attr_keys::TIMESTAMP.to_string(), timestamp_now());
        AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary,
        }
    }
}

/// An address request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignArgs {
    /// The handle that will own the addresses (`k8s-pod-network.<containerID>` for pods).
    /// A retried request with the same handle gets the same addresses back.
    pub handle: String,
    /// The node the addresses are for.
    pub node: String,
    /// The family wanted.
    pub family: Family,
    /// How many addresses the handle should hold in this family.
    pub count: usize,
    /// Attributes kept with the allocation.
    pub attrs: AllocationAttrs,
    /// Restrict to these pools (names or CIDRs); `None` = every pool the node may use.
    pub pools: Option<Vec<String>>,
}

impl AssignArgs {
    /// One address of `family` for `handle` on `node`.
    pub fn one(handle: impl Into<String>, node: impl Into<String>, family: Family) -> Self {
        AssignArgs {
            handle: handle.into(),
            node: node.into(),
            family,
            count: 1,
            attrs: AllocationAttrs::default(),
            pools: None,
        }
    }

    /// With these attributes.
    pub fn with_attrs(mut self, attrs: AllocationAttrs) -> Self {
        self.attrs = attrs;
        self
    }
}

/// `2024-05-01T12:00:00Z`-style UTC timestamp of now.
pub fn timestamp_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_rfc3339(secs)
}

fn format_rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn attribute_has_calico_keys() {
        let a = AllocationAttrs::pod("default", "web").to_attribute("k8s-pod-network.x", "node1");
        assert_eq!(a.handle_id.as_deref(), Some("k8s-pod-network.x"));
        for k in ["node", "pod", "namespace", "timestamp"] {
            assert!(a.secondary.contains_key(k), "{k}");
        }
        assert_eq!(TunnelKind::Vxlan.handle("n1"), "vxlan-tunnel-addr-n1");
        assert!(is_tunnel_type(TunnelKind::Ipip.attr_type()));
    }
}
