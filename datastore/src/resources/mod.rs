//! Calico `projectcalico.org/v3` resources: typed structs with Calico's field names and defaults,
//! validation, multi-document YAML/JSON parsing, and the IPAM objects Calico keeps in etcd.
//!
//! - [`Kind`]: the kinds, their command-line names and etcd key prefixes.
//! - [`IPPool`], [`BGPPeer`], [`BGPConfiguration`], [`Node`]: `{metadata, spec}` structs that
//!   (de)serialize with `apiVersion` and `kind`. Decoding is lenient: every level keeps the
//!   fields Calyx does not model in an `extra` map and writes them back unchanged, so objects
//!   written by Calico 3.2x-3.31 (or a newer one) lose nothing when Calyx updates them. User
//!   input is strict instead: [`parse_documents`] and `patch` refuse fields that are not in
//!   Calico 3.31's API (`schema`).
//! - [`BGPFilter`]: import/export rules a BGPPeer names; [`IPReservation`]: reserved addresses.
//! - [`WorkloadEndpoint`]: the per-pod object Calico's CNI plugin writes (namespaced).
//! - [`Resource`]: any of them, with the operations the store and the CLI need.
//! - [`parse_documents`]: the `calyx apply -f` input: YAML or JSON, several documents, lists.
//! - [`ValidationError`], [`check_pool_overlaps`]: validation, one error naming kind, name, field
//!   and value.
//! - [`ClusterInformation`]: `clusterinformations/default`, read leniently and written back
//!   with every field it had.
//! - [`ipam`]: `AllocationBlock`, `BlockAffinity`, `IPAMHandle`, `IPAMConfig` and their keys.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod bfd;
mod bgpconfig;
mod bgpfilter;
mod bgppeer;
mod clusterinfo;
mod document;
mod felixconfig;
pub mod ipam;
mod ippool;
mod ipreservation;
mod kind;
mod node;
pub(crate) mod object;
pub(crate) mod schema;
mod types;
mod validate;
mod wep;

pub use bfd::{
    wants_bfd, BfdSpec, BFD_DEFAULT_INTERVAL, BFD_DEFAULT_MULTIPLIER, FAILURE_DETECTION_BFD,
    FAILURE_DETECTION_NONE,
};
pub use bgpconfig::{
    BGPConfiguration, BGPConfigurationSpec, BindMode, Community, CommunityValue,
    PrefixAdvertisement, ServiceCidr, DEFAULT_BGP_CONFIGURATION, LOG_SEVERITIES,
};
pub use bgpfilter::{
    parse_filter_cidr, BGPFilter, BGPFilterPrefixLength, BGPFilterRule, BGPFilterSpec,
    FilterFamily, FILTER_ACTIONS, MATCH_OPERATORS, SOURCE_REMOTE_PEERS,
};
pub use bgppeer::{
    BGPPassword, BGPPeer, BGPPeerSpec, NextHopMode, ReversePeering, SecretKeyRef, SourceAddress,
};
pub use clusterinfo::{
    is_cluster_information_kind, new_cluster_guid, ClusterInfoDecodeError, ClusterInformation,
    ClusterInformationSpec, CLUSTER_INFORMATION_KEY, CLUSTER_INFORMATION_KIND,
    CLUSTER_INFORMATION_NAME, CLUSTER_INFORMATION_NAMES, CLUSTER_INFORMATION_PREFIX,
};
pub(crate) use document::split_for_policy as split_documents_for_policy;
pub use document::{parse_documents, DocumentError, DocumentProblem};
pub use felixconfig::FelixConfiguration;
pub use ippool::{
    check_pool_overlaps, AllowedUse, AssignmentMode, EncapMode, IPPool, IPPoolSpec, ALL_NODES,
};
pub use ipreservation::{parse_reserved, IPReservation, IPReservationSpec};
pub use kind::{Kind, UnknownKind};
pub use node::{Node, NodeAddress, NodeBGPSpec, NodeSpec, OrchRef};
pub use object::{ObjectMeta, API_VERSION};
pub use types::{Asn, GoDuration, MacAddr, ParseValueError, PeerIp};
pub use validate::{
    check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value,
    check_no_host_bits, nets_overlap, ValidationError,
};
pub use wep::{
    workload_endpoint_name, WepDecodeError, WepNameError, WorkloadEndpoint, WorkloadEndpointSpec,
    LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, WORKLOAD_ENDPOINT_KIND,
    WORKLOAD_ENDPOINT_PREFIX,
};

