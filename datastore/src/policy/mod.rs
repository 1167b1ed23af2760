//! Calico's network policy kinds: `NetworkPolicy` (namespaced), `GlobalNetworkPolicy`,
//! `Profile`, `NetworkSet` (namespaced), `GlobalNetworkSet` and `Tier`, as
//! `api/pkg/apis/projectcalico/v3/` defines them, stored where Calico's etcdv3 backend stores
//! them (`/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`).
//!
//! - Stored objects are kept as the JSON value they are ([`PolicyObject`]): what Calico (or
//!   calico-kube-controllers) wrote is written back whole, whatever Calyx models of it.
//! - [`rule`]: the typed view the dataplane evaluates (rules, entity matches, ports,
//!   protocols), read leniently from the stored value.
//! - User input ([`parse_policy_documents`]) is strict: a field that is not in Calico's API
//!   for the kind is an error naming it, and so is a field of the API that Calyx cannot enforce
//!   (`http`, `serviceAccounts`, `serviceAccountSelector`, `services`, `doNotTrack`,
//!   `preDNAT`): refused rather than silently ignored.
//! - [`k8s`]: Kubernetes `networking.k8s.io/v1` NetworkPolicy, translated as
//!   calico-kube-controllers translates it (`knp.default.<name>`).

pub mod k8s;
pub mod rule;
mod schema;
pub mod store;

use std::fmt;

use serde_json::Value;

use crate::selector::Selector;

pub use rule::{EntityRule, PolicyType, Port, Protocol, Rule, RuleAction};

/// The default tier's name (libcalico-go `names.DefaultTierName`).
pub const DEFAULT_TIER: &str = "default";
/// The default tier's order (`DefaultTierOrder`, 1,000,000 in Calico 3.30+).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// Prefix of the Profiles calico-kube-controllers writes for namespaces.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Prefix of the namespace labels a `kns.` Profile applies to its endpoints.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// The label holding a namespace's (or service account's) own name.
pub const NAME_LABEL: &str = "projectcalico.org/name";

/// The policy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// `NetworkPolicy` (namespaced).
    NetworkPolicy,
    /// `GlobalNetworkPolicy`.
    GlobalNetworkPolicy,
    /// `Profile`.
    Profile,
    /// `NetworkSet` (namespaced).
    NetworkSet,
    /// `GlobalNetworkSet`.
    GlobalNetworkSet,
    /// `Tier`.
    Tier,
}

