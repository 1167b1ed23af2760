//! `IPReservation`: addresses IPAM must never hand out automatically (Calico 3.21+,
//! `api/pkg/apis/projectcalico/v3/ipreservation.go`). Cluster-scoped; stored at
//! `/calico/resources/v3/projectcalico.org/ipreservations/<name>`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::object::calico_object;
use super::validate::Problems;
use super::{Kind, ObjectMeta, ValidationError};

/// An IP reservation (`kind: IPReservation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IPReservation {
    /// Name, labels, revision.
    pub metadata: ObjectMeta,
    /// The reserved ranges.
    pub spec: IPReservationSpec,
    /// Top-level fields Calyx does not model, kept as read.
    pub extra: Map<String, Value>,
}

calico_object!(IPReservation, IPReservationSpec);

/// The `spec` of an [`IPReservation`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IPReservationSpec {
    /// CIDRs (or single addresses) that automatic assignment skips, as written.
    #[serde(
        rename = "reservedCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reserved_cidrs: Vec<String>,
    /// Fields of a newer Calico, kept as read and written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parses one `reservedCIDRs` entry: a CIDR (host bits ignored, as Calico's IPAM masks it) or a
/// bare address (a /32 or /128).
pub fn parse_reserved(text: &str) -> Option<IpNet> {
    let t = text.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Some(n.trunc());
    }
    t.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

impl IPReservationSpec {
    /// The reserved networks; entries that do not parse are skipped (stored data is read
    /// leniently; user input was refused by validation).
    pub fn nets(&self) -> Vec<IpNet> {
        self.reserved_cidrs
            .iter()
            .filter_map(|c| parse_reserved(c))
            .collect()
    }
}

impl IPReservation {
    /// Every problem with this object (empty when valid): the name, labels, and every
    /// `reservedCIDRs` entry a CIDR or an address.
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::IPReservation, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        for (i, c) in self.spec.reserved_cidrs.iter().enumerate() {
            if parse_reserved(c).is_none() {
                p.push(
                    format!("spec.reservedCIDRs[{i}]"),
                    super::validate::quoted(c),
                    "not a CIDR or an IP address",
                );
            }
        }
        p.errors
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_validates_and_parses() {
        let json = r#"{"kind":"IPReservation","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"r1"},"spec":{"reservedCIDRs":["10.0.0.0/30","10.0.1.7","fd00::/126","bad"]}}"#;
        let r: IPReservation = serde_json::from_str(json).unwrap();
        assert_eq!(r.spec.nets().len(), 3);
        let errs = r.validate_all();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].to_string().contains("reservedCIDRs[3]"),
            "{}",
            errs[0]
        );
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["spec"]["reservedCIDRs"][1], "10.0.1.7");
        assert_eq!(back["kind"], "IPReservation");
    }
}
