//! Validation errors and the small syntax checks shared by every resource kind.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Kind;
use crate::selector::Selector;

/// One problem found while validating a resource.
///
/// Display: `IPPool "pool-a": spec.blockSize: 33 is out of range 20-32 for an IPv4 pool`, that is
/// `<kind> "<name>": <field>: <value> <reason>` (just `<reason>` when the value is empty, e.g. for
/// a missing field). [`ValidationError::detail`] gives the part after the resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {}", self.detail())]
pub struct ValidationError {
    /// Kind of the offending resource.
    pub kind: Kind,
    /// `metadata.name` of the offending resource (may be empty when the name itself is missing).
    pub name: String,
    /// Path of the offending field, e.g. `spec.blockSize` or `spec.communities[1].value`.
    pub field: String,
    /// The offending value as written (empty when the field is missing).
    pub value: String,
    /// What is wrong, phrased to follow the value: `is out of range 20-32 for an IPv4 pool`.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error; see the field docs for what each part holds.
    pub fn new(
        kind: Kind,
        name: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ValidationError {
            kind,
            name: name.into(),
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// The message without the resource: `spec.blockSize: 33 is out of range 20-32 for an IPv4
    /// pool`.
    pub fn detail(&self) -> String {
        if self.value.is_empty() {
            format!("{}: {}", self.field, self.reason)
        } else {
            format!("{}: {} {}", self.field, self.value, self.reason)
        }
    }
}

/// Collects validation problems for one resource; used by every kind's `validate_all`.
#[derive(Debug)]
pub(crate) struct Problems<'a> {
    kind: Kind,
    name: &'a str,
    pub(crate) errors: Vec<ValidationError>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(kind: Kind, name: &'a str) -> Self {
        Problems {
            kind,
            name,
            errors: Vec::new(),
        }
    }

    /// Records a problem.
    pub(crate) fn push(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        self.errors.push(ValidationError::new(
            self.kind,
            self.name,
            field,
            value.to_string(),
            reason,
        ));
    }

    /// Checks `metadata.name` as a DNS-1123 subdomain (what Calico requires of most kinds).
    pub(crate) fn check_subdomain_name(&mut self, name: &str) {
        if let Err(reason) = check_dns1123_subdomain(name) {
            self.push("metadata.name", quoted(name), reason);
        }
    }

    /// Checks a label-map (`metadata.labels`): keys and values in Kubernetes label syntax.
    pub(crate) fn check_labels(
        &mut self,
        field: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) {
        for (k, v) in labels {
            if let Err(reason) = check_label_key(k) {
                self.push(format!("{field}[{k}]"), quoted(k), reason);
            }
            if let Err(reason) = check_label_value(v) {
                self.push(format!("{field}[{k}]"), quoted(v), reason);
            }
        }
    }

    /// Checks a selector expression; empty is allowed only when `allow_empty`.
    pub(crate) fn check_selector(&mut self, field: &str, sel: &str, allow_empty: bool) {
        if sel.trim().is_empty() {
            if !allow_empty {
                self.push(
                    field,
                    quoted(sel),
                    "must not be empty (use all() to select everything)",
                );
            }
            return;
        }
        if let Err(e) = Selector::parse(sel) {
            self.push(
                field,
                quoted(sel),
                format!("is not a valid selector: {}", e.detail()),
            );
        }
    }
}

/// Quotes a string value for an error message.
pub(crate) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// Checks a DNS-1123 label: 1-63 lowercase alphanumerics or `-`, starting and ending with an
/// alphanumeric. Returns the reason when invalid.
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("is {} characters long, more than 63", s.len()));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.chars().all(ok_char) || !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err(
            "is not a valid DNS-1123 label (lowercase letters, digits and '-', \
                    starting and ending with a letter or digit)"
                .into(),
        );
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels. This is
/// what Calico requires of `metadata.name` for IPPool, BGPPeer, BGPConfiguration and Node.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("is {} characters long, more than 253", s.len()));
    }
    if s.split('.')
        .any(|label| check_dns1123_label(label).is_err())
    {
        return Err(
            "is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', \
                    each part starting and ending with a letter or digit)"
                .into(),
        );
    }
    Ok(())
}

