//! Unit tests of the BGPFilter translation: each rule field, the order of rules and filters,
//! and what the speaker's policy then decides for concrete routes.

#![allow(clippy::unwrap_used)]

use super::*;
use calyx_bgp::{PeerType, Verdict};
use calyx_datastore::resources::{BGPFilterPrefixLength, BGPFilterSpec, BGPPeerSpec, ObjectMeta};
use calyx_proto::PathAttributes;
use ipnet::IpNet;

fn r(cidr: &str, op: &str, action: &str) -> BGPFilterRule {
    BGPFilterRule {
        cidr: cidr.into(),
        match_operator: op.into(),
        action: action.into(),
        ..Default::default()
    }
}

fn filter(name: &str, spec: BGPFilterSpec) -> BGPFilter {
    BGPFilter::new(name, spec)
}

fn set(fs: Vec<BGPFilter>) -> BTreeMap<String, BGPFilter> {
    fs.into_iter()
        .map(|f| (f.metadata.name.clone(), f))
        .collect()
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_string()).collect()
}

/// Accept, reject, or the default (`None`) for a route from (`import`) or to a peer.
fn decide(p: &Option<Policy>, prefix: &str, source: PeerType) -> Option<bool> {
    let net: IpNet = prefix.parse().unwrap();
    let pol = p.as_ref()?;
    match pol.evaluate(&net, &PathAttributes::default(), source) {
        Verdict::Rule(_) => Some(true),
        Verdict::Reject => Some(false),
        Verdict::Default(_) => None,
    }
}

fn import_only(rules: Vec<BGPFilterRule>) -> Option<Policy> {
    let spec = BGPFilterSpec {
        import_v4: rules,
        ..Default::default()
    };
    policies(&names(&["f"]), &set(vec![filter("f", spec)])).import
}

#[test]
fn every_match_operator() {
    let p = import_only(vec![r("10.1.0.0/16", "Equal", "Accept")]);
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), Some(true));
    assert_eq!(decide(&p, "10.1.1.0/24", PeerType::Ebgp), None);
    let p = import_only(vec![r("10.1.0.0/16", "NotEqual", "Reject")]);
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), None);
    assert_eq!(decide(&p, "10.1.1.0/24", PeerType::Ebgp), Some(false));
    let p = import_only(vec![r("10.1.0.0/16", "In", "Reject")]);
    assert_eq!(decide(&p, "10.1.1.0/24", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "10.0.0.0/8", PeerType::Ebgp), None);
    let p = import_only(vec![r("10.1.0.0/16", "NotIn", "Reject")]);
    assert_eq!(decide(&p, "10.1.1.0/24", PeerType::Ebgp), None);
    assert_eq!(decide(&p, "10.0.0.0/8", PeerType::Ebgp), Some(false));
    // Host bits in the CIDR are masked, as Calico's ParseCIDR does.
    let p = import_only(vec![r("10.1.2.3/16", "Equal", "Accept")]);
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), Some(true));
}

#[test]
fn prefix_length_is_confds_prefix_set() {
    let mut rule = r("10.0.0.0/8", "In", "Accept");
    rule.prefix_length = Some(BGPFilterPrefixLength {
        min: Some(16),
        max: Some(24),
        ..Default::default()
    });
    let p = import_only(vec![
        rule.clone(),
        BGPFilterRule {
            action: "Reject".into(),
            ..Default::default()
        },
    ]);
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), Some(true));
    assert_eq!(decide(&p, "10.1.2.0/24", PeerType::Ebgp), Some(true));
    assert_eq!(decide(&p, "10.1.2.0/25", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "10.0.0.0/8", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "11.1.0.0/16", PeerType::Ebgp), Some(false));
    // Only `max`: from the CIDR's own length (`{8,24}`); a `min` below it is raised to it.
    rule.prefix_length = Some(BGPFilterPrefixLength {
        min: Some(2),
        max: Some(24),
        ..Default::default()
    });
    let pol = import_only(vec![rule.clone()]).unwrap();
    let m = pol.rules[0].prefix.as_ref().unwrap();
    assert_eq!((m.min_len, m.max_len), (Some(8), Some(24)));
    // NotIn with lengths is `net !~ [ C{a,b} ]`.
    rule.match_operator = "NotIn".into();
    rule.action = "Reject".into();
    let p = import_only(vec![rule]);
    assert_eq!(decide(&p, "10.1.2.0/25", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "10.1.2.0/24", PeerType::Ebgp), None);
}

