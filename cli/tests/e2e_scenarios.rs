//! End-to-end scenarios on one machine (issue 9): route reflection, a BIRD top-of-rack peer,
//! pool mode changes at runtime, node failure and graceful restart, etcd outages, scale, and
//! VXLAN CrossSubnet across a router. Node namespaces run `calyx node run`; pods are created
//! through `calyx-cni` exactly as a container runtime does. Every wait is bounded; figures are
//! printed rather than asserted against the clock.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use calyx_tests::cluster::{
    cni_conf, node_status, require_plugins, run_cni, Cluster, Daemon, NodeNs, Pinger, Pod, Underlay,
};
use calyx_tests::netns::Netns;
use calyx_tests::wait_until;

fn tag(test: &str) -> String {
    format!("cxs{}{}", test, std::process::id() % 10_000)
}

fn apply(underlay: &Underlay, yaml: &str) {
    underlay.apply(yaml);
}

/// `ip route get <ip>` on a node: the route the kernel uses.
fn route_to(node: &NodeNs, ip: &str) -> String {
    node.ns.exec(&["ip", "route", "get", ip])
}

/// The (block CIDR, owner node) pairs in IPAM.
fn blocks(underlay: &Underlay) -> Vec<(String, String)> {
    underlay
        .ipam_blocks()
        .into_iter()
        .filter_map(|b| {
            let cidr = b["cidr"].as_str()?.to_string();
            let host = b["affinity"].as_str()?.strip_prefix("host:")?.to_string();
            Some((cidr, host))
        })
        .collect()
}

/// Every allocated address of every block (an address held twice shows up twice).
fn allocated_addresses(underlay: &Underlay) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    for b in underlay.ipam_blocks() {
        let Some(net) = b["cidr"]
            .as_str()
            .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok())
        else {
            continue;
        };
        let base = u32::from(net.network());
        for (ordinal, a) in b["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !a.is_null() {
                out.push(std::net::Ipv4Addr::from(
                    base + u32::try_from(ordinal).unwrap(),
                ));
            }
        }
    }
    out
}

const BGP_ENV: [(&str, &str); 1] = [("CALICO_NETWORKING_BACKEND", "bird")];

fn env_with<'a>(
    base: &[(&'a str, &'a str)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

// ---------------------------------------------------------------------------------------------
// 4. Route reflector

#[test]
fn route_reflector_without_mesh() {
    let test = "route_reflector_without_mesh";
    let t = tag("r");
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.173.0.0/16")]);
    let Some(c) = Cluster::start(test, &t, "10.73.1", 3, &env, |u| {
        // As Calico users do: no mesh, one BGPPeer from every node to the reflectors.
        apply(
            u,
            "apiVersion: projectcalico.org/v3\n\
             kind: BGPConfiguration\n\
             metadata:\n  name: default\n\
             spec:\n  nodeToNodeMeshEnabled: false\n\
             ---\n\
             apiVersion: projectcalico.org/v3\n\
             kind: BGPPeer\n\
             metadata:\n  name: peer-with-route-reflectors\n\
             spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
        );
    }) else {
        return;
    };
    // node1 becomes the reflector once it registered.
    let registered = wait_until(Duration::from_secs(20), || {
        c.underlay.calyx(&["get", "node", "node1"]).status.success()
    });
    assert!(registered, "node1 never registered:\n{}", c.logs());
    c.calyx_ok(&["label", "nodes", "node1", "route-reflector=true"]);
    c.calyx_ok(&[
        "patch",
        "node",
        "node1",
        "-p",
        r#"{"spec":{"bgp":{"routeReflectorClusterID":"224.0.0.1"}}}"#,
    ]);
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "route reflector");

    // Clients peer with the reflector only, and keep the originator's next hop.
    for (i, node) in c.nodes.iter().enumerate().skip(1) {
        let status: serde_json::Value = serde_json::from_str(&node_status(node)).unwrap();
        let peers: Vec<String> = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["address"].as_str().map(str::to_string))
            .collect();
        assert_eq!(peers, [c.nodes[0].ip.clone()], "node{} peers", i + 1);
    }
    let rr: serde_json::Value = serde_json::from_str(&node_status(&c.nodes[0])).unwrap();
    let clients = rr["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer_type"].as_str() == Some("route reflector client"))
        .count();
    assert_eq!(clients, 2, "reflector status: {rr}");
    let via = route_to(&c.nodes[1], &pods[2].1.ip);
    assert!(
        via.contains(&format!("via {} ", c.nodes[2].ip)),
        "node2 -> node3 pod should go straight to node3: {via}\n{}",
        c.routes()
    );
    println!("route reflector: {} pods reach each other", pods.len());
}

