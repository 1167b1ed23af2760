//! `FelixConfiguration` as Felix reads it from the datastore: the `default` resource, then
//! `node.<nodename>`, whose fields win one by one. Read as JSON straight from the watched keys
//! (`/calico/resources/v3/projectcalico.org/felixconfigurations/<name>`), so that what
//! calicoctl wrote applies unchanged; only the fields Calyx acts on are interpreted, and a bad
//! value is logged and ignored (Felix's default applies), never fatal.
//!
//! Acted on, all live: `natOutgoingAddress`, `natPortRange`, `natOutgoingExclusions`,
//! `vxlanVNI`, `vxlanPort`, `ipipMTU`, `vxlanMTU`, `vxlanMTUV6`, `routeRefreshInterval`,
//! `deviceRouteProtocol`, `deviceRouteSourceAddress`, `deviceRouteSourceAddressIPv6`,
//! `logSeverityScreen`.
//!
//! Precedence as in Felix: a `FELIX_<FIELD>` environment variable (the field's name in upper
//! case, e.g. `FELIX_VXLANMTU`, `FELIX_IPINIPMTU`) beats the datastore; Calyx's own settings
//! (`CALYX_ROUTE_PROTOCOL`, `CALYX_ROUTE_REFRESH_INTERVAL`, `CALYX_LOG_LEVEL`) beat both,
//! which the caller applies.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

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
    /// `ipipMTU`; `None` (unset or 0) = auto-detect.
    pub ipip_mtu: Option<u32>,
    /// `vxlanMTU`; `None` (unset or 0) = auto-detect.
    pub vxlan_mtu: Option<u32>,
    /// `vxlanMTUV6`; `None` (unset or 0) = auto-detect.
    pub vxlan_mtu_v6: Option<u32>,
    /// `routeRefreshInterval`; `Some(ZERO)` means periodic refresh off, as in Felix.
    pub route_refresh_interval: Option<Duration>,
    /// `deviceRouteProtocol`.
    pub device_route_protocol: Option<u8>,
    /// `deviceRouteSourceAddress`.
    pub device_route_source_v4: Option<Ipv4Addr>,
    /// `deviceRouteSourceAddressIPv6`.
    pub device_route_source_v6: Option<Ipv6Addr>,
    /// `healthPort` (read at start-up).
    pub health_port: Option<u16>,
    /// `prometheusMetricsEnabled` (read at start-up).
    pub prometheus_metrics_enabled: bool,
    /// `prometheusMetricsPort` (Felix's default 9091 when unset; read at start-up).
    pub prometheus_metrics_port: Option<u16>,
    /// `logSeverityScreen` as a tracing level (`debug`, `info`, `warn`, `error`).
    pub log_severity_screen: Option<&'static str>,
}

/// The FelixConfiguration fields that Felix reads from `FELIX_<FIELD>` (upper case) and that
/// Calyx acts on, with the spelling of their environment variable where it differs.
const ENV_FIELDS: &[(&str, &str)] = &[
    ("natOutgoingAddress", "FELIX_NATOUTGOINGADDRESS"),
    ("natPortRange", "FELIX_NATPORTRANGE"),
    ("natOutgoingExclusions", "FELIX_NATOUTGOINGEXCLUSIONS"),
    ("vxlanVNI", "FELIX_VXLANVNI"),
    ("vxlanPort", "FELIX_VXLANPORT"),
    // Felix's parameter is `IpInIpMtu`, hence the variable's name.
    ("ipipMTU", "FELIX_IPINIPMTU"),
    ("vxlanMTU", "FELIX_VXLANMTU"),
    ("vxlanMTUV6", "FELIX_VXLANMTUV6"),
    ("routeRefreshInterval", "FELIX_ROUTEREFRESHINTERVAL"),
    ("deviceRouteProtocol", "FELIX_DEVICEROUTEPROTOCOL"),
    ("deviceRouteSourceAddress", "FELIX_DEVICEROUTESOURCEADDRESS"),
    (
        "deviceRouteSourceAddressIPv6",
        "FELIX_DEVICEROUTESOURCEADDRESSIPV6",
    ),
    ("logSeverityScreen", "FELIX_LOGSEVERITYSCREEN"),
    ("healthPort", "FELIX_HEALTHPORT"),
    ("prometheusMetricsEnabled", "FELIX_PROMETHEUSMETRICSENABLED"),
    ("prometheusMetricsPort", "FELIX_PROMETHEUSMETRICSPORT"),
];

