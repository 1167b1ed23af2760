//! Network policy benchmark (run as root): `cargo bench -p calyx-node --bench policy`.
//!
//! One node with `CALYX_BENCH_WORKLOADS` local workloads (default 1,000) in 10 namespaces and
//! `CALYX_BENCH_POLICIES` NetworkPolicies (default 1,000; each selects the workloads of one
//! `app` label and allows TCP from another's), in a fresh network namespace. Printed, never
//! asserted:
//! * the calculation of the node's whole policy state (selectors, sets, tiers, rules);
//! * programming everything from nothing (one transaction);
//! * a label change: recalculation + the difference written (planned against what was last
//!   written, as the daemon's engine does), until acknowledged;
//! * a new WorkloadEndpoint: the same;
//! * a resync that finds nothing to do (read back the whole table and compare);
//! * resident memory of the view, the state and the worker;
//! * per-packet cost: TCP connections per second between two real workloads through the
//!   node, with no policy table, and with the whole table where the server's ingress has
//!   1 and then 200 policies applying.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use calyx_datastore::policy::parse_policy_documents;
use calyx_datastore::resources::WorkloadEndpoint;
use calyx_felix::rules::policy;
use calyx_felix::rules::Worker;
use calyx_felix::run_in_netns;
use calyx_node::policy::{calc, PolicyView};
use serde_json::json;

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("cxpol-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot create namespace {name} (root needed)");
        Ns(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    fn ip(&self, args: &str) {
        let mut v = vec!["-n", self.0.as_str()];
        v.extend(args.split_whitespace());
        let out = Command::new("ip").args(&v).output().expect("spawn ip");
        assert!(out.status.success(), "ip {args}: {out:?}");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn wep(ns: &str, i: usize, iface: &str, ip: &str, labels: serde_json::Value) -> WorkloadEndpoint {
    let v = json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("n1-k8s-pod{i}-eth0"), "namespace": ns, "labels": labels},
        "spec": {"orchestrator": "k8s", "node": "n1", "pod": format!("pod{i}"), "endpoint": "eth0",
                 "ipNetworks": [format!("{ip}/32")], "profiles": [format!("kns.{ns}")],
                 "interfaceName": iface}
    });
    WorkloadEndpoint::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn add(view: &mut PolicyView, yaml: &str) {
    for o in parse_policy_documents(yaml).unwrap().0 {
        view.objects.insert(o.key(), o);
    }
}

/// `n` workloads (the first two are the real client and server) and `p` policies.
fn view(n: usize, p: usize) -> PolicyView {
    let mut v = PolicyView::default();
    for i in 0..n {
        let ns = format!("ns{}", i % 10);
        let (iface, ip) = match i {
            0 => ("cxcli".to_string(), "10.0.1.2".to_string()),
            1 => ("calisrv".to_string(), "10.0.2.2".to_string()),
            _ => (
                format!("cali{i:011x}"),
                format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
            ),
        };
        let labels = json!({"app": format!("app{}", i % 100),
            "projectcalico.org/orchestrator": "k8s", "projectcalico.org/namespace": ns});
        let w = wep(&ns, i, &iface, &ip, labels);
        v.weps.insert(w.key(), w);
    }
    let mut yaml = String::new();
    for ns in 0..10 {
        yaml.push_str(&format!("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.ns{ns}}}\nspec: {{labelsToApply: {{pcns.team: t{ns}}}, ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}\n---\n"));
    }
    for i in 0..p {
        // Policy i lives in namespace i % 10, selects one app of that namespace and allows
        // TCP from another app of the same namespace (app k is in namespace k % 10).
        let ns = i % 10;
        let app = ((i / 10) * 10 + ns) % 100;
        let from = (app + 10) % 100;
        yaml.push_str(&format!("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: ns{ns}}}\nspec:\n  order: {i}\n  selector: app == 'app{app}'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: app == 'app{from}'}}\n    destination: {{ports: [{}]}}\n---\n", 8000 + i % 100));
    }
    // The server (pod1: ns1, app1) takes connections on 5001 from everyone.
    yaml.push_str("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: server}\nspec:\n  order: 5000\n  selector: app == 'app1'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [5001]}\n");
    add(&mut v, &yaml);
    v
}