/// Any `projectcalico.org/v3` resource. (De)serializes as the inner object, dispatching on `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An [`IPPool`].
    IPPool(IPPool),
    /// A [`BGPPeer`].
    BGPPeer(BGPPeer),
    /// A [`BGPConfiguration`].
    BGPConfiguration(BGPConfiguration),
    /// A [`Node`].
    Node(Node),
    /// A [`FelixConfiguration`] (stored as written).
    FelixConfiguration(FelixConfiguration),
    /// An [`IPReservation`].
    IPReservation(IPReservation),
    /// A [`BGPFilter`].
    BGPFilter(BGPFilter),
}

/// A stored value could not be decoded as a resource of the expected kind.
///
/// Display: `cannot decode IPPool: spec: unknown field \`foo\`, expected one of ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {kind}: {message}")]
pub struct DecodeError {
    /// The kind that was expected.
    pub kind: Kind,
    /// What is wrong, with the field path when known (`spec.cidr: invalid CIDR ...`).
    pub message: String,
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::IPPool(_) => Kind::IPPool,
            Resource::BGPPeer(_) => Kind::BGPPeer,
            Resource::BGPConfiguration(_) => Kind::BGPConfiguration,
            Resource::Node(_) => Kind::Node,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::IPReservation(_) => Kind::IPReservation,
            Resource::BGPFilter(_) => Kind::BGPFilter,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::IPPool(r) => &r.metadata,
            Resource::BGPPeer(r) => &r.metadata,
            Resource::BGPConfiguration(r) => &r.metadata,
            Resource::Node(r) => &r.metadata,
            Resource::FelixConfiguration(r) => &r.metadata,
            Resource::IPReservation(r) => &r.metadata,
            Resource::BGPFilter(r) => &r.metadata,
        }
    }

    /// The metadata, mutably (to set `resourceVersion`, `uid`, `creationTimestamp`).
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::IPPool(r) => &mut r.metadata,
            Resource::BGPPeer(r) => &mut r.metadata,
            Resource::BGPConfiguration(r) => &mut r.metadata,
            Resource::Node(r) => &mut r.metadata,
            Resource::FelixConfiguration(r) => &mut r.metadata,
            Resource::IPReservation(r) => &mut r.metadata,
            Resource::BGPFilter(r) => &mut r.metadata,
        }
    }

    /// The full etcd key: `/calico/resources/v3/projectcalico.org/ippools/<name>`.
    pub fn key(&self) -> String {
        self.kind().key(self.name())
    }

    /// Checks this resource on its own (not against others: see [`check_pool_overlaps`]).
    /// Returns the first problem.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.validate_all().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem with this resource, in field order (empty when valid).
    pub fn validate_all(&self) -> Vec<ValidationError> {
        match self {
            Resource::IPPool(r) => r.validate_all(),
            Resource::BGPPeer(r) => r.validate_all(),
            Resource::BGPConfiguration(r) => r.validate_all(),
            Resource::Node(r) => r.validate_all(),
            Resource::FelixConfiguration(r) => r.validate_all(),
            Resource::IPReservation(r) => r.validate_all(),
            Resource::BGPFilter(r) => r.validate_all(),
        }
    }

    /// The value to store in etcd: the whole object as compact JSON, without `resourceVersion`
    /// (the store's revision is authoritative).
    pub fn to_json(&self) -> Vec<u8> {
        let mut r = self.clone();
        r.metadata_mut().resource_version = None;
        // Serializing these types cannot fail: every map has string keys and every value is
        // plain data.
        serde_json::to_vec(&r).unwrap_or_default()
    }

    /// Decodes a stored value of `kind` (no validation: stored data is taken as it is). The
    /// `kind` field inside must match and modelled fields must have the right type, but fields
    /// Calyx does not model are kept (in the `extra` maps) instead of refused, as Calico's own
    /// Go decoder does, so that a value written by any Calico decodes and is written back
    /// whole. User input goes through [`Resource::from_json_strict`] or [`parse_documents`].
    pub fn from_json(kind: Kind, bytes: &[u8]) -> Result<Resource, DecodeError> {
        let fast = match kind {
            Kind::IPPool => serde_json::from_slice(bytes).map(Resource::IPPool),
            Kind::BGPPeer => serde_json::from_slice(bytes).map(Resource::BGPPeer),
            Kind::BGPConfiguration => serde_json::from_slice(bytes).map(Resource::BGPConfiguration),
            Kind::Node => serde_json::from_slice(bytes).map(Resource::Node),
            Kind::FelixConfiguration => {
                serde_json::from_slice(bytes).map(Resource::FelixConfiguration)
            }
            Kind::IPReservation => serde_json::from_slice(bytes).map(Resource::IPReservation),
            Kind::BGPFilter => serde_json::from_slice(bytes).map(Resource::BGPFilter),
        };
        fast.map_err(|json_err| {
            // Decode again through the path-tracking decoder for a better message.
            let message = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Err(_) => json_err.to_string(),
                Ok(v) => document::decode_value_with_path(kind, &v)
                    .err()
                    .unwrap_or_else(|| json_err.to_string()),
            };
            DecodeError { kind, message }
        })
    }

    /// Like [`Resource::from_json`] for input a user wrote: a field that is not in Calico
    /// 3.31's API for `kind` (a typo) is an error naming it; every field of that API is
    /// accepted and kept, modelled or not.
    pub fn from_json_strict(kind: Kind, bytes: &[u8]) -> Result<Resource, DecodeError> {
        let err = |message: String| DecodeError { kind, message };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        schema::check_fields(kind, &value, false).map_err(err)?;
        Resource::from_json(kind, bytes)
    }

    /// The object as YAML, as `calyx get -o yaml` prints it.
    pub fn to_yaml(&self) -> String {
        // As for JSON, serialization of these types cannot fail.
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// The pool, if this is one.
    pub fn as_ippool(&self) -> Option<&IPPool> {
        match self {
            Resource::IPPool(p) => Some(p),
            _ => None,
        }
    }

    /// The peer, if this is one.
    pub fn as_bgppeer(&self) -> Option<&BGPPeer> {
        match self {
            Resource::BGPPeer(p) => Some(p),
            _ => None,
        }
    }

    /// The BGP configuration, if this is one.
    pub fn as_bgpconfiguration(&self) -> Option<&BGPConfiguration> {
        match self {
            Resource::BGPConfiguration(p) => Some(p),
            _ => None,
        }
    }

    /// The node, if this is one.
    pub fn as_node(&self) -> Option<&Node> {
        match self {
            Resource::Node(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Resource {
    /// `IPPool "pool-a"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind(), self.name())
    }
}

impl From<IPPool> for Resource {
    fn from(r: IPPool) -> Self {
        Resource::IPPool(r)
    }
}
impl From<BGPPeer> for Resource {
    fn from(r: BGPPeer) -> Self {
        Resource::BGPPeer(r)
    }
}
impl From<BGPConfiguration> for Resource {
    fn from(r: BGPConfiguration) -> Self {
        Resource::BGPConfiguration(r)
    }
}
impl From<Node> for Resource {
    fn from(r: Node) -> Self {
        Resource::Node(r)
    }
}
impl From<FelixConfiguration> for Resource {
    fn from(r: FelixConfiguration) -> Self {
        Resource::FelixConfiguration(r)
    }
}
impl From<BGPFilter> for Resource {
    fn from(r: BGPFilter) -> Self {
        Resource::BGPFilter(r)
    }
}
impl From<IPReservation> for Resource {
    fn from(r: IPReservation) -> Self {
        Resource::IPReservation(r)
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::IPPool(r) => r.serialize(s),
            Resource::BGPPeer(r) => r.serialize(s),
            Resource::BGPConfiguration(r) => r.serialize(s),
            Resource::Node(r) => r.serialize(s),
            Resource::FelixConfiguration(r) => r.serialize(s),
            Resource::IPReservation(r) => r.serialize(s),
            Resource::BGPFilter(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    /// Buffers the object to read `kind`, then decodes the matching type. Error messages lose
    /// the field path; [`parse_documents`] keeps it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let kind_str = v
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| D::Error::custom("missing field `kind`"))?;
        let kind = Kind::from_kind_field(kind_str)
            .ok_or_else(|| D::Error::custom(format!("unknown kind {kind_str:?}")))?;
        let r = match kind {
            Kind::IPPool => serde_json::from_value(v).map(Resource::IPPool),
            Kind::BGPPeer => serde_json::from_value(v).map(Resource::BGPPeer),
            Kind::BGPConfiguration => serde_json::from_value(v).map(Resource::BGPConfiguration),
            Kind::Node => serde_json::from_value(v).map(Resource::Node),
            Kind::FelixConfiguration => serde_json::from_value(v).map(Resource::FelixConfiguration),
            Kind::IPReservation => serde_json::from_value(v).map(Resource::IPReservation),
            Kind::BGPFilter => serde_json::from_value(v).map(Resource::BGPFilter),
        };
        r.map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_drops_resource_version() {
        let mut p = IPPool::new("pool-a", IPPoolSpec::new("10.0.0.0/16".parse().unwrap()));
        p.metadata.resource_version = Some("42".into());
        p.metadata.uid = Some("u-1".into());
        let r = Resource::from(p);
        assert_eq!(
            r.key(),
            "/calico/resources/v3/projectcalico.org/ippools/pool-a"
        );
        let bytes = r.to_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("resourceVersion"), "{text}");
        assert!(text.contains(r#""uid":"u-1""#), "{text}");
        let back = Resource::from_json(Kind::IPPool, &bytes).unwrap();
        assert_eq!(back.name(), "pool-a");
        assert_eq!(back.metadata().resource_version, None);
        let e = Resource::from_json(Kind::Node, &bytes).unwrap_err();
        assert!(e.to_string().contains("expected \"Node\""), "{e}");
        let generic: Resource = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(generic, back);
        assert_eq!(generic.to_string(), "IPPool \"pool-a\"");
    }

    #[test]
    fn yaml_output() {
        let r = Resource::from(BGPConfiguration::new(
            "default",
            BGPConfigurationSpec::default(),
        ));
        assert_eq!(
            r.to_yaml(),
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec: {}\n"
        );
    }

    #[test]
    fn calico_written_values_decode() {
        // As Calico itself stores them (extra metadata, omitted defaults).
        let pool = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool","uid":"6f3b","creationTimestamp":"2024-01-01T00:00:00Z"},"spec":{"cidr":"192.168.0.0/16","ipipMode":"Always","natOutgoing":true,"blockSize":26,"nodeSelector":"all()"}}"#;
        let r = Resource::from_json(Kind::IPPool, pool).unwrap();
        assert!(r.validate().is_ok());
        // Calico 3.29+ output.
        let pool = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p"},"spec":{"cidr":"192.168.0.0/16","vxlanMode":"CrossSubnet","ipipMode":"Never","blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}}"#;
        let r = Resource::from_json(Kind::IPPool, pool).unwrap();
        assert_eq!(
            r.as_ippool().unwrap().spec.assignment_mode,
            Some(AssignmentMode::Automatic)
        );
        assert!(r.validate().is_ok());
        assert_eq!(Resource::from_json(Kind::IPPool, &r.to_json()).unwrap(), r);
    }

    #[test]
    fn decode_errors_name_the_field() {
        let pool = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","blockSize":"x"}}"#;
        let e = Resource::from_json(Kind::IPPool, pool).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot decode IPPool: spec.blockSize: invalid type"),
            "{e}"
        );
        let e = Resource::from_json(Kind::IPPool, b"{not json").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn stored_values_keep_unknown_fields_and_user_input_is_strict() {
        let node = br#"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1","generation":3},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24","futureKnob":true},"wireguard":{"interfaceIPv4Address":"10.1.0.1"}},"status":{"podCIDRs":["10.244.0.0/24"]},"futureTop":{"a":1}}"#;
        let r = Resource::from_json(Kind::Node, node).unwrap();
        assert_eq!(r.name(), "n1");
        let n = r.as_node().unwrap();
        assert_eq!(n.metadata.extra["generation"], 3);
        assert_eq!(
            n.spec.extra["wireguard"]["interfaceIPv4Address"],
            "10.1.0.1"
        );
        assert_eq!(
            n.spec.bgp.as_ref().unwrap().extra["futureKnob"],
            serde_json::Value::Bool(true)
        );
        // Written back, it is the same JSON value.
        let original: serde_json::Value = serde_json::from_slice(node).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(back, original);
        // Strict: Calico's own fields pass, the others fail with their path.
        let e = Resource::from_json_strict(Kind::Node, node).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode Node: unknown field `futureTop`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
        );
        let calico = br#"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1","generation":3},"spec":{"interfaces":[{"name":"eth0","addresses":["10.0.0.1"]}],"wireguard":{"interfaceIPv4Address":"10.1.0.1"}},"status":{"podCIDRs":["10.244.0.0/24"]}}"#;
        let r = Resource::from_json_strict(Kind::Node, calico).unwrap();
        assert!(r.validate().is_ok());
        let bgp = br#"{"kind":"BGPConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"communities":[{"name":"a","value":"1:2"},{"name":"b","value":"1:3","extra":1}]}}"#;
        let r = Resource::from_json(Kind::BGPConfiguration, bgp).unwrap();
        assert_eq!(
            r.as_bgpconfiguration().unwrap().spec.communities[1].extra["extra"],
            1
        );
        let e = Resource::from_json_strict(Kind::BGPConfiguration, bgp).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.communities[1]: unknown field `extra`"),
            "{e}"
        );
        // Wrong values of modelled fields are still errors, in both modes.
        let bad = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p"},"spec":{"cidr":"x","new":1}}"#;
        assert!(Resource::from_json(Kind::IPPool, bad).is_err());
        // A status on a kind without one is kept when stored, refused from a user.
        let pool = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","namespaceSelector":"all()"},"status":{"x":1}}"#;
        let r = Resource::from_json(Kind::IPPool, pool).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(back["status"]["x"], 1);
        assert_eq!(back["spec"]["namespaceSelector"], "all()");
        assert!(Resource::from_json_strict(Kind::IPPool, pool).is_err());
        let node = br#"{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":"node1","labels":{"kubernetes.io/hostname":"node1"}},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24","ipv4IPIPTunnelAddr":"192.168.1.0"},"orchRefs":[{"nodeName":"node1","orchestrator":"k8s"}]},"status":{}}"#;
        let r = Resource::from_json(Kind::Node, node).unwrap();
        assert!(r.validate().is_ok(), "{:?}", r.validate());
    }
}

/// Checks every file in `tests/fixtures/`: valid files parse; each `bad-*` file fails with the
/// message in its `# expect-error:` (from `parse_documents`) or `# expect-overlap:` (from
/// `check_pool_overlaps`) comment.
#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut seen = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "yaml" && ext != "json" {
                continue;
            }
            seen += 1;
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = |tag: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(tag))
                    .map(|s| s.trim().to_string())
            };
            let parsed = parse_documents(&text);
            if let Some(want) = expect("# expect-error:") {
                let e = parsed.expect_err(&name);
                assert!(
                    e.to_string().contains(&want),
                    "{name}: got {e}, want {want}"
                );
            } else if let Some(want) = expect("# expect-overlap:") {
                let rs = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                let pools: Vec<&IPPool> = rs.iter().filter_map(Resource::as_ippool).collect();
                let e = check_pool_overlaps(&pools).expect_err(&name);
                assert_eq!(e.to_string(), want, "{name}");
            } else {
                assert!(!name.starts_with("bad-"), "{name} has no expect comment");
                let rs = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!rs.is_empty(), "{name}");
                // Round trip through the stored form.
                for r in &rs {
                    assert_eq!(
                        &Resource::from_json(r.kind(), &r.to_json()).unwrap(),
                        r,
                        "{name}"
                    );
                    assert_eq!(&parse_documents(&r.to_yaml()).unwrap()[0], r, "{name}");
                }
            }
        }
        assert!(seen >= 10, "fixtures not found in {}", dir.display());
        // All the valid fixtures together: no pool overlaps another.
        let mut all = Vec::new();
        for f in [
            "all-kinds.yaml",
            "ippools.yaml",
            "bgppeers.yaml",
            "bgpconfigurations.yaml",
            "nodes.yaml",
            "list.yaml",
            "resources.json",
        ] {
            all.extend(parse_documents(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap());
        }
        let pools: Vec<&IPPool> = all.iter().filter_map(Resource::as_ippool).collect();
        assert!(pools.len() >= 6);
        check_pool_overlaps(&pools).unwrap();
    }
}

