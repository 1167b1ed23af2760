//! BFD end to end (issue 19): a node running `calyx node run` peers with a BIRD 2
//! top-of-rack through a BGPPeer with `failureDetectionMode: BFDIfDirectlyConnected`. When
//! the ToR's switch port stops forwarding (frames dropped on the bridge: no link event, no
//! TCP reset), the node's kernel loses the ToR's routes within about a second, although the
//! BGP hold time is 90 s; they come back when the port heals.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use calyx_tests::cluster::{node_status, Cluster, NodeNs};
use calyx_tests::wait_until;

fn has_route(node: &NodeNs, prefix: &str) -> bool {
    !node
        .ns
        .exec(&["ip", "route", "show", prefix])
        .trim()
        .is_empty()
}

#[test]
fn bfd_removes_a_dead_tor_routes_from_the_kernel_within_a_second() {
    let test = "bfd_removes_a_dead_tor_routes";
    if !calyx_tests::require_binaries(test, &["bird", "birdc", "nft"]) {
        return;
    }
    let t = format!("cxbfd{}", std::process::id() % 10_000);
    let tor_ip = "10.76.1.19";
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.176.0.0/16"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.76.1", 1, &env, |u| {
        u.apply(&format!(
            "apiVersion: projectcalico.org/v3\n\
             kind: BGPPeer\n\
             metadata:\n  name: tor\n\
             spec:\n  peerIP: {tor_ip}\n  asNumber: 65001\n  \
             failureDetectionMode: BFDIfDirectlyConnected\n  \
             bfd:\n    minimumRecvInterval: 300ms\n    minimumSendInterval: 300ms\n    multiplier: 3\n"
        ));
    }) else {
        return;
    };
    let node = &c.nodes[0];
    // The ToR: index 9 on the same bridge (10.76.1.19); its port is `<tag>h9`.
    let tor_ns = c.underlay.add_node(9);
    let port = format!("{t}h9");
    let conf = format!(
        r#"
log stderr all;
router id {tor_ip};
protocol device {{ scan time 10; }}
protocol static {{ ipv4; route 10.99.0.0/24 blackhole; }}
protocol bfd {{ interface "eth0" {{ interval 300 ms; multiplier 3; }}; }}
protocol bgp n1 {{
  local {tor_ip} as 65001; neighbor {ip} as 64512;
  hold time 90; connect retry time 1; bfd on;
  # BIRD refuses connections for its error wait time after a failure (60 s by default).
  error wait time 1, 5;
  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; }};
}}
"#,
        ip = node.ip
    );
    let bird = calyx_tests::bgp_daemons::Daemon::bird(&tor_ns.ns, &conf);
    let dump = || {
        format!(
            "status: {}\nBIRD: {}\n{}\n{}",
            node_status(node),
            bird.birdc(&["show", "protocols", "all"]),
            bird.log(),
            c.logs()
        )
    };
    // The status JSON without its layout.
    let status = || node_status(node).replace(char::is_whitespace, "");
    let bfd_up = || status().contains(r#""bfd":{"state":"Up""#);
    assert!(
        wait_until(Duration::from_secs(60), || has_route(node, "10.99.0.0/24")
            && bfd_up()),
        "no ToR route in the kernel or BFD not Up\n{}",
        dump()
    );
    // `calyx bgp peers` shows the session.
    let peers = node.ns.exec(&[
        &calyx_tests::workspace_binary("calyx").to_string_lossy(),
        "bgp",
        "peers",
    ]);
    assert!(peers.contains(&format!("{tor_ip}: BFD Up")), "{peers}");
    let cut = |on: bool| {
        if on {
            let _ = c
                .underlay
                .ns
                .try_exec(&["nft", "add", "table", "bridge", "calyx_cut"]);
            c.underlay.ns.exec(&[
                "nft",
                "add chain bridge calyx_cut cut { type filter hook forward priority 0; policy accept; }",
            ]);
            for dir in ["iifname", "oifname"] {
                c.underlay.ns.exec(&[
                    "nft",
                    "add",
                    "rule",
                    "bridge",
                    "calyx_cut",
                    "cut",
                    dir,
                    &port,
                    "drop",
                ]);
            }
        } else {
            let _ = c
                .underlay
                .ns
                .try_exec(&["nft", "delete", "table", "bridge", "calyx_cut"]);
        }
    };
    for round in 0..2 {
        // Both ends in the steady state (BIRD's BFD session Up) before the cut.
        assert!(wait_until(Duration::from_secs(30), || {
            bird.birdc(&["show", "bfd", "sessions"])
                .lines()
                .any(|l| l.starts_with(&format!("{} ", node.ip)) && l.contains(" Up "))
        }));
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        cut(true);
        assert!(
            wait_until(Duration::from_secs(20), || !has_route(node, "10.99.0.0/24")),
            "round {round}: the dead ToR's route is still in the kernel\n{}",
            dump()
        );
        let gone = start.elapsed();
        println!(
            "round {round}: the ToR's route left the node's kernel {} ms after the cut (hold time 90 s)",
            gone.as_millis()
        );
        assert!(gone < Duration::from_secs(10), "round {round}: {gone:?}");
        cut(false);
        assert!(
            wait_until(Duration::from_secs(60), || has_route(node, "10.99.0.0/24")
                && bfd_up()),
            "round {round}: the route did not come back\n{}",
            dump()
        );
    }
    // Both cuts were counted (a loaded machine may add a flap of its own).
    let st = status();
    let failures: u64 = st
        .split(r#""failures":"#)
        .nth(1)
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "{st}");
}

