//! `BGPPeer`: an explicit BGP peering.

use serde::{Deserialize, Serialize};

use super::object::calico_object;
use super::types::{Asn, GoDuration, PeerIp};
use super::validate::{check_dns1123_subdomain, is_unicast, quoted, Problems};
use super::{Kind, ObjectMeta, ValidationError};

/// A BGP peer (`kind: BGPPeer`): which nodes (`node` / `nodeSelector`, all nodes when neither is
/// set) peer with whom (`peerIP` + `asNumber`, or the nodes matched by `peerSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPPeer {
    /// Name, labels, revision.
    pub metadata: ObjectMeta,
    /// The peering.
    pub spec: BGPPeerSpec,
    /// Top-level fields Calyx does not model (a newer Calico's), kept as read.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

calico_object!(BGPPeer, BGPPeerSpec);

/// Which local address the session is sourced from (`sourceAddress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SourceAddress {
    /// Bind to the node's own IP (Calico's default).
    #[default]
    UseNodeIP,
    /// Let the kernel choose.
    None,
}

/// How the next hop of routes sent to a peer is set (`nextHopMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NextHopMode {
    /// BGP's default: self towards eBGP peers, unchanged towards iBGP peers.
    #[default]
    Auto,
    /// Always this node's address (BIRD `next hop self`).
    #[serde(rename = "Self")]
    Self_,
    /// Never changed (BIRD `next hop keep`).
    Keep,
}

/// Whether the reverse of a peering between Calico nodes is made automatically
/// (`reversePeering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ReversePeering {
    /// The nodes peered with also peer back (Calico's default).
    #[default]
    Auto,
    /// A separate BGPPeer must make the reverse peering.
    Manual,
}

