//! `BGPFilter`: ordered accept/reject rules on the routes a BGPPeer's sessions import and export
//! (Calico 3.26+, `api/pkg/apis/projectcalico/v3/bgpfilter.go`). Cluster-scoped; stored at
//! `/calico/resources/v3/projectcalico.org/bgpfilters/<name>`; a BGPPeer names the filters it
//! uses in `spec.filters`.
//!
//! The enumerations (`matchOperator`, `source`, `action`) and the CIDR are kept as the text
//! read, so that an object a newer Calico wrote (a value Calyx does not know) still decodes;
//! [`BGPFilter::validate_all`] refuses such values from a user, and the node's translation
//! skips a rule it cannot honour, with a warning.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::object::calico_object;
use super::validate::{quoted, Problems};
use super::{Kind, ObjectMeta, ValidationError};

/// A BGP filter (`kind: BGPFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPFilter {
    /// Name, labels, revision.
    pub metadata: ObjectMeta,
    /// The rules.
    pub spec: BGPFilterSpec,
    /// Top-level fields Calyx does not model, kept as read.
    pub extra: Map<String, Value>,
}

calico_object!(BGPFilter, BGPFilterSpec);

/// The `spec` of a [`BGPFilter`]: four ordered rule lists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BGPFilterSpec {
    /// Rules on IPv4 routes sent to a peer.
    #[serde(rename = "exportV4", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BGPFilterRule>,
    /// Rules on IPv4 routes received from a peer.
    #[serde(rename = "importV4", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BGPFilterRule>,
    /// Rules on IPv6 routes sent to a peer.
    #[serde(rename = "exportV6", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BGPFilterRule>,
    /// Rules on IPv6 routes received from a peer.
    #[serde(rename = "importV6", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BGPFilterRule>,
    /// Fields of a newer Calico, kept as read and written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One rule (`BGPFilterRuleV4` / `BGPFilterRuleV6`): all its conditions must hold for its
/// action to apply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BGPFilterRule {
    /// The CIDR the route's prefix is compared with (empty: any prefix).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    /// The range of prefix lengths that match (only with `cidr`).
    #[serde(
        rename = "prefixLength",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prefix_length: Option<BGPFilterPrefixLength>,
    /// `RemotePeers`: only routes learned from BGP peers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Only routes whose outgoing interface matches this name (`*` wildcards).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// `Equal`, `NotEqual`, `In` or `NotIn` (required with `cidr`).
    #[serde(
        rename = "matchOperator",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub match_operator: String,
    /// `Accept` or `Reject`.
    #[serde(default)]
    pub action: String,
    /// Fields of a newer Calico (`peerType`, `communities`, `operations`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `prefixLength` of a rule: the inclusive range of prefix lengths that match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BGPFilterPrefixLength {
    /// The shortest prefix length that matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// The longest prefix length that matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Fields of a newer Calico, kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `matchOperator` values of Calico's API.
pub const MATCH_OPERATORS: [&str; 4] = ["Equal", "NotEqual", "In", "NotIn"];
/// The `action` values of Calico's API.
pub const FILTER_ACTIONS: [&str; 2] = ["Accept", "Reject"];
/// The only `source` value of Calico's API.
pub const SOURCE_REMOTE_PEERS: &str = "RemotePeers";

/// The address family a rule list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterFamily {
    /// `importV4` / `exportV4`.
    V4,
    /// `importV6` / `exportV6`.
    V6,
}

impl FilterFamily {
    /// The longest prefix of the family (32 or 128).
    pub fn max_len(self) -> u8 {
        match self {
            FilterFamily::V4 => 32,
            FilterFamily::V6 => 128,
        }
    }
}

/// Parses a rule's `cidr` as Calico does (`net.ParseCIDR`, host bits masked); `None` when it
/// is not a CIDR of `family`.
pub fn parse_filter_cidr(text: &str, family: FilterFamily) -> Option<IpNet> {
    let net = text.trim().parse::<IpNet>().ok()?.trunc();
    match (family, net) {
        (FilterFamily::V4, IpNet::V4(_)) | (FilterFamily::V6, IpNet::V6(_)) => Some(net),
        _ => None,
    }
}

/// Whether `name` is a valid `interface` of a rule (Calico's `bgpFilterInterface`: `*`, or
/// 1-15 of letters, digits, `_ . * -`).
fn valid_interface(name: &str) -> bool {
    name == "*"
        || ((1..=15).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*' | '-')))
}

impl BGPFilter {
    /// Every problem with this object (empty when valid): the name, labels, and every rule as
    /// Calico's validator checks it (`validateBGPFilterRule` and the field validators).
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::BGPFilter, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        let s = &self.spec;
        for (list, family, rules) in [
            ("exportV4", FilterFamily::V4, &s.export_v4),
            ("importV4", FilterFamily::V4, &s.import_v4),
            ("exportV6", FilterFamily::V6, &s.export_v6),
            ("importV6", FilterFamily::V6, &s.import_v6),
        ] {
            for (i, rule) in rules.iter().enumerate() {
                check_rule(&mut p, &format!("spec.{list}[{i}]"), family, rule);
            }
        }
        p.errors
    }
}

