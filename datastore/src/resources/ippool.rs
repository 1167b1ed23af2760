//! `IPPool`: a range of workload addresses and how traffic to it is encapsulated.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::object::calico_object;
use super::types::de_helpers;
use super::validate::{check_no_host_bits, nets_overlap, reserved_overlap, Problems};
use super::{Kind, ObjectMeta, ValidationError};

/// An IP pool (`kind: IPPool`).
///
/// ```yaml
/// apiVersion: projectcalico.org/v3
/// kind: IPPool
/// metadata: {name: default-ipv4-ippool}
/// spec: {cidr: 10.244.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Always, natOutgoing: true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IPPool {
    /// Name, labels, revision.
    pub metadata: ObjectMeta,
    /// The pool settings.
    pub spec: IPPoolSpec,
    /// Top-level fields Calyx does not model (a newer Calico's), kept as read.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

calico_object!(IPPool, IPPoolSpec);

/// Encapsulation mode of a pool (`ipipMode`, `vxlanMode`). An empty string reads as `Never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum EncapMode {
    /// Always encapsulate traffic between nodes.
    Always,
    /// Encapsulate only traffic to nodes in another subnet.
    CrossSubnet,
    /// Never encapsulate (the default).
    #[default]
    Never,
}

impl std::str::FromStr for EncapMode {
    type Err = String;

    /// Parses `Always`, `CrossSubnet`, `Never` (exact case, as Calico) or `""` (= `Never`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(EncapMode::Always),
            "CrossSubnet" => Ok(EncapMode::CrossSubnet),
            "Never" | "" => Ok(EncapMode::Never),
            _ => Err(format!(
                "unknown mode {s:?}, expected one of Always, CrossSubnet, Never"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for EncapMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EncapMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of Always, CrossSubnet, Never")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EncapMode, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl EncapMode {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
            EncapMode::Never => "Never",
        }
    }

    /// True unless `Never`.
    pub fn is_enabled(self) -> bool {
        self != EncapMode::Never
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What addresses of a pool may be used for (`allowedUses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Workload (pod) addresses.
    Workload,
    /// Tunnel device addresses (tunl0, vxlan.calico).
    Tunnel,
    /// Service LoadBalancer addresses.
    LoadBalancer,
}

/// How addresses of a pool are assigned (`assignmentMode`, Calico 3.29+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentMode {
    /// Addresses are handed out automatically (the default).
    Automatic,
    /// Only explicitly requested addresses are assigned.
    Manual,
}

/// The `spec` of an [`IPPool`]. Defaults are filled in on read: `blockSize` 26 (IPv4) or 122
/// (IPv6), modes `Never`, `nodeSelector` `all()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "IPPoolSpecRaw")]
pub struct IPPoolSpec {
    /// The pool's network, e.g. `10.244.0.0/16` (host bits must be zero; checked by validation).
    pub cidr: IpNet,
    /// Prefix length of the blocks handed to nodes: 20-32 for IPv4 (default 26), 116-128 for IPv6
    /// (default 122), never shorter than the pool's own prefix.
    pub block_size: u8,
    /// IP-in-IP encapsulation (IPv4 pools only).
    pub ipip_mode: EncapMode,
    /// VXLAN encapsulation.
    pub vxlan_mode: EncapMode,
    /// Masquerade traffic from the pool to destinations outside all pools.
    #[serde(skip_serializing_if = "is_false")]
    pub nat_outgoing: bool,
    /// No new addresses are allocated from a disabled pool.
    #[serde(skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Do not advertise the pool's routes over BGP.
    #[serde(rename = "disableBGPExport", skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
    /// Selector over Node labels: which nodes may take blocks from this pool. Default `all()`.
    pub node_selector: String,
    /// What the addresses may be used for; empty means Calico's default, `[Workload, Tunnel]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Automatic or manual assignment; unset means automatic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The default `nodeSelector`.
pub const ALL_NODES: &str = "all()";

impl IPPoolSpec {
    /// A spec for `cidr` with every other field at its default.
    pub fn new(cidr: IpNet) -> Self {
        IPPoolSpec {
            cidr,
            block_size: Self::default_block_size(&cidr),
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: ALL_NODES.to_string(),
            allowed_uses: Vec::new(),
            assignment_mode: None,
            extra: serde_json::Map::new(),
        }
    }

    /// 26 for an IPv4 network, 122 for IPv6.
    pub fn default_block_size(cidr: &IpNet) -> u8 {
        match cidr {
            IpNet::V4(_) => 26,
            IpNet::V6(_) => 122,
        }
    }

    /// The allowed block sizes for the pool's address family.
    pub fn block_size_range(&self) -> std::ops::RangeInclusive<u8> {
        match self.cidr {
            IpNet::V4(_) => 20..=32,
            IpNet::V6(_) => 116..=128,
        }
    }

