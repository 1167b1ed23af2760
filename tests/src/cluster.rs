//! A cluster on one machine: an "underlay" network namespace holding a bridge (one subnet) and
//! etcd, node namespaces joined to the bridge by veth pairs, and `calyx node run` daemons in
//! them. Everything is removed in `Drop`, also when a test fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::etcd::{Etcd, EtcdCluster};
use crate::netns::Netns;
use crate::{wait_until, workspace_binary};

/// The underlay: a namespace with bridge `br0` on `<prefix>.1/24`, and etcd on that address.
pub struct Underlay {
    /// The namespace.
    pub ns: Netns,
    /// `10.X.Y` of the bridge subnet.
    pub prefix: String,
    etcd: UnderlayEtcd,
    tag: String,
}

/// The underlay's datastore: one etcd on `<prefix>.1`, or a cluster of members on
/// `<prefix>.1`, `<prefix>.2`, ... (all in the underlay namespace, every client given them all).
enum UnderlayEtcd {
    Single(Etcd),
    Cluster(EtcdCluster),
}

impl Underlay {
    /// Builds the underlay for test `tag` (short, unique: it names namespaces and links).
    /// `None` when etcd is missing (the test skips).
    pub fn new(test: &str, tag: &str, prefix: &str) -> Option<Underlay> {
        if !crate::require_root(test) || !crate::require_binaries(test, &["etcd", "etcdctl"]) {
            return None;
        }
        let ns = Netns::new(&format!("{tag}-u"));
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.exec(&["ip", "addr", "add", &format!("{prefix}.1/24"), "dev", "br0"]);
        ns.exec(&["ip", "link", "set", "br0", "up"]);
        let etcd = Etcd::start_in_netns(test, ns.name(), &format!("{prefix}.1"))?;
        Some(Underlay {
            ns,
            prefix: prefix.to_string(),
            etcd: UnderlayEtcd::Single(etcd),
            tag: tag.to_string(),
        })
    }

    /// Like [`Underlay::new`] with an etcd cluster of `members` members on `<prefix>.1` to
    /// `<prefix>.<members>` (node addresses start at `<prefix>.11`).
    pub fn with_etcd_members(
        test: &str,
        tag: &str,
        prefix: &str,
        members: usize,
    ) -> Option<Underlay> {
        if !crate::require_root(test) || !crate::require_binaries(test, &["etcd", "etcdctl"]) {
            return None;
        }
        assert!((1..=9).contains(&members), "1 to 9 etcd members");
        let ns = Netns::new(&format!("{tag}-u"));
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        let ips: Vec<String> = (1..=members).map(|m| format!("{prefix}.{m}")).collect();
        for ip in &ips {
            ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        }
        ns.exec(&["ip", "link", "set", "br0", "up"]);
        let cluster = EtcdCluster::start_in_netns(test, ns.name(), &ips)?;
        Some(Underlay {
            ns,
            prefix: prefix.to_string(),
            etcd: UnderlayEtcd::Cluster(cluster),
            tag: tag.to_string(),
        })
    }

    /// The single etcd of an underlay made by [`Underlay::new`].
    pub fn etcd(&self) -> &Etcd {
        match &self.etcd {
            UnderlayEtcd::Single(e) => e,
            UnderlayEtcd::Cluster(_) => panic!("this underlay runs an etcd cluster"),
        }
    }

    /// Mutable [`Underlay::etcd`] (to kill and restart it).
    pub fn etcd_mut(&mut self) -> &mut Etcd {
        match &mut self.etcd {
            UnderlayEtcd::Single(e) => e,
            UnderlayEtcd::Cluster(_) => panic!("this underlay runs an etcd cluster"),
        }
    }

    /// The etcd cluster of an underlay made by [`Underlay::with_etcd_members`].
    pub fn etcd_cluster_mut(&mut self) -> &mut EtcdCluster {
        match &mut self.etcd {
            UnderlayEtcd::Cluster(c) => c,
            UnderlayEtcd::Single(_) => panic!("this underlay runs a single etcd"),
        }
    }