fn check_rule(p: &mut Problems<'_>, at: &str, family: FilterFamily, r: &BGPFilterRule) {
    if !FILTER_ACTIONS.contains(&r.action.as_str()) {
        p.push(
            format!("{at}.action"),
            quoted(&r.action),
            "must be Accept or Reject",
        );
    }
    if !r.cidr.is_empty() && parse_filter_cidr(&r.cidr, family).is_none() {
        let want = match family {
            FilterFamily::V4 => "is not an IPv4 CIDR",
            FilterFamily::V6 => "is not an IPv6 CIDR",
        };
        p.push(format!("{at}.cidr"), quoted(&r.cidr), want);
    }
    if !r.match_operator.is_empty() && !MATCH_OPERATORS.contains(&r.match_operator.as_str()) {
        p.push(
            format!("{at}.matchOperator"),
            quoted(&r.match_operator),
            "must be Equal, NotEqual, In or NotIn",
        );
    }
    if !r.cidr.is_empty() && r.match_operator.is_empty() {
        p.push(
            format!("{at}.matchOperator"),
            quoted(""),
            "is required when cidr is set",
        );
    }
    if r.cidr.is_empty() && !r.match_operator.is_empty() {
        p.push(
            format!("{at}.cidr"),
            quoted(""),
            "is required when matchOperator is set",
        );
    }
    if let Some(len) = &r.prefix_length {
        if r.cidr.is_empty() {
            p.push(
                format!("{at}.cidr"),
                quoted(""),
                "is required when prefixLength is set",
            );
        }
        let top = i64::from(family.max_len());
        for (name, v) in [("min", len.min), ("max", len.max)] {
            if let Some(v) = v.filter(|v| !(0..=top).contains(v)) {
                p.push(
                    format!("{at}.prefixLength.{name}"),
                    v,
                    format!("is out of range 0-{top}"),
                );
            }
        }
    }
    if !r.source.is_empty() && r.source != SOURCE_REMOTE_PEERS {
        p.push(
            format!("{at}.source"),
            quoted(&r.source),
            "must be RemotePeers",
        );
    }
    if !r.interface.is_empty() && !valid_interface(&r.interface) {
        p.push(
            format!("{at}.interface"),
            quoted(&r.interface),
            "must be 1-15 letters, digits or `_ . * -`",
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_leniently_and_writes_back_unchanged() {
        let json = r#"{"kind":"BGPFilter","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"f1","uid":"u"},
            "spec":{"importV4":[{"cidr":"10.0.0.0/8","matchOperator":"In","prefixLength":{"min":16,"max":24},"action":"Accept"},
                                {"action":"Reject","peerType":"eBGP"}],
                    "exportV6":[{"cidr":"fd00::/8","matchOperator":"NotIn","source":"RemotePeers","interface":"eth*","action":"Reject"}],
                    "futureList":[1]}}"#;
        let f: BGPFilter = serde_json::from_str(json).unwrap();
        assert_eq!(f.spec.import_v4.len(), 2);
        assert_eq!(
            f.spec.import_v4[0].prefix_length.as_ref().unwrap().min,
            Some(16)
        );
        assert_eq!(f.spec.import_v4[1].extra["peerType"], "eBGP");
        assert!(f.validate_all().is_empty(), "{:?}", f.validate_all());
        let back: Value = serde_json::to_value(&f).unwrap();
        let original: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn validation_names_the_field() {
        let json = r#"{"kind":"BGPFilter","apiVersion":"projectcalico.org/v3","metadata":{"name":"f"},
            "spec":{"importV4":[{"cidr":"fd00::/8","matchOperator":"In","action":"Accept"},
                                {"cidr":"10.0.0.0/8","action":"Drop"},
                                {"matchOperator":"Like","action":"Reject","prefixLength":{"max":33}},
                                {"action":"Accept","source":"Local","interface":"a-very-long-interface-name"}]}}"#;
        let f: BGPFilter = serde_json::from_str(json).unwrap();
        let errs: Vec<String> = f.validate_all().iter().map(|e| e.to_string()).collect();
        let all = errs.join("\n");
        for want in [
            "spec.importV4[0].cidr",
            "spec.importV4[1].action",
            "spec.importV4[1].matchOperator",
            "spec.importV4[2].matchOperator",
            "spec.importV4[2].cidr",
            "spec.importV4[2].prefixLength.max",
            "spec.importV4[3].source",
            "spec.importV4[3].interface",
        ] {
            assert!(all.contains(want), "{want} missing in:\n{all}");
        }
        assert_eq!(errs.len(), 9, "{all}");
    }

    #[test]
    fn cidrs_by_family() {
        assert_eq!(
            parse_filter_cidr("10.1.2.3/16", FilterFamily::V4),
            Some("10.1.0.0/16".parse().unwrap())
        );
        assert_eq!(parse_filter_cidr("10.1.2.3/16", FilterFamily::V6), None);
        assert_eq!(parse_filter_cidr("10.1.2.3", FilterFamily::V4), None);
        assert!(valid_interface("eth*") && valid_interface("*") && !valid_interface("a b"));
    }
}