    /// True when the pool's addresses may be used for workloads.
    pub fn allows_workloads(&self) -> bool {
        self.allowed_uses.is_empty() || self.allowed_uses.contains(&AllowedUse::Workload)
    }

    /// True when the pool's addresses may be used for tunnel devices.
    pub fn allows_tunnels(&self) -> bool {
        self.allowed_uses.is_empty() || self.allowed_uses.contains(&AllowedUse::Tunnel)
    }
}

/// What the YAML holds before defaults are filled in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IPPoolSpecRaw {
    #[serde(deserialize_with = "de_helpers::cidr")]
    cidr: IpNet,
    #[serde(default)]
    block_size: Option<u8>,
    #[serde(default)]
    ipip_mode: EncapMode,
    #[serde(default)]
    vxlan_mode: EncapMode,
    #[serde(default)]
    nat_outgoing: bool,
    #[serde(default)]
    disabled: bool,
    #[serde(default, rename = "disableBGPExport")]
    disable_bgp_export: bool,
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    node_selector: String,
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    allowed_uses: Vec<AllowedUse>,
    #[serde(default)]
    assignment_mode: Option<AssignmentMode>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl From<IPPoolSpecRaw> for IPPoolSpec {
    fn from(r: IPPoolSpecRaw) -> Self {
        IPPoolSpec {
            block_size: r
                .block_size
                .unwrap_or_else(|| IPPoolSpec::default_block_size(&r.cidr)),
            cidr: r.cidr,
            ipip_mode: r.ipip_mode,
            vxlan_mode: r.vxlan_mode,
            nat_outgoing: r.nat_outgoing,
            disabled: r.disabled,
            disable_bgp_export: r.disable_bgp_export,
            node_selector: if r.node_selector.trim().is_empty() {
                ALL_NODES.to_string()
            } else {
                r.node_selector
            },
            allowed_uses: r.allowed_uses,
            assignment_mode: r.assignment_mode,
            extra: r.extra,
        }
    }
}

impl IPPool {
    /// Every problem with this pool (empty when valid). Does not look at other pools; see
    /// [`check_pool_overlaps`].
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::IPPool, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        let s = &self.spec;
        let family = if s.cidr.addr().is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        if let Err(reason) = check_no_host_bits(&s.cidr) {
            p.push("spec.cidr", s.cidr, reason);
        }
        if let Some((what, range)) = reserved_overlap(&s.cidr) {
            p.push(
                "spec.cidr",
                s.cidr,
                format!("overlaps the {what} range {range}"),
            );
        }
        let range = s.block_size_range();
        if !range.contains(&s.block_size) {
            p.push(
                "spec.blockSize",
                s.block_size,
                format!(
                    "is out of range {}-{} for an {family} pool",
                    range.start(),
                    range.end()
                ),
            );
        } else if s.block_size < s.cidr.prefix_len() {
            p.push(
                "spec.blockSize",
                s.block_size,
                format!(
                    "is a shorter prefix than the pool's own /{} (blocks must fit inside the pool)",
                    s.cidr.prefix_len()
                ),
            );
        }
        if s.cidr.addr().is_ipv6() && s.ipip_mode.is_enabled() {
            p.push(
                "spec.ipipMode",
                s.ipip_mode,
                "is not supported for an IPv6 pool (use VXLAN)",
            );
        }
        if s.ipip_mode.is_enabled() && s.vxlan_mode.is_enabled() {
            p.push(
                "spec.vxlanMode",
                s.vxlan_mode,
                format!("cannot be enabled together with ipipMode {}", s.ipip_mode),
            );
        }
        p.check_selector("spec.nodeSelector", &s.node_selector, false);
        if s.allowed_uses.contains(&AllowedUse::LoadBalancer) && s.allowed_uses.len() > 1 {
            p.push(
                "spec.allowedUses",
                format!("{:?}", s.allowed_uses),
                "may not combine LoadBalancer with other uses",
            );
        }
        p.errors
    }

