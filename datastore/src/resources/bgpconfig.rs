//! `BGPConfiguration`: cluster-wide (`default`) and per-node (`node.<name>`) BGP settings.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::bgppeer::BGPPassword;
use super::object::calico_object;
use super::types::{de_helpers, Asn, GoDuration};
use super::validate::{check_no_host_bits, quoted, Problems};
use super::{Kind, ObjectMeta, ValidationError};

/// BGP configuration (`kind: BGPConfiguration`). The object named `default` holds the cluster
/// settings; an object named `node.<nodename>` overrides some of them for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPConfiguration {
    /// Name, labels, revision.
    pub metadata: ObjectMeta,
    /// The settings.
    pub spec: BGPConfigurationSpec,
    /// Top-level fields Calyx does not model (a newer Calico's), kept as read.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

calico_object!(BGPConfiguration, BGPConfigurationSpec);

/// The name of the cluster-wide configuration.
pub const DEFAULT_BGP_CONFIGURATION: &str = "default";

/// A service CIDR entry: `{cidr: 10.96.0.0/12}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCidr {
    /// The network to advertise.
    #[serde(deserialize_with = "de_helpers::cidr")]
    pub cidr: IpNet,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A named BGP community: `{name: my-community, value: "64512:100"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Community {
    /// The name used in `prefixAdvertisements`.
    pub name: String,
    /// A standard community `aa:nn` (two 16-bit numbers) or a large community `aa:nn:mm` (three
    /// 32-bit numbers).
    pub value: String,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Communities attached to the routes of a CIDR: `{cidr: 10.0.0.0/16, communities: [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixAdvertisement {
    /// The routes this applies to (that CIDR and everything inside it).
    #[serde(deserialize_with = "de_helpers::cidr")]
    pub cidr: IpNet,
    /// Community names (from `communities`) or literal values (`aa:nn`, `aa:nn:mm`).
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    pub communities: Vec<String>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Which addresses BIRD-style daemons listen on (`bindMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BindMode {
    /// Listen on all addresses.
    None,
    /// Listen on the node IP only.
    NodeIP,
}

/// A parsed community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommunityValue {
    /// RFC 1997 community `aa:nn`.
    Standard(u16, u16),
    /// RFC 8092 large community `aa:nn:mm`.
    Large(u32, u32, u32),
}

impl CommunityValue {
    /// Parses `aa:nn` or `aa:nn:mm`; `None` when it is neither.
    pub fn parse(s: &str) -> Option<CommunityValue> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, b] => Some(CommunityValue::Standard(a.parse().ok()?, b.parse().ok()?)),
            [a, b, c] => Some(CommunityValue::Large(
                a.parse().ok()?,
                b.parse().ok()?,
                c.parse().ok()?,
            )),
            _ => None,
        }
    }
}

/// The valid `logSeverityScreen` values.
pub const LOG_SEVERITIES: [&str; 5] = ["Debug", "Info", "Warning", "Error", "Fatal"];

/// The `spec` of a [`BGPConfiguration`]. Every scalar is optional: unset in a per-node object
/// means "inherit from `default`"; the `effective_*` methods give the value with Calico's default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// Log level of the BGP daemon: Debug, Info (default), Warning, Error, Fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Whether every node peers with every other node (default true). Only in `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The cluster AS number (default 64512); a Node's `spec.bgp.asNumber` overrides it.
    /// Only in `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<Asn>,
    /// BGP listen port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Service cluster IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceCidr>,
    /// Service external IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceCidr>,
    /// Service LoadBalancer IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceCidr>,
    /// Named communities.
    #[serde(
        default,
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub communities: Vec<Community>,
    /// Communities to attach to advertised routes.
    #[serde(
        default,
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// Password for the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BGPPassword>,
    /// Graceful-restart time of the mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<GoDuration>,
    /// Failure detection of the node-to-node mesh sessions: `None` or `BFDIfDirectlyConnected`
    /// (a Calyx addition, named like `nodeMeshPassword`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_failure_detection_mode: Option<String>,
    /// Default BFD timers of every peering that runs BFD (a Calyx addition; see `BfdSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<super::BfdSpec>,
    /// Listen address mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    /// Interface name patterns whose addresses are not exported.
    #[serde(
        default,
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ignored_interfaces: Vec<String>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BGPConfigurationSpec {
    /// `asNumber`, or 64512.
    pub fn effective_as_number(&self) -> Asn {
        self.as_number.unwrap_or(Asn::DEFAULT)
    }

    /// `nodeToNodeMeshEnabled`, or true.
    pub fn effective_node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    /// `listenPort`, or 179.
    pub fn effective_listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(179)
    }

    /// `logSeverityScreen`, or `Info`.
    pub fn effective_log_severity_screen(&self) -> &str {
        self.log_severity_screen.as_deref().unwrap_or("Info")
    }
}

impl BGPConfiguration {
    /// True for the cluster-wide object (`default`).
    pub fn is_default(&self) -> bool {
        self.metadata.name == DEFAULT_BGP_CONFIGURATION
    }

    /// The node this per-node object applies to (`node.<nodename>` -> `nodename`).
    pub fn node_name(&self) -> Option<&str> {
        self.metadata
            .name
            .strip_prefix("node.")
            .filter(|n| !n.is_empty())
    }

    /// Every problem with this configuration (empty when valid).
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::BGPConfiguration, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        let s = &self.spec;
        if !self.is_default() {
            if let Some(v) = s.node_to_node_mesh_enabled {
                p.push(
                    "spec.nodeToNodeMeshEnabled",
                    v,
                    "can only be set in the \"default\" BGPConfiguration",
                );
            }
            if let Some(v) = s.as_number {
                p.push(
                    "spec.asNumber",
                    v,
                    "can only be set in the \"default\" BGPConfiguration (set a node's AS in its Node resource)",
                );
            }
        }
        if s.as_number == Some(Asn(0)) {
            p.push("spec.asNumber", 0, "is out of range 1-4294967295");
        }
        if s.listen_port == Some(0) {
            p.push("spec.listenPort", 0, "is out of range 1-65535");
        }
        if let Some(sev) = &s.log_severity_screen {
            if !LOG_SEVERITIES.iter().any(|l| l.eq_ignore_ascii_case(sev)) {
                p.push(
                    "spec.logSeverityScreen",
                    quoted(sev),
                    format!("is not one of {}", LOG_SEVERITIES.join(", ")),
                );
            }
        }
        for (field, list) in [
            ("serviceClusterIPs", &s.service_cluster_ips),
            ("serviceExternalIPs", &s.service_external_ips),
            ("serviceLoadBalancerIPs", &s.service_load_balancer_ips),
        ] {
            for (i, c) in list.iter().enumerate() {
                if let Err(reason) = check_no_host_bits(&c.cidr) {
                    p.push(format!("spec.{field}[{i}].cidr"), c.cidr, reason);
                }
            }
        }
        for (i, c) in s.communities.iter().enumerate() {
            if c.name.trim().is_empty() {
                p.push(
                    format!("spec.communities[{i}].name"),
                    quoted(&c.name),
                    "must not be empty",
                );
            }
            if s.communities[..i].iter().any(|o| o.name == c.name) {
                p.push(
                    format!("spec.communities[{i}].name"),
                    quoted(&c.name),
                    "is defined twice",
                );
            }
            if CommunityValue::parse(&c.value).is_none() {
                p.push(
                    format!("spec.communities[{i}].value"),
                    quoted(&c.value),
                    "is not a community (aa:nn with 16-bit numbers, or aa:nn:mm with 32-bit numbers)",
                );
            }
        }
        for (i, a) in s.prefix_advertisements.iter().enumerate() {
            if let Err(reason) = check_no_host_bits(&a.cidr) {
                p.push(
                    format!("spec.prefixAdvertisements[{i}].cidr"),
                    a.cidr,
                    reason,
                );
            }
            for (j, c) in a.communities.iter().enumerate() {
                if CommunityValue::parse(c).is_none() && !s.communities.iter().any(|d| &d.name == c)
                {
                    p.push(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        quoted(c),
                        "is neither a community defined in spec.communities nor a value like 64512:100",
                    );
                }
            }
        }
        if let Some(pw) = &s.node_mesh_password {
            if pw.secret_key_ref.is_none() {
                p.push("spec.nodeMeshPassword.secretKeyRef", "", "must be set");
            }
        }
        super::bfd::check(
            &mut p,
            "spec.nodeMeshFailureDetectionMode",
            s.node_mesh_failure_detection_mode.as_deref(),
            s.bfd.as_ref(),
        );
        p.errors
    }

    /// The first problem with this configuration, if any.
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
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
  listenPort: 1179
  serviceClusterIPs:
  - cidr: 10.96.0.0/12
  serviceExternalIPs:
  - cidr: 104.244.42.129/32
  - cidr: 172.217.3.0/24
  communities:
  - name: bgp-large-community
    value: 63400:300:100
  - name: no-export
    value: "65535:65281"
  prefixAdvertisements:
  - cidr: 172.218.4.0/26
    communities:
    - bgp-large-community
    - 63400:120
"#;

    #[test]
    fn full() {
        let c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(c.spec.effective_as_number(), Asn(63400));
        assert!(!c.spec.effective_node_to_node_mesh_enabled());
        assert_eq!(c.spec.effective_listen_port(), 1179);
        let j = serde_json::to_string(&c).unwrap();
        assert!(
            j.contains(r#""serviceClusterIPs":[{"cidr":"10.96.0.0/12"}]"#),
            "{j}"
        );
        let back: BGPConfiguration = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn defaults_and_rules() {
        let c: BGPConfiguration = serde_yaml_ng::from_str(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n",
        )
        .unwrap();
        assert_eq!(c.spec, BGPConfigurationSpec::default());
        assert_eq!(c.spec.effective_as_number(), Asn(64512));
        assert!(c.spec.effective_node_to_node_mesh_enabled());
        assert_eq!(c.spec.effective_listen_port(), 179);
        assert_eq!(c.spec.effective_log_severity_screen(), "Info");

        let mut c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        c.metadata.name = "node.node1".into();
        assert_eq!(c.node_name(), Some("node1"));
        assert_eq!(
            c.validate().unwrap_err().field,
            "spec.nodeToNodeMeshEnabled"
        );
        let mut c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        c.spec.communities[1].value = "65536:1".into();
        assert_eq!(c.validate().unwrap_err().field, "spec.communities[1].value");
        let mut c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        c.spec.prefix_advertisements[0]
            .communities
            .push("nope".into());
        assert_eq!(
            c.validate().unwrap_err().field,
            "spec.prefixAdvertisements[0].communities[2]"
        );
        let mut c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        c.spec.log_severity_screen = Some("Loud".into());
        assert_eq!(c.validate().unwrap_err().field, "spec.logSeverityScreen");
        let mut c: BGPConfiguration = serde_yaml_ng::from_str(FULL).unwrap();
        c.spec.service_cluster_ips[0].cidr = "10.96.0.1/12".parse().unwrap();
        assert_eq!(
            c.validate().unwrap_err().field,
            "spec.serviceClusterIPs[0].cidr"
        );
    }

    #[test]
    fn communities() {
        assert_eq!(
            CommunityValue::parse("64512:100"),
            Some(CommunityValue::Standard(64512, 100))
        );
        assert_eq!(
            CommunityValue::parse("1:2:3"),
            Some(CommunityValue::Large(1, 2, 3))
        );
        assert_eq!(CommunityValue::parse("65536:1"), None);
        assert_eq!(CommunityValue::parse("1"), None);
        assert_eq!(CommunityValue::parse("a:b"), None);
    }
}