/// Checks a Kubernetes label key: optional DNS-1123 subdomain prefix and `/`, then a name of 1-63
/// alphanumerics, `-`, `_`, `.` starting and ending with an alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if check_dns1123_subdomain(p).is_err() {
            return Err("has a prefix that is not a DNS-1123 subdomain".into());
        }
    }
    if name.is_empty() {
        return Err("is not a valid label key: the name part is empty".into());
    }
    check_label_value(name).map_err(|_| {
        "is not a valid label key (alphanumerics, '-', '_', '.', at most 63, starting and ending \
         with an alphanumeric, optionally prefixed by a DNS subdomain and '/')"
            .to_string()
    })
}

/// Checks a Kubernetes label value: empty, or at most 63 alphanumerics, `-`, `_`, `.` starting and
/// ending with an alphanumeric.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if v.len() > 63
        || !v.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        || !v.starts_with(alnum)
        || !v.ends_with(alnum)
    {
        return Err(
            "is not a valid label value (at most 63 alphanumerics, '-', '_', '.', \
                    starting and ending with an alphanumeric)"
                .into(),
        );
    }
    Ok(())
}

/// Checks that a network has no host bits set; the reason suggests the corrected network.
pub fn check_no_host_bits(net: &IpNet) -> Result<(), String> {
    if net.addr() != net.network() {
        return Err(format!("has host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(())
}

/// Reserved ranges a pool may not overlap: loopback, link-local and multicast.
pub(crate) fn reserved_overlap(net: &IpNet) -> Option<(&'static str, IpNet)> {
    const RESERVED: [(&str, &str); 6] = [
        ("loopback", "127.0.0.0/8"),
        ("link-local", "169.254.0.0/16"),
        ("multicast", "224.0.0.0/4"),
        ("loopback", "::1/128"),
        ("link-local", "fe80::/10"),
        ("multicast", "ff00::/8"),
    ];
    RESERVED.iter().find_map(|(what, s)| {
        let r: IpNet = s.parse().ok()?;
        nets_overlap(net, &r).then_some((*what, r))
    })
}

/// True when two networks share at least one address.
pub fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    let (a, b) = (a.trunc(), b.trunc());
    a.contains(&b.network()) || b.contains(&a.network())
}

/// True when the address is usable as a host or peer address (not unspecified or multicast).
pub(crate) fn is_unicast(ip: &IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        for ok in [
            "a",
            "pool-a",
            "node.example.com",
            "default",
            "node.k8s-1",
            "0abc",
        ] {
            assert!(check_dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Pool",
            "pool_a",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            &"a".repeat(254),
        ] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("projectcalico.org/name").is_ok());
        assert!(check_label_key("kubernetes.io/hostname").is_ok());
        assert!(check_label_key("a/").is_err());
        assert!(check_label_key("Foo_/x").is_err());
        assert!(check_label_key("-x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("rack-1.A_b").is_ok());
        assert!(check_label_value("a b").is_err());
    }

    #[test]
    fn host_bits_and_overlap() {
        let n: IpNet = "10.0.0.1/24".parse().unwrap();
        let e = check_no_host_bits(&n).unwrap_err();
        assert!(e.contains("10.0.0.0/24"), "{e}");
        assert!(check_no_host_bits(&"10.0.0.0/24".parse().unwrap()).is_ok());
        let a: IpNet = "10.0.0.0/16".parse().unwrap();
        let b: IpNet = "10.0.128.0/24".parse().unwrap();
        let c: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(nets_overlap(&a, &b) && nets_overlap(&b, &a));
        assert!(!nets_overlap(&a, &c));
        assert!(!nets_overlap(&a, &"fd00::/64".parse().unwrap()));
        assert!(reserved_overlap(&"169.254.0.0/24".parse().unwrap()).is_some());
        assert!(reserved_overlap(&"0.0.0.0/0".parse().unwrap()).is_some());
        assert!(reserved_overlap(&"192.168.0.0/16".parse().unwrap()).is_none());
    }

    #[test]
    fn display() {
        let e = ValidationError::new(
            Kind::IPPool,
            "pool-a",
            "spec.blockSize",
            "33",
            "is out of range 20-32 for an IPv4 pool",
        );
        assert_eq!(
            e.to_string(),
            "IPPool \"pool-a\": spec.blockSize: 33 is out of range 20-32 for an IPv4 pool"
        );
        let e = ValidationError::new(Kind::Node, "", "metadata.name", "", "must not be empty");
        assert_eq!(e.to_string(), "Node \"\": metadata.name: must not be empty");
    }
}