/// A boolean as JSON or as the environment writes it (`true`, `False`, ...).
fn bool_field(spec: &BTreeMap<String, Value>, field: &str) -> Option<bool> {
    let v = spec.get(field)?;
    let b = v
        .as_bool()
        .or_else(|| match v.as_str()?.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
    if b.is_none() {
        warn!(value = %v, field, "FelixConfiguration: not a boolean; ignored");
    }
    b
}

/// The FelixConfiguration resources that concern `node`, read once from `store` (for the
/// settings taken at start-up). A resource that cannot be read or decoded is left out.
pub async fn read<S: calyx_datastore::store::Store>(
    store: &S,
    node: &str,
) -> BTreeMap<String, Value> {
    let mut configs = BTreeMap::new();
    for name in ["default".to_string(), format!("node.{node}")] {
        match store.get(&format!("{KEY_PREFIX}{name}")).await {
            Ok(Some(kv)) => match serde_json::from_slice(&kv.value) {
                Ok(v) => {
                    configs.insert(name, v);
                }
                Err(e) => warn!(%name, error = %e, "FelixConfiguration does not decode; ignored"),
            },
            Ok(None) => {}
            Err(e) => warn!(%name, error = %e, "cannot read FelixConfiguration; defaults apply"),
        }
    }
    configs
}

/// An address field of the family `T`; empty means unset, anything else bad is logged.
fn addr_field<T: std::str::FromStr>(spec: &BTreeMap<String, Value>, field: &str) -> Option<T> {
    let v = spec.get(field)?;
    let text = v.as_str().map(str::trim);
    if text.is_none_or(str::is_empty) && (v.is_null() || text.is_some()) {
        return None;
    }
    let parsed = text.and_then(|t| t.parse().ok());
    if parsed.is_none() {
        warn!(value = %v, field, "FelixConfiguration: not an address of the right family; ignored");
    }
    parsed
}

/// The `FELIX_*` environment settings as spec fields (string values), read through `var`
/// (the process environment in the daemon). An empty variable counts as unset.
pub fn env_overrides(var: impl Fn(&str) -> Option<String>) -> BTreeMap<String, Value> {
    ENV_FIELDS
        .iter()
        .filter_map(|(field, name)| {
            let v = var(name)?;
            (!v.trim().is_empty()).then(|| (field.to_string(), Value::String(v.trim().into())))
        })
        .collect()
}

/// A number given as JSON number or as text (the environment's form).
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A duration as the v3 API writes it (Go's `"90s"`, `"1m30s"`, `"500ms"`) or as Felix's
/// environment does (seconds, possibly fractional).
fn duration(v: &Value) -> Option<Duration> {
    if let Some(f) = v.as_f64() {
        return Duration::try_from_secs_f64(f).ok();
    }
    let s = v.as_str()?.trim();
    if let Ok(f) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(f).ok();
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += Duration::try_from_secs_f64(n * scale).ok()?;
    }
    (!s.is_empty()).then_some(total)
}

/// `logSeverityScreen` (Felix's names, any case) as a tracing level.
fn log_level(v: &Value) -> Option<&'static str> {
    match v.as_str()?.trim().to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warning" | "warn" => Some("warn"),
        "error" | "fatal" | "panic" => Some("error"),
        _ => None,
    }
}

