//! The agent's IPAM garbage collection end to end: pods whose runtime died without a CNI DEL
//! (network namespace and host veth gone) get their addresses freed by the node's daemon
//! within a test-sized grace period, whether their WorkloadEndpoint was left behind (the daemon
//! removes it) or deleted (as calico-kube-controllers does for a deleted pod); live pods, even
//! one whose endpoint was deleted, keep theirs across many scans; the node's VXLAN tunnel
//! address is never touched; nothing is freed while the datastore is locked for a migration;
//! and `calyx ipam check` finds no leaked IPs afterwards.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use calyx_tests::cluster::{Cluster, Pod};
use calyx_tests::wait_until;
use serde_json::Value;

const ENDPOINTS: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

fn tag(test: &str) -> String {
    format!("cxg{}{}", test, std::process::id() % 10_000)
}

/// The key and value of the WorkloadEndpoint of `container`, if any.
fn endpoint(c: &Cluster, container: &str) -> Option<(String, Value)> {
    c.underlay
        .etcd()
        .etcdctl(&["get", "--prefix", "--print-value-only", ENDPOINTS])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|w| w["spec"]["containerID"].as_str() == Some(container))
        .map(|w| {
            let key = format!(
                "{ENDPOINTS}{}/{}",
                w["metadata"]["namespace"].as_str().unwrap_or_default(),
                w["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, w)
        })
}

fn assigned(c: &Cluster, ip: &str) -> bool {
    let out = c.calyx_ok(&["ipam", "show", "--ip", ip]);
    out.contains("in use")
}

/// Kills `pod` without DEL: its namespace goes, and its host veth (which goes with it; deleted
/// again in case a runtime left it).
fn kill(c: &Cluster, pod: Pod) -> String {
    let (_, wep) = endpoint(c, pod.container_id()).expect("the pod has an endpoint");
    let host_if = wep["spec"]["interfaceName"]
        .as_str()
        .expect("interfaceName")
        .to_string();
    let ip = pod.ip.clone();
    pod.kill();
    let _ = c.nodes[0]
        .ns
        .try_exec(&["ip", "link", "del", host_if.as_str()]);
    assert!(
        !c.nodes[0]
            .ns
            .try_exec(&["ip", "link", "show", host_if.as_str()]),
        "{host_if} is still there"
    );
    ip
}

fn gc_status(c: &Cluster) -> Value {
    let text = calyx_tests::cluster::node_status(&c.nodes[0]);
    serde_json::from_str::<Value>(&text)
        .map(|s| s["gc"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn dead_pods_are_collected_and_live_ones_kept() {
    let test = "dead_pods_are_collected_and_live_ones_kept";
    let t = tag("d");
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        ("CALICO_IPV4POOL_CIDR", "10.253.0.0/16"),
        ("CALYX_IPAM_GC_GRACE", "3"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.93.5", 1, &env, |_| {}) else {
        return;
    };
    let node = &c.nodes[0];
    let live = Pod::add(&c.underlay, node, &format!("{t}-live"));
    let orphan = Pod::add(&c.underlay, node, &format!("{t}-orphan"));
    let stale = Pod::add(&c.underlay, node, &format!("{t}-stale"));
    let gone = Pod::add(&c.underlay, node, &format!("{t}-gone"));

    // A live pod whose endpoint was deleted keeps its address: its interface is there.
    let (orphan_key, _) = endpoint(&c, orphan.container_id()).expect("orphan's endpoint");
    c.underlay.etcd().etcdctl(&["del", &orphan_key]);
    // (a) runtime died, endpoint left behind; (b) runtime died, endpoint deleted too.
    let (stale_key, _) = endpoint(&c, stale.container_id()).expect("stale's endpoint");
    let (gone_key, _) = endpoint(&c, gone.container_id()).expect("gone's endpoint");
    // While a migration locks the datastore nothing is freed, however long it lasts.
    assert!(c
        .calyx_ok(&["datastore", "migrate", "lock"])
        .contains("locked"));
    let stale_ip = kill(&c, stale);
    let gone_ip = kill(&c, gone);
    c.underlay.etcd().etcdctl(&["del", &gone_key]);
    assert!(
        wait_until(Duration::from_secs(30), || gc_status(&c)["paused"] == true),
        "gc never paused: {}",
        gc_status(&c)
    );
    // More than two graces and several scan intervals (1.5 s at a 3 s grace).
    std::thread::sleep(Duration::from_secs(8));
    assert!(assigned(&c, &stale_ip) && assigned(&c, &gone_ip));
    assert!(!c
        .underlay
        .etcd()
        .etcdctl(&["get", "--keys-only", &stale_key])
        .trim()
        .is_empty());
    assert!(c
        .calyx_ok(&["datastore", "migrate", "unlock"])
        .contains("unlocked"));

    // Endpoint grace, then address grace, plus scans: well within 30 s at a 3 s grace.
    let freed = wait_until(Duration::from_secs(30), || {
        !assigned(&c, &stale_ip) && !assigned(&c, &gone_ip)
    });
    assert!(
        freed,
        "leaked addresses not freed: {stale_ip} {}, {gone_ip} {}\n{}",
        assigned(&c, &stale_ip),
        assigned(&c, &gone_ip),
        c.logs()
    );
    assert!(
        c.underlay
            .etcd()
            .etcdctl(&["get", "--keys-only", &stale_key])
            .trim()
            .is_empty(),
        "the stale endpoint is still there"
    );
    let status = gc_status(&c);
    assert!(
        status["addresses_freed"].as_u64() >= Some(2)
            && status["endpoints_removed"].as_u64() >= Some(1),
        "{status}"
    );

    // Many scans (a scan every 1.5 s) later the live pods keep their addresses and endpoints.
    std::thread::sleep(Duration::from_secs(8));
    for p in [&live, &orphan] {
        assert!(
            assigned(&c, &p.ip),
            "{} lost its address\n{}",
            p.ip,
            c.logs()
        );
    }
    assert!(endpoint(&c, live.container_id()).is_some());
    let tunnels =
        c.underlay
            .etcd()
            .etcdctl(&["get", "--prefix", "--keys-only", "/calico/ipam/v2/handle/"]);
    assert!(tunnels.contains("vxlan-tunnel-addr-node1"), "{tunnels}");

    // calicoctl's rule: the orphan has no endpoint, so `ipam check` reports it as leaked
    // (the agent does not free it: its interface is up) ...
    let check = c.calyx_ok(&["ipam", "check"]);
    assert!(check.contains("Found 1 leaked IPs"), "{check}");
    assert!(check.contains(&orphan.ip), "{check}");
    // ... and once it is deleted properly, nothing is leaked.
    drop(orphan);
    let check = c.calyx_ok(&["ipam", "check"]);
    assert!(check.contains("Found 0 leaked IPs"), "{check}");
    assert!(!check.contains("leaked:"), "{check}");
    drop(live);
}