/// Whether `node` has a kernel route (Calyx's protocol 80) for `block` through another node.
fn has_remote_route(node: &NodeNs, block: &str) -> bool {
    node.ns
        .exec(&["ip", "route", "show", "proto", "80"])
        .lines()
        .any(|l| l.starts_with(block) && !l.contains("blackhole"))
}

/// A node-to-node mesh of 3 nodes with `nodeMeshFailureDetectionMode: BFDIfDirectlyConnected`
/// and the default 90 s hold time: a frozen daemon (SIGSTOP: its sockets stay open, nothing
/// answers) loses its routes on the other nodes within about a second.
#[test]
fn bfd_mesh_detects_a_frozen_node() {
    let test = "bfd_mesh_detects_a_frozen_node";
    let t = format!("cxbfm{}", std::process::id() % 10_000);
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.177.0.0/16"),
        ("CALYX_GRACEFUL_RESTART", "false"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.77.3", 3, &env, |u| {
        u.apply(
            "apiVersion: projectcalico.org/v3\n\
             kind: BGPConfiguration\n\
             metadata:\n  name: default\n\
             spec:\n  nodeMeshFailureDetectionMode: BFDIfDirectlyConnected\n",
        );
    }) else {
        return;
    };
    let block_of = |name: &str| -> String {
        c.underlay
            .ipam_blocks()
            .into_iter()
            .find(|b| b["affinity"].as_str() == Some(&format!("host:{name}")))
            .and_then(|b| b["cidr"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let status = |i: usize| node_status(&c.nodes[i]).replace(char::is_whitespace, "");
    let all_bfd_up = || (0..3).all(|i| status(i).matches(r#""bfd":{"state":"Up""#).count() == 2);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let b3 = block_of("node3");
            !b3.is_empty() && has_remote_route(&c.nodes[0], &b3) && all_bfd_up()
        }),
        "mesh or BFD not up:\n{}\n{}",
        c.routes(),
        c.logs()
    );
    let b3 = block_of("node3");
    std::thread::sleep(Duration::from_secs(1));
    let pid = c.daemons[2].pid().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .output()
        .unwrap();
    let start = Instant::now();
    let gone = wait_until(Duration::from_secs(20), || {
        !has_remote_route(&c.nodes[0], &b3)
    });
    let took = start.elapsed();
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .output()
        .unwrap();
    assert!(
        gone,
        "node3's block still routed on node1 20 s after node3 froze:\n{}\n{}",
        c.routes(),
        c.logs()
    );
    println!(
        "SIGSTOP with BFD on the mesh (hold time 90 s): node3's block left node1's kernel after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Thawed, node3 comes back.
    assert!(
        wait_until(Duration::from_secs(90), || has_remote_route(
            &c.nodes[0],
            &b3
        ) && all_bfd_up()),
        "node3 did not come back:\n{}\n{}",
        c.routes(),
        c.logs()
    );
}
