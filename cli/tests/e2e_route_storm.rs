//! A route storm through a running node daemon: a real BIRD 2 top-of-rack announces 100,000
//! routes to `calyx node run` (BGP backend) and withdraws them again; every one must reach the
//! node's kernel and leave it. While the announcements flow, the node's peer set changes (a
//! BGPPeer is added): the daemon must take the change during the storm, not after it (the old
//! main loop waited on the speaker while the speaker waited on the main loop to drain routes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use calyx_tests::bgp_daemons::Daemon as Bird;
use calyx_tests::cluster::{node_status, Cluster, NodeNs, Underlay};
use calyx_tests::wait_until;

const ROUTES: u32 = 100_000;

fn apply(underlay: &Underlay, yaml: &str) {
    underlay.apply(yaml);
}

/// How many kernel routes of the node lead to `via` (the ToR).
fn routes_via(node: &NodeNs, via: &str) -> usize {
    let out = node
        .ns
        .exec(&["ip", "-4", "route", "show", "proto", "80", "via", via]);
    out.lines().count()
}

/// `n` /32s out of 100.64.0.0/10 (inside no pool), as BIRD static routes.
fn bird_config(tor_ip: &str, node_ip: &str, n: u32) -> String {
    let mut conf = format!(
        "router id {tor_ip};\nprotocol device {{}}\n\
         protocol static storm {{ ipv4; \n"
    );
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..n {
        let _ = writeln!(
            conf,
            "route {}/32 blackhole;",
            std::net::Ipv4Addr::from(base + i)
        );
    }
    let _ = write!(
        conf,
        "}}\nprotocol bgp node1 {{ local {tor_ip} as 65001; neighbor {node_ip} as 64512; \
         hold time 30; ipv4 {{ import none; export all; }}; }}\n"
    );
    conf
}

#[test]
fn bird_tor_route_storm_reaches_the_kernel_and_leaves_it() {
    let test = "bird_tor_route_storm_reaches_the_kernel_and_leaves_it";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = format!("cxrs{}", std::process::id() % 10_000);
    let tor_ip = "10.75.1.19";
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.175.0.0/16"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.75.1", 1, &env, |u| {
        apply(
            u,
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
                 spec:\n  peerIP: {tor_ip}\n  asNumber: 65001\n"
            ),
        );
    }) else {
        return;
    };
    let node = &c.nodes[0];
    let tor_ns = c.underlay.add_node(9);
    let started = Instant::now();
    let bird = Bird::bird(&tor_ns.ns, &bird_config(tor_ip, &node.ip, ROUTES));

    // The peer set changes while the routes arrive: a second (absent) router is added.
    let storm_seen = wait_until(Duration::from_secs(60), || routes_via(node, tor_ip) > 0);
    assert!(
        storm_seen,
        "no route from the ToR arrived\nbird: {}\n{}",
        bird.birdc(&["show", "protocols", "all", "node1"]),
        c.logs()
    );
    let during = routes_via(node, tor_ip);
    apply(
        &c.underlay,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor-b\n\
         spec:\n  peerIP: 10.75.1.29\n  asNumber: 65001\n",
    );
    let peer_added = Instant::now();
    let peer_seen = wait_until(Duration::from_secs(60), || {
        node_status(node).contains("10.75.1.29")
    });
    let peer_took = peer_added.elapsed();
    assert!(
        peer_seen,
        "the new peer never showed: {}\n{}",
        node_status(node),
        c.logs()
    );

    let all_in = wait_until(Duration::from_secs(240), || {
        routes_via(node, tor_ip) >= ROUTES as usize
    });
    let install = started.elapsed();
    assert!(
        all_in,
        "{} of {ROUTES} routes in the kernel\nstatus: {}\n{}",
        routes_via(node, tor_ip),
        node_status(node),
        c.logs()
    );
    assert_eq!(routes_via(node, tor_ip), ROUTES as usize);

    // And out again: BIRD withdraws them all.
    let withdraw_started = Instant::now();
    bird.birdc(&["disable", "storm"]);
    let all_out = wait_until(Duration::from_secs(240), || routes_via(node, tor_ip) == 0);
    assert!(
        all_out,
        "{} routes left after the withdrawal\nstatus: {}\n{}",
        routes_via(node, tor_ip),
        node_status(node),
        c.logs()
    );
    println!(
        "{ROUTES} routes: in the kernel {:.1} s after BIRD started (peer set changed when {during} \
         were in, seen in {:.1} s); withdrawn in {:.1} s",
        install.as_secs_f64(),
        peer_took.as_secs_f64(),
        withdraw_started.elapsed().as_secs_f64()
    );
}