/// A reference to a Kubernetes secret key holding the BGP password.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the secret.
    pub name: String,
    /// Key within the secret.
    pub key: String,
    /// When true, a missing secret means "no password" instead of an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The `password` of a peering: `{secretKeyRef: {name, key}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BGPPassword {
    /// Where the password is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The `spec` of a [`BGPPeer`]. Empty strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The one node that has this peering (exclusive with `nodeSelector`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Selector over Node labels: the nodes that have this peering.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    /// The remote address (exclusive with `peerSelector`), optionally with a port.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<PeerIp>,
    /// Selector over Node labels: peer with those Calyx nodes (exclusive with `peerIP`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_selector: String,
    /// The remote AS number (required with `peerIP`; taken from the Node with `peerSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<Asn>,
    /// The AS this node presents to this peer instead of its own (BIRD `local as`).
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<Asn>,
    /// How the next hop is set towards this peer; beats `keepOriginalNextHop` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// Seconds between KEEPALIVEs (`"10s"`; default a third of the hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<GoDuration>,
    /// The gateway through which `peerIP` is reached: a static `<peerIP>/32 via` route.
    /// Kept as text (checked on user input, parsed when used), so that a bad value written
    /// by someone else does not hide the whole object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reachable_by: String,
    /// Whether the nodes this peering names also peer back (default `Auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
    /// TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BGPPassword>,
    /// Keep the original next hop when advertising to this (eBGP) peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    /// The session source address (default `UseNodeIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// Graceful-restart time advertised to the peer (`"120s"`; default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<GoDuration>,
    /// GTSM (RFC 5082): the number of hops allowed to the peer; unset or 0 disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// Accept routes whose AS path holds the local AS up to this many times.
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<u32>,
    /// Names of BGPFilter resources applied to this peering (kept, not yet acted on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// `None` or `BFDIfDirectlyConnected` (Calico Enterprise): run BFD with a directly
    /// connected peer and take the session down as soon as BFD detects a failure. A string,
    /// so that a value of a newer Calico is kept (it is refused on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detection_mode: Option<String>,
    /// BFD timers of this peering (a Calyx addition; see `BfdSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<super::BfdSpec>,
    /// Fields Calyx does not model (of Calico's API, or of a newer Calico), kept as read and
    /// written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BGPPeer {
    /// Every problem with this peer (empty when valid).
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::BGPPeer, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        let s = &self.spec;
        if !s.node.is_empty() {
            if let Err(reason) = check_dns1123_subdomain(&s.node) {
                p.push("spec.node", quoted(&s.node), reason);
            }
            if !s.node_selector.is_empty() {
                p.push(
                    "spec.nodeSelector",
                    quoted(&s.node_selector),
                    "cannot be set together with spec.node",
                );
            }
        }
        p.check_selector("spec.nodeSelector", &s.node_selector, true);
        p.check_selector("spec.peerSelector", &s.peer_selector, true);
        match (&s.peer_ip, s.peer_selector.trim().is_empty()) {
            (None, true) => p.push("spec.peerIP", "", "must be set (or spec.peerSelector)"),
            (Some(ip), false) => p.push(
                "spec.peerSelector",
                quoted(&s.peer_selector),
                format!("cannot be set together with spec.peerIP ({ip})"),
            ),
            (Some(ip), true) => {
                if !is_unicast(&ip.addr) {
                    p.push("spec.peerIP", ip, "is not a unicast address");
                }
                if ip.port == Some(0) {
                    p.push("spec.peerIP", ip, "has port 0");
                }
                if s.as_number.is_none() {
                    p.push("spec.asNumber", "", "must be set when spec.peerIP is set");
                }
            }
            (None, false) => {
                if let Some(asn) = s.as_number {
                    p.push(
                        "spec.asNumber",
                        asn,
                        "must not be set with spec.peerSelector (the peers' AS numbers come from their Nodes)",
                    );
                }
            }
        }
        if s.as_number == Some(Asn(0)) {
            p.push("spec.asNumber", 0, "is out of range 1-4294967295");
        }
        if s.local_as_number == Some(Asn(0)) {
            p.push("spec.localASNumber", 0, "is out of range 1-4294967295");
        }
        if !s.reachable_by.is_empty() {
            match s.reachable_by.parse::<std::net::IpAddr>() {
                Err(_) => p.push(
                    "spec.reachableBy",
                    quoted(&s.reachable_by),
                    "is not an IP address",
                ),
                Ok(gw) => match &s.peer_ip {
                    Some(ip) if ip.addr.is_ipv4() != gw.is_ipv4() => p.push(
                        "spec.reachableBy",
                        quoted(&s.reachable_by),
                        format!("is not of the address family of spec.peerIP ({ip})"),
                    ),
                    _ => {}
                },
            }
        }
        if let Some(pw) = &s.password {
            match &pw.secret_key_ref {
                None => p.push("spec.password.secretKeyRef", "", "must be set"),
                Some(r) => {
                    if let Err(reason) = check_dns1123_subdomain(&r.name) {
                        p.push("spec.password.secretKeyRef.name", quoted(&r.name), reason);
                    }
                    let key_ok = !r.key.is_empty()
                        && r.key.len() <= 253
                        && r.key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !key_ok {
                        p.push(
                            "spec.password.secretKeyRef.key",
                            quoted(&r.key),
                            "is not a valid secret key (alphanumerics, '-', '_' and '.')",
                        );
                    }
                }
            }
        }
        super::bfd::check(
            &mut p,
            "spec.failureDetectionMode",
            s.failure_detection_mode.as_deref(),
            s.bfd.as_ref(),
        );
        p.errors
    }

    /// The first problem with this peer, if any.
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
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  nodeSelector: rack == 'rack-1'
  peerIP: 192.0.2.1
  asNumber: 64513
  password:
    secretKeyRef: {name: bgp-secrets, key: rr-password}
  keepOriginalNextHop: true
  sourceAddress: None
  maxRestartTime: 120s
  ttlSecurity: 1
  localASNumber: 64600
  nextHopMode: Self
  keepaliveTime: 10s
  reachableBy: 192.0.2.254
  reversePeering: Manual
