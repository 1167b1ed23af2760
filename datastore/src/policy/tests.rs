#![allow(clippy::unwrap_used)]
use serde_json::json;

use super::*;

#[test]
fn keys_as_calico_stores_them() {
    assert_eq!(
        PolicyKind::NetworkPolicy.key("shop", "knp.default.web"),
        "/calico/resources/v3/projectcalico.org/networkpolicies/shop/knp.default.web"
    );
    assert_eq!(
        PolicyKind::GlobalNetworkPolicy.key("x", "deny"),
        "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/deny"
    );
    assert_eq!(
        PolicyKind::from_key("/calico/resources/v3/projectcalico.org/networksets/ns1/a"),
        Some((PolicyKind::NetworkSet, "ns1", "a"))
    );
    assert_eq!(
        PolicyKind::from_key("/calico/resources/v3/projectcalico.org/profiles/kns.a"),
        Some((PolicyKind::Profile, "", "kns.a"))
    );
    assert_eq!(
        PolicyKind::parse("GNP"),
        Some(PolicyKind::GlobalNetworkPolicy)
    );
    assert_eq!(PolicyKind::parse("tiers"), Some(PolicyKind::Tier));
}

#[test]
fn stored_objects_keep_unknown_fields() {
    let stored = br#"{"kind":"GlobalNetworkPolicy","apiVersion":"projectcalico.org/v3","metadata":{"name":"a","generation":4},"spec":{"selector":"all()","futureField":{"x":1},"ingress":[{"action":"Allow","futureRuleField":true}]}}"#;
    let o = PolicyObject::from_stored(PolicyKind::GlobalNetworkPolicy, stored).unwrap();
    let back: Value = serde_json::from_slice(&o.to_json()).unwrap();
    let orig: Value = serde_json::from_slice(stored).unwrap();
    assert_eq!(back, orig);
    assert_eq!(o.rules(PolicyType::Ingress)[0].action, RuleAction::Allow);
    // A stored rule that does not parse denies.
    let bad = br#"{"kind":"GlobalNetworkPolicy","metadata":{"name":"a"},"spec":{"ingress":[{"action":"Maybe"}]}}"#;
    let o = PolicyObject::from_stored(PolicyKind::GlobalNetworkPolicy, bad).unwrap();
    assert_eq!(o.rules(PolicyType::Ingress), vec![Rule::deny_all()]);
    // A stored rule with a match Calyx cannot enforce denies too (ignoring it would widen it).
    for rule in [
        r#"{"action":"Allow","source":{"serviceAccounts":{"names":["api"]}}}"#,
        r#"{"action":"Allow","destination":{"services":{"name":"db","namespace":"a"}}}"#,
        r#"{"action":"Allow","http":{"methods":["GET"]}}"#,
    ] {
        let stored = format!(
            r#"{{"kind":"GlobalNetworkPolicy","metadata":{{"name":"a"}},"spec":{{"ingress":[{rule}]}}}}"#
        );
        let o =
            PolicyObject::from_stored(PolicyKind::GlobalNetworkPolicy, stored.as_bytes()).unwrap();
        assert_eq!(
            o.rules(PolicyType::Ingress),
            vec![Rule::deny_all()],
            "{rule}"
        );
    }
}

