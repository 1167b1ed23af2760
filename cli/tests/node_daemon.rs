//! `calyx node run` as an operator runs it: the built binary, configured by environment
//! variables, in network namespaces, against a real etcd.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use calyx_tests::cluster::{Daemon, NodeNs, Underlay};
use calyx_tests::wait_until;
use serde_json::Value;

const CALYX: &str = env!("CARGO_BIN_EXE_calyx");

/// A unique, short tag for namespace and link names (interface names max 15 chars).
fn tag(test: &str) -> String {
    format!("cxn{}{}", test, std::process::id() % 10_000)
}

/// `calyx` inside a node namespace.
fn calyx_in(node: &NodeNs, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", node.ns.name(), CALYX])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// GET a path on the node's health endpoint.
fn http_get(node: &NodeNs, path: &str) -> (u16, String) {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", node.ns.name(), "bash", "-c", &script])
        .output()
        .unwrap();
    let text = stdout(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

fn kernel_routes(node: &NodeNs) -> String {
    node.ns.exec(&["ip", "route", "show", "proto", "80"])
}

#[test]
fn one_daemon_writes_its_node_and_pool_and_serves_health() {
    let t = tag("a");
    let Some(underlay) = Underlay::new(
        "one_daemon_writes_its_node_and_pool_and_serves_health",
        &t,
        "10.71.1",
    ) else {
        return;
    };
    let node = underlay.add_node(1);
    let daemon = Daemon::start(
        &underlay,
        &node,
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.244.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
            ("AS", "64600"),
        ],
    );
    let ready = wait_until(Duration::from_secs(30), || {
        http_get(&node, "/readiness").0 == 200
    });
    assert!(ready, "daemon never became ready:\n{}", daemon.log());

    assert_eq!(http_get(&node, "/liveness").0, 200);
    let (code, metrics) = http_get(&node, "/metrics");
    assert_eq!(code, 200);
    for line in metrics.lines() {
        let ok = line.starts_with("# HELP ")
            || line.starts_with("# TYPE ")
            || line.rsplit_once(' ').is_some_and(|(name, value)| {
                name.starts_with("calyx_") && value.parse::<f64>().is_ok()
            });
        assert!(ok, "not Prometheus text: {line:?}");
    }
    assert!(metrics.contains("calyx_ipam_blocks 1"), "{metrics}");

    // The Node as the daemon wrote it.
    let out = underlay.calyx(&["get", "nodes", "-o", "wide"]);
    let table = stdout(&out);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row, ["node1", "64600", "10.71.1.11/24"], "{table}");
    let node_json: Value = serde_json::from_slice(
        &underlay
            .calyx(&["get", "node", "node1", "-o", "json"])
            .stdout,
    )
    .unwrap();
    let tunnel = node_json["spec"]["ipv4VXLANTunnelAddr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        tunnel.starts_with("10.244."),
        "VXLAN tunnel address from IPAM: {node_json}"
    );
    assert!(
        node_json["spec"]["vxlanTunnelMACAddr"].is_string(),
        "{node_json}"
    );

    // The default pool from the environment.
    let pools: Value =
        serde_json::from_slice(&underlay.calyx(&["get", "ippools", "-o", "json"]).stdout).unwrap();
    assert_eq!(pools["items"][0]["metadata"]["name"], "default-ipv4-ippool");
    assert_eq!(pools["items"][0]["spec"]["cidr"], "10.244.0.0/16");
    assert_eq!(pools["items"][0]["spec"]["vxlanMode"], "Always");

    // Its block is blackholed, its tunnel device is up with the tunnel address.
    assert!(
        wait_until(Duration::from_secs(10), || kernel_routes(&node)
            .contains("blackhole 10.244.")),
        "{}\n{}",
        kernel_routes(&node),
        daemon.log()
    );
    // The device follows once the tunnel address is in the Node: a bounded wait.
    let vxlan_ready = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                node.ns.name(),
                "ip",
                "-d",
                "addr",
                "show",
                "vxlan.calico",
            ])
            .output()
            .unwrap();
        let link = stdout(&out);
        link.contains("vxlan id 4096") && link.contains(&tunnel)
    };
    assert!(
        wait_until(Duration::from_secs(10), vxlan_ready),
        "vxlan.calico with {tunnel}:\n{}\n{}",
        node.ns.exec(&["ip", "-d", "link"]),
        daemon.log()
    );

    // calyx node status talks to the daemon.
    let out = calyx_in(&node, &["node", "status"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("Calyx process is running."), "{text}");
    assert!(
        text.contains("No IPv4 peers found.") && text.contains("No IPv6 peers found."),
        "{text}"
    );
    let json: Value =
        serde_json::from_slice(&calyx_in(&node, &["node", "status", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["node"], "node1");
    assert_eq!(json["ready"], true);
}

#[test]
fn two_daemons_route_each_others_blocks_and_follow_pool_mode_changes() {
    let t = tag("b");
    let Some(underlay) = Underlay::new(
        "two_daemons_route_each_others_blocks_and_follow_pool_mode_changes",
        &t,
        "10.71.2",
    ) else {
        return;
    };
    let nodes = [underlay.add_node(1), underlay.add_node(2)];
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_CIDR", "10.245.0.0/16"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
    ];
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|n| Daemon::start(&underlay, n, &env))
        .collect();
    let logs = || {
        daemons
            .iter()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };

    // Each node routes the other's block through vxlan.calico.
    let routed = |n: &NodeNs| {
        let routes = kernel_routes(n);
        routes
            .lines()
            .any(|l| l.starts_with("10.245.") && l.contains("dev vxlan.calico"))
    };
    let ok = wait_until(Duration::from_secs(30), || nodes.iter().all(routed));
    assert!(
        ok,
        "routes:\n{}\n{}\nlogs:\n{}",
        kernel_routes(&nodes[0]),
        kernel_routes(&nodes[1]),
        logs()
    );

    // Traffic between the tunnel addresses crosses the tunnel.
    let node2: Value = serde_json::from_slice(
        &underlay
            .calyx(&["get", "node", "node2", "-o", "json"])
            .stdout,
    )
    .unwrap();
    let tunnel2 = node2["spec"]["ipv4VXLANTunnelAddr"]
        .as_str()
        .unwrap()
        .to_string();
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            nodes[0].ns.name(),
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-i",
            "0.2",
            &tunnel2,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping {tunnel2}: {}", stdout(&ping));

    // Pool mode Never: no datastore routes, no tunnel device; back to Always: both return.
    let out = underlay.calyx(&[
        "patch",
        "ippool",
        "default-ipv4-ippool",
        "-p",
        r#"{"spec":{"vxlanMode":"Never"}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|n| !routed(n) && !n.ns.try_exec(&["ip", "link", "show", "vxlan.calico"]))
    });
    assert!(gone, "{}\n{}", kernel_routes(&nodes[0]), logs());
    let out = underlay.calyx(&[
        "patch",
        "ippool",
        "default-ipv4-ippool",
        "-p",
        r#"{"spec":{"vxlanMode":"Always"}}"#,
    ]);
    assert!(out.status.success());
    let back = wait_until(Duration::from_secs(20), || nodes.iter().all(routed));
    assert!(back, "{}\n{}", kernel_routes(&nodes[0]), logs());
}

