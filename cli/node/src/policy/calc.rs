//! From the datastore's policy objects and WorkloadEndpoints to felix's [`PolicyState`]: which
//! tiers, policies and profiles apply to each local workload in each direction, and which
//! addresses each selector or list of nets in their rules stands for.
//!
//! Semantics follow Calico's (`api/pkg/apis/projectcalico/v3/`, Felix's calculation graph):
//! - An endpoint's labels are its own over its profiles' `labelsToApply`; its namespace's
//!   labels are those of profile `kns.<namespace>` (`pcns.` prefix removed) plus
//!   `projectcalico.org/name`.
//! - A NetworkPolicy selects endpoints of its namespace; its rule selectors match endpoints
//!   and NetworkSets of its namespace unless the rule has a `namespaceSelector`. A
//!   GlobalNetworkPolicy (and a Profile) selects cluster-wide, GlobalNetworkSets included.
//! - Tiers by `order` (default tier 1,000,000), policies by `order` then name; a policy with
//!   no `order` sorts last.
//! - Named ports resolve against the local endpoint when it is the side the port is on
//!   (ingress destination, egress source), else against every endpoint the side's selector
//!   matches. A rule whose ports all fail to resolve never matches and is left out.

use std::collections::{BTreeMap, BTreeSet};

use calyx_datastore::policy::{
    stored_selector, EntityRule, PolicyKind, PolicyObject, PolicyType, Port, Rule, RuleAction,
    DEFAULT_TIER, DEFAULT_TIER_ORDER, NAMESPACE_LABEL_PREFIX, NAMESPACE_PROFILE_PREFIX, NAME_LABEL,
};
use calyx_datastore::resources::WorkloadEndpoint;
use calyx_datastore::selector::Selector;
use calyx_felix::rules::model::IpVersion;
use calyx_felix::rules::policy::{
    DirectionRules, EndpointRules, NamedRules, PolicyRule, PolicyState, Side, TierRules, Verdict,
};
use ipnet::IpNet;

use super::PolicyView;

/// Something a rule selector can match: a workload or a network set.
struct Entity {
    /// Namespace; `None` for a GlobalNetworkSet.
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    namespace_labels: BTreeMap<String, String>,
    nets: Vec<IpNet>,
    /// Named ports: (name, protocol number, port); workloads only.
    ports: Vec<(String, u8, u16)>,
    is_global_set: bool,
}

/// The scope a policy's rule selectors look in.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// The policy's namespace.
    Namespace(&'a str),
    /// Everything.
    Cluster,
}

fn namespace_labels(view: &PolicyView, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(p) = view.profile(&format!("{NAMESPACE_PROFILE_PREFIX}{ns}")) {
        for (k, v) in p.labels_to_apply() {
            if let Some(k) = k.strip_prefix(NAMESPACE_LABEL_PREFIX) {
                out.insert(k.to_string(), v);
            }
        }
    }
    out.insert(NAME_LABEL.to_string(), ns.to_string());
    out
}

/// An endpoint's labels: its profiles' `labelsToApply`, overridden by its own.
pub fn effective_labels(view: &PolicyView, w: &WorkloadEndpoint) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for p in &w.spec.profiles {
        if let Some(p) = view.profile(p) {
            labels.extend(p.labels_to_apply());
        }
    }
    labels.extend(w.metadata.labels.clone());
    labels
}

fn wep_nets(w: &WorkloadEndpoint) -> Vec<IpNet> {
    w.spec
        .ip_networks
        .iter()
        .filter_map(|n| calyx_datastore::policy::rule::parse_net(n))
        .collect()
}

fn wep_ports(w: &WorkloadEndpoint) -> Vec<(String, u8, u16)> {
    let mut out = Vec::new();
    if let Some(serde_json::Value::Array(ports)) = w.spec.extra.get("ports") {
        for p in ports {
            let name = p.get("name").and_then(|v| v.as_str());
            let port = p.get("port").and_then(|v| v.as_u64());
            let proto = p
                .get("protocol")
                .map(calyx_datastore::policy::Protocol::parse)
                .unwrap_or(Ok(6));
            if let (Some(name), Some(port), Ok(proto)) = (name, port, proto) {
                if let Ok(port) = u16::try_from(port) {
                    out.push((name.to_string(), proto, port));
                }
            }
        }
    }
    out
}