"#;

    #[test]
    fn full_peer() {
        let p: BGPPeer = serde_yaml_ng::from_str(FULL).unwrap();
        assert!(p.validate().is_ok(), "{:?}", p.validate());
        assert_eq!(p.spec.as_number, Some(Asn(64513)));
        assert_eq!(p.spec.source_address, Some(SourceAddress::None));
        assert_eq!(p.spec.max_restart_time.unwrap().0.as_secs(), 120);
        assert_eq!(p.spec.local_as_number, Some(Asn(64600)));
        assert_eq!(p.spec.next_hop_mode, Some(NextHopMode::Self_));
        assert_eq!(p.spec.keepalive_time.unwrap().0.as_secs(), 10);
        assert_eq!(p.spec.reachable_by, "192.0.2.254");
        assert_eq!(p.spec.reverse_peering, Some(ReversePeering::Manual));
        assert!(p.extra.is_empty() && p.spec.extra.is_empty());
        let r = p
            .spec
            .password
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("bgp-secrets", "rr-password")
        );
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.contains(r#""peerIP":"192.0.2.1""#), "{j}");
        assert!(j.contains(r#""maxRestartTime":"2m0s""#), "{j}");
        let back: BGPPeer = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn rules() {
        let mut p: BGPPeer = serde_yaml_ng::from_str(FULL).unwrap();
        p.spec.node = "node1".into();
        assert_eq!(p.validate().unwrap_err().field, "spec.nodeSelector");
        p.spec.node_selector.clear();
        assert!(p.validate().is_ok());
        p.spec.as_number = None;
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "BGPPeer \"rack1-tor\": spec.asNumber: must be set when spec.peerIP is set"
        );
        p.spec.as_number = Some(Asn(0));
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("spec.asNumber: 0 is out of range"));
        p.spec.as_number = Some(Asn(1));
        p.spec.peer_selector = "has(rr)".into();
        assert_eq!(p.validate().unwrap_err().field, "spec.peerSelector");
        p.spec.peer_ip = None;
        assert_eq!(p.validate().unwrap_err().field, "spec.asNumber");
        p.spec.as_number = None;
        assert!(p.validate().is_ok());
        p.spec.peer_selector.clear();
        assert_eq!(p.validate().unwrap_err().field, "spec.peerIP");

        let mut p: BGPPeer = serde_yaml_ng::from_str(FULL).unwrap();
        p.spec.reachable_by = "2001:db8::1".into();
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("spec.reachableBy: \"2001:db8::1\" is not of the address family"));
        p.spec.reachable_by = "gw".into();
        assert_eq!(p.validate().unwrap_err().field, "spec.reachableBy");
        p.spec.reachable_by.clear();
        p.spec.local_as_number = Some(Asn(0));
        assert_eq!(p.validate().unwrap_err().field, "spec.localASNumber");
    }

    #[test]
    fn bad_values() {
        let e = serde_yaml_ng::from_str::<BGPPeer>(&FULL.replace("192.0.2.1", "192.0.2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.peerIP: invalid peer IP \"192.0.2\""),
            "{e}"
        );
        let e = serde_yaml_ng::from_str::<BGPPeer>(&FULL.replace("120s", "2 minutes"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.maxRestartTime"), "{e}");
        let e = serde_yaml_ng::from_str::<BGPPeer>(&FULL.replace("None", "Node"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.sourceAddress"), "{e}");
        let e = serde_yaml_ng::from_str::<BGPPeer>(&FULL.replace("64513", "4294967296"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.asNumber: AS number 4294967296 is out of range"),
            "{e}"
        );
        let p = serde_yaml_ng::from_str::<BGPPeer>(&FULL.replace("64513", "'1.10'")).unwrap();
        assert_eq!(p.spec.as_number, Some(Asn(65546)));
    }
}