/// An integer field within `range`; a bad value is logged and ignored.
fn int_field(spec: &BTreeMap<String, Value>, field: &str, range: (u64, u64)) -> Option<u64> {
    let v = spec.get(field)?;
    match as_u64(v) {
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

/// The settings for `node` from the FelixConfiguration resources by name, with the
/// `FELIX_*` settings of the process environment winning ([`env_overrides`]).
pub fn effective(configs: &BTreeMap<String, Value>, node: &str) -> FelixSettings {
    effective_with(configs, node, &env_overrides(|k| std::env::var(k).ok()))
}

/// [`effective`] with the environment's settings given.
pub fn effective_with(
    configs: &BTreeMap<String, Value>,
    node: &str,
    env: &BTreeMap<String, Value>,
) -> FelixSettings {
    let mut spec = merged_spec(configs, node);
    spec.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
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
    // 0 asks for auto-detection, as in Felix; below 68 IPv4 itself does not work.
    let mtu = |field| {
        int_field(&spec, field, (0, 65535))
            .filter(|n| *n != 0)
            .and_then(|n| u32::try_from(n.max(68)).ok())
    };
    s.ipip_mtu = mtu("ipipMTU");
    s.vxlan_mtu = mtu("vxlanMTU");
    // IPv6 needs at least 1280.
    s.vxlan_mtu_v6 = mtu("vxlanMTUV6").map(|m| m.max(1280));
    // Calyx owns every route of this protocol in table main. 1-4 (redirect, kernel, boot,
    // static) are what `ip route add`, the kernel and calyx-cni's pod routes carry: owning
    // them would delete those, so they are refused (Felix's default 3 included; in Felix it
    // marks the workload routes Felix itself programs, which here are calyx-cni's).
    s.device_route_protocol =
        int_field(&spec, "deviceRouteProtocol", (5, 255)).and_then(|n| u8::try_from(n).ok());
    s.device_route_source_v4 = addr_field(&spec, "deviceRouteSourceAddress");
    s.device_route_source_v6 = addr_field(&spec, "deviceRouteSourceAddressIPv6");
    let port = |field| int_field(&spec, field, (1, 65535)).and_then(|n| u16::try_from(n).ok());
    s.health_port = port("healthPort");
    s.prometheus_metrics_port = port("prometheusMetricsPort");
    s.prometheus_metrics_enabled = bool_field(&spec, "prometheusMetricsEnabled").unwrap_or(false);
    if let Some(v) = spec.get("routeRefreshInterval") {
        match duration(v) {
            Some(d) => s.route_refresh_interval = Some(d),
            None => {
                warn!(value = %v, "FelixConfiguration routeRefreshInterval: not a duration; ignored")
            }
        }
    }
    if let Some(v) = spec.get("logSeverityScreen") {
        s.log_severity_screen = log_level(v);
        if s.log_severity_screen.is_none() {
            warn!(value = %v, "FelixConfiguration logSeverityScreen: expected Debug, Info, Warning, Error or Fatal; ignored");
        }
    }
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

    #[test]
    fn mtus_protocol_interval_and_log_level() {
        let c = configs(&[
            (
                "default",
                json!({"spec": {"vxlanMTU": 1400, "ipipMTU": 0, "vxlanMTUV6": 1000,
                                "routeRefreshInterval": "1m30s", "deviceRouteProtocol": 99,
                                "logSeverityScreen": "Warning"}}),
            ),
            (
                "node.n1",
                json!({"spec": {"routeRefreshInterval": "0s", "deviceRouteProtocol": 300,
                                "logSeverityScreen": "Loud"}}),
            ),
        ]);
        let none = BTreeMap::new();
        let s = effective_with(&c, "n0", &none);
        assert_eq!(s.vxlan_mtu, Some(1400));
        assert_eq!(s.ipip_mtu, None, "0 = auto");
        assert_eq!(s.vxlan_mtu_v6, Some(1280), "IPv6 minimum");
        assert_eq!(s.route_refresh_interval, Some(Duration::from_secs(90)));
        assert_eq!(s.device_route_protocol, Some(99));
        assert_eq!(s.log_severity_screen, Some("warn"));
        let boot = configs(&[("default", json!({"spec": {"deviceRouteProtocol": 3}}))]);
        assert_eq!(
            effective_with(&boot, "n0", &none).device_route_protocol,
            None
        );
        // node.n1's bad values are ignored (no fallback to default's: the field is replaced).
        let s = effective_with(&c, "n1", &none);
        assert_eq!(s.route_refresh_interval, Some(Duration::ZERO));
        assert_eq!(s.device_route_protocol, None);
        assert_eq!(s.log_severity_screen, None);
        let src = configs(&[(
            "default",
            json!({"spec": {"deviceRouteSourceAddress": "192.0.2.7",
                            "deviceRouteSourceAddressIPv6": "192.0.2.7"}}),
        )]);
        let s = effective_with(&src, "n0", &none);
        assert_eq!(s.device_route_source_v4, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(s.device_route_source_v6, None, "wrong family");
        let src = configs(&[(
            "default",
            json!({"spec": {"deviceRouteSourceAddress": "", "deviceRouteSourceAddressIPv6": "fd00::7"}}),
        )]);
        let s = effective_with(&src, "n0", &none);
        assert_eq!(s.device_route_source_v4, None);
        assert_eq!(s.device_route_source_v6, Some("fd00::7".parse().unwrap()));
        assert_eq!(duration(&json!("500ms")), Some(Duration::from_millis(500)));
        assert_eq!(duration(&json!("2h")), Some(Duration::from_secs(7200)));
        assert_eq!(duration(&json!("1.5")), Some(Duration::from_millis(1500)));
        assert_eq!(duration(&json!("10x")), None);
        assert_eq!(duration(&json!("")), None);
    }

    #[test]
    fn start_up_settings() {
        let c = configs(&[(
            "default",
            json!({"spec": {"healthPort": 9199, "prometheusMetricsEnabled": true,
                            "prometheusMetricsPort": 0}}),
        )]);
        let none = BTreeMap::new();
        let s = effective_with(&c, "n", &none);
        assert_eq!(s.health_port, Some(9199));
        assert!(s.prometheus_metrics_enabled);
        assert_eq!(s.prometheus_metrics_port, None, "0 is out of range");
        let env = env_overrides(|k| match k {
            "FELIX_PROMETHEUSMETRICSENABLED" => Some("False".into()),
            "FELIX_PROMETHEUSMETRICSPORT" => Some("9191".into()),
            _ => None,
        });
        let s = effective_with(&c, "n", &env);
        assert!(!s.prometheus_metrics_enabled);
        assert_eq!(s.prometheus_metrics_port, Some(9191));
    }

    #[test]
    fn felix_environment_beats_the_datastore() {
        let c = configs(&[(
            "default",
            json!({"spec": {"vxlanMTU": 1400, "ipipMTU": 1300, "routeRefreshInterval": "90s"}}),
        )]);
        let env = env_overrides(|k| match k {
            "FELIX_VXLANMTU" => Some("1350".into()),
            "FELIX_IPINIPMTU" => Some(" ".into()),
            "FELIX_ROUTEREFRESHINTERVAL" => Some("30".into()),
            "FELIX_DEVICEROUTEPROTOCOL" => Some("81".into()),
            _ => None,
        });
        let s = effective_with(&c, "n", &env);
        assert_eq!(s.vxlan_mtu, Some(1350));
        assert_eq!(s.ipip_mtu, Some(1300), "an empty variable is unset");
        assert_eq!(s.route_refresh_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.device_route_protocol, Some(81));
    }
}
