//! Network policy end to end, with real traffic: two nodes running `calyx node run`, three
//! namespaces of three pods each (made by `calyx-cni`, spread over both nodes), the Profiles
//! calico-kube-controllers writes for namespaces, and a table of policy sets — Kubernetes
//! NetworkPolicies as the Kubernetes documentation writes them, Calico NetworkPolicies,
//! GlobalNetworkPolicies, a GlobalNetworkSet, a Tier with Pass, Log, ICMP, named ports. For
//! each set, applied live with `calyx apply` and deleted afterwards, every pod probes every
//! other pod on TCP 80, TCP 81, UDP 53 and ICMP, and the whole matrix must equal the expected
//! one (the test waits, bounded, for the daemons to program it; a mismatch at the deadline
//! prints both matrices and the nodes' rules).

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calyx_tests::cluster::{Cluster, Pod};
use calyx_tests::netns::Netns;

/// `[tcp 80, tcp 81, udp 53, icmp]`: answered or not.
type Probe = [bool; 4];
const ALL: Probe = [true; 4];
const NONE: Probe = [false; 4];

/// Namespace and the `team` label of its namespace.
const NAMESPACES: [(&str, &str); 3] = [("a", "red"), ("b", "blue"), ("c", "green")];

struct PodInfo {
    ns: &'static str,
    index: usize,
    pod: Pod,
    node: String,
    wep: String,
}

/// The probe servers of every pod; killed on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn script() -> String {
    format!(
        "{}/tests/support/policy_probe.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tag(mode: &str) -> String {
    format!("cxp{mode}{}", std::process::id() % 10_000)
}

/// Every pod's probes of every other pod, in pod order (`None` on the diagonal).
fn probe_all(pods: &[PodInfo]) -> Vec<Vec<Option<Probe>>> {
    let children: Vec<Child> = pods
        .iter()
        .map(|from| {
            let targets: Vec<&str> = pods
                .iter()
                .filter(|p| p.pod.ip != from.pod.ip)
                .map(|p| p.pod.ip.as_str())
                .collect();
            Command::new("ip")
                .args(["netns", "exec", from.pod.ns.name(), "python3"])
                .arg(script())
                .arg("probe")
                .args(&targets)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run the probe")
        })
        .collect();
    let mut out = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let text = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string();
        let mut row = vec![None; pods.len()];
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 5 {
                continue;
            }
            if let Some(j) = pods.iter().position(|p| p.pod.ip == f[0]) {
                let b = |s: &str| s == "1";
                row[j] = Some([b(f[1]), b(f[2]), b(f[3]), b(f[4])]);
            }
        }
        row[i] = None;
        out.push(row);
    }
    out
}

fn cell(p: Option<Probe>) -> String {
    match p {
        None => " -- ".into(),
        Some(p) => p.iter().map(|b| if *b { '1' } else { '.' }).collect(),
    }
}

fn render(pods: &[PodInfo], m: &[Vec<Option<Probe>>]) -> String {
    let mut s = String::from("from\\to ");
    for p in pods {
        let _ = write!(s, " {}{} ", p.ns, p.index);
    }
    s.push('\n');
    for (i, p) in pods.iter().enumerate() {
        let _ = write!(s, "{}{} ({})", p.ns, p.index, &p.node[4..]);
        for c in &m[i] {
            let _ = write!(s, "  {}", cell(*c));
        }
        s.push('\n');
    }
    s.push_str("cells: tcp80 tcp81 udp53 icmp, 1 = answered\n");
    s
}