fn entities(view: &PolicyView) -> Vec<Entity> {
    let mut ns_cache: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut ns_labels = |ns: &str| {
        ns_cache
            .entry(ns.to_string())
            .or_insert_with(|| namespace_labels(view, ns))
            .clone()
    };
    let mut out = Vec::new();
    for w in view.weps.values() {
        out.push(Entity {
            namespace: Some(w.metadata.namespace.clone()),
            labels: effective_labels(view, w),
            namespace_labels: ns_labels(&w.metadata.namespace),
            nets: wep_nets(w),
            ports: wep_ports(w),
            is_global_set: false,
        });
    }
    for o in view.objects.values() {
        match o.kind {
            PolicyKind::NetworkSet => out.push(Entity {
                namespace: Some(o.namespace().to_string()),
                labels: o.labels(),
                namespace_labels: ns_labels(o.namespace()),
                nets: o.nets(),
                ports: Vec::new(),
                is_global_set: false,
            }),
            PolicyKind::GlobalNetworkSet => out.push(Entity {
                namespace: None,
                labels: o.labels(),
                namespace_labels: BTreeMap::new(),
                nets: o.nets(),
                ports: Vec::new(),
                is_global_set: true,
            }),
            _ => {}
        }
    }
    out
}

/// FNV-1a, 64 bits: a stable short name for a set's definition.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Builds the sets and the rules; one per calculation.
struct Calc {
    entities: Vec<Entity>,
    sets: BTreeMap<String, BTreeSet<IpNet>>,
}

impl Calc {
    fn matching(
        &self,
        scope: Scope<'_>,
        sel: Option<&Selector>,
        ns_sel: Option<&Selector>,
    ) -> Vec<&Entity> {
        self.entities
            .iter()
            .filter(|e| {
                let in_scope = match (ns_sel, scope) {
                    (Some(ns), _) => !e.is_global_set && ns.matches(&e.namespace_labels),
                    (None, Scope::Namespace(n)) => e.namespace.as_deref() == Some(n),
                    (None, Scope::Cluster) => true,
                };
                in_scope && sel.is_none_or(|s| s.matches(&e.labels))
            })
            .collect()
    }

    /// The set of the entities a selector (and namespace selector) matches in `scope`.
    fn selector_set(
        &mut self,
        scope: Scope<'_>,
        sel: Option<&Selector>,
        ns_sel: Option<&Selector>,
    ) -> String {
        let scope_text = match scope {
            Scope::Namespace(n) => format!("ns:{n}"),
            Scope::Cluster => "cluster".into(),
        };
        let def = format!(
            "{scope_text}|{}|{}",
            ns_sel.map(ToString::to_string).unwrap_or_default(),
            sel.map(ToString::to_string).unwrap_or_default()
        );
        let name = format!("s-{}", short_hash(&def));
        if !self.sets.contains_key(&name) {
            let nets: BTreeSet<IpNet> = self
                .matching(scope, sel, ns_sel)
                .into_iter()
                .flat_map(|e| e.nets.iter().copied())
                .collect();
            self.sets.insert(name.clone(), nets);
        }
        name
    }

    fn nets_set(&mut self, nets: &[IpNet]) -> String {
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        let name = format!("n-{}", short_hash(&text.join(",")));
        self.sets
            .entry(name.clone())
            .or_insert_with(|| nets.iter().copied().collect());
        name
    }

