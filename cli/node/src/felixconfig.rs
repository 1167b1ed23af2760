//! `FelixConfiguration` as Felix reads it from the datastore: the `default` resource, then
//! `node.<nodename>`, whose fields win one by one. Read as JSON straight from the watched keys
//! (`/calico/resources/v3/projectcalico.org/felixconfigurations/<name>`), so that what
//! calicoctl wrote applies unchanged; only the fields Calyx acts on are interpreted, and a bad
//! value is logged and ignored (Felix's default applies), never fatal.
//!
//! Acted on so far, all live: `natOutgoingAddress`, `natPortRange`, `natOutgoingExclusions`,
//! `vxlanVNI`, `vxlanPort`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_felix::rules::calyx::NatExclusions;
use serde_json::Value;
use tracing::warn;

/// Where FelixConfiguration resources are stored.
pub const KEY_PREFIX: &str = "/calico/resources/v3/projectcalico.org/felixconfigurations/";

/// The FelixConfiguration settings Calyx acts on, after precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FelixSettings {
    /// `natOutgoingAddress`: SNAT to this address instead of masquerading.
    pub nat_outgoing_address: Option<IpAddr>,
    /// `natPortRange`: source ports NAT may use.
    pub nat_port_range: Option<(u16, u16)>,
    /// `natOutgoingExclusions`.
    pub nat_outgoing_exclusions: NatExclusions,
    /// `vxlanVNI` (Felix's default 4096 when unset).
    pub vxlan_vni: Option<u32>,
    /// `vxlanPort` (Felix's default 4789 when unset).
    pub vxlan_port: Option<u16>,
}

/// An integer field within `range`; a bad value is logged and ignored.
fn int_field(spec: &BTreeMap<String, Value>, field: &str, range: (u64, u64)) -> Option<u64> {
    let v = spec.get(field)?;
    match v.as_u64() {
        Some(n) if (range.0..=range.1).contains(&n) => Some(n),
        _ => {
            warn!(value = %v, field, min = range.0, max = range.1,
                  "FelixConfiguration: out of range or not an integer; ignored");
            None
        }
    }
}

/// The `spec` fields of `default` overridden by those of `node.<node>`.
fn merged_spec(configs: &BTreeMap<String, Value>, node: &str) -> BTreeMap<String, Value> {
    let mut spec = BTreeMap::new();
    for name in ["default".to_string(), format!("node.{node}")] {
        if let Some(Value::Object(fields)) = configs.get(&name).and_then(|c| c.get("spec")) {
            for (k, v) in fields {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    spec
}

/// `natPortRange` as Calico writes it: a port (`8080`, `"8080"`) or a range (`"32768:65535"`).
fn port_range(v: &Value) -> Option<(u16, u16)> {
    match v {
        Value::Number(n) => {
            let p = u16::try_from(n.as_u64()?).ok()?;
            Some((p, p))
        }
        Value::String(s) => {
            let (lo, hi) = match s.split_once(':') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let p = s.trim().parse().ok()?;
                    (p, p)
                }
            };
            (lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}

/// The settings for `node` from the FelixConfiguration resources by name.
pub fn effective(configs: &BTreeMap<String, Value>, node: &str) -> FelixSettings {
    let spec = merged_spec(configs, node);
    let mut s = FelixSettings::default();
    if let Some(v) = spec.get("natOutgoingAddress") {
        match v.as_str().map(|a| a.trim().parse::<IpAddr>()) {
            Some(Ok(a)) => s.nat_outgoing_address = Some(a),
            _ if v.as_str() == Some("") || v.is_null() => {}
            _ => {
                warn!(value = %v, "FelixConfiguration natOutgoingAddress: not an IP address; ignored")
            }
        }
    }
    if let Some(v) = spec.get("natPortRange") {
        match port_range(v) {
            Some(r) if r != (0, 0) => s.nat_port_range = Some(r),
            Some(_) => {}
            None => {
                warn!(value = %v, "FelixConfiguration natPortRange: expected N or \"MIN:MAX\"; ignored")
            }
        }
    }
    if let Some(v) = spec.get("natOutgoingExclusions") {
        match v.as_str() {
            Some("IPPoolsOnly") => {}
            Some("IPPoolsAndHostIPs") => {
                s.nat_outgoing_exclusions = NatExclusions::IpPoolsAndHostIps
            }
            _ => {
                warn!(value = %v, "FelixConfiguration natOutgoingExclusions: expected IPPoolsOnly or IPPoolsAndHostIPs; ignored")
            }
        }
    }
    // A VNI is 24 bits.
    s.vxlan_vni = int_field(&spec, "vxlanVNI", (1, 0xff_ffff)).and_then(|n| u32::try_from(n).ok());
    s.vxlan_port = int_field(&spec, "vxlanPort", (1, 65535)).and_then(|n| u16::try_from(n).ok());
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn configs(v: &[(&str, Value)]) -> BTreeMap<String, Value> {
        v.iter().map(|(n, s)| (n.to_string(), s.clone())).collect()
    }

    #[test]
    fn node_fields_override_default_fields_one_by_one() {
        let c = configs(&[
            (
                "default",
                json!({"spec": {"natOutgoingAddress": "192.0.2.1", "natPortRange": "32768:40000"}}),
            ),
            (
                "node.n1",
                json!({"spec": {"natOutgoingAddress": "192.0.2.9"}}),
            ),
        ]);
        let n1 = effective(&c, "n1");
        assert_eq!(n1.nat_outgoing_address, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(n1.nat_port_range, Some((32768, 40000)));
        let n2 = effective(&c, "n2");
        assert_eq!(n2.nat_outgoing_address, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_ignored() {
        let c = configs(&[(
            "default",
            json!({"spec": {"natOutgoingAddress": "nope", "natPortRange": "9:1",
                            "natOutgoingExclusions": "IPPoolsAndHostIPs"}}),
        )]);
        let s = effective(&c, "x");
        assert_eq!(s.nat_outgoing_address, None);
        assert_eq!(s.nat_port_range, None);
        assert_eq!(s.nat_outgoing_exclusions, NatExclusions::IpPoolsAndHostIps);
        assert_eq!(effective(&BTreeMap::new(), "x"), FelixSettings::default());
        assert_eq!(port_range(&json!(8080)), Some((8080, 8080)));
        assert_eq!(port_range(&json!("1024")), Some((1024, 1024)));
        let c = configs(&[(
            "default",
            json!({"spec": {"vxlanVNI": 5000, "vxlanPort": 70000}}),
        )]);
        let s = effective(&c, "x");
        assert_eq!((s.vxlan_vni, s.vxlan_port), (Some(5000), None));
    }
}