/// Waits (bounded) until the probed matrix equals `expect`; returns the seconds it took.
fn check(
    c: &Cluster,
    pods: &[PodInfo],
    what: &str,
    expect: impl Fn(&PodInfo, &PodInfo) -> Probe,
) -> f64 {
    let want: Vec<Vec<Option<Probe>>> = pods
        .iter()
        .map(|from| {
            pods.iter()
                .map(|to| (from.pod.ip != to.pod.ip).then(|| expect(from, to)))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(40);
    loop {
        let got = probe_all(pods);
        if got == want {
            let secs = start.elapsed().as_secs_f64();
            eprintln!("policy set {what:?}: matrix as expected after {secs:.1} s");
            return secs;
        }
        if Instant::now() > deadline {
            let rules: String = c
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "---- {} ----\n{}",
                        n.name,
                        n.ns.exec(&["nft", "list", "table", "inet", "calyx-policy"])
                    )
                })
                .collect();
            panic!(
                "policy set {what:?}: the traffic matrix differs\nexpected:\n{}got:\n{}rules:\n{rules}\nlogs:\n{}",
                render(pods, &want),
                render(pods, &got),
                c.logs()
            );
        }
    }
}

fn delete(c: &Cluster, yaml: &str) {
    let out = c.underlay.calyx_stdin(&["delete", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "calyx delete: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn profiles() -> String {
    NAMESPACES
        .iter()
        .map(|(ns, team)| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.{ns}}}\n\
                 spec:\n  ingress: [{{action: Allow}}]\n  egress: [{{action: Allow}}]\n  \
                 labelsToApply: {{pcns.projectcalico.org/name: {ns}, pcns.team: {team}}}\n---\n"
            )
        })
        .collect()
}

/// The expected probe of a pair (from, to).
type Expect = Box<dyn Fn(&PodInfo, &PodInfo) -> Probe>;

/// One policy set of the table: its YAML and the expected probe of each pair.
struct Case {
    name: &'static str,
    yaml: String,
    expect: Expect,
}

fn cases(c_ips: &[String]) -> Vec<Case> {
    let c_nets = c_ips
        .iter()
        .map(|ip| format!("{ip}/32"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        Case {
            name: "deny all ingress (Kubernetes default-deny-ingress in a)",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny-ingress\n  namespace: a\nspec:\n  podSelector: {}\n  policyTypes:\n  - Ingress\n".into(),
            expect: Box::new(|_, to| if to.ns == "a" { NONE } else { ALL }),
        },
        Case {
            name: "allow from the same namespace (Kubernetes, a)",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: same-namespace\n  namespace: a\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n".into(),
            expect: Box::new(|from, to| match (from.ns, to.ns) {
                (_, "a") if from.ns != "a" => NONE,
                _ => ALL,
            }),
        },
        Case {
            name: "allow from a namespace selector (Kubernetes, a from team=blue)",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: from-blue\n  namespace: a\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          team: blue\n".into(),
            expect: Box::new(|from, to| match (from.ns, to.ns) {
                ("b", "a") => ALL,
                (_, "a") => NONE,
                _ => ALL,
            }),
        },
        Case {
            name: "allow one port only (Calico NetworkPolicy, a: TCP 80)",
            yaml: "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: port-80, namespace: a}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80]}\n".into(),
            expect: Box::new(|_, to| if to.ns == "a" { [true, false, false, false] } else { ALL }),
        },
        Case {
            name: "deny egress to a GlobalNetworkSet (b to c's addresses)",
            yaml: format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: blocked, labels: {{role: blocked}}}}\nspec: {{nets: [{c_nets}]}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: deny-to-blocked}}\nspec:\n  selector: projectcalico.org/namespace == 'b'\n  types: [Egress]\n  egress:\n  - action: Deny\n    destination: {{selector: role == 'blocked'}}\n  - action: Allow\n"),
            expect: Box::new(|from, to| if from.ns == "b" && to.ns == "c" { NONE } else { ALL }),
        },
        Case {
            name: "a tier with Pass above a namespaced policy",
            yaml: "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.guard-a}\nspec:\n  tier: security\n  selector: projectcalico.org/namespace == 'a'\n  ingress:\n  - action: Pass\n    source: {namespaceSelector: team == 'red'}\n  - action: Allow\n    protocol: ICMP\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: only-81, namespace: a}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [81]}\n".into(),
            expect: Box::new(|from, to| match (from.ns, to.ns) {
                ("a", "a") => [false, true, false, false],
                (_, "a") => [false, false, false, true],
                _ => ALL,
            }),
        },
        Case {
            name: "a Log rule, then deny UDP (GlobalNetworkPolicy on c)",
            yaml: "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: log-and-deny-udp}\nspec:\n  selector: projectcalico.org/namespace == 'c'\n  ingress:\n  - action: Log\n  - action: Deny\n    protocol: UDP\n  - action: Allow\n".into(),
            expect: Box::new(|_, to| if to.ns == "c" { [true, true, false, true] } else { ALL }),
        },
        Case {
            name: "ICMP echo only (Calico NetworkPolicy, b)",
            yaml: "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: icmp-only, namespace: b}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {type: 8}\n".into(),
            expect: Box::new(|_, to| if to.ns == "b" { [false, false, false, true] } else { ALL }),
        },
        Case {
            name: "a named port (c's pods name TCP 81 `http`)",
            yaml: "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: named-port, namespace: c}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [http]}\n".into(),
            expect: Box::new(|_, to| if to.ns == "c" { [false, true, false, false] } else { ALL }),
        },
        Case {
            name: "egress only to the same namespace (Kubernetes, a)",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: egress-same-namespace\n  namespace: a\nspec:\n  podSelector: {}\n  policyTypes:\n  - Egress\n  egress:\n  - to:\n    - podSelector: {}\n".into(),
            expect: Box::new(|from, to| if from.ns == "a" && to.ns != "a" { NONE } else { ALL }),
        },
    ]
}

