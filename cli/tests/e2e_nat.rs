//! natOutgoing and workload forwarding end to end (issue 17): nodes run `calyx node run`, pods
//! come from `calyx-cni`, and an "outside" host on the underlay — with no route back to the
//! pod CIDR — records the source address of every TCP connection it accepts.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calyx_tests::cluster::{Cluster, NodeNs, Pod};
use calyx_tests::netns::Netns;
use calyx_tests::{wait_until, workspace_binary};

fn tag(test: &str) -> String {
    format!("cxn{}{}", test, std::process::id() % 10_000)
}

/// A TCP listener (python3, bounded to 5 minutes) in a namespace, printing each peer address.
struct Listener {
    child: Child,
    peers: Arc<Mutex<Vec<String>>>,
}

const LISTENER: &str = "import socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',int(sys.argv[1]))); s.listen(64); s.settimeout(300)\n\
print('listening',flush=True)\n\
while True: c,a=s.accept(); print(a[0],flush=True); c.sendall(b'ok'); c.close()\n";

impl Listener {
    fn start(ns: &Netns, port: u16) -> Listener {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "python3", "-c", LISTENER])
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let p = peers.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                p.lock().unwrap().push(line);
            }
        });
        let l = Listener { child, peers };
        let up = wait_until(Duration::from_secs(10), || {
            l.peers.lock().unwrap().iter().any(|x| x == "listening")
        });
        assert!(up, "listener did not start");
        l
    }

    /// Connects from `pod`; the address the listener saw, or `None` when it did not connect.
    fn reach(&self, pod: &Pod, ip: &str, port: u16) -> Option<String> {
        let before = self.peers.lock().unwrap().len();
        let script = format!("exec 3<>/dev/tcp/{ip}/{port} && head -c2 <&3");
        let ok = Command::new("ip")
            .args(["netns", "exec", pod.ns.name(), "timeout", "2", "bash", "-c"])
            .arg(&script)
            .output()
            .map(|o| o.status.success() && o.stdout == b"ok")
            .unwrap_or(false);
        if !ok {
            return None;
        }
        // The listener prints right after accepting; give its reader a moment.
        let mut seen = None;
        wait_until(Duration::from_secs(2), || {
            seen = self.peers.lock().unwrap().get(before).cloned();
            seen.is_some()
        });
        seen
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nft(node: &NodeNs, args: &[&str]) {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    node.ns.exec(&argv);
}

fn nat_outgoing(c: &Cluster, on: bool) {
    c.calyx_ok(&[
        "patch",
        "ippool",
        "default-ipv4-ippool",
        "-p",
        &format!(r#"{{"spec":{{"natOutgoing":{on}}}}}"#),
    ]);
}

fn scenario(test: &str, t: &str, prefix: &str, env: &[(&str, &str)]) {
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: the `nft` command is missing (package nftables)");
        return;
    }
    let Some(mut c) = Cluster::start(test, t, prefix, 2, env, |_| {}) else {
        return;
    };
    // The outside host: on the underlay's bridge, default route to the underlay, no route
    // to the pod CIDR (and no daemon).
    let outside = c.underlay.add_node(9);
    let pods = c.pods(t, 1);
    let (a, b) = (&pods[0].1, &pods[1].1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "pods up");
    let ext = Listener::start(&outside.ns, 7000);
    let on_b = Listener::start(&b.ns, 7001);

    // natOutgoing (the default pool's default): the outside sees node1's address.
    let reached = wait_until(Duration::from_secs(15), || {
        ext.reach(a, &outside.ip, 7000).is_some()
    });
    assert!(reached, "pod cannot reach the outside\n{}", c.logs());
    assert_eq!(
        ext.reach(a, &outside.ip, 7000).as_deref(),
        Some(c.nodes[0].ip.as_str())
    );
    // Between pools, never NAT: the pod on node2 sees the first pod's own address.
    assert_eq!(on_b.reach(a, &b.ip, 7001).as_deref(), Some(a.ip.as_str()));

    // natOutgoing off: outside access stops within seconds; on: it comes back. Timed from
    // the `calyx patch` returning to the set element changing in node1's kernel (polled with
    // `nft` every few ms), and to the outside's view changing (probes of up to 2 s).
    let masq = |c: &Cluster| {
        c.nodes[0]
            .ns
            .exec(&["nft", "list", "set", "inet", "calyx", "masq-ipam-pools-v4"])
            .contains("elements")
    };
    let mut figures = Vec::new();
    for on in [false, true] {
        let started = Instant::now();
        nat_outgoing(&c, on);
        let mut in_kernel = None;
        while started.elapsed() < Duration::from_secs(10) {
            if masq(&c) == on {
                in_kernel = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let in_kernel =
            in_kernel.unwrap_or_else(|| panic!("natOutgoing {on}: set unchanged\n{}", c.logs()));
        let seen = wait_until(Duration::from_secs(10), || {
            let r = ext.reach(a, &outside.ip, 7000);
            if on {
                r.as_deref() == Some(c.nodes[0].ip.as_str())
            } else {
                r.is_none()
            }
        });
        assert!(seen, "natOutgoing: {on} not in effect\n{}", c.logs());
        figures.push(format!(
            "natOutgoing {on}: in node1's kernel {:.0} ms after `calyx patch` returned, seen \
             from the outside within {:.1} s",
            in_kernel.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64()
        ));
    }
    println!("{test}: {}", figures.join("; "));

    // Calyx's table deleted by hand on node1: repaired.
    nft(&c.nodes[0], &["delete", "table", "inet", "calyx"]);
    let repaired = wait_until(Duration::from_secs(10), || {
        c.nodes[0]
            .ns
            .try_exec(&["nft", "list", "table", "inet", "calyx"])
    });
    assert!(repaired, "table not repaired\n{}", c.logs());
    assert!(ext.reach(a, &outside.ip, 7000).is_some());
    // ... and counted in the node's metrics.
    let metrics = || {
        c.nodes[0].ns.exec(&[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        ])
    };
    let counted = wait_until(Duration::from_secs(5), || {
        let m = metrics();
        m.contains("calyx_rules_in_sync 1") && !m.contains("calyx_rules_repairs_total 0\n")
    });
    assert!(counted, "{}", metrics());

    // A FORWARD policy DROP set with iptables-nft's table on both nodes (as Docker does):
    // pod traffic still flows, to the outside and between nodes.
    for n in &c.nodes {
        nft(n, &["add", "table", "ip", "filter"]);
        nft(
            n,
            &[
                "add", "chain", "ip", "filter", "FORWARD", "{", "type", "filter", "hook",
                "forward", "priority", "0", ";", "policy", "drop", ";", "}",
            ],
        );
    }
    let inserted = wait_until(Duration::from_secs(10), || {
        c.nodes.iter().all(|n| {
            n.ns.exec(&["nft", "list", "chain", "ip", "filter", "FORWARD"])
                .contains("iifname \"cali*\" accept")
        })
    });
    assert!(inserted, "accept rules not inserted\n{}", c.logs());
    assert_eq!(
        ext.reach(a, &outside.ip, 7000).as_deref(),
        Some(c.nodes[0].ip.as_str())
    );
    assert_eq!(on_b.reach(a, &b.ip, 7001).as_deref(), Some(a.ip.as_str()));
    c.all_pairs_ping(&pods, Duration::from_secs(10), "FORWARD policy drop");

    // FelixConfiguration natOutgoingAddress for node1 only (as calicoctl stores it): the
    // outside sees that address; deleted, the node's own again.
    let snat = format!("{prefix}.111");
    c.nodes[0]
        .ns
        .exec(&["ip", "addr", "add", &format!("{snat}/32"), "dev", "eth0"]);
    let key = "/calico/resources/v3/projectcalico.org/felixconfigurations/node.node1";
    let value = format!(
        r#"{{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{{"name":"node.node1"}},"spec":{{"natOutgoingAddress":"{snat}"}}}}"#
    );
    c.underlay.etcd().etcdctl(&["put", key, &value]);
    let snatted = wait_until(Duration::from_secs(10), || {
        ext.reach(a, &outside.ip, 7000).as_deref() == Some(snat.as_str())
    });
    assert!(snatted, "natOutgoingAddress not applied\n{}", c.logs());
    c.underlay.etcd().etcdctl(&["del", key]);
    let back = wait_until(Duration::from_secs(10), || {
        ext.reach(a, &outside.ip, 7000).as_deref() == Some(c.nodes[0].ip.as_str())
    });
    assert!(back, "natOutgoingAddress not removed\n{}", c.logs());

    if env.contains(&("CALICO_IPV4POOL_VXLAN", "Always")) {
        // FelixConfiguration vxlanVNI / vxlanPort: vxlan.calico is rebuilt on every node and
        // pods still reach each other.
        let key = "/calico/resources/v3/projectcalico.org/felixconfigurations/default";
        let value = r#"{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"vxlanVNI":5000,"vxlanPort":4790}}"#;
        let started = Instant::now();
        c.underlay.etcd().etcdctl(&["put", key, value]);
        let rebuilt = wait_until(Duration::from_secs(15), || {
            c.nodes.iter().all(|n| {
                // The device is briefly absent while felix recreates it.
                let d = Command::new("ip")
                    .args(["-n", n.ns.name(), "-d", "link", "show", "vxlan.calico"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                d.contains("id 5000") && d.contains("dstport 4790")
            })
        });
        assert!(rebuilt, "vxlan.calico not rebuilt\n{}", c.logs());
        let rebuilt_after = started.elapsed();
        c.all_pairs_ping(
            &pods,
            Duration::from_secs(30),
            "vxlanVNI 5000, vxlanPort 4790",
        );
        println!(
            "{test}: vxlanVNI/vxlanPort changed: devices rebuilt after {:.1} s, pods ping again \
             after {:.1} s",
            rebuilt_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(on_b.reach(a, &b.ip, 7001).as_deref(), Some(a.ip.as_str()));
    }

    // Uninstall on node1: the daemon stopped, `calyx node remove-rules` deletes Calyx's table
    // and its rules in iptables' FORWARD; the chain, its policy and the rest stay.
    drop((ext, on_b));
    c.daemons[0].stop();
    let node1 = &c.nodes[0];
    let out = Command::new("ip")
        .args(["netns", "exec", node1.ns.name()])
        .arg(workspace_binary("calyx"))
        .args(["node", "remove-rules"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("deleted table inet calyx"), "{text}");
    assert!(!node1
        .ns
        .try_exec(&["nft", "list", "table", "inet", "calyx"]));
    let fwd = node1
        .ns
        .exec(&["nft", "list", "chain", "ip", "filter", "FORWARD"]);
    assert!(
        !fwd.contains("calyx") && fwd.contains("policy drop"),
        "{fwd}"
    );
}

#[test]
fn nat_outgoing_bgp() {
    scenario(
        "nat_outgoing_bgp",
        &tag("b"),
        "10.91.1",
        &[
            ("CALICO_NETWORKING_BACKEND", "bird"),
            ("CALICO_IPV4POOL_CIDR", "10.191.0.0/16"),
        ],
    );
}

#[test]
fn nat_outgoing_vxlan() {
    scenario(
        "nat_outgoing_vxlan",
        &tag("v"),
        "10.92.1",
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.192.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ],
    );
}