// ---------------------------------------------------------------------------------------------
// 5. A BIRD top-of-rack router over eBGP

/// (prefix, next hop, primary) of every route in `birdc show route` output.
fn bird_routes(text: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    let mut primary = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) && words[0].contains('/') {
            prefix = words[0].to_string();
            primary = words.contains(&"*");
        } else if line.starts_with(char::is_whitespace) && words[0] == "unicast" {
            primary = words.contains(&"*");
        } else if words[0] == "via" && !prefix.is_empty() {
            out.push((prefix.clone(), words[1].to_string(), primary));
        }
    }
    out
}

#[test]
fn bird_top_of_rack_learns_every_block() {
    let test = "bird_top_of_rack_learns_every_block";
    if !calyx_tests::require_binaries(test, &["bird", "birdc"]) {
        return;
    }
    let t = tag("t");
    let tor_ip = "10.74.1.19";
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.174.0.0/16")]);
    let Some(c) = Cluster::start(test, &t, "10.74.1", 3, &env, |u| {
        apply(
            u,
            &format!(
                "apiVersion: projectcalico.org/v3\n\
                 kind: BGPPeer\n\
                 metadata:\n  name: tor\n\
                 spec:\n  peerIP: {tor_ip}\n  asNumber: 65001\n"
            ),
        );
    }) else {
        return;
    };
    // The ToR: a namespace on the same bridge (index 9 -> 10.74.1.19).
    let tor_ns = c.underlay.add_node(9);
    let mut conf = format!(
        "router id {tor_ip};\nprotocol device {{}}\n\
         template bgp node {{ local {tor_ip} as 65001; hold time 9; ipv4 {{ import all; export none; }}; }}\n"
    );
    for (i, n) in c.nodes.iter().enumerate() {
        conf.push_str(&format!(
            "protocol bgp n{} from node {{ neighbor {} as 64512; }}\n",
            i + 1,
            n.ip
        ));
    }
    let bird = calyx_tests::bgp_daemons::Daemon::bird(&tor_ns.ns, &conf);
    // A pod per node so that every block is in use (blocks are claimed at start-up anyway).
    let pods = c.pods(&t, 1);
    let ip_of: BTreeMap<String, String> = c
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.clone()))
        .collect();
    let expected = || -> BTreeSet<(String, String)> {
        blocks(&c.underlay)
            .into_iter()
            .map(|(cidr, host)| (cidr, ip_of[&host].clone()))
            .collect()
    };
    let learned = || -> Vec<(String, String, bool)> {
        bird_routes(&bird.birdc(&["show", "route", "table", "master4"]))
    };
    let best = || -> BTreeSet<(String, String)> {
        learned()
            .into_iter()
            .filter(|r| r.2)
            .map(|(p, v, _)| (p, v))
            .collect()
    };
    let ok = wait_until(Duration::from_secs(30), || {
        let e = expected();
        e.len() >= 3 && best() == e
    });
    assert!(
        ok,
        "BIRD's best routes {:?} != blocks {:?}\nbirdc show protocols:\n{}\nbird log:\n{}\n{}\nlogs:\n{}",
        best(),
        expected(),
        bird.birdc(&["show", "protocols"]),
        bird.log(),
        c.routes(),
        c.logs()
    );
    // Nothing else at all: no pod /32s, no tunnel addresses, no other next hop for a block.
    let all = learned();
    let wrong: Vec<_> = all
        .iter()
        .filter(|(p, v, _)| !expected().contains(&(p.clone(), v.clone())))
        .collect();
    assert!(
        wrong.is_empty(),
        "BIRD learned routes it should not have: {wrong:?}\nall: {all:?}"
    );
    println!(
        "ToR learned {} routes ({} blocks) for pods {:?}",
        all.len(),
        expected().len(),
        pods.iter().map(|(_, p)| p.ip.as_str()).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Pool mode change at runtime under the BGP backend

#[test]
fn pool_mode_change_keeps_connectivity() {
    let test = "pool_mode_change_keeps_connectivity";
    let t = tag("m");
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.175.0.0/16")]);
    let Some(c) = Cluster::start(test, &t, "10.75.1", 3, &env, |_| {}) else {
        return;
    };
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "mode Never");
    for (mode, vxlan) in [("Always", true), ("Never", false)] {
        let pinger = Pinger::start(&pods[0].1, &pods[1].1.ip, 12);
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        c.calyx_ok(&[
            "patch",
            "ippool",
            "default-ipv4-ippool",
            "-p",
            &format!(r#"{{"spec":{{"vxlanMode":"{mode}"}}}}"#),
        ]);
        // The routes follow the mode on every node.
        let converged = wait_until(Duration::from_secs(30), || {
            c.nodes.iter().enumerate().all(|(i, n)| {
                pods.iter()
                    .filter(|(j, _)| *j != i)
                    .all(|(_, p)| route_to(n, &p.ip).contains("vxlan.calico") == vxlan)
            })
        });
        let took = started.elapsed();
        assert!(
            converged,
            "routes did not follow vxlanMode {mode}:\n{}\nlogs:\n{}",
            c.routes(),
            c.logs()
        );
        c.all_pairs_ping(&pods, Duration::from_secs(30), &format!("mode {mode}"));
        let (sent, received) = pinger.finish();
        println!(
            "vxlanMode -> {mode}: routes converged in {:.1} s; ping every 100 ms across the \
             change: {received}/{sent} replies ({} lost)",
            took.as_secs_f64(),
            sent - received
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Node failure and graceful restart

/// Whether `node` has a kernel route for `pod_ip` through another node.
fn has_remote_route(node: &NodeNs, block: &str) -> bool {
    node.ns
        .exec(&["ip", "route", "show", "proto", "80"])
        .lines()
        .any(|l| l.starts_with(block) && !l.contains("blackhole"))
}

#[test]
fn node_failure_withdraws_routes_within_hold_time() {
    let test = "node_failure_withdraws_routes_within_hold_time";
    let t = tag("f");
    let hold = 6u64;
    let env = env_with(
        &BGP_ENV,
        &[
            ("CALICO_IPV4POOL_CIDR", "10.176.0.0/16"),
            ("CALYX_GRACEFUL_RESTART", "false"),
            ("CALYX_BGP_HOLD_TIME", "6"),
        ],
    );
    let Some(mut c) = Cluster::start(test, &t, "10.76.1", 3, &env, |_| {}) else {
        return;
    };
    let block_of = |name: &str| -> String {
        blocks(&c.underlay)
            .into_iter()
            .find(|(_, h)| h == name)
            .map(|(b, _)| b)
            .unwrap_or_else(|| panic!("{name} has no block"))
    };
    let (b2, b3) = (block_of("node2"), block_of("node3"));
    let learned = wait_until(Duration::from_secs(30), || {
        has_remote_route(&c.nodes[0], &b2) && has_remote_route(&c.nodes[0], &b3)
    });
    assert!(learned, "node1 never learned the blocks:\n{}", c.routes());

    let p1 = Pod::add(&c.underlay, &c.nodes[0], &format!("{t}-p1"));
    let p3 = Pod::add(&c.underlay, &c.nodes[2], &format!("{t}-p3"));
    let reached = wait_until(Duration::from_secs(30), || p1.ping(&p3.ip));
    assert!(reached, "no connectivity to start with:\n{}", c.routes());

    // A crash: the kernel closes the TCP session, the peers notice at once.
    let pinger = Pinger::start(&p1, &p3.ip, 10);
    std::thread::sleep(Duration::from_secs(1));
    c.daemons[2].kill();
    let started = Instant::now();
    let gone = wait_until(Duration::from_secs(hold + 5), || {
        !has_remote_route(&c.nodes[0], &b3)
    });
    assert!(
        gone,
        "node3's block still routed {} s after its daemon was killed:\n{}\nlogs:\n{}",
        hold + 5,
        c.routes(),
        c.logs()
    );
    println!(
        "SIGKILL, no graceful restart: node3's block withdrawn from node1 after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The same restart as in graceful_restart_keeps_pod_traffic, for comparison.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    c.daemons[2] = Daemon::start(&c.underlay, &c.nodes[2], &env);
    c.wait_up();
    let (sent, received) = pinger.finish();
    let back = wait_until(Duration::from_secs(30), || p1.ping(&p3.ip));
    assert!(
        back,
        "node3's pods unreachable after its restart:\n{}",
        c.routes()
    );
    println!(
        "no graceful restart, SIGKILL + start of node3's daemon: {received}/{sent} replies \
         across it ({} lost)",
        sent - received
    );

    // A hang (or a cut link): the session stays open and only the hold timer notices.
    let pid = c.daemons[1].pid().unwrap().to_string();
    Command::new("kill").args(["-STOP", &pid]).output().unwrap();
    let started = Instant::now();
    let gone = wait_until(Duration::from_secs(hold + 5), || {
        !has_remote_route(&c.nodes[0], &b2)
    });
    let took = started.elapsed();
    Command::new("kill").args(["-CONT", &pid]).output().unwrap();
    assert!(
        gone,
        "node2's block still routed {} s after its daemon froze (hold time {hold} s):\n{}\nlogs:\n{}",
        hold + 5,
        c.routes(),
        c.logs()
    );
    println!(
        "SIGSTOP (hold time {hold} s): node2's block withdrawn from node1 after {:.1} s",
        took.as_secs_f64()
    );
}

/// A directory under the temporary directory, removed on `Drop`.
struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn graceful_restart_keeps_pod_traffic() {
    let test = "graceful_restart_keeps_pod_traffic";
    let t = tag("g");
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.177.0.0/16")]);
    let Some(mut c) = Cluster::start(test, &t, "10.77.1", 2, &env, |_| {}) else {
        return;
    };
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "before restarts");
    // node2's daemon keeps its state directory across restarts, as on a real host.
    let state = StateDir::new(&format!("{t}-state"));
    let state_dir = state.0.display().to_string();
    let node2_env = env_with(&env, &[("CALYX_STATE_DIR", &state_dir)]);
    c.daemons[1].stop();
    c.daemons[1] = Daemon::start(&c.underlay, &c.nodes[1], &node2_env);
    c.wait_up();
    c.all_pairs_ping(&pods, Duration::from_secs(30), "settled");

    for (how, hard) in [("SIGTERM + start", false), ("SIGKILL + start", true)] {
        let pinger = Pinger::start(&pods[0].1, &pods[1].1.ip, 15);
        std::thread::sleep(Duration::from_secs(1));
        if hard {
            c.daemons[1].kill();
        } else {
            c.daemons[1].stop();
        }
        std::thread::sleep(Duration::from_secs(1));
        c.daemons[1] = Daemon::start(&c.underlay, &c.nodes[1], &node2_env);
        c.wait_up();
        let (sent, received) = pinger.finish();
        c.all_pairs_ping(&pods, Duration::from_secs(30), &format!("after {how}"));
        println!(
            "graceful restart, {how} of node2's daemon: {received}/{sent} replies across it \
             ({} lost, {:.1} s at 100 ms)",
            sent - received,
            (sent - received) as f64 / 10.0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. etcd outage

#[test]
fn etcd_outage_leaves_traffic_alone() {
    let test = "etcd_outage_leaves_traffic_alone";
    let t = tag("e");
    // 30 s, as the scenario asks: several full reconnect cycles of the daemons' watches
    // (back-off tops out at 5 s) and of the clients (5 s timeout).
    let outage = 30u32;
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.178.0.0/16")]);
    let Some(mut c) = Cluster::start(test, &t, "10.78.1", 2, &env, |_| {}) else {
        return;
    };
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "before the outage");

    let pinger = Pinger::start(&pods[0].1, &pods[1].1.ip, outage + 4);
    std::thread::sleep(Duration::from_secs(1));
    c.underlay.etcd_mut().kill();
    let down = Instant::now();
    // A pod created during the outage: the CNI ADD waits for etcd within its deadline (90 s,
    // as Calico's plugin) instead of failing the pod, and succeeds once etcd is back.
    let late_ns = Netns::new(&format!("{t}-late"));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let node_ns = c.nodes[1].ns.name().to_string();
        let conf = cni_conf(&c.underlay, &c.nodes[1]);
        let pod_ns = late_ns.name().to_string();
        std::thread::spawn(move || {
            let out = run_cni(&node_ns, "ADD", "ctr-late", &pod_ns, &conf);
            let _ = tx.send(out);
        });
    }
    let rest = Duration::from_secs(u64::from(outage)).saturating_sub(down.elapsed());
    std::thread::sleep(rest);
    assert!(
        rx.try_recv().is_err(),
        "the CNI ADD ended while etcd was still down"
    );
    c.underlay.etcd_mut().restart();
    let during = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("CNI ADD hung after etcd came back");
    println!(
        "CNI ADD started during the outage: {} {:.1} s after etcd went down",
        if during.status.success() {
            "succeeded"
        } else {
            "failed"
        },
        down.elapsed().as_secs_f64()
    );
    assert!(
        during.status.success(),
        "the CNI ADD that waited out the outage failed: {}{}",
        String::from_utf8_lossy(&during.stdout),
        String::from_utf8_lossy(&during.stderr)
    );
    let (sent, received) = pinger.finish();
    println!(
        "etcd down {outage} s: {received}/{sent} replies between existing pods ({} lost)",
        sent - received
    );
    assert!(
        sent - received <= 1,
        "existing pod traffic was disturbed by the etcd outage: {received}/{sent}\n{}\nlogs:\n{}",
        c.routes(),
        c.logs()
    );
    // The pod made during the outage goes away again.
    let _ = run_cni(
        c.nodes[1].ns.name(),
        "DEL",
        "ctr-late",
        late_ns.name(),
        &cni_conf(&c.underlay, &c.nodes[1]),
    );
    drop(late_ns);
    let back = Instant::now();
    let mut new_pod = None;
    let got = wait_until(Duration::from_secs(30), || {
        let name = format!("{t}-new");
        let ns = Netns::new(&name);
        let conf = cni_conf(&c.underlay, &c.nodes[1]);
        let out = run_cni(c.nodes[1].ns.name(), "ADD", "ctr-new-x", &name, &conf);
        if out.status.success() {
            let _ = run_cni(c.nodes[1].ns.name(), "DEL", "ctr-new-x", &name, &conf);
            drop(ns);
            new_pod = Some(Pod::add(&c.underlay, &c.nodes[1], &name));
            true
        } else {
            let _ = run_cni(c.nodes[1].ns.name(), "DEL", "ctr-new-x", &name, &conf);
            false
        }
    });
    assert!(
        got,
        "no pod could be created after etcd came back:\n{}",
        c.logs()
    );
    let new_pod = new_pod.unwrap();
    println!(
        "a new pod got {} {:.1} s after etcd came back",
        new_pod.ip,
        back.elapsed().as_secs_f64()
    );
    let reached = wait_until(Duration::from_secs(30), || pods[0].1.ping(&new_pod.ip));
    assert!(reached, "the new pod is not reachable:\n{}", c.routes());

    let addrs = allocated_addresses(&c.underlay);
    let unique: BTreeSet<_> = addrs.iter().collect();
    assert_eq!(
        unique.len(),
        addrs.len(),
        "an address is held twice: {addrs:?}"
    );
    let mut ips: Vec<&str> = pods
        .iter()
        .map(|(_, p)| p.ip.as_str())
        .chain([new_pod.ip.as_str()])
        .collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), pods.len() + 1, "an address was handed out twice");
    assert!(
        !c.daemons.iter_mut().any(Daemon::exited),
        "a daemon died:\n{}",
        c.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Scale

#[test]
fn scale_200_pods_on_3_nodes() {
    let test = "scale_200_pods_on_3_nodes";
    let t = tag("s");
    let total = 200usize;
    let workers = 8usize;
    let env = env_with(&BGP_ENV, &[("CALICO_IPV4POOL_CIDR", "10.179.0.0/16")]);
    let Some(c) = Cluster::start(test, &t, "10.79.9", 3, &env, |_| {}) else {
        return;
    };
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let pods: Vec<(usize, Pod)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if k >= total {
                            break mine;
                        }
                        let n = k % c.nodes.len();
                        mine.push((n, Pod::add(&c.underlay, &c.nodes[n], &format!("{t}-{k}"))));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let created = started.elapsed();
    let ips: BTreeSet<&str> = pods.iter().map(|(_, p)| p.ip.as_str()).collect();
    assert_eq!(ips.len(), total, "every pod has its own address");
    let addrs = allocated_addresses(&c.underlay);
    let held: BTreeSet<_> = addrs.iter().collect();
    assert_eq!(held.len(), addrs.len(), "an address is held twice in IPAM");
    // Every pod pings one pod on the next node (all 200 pods, every node pair).
    let mut by_node: Vec<Vec<&Pod>> = vec![Vec::new(); c.nodes.len()];
    for (n, p) in &pods {
        by_node[*n].push(p);
    }
    let ping_start = Instant::now();
    let mut pinged = 0;
    for (n, list) in by_node.iter().enumerate() {
        let other = &by_node[(n + 1) % by_node.len()];
        for (k, from) in list.iter().enumerate() {
            let to = other[k % other.len()];
            let ok = wait_until(Duration::from_secs(20), || from.ping(&to.ip));
            assert!(
                ok,
                "{} (node{}) cannot reach {} (node{})\n{}",
                from.ip,
                n + 1,
                to.ip,
                (n + 1) % by_node.len() + 1,
                c.routes()
            );
            pinged += 1;
        }
    }
    let pinging = ping_start.elapsed();
    let teardown = Instant::now();
    drop(pods);
    println!(
        "scale: {total} pods on 3 nodes with {workers} concurrent CNI ADDs in {:.1} s \
         ({:.0} ms/pod); {pinged} cross-node pings in {:.1} s; CNI DEL of all in {:.1} s",
        created.as_secs_f64(),
        created.as_secs_f64() * 1000.0 / total as f64,
        pinging.as_secs_f64(),
        teardown.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. VXLAN CrossSubnet across a router

fn tx_packets(node: &NodeNs, dev: &str) -> u64 {
    node.ns
        .exec(&[
            "cat",
            &format!("/sys/class/net/{dev}/statistics/tx_packets"),
        ])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn vxlan_cross_subnet_encapsulates_only_across_subnets() {
    let test = "vxlan_cross_subnet_encapsulates_only_across_subnets";
    let t = tag("x");
    let Some(underlay) = Underlay::new(test, &t, "10.79.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    underlay.add_subnet("br1", "10.79.2");
    let nodes = vec![
        underlay.add_node(1),
        underlay.add_node(2),
        underlay.add_node_on(3, "br1", "10.79.2"),
    ];
    let env = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_CIDR", "10.180.0.0/16"),
        ("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
    ];
    let daemons = nodes
        .iter()
        .map(|n| Daemon::start(&underlay, n, &env))
        .collect();
    let c = Cluster {
        daemons,
        nodes,
        underlay,
    };
    c.wait_up();
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "CrossSubnet");

    let n1 = &c.nodes[0];
    let same = route_to(n1, &pods[1].1.ip);
    let cross = route_to(n1, &pods[2].1.ip);
    assert!(
        same.contains(&format!("via {} dev eth0", c.nodes[1].ip)),
        "same subnet should be routed directly: {same}\n{}",
        c.routes()
    );
    assert!(
        cross.contains("dev vxlan.calico"),
        "across subnets should go through vxlan.calico: {cross}\n{}",
        c.routes()
    );
    let count = 20;
    let before = tx_packets(n1, "vxlan.calico");
    pods[0].1.ns.exec(&[
        "ping",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.05",
        &pods[1].1.ip,
    ]);
    let after_same = tx_packets(n1, "vxlan.calico");
    pods[0].1.ns.exec(&[
        "ping",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.05",
        &pods[2].1.ip,
    ]);
    let after_cross = tx_packets(n1, "vxlan.calico");
    println!(
        "vxlan.calico tx on node1: +{} for {count} pings in the subnet, +{} for {count} across",
        after_same - before,
        after_cross - after_same
    );
    assert!(
        after_same - before < 5,
        "same-subnet traffic went through vxlan.calico"
    );
    assert!(
        after_cross - after_same >= count,
        "cross-subnet traffic did not go through vxlan.calico"
    );
}