/// A workload interface the node has no WorkloadEndpoint for gets nothing through; once its
/// endpoint is written, it does (the same wiring: the drop was the policy's).
fn unknown_interface_is_covered(c: &Cluster, t: &str, pods: &[PodInfo]) {
    let node = &c.nodes[0];
    let target = pods.iter().find(|p| p.node == node.name).unwrap();
    let fake = Netns::new(&format!("{t}fake"));
    let host_if = "calixfake0001";
    node.ns.exec(&[
        "ip",
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        fake.name(),
    ]);
    node.ns.exec(&["ip", "link", "set", host_if, "up"]);
    node.ns.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{host_if}.proxy_arp=1"),
    ]);
    node.ns
        .exec(&["ip", "route", "add", "10.99.0.2/32", "dev", host_if]);
    fake.exec(&["ip", "addr", "add", "10.99.0.2/32", "dev", "eth0"]);
    fake.exec(&["ip", "link", "set", "eth0", "up"]);
    fake.exec(&["ip", "route", "add", "169.254.1.1", "dev", "eth0"]);
    fake.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    let ping = || fake.try_exec(&["ping", "-c", "1", "-W", "1", &target.pod.ip]);
    for _ in 0..3 {
        assert!(
            !ping(),
            "traffic passed from an interface with no WorkloadEndpoint"
        );
    }
    let wep = serde_json::json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("{}-k8s-fake-eth0", node.name), "namespace": "b",
                     "labels": {"projectcalico.org/namespace": "b",
                                "projectcalico.org/orchestrator": "k8s"}},
        "spec": {"orchestrator": "k8s", "node": node.name, "pod": "fake", "endpoint": "eth0",
                 "ipNetworks": ["10.99.0.2/32"], "profiles": ["kns.b"],
                 "interfaceName": host_if}
    });
    let key = format!(
        "/calico/resources/v3/projectcalico.org/workloadendpoints/b/{}-k8s-fake-eth0",
        node.name
    );
    c.underlay.etcd().etcdctl(&["put", &key, &wep.to_string()]);
    assert!(
        calyx_tests::wait_until(Duration::from_secs(30), ping),
        "no traffic once the WorkloadEndpoint exists:\n{}",
        c.logs()
    );
    c.underlay.etcd().etcdctl(&["del", &key]);
}

