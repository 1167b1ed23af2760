//! `Node`: a host running Calyx, with its BGP and tunnel addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::object::{deserialize_object, serialize_object};
use super::types::{de_helpers, Asn, MacAddr};
use super::validate::{is_unicast, Problems};
use super::{Kind, ObjectMeta, ValidationError};

/// A node (`kind: Node`). Its labels are what `nodeSelector`s match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name (the hostname), labels, revision.
    pub metadata: ObjectMeta,
    /// Addresses and BGP settings.
    pub spec: NodeSpec,
    /// Calico's node status (written by the node itself), kept as-is; `None` when absent.
    pub status: Option<serde_json::Value>,
    /// Top-level fields Calyx does not model (a newer Calico's), kept as read.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_object(
            s,
            Kind::Node.as_str(),
            &self.metadata,
            &self.spec,
            self.status.as_ref(),
            &self.extra,
        )
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = deserialize_object(d, Kind::Node.as_str())?;
        Ok(Node {
            metadata: e.metadata,
            spec: e.spec,
            status: e.status,
            extra: e.extra,
        })
    }
}

impl Node {
    /// Creates a node with the given name and spec and no status.
    pub fn new(name: impl Into<String>, spec: NodeSpec) -> Self {
        Node {
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// The BGP part of a node: `spec.bgp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeBGPSpec {
    /// The node's AS number; unset means the cluster AS from BGPConfiguration `default`.
    #[serde(default, rename = "asNumber", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<Asn>,
    /// The node's IPv4 address and subnet (`10.0.0.1/24`; a bare address reads as `/32`).
    #[serde(
        default,
        rename = "ipv4Address",
        deserialize_with = "de_helpers::opt_ipv4_with_prefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<Ipv4Net>,
    /// The node's IPv6 address and subnet (`fd00::1/64`; a bare address reads as `/128`).
    #[serde(
        default,
        rename = "ipv6Address",
        deserialize_with = "de_helpers::opt_ipv6_with_prefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<Ipv6Net>,
    /// The address of the node's IPIP tunnel device (tunl0).
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        deserialize_with = "de_helpers::opt_ipv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
    /// When set, the node is a route reflector with this cluster ID (an IPv4-formatted id).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        deserialize_with = "de_helpers::opt_ipv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One of the node's addresses: `{address: 10.0.0.1, type: InternalIP}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// The address (optionally with a prefix length).
    pub address: String,
    /// `InternalIP`, `ExternalIP`, `CalicoNodeIP`, ...
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub address_type: String,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The orchestrator's name for the node: `{nodeName: ..., orchestrator: k8s}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchRef {
    /// The node's name in the orchestrator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// The orchestrator (`k8s`).
    pub orchestrator: String,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The `spec` of a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeSpec {
    /// BGP settings; `None` when the node does not run BGP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBGPSpec>,
    /// Address of the node's VXLAN device (vxlan.calico).
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        deserialize_with = "de_helpers::opt_ipv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// MAC address of the node's VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<MacAddr>,
    /// Address of the node's IPv6 VXLAN device (vxlan-v6.calico).
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        deserialize_with = "de_helpers::opt_ipv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<Ipv6Addr>,
    /// MAC address of the node's IPv6 VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<MacAddr>,
    /// All the node's addresses.
    #[serde(
        default,
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<NodeAddress>,
    /// The node's names in orchestrators.
    #[serde(
        default,
        rename = "orchRefs",
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub orch_refs: Vec<OrchRef>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Node {
    /// Every problem with this node (empty when valid).
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::Node, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        let s = &self.spec;
        if let Some(bgp) = &s.bgp {
            if bgp.ipv4_address.is_none() && bgp.ipv6_address.is_none() {
                p.push("spec.bgp", "", "needs ipv4Address or ipv6Address");
            }
            if let Some(a) = bgp.ipv4_address {
                if !is_unicast(&IpAddr::V4(a.addr())) {
                    p.push("spec.bgp.ipv4Address", a, "is not a unicast address");
                }
            }
            if let Some(a) = bgp.ipv6_address {
                if !is_unicast(&IpAddr::V6(a.addr())) {
                    p.push("spec.bgp.ipv6Address", a, "is not a unicast address");
                }
            }
            if bgp.as_number == Some(Asn(0)) {
                p.push("spec.bgp.asNumber", 0, "is out of range 1-4294967295");
            }
            if let Some(a) = bgp.ipv4_ipip_tunnel_addr {
                if !is_unicast(&IpAddr::V4(a)) {
                    p.push("spec.bgp.ipv4IPIPTunnelAddr", a, "is not a unicast address");
                }
            }
        }
        if let Some(a) = s.ipv4_vxlan_tunnel_addr {
            if !is_unicast(&IpAddr::V4(a)) {
                p.push("spec.ipv4VXLANTunnelAddr", a, "is not a unicast address");
            }
        }
        if let Some(a) = s.ipv6_vxlan_tunnel_addr {
            if !is_unicast(&IpAddr::V6(a)) {
                p.push("spec.ipv6VXLANTunnelAddr", a, "is not a unicast address");
            }
        }
        for (field, mac) in [
            ("spec.vxlanTunnelMACAddr", s.vxlan_tunnel_mac_addr),
            ("spec.vxlanTunnelMACAddrV6", s.vxlan_tunnel_mac_addr_v6),
        ] {
            if let Some(m) = mac {
                if m.0[0] & 1 == 1 {
                    p.push(field, m, "is a multicast MAC address");
                }
            }
        }
        p.errors
    }

    /// The first problem with this node, if any.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.validate_all().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node1
  labels:
    rack: rack-1
    kubernetes.io/hostname: node1
spec:
  bgp:
    ipv4Address: 10.0.0.1/24
    ipv6Address: fd00::1/64
    asNumber: 64512
    ipv4IPIPTunnelAddr: 10.244.0.1
    routeReflectorClusterID: 224.0.0.1
  ipv4VXLANTunnelAddr: 10.244.0.0
  vxlanTunnelMACAddr: 66:2f:1a:aa:bb:cc
  orchRefs:
  - nodeName: node1
    orchestrator: k8s
status:
  podCIDRs: [10.244.0.0/24]
"#;

    #[test]
    fn full() {
        let n: Node = serde_yaml_ng::from_str(FULL).unwrap();
        assert!(n.validate().is_ok(), "{:?}", n.validate());
        let bgp = n.spec.bgp.as_ref().unwrap();
        assert_eq!(bgp.ipv4_address.unwrap().prefix_len(), 24);
        assert_eq!(n.metadata.labels["rack"], "rack-1");
        assert!(n.status.is_some());
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains(r#""ipv4Address":"10.0.0.1/24""#), "{j}");
        assert!(
            j.contains(r#""vxlanTunnelMACAddr":"66:2f:1a:aa:bb:cc""#),
            "{j}"
        );
        let back: Node = serde_json::from_str(&j).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn bare_address_and_errors() {
        let n: Node = serde_yaml_ng::from_str(&FULL.replace("10.0.0.1/24", "10.0.0.1")).unwrap();
        assert_eq!(n.spec.bgp.unwrap().ipv4_address.unwrap().prefix_len(), 32);
        let e = serde_yaml_ng::from_str::<Node>(&FULL.replace("10.0.0.1/24", "10.0.0.256/24"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.bgp.ipv4Address: invalid IPv4 address \"10.0.0.256/24\""),
            "{e}"
        );
        let e = serde_yaml_ng::from_str::<Node>(&FULL.replace("66:2f", "66:2g"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.vxlanTunnelMACAddr: invalid MAC address"),
            "{e}"
        );
        let e = super::super::parse_documents(
            &FULL.replace("ipv4VXLANTunnelAddr", "ipv4VxlanTunnelAddr"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `ipv4VxlanTunnelAddr`"), "{e}");
        let mut n: Node = serde_yaml_ng::from_str(FULL).unwrap();
        n.spec.bgp = Some(NodeBGPSpec::default());
        assert_eq!(n.validate().unwrap_err().field, "spec.bgp");
        let mut n: Node = serde_yaml_ng::from_str(FULL).unwrap();
        n.metadata.labels.insert("bad key".into(), "x".into());
        assert!(n
            .validate()
            .unwrap_err()
            .field
            .starts_with("metadata.labels"));
    }
}
