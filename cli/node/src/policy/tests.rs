#![allow(clippy::unwrap_used)]
//! The calculation on hand-made datastore contents (no kernel): which policies apply, set
//! contents, tiers and profiles.

use calyx_datastore::policy::parse_policy_documents;
use calyx_felix::rules::policy::Verdict;
use serde_json::json;

use super::*;

fn wep(ns: &str, pod: &str, node: &str, ip: &str, labels: serde_json::Value) -> WorkloadEndpoint {
    let v = json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("{node}-k8s-{pod}-eth0"), "namespace": ns, "labels": labels},
        "spec": {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                 "ipNetworks": [format!("{ip}/32")], "profiles": [format!("kns.{ns}")],
                 "interfaceName": format!("cali{pod}"),
                 "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}
    });
    WorkloadEndpoint::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn view(yaml: &str) -> PolicyView {
    let mut v = PolicyView::default();
    for (ns, pod, node, ip, app) in [
        ("a", "a1", "n1", "10.0.0.1", "web"),
        ("a", "a2", "n2", "10.0.0.2", "db"),
        ("b", "b1", "n1", "10.0.1.1", "web"),
    ] {
        let w = wep(
            ns,
            pod,
            node,
            ip,
            json!({"app": app, "projectcalico.org/orchestrator": "k8s", "projectcalico.org/namespace": ns}),
        );
        v.weps.insert(w.key(), w);
    }
    for (o, _) in [parse_policy_documents(yaml).unwrap()] {
        for o in o {
            v.objects.insert(o.key(), o);
        }
    }
    v
}

const PROFILES: &str = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.a}\nspec: {labelsToApply: {pcns.team: red, pcns.projectcalico.org/name: a}, ingress: [{action: Allow}], egress: [{action: Allow}]}\n---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.b}\nspec: {labelsToApply: {pcns.team: blue}, ingress: [{action: Allow}], egress: [{action: Allow}]}\n";

#[test]
fn namespaced_policy_selects_its_namespace_and_sets_hold_addresses() {
    let v = view(&format!("{PROFILES}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: a}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from: [{{podSelector: {{}}}}]\n    ports: [{{port: http}}]\n"));
    let s = calc::policy_state(&v, "n1");
    // n1 has a1 (selected) and b1 (namespace b: not selected).
    assert_eq!(s.endpoints.len(), 2);
    let a1 = &s.endpoints["calia1"];
    assert_eq!(a1.ingress.tiers.len(), 1);
    let r = &a1.ingress.tiers[0].policies[0].rules[0];
    assert_eq!(r.verdict, Verdict::Allow);
    assert_eq!(r.destination.ports, vec![(8080, 8080)]);
    // From the same namespace only: a1 and a2.
    let set = &s.sets[&r.source.in_sets[0]];
    assert_eq!(set.len(), 2);
    assert!(set.contains(&"10.0.0.2/32".parse().unwrap()));
    let b1 = &s.endpoints["calib1"];
    assert!(b1.ingress.tiers.is_empty());
    assert_eq!(b1.ingress.profiles.as_ref().unwrap().len(), 1);
    let show = calc::applicable(&v, &v.weps.values().next().unwrap().clone());
    assert_eq!(
        show.ingress[0].2,
        vec!["NetworkPolicy a/knp.default.web".to_string()]
    );
    assert_eq!(show.profiles, vec!["kns.a".to_string()]);
}

