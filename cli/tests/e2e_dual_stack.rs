//! Dual-stack clusters (issue 16, item 5): nodes with an IPv4 and an IPv6 address, pods with
//! one address of each family through `calyx-cni` (`assign_ipv4` / `assign_ipv6`), in BGP
//! mode (an IPv4 and an IPv6 mesh, each session carrying its own family; a BIRD ToR peered
//! over IPv6 by a BGPPeer with an IPv6 `peerIP`) and in VXLAN mode (`vxlan.calico` and
//! `vxlan-v6.calico`). Pods ping each other over both families; the mesh has a password
//! (TCP MD5 on both families); network policy and natOutgoing work over IPv6. Every wait is
//! bounded. IPv6-only nodes (no IPv4 address, hashed router ID) mesh over IPv6.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use calyx_tests::bgp_daemons::Daemon as Bird;
use calyx_tests::cluster::{require_plugins, Cluster, Daemon, NodeNs, Pod, Underlay};
use calyx_tests::wait_until;

const POOL_V4: &str = "10.196.0.0/16";
const POOL_V6: &str = "fd96:100::/112";

fn tag(test: &str) -> String {
    format!("cx6{}{}", test, std::process::id() % 10_000)
}

/// The underlay's IPv6 subnet `fd96:<n>::/64`: the bridge has `::1`, node `i` `::<10+i>`.
fn v6(n: u8, host: u32) -> String {
    format!("fd96:{n}::{host:x}")
}

/// Gives the underlay's bridge and nodes 1..=`count` their IPv6 addresses (no DAD: the
/// addresses are usable at once) and starts a daemon on each with `env` plus `IP6`.
fn dual_stack_cluster(underlay: Underlay, n: u8, count: u8, env: &[(&str, &str)]) -> Cluster {
    underlay.ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{}/64", v6(n, 1)),
        "dev",
        "br0",
        "nodad",
    ]);
    let nodes: Vec<NodeNs> = (1..=count).map(|i| underlay.add_node(i)).collect();
    let mut daemons = Vec::new();
    for (i, node) in (1u32..).zip(&nodes) {
        let addr = format!("{}/64", v6(n, 0x10 + i));
        node.ns
            .exec(&["ip", "-6", "addr", "add", &addr, "dev", "eth0", "nodad"]);
        let mut vars: Vec<(&str, &str)> = env.to_vec();
        vars.push(("IP6", &addr));
        daemons.push(Daemon::start(&underlay, node, &vars));
    }
    let c = Cluster {
        daemons,
        nodes,
        underlay,
    };
    c.wait_up();
    c
}

/// A CNI network configuration asking for an address of each family.
fn dual_stack_conf(c: &Cluster, node: &NodeNs) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"{}","etcd_endpoints":"{}","mtu":1400,"ipam":{{"type":"calyx-ipam","assign_ipv4":"true","assign_ipv6":"true"}}}}"#,
        node.name,
        c.underlay.etcd_endpoint()
    )
}

/// One dual-stack pod per node; each has exactly one address of each family.
fn dual_stack_pods(c: &Cluster, t: &str) -> Vec<(usize, Pod)> {
    let pods: Vec<(usize, Pod)> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let pod = Pod::add_with_conf(
                node,
                &format!("{t}-p{i}"),
                "default",
                dual_stack_conf(c, node),
            );
            (i, pod)
        })
        .collect();
    for (_, p) in &pods {
        let v4 = p.ips.iter().filter(|a| !a.contains(':')).count();
        let v6 = p.ips.iter().filter(|a| a.contains(':')).count();
        assert_eq!((v4, v6), (1, 1), "pod addresses {:?}", p.ips);
        assert!(
            p.ips.iter().any(|a| a.starts_with("fd96:100::")),
            "{:?}",
            p.ips
        );
    }
    pods
}

