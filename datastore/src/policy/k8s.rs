//! Kubernetes `networking.k8s.io/v1` NetworkPolicy, stored as calico-kube-controllers
//! stores it in etcd mode: a Calico `NetworkPolicy` named `knp.default.<name>` in the same
//! namespace, order 1000, tier `default`, pod selectors prefixed with
//! `projectcalico.org/orchestrator == 'k8s'` (libcalico-go
//! `lib/backend/k8s/conversion/conversion.go`, `K8sNetworkPolicyToCalico`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{PolicyKind, PolicyObject};

/// The name prefix of translated Kubernetes policies.
pub const KNP_PREFIX: &str = "knp.default.";

/// Whether a document is a Kubernetes NetworkPolicy.
pub fn is_k8s_network_policy(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("NetworkPolicy")
        && v.get("apiVersion").and_then(Value::as_str) == Some("networking.k8s.io/v1")
}

fn quote(v: &str) -> String {
    format!("'{v}'")
}

/// `k8sSelectorToCalico`: `pod` selectors get the orchestrator term; an empty namespace
/// selector is `all()`; `None` is the empty string (same namespace).
fn selector(s: Option<&Value>, pod: bool) -> Result<String, String> {
    let mut terms = Vec::new();
    if pod {
        terms.push("projectcalico.org/orchestrator == 'k8s'".to_string());
    }
    let Some(s) = s.filter(|s| !s.is_null()) else {
        return Ok(terms.join(" && "));
    };
    let labels: BTreeMap<String, String> = match s.get("matchLabels") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect(),
        _ => BTreeMap::new(),
    };
    let exprs = s
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !pod && labels.is_empty() && exprs.is_empty() {
        return Ok("all()".into());
    }
    for (k, v) in &labels {
        terms.push(format!("{k} == {}", quote(v)));
    }
    for e in &exprs {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let list = values.join("', '");
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => terms.push(format!("{key} in {{ '{list}' }}")),
            Some("NotIn") => terms.push(format!("{key} not in {{ '{list}' }}")),
            Some("Exists") => terms.push(format!("has({key})")),
            Some("DoesNotExist") => terms.push(format!("! has({key})")),
            other => {
                return Err(format!(
                    "matchExpressions: operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                ))
            }
        }
    }
    Ok(terms.join(" && "))
}

/// A peer: `(selector, namespaceSelector, nets, notNets)`.
fn peer(p: Option<&Value>) -> Result<(String, String, Vec<String>, Vec<String>), String> {
    let Some(p) = p else {
        return Ok(Default::default());
    };
    if let Some(b) = p.get("ipBlock").filter(|b| !b.is_null()) {
        let cidr = b.get("cidr").and_then(Value::as_str).unwrap_or("");
        let net = super::rule::parse_net(cidr)
            .ok_or_else(|| format!("ipBlock.cidr: {cidr:?} is not a CIDR"))?;
        let mut not = Vec::new();
        for e in b
            .get("except")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = e.as_str().unwrap_or("");
            not.push(
                super::rule::parse_net(s)
                    .ok_or_else(|| format!("ipBlock.except: {s:?} is not a CIDR"))?
                    .to_string(),
            );
        }
        return Ok((String::new(), String::new(), vec![net.to_string()], not));
    }
    Ok((
        selector(p.get("podSelector"), true)?,
        match p.get("namespaceSelector").filter(|s| !s.is_null()) {
            Some(s) => selector(Some(s), false)?,
            None => String::new(),
        },
        Vec::new(),
        Vec::new(),
    ))
}