    /// Every IPAM block as stored (`/calico/ipam/v2/assignment/...`), read with etcdctl from
    /// the single etcd of [`Underlay::new`].
    pub fn ipam_blocks(&self) -> Vec<serde_json::Value> {
        self.etcd()
            .etcdctl(&[
                "get",
                "--prefix",
                "--print-value-only",
                "/calico/ipam/v2/assignment/",
            ])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// etcd's client URLs as the nodes reach them (comma-separated for a cluster).
    pub fn etcd_endpoint(&self) -> String {
        match &self.etcd {
            UnderlayEtcd::Single(_) => format!("http://{}.1:2379", self.prefix),
            UnderlayEtcd::Cluster(c) => c.endpoints(),
        }
    }

    /// Adds node namespace number `index` with address `<prefix>.<10+index>/24` on `eth0`.
    pub fn add_node(&self, index: u8) -> NodeNs {
        let prefix = self.prefix.clone();
        self.add_node_on(index, "br0", &prefix)
    }

    /// Adds a second subnet: bridge `bridge` in the underlay on `<prefix>.1/24`, the underlay
    /// routing between its bridges (a router between two L2 segments; etcd stays on `br0`).
    pub fn add_subnet(&self, bridge: &str, prefix: &str) {
        self.ns
            .exec(&["ip", "link", "add", bridge, "type", "bridge"]);
        self.ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{prefix}.1/24"),
            "dev",
            bridge,
        ]);
        self.ns.exec(&["ip", "link", "set", bridge, "up"]);
        self.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }

    /// Like [`Underlay::add_node`] on the subnet of `bridge` (`<prefix>.<10+index>/24`, default
    /// route via `<prefix>.1`); `index` is unique across subnets.
    pub fn add_node_on(&self, index: u8, bridge: &str, prefix: &str) -> NodeNs {
        let name = format!("{}-n{index}", self.tag);
        let ns = Netns::new(&name);
        let host_end = format!("{}h{index}", self.tag);
        crate::netns::run(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        crate::netns::run("ip", &["link", "set", &host_end, "netns", self.ns.name()]);
        self.ns
            .exec(&["ip", "link", "set", &host_end, "master", bridge]);
        self.ns.exec(&["ip", "link", "set", &host_end, "up"]);
        let ip = format!("{prefix}.{}", 10 + u32::from(index));
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        // Real nodes have a default route; proxy ARP for the pods' 169.254.1.1 gateway relies
        // on the host having a route to it through another interface.
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("{prefix}.1"),
        ]);
        NodeNs {
            ns,
            name: format!("node{index}"),
            ip,
        }
    }

    /// Runs the `calyx` client inside the underlay namespace against the cluster's etcd.
    pub fn calyx(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(crate::workspace_binary("calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .output()
            .unwrap_or_else(|e| panic!("cannot run calyx: {e}"))
    }

    /// `calyx apply -f -` of `yaml`; panics with calyx's output when it fails.
    pub fn apply(&self, yaml: &str) {
        let out = self.calyx_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "calyx apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Like [`Underlay::calyx`] with `input` on standard input (`calyx apply -f -`).
    pub fn calyx_stdin(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(crate::workspace_binary("calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run calyx: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("calyx: {e}"))
    }
}

/// A node's namespace.
pub struct NodeNs {
    /// The namespace.
    pub ns: Netns,
    /// The Kubernetes node name (`node<index>`).
    pub name: String,
    /// Its underlay address.
    pub ip: String,
}

/// A running `calyx node run` inside a node namespace; stopped (SIGTERM, then SIGKILL) on
/// `Drop`. Its log is kept for failure messages.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon in `node` with the cluster's etcd and `env` on top of sensible test
    /// defaults (its own state dir, health on the namespace's loopback).
    pub fn start(underlay: &Underlay, node: &NodeNs, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("calyx-node-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("ETCD_ENDPOINTS", underlay.etcd_endpoint());
        vars.insert("NODENAME", node.name.clone());
        vars.insert("IP", format!("{}/24", node.ip));
        vars.insert("CALYX_STATE_DIR", dir.path().display().to_string());
        vars.insert("CALYX_HEALTH_LISTEN", "127.0.0.1:9099".into());
        vars.insert("CALYX_LOG_LEVEL", "info".into());
        // calico-node's patience, the daemon's default: a loaded machine may keep a fresh etcd
        // from answering for a while, and a real node would wait too.
        vars.insert("CALYX_DATASTORE_WAIT", "60".into());
        for (k, v) in env {
            vars.insert(k, (*v).to_string());
        }
        let child = Command::new("ip")
            .args(["netns", "exec", node.ns.name()])
            .arg(crate::workspace_binary("calyx"))
            .args(["node", "run"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start calyx node run: {e}"));
        Daemon {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .output();
            let gone = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !gone {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// The daemon's process id while it runs (`ip netns exec` execs `calyx` in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon hard (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pod: a network namespace wired by `calyx-cni` inside a node's namespace, exactly as a
/// container runtime calls it (environment, network configuration on stdin, `CNI_PATH`).
/// `Drop` calls CNI DEL and removes the namespace.
pub struct Pod {
    /// The pod's network namespace.
    pub ns: Netns,
    /// The pod's (first) address.
    pub ip: String,
    /// Every address CNI ADD returned (both families for a dual-stack pod), without length.
    pub ips: Vec<String>,
    node_ns: String,
    container_id: String,
    conf: String,
    k8s_namespace: String,
    /// Set by [`Pod::kill`]: no DEL on drop.
    killed: bool,
}

/// A bounded background `ping -i 0.1`, counting replies.
pub struct Pinger {
    child: Child,
}

impl Pinger {
    /// Pings `to` from `from` every 100 ms for `seconds`.
    pub fn start(from: &Pod, to: &str, seconds: u32) -> Pinger {
        let child = Command::new("ip")
            .args(["netns", "exec", from.ns.name()])
            .args(["ping", "-q", "-i", "0.1", "-W", "1", "-w"])
            .arg(seconds.to_string())
            .arg(to)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ping: {e}"));
        Pinger { child }
    }

    /// (transmitted, received) once the deadline has passed.
    pub fn finish(self) -> (u64, u64) {
        let out = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("ping: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in {text}"));
        let nums: Vec<u64> = line
            .split(',')
            .filter_map(|part| part.split_whitespace().next()?.parse().ok())
            .collect();
        (nums[0], nums[1])
    }
}

/// The network configuration a runtime hands the plugin for `node`.
pub fn cni_conf(underlay: &Underlay, node: &NodeNs) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"{}","etcd_endpoints":"{}","mtu":1400,"ipam":{{"type":"calyx-ipam"}}}}"#,
        node.name,
        underlay.etcd_endpoint()
    )
}

/// Runs `calyx-cni` in `node_ns` with `command` for container `id` in pod namespace `pod_ns`.
pub fn run_cni(
    node_ns: &str,
    command: &str,
    id: &str,
    pod_ns: &str,
    conf: &str,
) -> std::process::Output {
    run_cni_in(node_ns, command, id, pod_ns, conf, "default")
}

/// [`run_cni`] for a pod of Kubernetes namespace `k8s_namespace` (`K8S_POD_NAMESPACE`).
pub fn run_cni_in(
    node_ns: &str,
    command: &str,
    id: &str,
    pod_ns: &str,
    conf: &str,
    k8s_namespace: &str,
) -> std::process::Output {
    use std::io::Write;
    let bin_dir = crate::workspace_binary("calyx-cni")
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns])
        .arg(crate::workspace_binary("calyx-cni"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir)
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE={k8s_namespace};K8S_POD_NAME={pod_ns}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run calyx-cni: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("calyx-cni: {e}"))
}

impl Pod {
    /// Creates pod `name` (a namespace name, unique) on `node` through CNI ADD.
    pub fn add(underlay: &Underlay, node: &NodeNs, name: &str) -> Pod {
        Pod::add_in(underlay, node, name, "default")
    }

    /// Creates pod `name` of Kubernetes namespace `k8s_namespace` on `node` through CNI ADD
    /// (its WorkloadEndpoint is `<node>-k8s-<name>-eth0` in that namespace).
    pub fn add_in(underlay: &Underlay, node: &NodeNs, name: &str, k8s_namespace: &str) -> Pod {
        Pod::add_with_conf(node, name, k8s_namespace, cni_conf(underlay, node))
    }

    /// Creates pod `name` on `node` through CNI ADD with network configuration `conf` (e.g.
    /// one with `assign_ipv6`); [`Pod::ips`] holds every address the plugin returned.
    pub fn add_with_conf(node: &NodeNs, name: &str, k8s_namespace: &str, conf: String) -> Pod {
        let ns = Netns::new(name);
        let id = format!("ctr-{name}");
        let out = run_cni_in(node.ns.name(), "ADD", &id, name, &conf, k8s_namespace);
        assert!(
            out.status.success(),
            "CNI ADD for {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("CNI result is not JSON: {e}"));
        let ips: Vec<String> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str()?.split('/').next().map(String::from))
            .collect();
        let ip = ips
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("no address in {result}"));
        Pod {
            ns,
            ip,
            ips,
            node_ns: node.ns.name().to_string(),
            container_id: id,
            conf,
            k8s_namespace: k8s_namespace.to_string(),
            killed: false,
        }
    }

    /// Pings `ip` from the pod; true when a reply came.
    pub fn ping(&self, ip: &str) -> bool {
        self.ns.try_exec(&["ping", "-c", "1", "-W", "2", ip])
    }

    /// The container ID the runtime gave CNI.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The pod dies as when its runtime crashes: its network namespace goes (and the veth
    /// pair with it, the host end included), and no CNI DEL is ever called.
    pub fn kill(mut self) {
        self.killed = true;
    }

    /// CNI DEL (idempotent).
    pub fn del(&self) -> std::process::Output {
        run_cni_in(
            &self.node_ns,
            "DEL",
            &self.container_id,
            self.ns.name(),
            &self.conf,
            &self.k8s_namespace,
        )
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let _ = self.del();
    }
}

/// Checks that the CNI plugins are built; prints why the test is skipped otherwise.
pub fn require_plugins(test: &str) -> bool {
    for bin in ["calyx-cni", "calyx-ipam"] {
        if !workspace_binary(bin).is_file() {
            eprintln!("SKIPPED {test}: {bin} is not built (cargo build --workspace --bins)");
            return false;
        }
    }
    true
}

/// `calyx node status -o json` of a node, for failure messages.
pub fn node_status(node: &NodeNs) -> String {
    Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(workspace_binary("calyx"))
        .args(["node", "status", "-o", "json"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// An underlay, its nodes and their daemons. Fields drop in order: daemons first.
pub struct Cluster {
    /// One daemon per node, in node order.
    pub daemons: Vec<Daemon>,
    /// The node namespaces.
    pub nodes: Vec<NodeNs>,
    /// The underlay with etcd.
    pub underlay: Underlay,
}

impl Cluster {
    /// `n` nodes on one subnet, each running a daemon with `env`; `before` runs once etcd is
    /// up and before any daemon starts (to apply resources). `None` when the test skips.
    pub fn start(
        test: &str,
        t: &str,
        prefix: &str,
        n: u8,
        env: &[(&str, &str)],
        before: impl FnOnce(&Underlay),
    ) -> Option<Cluster> {
        let underlay = Underlay::new(test, t, prefix)?;
        if !require_plugins(test) {
            return None;
        }
        before(&underlay);
        Some(Cluster::start_on(underlay, n, env))
    }

    /// Like [`Cluster::start`] on an underlay made by the caller (e.g.
    /// [`Underlay::with_etcd_members`]); the caller checks [`require_plugins`].
    pub fn start_on(underlay: Underlay, n: u8, env: &[(&str, &str)]) -> Cluster {
        let nodes: Vec<NodeNs> = (1..=n).map(|i| underlay.add_node(i)).collect();
        let daemons = nodes
            .iter()
            .map(|node| Daemon::start(&underlay, node, env))
            .collect();
        let c = Cluster {
            daemons,
            nodes,
            underlay,
        };
        c.wait_up();
        c
    }

    /// Waits (bounded) until every daemon's health endpoint accepts connections.
    pub fn wait_up(&self) {
        let up = wait_until(Duration::from_secs(90), || {
            self.nodes.iter().all(|n| {
                n.ns.try_exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9099"])
            })
        });
        assert!(up, "daemons not up:\n{}", self.logs());
    }

    /// The last lines of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .enumerate()
            .map(|(i, d)| format!("---- node{} ----\n{}", i + 1, tail(&d.log(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Routes and BGP status of every node, for failure messages.
    pub fn routes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "---- {} routes ----\n{}status: {}",
                    n.name,
                    n.ns.exec(&["ip", "route"]),
                    node_status(n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the `calyx` client in the underlay and returns its output; panics on failure.
    pub fn calyx_ok(&self, args: &[&str]) -> String {
        let out = self.underlay.calyx(args);
        assert!(
            out.status.success(),
            "calyx {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// One pod per node (`per_node` each), in node order.
    pub fn pods(&self, t: &str, per_node: usize) -> Vec<(usize, Pod)> {
        let mut pods = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for j in 0..per_node {
                pods.push((i, Pod::add(&self.underlay, node, &format!("{t}-p{i}{j}"))));
            }
        }
        pods
    }

    /// Every pod reaches every pod on another node within `limit` (per pair).
    pub fn all_pairs_ping(&self, pods: &[(usize, Pod)], limit: Duration, what: &str) {
        for (from_node, from) in pods {
            for (to_node, to) in pods {
                if from_node == to_node {
                    continue;
                }
                let reached = wait_until(limit, || from.ping(&to.ip));
                assert!(
                    reached,
                    "{what}: {} (node{}) cannot reach {} (node{}):\n{}\nlogs:\n{}",
                    from.ip,
                    from_node + 1,
                    to.ip,
                    to_node + 1,
                    self.routes(),
                    self.logs()
                );
            }
        }
    }
}

/// The last `lines` lines of `s`.
pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
