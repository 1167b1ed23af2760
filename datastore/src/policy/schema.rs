//! User input of the policy kinds: every field of Calico's API for the kind is known
//! (`api/pkg/apis/projectcalico/v3/{networkpolicy,globalnetworkpolicy,policy_common,profile,
//! networkset,globalnetworkset,tier}.go`), a field that is not there is a typo, and a field
//! Calyx cannot enforce is refused with one line naming it.

use serde_json::Value;

use super::rule::{PolicyType, Rule};
use super::{PolicyKind, PolicyObject};
use crate::resources::schema::{check_shape, Shape, OBJECT_METADATA};
use crate::selector::Selector;

use Shape::{Any, List, Object};

const ICMP: Shape = Object(&[("type", Any), ("code", Any)]);

const ENTITY: Shape = Object(&[
    ("nets", Any),
    ("selector", Any),
    ("namespaceSelector", Any),
    ("services", Object(&[("name", Any), ("namespace", Any)])),
    ("ports", Any),
    ("notNets", Any),
    ("notSelector", Any),
    ("notPorts", Any),
    (
        "serviceAccounts",
        Object(&[("names", Any), ("selector", Any)]),
    ),
]);

const RULE: Shape = Object(&[
    ("action", Any),
    ("ipVersion", Any),
    ("protocol", Any),
    ("icmp", ICMP),
    ("notProtocol", Any),
    ("notICMP", ICMP),
    ("source", ENTITY),
    ("destination", ENTITY),
    (
        "http",
        Object(&[
            ("methods", Any),
            ("paths", List(&Object(&[("exact", Any), ("prefix", Any)]))),
        ]),
    ),
    ("metadata", Object(&[("annotations", Any)])),
]);

const RULES: Shape = List(&RULE);

const NP_SPEC: Shape = Object(&[
    ("tier", Any),
    ("order", Any),
    ("ingress", RULES),
    ("egress", RULES),
    ("selector", Any),
    ("types", Any),
    ("serviceAccountSelector", Any),
    ("performanceHints", Any),
]);

const GNP_SPEC: Shape = Object(&[
    ("tier", Any),
    ("order", Any),
    ("ingress", RULES),
    ("egress", RULES),
    ("selector", Any),
    ("types", Any),
    ("doNotTrack", Any),
    ("preDNAT", Any),
    ("applyOnForward", Any),
    ("serviceAccountSelector", Any),
    ("namespaceSelector", Any),
    ("performanceHints", Any),
]);

const PROFILE_SPEC: Shape = Object(&[
    ("ingress", RULES),
    ("egress", RULES),
    ("labelsToApply", Any),
]);

const NETSET_SPEC: Shape = Object(&[("nets", Any)]);

const TIER_SPEC: Shape = Object(&[("order", Any), ("defaultAction", Any)]);

macro_rules! top {
    ($spec:expr) => {
        Object(&[
            ("apiVersion", Any),
            ("kind", Any),
            ("metadata", OBJECT_METADATA),
            ("spec", $spec),
        ])
    };
}

const NP: Shape = top!(NP_SPEC);
const GNP: Shape = top!(GNP_SPEC);
const PROFILE: Shape = top!(PROFILE_SPEC);
const NETSET: Shape = top!(NETSET_SPEC);
const TIER: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", OBJECT_METADATA),
    ("spec", TIER_SPEC),
    ("status", Any),
]);

