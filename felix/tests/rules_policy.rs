//! The policy table against a real kernel: every match and action the policy compiler uses
//! is accepted by nf_tables, reads back as written (a second sync changes nothing), and is
//! shown by `nft` as the README describes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use calyx_felix::rules::model::IpVersion;
use calyx_felix::rules::policy::{
    self, DirectionRules, EndpointRules, NamedRules, PolicyRule, PolicyState, Side, TierRules,
    Verdict,
};
use calyx_felix::rules::Worker;
use calyx_felix::run_in_netns;
use common::*;

fn rule(verdict: Verdict) -> PolicyRule {
    PolicyRule {
        verdict,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        source: Side::default(),
        destination: Side::default(),
    }
}

fn state() -> PolicyState {
    let mut s = PolicyState::default();
    s.sets.insert(
        "s-web".into(),
        [
            "10.65.1.2/32".parse().unwrap(),
            "fd00::2/128".parse().unwrap(),
        ]
        .into(),
    );
    s.sets
        .insert("n-out".into(), ["192.0.2.0/24".parse().unwrap()].into());
    let mut tcp = rule(Verdict::Allow);
    tcp.protocol = Some(6);
    tcp.source.in_sets = vec!["s-web".into()];
    tcp.destination.ports = vec![(80, 80), (8000, 8080)];
    tcp.destination.not_ports = vec![(8001, 8001)];
    let mut icmp = rule(Verdict::Allow);
    icmp.protocol = Some(1);
    icmp.ip_version = Some(IpVersion::V4);
    icmp.icmp = Some((8, Some(0)));
    let mut not_icmp = rule(Verdict::Deny);
    not_icmp.protocol = Some(1);
    not_icmp.not_icmp = Some((0, None));
    let mut pass = rule(Verdict::Pass);
    pass.not_protocol = Some(17);
    let mut deny_out = rule(Verdict::Deny);
    deny_out.destination.in_sets = vec!["n-out".into()];
    deny_out.destination.not_in_sets = vec!["s-web".into()];
    s.endpoints.insert(
        "cali0123456789a".into(),
        EndpointRules {
            ingress: DirectionRules {
                tiers: vec![
                    TierRules {
                        name: "security".into(),
                        policies: vec![NamedRules {
                            name: "GlobalNetworkPolicy pass".into(),
                            rules: vec![rule(Verdict::Log), pass],
                        }],
                        default_pass: true,
                    },
                    TierRules {
                        name: "default".into(),
                        policies: vec![NamedRules {
                            name: "NetworkPolicy ns/web".into(),
                            rules: vec![tcp, icmp, not_icmp],
                        }],
                        default_pass: false,
                    },
                ],
                profiles: Some(vec![NamedRules {
                    name: "Profile kns.ns".into(),
                    rules: vec![rule(Verdict::Allow)],
                }]),
            },
            egress: DirectionRules {
                tiers: vec![TierRules {
                    name: "default".into(),
                    policies: vec![NamedRules {
                        name: "GlobalNetworkPolicy out".into(),
                        rules: vec![deny_out, rule(Verdict::Allow)],
                    }],
                    default_pass: false,
                }],
                profiles: None,
            },
        },
    );
    s
}

#[test]
fn every_policy_match_is_accepted_and_reads_back() {
    let test = "every_policy_match_is_accepted_and_reads_back";
    if skip_without_root(test) {
        return;
    }
    if try_run(&["nft", "--version"]).is_err() {
        eprintln!("SKIP {test}: the `nft` command is missing (package nftables)");
        return;
    }
    let ns = Netns::new("polnft", "n");
    let s = state();
    // The same after changes: one workload's egress gone and a new workload, written as a
    // difference (set and map elements, changed chains) on the table read back.
    let mut changed = state();
    let ep = changed.endpoints.values().next().unwrap().clone();
    changed.endpoints.get_mut("cali0123456789a").unwrap().egress = DirectionRules::default();
    changed.endpoints.insert("calib".into(), ep);
    changed
        .sets
        .get_mut("s-web")
        .unwrap()
        .insert("10.65.1.3/32".parse().unwrap());
    let (first, second, third, fourth) = run_in_netns(ns.path(), move || {
        let mut w = Worker::open().unwrap();
        w.set_desired(policy::ruleset(&changed));
        w.sync().unwrap();
        w.set_desired(policy::ruleset(&s));
        let first = w.sync().unwrap();
        let second = w.sync().unwrap();
        w.set_desired(policy::ruleset(&changed));
        let third = w.sync().unwrap();
        let fourth = w.sync().unwrap();
        w.set_desired(policy::ruleset(&s));
        w.sync().unwrap();
        (first, second, third, fourth)
    })
    .unwrap();
    assert_eq!(first.tables_built, 0, "{first:?}");
    assert!(
        first.ranges_changed > 0 && first.chains_written > 0,
        "{first:?}"
    );
    assert!(
        third.ranges_changed > 0 && third.tables_built == 0,
        "{third:?}"
    );
    assert!(fourth.is_empty(), "a second sync changed {fourth:?}");
    assert!(second.is_empty(), "a second sync changed {second:?}");
    let l = ns.exec("nft list table inet calyx-policy").unwrap();
    for want in [
        "type filter hook forward priority filter; policy accept;",
        "iifname \"cali*\" ct state invalid drop",
        "ct state established,related accept",
        "iifname \"cali*\" iifname != @workloads drop",
        "oifname \"cali*\" oifname != @workloads drop",
        "iifname vmap @from-workload",
        "type filter hook input priority filter; policy accept;",
        "oifname vmap @to-workload",
        "\"cali0123456789a\" : jump tw-cali0123456789a-t0",
        "\"cali0123456789a\" : jump fw-cali0123456789a-t0",
        "log prefix \"calyx GlobalNetworkPolicy pass (ingress tier security) \"",
        "meta l4proto != udp goto tw-cali0123456789a-t1",
        "ip saddr @s-web-v4 tcp dport 80 tcp dport != 8001 return",
        "ip6 saddr @s-web-v6 tcp dport 8000-8080 tcp dport != 8001 return",
        "icmp type echo-request icmp code net-unreachable return",
        "ip daddr @n-out-v4 ip daddr != @s-web-v4 drop",
        "goto tw-cali0123456789a-t1 comment \"calyx: end of tier security",
        "icmp type != echo-reply drop",
        "10.65.1.2",
        "192.0.2.0/24",
    ] {
        assert!(l.contains(want), "missing {want:?} in\n{l}");
    }
}