#[test]
fn namespace_selector_tiers_and_missing_profiles() {
    let v = view(&format!("{PROFILES}---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: security}}\nspec: {{order: 10}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: security.pass}}\nspec: {{tier: security, selector: all(), ingress: [{{action: Pass}}]}}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: from-blue, namespace: a}}\nspec: {{selector: all(), ingress: [{{action: Allow, source: {{namespaceSelector: team == 'blue'}}}}]}}\n"));
    let s = calc::policy_state(&v, "n1");
    let a1 = &s.endpoints["calia1"];
    assert_eq!(a1.ingress.tiers.len(), 2);
    assert_eq!(a1.ingress.tiers[0].name, "security");
    assert_eq!(a1.ingress.tiers[1].name, "default");
    let r = &a1.ingress.tiers[1].policies[0].rules[0];
    let set = &s.sets[&r.source.in_sets[0]];
    assert_eq!(
        set.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["10.0.1.1/32"]
    );
    // Egress: no policy; profiles exist.
    assert!(a1.egress.tiers.is_empty());
    // Without profiles in the datastore, nothing applies to b1's egress.
    let mut v2 = v.clone();
    v2.objects.retain(|_, o| o.kind != PolicyKind::Profile);
    let s2 = calc::policy_state(&v2, "n1");
    assert!(s2.endpoints["calib1"].egress.profiles.is_none());
}

#[test]
fn a_namespaced_not_selector_admits_only_its_namespace() {
    let v = view(&format!("{PROFILES}---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: not-db, namespace: a}}\nspec: {{selector: app == 'web', ingress: [{{action: Allow, source: {{notSelector: app == 'db'}}}}]}}\n"));
    let s = calc::policy_state(&v, "n1");
    let r = &s.endpoints["calia1"].ingress.tiers[0].policies[0].rules[0];
    // In namespace a (a1, a2) and not app == db (a2): a1 only; b1 and the outside are out.
    assert_eq!(r.source.in_sets.len(), 1, "{r:?}");
    let within = &s.sets[&r.source.in_sets[0]];
    assert_eq!(
        within.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["10.0.0.1/32", "10.0.0.2/32"]
    );
    let not = &s.sets[&r.source.not_in_sets[0]];
    assert_eq!(
        not.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["10.0.0.2/32"]
    );
}

#[test]
fn host_only_and_service_account_policies_never_widen_workload_rules() {
    // A preDNAT policy is for host endpoints: it must not select workloads (its tier would
    // then deny them by default).
    // (Stored as Calico writes it: `calyx apply` refuses preDNAT.)
    let mut v = view(&format!("{PROFILES}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: host}}\nspec: {{selector: all(), applyOnForward: true, ingress: [{{action: Deny}}]}}\n"));
    assert!(!calc::policy_state(&v, "n1").endpoints["calia1"]
        .ingress
        .tiers
        .is_empty());
    for o in v.objects.values_mut() {
        if o.name() == "host" {
            o.value["spec"]["preDNAT"] = json!(true);
        }
    }
    let s = calc::policy_state(&v, "n1");
    assert!(s.endpoints["calia1"].ingress.tiers.is_empty());
    // A stored policy that also selects by service account denies rather than allow more.
    let v = view(&format!("{PROFILES}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: sa}}\nspec: {{selector: all(), ingress: [{{action: Allow}}]}}\n"));
    let mut v = v;
    for o in v.objects.values_mut() {
        if o.name() == "sa" {
            o.value["spec"]["serviceAccountSelector"] = json!("role == 'api'");
        }
    }
    let s = calc::policy_state(&v, "n1");
    let r = &s.endpoints["calia1"].ingress.tiers[0].policies[0].rules[0];
    assert_eq!(r.verdict, Verdict::Deny, "{r:?}");
}

#[test]
fn undecodable_stored_objects_are_counted_until_fixed_or_deleted() {
    let mut v = PolicyView::default();
    let key = PolicyKind::GlobalNetworkPolicy.key("", "broken");
    v.put(&key, b"{not json");
    assert_eq!(v.undecodable.len(), 1);
    v.put(
        &key,
        br#"{"kind":"GlobalNetworkPolicy","metadata":{"name":"broken"},"spec":{"selector":"all()"}}"#,
    );
    assert!(v.undecodable.is_empty());
    assert_eq!(v.objects.len(), 1);
    v.put(&key, b"[]");
    assert_eq!(v.undecodable.len(), 1);
    assert!(v.objects.is_empty());
    v.delete(&key);
    assert!(v.undecodable.is_empty());
}