fn user(text: &str) -> Result<Vec<PolicyObject>, String> {
    parse_policy_documents(text)
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

#[test]
fn user_input_strict_and_complete() {
    let ok = user(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  tier: default
  order: 100
  selector: app == 'web'
  types: [Ingress, Egress]
  performanceHints: [AssumeNeededOnEveryNode]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'fe', namespaceSelector: all(), notNets: [10.9.0.0/16]}
    destination: {ports: [80, '8000:8080', http]}
    metadata: {annotations: {a: b}}
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  egress:
  - action: Deny
    ipVersion: 4
    destination: {nets: [192.0.2.0/24]}
",
    )
    .unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        ok[0].key(),
        "/calico/resources/v3/projectcalico.org/networkpolicies/shop/allow-web"
    );
    let r = &ok[0].rules(PolicyType::Ingress)[0];
    assert_eq!(
        r.destination.ports,
        vec![
            Port::Range(80, 80),
            Port::Range(8000, 8080),
            Port::Named("http".into())
        ]
    );
    // Typos and refused features: one line naming the field.
    let e = user("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec: {selecter: all()}\n").unwrap_err();
    assert!(e.contains("spec: unknown field `selecter`"), "{e}");
    let e = user("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec: {serviceAccountSelector: x == 'y'}\n").unwrap_err();
    assert!(
        e.contains(
            "spec.serviceAccountSelector: selecting endpoints by service account is not supported"
        ),
        "{e}"
    );
    let e = user("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress:\n  - action: Allow\n    http: {methods: [GET]}\n").unwrap_err();
    assert!(
        e.contains("spec.ingress[0].http: matching on HTTP is not supported"),
        "{e}"
    );
    let e = user("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress:\n  - action: Allow\n    destination: {ports: [80]}\n").unwrap_err();
    assert!(e.contains("ports and notPorts need protocol"), "{e}");
    let e = user("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress:\n  - action: Allow\n    source: {selector: 'a =='}\n").unwrap_err();
    assert!(
        e.contains("spec.ingress[0].source.selector: invalid selector"),
        "{e}"
    );
    // Namespace defaults to `default`; the other kinds.
    let all = user(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: ns1}\nspec: {nets: [10.0.0.0/8]}\n---\n\
apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g, labels: {a: b}}\nspec: {nets: [192.0.2.1]}\n---\n\
apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100, defaultAction: Pass}\n---\n\
apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.shop}\nspec: {labelsToApply: {pcns.env: prod}, ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    )
    .unwrap();
    assert_eq!(all[0].namespace(), "default");
    assert_eq!(all[1].nets(), vec!["192.0.2.1/32".parse().unwrap()]);
    assert_eq!(all[3].labels_to_apply()["pcns.env"], "prod");
}

#[test]
fn other_documents_stay_with_their_line_numbers() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {}\n---\nkind: IPPool\n";
    let (p, rest) = parse_policy_documents(text).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(rest.lines().count(), text.lines().count());
    assert!(rest.contains("kind: IPPool\nmetadata"));
    assert!(!rest.contains("Tier"));
}

