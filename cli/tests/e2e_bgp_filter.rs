//! BGPFilter through a running node daemon, against a real BIRD 2 top-of-rack router: the
//! ToR announces two prefixes, and the BGPFilter its BGPPeer names (importV4: accept one CIDR,
//! then reject) lets only one of them into the node's kernel; changing the filter lets the
//! other in without resetting the session; an export filter that rejects the node's block
//! keeps it out of the ToR's table, and deleting that filter brings it back. A filter that
//! does not exist is a status line. The kind itself goes through `calyx apply/get/delete`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use calyx_tests::bgp_daemons::Daemon as Bird;
use calyx_tests::cluster::{Cluster, NodeNs};
use calyx_tests::wait_until;

const ADMITTED: &str = "100.64.8.0/24";
const FILTERED: &str = "100.64.9.0/24";
const POOL: &str = "10.193.0.0/16";

fn tor_config(tor_ip: &str, node_ip: &str) -> String {
    format!(
        "router id {tor_ip};\nprotocol device {{}}\n\
         protocol static fabric {{ ipv4; route {ADMITTED} blackhole; route {FILTERED} blackhole; }}\n\
         protocol bgp node1 {{ local {tor_ip} as 65001; neighbor {node_ip} as 64512; \
         hold time 30; ipv4 {{ import all; export all; }}; }}\n"
    )
}

/// The node's kernel route for `prefix` (Calyx's protocol 80), as `ip route` prints it.
fn kernel_route(node: &NodeNs, prefix: &str) -> String {
    node.ns
        .exec(&["ip", "-4", "route", "show", prefix, "proto", "80"])
}

fn has_kernel_route(node: &NodeNs, prefix: &str) -> bool {
    kernel_route(node, prefix).contains(prefix)
}

/// What the ToR learned from the node: the prefixes of its `show route protocol node1`.
fn tor_learned(bird: &Bird) -> String {
    bird.birdc(&["show", "route", "protocol", "node1"])
}

fn tor_has_block(bird: &Bird) -> bool {
    tor_learned(bird).contains("10.193.")
}

/// `calyx node status` inside the node's namespace.
fn node_status_text(node: &NodeNs) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(calyx_tests::workspace_binary("calyx"))
        .args(["node", "status"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The `since` column of BIRD's line for the session: it changes when the session resets.
fn session_since(bird: &Bird) -> String {
    bird.birdc(&["show", "protocols", "node1"])
        .lines()
        .find(|l| l.starts_with("node1"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", w.get(4).unwrap_or(&""), w.get(5).unwrap_or(&""))
        })
        .unwrap_or_default()
}

fn import_filter(accept: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor-in\n\
         spec:\n  importV4:\n  - action: Accept\n    matchOperator: In\n    cidr: {accept}\n\
         \x20 - action: Reject\n"
    )
}

fn tor_peer(tor_ip: &str, filters: &[&str]) -> String {
    let list: String = filters.iter().map(|f| format!("\n  - {f}")).collect();
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  peerIP: {tor_ip}\n  asNumber: 65001\n  filters:{list}\n"
    )
}

#[test]
fn a_bgpfilter_on_the_tor_peer_admits_and_exports_what_it_says_live() {
    let test = "a_bgpfilter_on_the_tor_peer_admits_and_exports_what_it_says_live";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = format!("cxbf{}", std::process::id() % 10_000);
    let tor_ip = "10.93.1.19";
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", POOL),
    ];
    let Some(c) = Cluster::start(test, &t, "10.93.1", 1, &env, |u| {
        u.apply(&import_filter(ADMITTED));
        u.apply(&tor_peer(tor_ip, &["tor-in"]));
    }) else {
        return;
    };
    let node = &c.nodes[0];
    let tor_ns = c.underlay.add_node(9);
    let bird = Bird::bird(&tor_ns.ns, &tor_config(tor_ip, &node.ip));

    // The kind through the CLI: calicoctl's columns.
    let table = c.calyx_ok(&["get", "bgpfilters"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "NUMEXPORTV4",
            "NUMIMPORTV4",
            "NUMEXPORTV6",
            "NUMIMPORTV6"
        ],
        "{table}"
    );
    assert_eq!(rows[1], ["tor-in", "0", "2", "0", "0"], "{table}");

    // Import: only the admitted prefix reaches the kernel, although the ToR sent both.
    let admitted = wait_until(Duration::from_secs(60), || {
        has_kernel_route(node, ADMITTED) && tor_has_block(&bird)
    });
    assert!(
        admitted,
        "{ADMITTED} not in the kernel (or the block not at the ToR): {}\nToR: {}\nstatus: {}\n{}",
        kernel_route(node, ADMITTED),
        tor_learned(&bird),
        calyx_tests::cluster::node_status(node),
        c.logs()
    );
    let tor_protocol = bird.birdc(&["show", "protocols", "all", "node1"]);
    assert!(
        tor_protocol.contains("2 exported"),
        "the ToR should have sent both prefixes: {tor_protocol}"
    );
    assert!(
        !has_kernel_route(node, FILTERED),
        "{FILTERED} passed the filter: {}",
        node.ns.exec(&["ip", "route"])
    );
    let since = session_since(&bird);

    // The filter changed: the other prefix comes in, on the same session.
    c.underlay.apply(&import_filter("100.64.0.0/16"));
    let both = wait_until(Duration::from_secs(60), || has_kernel_route(node, FILTERED));
    assert!(
        both,
        "{FILTERED} not admitted after the change: {}\n{}",
        node.ns.exec(&["ip", "route"]),
        c.logs()
    );
    assert!(has_kernel_route(node, ADMITTED));
    assert_eq!(session_since(&bird), since, "the session was reset");

    // Export: a filter rejecting the pool keeps the node's block from the ToR; a filter that
    // does not exist is skipped, with a status line.
    c.underlay.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor-out\n\
         spec:\n  exportV4:\n  - action: Reject\n    matchOperator: In\n    cidr: {POOL}\n"
    ));
    c.underlay
        .apply(&tor_peer(tor_ip, &["tor-in", "tor-out", "not-there"]));
    let withdrawn = wait_until(Duration::from_secs(60), || !tor_has_block(&bird));
    assert!(
        withdrawn,
        "the ToR still has the node's block: {}\n{}",
        tor_learned(&bird),
        c.logs()
    );
    assert!(has_kernel_route(node, FILTERED) && has_kernel_route(node, ADMITTED));
    let mut status = String::new();
    let reported = wait_until(Duration::from_secs(30), || {
        status = node_status_text(node);
        status.contains("BGPFilter \"not-there\" (used by BGPPeer \"tor\"): no such BGPFilter")
    });
    assert!(reported, "{status}");

    // Deleting the export filter sends the block again.
    c.calyx_ok(&["delete", "bgpfilter", "tor-out"]);
    let back = wait_until(Duration::from_secs(60), || tor_has_block(&bird));
    assert!(
        back,
        "the block did not come back: {}\n{}",
        tor_learned(&bird),
        c.logs()
    );
    let table = c.calyx_ok(&["get", "bgpfilters"]);
    assert!(
        !table.contains("tor-out") && table.contains("tor-in"),
        "{table}"
    );
}
