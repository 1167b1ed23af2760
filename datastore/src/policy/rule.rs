//! The typed view of Calico's policy rules (`policy_common.go`: `Rule`, `EntityRule`,
//! `ICMPFields`, `numorstring.Port`/`Protocol`), parsed from the JSON value of a policy.
//!
//! The same parser checks user input (an error names the field) and reads stored objects
//! (where a rule that fails becomes a Deny of everything: see
//! [`super::PolicyObject::rules`]).

use ipnet::IpNet;
use serde_json::Value;

use crate::selector::Selector;

/// A policy direction (`types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyType {
    /// Traffic to the selected endpoints.
    Ingress,
    /// Traffic from the selected endpoints.
    Egress,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Allow the packet (no further rules, policies or tiers).
    Allow,
    /// Drop it.
    Deny,
    /// Log it and go on to the next rule.
    Log,
    /// Skip the rest of this tier: go on with the next tier (or the profiles).
    Pass,
}

/// A destination or source port match: a range (one port is a range of one), or a named port
/// of the endpoint (`spec.ports` of a WorkloadEndpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    /// `first..=last`.
    Range(u16, u16),
    /// A named port.
    Named(String),
}

/// One side of a rule (`source` / `destination`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityRule {
    /// `nets`.
    pub nets: Vec<IpNet>,
    /// `notNets`.
    pub not_nets: Vec<IpNet>,
    /// `selector`.
    pub selector: Option<Selector>,
    /// `notSelector`.
    pub not_selector: Option<Selector>,
    /// `namespaceSelector`.
    pub namespace_selector: Option<Selector>,
    /// `ports`.
    pub ports: Vec<Port>,
    /// `notPorts`.
    pub not_ports: Vec<Port>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `action`.
    pub action: RuleAction,
    /// `ipVersion` (4 or 6).
    pub ip_version: Option<u8>,
    /// `protocol`, as a number.
    pub protocol: Option<u8>,
    /// `notProtocol`.
    pub not_protocol: Option<u8>,
    /// `icmp`: type and optional code.
    pub icmp: Option<(u8, Option<u8>)>,
    /// `notICMP`.
    pub not_icmp: Option<(u8, Option<u8>)>,
    /// `source`.
    pub source: EntityRule,
    /// `destination`.
    pub destination: EntityRule,
}

/// Protocol names Calico knows (`numorstring.Protocol`), with their numbers.
pub const PROTOCOL_NAMES: [(&str, u8); 6] = [
    ("TCP", 6),
    ("UDP", 17),
    ("ICMP", 1),
    ("ICMPv6", 58),
    ("SCTP", 132),
    ("UDPLite", 136),
];

/// A protocol, by name (case-insensitive, as Calico's) or number 1-255.
pub struct Protocol;

impl Protocol {
    /// Parses a protocol field.
    pub fn parse(v: &Value) -> Result<u8, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .filter(|n| (1..=255).contains(n))
                .map(|n| n as u8)
                .ok_or_else(|| format!("{n} is not a protocol number 1-255")),
            Value::String(s) => {
                if let Ok(n) = s.parse::<u64>() {
                    return Protocol::parse(&Value::from(n));
                }
                PROTOCOL_NAMES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(s))
                    .map(|(_, n)| *n)
                    .ok_or_else(|| {
                        format!(
                            "{s:?} is not a protocol (expected a number 1-255 or one of TCP, UDP, \
                             ICMP, ICMPv6, SCTP, UDPLite)"
                        )
                    })
            }
            other => Err(format!("{other} is not a protocol")),
        }
    }

    /// The name of a protocol number, if Calico has one.
    pub fn name(n: u8) -> Option<&'static str> {
        PROTOCOL_NAMES
            .iter()
            .find(|(_, p)| *p == n)
            .map(|(s, _)| *s)
    }
}

/// A network as Calico takes it: a CIDR, or a bare address (a host route); host bits cleared.
pub fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

fn parse_port(v: &Value) -> Result<Port, String> {
    let range = |a: u64, b: u64| {
        if a == 0 || b > 65535 || a > b {
            Err(format!("{v} is not a port or a range of ports 1-65535"))
        } else {
            Ok(Port::Range(a as u16, b as u16))
        }
    };
    match v {
        Value::Number(n) => {
            let n = n.as_u64().unwrap_or(0);
            range(n, n)
        }
        Value::String(s) => {
            if let Some((a, b)) = s.split_once(':') {
                match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                    (Ok(a), Ok(b)) => range(a, b),
                    _ => Err(format!("{s:?} is not a port range")),
                }
            } else if let Ok(n) = s.parse::<u64>() {
                range(n, n)
            } else if !s.is_empty()
                && s.len() <= 15
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                Ok(Port::Named(s.clone()))
            } else {
                Err(format!("{s:?} is not a port, a range or a port name"))
            }
        }
        other => Err(format!("{other} is not a port")),
    }
}

fn parse_icmp(v: &Value, path: &str) -> Result<(u8, Option<u8>), String> {
    let ty = v.get("type").and_then(Value::as_u64);
    let code = v.get("code").and_then(Value::as_u64);
    match (ty, code) {
        (Some(t), c) if t <= 254 && c.is_none_or(|c| c <= 255) => Ok((t as u8, c.map(|c| c as u8))),
        (None, Some(_)) => Err(format!("{path}.code needs {path}.type")),
        (None, None) => Err(format!("{path}: give a type (0-254)")),
        _ => Err(format!("{path}: type 0-254, code 0-255")),
    }
}