/// `k8sRuleToCalico`: one Calico rule per protocol and peer.
fn rules(r: &Value, peers_field: &str, ingress: bool) -> Result<Vec<Value>, String> {
    let peers: Vec<Option<&Value>> = match r.get(peers_field).and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().map(Some).collect(),
        _ => vec![None],
    };
    // Protocol -> ports ("" = no protocol: any). An entry with no ports allows every port of
    // its protocol, which wins over port lists.
    let mut by_proto: BTreeMap<String, Option<Vec<Value>>> = BTreeMap::new();
    match r.get("ports").and_then(Value::as_array) {
        Some(ports) if !ports.is_empty() => {
            for p in ports {
                let proto = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string();
                let port = match p.get("port") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        let base = match v {
                            Value::Number(n) => n.to_string(),
                            Value::String(s) => s.clone(),
                            other => return Err(format!("ports: {other} is not a port")),
                        };
                        Some(match p.get("endPort").and_then(Value::as_u64) {
                            Some(end) => Value::from(format!("{base}:{end}")),
                            None => match base.parse::<u64>() {
                                Ok(n) => Value::from(n),
                                Err(_) => Value::from(base),
                            },
                        })
                    }
                };
                let entry = by_proto.entry(proto).or_insert_with(|| Some(Vec::new()));
                match (port, entry.as_mut()) {
                    (None, _) => *entry = None,
                    (Some(p), Some(list)) => list.push(p),
                    (Some(_), None) => {}
                }
            }
        }
        _ => {
            by_proto.insert(String::new(), None);
        }
    }
    let mut out = Vec::new();
    for (proto, ports) in &by_proto {
        for p in &peers {
            let (sel, ns, nets, not_nets) = peer(*p)?;
            let mut entity = Map::new();
            if !sel.is_empty() {
                entity.insert("selector".into(), Value::from(sel));
            }
            if !ns.is_empty() {
                entity.insert("namespaceSelector".into(), Value::from(ns));
            }
            if !nets.is_empty() {
                entity.insert("nets".into(), json!(nets));
            }
            if !not_nets.is_empty() {
                entity.insert("notNets".into(), json!(not_nets));
            }
            let mut rule = Map::new();
            rule.insert("action".into(), Value::from("Allow"));
            if !proto.is_empty() {
                rule.insert("protocol".into(), Value::from(proto.clone()));
            }
            let mut ports_entity = Map::new();
            if let Some(list) = ports.as_ref().filter(|l| !l.is_empty()) {
                ports_entity.insert("ports".into(), Value::Array(list.clone()));
            }
            if ingress {
                if !entity.is_empty() {
                    rule.insert("source".into(), Value::Object(entity));
                }
                if !ports_entity.is_empty() {
                    rule.insert("destination".into(), Value::Object(ports_entity));
                }
            } else {
                entity.extend(ports_entity);
                if !entity.is_empty() {
                    rule.insert("destination".into(), Value::Object(entity));
                }
            }
            out.push(Value::Object(rule));
        }
    }
    Ok(out)
}

/// Translates a Kubernetes NetworkPolicy document into the Calico NetworkPolicy
/// calico-kube-controllers would store.
pub fn translate(v: &Value) -> Result<PolicyObject, String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is required")?;
    let namespace = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let spec = v.get("spec").cloned().unwrap_or(Value::Null);
    if let Value::Object(m) = &spec {
        for k in m.keys() {
            if !["podSelector", "ingress", "egress", "policyTypes"].contains(&k.as_str()) {
                return Err(format!(
                    "spec: unknown field `{k}`, expected one of `podSelector`, `ingress`, `egress`, `policyTypes`"
                ));
            }
        }
    }
    let mut ingress = Vec::new();
    for (i, r) in spec
        .get("ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        ingress.extend(rules(r, "from", true).map_err(|e| format!("spec.ingress[{i}].{e}"))?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec
        .get("egress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        egress.extend(rules(r, "to", false).map_err(|e| format!("spec.egress[{i}].{e}"))?);
    }
    let declared: Vec<&str> = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut types = Vec::new();
    if declared.is_empty() {
        // What the API server stores for a manifest without policyTypes (and so what
        // kube-controllers converts): Ingress, plus Egress when there are egress rules.
        types.push("Ingress");
        if !egress.is_empty() {
            types.push("Egress");
        }
    } else {
        if declared.contains(&"Ingress") {
            types.push("Ingress");
        }
        if declared.contains(&"Egress") {
            types.push("Egress");
        }
        if types.is_empty() {
            types.push("Ingress");
        }
    }
    // Rules of a direction the policy does not declare have no effect in Kubernetes (Felix
    // ignores them in Calico's conversion); they are left out rather than refused.
    if !types.contains(&"Ingress") {
        ingress.clear();
    }
    if !types.contains(&"Egress") {
        egress.clear();
    }
    let mut calico_spec = Map::new();
    calico_spec.insert("order".into(), json!(1000.0));
    calico_spec.insert("tier".into(), json!("default"));
    calico_spec.insert(
        "selector".into(),
        Value::from(selector(spec.get("podSelector"), true)?),
    );
    if !ingress.is_empty() {
        calico_spec.insert("ingress".into(), Value::Array(ingress));
    }
    if !egress.is_empty() {
        calico_spec.insert("egress".into(), Value::Array(egress));
    }
    calico_spec.insert("types".into(), json!(types));
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(format!("{KNP_PREFIX}{name}")));
    meta.insert("namespace".into(), Value::from(namespace));
    for k in ["uid", "creationTimestamp"] {
        if let Some(x) = v.pointer(&format!("/metadata/{k}")) {
            meta.insert(k.into(), x.clone());
        }
    }
    let value = json!({
        "apiVersion": crate::resources::API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": Value::Object(meta),
        "spec": Value::Object(calico_spec),
    });
    let o = PolicyObject {
        kind: PolicyKind::NetworkPolicy,
        value,
    };
    super::schema::validate(&o)?;
    Ok(o)
}
