//! FelixConfiguration's dataplane fields end to end (issue 17 part 4): a VXLAN cluster of
//! `calyx node run` daemons, a FelixConfiguration written to etcd as calicoctl stores it, and
//! each node's kernel checked: `vxlanMTU` on `vxlan.calico`, `deviceRouteProtocol` on the
//! routes (moved, none left under the old protocol, none doubled), pods still reaching each
//! other; deleted, everything goes back to the defaults. Then `deviceRouteSourceAddress` for
//! one node, and the start-up settings `prometheusMetrics*` and `healthPort`.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use calyx_tests::cluster::{Cluster, NodeNs};
use calyx_tests::wait_until;

const KEY: &str = "/calico/resources/v3/projectcalico.org/felixconfigurations/default";

/// Whether `node`'s kernel shows `mtu` on `vxlan.calico` and `routes` routes of protocol
/// `proto` via it, and none of protocol `not`.
fn node_shows(node: &NodeNs, mtu: u32, proto: u8, not: u8, routes: usize) -> bool {
    let link = node.ns.exec(&["ip", "link", "show", "dev", "vxlan.calico"]);
    let ours = node.ns.exec(&[
        "ip",
        "route",
        "show",
        "proto",
        &proto.to_string(),
        "dev",
        "vxlan.calico",
    ]);
    let old = node
        .ns
        .exec(&["ip", "route", "show", "proto", &not.to_string()]);
    link.contains(&format!("mtu {mtu} ")) && ours.lines().count() == routes && old.is_empty()
}

#[test]
fn felix_configuration_dataplane_fields() {
    let t = format!("cxfc{}", std::process::id() % 10_000);
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_CIDR", "10.194.0.0/16"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        // No explicit log level (an empty setting counts as unset): logSeverityScreen rules.
        ("CALYX_LOG_LEVEL", ""),
    ];
    let Some(c) = Cluster::start(
        "felix_configuration_dataplane_fields",
        &t,
        "10.94.1",
        2,
        &env,
        |u| {
            // Start-up settings: a metrics endpoint on 9191; healthPort loses to the
            // CALYX_HEALTH_LISTEN the test daemons are given.
            let value = r#"{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"prometheusMetricsEnabled":true,"prometheusMetricsPort":9191,"healthPort":9199}}"#;
            u.etcd().etcdctl(&["put", KEY, value]);
        },
    ) else {
        return;
    };
    for n in &c.nodes {
        let get = |port: u16| {
            n.ns.try_exec(&[
                "bash",
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/{}/{port} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 \
                     && grep -q '^calyx_' <&3",
                    n.ip
                ),
            ])
        };
        assert!(get(9191), "no metrics on 9191\n{}", c.logs());
        assert!(
            !n.ns
                .try_exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9199"]),
            "healthPort beat CALYX_HEALTH_LISTEN"
        );
    }
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "pods up");
    // Each node routes the other node's block via its VTEP.
    let ok = wait_until(Duration::from_secs(10), || {
        c.nodes.iter().all(|n| node_shows(n, 1450, 80, 99, 1))
    });
    assert!(ok, "defaults not in place\n{}", c.logs());

    let value = r#"{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"vxlanMTU":1400,"deviceRouteProtocol":99,"routeRefreshInterval":"10s"}}"#;
    let started = Instant::now();
    c.underlay.etcd().etcdctl(&["put", KEY, value]);
    let ok = wait_until(Duration::from_secs(15), || {
        c.nodes.iter().all(|n| node_shows(n, 1400, 99, 80, 1))
    });
    assert!(
        ok,
        "vxlanMTU / deviceRouteProtocol not applied\n{}",
        c.logs()
    );
    println!(
        "vxlanMTU 1400 and deviceRouteProtocol 99 on every node after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    c.all_pairs_ping(&pods, Duration::from_secs(30), "after the change");

    c.underlay.etcd().etcdctl(&["del", KEY]);
    let ok = wait_until(Duration::from_secs(15), || {
        c.nodes.iter().all(|n| node_shows(n, 1450, 80, 99, 1))
    });
    assert!(ok, "defaults not restored\n{}", c.logs());
    c.all_pairs_ping(&pods, Duration::from_secs(30), "after the deletion");

    // deviceRouteSourceAddress for node1 only (its own address): its routes get the source,
    // node2's do not; deleted, it goes again.
    let key = "/calico/resources/v3/projectcalico.org/felixconfigurations/node.node1";
    let value = format!(
        r#"{{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{{"name":"node.node1"}},"spec":{{"deviceRouteSourceAddress":"{}"}}}}"#,
        c.nodes[0].ip
    );
    c.underlay.etcd().etcdctl(&["put", key, &value]);
    let with_src = |n: &NodeNs| {
        n.ns.exec(&["ip", "route", "show", "proto", "80", "dev", "vxlan.calico"])
            .lines()
            .filter(|l| l.contains(&format!(" src {}", c.nodes[0].ip)))
            .count()
    };
    let ok = wait_until(Duration::from_secs(15), || with_src(&c.nodes[0]) == 1);
    assert!(ok, "deviceRouteSourceAddress not applied\n{}", c.logs());
    assert_eq!(with_src(&c.nodes[1]), 0);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "with a route source");
    c.underlay.etcd().etcdctl(&["del", key]);
    let ok = wait_until(Duration::from_secs(15), || with_src(&c.nodes[0]) == 0);
    assert!(ok, "deviceRouteSourceAddress not removed\n{}", c.logs());

    // logSeverityScreen: at Error the daemon's own notice of the change is filtered out; at
    // Debug it is written.
    let set_level = |level: &str| {
        let value = format!(
            r#"{{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{{"name":"default"}},"spec":{{"logSeverityScreen":"{level}"}}}}"#
        );
        c.underlay.etcd().etcdctl(&["put", KEY, &value]);
    };
    let notices = |level: &str| {
        c.daemons[0]
            .log()
            .lines()
            .filter(|l| l.contains("log level from FelixConfiguration") && l.contains(level))
            .count()
    };
    set_level("Error");
    std::thread::sleep(Duration::from_secs(2));
    set_level("Debug");
    let ok = wait_until(Duration::from_secs(15), || notices("debug") == 1);
    assert!(ok, "logSeverityScreen Debug not applied\n{}", c.logs());
    assert_eq!(notices("error"), 0, "{}", c.logs());
    c.underlay.etcd().etcdctl(&["del", KEY]);
}