    /// The first problem with this pool, if any.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.validate_all().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Checks that no two pools overlap. Pools with the same name are taken to be two versions of
/// the same pool and are not compared, so the CLI can pass "existing pools + the new ones" when
/// applying an update. The error names the later pool in `pools` and the pool it overlaps.
pub fn check_pool_overlaps(pools: &[&IPPool]) -> Result<(), ValidationError> {
    for (i, b) in pools.iter().enumerate() {
        for a in &pools[..i] {
            if a.metadata.name != b.metadata.name && nets_overlap(&a.spec.cidr, &b.spec.cidr) {
                return Err(ValidationError::new(
                    Kind::IPPool,
                    b.metadata.name.clone(),
                    "spec.cidr",
                    b.spec.cidr.to_string(),
                    format!("overlaps IPPool {:?} ({})", a.metadata.name, a.spec.cidr),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str) -> IPPool {
        IPPool::new(name, IPPoolSpec::new(cidr.parse().unwrap()))
    }

    fn yaml(spec: &str) -> Result<IPPool, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n{spec}"
        ))
    }

    #[test]
    fn defaults() {
        let p = yaml("  cidr: 10.0.0.0/16\n").unwrap();
        assert_eq!(p.spec.block_size, 26);
        assert_eq!(p.spec.ipip_mode, EncapMode::Never);
        assert_eq!(p.spec.node_selector, "all()");
        let p = yaml("  cidr: fd00::/48\n").unwrap();
        assert_eq!(p.spec.block_size, 122);
        assert!(p.validate().is_ok());
        let p = yaml("  cidr: 10.0.0.0/16\n  ipipMode: ''\n").unwrap();
        assert_eq!(p.spec.ipip_mode, EncapMode::Never);
    }

    #[test]
    fn serde_round_trip() {
        let p = yaml(
            "  cidr: 10.0.0.0/16\n  ipipMode: CrossSubnet\n  natOutgoing: true\n  blockSize: 24\n",
        )
        .unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.starts_with(r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","blockSize":24,"ipipMode":"CrossSubnet","vxlanMode":"Never","natOutgoing":true,"nodeSelector":"all()"}"#), "{j}");
        let back: IPPool = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn strict_fields() {
        // The typed decoder keeps unknown fields; user input is checked against Calico's API.
        let p = yaml("  cidr: 10.0.0.0/16\n  ipipmode: Always\n").unwrap();
        assert_eq!(p.spec.extra["ipipmode"], "Always");
        let e = super::super::parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.0.0.0/16\n  ipipmode: Always\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec: unknown field `ipipmode`") && e.contains("at line 6 column 3"),
            "{e}"
        );
        let e = yaml("  cidr: 10.0.0.0/16\n  ipipMode: Sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.ipipMode") && e.contains("Sometimes"),
            "{e}"
        );
        let e = yaml("  cidr: 10.0.0.300/16\n").unwrap_err().to_string();
        assert!(
            e.contains("spec.cidr: invalid CIDR \"10.0.0.300/16\""),
            "{e}"
        );
        let e = yaml("  blockSize: 26\n").unwrap_err().to_string();
        assert!(e.contains("missing field `cidr`"), "{e}");
        let e = serde_yaml_ng::from_str::<IPPool>(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `cidr`"), "{e}");
        let e = serde_yaml_ng::from_str::<IPPool>(
            "apiVersion: v1\nkind: IPPool\nmetadata: {name: p}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("apiVersion"), "{e}");
        let e = serde_yaml_ng::from_str::<IPPool>("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/8}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected \"IPPool\""), "{e}");
    }

    #[test]
    fn validation() {
        let mut p = pool("pool-a", "10.0.0.0/16");
        assert!(p.validate().is_ok());
        p.spec.block_size = 33;
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "IPPool \"pool-a\": spec.blockSize: 33 is out of range 20-32 for an IPv4 pool"
        );
        let mut p = pool("pool-a", "10.0.0.0/24");
        p.spec.block_size = 22;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shorter prefix than the pool's own /24"));
        let p = pool("pool-a", "10.0.0.1/16");
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("host bits set (did you mean 10.0.0.0/16?)"));
        let mut p = pool("pool-a", "fd00::/48");
        p.spec.ipip_mode = EncapMode::Always;
        assert_eq!(p.validate().unwrap_err().field, "spec.ipipMode");
        let mut p = pool("pool-a", "10.0.0.0/16");
        p.spec.ipip_mode = EncapMode::Always;
        p.spec.vxlan_mode = EncapMode::CrossSubnet;
        assert_eq!(p.validate().unwrap_err().field, "spec.vxlanMode");
        let mut p = pool("Pool_A", "10.0.0.0/16");
        assert_eq!(p.validate().unwrap_err().field, "metadata.name");
        p.metadata.name = "pool-a".into();
        p.spec.node_selector = "rack == ".into();
        assert_eq!(p.validate().unwrap_err().field, "spec.nodeSelector");
        let p = pool("lo", "127.0.0.0/16");
        assert!(p.validate().unwrap_err().reason.contains("loopback"));
    }

    #[test]
    fn overlaps() {
        let a = pool("a", "10.0.0.0/16");
        let b = pool("b", "10.1.0.0/16");
        let c = pool("c", "10.0.128.0/24");
        let a2 = pool("a", "10.0.0.0/15");
        assert!(check_pool_overlaps(&[&a, &b]).is_ok());
        let e = check_pool_overlaps(&[&a, &b, &c]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IPPool \"c\": spec.cidr: 10.0.128.0/24 overlaps IPPool \"a\" (10.0.0.0/16)"
        );
        assert!(check_pool_overlaps(&[&a, &a2]).is_ok());
        assert!(check_pool_overlaps(&[&a2, &b]).is_err());
    }
}