fn selector(v: &Value, path: &str) -> Result<Option<Selector>, String> {
    match v.as_str() {
        None | Some("") => Ok(None),
        Some(s) => Selector::parse(s)
            .map(Some)
            .map_err(|e| format!("{path}: {e}")),
    }
}

fn nets(v: Option<&Value>, path: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    if let Some(Value::Array(a)) = v {
        for (i, n) in a.iter().enumerate() {
            let s = n.as_str().unwrap_or("");
            out.push(parse_net(s).ok_or_else(|| format!("{path}[{i}]: {n} is not a CIDR"))?);
        }
    }
    Ok(out)
}

fn ports(v: Option<&Value>, path: &str) -> Result<Vec<Port>, String> {
    let mut out = Vec::new();
    if let Some(Value::Array(a)) = v {
        for (i, p) in a.iter().enumerate() {
            out.push(parse_port(p).map_err(|e| format!("{path}[{i}]: {e}"))?);
        }
    }
    Ok(out)
}

impl EntityRule {
    fn from_value(v: Option<&Value>, path: &str) -> Result<EntityRule, String> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(EntityRule::default());
        };
        let null = Value::Null;
        let f = |k: &str| v.get(k).unwrap_or(&null);
        Ok(EntityRule {
            nets: nets(v.get("nets"), &format!("{path}.nets"))?,
            not_nets: nets(v.get("notNets"), &format!("{path}.notNets"))?,
            selector: selector(f("selector"), &format!("{path}.selector"))?,
            not_selector: selector(f("notSelector"), &format!("{path}.notSelector"))?,
            namespace_selector: selector(
                f("namespaceSelector"),
                &format!("{path}.namespaceSelector"),
            )?,
            ports: ports(v.get("ports"), &format!("{path}.ports"))?,
            not_ports: ports(v.get("notPorts"), &format!("{path}.notPorts"))?,
        })
    }
}

impl Rule {
    /// A rule that drops everything (what an unreadable stored rule becomes).
    pub fn deny_all() -> Rule {
        Rule {
            action: RuleAction::Deny,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
        }
    }

    /// Parses one rule; the error names the field (relative to the rule).
    pub fn from_value(v: &Value) -> Result<Rule, String> {
        let action = match v.get("action").and_then(Value::as_str) {
            Some("Allow") => RuleAction::Allow,
            Some("Deny") => RuleAction::Deny,
            Some("Log") => RuleAction::Log,
            Some("Pass") => RuleAction::Pass,
            Some(other) => {
                return Err(format!(
                    "action: {other:?} is not one of Allow, Deny, Log, Pass"
                ))
            }
            None => return Err("action is required (Allow, Deny, Log or Pass)".into()),
        };
        // Matches Calyx cannot enforce (`calyx apply` refuses them; a stored object may still
        // hold them): ignoring one would widen the rule, so the rule cannot be read and the
        // caller makes it a Deny of everything.
        let set = |x: Option<&Value>| {
            x.is_some_and(|x| match x {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            })
        };
        if set(v.get("http")) {
            return Err("http: HTTP matches are not supported".into());
        }
        for side in ["source", "destination"] {
            for field in ["serviceAccounts", "services"] {
                if set(v.get(side).and_then(|s| s.get(field))) {
                    return Err(format!("{side}.{field}: not supported"));
                }
            }
        }
        let ip_version = match v.get("ipVersion") {
            None | Some(Value::Null) => None,
            Some(x) => match x.as_u64() {
                Some(4) => Some(4),
                Some(6) => Some(6),
                _ => return Err(format!("ipVersion: {x} is not 4 or 6")),
            },
        };
        let proto = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(p) => Protocol::parse(p)
                .map(Some)
                .map_err(|e| format!("{k}: {e}")),
        };
        let icmp = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => parse_icmp(x, k).map(Some),
        };
        let rule = Rule {
            action,
            ip_version,
            protocol: proto("protocol")?,
            not_protocol: proto("notProtocol")?,
            icmp: icmp("icmp")?,
            not_icmp: icmp("notICMP")?,
            source: EntityRule::from_value(v.get("source"), "source")?,
            destination: EntityRule::from_value(v.get("destination"), "destination")?,
        };
        // As Calico's validator: ports need a protocol that has them, ICMP fields an ICMP
        // protocol.
        let has_ports = |e: &EntityRule| !e.ports.is_empty() || !e.not_ports.is_empty();
        if (has_ports(&rule.source) || has_ports(&rule.destination))
            && !matches!(rule.protocol, Some(6 | 17 | 132 | 136))
        {
            return Err(
                "ports and notPorts need protocol TCP, UDP, SCTP or UDPLite in the same rule"
                    .into(),
            );
        }
        if (rule.icmp.is_some() || rule.not_icmp.is_some())
            && !matches!(rule.protocol, Some(1 | 58))
        {
            return Err("icmp and notICMP need protocol ICMP or ICMPv6 in the same rule".into());
        }
        let nets_v = |e: &EntityRule| {
            e.nets
                .iter()
                .chain(&e.not_nets)
                .map(|n| matches!(n, IpNet::V4(_)))
                .collect::<Vec<_>>()
        };
        if let Some(ver) = rule.ip_version {
            let all = nets_v(&rule.source)
                .into_iter()
                .chain(nets_v(&rule.destination));
            for is4 in all {
                if is4 != (ver == 4) {
                    return Err(format!(
                        "nets: a network of the other IP version than ipVersion {ver}"
                    ));
                }
            }
        }
        Ok(rule)
    }
}