/// Property tests: valid resources survive the stored (JSON) and the YAML forms unchanged.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn arb_mode() -> impl Strategy<Value = EncapMode> {
        prop_oneof![
            Just(EncapMode::Always),
            Just(EncapMode::CrossSubnet),
            Just(EncapMode::Never)
        ]
    }

    fn arb_labels() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
        prop::collection::btree_map("[a-z]([a-z0-9.-]{0,6}[a-z0-9])?", "[a-zA-Z0-9]{0,6}", 0..4)
    }

    prop_compose! {
        fn arb_pool()(
            a in 1u8..=223, b: u8, prefix in 8u8..=28, extra in 0u8..=4,
            ipip in arb_mode(), vxlan_always: bool, nat: bool, disabled: bool,
            labels in arb_labels(),
            name in "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        ) -> IPPool {
            let net: ipnet::IpNet = ipnet::Ipv4Net::new(Ipv4Addr::new(a, b, 0, 0), prefix)
                .unwrap()
                .trunc()
                .into();
            let mut spec = IPPoolSpec::new(net);
            spec.block_size = (prefix + extra).clamp(20, 32);
            spec.ipip_mode = ipip;
            // At most one encapsulation.
            spec.vxlan_mode = if vxlan_always && !ipip.is_enabled() { EncapMode::Always } else { EncapMode::Never };
            spec.nat_outgoing = nat;
            spec.disabled = disabled;
            let mut p = IPPool::new(name, spec);
            p.metadata.labels = labels;
            p
        }
    }

    proptest! {
        #[test]
        fn pools_round_trip(p in arb_pool()) {
            prop_assume!(validate::reserved_overlap(&p.spec.cidr).is_none());
            let r = Resource::from(p);
            prop_assert_eq!(r.validate(), Ok(()));
            prop_assert_eq!(&Resource::from_json(Kind::IPPool, &r.to_json()).unwrap(), &r);
            let docs = parse_documents(&r.to_yaml()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&docs[0], &r);
        }

        #[test]
        fn parse_documents_never_panics(text in "[ -~\n]{0,200}") {
            let _ = parse_documents(&text);
        }

        #[test]
        fn block_ordinals_round_trip(a: u32, size in 20u8..=32, ord: usize) {
            let net: ipnet::IpNet = ipnet::Ipv4Net::new(Ipv4Addr::from(a), size).unwrap().trunc().into();
            let b = ipam::AllocationBlock::new(net).unwrap();
            let ord = ord % b.num_addresses();
            let ip = b.ordinal_to_ip(ord).unwrap();
            prop_assert!(net.contains(&ip));
            prop_assert_eq!(b.ip_to_ordinal(ip), Some(ord));
        }
    }
}
