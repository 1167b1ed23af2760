//! Paths from several routers through a running node daemon: two real BIRD 2 top-of-rack
//! routers announce the same prefix to `calyx node run` (BGP backend), and the node's kernel
//! gets one ECMP route with both next hops, as Calico's BIRD (`merge paths on`) programs it;
//! when one ToR goes, the route keeps only the other. `calyx bgp routes` and `calyx bgp
//! peers` on the node show those paths and sessions as `birdc` would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use calyx_tests::bgp_daemons::Daemon as Bird;
use calyx_tests::cluster::{Cluster, NodeNs};
use calyx_tests::wait_until;

const PREFIX: &str = "100.64.7.0/24";

fn tor_config(tor_ip: &str, node_ip: &str) -> String {
    format!(
        "router id {tor_ip};\nprotocol device {{}}\n\
         protocol static fabric {{ ipv4; route {PREFIX} blackhole; }}\n\
         protocol bgp node1 {{ local {tor_ip} as 65001; neighbor {node_ip} as 64512; \
         hold time 30; ipv4 {{ import none; export all; }}; }}\n"
    )
}

/// The node's kernel route for [`PREFIX`] (Calyx's protocol 80), as `ip route` prints it.
fn kernel_route(node: &NodeNs) -> String {
    node.ns
        .exec(&["ip", "-4", "route", "show", PREFIX, "proto", "80"])
}

/// Runs `calyx ARGS` inside the node's namespace (where its daemon's endpoint is);
/// (success, stdout, stderr).
fn calyx_on(node: &NodeNs, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(calyx_tests::workspace_binary("calyx"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn next_hops(route: &str) -> Vec<String> {
    let words: Vec<&str> = route.split_whitespace().collect();
    let mut hops: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

#[test]
fn two_tors_with_one_prefix_make_one_ecmp_kernel_route() {
    let test = "two_tors_with_one_prefix_make_one_ecmp_kernel_route";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = format!("cxep{}", std::process::id() % 10_000);
    let (tor_a, tor_b) = ("10.76.1.19", "10.76.1.20");
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.176.0.0/16"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.76.1", 1, &env, |u| {
        for (name, ip) in [("tor-a", tor_a), ("tor-b", tor_b)] {
            u.apply(&format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\n\
                 spec:\n  peerIP: {ip}\n  asNumber: 65001\n"
            ));
        }
    }) else {
        return;
    };
    let node = &c.nodes[0];
    let ns_a = c.underlay.add_node(9);
    let ns_b = c.underlay.add_node(10);
    let _bird_a = Bird::bird(&ns_a.ns, &tor_config(tor_a, &node.ip));
    let mut bird_b = Bird::bird(&ns_b.ns, &tor_config(tor_b, &node.ip));

    let want = vec![tor_a.to_string(), tor_b.to_string()];
    let both = wait_until(Duration::from_secs(60), || {
        next_hops(&kernel_route(node)) == want
    });
    assert!(
        both,
        "no ECMP route: {:?}\nstatus: {}\n{}",
        kernel_route(node),
        calyx_tests::cluster::node_status(node),
        c.logs()
    );
    // One route with two next hops, not two routes.
    assert_eq!(
        kernel_route(node).matches(PREFIX).count(),
        1,
        "{}",
        kernel_route(node)
    );

    // The looking glass: both paths of the prefix, one best, with the ToRs' AS path.
    let (ok, table, err) = calyx_on(node, &["bgp", "routes", PREFIX]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(PREFIX)).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(
        rows.iter().filter(|l| l.starts_with("*>")).count(),
        1,
        "{table}"
    );
    for tor in [tor_a, tor_b] {
        assert!(
            rows.iter()
                .any(|l| l.contains(&format!("{tor} (AS65001)")) && l.contains("65001")),
            "{table}"
        );
    }
    // An address finds its most specific destination; a peer filter keeps its paths only.
    let (ok, json, err) = calyx_on(
        node,
        &["bgp", "routes", "100.64.7.9", "--peer", tor_b, "-o", "json"],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["routes"][0]["prefix"], PREFIX, "{v}");
    assert_eq!(v["routes"][0]["paths"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["routes"][0]["paths"][0]["from"], tor_b, "{v}");
    assert_eq!(v["routes"][0]["paths"][0]["asPath"], "65001", "{v}");
    // The whole table holds the node's own block too (originated: next hop self).
    let (ok, all, err) = calyx_on(node, &["bgp", "routes"]);
    assert!(ok, "{err}");
    assert!(
        all.lines()
            .any(|l| l.contains("10.176.") && l.contains("self") && l.contains("local")),
        "{all}"
    );
    // Bad input is one line, and nothing is asked.
    let (ok, _, err) = calyx_on(node, &["bgp", "routes", "100.64.7.0/33"]);
    assert!(!ok && err.trim().lines().count() == 1, "{err}");
    // The peers' snapshot is refreshed with the status (every 100 ms): wait for it.
    let established = |peers: &str, tor: &str| {
        peers
            .lines()
            .any(|l| l.starts_with(tor) && l.contains("Established") && l.contains("65001"))
    };
    let mut peers = String::new();
    let seen = wait_until(Duration::from_secs(30), || {
        let (ok, out, _) = calyx_on(node, &["bgp", "peers"]);
        peers = out;
        ok && established(&peers, tor_a) && established(&peers, tor_b)
    });
    assert!(seen, "{peers}");
    for tor in [tor_a, tor_b] {
        assert!(
            peers.contains(&format!("{tor}: capabilities: ipv4-unicast, 4-octet-as")),
            "{peers}"
        );
    }

    // One ToR goes away (its session ends with a Cease): only the other stays.
    bird_b.stop(Duration::from_secs(5));
    let one = wait_until(Duration::from_secs(60), || {
        next_hops(&kernel_route(node)) == vec![tor_a.to_string()]
    });
    assert!(
        one,
        "after tor-b stopped: {:?}\n{}",
        kernel_route(node),
        c.logs()
    );
}
