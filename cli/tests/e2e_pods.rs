//! End to end on one machine: node namespaces running `calyx node run`, pods created through
//! `calyx-cni` (which delegates to `calyx-ipam`) exactly as a container runtime does, and every
//! pod pinging every pod on the other nodes by its own address, in each networking mode.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use calyx_tests::cluster::{cni_conf, run_cni, Cluster, Pod};

fn tag(test: &str) -> String {
    format!("cxe{}{}", test, std::process::id() % 10_000)
}

/// Starts 3 nodes with `env`, creates `per_node` pods on each, and checks that every pod has
/// its own address and reaches every pod on another node.
fn cluster_connectivity(test: &str, t: &str, prefix: &str, env: &[(&str, &str)], per_node: usize) {
    let Some(c) = Cluster::start(test, t, prefix, 3, env, |_| {}) else {
        return;
    };
    let pods = c.pods(t, per_node);
    let mut ips: Vec<&str> = pods.iter().map(|(_, p)| p.ip.as_str()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), pods.len(), "every pod has its own address");
    // Routes converge within seconds of the pods' blocks being known: bounded per pair.
    c.all_pairs_ping(&pods, Duration::from_secs(20), "pod connectivity");
}

#[test]
fn pods_reach_each_other_in_bgp_mode() {
    cluster_connectivity(
        "pods_reach_each_other_in_bgp_mode",
        &tag("b"),
        "10.72.1",
        &[
            ("CALICO_NETWORKING_BACKEND", "bird"),
            ("CALICO_IPV4POOL_CIDR", "10.250.0.0/16"),
        ],
        2,
    );
}

#[test]
fn pods_reach_each_other_in_vxlan_mode() {
    cluster_connectivity(
        "pods_reach_each_other_in_vxlan_mode",
        &tag("v"),
        "10.72.2",
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.251.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ],
        2,
    );
}

#[test]
fn cni_del_is_idempotent_and_bad_input_leaves_nothing() {
    let test = "cni_del_is_idempotent_and_bad_input_leaves_nothing";
    let t = tag("c");
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_CIDR", "10.252.0.0/16"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.72.3", 1, &env, |_| {}) else {
        return;
    };
    let (underlay, node) = (&c.underlay, &c.nodes[0]);
    let handles = || {
        underlay
            .etcd()
            .etcdctl(&["get", "--prefix", "--keys-only", "/calico/ipam/v2/handle/"])
    };

    let pod = Pod::add(underlay, node, &format!("{t}-p"));
    let host_routes = node.ns.exec(&["ip", "route"]);
    assert!(
        host_routes.contains(&format!("{} dev cali", pod.ip)),
        "{host_routes}"
    );
    let pod_routes = pod.ns.exec(&["ip", "route"]);
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0 onlink"),
        "{pod_routes}"
    );
    assert!(handles().contains("k8s-pod-network.ctr-"), "{}", handles());
    // The host answers for the gateway: the pod reaches its node.
    assert!(pod.ping(&node.ip), "pod cannot reach its node");

    // CHECK with the ADD result as prevResult passes; after the host end is gone it fails.
    let mut conf: serde_json::Value = serde_json::from_str(&cni_conf(underlay, node)).unwrap();
    conf["prevResult"] = serde_json::json!({
        "cniVersion": "1.0.0",
        "ips": [{"address": format!("{}/32", pod.ip), "interface": 1}],
    });
    let conf = conf.to_string();
    let pod_ns = format!("{t}-p");
    let check = |what: &str| {
        let out = run_cni(
            node.ns.name(),
            "CHECK",
            &format!("ctr-{pod_ns}"),
            &pod_ns,
            &conf,
        );
        (
            out.status.success(),
            format!("{what}: {}", String::from_utf8_lossy(&out.stdout)),
        )
    };
    let (ok, detail) = check("CHECK of a wired pod");
    assert!(ok, "{detail}");

    let host_if = node.ns.exec(&["ip", "-o", "link", "show"]);
    let cali = host_if
        .split_whitespace()
        .find(|w| w.starts_with("cali"))
        .map(|w| {
            w.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap();
    node.ns.exec(&["ip", "link", "set", &cali, "down"]);
    let (ok, detail) = check("CHECK with the host end down");
    assert!(!ok, "{detail}");
    node.ns.exec(&["ip", "link", "set", &cali, "up"]);

    for _ in 0..2 {
        let out = pod.del();
        assert!(
            out.status.success(),
            "DEL: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        !node.ns.exec(&["ip", "link"]).contains("cali"),
        "veth left behind"
    );
    assert!(
        !handles().contains("k8s-pod-network.ctr-"),
        "address still held: {}",
        handles()
    );

    // Bad stdin: a CNI error, non-zero exit, nothing created.
    let held = || {
        // Handles plus every allocated ordinal of every block: what "an address is held" means.
        let blocks = underlay.etcd().etcdctl(&[
            "get",
            "--prefix",
            "--print-value-only",
            "/calico/ipam/v2/assignment/",
        ]);
        let allocated: usize = blocks
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|b| {
                b["allocations"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|x| !x.is_null()).count())
            })
            .sum();
        (handles(), allocated)
    };
    let before = held();
    for bad in [
        "{not json",
        r#"{"cniVersion":"1.0.0","name":"n","type":"calyx","ipam":{}}"#,
    ] {
        let out = run_cni(node.ns.name(), "ADD", "ctr-bad", &format!("{t}-p"), bad);
        assert!(!out.status.success());
        let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            err["code"].as_u64().unwrap() > 0 && err["msg"].is_string(),
            "{err}"
        );
    }
    let conf = cni_conf(underlay, node);
    let out = run_cni(
        node.ns.name(),
        "ADD",
        "ctr-nons",
        "no-such-netns-here",
        &conf,
    );
    assert!(!out.status.success(), "ADD into a missing netns must fail");
    assert!(
        !node.ns.exec(&["ip", "link"]).contains("cali"),
        "a failed ADD left a veth"
    );
    assert_eq!(held(), before, "a failed ADD held an address");
}
