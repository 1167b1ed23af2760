//! BGP as Calico configures it (issue 16, parts 1-3), end to end: `calyx node run` in network
//! namespaces against real etcd and real peers. TCP MD5 passwords from Secrets mounted as
//! files, checked against FRR (wrong never comes up, right does, a changed file is applied
//! live, a missing one is a status line and a metric; `localASNumber` and `maxRestartTime` as
//! FRR sees them); the node-to-node mesh with
//! `nodeMeshPassword`, per-node `listenPort` and `bindMode: NodeIP`; an eBGP top-of-rack one
//! routed hop away (multihop), reached through the static route of `reachableBy`; and the
//! communities of `prefixAdvertisements`, per node, and the service ranges, as a BIRD
//! top-of-rack shows them.
//! Every wait is bounded; every namespace and process is removed on drop.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use calyx_tests::bgp_daemons::Daemon as Peer;
use calyx_tests::cluster::{node_status, require_plugins, Daemon, NodeNs, Underlay};
use calyx_tests::wait_until;

fn tag(test: &str) -> String {
    format!("cxw{}{}", test, std::process::id() % 10_000)
}

/// The JSON status of a node's daemon (`calyx node status -o json`), `Null` while it has none.
fn status(node: &NodeNs) -> serde_json::Value {
    serde_json::from_str(&node_status(node)).unwrap_or_default()
}

/// The `info` (FSM state) of a node's peer `addr`, if it has that peer.
fn peer_info(node: &NodeNs, addr: &str) -> Option<String> {
    status(node)["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == addr)
        .and_then(|p| p["info"].as_str().map(str::to_string))
}

fn established(node: &NodeNs, addr: &str) -> bool {
    peer_info(node, addr).as_deref() == Some("Established")
}

/// The node's Prometheus metrics.
fn metrics(node: &NodeNs) -> String {
    node.ns.exec(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
    ])
}

/// Writes one key of a mounted Secret as kubelet updates it: a new file renamed into place.
fn write_secret(dir: &Path, secret: &str, key: &str, value: &str) {
    let d = dir.join(secret);
    std::fs::create_dir_all(&d).unwrap();
    let tmp = d.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(&tmp, d.join(key)).unwrap();
}

fn secrets_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("calyx-bgp-secrets-")
        .tempdir()
        .unwrap()
}

fn have_frr(test: &str) -> bool {
    if !Path::new("/usr/lib/frr/bgpd").exists() {
        eprintln!("SKIPPED {test}: FRR's bgpd is not installed (tests/run.sh installs frr)");
        return false;
    }
    calyx_tests::require_binaries(test, &["vtysh"])
}