/// Adds `spec.ports` (`http` = TCP 81) to a WorkloadEndpoint, as Calico's CNI plugin writes
/// the pod's container ports.
fn name_port(c: &Cluster, p: &PodInfo) {
    let key = format!(
        "/calico/resources/v3/projectcalico.org/workloadendpoints/{}/{}",
        p.ns, p.wep
    );
    let etcd = c.underlay.etcd();
    let text = etcd.etcdctl(&["get", "--print-value-only", &key]);
    let mut v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("WorkloadEndpoint {key}: {e}: {text}"));
    v["spec"]["ports"] = serde_json::json!([{"name": "http", "protocol": "TCP", "port": 81}]);
    etcd.etcdctl(&["put", &key, &v.to_string()]);
}

#[test]
fn policy_truth_table_in_bgp_mode() {
    truth_table(
        "policy_truth_table_in_bgp_mode",
        &tag("b"),
        "10.72.9",
        &[
            ("CALICO_NETWORKING_BACKEND", "bird"),
            ("CALICO_IPV4POOL_CIDR", "10.253.0.0/16"),
        ],
    );
}

#[test]
fn policy_truth_table_in_vxlan_mode() {
    truth_table(
        "policy_truth_table_in_vxlan_mode",
        &tag("v"),
        "10.72.10",
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.254.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ],
    );
}