/// Field names only (values are checked by [`validate`]).
pub(super) fn check(kind: PolicyKind, value: &Value) -> Result<(), String> {
    let shape = match kind {
        PolicyKind::NetworkPolicy => NP,
        PolicyKind::GlobalNetworkPolicy => GNP,
        PolicyKind::Profile => PROFILE,
        PolicyKind::NetworkSet | PolicyKind::GlobalNetworkSet => NETSET,
        PolicyKind::Tier => TIER,
    };
    check_shape(value, shape)
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

fn refused(path: &str, what: &str) -> String {
    format!("{path}: {what} is not supported by Calyx (refused rather than ignored)")
}

fn check_rules(spec: &Value, dir: &str) -> Result<(), String> {
    let Some(v) = spec.get(dir) else {
        return Ok(());
    };
    let Value::Array(rules) = v else {
        return Err(format!("spec.{dir}: expected a list of rules"));
    };
    for (i, r) in rules.iter().enumerate() {
        let path = format!("spec.{dir}[{i}]");
        if truthy(r.get("http")) {
            return Err(refused(&format!("{path}.http"), "matching on HTTP"));
        }
        for side in ["source", "destination"] {
            if let Some(e) = r.get(side) {
                if truthy(e.get("serviceAccounts")) {
                    return Err(refused(
                        &format!("{path}.{side}.serviceAccounts"),
                        "matching on service accounts",
                    ));
                }
                if truthy(e.get("services")) {
                    return Err(refused(
                        &format!("{path}.{side}.services"),
                        "matching on Kubernetes services",
                    ));
                }
            }
        }
        Rule::from_value(r).map_err(|e| format!("{path}.{e}"))?;
    }
    Ok(())
}

fn check_selector(spec: &Value, field: &str) -> Result<(), String> {
    match spec.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => Selector::parse(s)
            .map(|_| ())
            .map_err(|e| format!("spec.{field}: {e}")),
        Some(other) => Err(format!("spec.{field}: {other} is not a selector string")),
    }
}

fn check_order(spec: &Value) -> Result<(), String> {
    match spec.get("order") {
        None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
        Some(other) => Err(format!("spec.order: {other} is not a number")),
    }
}

/// Values: selectors parse, rules parse, actions and types are Calico's, refused features.
pub(super) fn validate(o: &PolicyObject) -> Result<(), String> {
    let name = o.name();
    crate::resources::check_dns1123_subdomain(name).map_err(|e| format!("metadata.name: {e}"))?;
    let spec = o.spec();
    match o.kind {
        PolicyKind::NetworkPolicy | PolicyKind::GlobalNetworkPolicy => {
            if truthy(spec.get("serviceAccountSelector")) {
                return Err(refused(
                    "spec.serviceAccountSelector",
                    "selecting endpoints by service account",
                ));
            }
            for f in ["doNotTrack", "preDNAT"] {
                if truthy(spec.get(f)) {
                    return Err(refused(
                        &format!("spec.{f}"),
                        "host endpoint policy (doNotTrack, preDNAT)",
                    ));
                }
            }
            check_selector(spec, "selector")?;
            check_selector(spec, "namespaceSelector")?;
            check_order(spec)?;
            if let Some(t) = spec.get("types") {
                let ok = t.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|x| matches!(x.as_str(), Some("Ingress" | "Egress")))
                });
                if !ok {
                    return Err(format!("spec.types: {t} is not a list of Ingress, Egress"));
                }
            }
            check_rules(spec, "ingress")?;
            check_rules(spec, "egress")?;
            let types = o.policy_types();
            if !types.contains(&PolicyType::Egress) && truthy(spec.get("egress")) {
                return Err("spec.egress: egress rules need Egress in spec.types".into());
            }
            if !types.contains(&PolicyType::Ingress) && truthy(spec.get("ingress")) {
                return Err("spec.ingress: ingress rules need Ingress in spec.types".into());
            }
        }
        PolicyKind::Profile => {
            check_rules(spec, "ingress")?;
            check_rules(spec, "egress")?;
        }
        PolicyKind::NetworkSet | PolicyKind::GlobalNetworkSet => {
            if let Some(Value::Array(a)) = spec.get("nets") {
                for (i, n) in a.iter().enumerate() {
                    if n.as_str().and_then(super::rule::parse_net).is_none() {
                        return Err(format!("spec.nets[{i}]: {n} is not a CIDR"));
                    }
                }
            }
        }
        PolicyKind::Tier => {
            check_order(spec)?;
            match spec.get("defaultAction").and_then(Value::as_str) {
                None | Some("Deny" | "Pass") => {}
                Some(a) => return Err(format!("spec.defaultAction: {a:?} is not Deny or Pass")),
            }
        }
    }
    Ok(())
}