fn frr_state(frr: &Peer, neighbor: &str) -> String {
    frr.vtysh(&format!("show bgp neighbors {neighbor}"))
        .lines()
        .find(|l| l.contains("BGP state ="))
        .unwrap_or("")
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. TCP MD5 from a mounted Secret, against FRR

#[test]
fn md5_password_from_a_mounted_secret_with_frr() {
    let test = "md5_password_from_a_mounted_secret_with_frr";
    if !have_frr(test) {
        return;
    }
    let t = tag("m");
    let Some(u) = Underlay::new(test, &t, "10.161.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    let node = u.add_node(1);
    let tor = u.add_node(9);
    u.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  peerIP: {}\n  asNumber: 65001\n  localASNumber: 64600\n  \
         maxRestartTime: 33s\n  password:\n    secretKeyRef:\n      \
         name: bgp-secrets\n      key: tor-password\n",
        tor.ip
    ));
    let frr = Peer::frr(
        &tor.ns,
        &format!(
            "frr defaults traditional\nhostname tor\nlog stdout critical\n!\nrouter bgp 65001\n \
             bgp router-id {r}\n no bgp ebgp-requires-policy\n neighbor {n} remote-as 64600\n \
             neighbor {n} password right-one\n neighbor {n} timers 3 9\n \
             neighbor {n} timers connect 1\n!\n",
            r = tor.ip,
            n = node.ip
        ),
    );
    let secrets = secrets_dir();
    let dir = secrets.path().display().to_string();
    let d = Daemon::start(
        &u,
        &node,
        &[
            ("CALICO_NETWORKING_BACKEND", "bird"),
            ("CALICO_IPV4POOL_CIDR", "10.201.0.0/16"),
            ("CALYX_BGP_SECRETS_DIR", &dir),
        ],
    );
    let diag = |what: &str| {
        format!(
            "{what}\nstatus: {}\nFRR: {}\ndaemon log:\n{}",
            node_status(&node),
            frr.vtysh(&format!("show bgp neighbors {}", node.ip)),
            calyx_tests::cluster::tail(&d.log(), 40)
        )
    };

    // No Secret mounted yet: a status line and a metric, the daemon keeps running.
    let reported = wait_until(Duration::from_secs(60), || {
        status(&node)["bgp_secrets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["secret"] == "bgp-secrets/tor-password"))
    });
    assert!(reported, "{}", diag("missing secret not reported"));
    assert!(
        metrics(&node).contains("calyx_bgp_secrets_missing 1"),
        "{}",
        metrics(&node)
    );
    let text = calyx_tests::netns::run(
        "ip",
        &[
            "netns",
            "exec",
            node.ns.name(),
            &calyx_tests::workspace_binary("calyx").display().to_string(),
            "node",
            "status",
        ],
    );
    assert!(
        text.contains(
            "BGP password bgp-secrets/tor-password (used by BGPPeer \"tor\") unavailable"
        ),
        "{text}"
    );

    // The wrong password: resolved (no problem left), but the session never comes up. The
    // window is bounded: FRR retries every second and Calyx every 5 s, so 12 s see several
    // attempts from both sides.
    write_secret(secrets.path(), "bgp-secrets", "tor-password", "wrong-one");
    let resolved = wait_until(Duration::from_secs(30), || {
        status(&node)["bgp_secrets"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(resolved, "{}", diag("the written secret was not picked up"));
    assert!(metrics(&node).contains("calyx_bgp_secrets_missing 0"));
    let came_up = wait_until(Duration::from_secs(12), || {
        established(&node, &tor.ip) || frr_state(&frr, &node.ip).contains("Established")
    });
    assert!(
        !came_up,
        "{}",
        diag("a session with the wrong MD5 key came up")
    );

    // The right password, written as kubelet updates a Secret: up without a restart.
    write_secret(secrets.path(), "bgp-secrets", "tor-password", "right-one");
    let up = wait_until(Duration::from_secs(60), || {
        established(&node, &tor.ip) && frr_state(&frr, &node.ip).contains("Established")
    });
    assert!(
        up,
        "{}",
        diag("the right password did not bring the session up")
    );
    // FRR expects AS 64600 (`localASNumber`) and sees the BGPPeer's `maxRestartTime`.
    let neighbor = frr.vtysh(&format!("show bgp neighbors {}", node.ip));
    assert!(neighbor.contains("remote AS 64600"), "{neighbor}");
    assert!(
        neighbor.contains("Remote Restart timer is 33 seconds"),
        "{neighbor}"
    );
    assert!(!d.log().contains("panicked"));
    println!("MD5 session to FRR up after a live Secret change");
}

// ---------------------------------------------------------------------------------------------
// 2. The mesh with nodeMeshPassword, per-node listenPort, bindMode NodeIP

/// Whether something listens on `addr:port` (TCP) in `node`.
fn listens(node: &NodeNs, local: &str) -> bool {
    node.ns
        .exec(&["ss", "-Hltn"])
        .lines()
        .any(|l| l.split_whitespace().nth(3) == Some(local))
}

#[test]
fn mesh_with_node_mesh_password_and_per_node_settings() {
    let test = "mesh_with_node_mesh_password_and_per_node_settings";
    let t = tag("p");
    let Some(u) = Underlay::new(test, &t, "10.162.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    u.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  listenPort: 1790\n  bindMode: NodeIP\n  nodeMeshMaxRestartTime: 60s\n  \
         nodeMeshPassword:\n    secretKeyRef:\n      name: mesh\n      key: password\n\
         ---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node2\n\
         spec:\n  listenPort: 1791\n",
    );
    let nodes = [u.add_node(1), u.add_node(2)];
    // Each node has its own mount of the Secret; node2's is out of date at first.
    let dirs = [secrets_dir(), secrets_dir()];
    write_secret(dirs[0].path(), "mesh", "password", "mesh-pw");
    write_secret(dirs[1].path(), "mesh", "password", "stale-pw");
    let daemons: Vec<Daemon> = nodes
        .iter()
        .zip(&dirs)
        .map(|(n, dir)| {
            let dir = dir.path().display().to_string();
            Daemon::start(
                &u,
                n,
                &[
                    ("CALICO_NETWORKING_BACKEND", "bird"),
                    ("CALICO_IPV4POOL_CIDR", "10.202.0.0/16"),
                    ("CALYX_BGP_SECRETS_DIR", &dir),
                ],
            )
        })
        .collect();
    let diag = |what: &str| {
        let mut s = format!("{what}\n");
        for (n, d) in nodes.iter().zip(&daemons) {
            s.push_str(&format!(
                "---- {} ----\nstatus: {}\nss: {}\nlog:\n{}\n",
                n.name,
                node_status(n),
                n.ns.exec(&["ss", "-Htan"]),
                calyx_tests::cluster::tail(&d.log(), 30)
            ));
        }
        s
    };
    // Per-node listenPort, each on its node's address only (bindMode NodeIP).
    let listening = wait_until(Duration::from_secs(60), || {
        listens(&nodes[0], &format!("{}:1790", nodes[0].ip))
            && listens(&nodes[1], &format!("{}:1791", nodes[1].ip))
    });
    assert!(listening, "{}", diag("not listening as configured"));
    // Both see each other, but the keys differ: no session.
    let seen = wait_until(Duration::from_secs(60), || {
        peer_info(&nodes[0], &nodes[1].ip).is_some() && peer_info(&nodes[1], &nodes[0].ip).is_some()
    });
    assert!(seen, "{}", diag("mesh peers not configured"));
    let came_up = wait_until(Duration::from_secs(12), || {
        established(&nodes[0], &nodes[1].ip) || established(&nodes[1], &nodes[0].ip)
    });
    assert!(!came_up, "{}", diag("mesh came up with different MD5 keys"));
    // node2's Secret catches up: the mesh comes up, node1 connecting to node2's own port.
    write_secret(dirs[1].path(), "mesh", "password", "mesh-pw");
    let up = wait_until(Duration::from_secs(60), || {
        established(&nodes[0], &nodes[1].ip) && established(&nodes[1], &nodes[0].ip)
    });
    assert!(
        up,
        "{}",
        diag("mesh with the same password did not come up")
    );
    let conns = nodes[0].ns.exec(&["ss", "-Htn", "state", "established"]);
    assert!(
        conns.contains(&format!("{}:1791", nodes[1].ip))
            || nodes[1]
                .ns
                .exec(&["ss", "-Htn", "state", "established"])
                .contains(&format!("{}:1790", nodes[0].ip)),
        "no session on the configured ports: {conns}"
    );
    // Each node's route to the other's block came over the authenticated mesh.
    let routed = wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| n.ns.exec(&["ip", "route"]).contains("10.202."))
    });
    assert!(routed, "{}", diag("no block routes over the mesh"));
    println!("mesh up with nodeMeshPassword on ports 1790/1791");
}

// ---------------------------------------------------------------------------------------------
// 3. An eBGP top-of-rack one routed hop away: multihop, and reachableBy's static route

#[test]
fn ebgp_tor_one_routed_hop_away_over_reachable_by() {
    let test = "ebgp_tor_one_routed_hop_away_over_reachable_by";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = tag("h");
    let Some(u) = Underlay::new(test, &t, "10.163.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    // The underlay namespace routes between the nodes' subnet and the ToR's.
    u.add_subnet("br1", "10.163.2");
    let node = u.add_node(1);
    let tor = u.add_node_on(9, "br1", "10.163.2");
    // The node has no route to the ToR's subnet but the one reachableBy gives it.
    node.ns.exec(&["ip", "route", "del", "default"]);
    let gateway = "10.163.1.1";
    u.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  node: {}\n  peerIP: {}\n  asNumber: 65001\n  reachableBy: {gateway}\n",
        node.name, tor.ip
    ));
    // BIRD as the ToR: eBGP multihop, the node two hops away; it announces one route.
    let bird = Peer::bird(
        &tor.ns,
        &format!(
            "router id {r};\nprotocol device {{}}\n\
             protocol static {{ ipv4; route 10.250.0.0/24 blackhole; }}\n\
             protocol bgp node1 {{ local {r} as 65001; neighbor {n} as 64512; multihop 2; \
             hold time 9; ipv4 {{ import all; export where source = RTS_STATIC; }}; }}\n",
            r = tor.ip,
            n = node.ip
        ),
    );
    let d = Daemon::start(
        &u,
        &node,
        &[
            ("CALICO_NETWORKING_BACKEND", "bird"),
            ("CALICO_IPV4POOL_CIDR", "10.203.0.0/16"),
        ],
    );
    let diag = |what: &str| {
        format!(
            "{what}\nnode routes: {}\nstatus: {}\nbird: {}\n{}\ndaemon log:\n{}",
            node.ns.exec(&["ip", "route"]),
            node_status(&node),
            bird.birdc(&["show", "protocols", "all", "node1"]),
            bird.log(),
            calyx_tests::cluster::tail(&d.log(), 40)
        )
    };
    let routed = wait_until(Duration::from_secs(60), || {
        node.ns
            .exec(&["ip", "route", "show", &format!("{}/32", tor.ip)])
            .contains(&format!("via {gateway}"))
    });
    assert!(routed, "{}", diag("no reachableBy route to the ToR"));
    let up = wait_until(Duration::from_secs(60), || {
        established(&node, &tor.ip)
            && bird
                .birdc(&["show", "protocols", "node1"])
                .contains("Established")
    });
    assert!(up, "{}", diag("the multihop session did not come up"));
    // The ToR learned the node's block, with the node as next hop.
    let learned = wait_until(Duration::from_secs(30), || {
        let r = bird.birdc(&["show", "route", "protocol", "node1"]);
        r.contains("10.203.") && r.contains(&node.ip)
    });
    assert!(learned, "{}", diag("the ToR did not learn the block"));
    // The ToR's route reaches the kernel through the gateway of the static route, as BIRD's
    // `gateway recursive` resolves a multihop next hop.
    let installed = wait_until(Duration::from_secs(30), || {
        node.ns
            .exec(&["ip", "route", "show", "10.250.0.0/24"])
            .contains(&format!("via {gateway}"))
    });
    assert!(
        installed,
        "{}",
        diag("the ToR's route is not in the kernel via the gateway")
    );
    // reachableBy removed: the static route goes (routes follow the resources).
    u.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  node: {}\n  peerIP: {}\n  asNumber: 65001\n",
        node.name, tor.ip
    ));
    let gone = wait_until(Duration::from_secs(30), || {
        !node
            .ns
            .exec(&["ip", "route", "show", &format!("{}/32", tor.ip)])
            .contains("via")
    });
    assert!(
        gone,
        "{}",
        diag("the static route stayed after reachableBy went")
    );
    println!("eBGP multihop session to a ToR one routed hop away, over reachableBy");
}