    fn resolve_ports(
        &self,
        ports: &[Port],
        protocol: Option<u8>,
        local: Option<&[(String, u8, u16)]>,
        scope: Scope<'_>,
        e: &EntityRule,
    ) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        for p in ports {
            match p {
                Port::Range(a, b) => out.push((*a, *b)),
                Port::Named(name) => {
                    let pick = |ps: &[(String, u8, u16)], out: &mut Vec<(u16, u16)>| {
                        for (n, proto, port) in ps {
                            if n == name && protocol.is_none_or(|p| p == *proto) {
                                out.push((*port, *port));
                            }
                        }
                    };
                    match local {
                        Some(ps) => pick(ps, &mut out),
                        None => {
                            let sel = e.selector.as_ref();
                            let ns = e.namespace_selector.as_ref();
                            for ent in self.matching(scope, sel, ns) {
                                pick(&ent.ports, &mut out);
                            }
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn side(
        &mut self,
        e: &EntityRule,
        scope: Scope<'_>,
        protocol: Option<u8>,
        local: Option<&[(String, u8, u16)]>,
    ) -> Option<Side> {
        let mut s = Side::default();
        // As Calico (libcalico-go's updateprocessors/rules.go): in a namespaced policy any
        // selector of a rule, a `notSelector` alone included, limits the rule to endpoints of
        // the policy's namespace (or of `namespaceSelector`'s); without that, "not these pods"
        // would also admit every other namespace, the hosts and the outside.
        let namespaced = matches!(scope, Scope::Namespace(_));
        if e.selector.is_some()
            || e.namespace_selector.is_some()
            || (namespaced && e.not_selector.is_some())
        {
            let name = self.selector_set(scope, e.selector.as_ref(), e.namespace_selector.as_ref());
            s.in_sets.push(name);
        }
        if !e.nets.is_empty() {
            let name = self.nets_set(&e.nets);
            s.in_sets.push(name);
        }
        if let Some(ns) = &e.not_selector {
            let name = self.selector_set(scope, Some(ns), e.namespace_selector.as_ref());
            s.not_in_sets.push(name);
        }
        if !e.not_nets.is_empty() {
            let name = self.nets_set(&e.not_nets);
            s.not_in_sets.push(name);
        }
        s.ports = self.resolve_ports(&e.ports, protocol, local, scope, e);
        if !e.ports.is_empty() && s.ports.is_empty() {
            return None; // named ports that name nothing: the rule cannot match
        }
        s.not_ports = self.resolve_ports(&e.not_ports, protocol, local, scope, e);
        Some(s)
    }

    fn rule(
        &mut self,
        r: &Rule,
        scope: Scope<'_>,
        dir: PolicyType,
        local_ports: &[(String, u8, u16)],
    ) -> Option<PolicyRule> {
        let verdict = match r.action {
            RuleAction::Allow => Verdict::Allow,
            RuleAction::Deny => Verdict::Deny,
            RuleAction::Log => Verdict::Log,
            RuleAction::Pass => Verdict::Pass,
        };
        let (src_local, dst_local) = match dir {
            PolicyType::Ingress => (None, Some(local_ports)),
            PolicyType::Egress => (Some(local_ports), None),
        };
        let source = self.side(&r.source, scope, r.protocol, src_local)?;
        let destination = self.side(&r.destination, scope, r.protocol, dst_local)?;
        // The IP version: as written, else that of the rule's own nets when they are all of
        // one version (as Felix infers it).
        let ip_version = match r.ip_version {
            Some(4) => Some(IpVersion::V4),
            Some(6) => Some(IpVersion::V6),
            _ => {
                let nets: Vec<&IpNet> = [&r.source, &r.destination]
                    .iter()
                    .flat_map(|e| e.nets.iter().chain(&e.not_nets))
                    .collect();
                if !nets.is_empty() && nets.iter().all(|n| matches!(n, IpNet::V4(_))) {
                    Some(IpVersion::V4)
                } else if !nets.is_empty() && nets.iter().all(|n| matches!(n, IpNet::V6(_))) {
                    Some(IpVersion::V6)
                } else {
                    None
                }
            }
        };
        Some(PolicyRule {
            verdict,
            ip_version,
            protocol: r.protocol,
            not_protocol: r.not_protocol,
            icmp: r.icmp,
            not_icmp: r.not_icmp,
            source,
            destination,
        })
    }
}

/// The tiers, policies and profiles that apply to one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applicable {
    /// Ingress: (tier, default action is Pass, policies in order).
    pub ingress: Vec<(String, bool, Vec<String>)>,
    /// Egress, the same.
    pub egress: Vec<(String, bool, Vec<String>)>,
    /// The workload's profiles that exist.
    pub profiles: Vec<String>,
}

/// Sort key of an order: `None` last.
fn order_key(o: Option<f64>) -> (bool, f64) {
    (o.is_none(), o.unwrap_or(0.0))
}

/// A policy, parsed once per calculation.
struct IndexedPolicy {
    kind: PolicyKind,
    /// Namespace of a NetworkPolicy (empty for a GlobalNetworkPolicy).
    namespace: String,
    selector: Selector,
    namespace_selector: Option<Selector>,
    types: Vec<PolicyType>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
    /// `NetworkPolicy ns/name`, `GlobalNetworkPolicy name`.
    display: String,
}

impl IndexedPolicy {
    fn rules(&self, dir: PolicyType) -> &[Rule] {
        match dir {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

/// Every tier in order (name, `defaultAction: Pass`) with its policies in order.
struct PolicyIndex {
    tiers: Vec<(String, bool, Vec<IndexedPolicy>)>,
}

/// A policy's rules of one direction; a stored policy that also selects by service account
/// (which Calyx cannot see) denies everything instead, so it never opens more than Calico
/// would.
fn rules_or_deny(o: &PolicyObject, direction: PolicyType) -> Vec<Rule> {
    let by_account = o
        .spec()
        .get("serviceAccountSelector")
        .and_then(|v| v.as_str())
        .is_some_and(|s| !s.trim().is_empty());
    if by_account {
        vec![Rule::deny_all()]
    } else {
        o.rules(direction)
    }
}

impl PolicyIndex {
    fn new(view: &PolicyView) -> PolicyIndex {
        // Tiers: name -> (order, default pass).
        let mut tiers: BTreeMap<String, (Option<f64>, bool)> = BTreeMap::new();
        tiers.insert(DEFAULT_TIER.into(), (Some(DEFAULT_TIER_ORDER), false));
        for o in view.objects.values().filter(|o| o.kind == PolicyKind::Tier) {
            let pass = o.spec().get("defaultAction").and_then(|v| v.as_str()) == Some("Pass");
            let order = o
                .order()
                .or((o.name() == DEFAULT_TIER).then_some(DEFAULT_TIER_ORDER));
            tiers.insert(o.name().to_string(), (order, pass));
        }
        let mut by_tier: BTreeMap<String, Vec<&PolicyObject>> = BTreeMap::new();
        for o in view.objects.values() {
            if !matches!(
                o.kind,
                PolicyKind::NetworkPolicy | PolicyKind::GlobalNetworkPolicy
            ) {
                continue;
            }
            // preDNAT and doNotTrack policies apply to host endpoints only (Calico), never to
            // workloads; a selector Calyx cannot enforce must not select workloads instead.
            let spec = o.spec();
            let flag = |k: &str| spec.get(k).and_then(|v| v.as_bool()) == Some(true);
            if flag("preDNAT") || flag("doNotTrack") {
                continue;
            }
            // A policy of a tier that does not exist applies nowhere (Calico refuses it).
            if let Some(t) = o.tier().filter(|t| tiers.contains_key(t)) {
                by_tier.entry(t).or_default().push(o);
            }
        }
        let mut tier_list: Vec<(String, (Option<f64>, bool))> = tiers.into_iter().collect();
        tier_list.sort_by(|a, b| {
            order_key(a.1 .0)
                .partial_cmp(&order_key(b.1 .0))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(&b.0))
        });
        let mut out = Vec::new();
        for (tier, (_, pass)) in tier_list {
            let Some(mut policies) = by_tier.remove(&tier) else {
                continue;
            };
            policies.sort_by(|a, b| {
                order_key(a.order())
                    .partial_cmp(&order_key(b.order()))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.name().cmp(b.name()))
            });
            let indexed = policies
                .into_iter()
                .map(|o| {
                    let ns_sel = o
                        .spec()
                        .get("namespaceSelector")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    IndexedPolicy {
                        kind: o.kind,
                        namespace: o.namespace().to_string(),
                        selector: stored_selector(o.selector_text()),
                        namespace_selector: (o.kind == PolicyKind::GlobalNetworkPolicy
                            && !ns_sel.is_empty())
                        .then(|| stored_selector(ns_sel)),
                        types: o.policy_types(),
                        ingress: rules_or_deny(o, PolicyType::Ingress),
                        egress: rules_or_deny(o, PolicyType::Egress),
                        display: format!("{} {}", o.kind, o.display_name()),
                    }
                })
                .collect();
            out.push((tier, pass, indexed));
        }
        PolicyIndex { tiers: out }
    }

    /// The policies that select `w`, by tier in order: (tier, default pass, policies).
    fn applicable<'a>(
        &'a self,
        view: &PolicyView,
        w: &WorkloadEndpoint,
    ) -> Vec<(&'a str, bool, Vec<&'a IndexedPolicy>)> {
        let labels = effective_labels(view, w);
        let ns = &w.metadata.namespace;
        let ns_labels = namespace_labels(view, ns);
        let mut out = Vec::new();
        for (tier, pass, policies) in &self.tiers {
            let selected: Vec<&IndexedPolicy> = policies
                .iter()
                .filter(|p| {
                    (p.kind != PolicyKind::NetworkPolicy || &p.namespace == ns)
                        && p.selector.matches(&labels)
                        && p.namespace_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(&ns_labels))
                })
                .collect();
            if !selected.is_empty() {
                out.push((tier.as_str(), *pass, selected));
            }
        }
        out
    }
}

/// What applies to `w` (for `calyx policy show`).
pub fn applicable(view: &PolicyView, w: &WorkloadEndpoint) -> Applicable {
    let index = PolicyIndex::new(view);
    let mut a = Applicable::default();
    for (tier, pass, policies) in index.applicable(view, w) {
        for dir in [PolicyType::Ingress, PolicyType::Egress] {
            let names: Vec<String> = policies
                .iter()
                .filter(|p| p.types.contains(&dir))
                .map(|p| p.display.clone())
                .collect();
            if !names.is_empty() {
                let target = match dir {
                    PolicyType::Ingress => &mut a.ingress,
                    PolicyType::Egress => &mut a.egress,
                };
                target.push((tier.to_string(), pass, names));
            }
        }
    }
    a.profiles = w
        .spec
        .profiles
        .iter()
        .filter(|p| view.profile(p).is_some())
        .cloned()
        .collect();
    a
}

/// The policy state of node `me`: every local workload with an interface.
pub fn policy_state(view: &PolicyView, me: &str) -> PolicyState {
    let mut calc = Calc {
        entities: entities(view),
        sets: BTreeMap::new(),
    };
    let index = PolicyIndex::new(view);
    let mut state = PolicyState::default();
    for w in view.weps.values() {
        if w.spec.node != me || w.spec.interface_name.is_empty() {
            continue;
        }
        let local_ports = wep_ports(w);
        let tiers = index.applicable(view, w);
        let mut e = EndpointRules::default();
        for dir in [PolicyType::Ingress, PolicyType::Egress] {
            let mut d = DirectionRules::default();
            for (tier, pass, selected) in &tiers {
                let mut policies = Vec::new();
                for p in selected.iter().filter(|p| p.types.contains(&dir)) {
                    let scope = match p.kind {
                        PolicyKind::NetworkPolicy => Scope::Namespace(&p.namespace),
                        _ => Scope::Cluster,
                    };
                    let rules = p
                        .rules(dir)
                        .iter()
                        .filter_map(|r| calc.rule(r, scope, dir, &local_ports))
                        .collect();
                    policies.push(NamedRules {
                        name: p.display.clone(),
                        rules,
                    });
                }
                if !policies.is_empty() {
                    d.tiers.push(TierRules {
                        name: tier.to_string(),
                        policies,
                        default_pass: *pass,
                    });
                }
            }
            let profiles: Vec<NamedRules> = w
                .spec
                .profiles
                .iter()
                .filter_map(|p| view.profile(p))
                .map(|p| NamedRules {
                    name: format!("Profile {}", p.name()),
                    rules: p
                        .rules(dir)
                        .iter()
                        .filter_map(|r| calc.rule(r, Scope::Cluster, dir, &local_ports))
                        .collect(),
                })
                .collect();
            d.profiles = (!profiles.is_empty()).then_some(profiles);
            match dir {
                PolicyType::Ingress => e.ingress = d,
                PolicyType::Egress => e.egress = d,
            }
        }
        state.endpoints.insert(w.spec.interface_name.clone(), e);
    }
    state.sets = calc.sets;
    state
}