/// The whole table on a 2-node cluster started with `env`.
fn truth_table(test: &str, t: &str, prefix: &str, env: &[(&str, &str)]) {
    if !calyx_tests::require_binaries(test, &["python3", "nft", "ping"]) {
        return;
    }
    let Some(c) = Cluster::start(test, t, prefix, 2, env, |u| u.apply(&profiles())) else {
        return;
    };
    let mut pods = Vec::new();
    for (k, (ns, _)) in NAMESPACES.iter().enumerate() {
        for index in 0..3 {
            let node = &c.nodes[(k * 3 + index) % 2];
            let name = format!("{t}{ns}{index}");
            let pod = Pod::add_in(&c.underlay, node, &name, ns);
            pods.push(PodInfo {
                ns,
                index,
                pod,
                node: node.name.clone(),
                wep: format!("{}-k8s-{name}-eth0", node.name),
            });
        }
    }
    let mut servers = Servers(Vec::new());
    for p in &pods {
        let mut child = Command::new("ip")
            .args(["netns", "exec", p.pod.ns.name(), "python3"])
            .arg(script())
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start a probe server");
        // Wait for "ready" so the first probe does not race the bind.
        if let Some(out) = child.stdout.take() {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            assert_eq!(line.trim(), "ready", "probe server in {}", p.pod.ns.name());
        }
        servers.0.push(child);
    }
    for p in pods.iter().filter(|p| p.ns == "c") {
        name_port(&c, p);
    }

    let mut figures = Vec::new();
    figures.push((
        "no policy".to_string(),
        check(&c, &pods, "no policy", |_, _| ALL),
    ));
    let c_ips: Vec<String> = pods
        .iter()
        .filter(|p| p.ns == "c")
        .map(|p| p.pod.ip.clone())
        .collect();
    for case in cases(&c_ips) {
        c.underlay.apply(&case.yaml);
        let secs = check(&c, &pods, case.name, &*case.expect);
        figures.push((case.name.to_string(), secs));
        delete(&c, &case.yaml);
    }
    check(&c, &pods, "every policy removed", |_, _| ALL);

    // Egress policy covers traffic to the pod's own node too (hook input): with a's egress
    // limited to its namespace, a0 no longer reaches its node's address, b0 still does.
    let node_ip = |p: &PodInfo| {
        c.nodes
            .iter()
            .find(|n| n.name == p.node)
            .map(|n| n.ip.clone())
            .unwrap()
    };
    let (a0, b0) = (&pods[0], &pods[3]);
    let egress = cases(&c_ips).swap_remove(9);
    assert!(egress.name.starts_with("egress only"), "{}", egress.name);
    let reaches = |p: &PodInfo| p.pod.ping(&node_ip(p));
    assert!(reaches(a0) && reaches(b0), "pods cannot reach their nodes");
    c.underlay.apply(&egress.yaml);
    let cut = calyx_tests::wait_until(Duration::from_secs(30), || !reaches(a0));
    assert!(
        cut && reaches(b0),
        "egress policy not applied to traffic to the node:\n{}",
        c.logs()
    );
    delete(&c, &egress.yaml);
    assert!(
        calyx_tests::wait_until(Duration::from_secs(30), || reaches(a0)),
        "a0 does not reach its node again"
    );

    // What applies to a workload, and the kinds in `calyx get`.
    let a0 = &pods[0];
    let yaml = cases(&c_ips).swap_remove(5).yaml;
    c.underlay.apply(&yaml);
    let show = c.calyx_ok(&["policy", "show", &a0.wep, "-n", "a"]);
    assert!(
        show.contains("tier security")
            && show.contains("GlobalNetworkPolicy security.guard-a")
            && show.contains("NetworkPolicy a/only-81")
            && show.contains("Profiles: kns.a"),
        "{show}"
    );
    let gnp = c.calyx_ok(&["get", "globalnetworkpolicies", "-o", "wide"]);
    assert!(
        gnp.starts_with("NAME") && gnp.contains("security.guard-a   security   "),
        "{gnp}"
    );
    let tiers = c.calyx_ok(&["get", "tiers"]);
    assert!(tiers.contains("security   100"), "{tiers}");

    // A pod that gets a label moves from denied to allowed.
    delete(&c, &yaml);
    let by_label = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: by-label, namespace: a}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    source: {selector: access == 'yes', namespaceSelector: all()}\n";
    c.underlay.apply(by_label);
    check(&c, &pods, "by label, nobody labelled", |_, to| {
        if to.ns == "a" {
            NONE
        } else {
            ALL
        }
    });
    let b0 = &pods[3];
    let start = Instant::now();
    c.calyx_ok(&["label", "wep", &b0.wep, "-n", "b", "access=yes"]);
    let mut moved = None;
    while start.elapsed() < Duration::from_secs(20) {
        let out = Command::new("ip")
            .args(["netns", "exec", b0.pod.ns.name(), "python3"])
            .arg(script())
            .args(["probe", &a0.pod.ip])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(" 1 1 1 1") {
            moved = Some(start.elapsed().as_secs_f64());
            break;
        }
    }
    let moved =
        moved.unwrap_or_else(|| panic!("b0 never got through after its label:\n{}", c.logs()));
    eprintln!("label change to allowed traffic: {moved:.2} s (including the probe's own time)");
    check(&c, &pods, "by label, b0 labelled", |from, to| {
        if to.ns == "a" && from.wep != b0.wep {
            NONE
        } else {
            ALL
        }
    });
    delete(&c, by_label);

    // Drift repair: the table deleted by hand on a node comes back by itself.
    let node = &c.nodes[0];
    node.ns
        .exec(&["nft", "delete", "table", "inet", "calyx-policy"]);
    let back = calyx_tests::wait_until(Duration::from_secs(30), || {
        node.ns
            .try_exec(&["nft", "list", "set", "inet", "calyx-policy", "workloads"])
    });
    assert!(back, "the policy table was not repaired:\n{}", c.logs());
    check(&c, &pods, "after the table was repaired", |_, _| ALL);

    unknown_interface_is_covered(&c, t, &pods);

    eprintln!("figures (seconds from apply to the whole matrix as expected, probes included):");
    for (name, secs) in figures {
        eprintln!("  {secs:5.1}  {name} ({test})");
    }
    drop(servers);
}