#[test]
fn policy_types_default_as_calico() {
    let o = |spec: Value| PolicyObject {
        kind: PolicyKind::GlobalNetworkPolicy,
        value: json!({"metadata": {"name": "a"}, "spec": spec}),
    };
    assert_eq!(o(json!({})).policy_types(), vec![PolicyType::Ingress]);
    assert_eq!(
        o(json!({"egress": [{"action": "Allow"}]})).policy_types(),
        vec![PolicyType::Egress]
    );
    assert_eq!(
        o(json!({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}))
            .policy_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
}

/// The Kubernetes documentation's example NetworkPolicy, translated as kube-controllers does.
#[test]
fn kubernetes_network_policy_translation() {
    let text = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
";
    let p = user(text).unwrap();
    assert_eq!(p.len(), 1);
    let v = &p[0].value;
    assert_eq!(v["metadata"]["name"], "knp.default.test-network-policy");
    assert_eq!(v["spec"]["order"], 1000.0);
    assert_eq!(
        v["spec"]["selector"],
        "projectcalico.org/orchestrator == 'k8s' && role == 'db'"
    );
    assert_eq!(v["spec"]["types"], json!(["Ingress", "Egress"]));
    let ingress = v["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 3);
    assert_eq!(
        ingress[0],
        json!({"action": "Allow", "protocol": "TCP",
               "source": {"nets": ["172.17.0.0/16"], "notNets": ["172.17.1.0/24"]},
               "destination": {"ports": [6379]}})
    );
    assert_eq!(
        ingress[1]["source"],
        json!({"selector": "projectcalico.org/orchestrator == 'k8s'", "namespaceSelector": "project == 'myproject'"})
    );
    assert_eq!(
        ingress[2]["source"],
        json!({"selector": "projectcalico.org/orchestrator == 'k8s' && role == 'frontend'"})
    );
    assert_eq!(
        v["spec"]["egress"][0],
        json!({"action": "Allow", "protocol": "TCP", "destination": {"nets": ["10.0.0.0/24"], "ports": [5978]}})
    );
    // Default deny all ingress (empty podSelector, no rules).
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny-ingress}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n").unwrap();
    assert_eq!(
        p[0].value["spec"]["selector"],
        "projectcalico.org/orchestrator == 'k8s'"
    );
    assert_eq!(p[0].rules(PolicyType::Ingress), vec![]);
    // Allow all ingress: one rule with an empty peer.
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all-ingress}\nspec:\n  podSelector: {}\n  ingress:\n  - {}\n  policyTypes: [Ingress]\n").unwrap();
    assert_eq!(p[0].value["spec"]["ingress"], json!([{"action": "Allow"}]));

    // The documentation's other examples: default deny all (both types), allow all egress,
    // and a port range (endPort).
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny-all\nspec:\n  podSelector: {}\n  policyTypes:\n  - Ingress\n  - Egress\n").unwrap();
    assert_eq!(
        p[0].policy_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
    assert!(p[0].rules(PolicyType::Egress).is_empty());
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-all-egress\nspec:\n  podSelector: {}\n  egress:\n  - {}\n  policyTypes:\n  - Egress\n").unwrap();
    assert_eq!(p[0].value["spec"]["egress"], json!([{"action": "Allow"}]));
    assert_eq!(p[0].value["spec"]["types"], json!(["Egress"]));
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: multi-port-egress\n  namespace: default\nspec:\n  podSelector:\n    matchLabels:\n      role: db\n  policyTypes:\n    - Egress\n  egress:\n    - to:\n        - ipBlock:\n            cidr: 10.0.0.0/24\n      ports:\n        - protocol: TCP\n          port: 32000\n          endPort: 32768\n").unwrap();
    assert_eq!(
        p[0].value["spec"]["egress"][0]["destination"],
        json!({"nets": ["10.0.0.0/24"], "ports": ["32000:32768"]})
    );
    assert_eq!(
        p[0].rules(PolicyType::Egress)[0].destination.ports,
        vec![Port::Range(32000, 32768)]
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9:./=' !&|()-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("action".to_string()),
                        Just("protocol".to_string()),
                        Just("ports".to_string()),
                        Just("selector".to_string()),
                        Just("nets".to_string()),
                        Just("icmp".to_string()),
                        Just("source".to_string()),
                        Just("destination".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a datastore holds, reading it never panics, and user input is either
        /// accepted or refused with an error.
        #[test]
        fn stored_and_user_policies_never_panic(spec in arb_value(), ingress in arb_value()) {
            let v = json!({"kind": "GlobalNetworkPolicy", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "p"}, "spec": spec});
            let mut v2 = v.clone();
            if let Value::Object(m) = &mut v2["spec"] {
                m.insert("ingress".into(), ingress);
            }
            for v in [v, v2] {
                let bytes = serde_json::to_vec(&v).unwrap();
                if let Ok(o) = PolicyObject::from_stored(PolicyKind::GlobalNetworkPolicy, &bytes) {
                    let _ = o.rules(PolicyType::Ingress);
                    let _ = o.rules(PolicyType::Egress);
                    let _ = o.policy_types();
                    let _ = o.nets();
                    let _ = o.tier();
                }
                let _ = PolicyObject::from_user(PolicyKind::GlobalNetworkPolicy, v.clone());
                let _ = k8s::translate(&v);
            }
        }
    }
}

/// A manifest without policyTypes gets what the API server would store (Ingress, plus Egress
/// with egress rules); rules of an undeclared direction are left out, not refused.
#[test]
fn kubernetes_policy_types_defaulted_as_the_api_server_does() {
    let types = |p: &PolicyObject| p.value["spec"]["types"].clone();
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: egress-only}\nspec:\n  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]\n").unwrap();
    assert_eq!(types(&p[0]), json!(["Ingress", "Egress"]));
    assert_eq!(
        p[0].value["spec"]["egress"].as_array().map(Vec::len),
        Some(1)
    );
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: in-only}\nspec:\n  podSelector: {}\n  ingress:\n  - {}\n").unwrap();
    assert_eq!(types(&p[0]), json!(["Ingress"]));
    let p = user("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: declared-egress}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  ingress:\n  - {}\n  egress:\n  - {}\n").unwrap();
    assert_eq!(types(&p[0]), json!(["Egress"]));
    assert!(p[0].value["spec"].get("ingress").is_none());
}