impl PolicyKind {
    /// Every policy kind, in the order `apply` writes them (tiers before their policies).
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Tier,
        PolicyKind::Profile,
        PolicyKind::GlobalNetworkSet,
        PolicyKind::NetworkSet,
        PolicyKind::GlobalNetworkPolicy,
        PolicyKind::NetworkPolicy,
    ];

    /// The `kind:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            PolicyKind::Profile => "Profile",
            PolicyKind::NetworkSet => "NetworkSet",
            PolicyKind::GlobalNetworkSet => "GlobalNetworkSet",
            PolicyKind::Tier => "Tier",
        }
    }

    /// The plural of etcd keys (libcalico-go `model/resource.go`).
    pub fn plural(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "networkpolicies",
            PolicyKind::GlobalNetworkPolicy => "globalnetworkpolicies",
            PolicyKind::Profile => "profiles",
            PolicyKind::NetworkSet => "networksets",
            PolicyKind::GlobalNetworkSet => "globalnetworksets",
            PolicyKind::Tier => "tiers",
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, PolicyKind::NetworkPolicy | PolicyKind::NetworkSet)
    }

    /// The etcd key prefix of the kind, with a trailing slash.
    pub fn key_prefix(self) -> String {
        format!("/calico/resources/v3/projectcalico.org/{}/", self.plural())
    }

    /// The etcd key of an object (`namespace` is ignored for cluster-wide kinds).
    pub fn key(self, namespace: &str, name: &str) -> String {
        if self.namespaced() {
            format!("{}{namespace}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }

    /// The exact `kind:` field (`NetworkPolicy`), or `None`.
    pub fn from_kind_field(s: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A kind as calicoctl takes it on the command line: case-insensitive, singular, plural or
    /// short (`networkpolicy`, `networkpolicies`, `netpol`, `np`; `globalnetworkpolicy`,
    /// `gnp`; `profile(s)`, `pro`; `networkset(s)`, `netset(s)`; `globalnetworkset(s)`;
    /// `tier(s)`).
    pub fn parse(s: &str) -> Option<PolicyKind> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "networkpolicy" | "networkpolicies" | "netpol" | "netpols" | "policy" | "policies"
            | "np" | "nps" => PolicyKind::NetworkPolicy,
            "globalnetworkpolicy" | "globalnetworkpolicies" | "gnp" | "gnps" => {
                PolicyKind::GlobalNetworkPolicy
            }
            "profile" | "profiles" | "pro" | "pros" => PolicyKind::Profile,
            "networkset" | "networksets" | "netset" | "netsets" => PolicyKind::NetworkSet,
            "globalnetworkset" | "globalnetworksets" | "globalnetset" | "globalnetsets" => {
                PolicyKind::GlobalNetworkSet
            }
            "tier" | "tiers" => PolicyKind::Tier,
            _ => return None,
        })
    }

    /// Splits an etcd key into kind, namespace (empty for cluster-wide kinds) and name.
    pub fn from_key(key: &str) -> Option<(PolicyKind, &str, &str)> {
        let rest = key.strip_prefix("/calico/resources/v3/projectcalico.org/")?;
        let (plural, rest) = rest.split_once('/')?;
        let kind = PolicyKind::ALL.into_iter().find(|k| k.plural() == plural)?;
        let (ns, name) = if kind.namespaced() {
            rest.split_once('/')?
        } else {
            ("", rest)
        };
        (!name.is_empty() && !name.contains('/')).then_some((kind, ns, name))
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy object as stored: its kind and the whole JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    /// Kind.
    pub kind: PolicyKind,
    /// The object (`apiVersion`, `kind`, `metadata`, `spec`, ...), unknown fields included.
    pub value: Value,
}

/// Why user input or a stored object is not a usable policy object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {message}")]
pub struct PolicyError {
    /// Kind (`NetworkPolicy`).
    pub kind: String,
    /// `namespace/name` or `name`.
    pub name: String,
    /// What is wrong, with the field path.
    pub message: String,
}

impl PolicyObject {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.namespace` (empty for cluster-wide kinds).
    pub fn namespace(&self) -> &str {
        if !self.kind.namespaced() {
            return "";
        }
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The etcd key.
    pub fn key(&self) -> String {
        self.kind.key(self.namespace(), self.name())
    }

    /// `namespace/name` or `name`, as errors and tables show it.
    pub fn display_name(&self) -> String {
        if self.kind.namespaced() {
            format!("{}/{}", self.namespace(), self.name())
        } else {
            self.name().to_string()
        }
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        string_map(self.value.pointer("/metadata/labels"))
    }

    /// `spec`, or null.
    pub fn spec(&self) -> &Value {
        self.value.get("spec").unwrap_or(&Value::Null)
    }

    /// Decodes a stored value leniently: it must be an object of the right kind with a name;
    /// everything else is kept as it is.
    pub fn from_stored(kind: PolicyKind, bytes: &[u8]) -> Result<PolicyObject, PolicyError> {
        let err = |message: String| PolicyError {
            kind: kind.as_str().into(),
            name: String::new(),
            message,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        if !value.is_object() {
            return Err(err("not a JSON object".into()));
        }
        let o = PolicyObject { kind, value };
        if o.name().is_empty() {
            return Err(err("metadata.name is missing".into()));
        }
        Ok(o)
    }

    /// The value to store: compact JSON without `metadata.resourceVersion`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = self.value.clone();
        if let Some(Value::Object(m)) = v.get_mut("metadata") {
            m.remove("resourceVersion");
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The tier of a policy (`spec.tier`, `default` when empty); `None` for other kinds.
    pub fn tier(&self) -> Option<String> {
        match self.kind {
            PolicyKind::NetworkPolicy | PolicyKind::GlobalNetworkPolicy => Some(
                self.spec()
                    .get("tier")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .unwrap_or(DEFAULT_TIER)
                    .to_string(),
            ),
            _ => None,
        }
    }

    /// `spec.order` (policies and tiers); `None` when absent (Calico sorts those last).
    pub fn order(&self) -> Option<f64> {
        self.spec().get("order").and_then(Value::as_f64)
    }

    /// `spec.selector` (policies), as text.
    pub fn selector_text(&self) -> &str {
        self.spec()
            .get("selector")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `spec.nets` of a (Global)NetworkSet; unparsable entries are skipped (stored data).
    pub fn nets(&self) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        if let Some(Value::Array(a)) = self.spec().get("nets") {
            for n in a.iter().filter_map(Value::as_str) {
                if let Some(net) = rule::parse_net(n) {
                    out.push(net);
                }
            }
        }
        out
    }

    /// `spec.labelsToApply` of a Profile.
    pub fn labels_to_apply(&self) -> std::collections::BTreeMap<String, String> {
        string_map(self.spec().get("labelsToApply"))
    }

    /// The policy types of a policy, defaulted as Calico does: as written; else `Ingress`,
    /// plus `Egress` when there are egress rules (and `Egress` alone for egress-only rules).
    pub fn policy_types(&self) -> Vec<PolicyType> {
        let spec = self.spec();
        if let Some(Value::Array(a)) = spec.get("types") {
            if !a.is_empty() {
                return a
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|t| match t {
                        "Ingress" => Some(PolicyType::Ingress),
                        "Egress" => Some(PolicyType::Egress),
                        _ => None,
                    })
                    .collect();
            }
        }
        let has = |k: &str| {
            spec.get(k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        match (has("ingress"), has("egress")) {
            (false, true) => vec![PolicyType::Egress],
            (true, true) => vec![PolicyType::Ingress, PolicyType::Egress],
            _ => vec![PolicyType::Ingress],
        }
    }

    /// The rules of one direction (`ingress`/`egress`), read leniently: a rule that cannot be
    /// understood becomes a Deny of everything, so that a bad stored rule never opens traffic.
    pub fn rules(&self, direction: PolicyType) -> Vec<Rule> {
        let field = match direction {
            PolicyType::Ingress => "ingress",
            PolicyType::Egress => "egress",
        };
        match self.spec().get(field) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|r| Rule::from_value(r).unwrap_or_else(|_| Rule::deny_all()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Parses and checks an object a user wrote (see [`schema`]).
    pub fn from_user(kind: PolicyKind, value: Value) -> Result<PolicyObject, PolicyError> {
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let err = |message: String| PolicyError {
            kind: kind.as_str().into(),
            name: name.clone(),
            message,
        };
        schema::check(kind, &value).map_err(err)?;
        let mut o = PolicyObject { kind, value };
        if name.is_empty() {
            return Err(err("metadata.name is required".into()));
        }
        if kind.namespaced() && o.namespace().is_empty() {
            if let Some(Value::Object(m)) = o.value.get_mut("metadata") {
                m.insert("namespace".into(), Value::from("default"));
            }
        }
        schema::validate(&o).map_err(err)?;
        Ok(o)
    }
}

fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => Default::default(),
    }
}

/// Parses a selector leniently for stored data: one that does not parse selects nothing.
pub fn stored_selector(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|_| Selector::or(Vec::new()))
}

/// An error of [`parse_policy_documents`], with the document's number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document} ({kind} {name:?}): {message}")]
pub struct PolicyDocumentError {
    /// 1-based document number in the file.
    pub document: usize,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// The problem.
    pub message: String,
}

/// The policy documents of a YAML/JSON stream, and the text with those documents blanked (so
/// that the remaining kinds parse with their own line numbers unchanged). Policy documents
/// are Calico's policy kinds (and their `<Kind>List`s) and Kubernetes `networking.k8s.io/v1`
/// NetworkPolicies, which are translated ([`k8s`]).
pub fn parse_policy_documents(
    text: &str,
) -> Result<(Vec<PolicyObject>, String), PolicyDocumentError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut document = 0;
    for chunk in crate::resources::split_documents_for_policy(text) {
        let Ok(yaml) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&chunk.1) else {
            // Not ours to report: the resource parser says what is wrong with it.
            document += 1;
            continue;
        };
        if yaml.is_null() {
            continue;
        }
        document += 1;
        let Ok(value) = serde_json::to_value(&yaml) else {
            continue;
        };
        let kind_field = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind_field = kind_field.as_str();
        let api = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let err = |kind: &str, name: &str, message: String| PolicyDocumentError {
            document,
            kind: kind.into(),
            name: name.into(),
            message,
        };
        let mut taken = false;
        if k8s::is_k8s_network_policy(&value) {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let o = k8s::translate(&value).map_err(|m| err("NetworkPolicy", name, m))?;
            out.push(o);
            taken = true;
        } else if let Some(kind) = PolicyKind::from_kind_field(kind_field) {
            if api != crate::resources::API_VERSION {
                return Err(err(
                    kind_field,
                    "",
                    format!(
                        "apiVersion {api:?}: expected {:?}",
                        crate::resources::API_VERSION
                    ),
                ));
            }
            out.push(PolicyObject::from_user(kind, value).map_err(|e| {
                let name = e.name.clone();
                err(kind_field, &name, e.message)
            })?);
            taken = true;
        } else if let Some(kind) = kind_field
            .strip_suffix("List")
            .and_then(PolicyKind::from_kind_field)
        {
            if let Some(Value::Array(items)) = value.get("items") {
                for item in items {
                    let mut item = item.clone();
                    if let Value::Object(m) = &mut item {
                        m.entry("apiVersion")
                            .or_insert_with(|| Value::from(crate::resources::API_VERSION));
                        m.entry("kind")
                            .or_insert_with(|| Value::from(kind.as_str()));
                    }
                    out.push(PolicyObject::from_user(kind, item).map_err(|e| {
                        let name = e.name.clone();
                        err(kind.as_str(), &name, e.message)
                    })?);
                }
            }
            taken = true;
        }
        if taken {
            for l in lines.iter_mut().skip(chunk.0).take(chunk.2) {
                *l = "";
            }
        }
    }
    Ok((out, lines.join("\n")))
}

#[cfg(test)]
mod tests;