/// Every pod reaches every pod on another node over both families (bounded per pair).
fn all_pairs_ping_both_families(c: &Cluster, pods: &[(usize, Pod)], what: &str) {
    for (from_node, from) in pods {
        for (to_node, to) in pods {
            if from_node == to_node {
                continue;
            }
            for ip in &to.ips {
                let reached = wait_until(Duration::from_secs(60), || from.ping(ip));
                assert!(
                    reached,
                    "{what}: pod on node{} cannot reach {ip} (node{}):\n{}\n{}\nlogs:\n{}",
                    from_node + 1,
                    to_node + 1,
                    c.routes(),
                    ipv6_routes(c),
                    c.logs()
                );
            }
        }
    }
}

fn ipv6_routes(c: &Cluster) -> String {
    c.nodes
        .iter()
        .map(|n| {
            format!(
                "---- {} IPv6 routes ----\n{}",
                n.name,
                n.ns.exec(&["ip", "-6", "route"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The IPv6 block of `node` (from IPAM), e.g. `fd96:100::40/122`.
fn v6_block_of(c: &Cluster, node: &str) -> String {
    c.underlay
        .ipam_blocks()
        .into_iter()
        .find(|b| {
            b["affinity"].as_str() == Some(&format!("host:{node}"))
                && b["cidr"].as_str().is_some_and(|s| s.contains(':'))
        })
        .and_then(|b| b["cidr"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no IPv6 block of {node}"))
}

/// `calyx node status` (text) inside a node.
fn node_status_text(node: &NodeNs) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(calyx_tests::workspace_binary("calyx"))
        .args(["node", "status"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The rows of one family's table in `calyx node status` that are Established.
fn established(status: &str, family: &str) -> Vec<String> {
    status
        .split(&format!("{family} BGP status"))
        .nth(1)
        .map(|t| t.split("\n\n").next().unwrap_or(""))
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("Established"))
        .filter_map(|l| l.split('|').nth(1).map(|a| a.trim().to_string()))
        .collect()
}

/// A TCP server on `[::]:8080` in `outside` (one connection, bounded to 60 s) and a client in
/// `pod`, retried for up to 60 s; the peer address the server saw.
fn connect_v6(outside: &NodeNs, pod: &Pod, addr: &str) -> Option<String> {
    let server = "import socket\n\
        s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
        s.bind(('::',8080)); s.listen(4); s.settimeout(60)\n\
        c,a=s.accept(); c.sendall(b'ok'); c.close(); print(a[0],flush=True)\n";
    let child = Command::new("ip")
        .args(["netns", "exec", outside.ns.name(), "python3", "-c", server])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = format!(
        "import socket\ns=socket.create_connection(('{addr}',8080),2)\nprint(s.recv(2).decode())"
    );
    let connected = wait_until(Duration::from_secs(60), || {
        Command::new("ip")
            .args(["netns", "exec", pod.ns.name(), "python3", "-c", &client])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ok"))
    });
    let out = child.wait_with_output().unwrap();
    connected.then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn dual_stack_pods_reach_each_other_over_both_families_in_bgp_mode() {
    let test = "dual_stack_pods_reach_each_other_over_both_families_in_bgp_mode";
    let t = tag("b");
    let Some(underlay) = Underlay::new(test, &t, "10.96.1") else {
        return;
    };
    if !require_plugins(test) || !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    // A BIRD ToR on the underlay, peered with node1 over IPv6 only (BGPPeer `peerIP` IPv6).
    let tor_v6 = v6(1, 0xfe);
    underlay.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor6\n\
         spec:\n  node: node1\n  peerIP: {tor_v6}\n  asNumber: 65001\n"
    ));
    // The mesh with a password: TCP MD5 on both families, IPv4 peers arriving on the [::]
    // listener as mapped addresses (a SYN with a key the listener lacks is dropped).
    underlay.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeMeshPassword:\n    secretKeyRef:\n      name: mesh\n      key: password\n",
    );
    let secrets = tempfile::Builder::new()
        .prefix("calyx-dual-secrets-")
        .tempdir()
        .unwrap();
    std::fs::create_dir(secrets.path().join("mesh")).unwrap();
    std::fs::write(secrets.path().join("mesh/password"), "dual-stack-mesh").unwrap();
    let secrets_dir = secrets.path().display().to_string();
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", POOL_V4),
        ("CALICO_IPV6POOL_CIDR", POOL_V6),
        ("CALYX_BGP_SECRETS_DIR", &secrets_dir),
    ];
    let c = dual_stack_cluster(underlay, 1, 3, &env);
    let tor_ns = c.underlay.add_node(9);
    tor_ns.ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{tor_v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let node1_v6 = v6(1, 0x11);
    let bird = Bird::bird(
        &tor_ns.ns,
        &format!(
            "router id {};\nprotocol device {{}}\n\
             protocol static fabric6 {{ ipv6; route fd99:1::/64 blackhole; }}\n\
             protocol static fabric4 {{ ipv4; route 100.66.1.0/24 blackhole; }}\n\
             protocol bgp node1 {{ local {tor_v6} as 65001; neighbor {node1_v6} as 64512; \
             hold time 30; ipv4 {{ import all; export all; }}; ipv6 {{ import all; export all; }}; }}\n",
            tor_ns.ip
        ),
    );

    // Both meshes and the IPv6 ToR session are up, in the tables of `calyx node status`.
    let up = wait_until(Duration::from_secs(120), || {
        let s = node_status_text(&c.nodes[0]);
        established(&s, "IPv4").len() == 2 && established(&s, "IPv6").len() == 3
    });
    assert!(
        up,
        "sessions not established:\n{}\nlogs:\n{}",
        node_status_text(&c.nodes[0]),
        c.logs()
    );
    let s = node_status_text(&c.nodes[0]);
    let mut v6_peers = established(&s, "IPv6");
    v6_peers.sort();
    assert_eq!(v6_peers, [v6(1, 0x12), v6(1, 0x13), tor_v6.clone()], "{s}");
    // Node3 accepts both families' sessions from node1 and node2 (the lower address
    // connects), all with the mesh password.
    let accepted = wait_until(Duration::from_secs(60), || {
        let s = node_status_text(&c.nodes[2]);
        established(&s, "IPv4").len() == 2 && established(&s, "IPv6").len() == 2
    });
    assert!(accepted, "node3:\n{}", node_status_text(&c.nodes[2]));

    let pods = dual_stack_pods(&c, &t);
    all_pairs_ping_both_families(&c, &pods, "BGP mode");

    // Network policy over both families: the pod on node3 admits only the pod on node1,
    // chosen by label (the policy's address sets hold both of its addresses).
    let wep = |i: usize| format!("node{}-k8s-{}--p{}-eth0", i + 1, t, i);
    c.calyx_ok(&["label", "wep", &wep(2), "-n", "default", "role=db"]);
    c.calyx_ok(&["label", "wep", &wep(0), "-n", "default", "access=yes"]);
    c.underlay.apply(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: db}\n\
         spec:\n  selector: role == 'db'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n\
         \x20   source: {selector: access == 'yes'}\n",
    );
    let (allowed, denied, db) = (&pods[0].1, &pods[1].1, &pods[2].1);
    let enforced = wait_until(Duration::from_secs(60), || {
        db.ips.iter().all(|ip| !denied.ping(ip))
    });
    assert!(
        enforced,
        "node2's pod still reaches the db pod:\n{}",
        c.logs()
    );
    for ip in &db.ips {
        assert!(
            wait_until(Duration::from_secs(30), || allowed.ping(ip)),
            "the allowed pod cannot reach {ip} under the policy:\n{}",
            c.logs()
        );
        assert!(
            !denied.ping(ip),
            "node2's pod reached {ip} under the policy"
        );
    }
    c.calyx_ok(&["delete", "globalnetworkpolicy", "db"]);
    for ip in &db.ips {
        assert!(
            wait_until(Duration::from_secs(30), || denied.ping(ip)),
            "{ip} still denied after the policy went:\n{}",
            c.logs()
        );
    }

    // Node2's IPv6 block reaches node1 over the IPv6 mesh, with node2's IPv6 address as the
    // next hop (not an IPv4-mapped one).
    let block2 = v6_block_of(&c, "node2");
    let route = c.nodes[0].ns.exec(&["ip", "-6", "route", "show", &block2]);
    assert!(
        route.contains(&format!("via {}", v6(1, 0x12))),
        "node1's route to {block2}: {route}\n{}",
        ipv6_routes(&c)
    );

    // The ToR: its IPv6 prefix in node1's kernel via its IPv6 address; node1's IPv6 block at
    // the ToR with node1's IPv6 address as next hop; no IPv4 route over the IPv6 session.
    let learned = wait_until(Duration::from_secs(60), || {
        c.nodes[0]
            .ns
            .exec(&["ip", "-6", "route", "show", "fd99:1::/64"])
            .contains(&format!("via {tor_v6}"))
    });
    assert!(
        learned,
        "ToR prefix not in node1's kernel:\n{}",
        ipv6_routes(&c)
    );
    // The looking glass on node1 shows the ToR's IPv6 prefix with its AS path and next hop.
    let out = Command::new("ip")
        .args(["netns", "exec", c.nodes[0].ns.name()])
        .arg(calyx_tests::workspace_binary("calyx"))
        .args(["bgp", "routes", "fd99:1::/64"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("*>") && l.contains("fd99:1::/64"))
        .unwrap_or_else(|| panic!("no best path in `calyx bgp routes`:\n{table}"));
    assert!(row.contains(&tor_v6) && row.contains("65001"), "{row}");
    let block1 = v6_block_of(&c, "node1");
    let at_tor = wait_until(Duration::from_secs(60), || {
        bird.birdc(&["show", "route", "protocol", "node1"])
            .contains(&block1)
    });
    let tor_routes = bird.birdc(&["show", "route", "all", "protocol", "node1"]);
    assert!(
        at_tor,
        "node1's block {block1} not at the ToR:\n{tor_routes}"
    );
    assert!(
        tor_routes.contains(&format!("BGP.next_hop: {node1_v6}")),
        "next hop at the ToR:\n{tor_routes}"
    );
    assert!(
        !tor_routes.contains("10.196.") && !tor_routes.contains("100.66."),
        "IPv4 routes over the IPv6 session:\n{tor_routes}"
    );
    assert!(
        c.nodes[0]
            .ns
            .exec(&["ip", "-4", "route", "show", "100.66.1.0/24"])
            .is_empty(),
        "the ToR's IPv4 prefix came over the IPv6 session"
    );
}

#[test]
fn dual_stack_pods_reach_each_other_over_both_families_in_vxlan_mode() {
    let test = "dual_stack_pods_reach_each_other_over_both_families_in_vxlan_mode";
    let t = tag("v");
    let Some(underlay) = Underlay::new(test, &t, "10.96.2") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_CIDR", POOL_V4),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        ("CALICO_IPV6POOL_CIDR", POOL_V6),
        ("CALICO_IPV6POOL_VXLAN", "Always"),
        ("CALICO_IPV6POOL_NAT_OUTGOING", "true"),
    ];
    let c = dual_stack_cluster(underlay, 2, 2, &env);
    // An outside host on the underlay with no route to the pods' IPv6 pool: reached only
    // through natOutgoing of the IPv6 pool.
    let outside = c.underlay.add_node(8);
    let outside_v6 = v6(2, 0xfd);
    outside.ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{outside_v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);

    // Each node: both devices, the IPv6 one with the Node's IPv6 tunnel address and MAC.
    let devices = wait_until(Duration::from_secs(90), || {
        c.nodes.iter().all(|n| {
            n.ns.try_exec(&["ip", "link", "show", "vxlan.calico"])
                && n.ns.try_exec(&["ip", "link", "show", "vxlan-v6.calico"])
        })
    });
    assert!(devices, "VXLAN devices missing:\n{}", c.logs());
    let nodes = c.calyx_ok(&["get", "nodes", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let items = nodes["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{nodes}");
    for n in &items {
        let name = n["metadata"]["name"].as_str().unwrap();
        let tunnel = n["spec"]["ipv6VXLANTunnelAddr"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{name} has no ipv6VXLANTunnelAddr: {n}");
            });
        let mac = n["spec"]["vxlanTunnelMACAddrV6"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{name} has no vxlanTunnelMACAddrV6: {n}");
            });
        let node = c.nodes.iter().find(|x| x.name == name).unwrap();
        let link = node
            .ns
            .exec(&["ip", "-d", "link", "show", "vxlan-v6.calico"]);
        assert!(link.contains(mac), "{name}: {link} lacks {mac}");
        let addrs = node
            .ns
            .exec(&["ip", "-6", "addr", "show", "vxlan-v6.calico"]);
        assert!(addrs.contains(tunnel), "{name}: {addrs} lacks {tunnel}");
    }

    let pods = dual_stack_pods(&c, &t);
    all_pairs_ping_both_families(&c, &pods, "VXLAN mode");

    // natOutgoing on the IPv6 pool: the outside host sees node1's IPv6 address.
    let seen = connect_v6(&outside, &pods[0].1, &outside_v6);
    assert_eq!(
        seen.as_deref(),
        Some(v6(2, 0x11).as_str()),
        "source seen outside for pod {:?}",
        pods[0].1.ips
    );

    // The other node's IPv6 block goes through vxlan-v6.calico.
    let block2 = v6_block_of(&c, "node2");
    let route = c.nodes[0].ns.exec(&["ip", "-6", "route", "show", &block2]);
    assert!(
        route.contains("dev vxlan-v6.calico"),
        "node1's route to {block2}: {route}"
    );
}

#[test]
fn ipv6_only_nodes_mesh_and_route_pods_in_bgp_mode() {
    let test = "ipv6_only_nodes_mesh_and_route_pods_in_bgp_mode";
    let t = tag("o");
    let Some(underlay) = Underlay::new(test, &t, "10.96.3") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    // No IPv4 address for Calyx (etcd is still reached over the namespace's IPv4 link), a
    // router ID from the node name, an IPv6 pool only.
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("IP", "none"),
        ("CALICO_ROUTER_ID", "hash"),
        ("NO_DEFAULT_POOLS", "true"),
    ];
    underlay.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: v6\n\
         spec:\n  cidr: {POOL_V6}\n  blockSize: 122\n"
    ));
    let c = dual_stack_cluster(underlay, 3, 2, &env);
    let up = wait_until(Duration::from_secs(120), || {
        c.nodes.iter().all(|n| {
            let s = node_status_text(n);
            established(&s, "IPv6").len() == 1 && !s.contains("IPv4 BGP status")
        })
    });
    assert!(
        up,
        "IPv6 mesh not up:\n{}\n{}\nlogs:\n{}",
        node_status_text(&c.nodes[0]),
        node_status_text(&c.nodes[1]),
        c.logs()
    );
    let pods: Vec<(usize, Pod)> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let conf = format!(
                r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"{}","etcd_endpoints":"{}","mtu":1400,"ipam":{{"type":"calyx-ipam","assign_ipv4":"false","assign_ipv6":"true"}}}}"#,
                node.name,
                c.underlay.etcd_endpoint()
            );
            (i, Pod::add_with_conf(node, &format!("{t}-p{i}"), "default", conf))
        })
        .collect();
    for (_, p) in &pods {
        assert!(
            p.ips.len() == 1 && p.ips[0].starts_with("fd96:100::"),
            "{:?}",
            p.ips
        );
    }
    all_pairs_ping_both_families(&c, &pods, "IPv6 only");
    let block2 = v6_block_of(&c, "node2");
    let route = c.nodes[0].ns.exec(&["ip", "-6", "route", "show", &block2]);
    assert!(
        route.contains(&format!("via {}", v6(3, 0x12))),
        "node1's route to {block2}: {route}"
    );
}