#[test]
fn source_remote_peers_matches_learned_routes_only() {
    let spec = BGPFilterSpec {
        export_v4: vec![BGPFilterRule {
            source: "RemotePeers".into(),
            action: "Reject".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let p = policies(&names(&["f"]), &set(vec![filter("f", spec)]));
    assert_eq!(p.import, None);
    let export = p.export.unwrap();
    assert_eq!(export.default, DefaultAction::Calico);
    let e = Some(export);
    assert_eq!(decide(&e, "10.1.0.0/16", PeerType::Ibgp), Some(false));
    assert_eq!(decide(&e, "10.1.0.0/16", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&e, "10.65.0.0/26", PeerType::Local), None);
}

#[test]
fn rules_apply_to_their_family_only() {
    let spec = BGPFilterSpec {
        import_v4: vec![BGPFilterRule {
            action: "Reject".into(),
            ..Default::default()
        }],
        import_v6: vec![r("fd00::/8", "In", "Accept")],
        ..Default::default()
    };
    let p = policies(&names(&["f"]), &set(vec![filter("f", spec)])).import;
    assert_eq!(p.as_ref().unwrap().default, DefaultAction::Accept);
    assert_eq!(decide(&p, "10.1.0.0/16", PeerType::Ebgp), Some(false));
    assert_eq!(decide(&p, "fd00:1::/64", PeerType::Ebgp), Some(true));
    // The catch-all IPv4 reject does not touch IPv6 routes.
    assert_eq!(decide(&p, "2001:db8::/32", PeerType::Ebgp), None);
}

#[test]
fn rules_and_filters_keep_their_order_and_missing_filters_are_skipped() {
    let first = filter(
        "first",
        BGPFilterSpec {
            import_v4: vec![
                r("10.1.1.0/24", "Equal", "Accept"),
                r("10.1.0.0/16", "In", "Reject"),
            ],
            ..Default::default()
        },
    );
    let second = filter(
        "second",
        BGPFilterSpec {
            import_v4: vec![
                r("10.1.2.0/24", "Equal", "Accept"),
                r("10.0.0.0/8", "In", "Reject"),
            ],
            export_v4: vec![r("10.65.0.0/16", "In", "Reject")],
            ..Default::default()
        },
    );
    let fs = set(vec![first, second]);
    let p = policies(&names(&["first", "absent", "second"]), &fs);
    let imp = &p.import;
    assert_eq!(decide(imp, "10.1.1.0/24", PeerType::Ebgp), Some(true));
    // The first filter's reject comes before the second's accept.
    assert_eq!(decide(imp, "10.1.2.0/24", PeerType::Ebgp), Some(false));
    // Falls through the first filter to the second one.
    assert_eq!(decide(imp, "10.2.0.0/16", PeerType::Ebgp), Some(false));
    assert_eq!(decide(imp, "192.168.0.0/16", PeerType::Ebgp), None);
    assert_eq!(
        decide(&p.export, "10.65.1.0/26", PeerType::Local),
        Some(false)
    );
    // The other order: the second filter decides 10.1.2.0/24 first.
    let p = policies(&names(&["second", "first"]), &fs);
    assert_eq!(decide(&p.import, "10.1.2.0/24", PeerType::Ebgp), Some(true));
    assert_eq!(
        decide(&p.import, "10.1.1.0/24", PeerType::Ebgp),
        Some(false)
    );
    // No filters, or only missing ones: the speaker's defaults.
    assert_eq!(policies(&[], &fs), PeerPolicies::default());
    assert_eq!(policies(&names(&["absent"]), &fs), PeerPolicies::default());
}

#[test]
fn rules_calyx_cannot_honour_are_skipped_and_reported() {
    let f = filter(
        "f",
        BGPFilterSpec {
            import_v4: vec![
                BGPFilterRule {
                    interface: "eth*".into(),
                    action: "Reject".into(),
                    ..Default::default()
                },
                BGPFilterRule {
                    action: "Reject".into(),
                    extra: [("peerType".to_string(), serde_json::json!("eBGP"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
                r("10.0.0.0/8", "Like", "Reject"),
                r("10.0.0.0/8", "In", "Drop"),
                r("10.1.0.0/16", "In", "Accept"),
            ],
            ..Default::default()
        },
    );
    let fs = set(vec![f]);
    let p = policies(&names(&["f"]), &fs).import.unwrap();
    assert_eq!(p.rules.len(), 1);
    let mut peers = BTreeMap::new();
    let mut spec = BGPPeerSpec {
        filters: names(&["f", "gone"]),
        ..Default::default()
    };
    peers.insert("tor".to_string(), BGPPeer::new("tor", spec.clone()));
    // A BGPPeer for another node does not concern this one.
    spec.node = "other".into();
    spec.filters = names(&["elsewhere"]);
    peers.insert("other".to_string(), BGPPeer::new("other", spec));
    let node = Node {
        metadata: ObjectMeta::named("me"),
        spec: Default::default(),
        status: None,
        extra: Default::default(),
    };
    let probs = problems(&peers, &fs, "me", &node, |_, _| false);
    let text: Vec<String> = probs
        .iter()
        .map(|p| format!("{} {:?} {}", p.filter, p.used_by, p.reason))
        .collect();
    assert_eq!(probs.len(), 5, "{text:#?}");
    assert!(text[0]
        .starts_with("f [\"BGPPeer \\\"tor\\\"\"] rule importV4[0]: matching on `interface`"));
    assert!(text[1].contains("importV4[1]: `peerType` is not supported"));
    assert!(text[2].contains("importV4[2]: unknown matchOperator \"Like\""));
    assert!(text[3].contains("importV4[3]: unknown action \"Drop\""));
    assert!(text[4].starts_with("gone") && text[4].contains("no such BGPFilter"));
}