#[test]
fn bad_configuration_is_one_line_and_writes_nothing() {
    let t = tag("c");
    let Some(underlay) = Underlay::new(
        "bad_configuration_is_one_line_and_writes_nothing",
        &t,
        "10.71.3",
    ) else {
        return;
    };
    let node = underlay.add_node(1);
    let before = underlay.etcd().etcdctl(&["get", "--prefix", "/calico"]);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("CALICO_IPV4POOL_CIDR", "10.0.0.1/33")],
            "CALICO_IPV4POOL_CIDR",
        ),
        (
            &[("CALICO_IPV4POOL_VXLAN", "Sometimes")],
            "CALICO_IPV4POOL_VXLAN",
        ),
        (
            &[("CALICO_NETWORKING_BACKEND", "ospf")],
            "CALICO_NETWORKING_BACKEND",
        ),
        (&[("IP", "10.0.0.300")], "IP"),
        (
            &[
                ("ETCD_ENDPOINTS", "http://10.71.3.1:1"),
                ("CALYX_DATASTORE_WAIT", "1"),
            ],
            "unavailable",
        ),
    ];
    for (env, word) in cases {
        let mut daemon = Daemon::start(&underlay, &node, env);
        let exited = wait_until(Duration::from_secs(30), || daemon.exited());
        assert!(
            exited,
            "daemon with {env:?} kept running:\n{}",
            daemon.log()
        );
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{env:?}: {log}");
        assert!(lines[0].contains(word), "{env:?}: {}", lines[0]);
    }
    assert_eq!(
        underlay.etcd().etcdctl(&["get", "--prefix", "/calico"]),
        before
    );
}

#[test]
fn three_daemons_in_bgp_mode_form_a_full_mesh_and_route_blocks() {
    let t = tag("d");
    let Some(underlay) = Underlay::new(
        "three_daemons_in_bgp_mode_form_a_full_mesh_and_route_blocks",
        &t,
        "10.71.4",
    ) else {
        return;
    };
    let nodes = [
        underlay.add_node(1),
        underlay.add_node(2),
        underlay.add_node(3),
    ];
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.246.0.0/16"),
    ];
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|n| Daemon::start(&underlay, n, &env))
        .collect();
    let logs = || {
        daemons
            .iter()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };

    // Every node learns the two other blocks over BGP and routes them via their owner.
    let routed = |n: &NodeNs| {
        let routes = kernel_routes(n);
        nodes.iter().filter(|o| o.ip != n.ip).all(|o| {
            routes
                .lines()
                .any(|l| l.starts_with("10.246.") && l.contains(&format!("via {} dev eth0", o.ip)))
        })
    };
    let ok = wait_until(Duration::from_secs(60), || nodes.iter().all(routed));
    assert!(
        ok,
        "routes:\n{}\n{}\n{}\nlogs:\n{}",
        kernel_routes(&nodes[0]),
        kernel_routes(&nodes[1]),
        kernel_routes(&nodes[2]),
        logs()
    );

    // calyx node status shows two Established mesh peers. Routes reach the kernel without
    // waiting for the daemon's main loop, whose status snapshot is refreshed every 100 ms:
    // the status may trail the routes by a tick, so it is read until it shows them.
    let both_up = |text: &str| {
        nodes[1..].iter().all(|other| {
            text.lines()
                .find(|l| l.contains(&other.ip))
                .is_some_and(|row| {
                    row.contains("node-to-node mesh")
                        && row.contains("up")
                        && row.contains("Established")
                })
        })
    };
    let mut text = String::new();
    let up = wait_until(Duration::from_secs(10), || {
        text = stdout(&calyx_in(&nodes[0], &["node", "status"]));
        both_up(&text)
    });
    assert!(text.contains("IPv4 BGP status"), "{text}");
    assert!(
        up,
        "{text}\nroutes:\n{}\nlogs:\n{}",
        kernel_routes(&nodes[0]),
        logs()
    );
    let (code, metrics) = http_get(&nodes[0], "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("calyx_bgp_sessions{state=\"Established\"} 2"),
        "{metrics}"
    );
}