// ---------------------------------------------------------------------------------------------
// 4. Communities of prefixAdvertisements (per node) as a BIRD top-of-rack sees them

/// The `birdc show route all` block of `prefix` (the lines from the prefix to the next one).
fn route_block(all: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in all.lines() {
        if !line.starts_with(char::is_whitespace) && line.contains('/') {
            inside = line.starts_with(prefix);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn communities_seen_by_a_bird_tor() {
    let test = "communities_seen_by_a_bird_tor";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = tag("c");
    let Some(u) = Underlay::new(test, &t, "10.164.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    let tor_ip = "10.164.1.19";
    u.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  serviceClusterIPs: [{{cidr: 10.96.0.0/12}}]\n  \
         serviceExternalIPs: [{{cidr: 192.0.2.0/24}}]\n  \
         serviceLoadBalancerIPs: [{{cidr: 198.51.100.0/28}}]\n  \
         communities:\n  - name: rack\n    value: '64512:100'\n  \
         prefixAdvertisements:\n  - cidr: 10.204.0.0/16\n    communities: [rack, '64512:100:7']\n\
         ---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node2\n\
         spec:\n  prefixAdvertisements:\n  - cidr: 10.204.0.0/16\n    communities: ['65000:2']\n\
         ---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
         spec:\n  peerIP: {tor_ip}\n  asNumber: 65001\n"
    ));
    let nodes = [u.add_node(1), u.add_node(2)];
    let tor = u.add_node(9);
    let mut conf = format!(
        "router id {tor_ip};\nprotocol device {{}}\n\
         template bgp node {{ local {tor_ip} as 65001; hold time 9; \
         ipv4 {{ import all; export none; }}; }}\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        conf.push_str(&format!(
            "protocol bgp n{} from node {{ neighbor {} as 64512; }}\n",
            i + 1,
            n.ip
        ));
    }
    let bird = Peer::bird(&tor.ns, &conf);
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|n| {
            Daemon::start(
                &u,
                n,
                &[
                    ("CALICO_NETWORKING_BACKEND", "bird"),
                    ("CALICO_IPV4POOL_CIDR", "10.204.0.0/16"),
                ],
            )
        })
        .collect();
    // Each node's block, from the ToR's view: learned from that node's session.
    let block_of = |i: usize| -> Option<String> {
        bird.birdc(&["show", "route", "protocol", &format!("n{}", i + 1)])
            .lines()
            .find(|l| l.starts_with("10.204."))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
    };
    let diag = |what: &str| {
        let mut s = format!(
            "{what}\nbird routes:\n{}\nprotocols:\n{}",
            bird.birdc(&["show", "route", "all"]),
            bird.birdc(&["show", "protocols"])
        );
        for (n, d) in nodes.iter().zip(&daemons) {
            s.push_str(&format!(
                "---- {} ----\n{}\n",
                n.name,
                calyx_tests::cluster::tail(&d.log(), 30)
            ));
        }
        s
    };
    let learned = wait_until(Duration::from_secs(60), || {
        block_of(0).is_some() && block_of(1).is_some()
    });
    assert!(learned, "{}", diag("the ToR did not learn both blocks"));
    let all = bird.birdc(&["show", "route", "all"]);
    let b1 = route_block(&all, &block_of(0).unwrap());
    let b2 = route_block(&all, &block_of(1).unwrap());
    // node1: the cluster's prefixAdvertisements (a named and a large community).
    assert!(
        b1.contains("BGP.community: (64512,100)"),
        "node1's block:\n{b1}"
    );
    assert!(
        b1.contains("BGP.large_community: (64512, 100, 7)"),
        "node1's block:\n{b1}"
    );
    // node2: its own node.node2 object replaces them.
    assert!(
        b2.contains("BGP.community: (65000,2)"),
        "node2's block:\n{b2}"
    );
    assert!(!b2.contains("64512,100"), "node2's block:\n{b2}");
    // The service ranges, from every node (as Calico advertises them).
    let services = |i: usize| {
        let from = bird.birdc(&["show", "route", "protocol", &format!("n{}", i + 1)]);
        ["10.96.0.0/12", "192.0.2.0/24", "198.51.100.0/28"]
            .iter()
            .all(|cidr| from.contains(cidr))
    };
    let advertised = wait_until(Duration::from_secs(30), || services(0) && services(1));
    assert!(
        advertised,
        "{}",
        diag("service ranges not learned from both nodes")
    );
    // A live change of the communities re-announces with the new ones, no restart.
    u.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node2\n\
         spec:\n  prefixAdvertisements:\n  - cidr: 10.204.0.0/16\n    communities: ['65000:3']\n",
    );
    let block2 = block_of(1).unwrap();
    let changed = wait_until(Duration::from_secs(30), || {
        route_block(&bird.birdc(&["show", "route", "all"]), &block2)
            .contains("BGP.community: (65000,3)")
    });
    assert!(
        changed,
        "{}",
        diag("the community change was not re-announced")
    );
    println!("BIRD ToR sees the communities of prefixAdvertisements, per node");
}