/// Connections per second from the client namespace to the server for `secs`.
fn connect_rate(client: &Ns, secs: f64) -> f64 {
    let path = client.path();
    run_in_netns(&path, move || {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let mut s = TcpStream::connect_timeout(
                &"10.0.2.2:5001".parse().unwrap(),
                Duration::from_secs(2),
            )
            .expect("connect");
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
    .unwrap()
}

fn main() {
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("policy bench: the `nft` command is missing (package nftables); skipped");
        return;
    }
    let env = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, p) = (
        env("CALYX_BENCH_WORKLOADS", 1000).max(2),
        env("CALYX_BENCH_POLICIES", 1000),
    );
    let rss0 = rss_kib();
    let mut v = view(n, p);
    let t = Instant::now();
    let state = calc::policy_state(&v, "n1");
    let calc_time = t.elapsed();
    let rules = policy::ruleset(&state);
    let state = state.clone();
    let table = rules.tables.values().next().unwrap();
    let rule_count: usize = table.chains.values().map(|c| c.rules.len()).sum();
    println!(
        "{n} workloads, {p} policies: {} chains, {rule_count} rules, {} sets ({} elements), calculation {}",
        table.chains.len(),
        table.sets.len(),
        table.sets.values().map(|s| s.elements.len()).sum::<usize>(),
        ms(calc_time)
    );

    // The node and two real workloads: client (cxcli, a non-`cali` name so its own egress is
    // not policed) and server (calisrv).
    let node = Ns::new("node");
    let cli = Ns::new("cli");
    let srv = Ns::new("srv");
    node.ip(&format!(
        "link add cxcli type veth peer name eth0 netns {}",
        cli.0
    ));
    node.ip(&format!(
        "link add calisrv type veth peer name eth0 netns {}",
        srv.0
    ));
    node.ip("addr add 10.0.1.1/24 dev cxcli");
    node.ip("addr add 10.0.2.1/24 dev calisrv");
    node.ip("link set cxcli up");
    node.ip("link set calisrv up");
    cli.ip("addr add 10.0.1.2/24 dev eth0");
    cli.ip("link set eth0 up");
    cli.ip("link set lo up");
    cli.ip("route add default via 10.0.1.1");
    srv.ip("addr add 10.0.2.2/24 dev eth0");
    srv.ip("link set eth0 up");
    srv.ip("link set lo up");
    srv.ip("route add default via 10.0.2.1");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let srv_path = srv.path();
    let listener = run_in_netns(&srv_path, || TcpListener::bind("10.0.2.2:5001").unwrap()).unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"k");
        }
    });
    let no_policy = connect_rate(&cli, 2.0);

    let path = node.path();
    let mut w = run_in_netns(&path, Worker::open).unwrap().unwrap();
    w.set_desired(rules);
    let t = Instant::now();
    let built = w.sync().unwrap();
    println!(
        "program everything from nothing: {} ({built:?})",
        ms(t.elapsed())
    );
    let rss1 = rss_kib();
    let with_policy = connect_rate(&cli, 2.0);
    let server_policies = |s: &policy::PolicyState| -> usize {
        s.endpoints["calisrv"]
            .ingress
            .tiers
            .iter()
            .map(|t| t.policies.len())
            .sum()
    };
    let srv1 = server_policies(&state);

    // A label change: workload 2 moves from app2 to app3.
    let key = v
        .weps
        .keys()
        .find(|k| k.ends_with("/n1-k8s-pod2-eth0"))
        .unwrap()
        .clone();
    let t = Instant::now();
    v.weps
        .get_mut(&key)
        .unwrap()
        .metadata
        .labels
        .insert("app".into(), "app3".into());
    let s2 = calc::policy_state(&v, "n1");
    let calc2 = t.elapsed();
    w.set_desired(policy::ruleset(&s2));
    let stats = w.sync_fast().unwrap();
    println!(
        "label change to the kernel: {} (calculation {}; {stats:?})",
        ms(t.elapsed()),
        ms(calc2)
    );
    // A new WorkloadEndpoint.
    let t = Instant::now();
    let nw = wep(
        "ns3",
        n + 1,
        "calinew00000",
        "10.99.0.1",
        json!({"app": "app7", "projectcalico.org/orchestrator": "k8s", "projectcalico.org/namespace": "ns3"}),
    );
    v.weps.insert(nw.key(), nw);
    let s3 = calc::policy_state(&v, "n1");
    w.set_desired(policy::ruleset(&s3));
    let stats = w.sync_fast().unwrap();
    println!(
        "new WorkloadEndpoint to the kernel: {} ({stats:?})",
        ms(t.elapsed())
    );
    let t = Instant::now();
    let stats = w.sync().unwrap();
    println!(
        "resync that finds nothing to do: {} ({stats:?})",
        ms(t.elapsed())
    );

    // The server selected by 200 more policies (each with a rule that does not match it).
    let mut yaml = String::new();
    for i in 0..200 {
        yaml.push_str(&format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: extra{i}}}\nspec:\n  order: {i}\n  selector: app == 'app1'\n  ingress:\n  - action: Allow\n    protocol: UDP\n    destination: {{ports: [{}]}}\n---\n", 10000 + i));
    }
    add(&mut v, &yaml);
    let s4 = calc::policy_state(&v, "n1");
    let srv2 = server_policies(&s4);
    w.set_desired(policy::ruleset(&s4));
    w.sync_fast().unwrap();
    let with_200 = connect_rate(&cli, 2.0);
    println!(
        "TCP connections/s client -> server through the node: no policy table {no_policy:.0}, \
         whole table with {srv1} policies on the server {with_policy:.0}, with {srv2} policies on \
         the server {with_200:.0}"
    );
    println!(
        "resident memory: {} KiB with the view, state and programmed worker (process at start {} KiB)",
        rss1, rss0
    );
    w.remove_all().unwrap();
}
