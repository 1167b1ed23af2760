//! A real etcd server (Debian's `etcd-server`) for one test: its own data directory, free ports,
//! stopped and removed in `Drop`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// A running etcd. Dropping it kills the process and removes its data directory.
pub struct Etcd {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
    netns: Option<String>,
    name: String,
    /// `--initial-cluster` when this etcd is one member of several.
    initial_cluster: Option<String>,
}

impl Etcd {
    /// Starts etcd on free loopback ports. Returns `None` (after printing why) when the
    /// `etcd` binary is missing, so that the caller can skip.
    pub fn start(test: &str) -> Option<Etcd> {
        if !crate::require_binaries(test, &["etcd"]) {
            return None;
        }
        // Two free ports can still be taken by a parallel test between the check and etcd's
        // bind: try a few times.
        for _ in 0..5 {
            let client = format!("http://127.0.0.1:{}", free_port());
            let peer = format!("http://127.0.0.1:{}", free_port());
            let mut etcd = Etcd::new(client, peer, None);
            if etcd.launch() {
                return Some(etcd);
            }
        }
        panic!("etcd did not start after 5 attempts");
    }

    /// Starts etcd inside network namespace `netns`, listening on `ip:2379` (peer port 2380),
    /// for clusters whose nodes live in other namespaces.
    pub fn start_in_netns(test: &str, netns: &str, ip: &str) -> Option<Etcd> {
        if !crate::require_binaries(test, &["etcd"]) {
            return None;
        }
        let mut etcd = Etcd::new(
            format!("http://{ip}:2379"),
            format!("http://{ip}:2380"),
            Some(netns.to_string()),
        );
        assert!(etcd.launch(), "etcd did not start in netns {netns}");
        Some(etcd)
    }

    fn new(client_url: String, peer_url: String, netns: Option<String>) -> Etcd {
        Etcd {
            child: None,
            data_dir: tempfile::Builder::new()
                .prefix("calyx-etcd-")
                .tempdir_in(data_parent())
                .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}")),
            client_url,
            peer_url,
            netns,
            name: format!("calyx-test-{}", std::process::id()),
            initial_cluster: None,
        }
    }

    fn launch(&mut self) -> bool {
        self.spawn();
        self.wait_up(Duration::from_secs(20))
    }

    /// Starts the process without waiting for it to answer.
    fn spawn(&mut self) {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let log = std::fs::File::create(self.data_dir.path().join("etcd.log")).ok();
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(
                self.initial_cluster
                    .clone()
                    .unwrap_or_else(|| format!("{}={}", self.name, self.peer_url)),
            )
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from));
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot run etcd: {e}"),
        };
        self.child = Some(child);
    }

    /// Waits until the spawned process answers its health check; kills it and returns false
    /// when it exits or does not answer within `limit`.
    fn wait_up(&mut self, limit: Duration) -> bool {
        let health = format!("{}/health", self.client_url);
        let up = wait_until(limit, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return true; // exited: reported below
                }
            }
            self.probe(&health)
        });
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if !up || exited {
            self.kill();
            return false;
        }
        true
    }

    /// True when etcd answers its `/health` endpoint.
    fn probe(&self, url: &str) -> bool {
        if let Some(ns) = &self.netns {
            // Another namespace's address is not reachable from here: ask from inside.
            return Command::new("ip")
                .args(["netns", "exec", ns, "etcdctl", "--dial-timeout=1s"])
                .arg(format!("--endpoints={}", self.client_url))
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        }
        let Some(hostport) = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
        else {
            return false;
        };
        let Ok(addr) = hostport.parse::<std::net::SocketAddr>() else {
            return false;
        };
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The etcd log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL, like a crash); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.launch(), "etcd did not restart:\n{}", self.log());
    }

    /// Runs `etcdctl` against this server and returns its standard output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out = c
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.client_url)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several etcd members forming one cluster (`--initial-cluster` lists them all), each with its
/// own data directory. Members run on loopback ([`EtcdCluster::start`]) or each in a network
/// namespace of its own joined to a hub namespace by a veth pair
/// ([`EtcdCluster::start_partitionable`]), so that one can be cut off with `ip link set down`.
/// Dropping it kills every member, then deletes the namespaces, also when a test fails.
pub struct EtcdCluster {
    // Declared before `net`: members are killed before their namespaces go.
    members: Vec<Etcd>,
    /// Raft member ID of each member, read once the cluster formed (stable across restarts).
    ids: Vec<u64>,
    /// Members cut off by [`EtcdCluster::partition`]: not asked for status (each ask would
    /// wait out etcdctl's dial timeout).
    cut: std::sync::Mutex<Vec<bool>>,
    net: Option<ClusterNet>,
    /// The namespace every member runs in ([`EtcdCluster::start_in_netns`]): etcdctl runs
    /// there too.
    netns: Option<String>,
}

/// The namespaces of a partitionable cluster.
struct ClusterNet {
    /// Holds bridge `br0`; clients run in here to reach every member.
    hub: crate::netns::Netns,
    /// One per member (kept for `Drop`).
    _members: Vec<crate::netns::Netns>,
    /// The hub-side end of each member's veth pair: what [`EtcdCluster::partition`] downs.
    links: Vec<String>,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster on free loopback ports and waits until every member is
    /// healthy (a leader elected). `None` (after printing why) when `etcd`/`etcdctl` are
    /// missing.
    pub fn start(test: &str, n: usize) -> Option<EtcdCluster> {
        if !crate::require_binaries(test, &["etcd", "etcdctl"]) {
            return None;
        }
        // Free ports can be taken by a parallel test between the check and etcd's bind.
        for _ in 0..3 {
            let urls: Vec<(String, String)> = (0..n)
                .map(|_| {
                    (
                        format!("http://127.0.0.1:{}", free_port()),
                        format!("http://127.0.0.1:{}", free_port()),
                    )
                })
                .collect();
            let members = Self::members(urls);
            if let Some(cluster) = Self::form(members, None, None) {
                return Some(cluster);
            }
        }
        panic!("an etcd cluster of {n} did not form after 3 attempts");
    }

    /// Starts a cluster with one member per address of `ips`, all inside namespace `netns`
    /// (member `i` on `ips[i]`, ports 2379 and 2380), and waits until it formed. Clients run
    /// in `netns` too, or in namespaces routed to it.
    pub fn start_in_netns(test: &str, netns: &str, ips: &[String]) -> Option<EtcdCluster> {
        if !crate::require_binaries(test, &["etcd", "etcdctl"]) {
            return None;
        }
        let urls = ips
            .iter()
            .map(|ip| (format!("http://{ip}:2379"), format!("http://{ip}:2380")))
            .collect();
        let mut members = Self::members(urls);
        for m in &mut members {
            m.netns = Some(netns.to_string());
        }
        let cluster = Self::form(members, None, Some(netns.to_string()));
        assert!(
            cluster.is_some(),
            "the etcd cluster in {netns} did not form"
        );
        cluster
    }

    /// Starts an `n`-member cluster whose member `i` runs in namespace `<tag>-e<i>` on
    /// `<prefix>.<11+i>:2379`, joined by a veth pair to bridge `br0` (`<prefix>.1/24`) in hub
    /// namespace `<tag>-eh`. Clients must run in the hub ([`EtcdCluster::hub`]). `tag` must
    /// be short and unique to the test (it names namespaces and links). `None` (after printing
    /// why) without root or the etcd binaries.
    pub fn start_partitionable(
        test: &str,
        tag: &str,
        prefix: &str,
        n: usize,
    ) -> Option<EtcdCluster> {
        if !crate::require_root(test) || !crate::require_binaries(test, &["etcd", "etcdctl"]) {
            return None;
        }
        use crate::netns::{run, Netns};
        let hub = Netns::new(&format!("{tag}-eh"));
        hub.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.exec(&["ip", "addr", "add", &format!("{prefix}.1/24"), "dev", "br0"]);
        hub.exec(&["ip", "link", "set", "br0", "up"]);
        let mut namespaces = Vec::new();
        let mut links = Vec::new();
        let mut urls = Vec::new();
        for i in 0..n {
            let name = format!("{tag}-e{i}");
            let ns = Netns::new(&name);
            let link = format!("{tag}e{i}");
            // Created in the host namespace, both ends moved out at once: nothing stays here.
            run(
                "ip",
                &[
                    "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &name,
                ],
            );
            run("ip", &["link", "set", &link, "netns", hub.name()]);
            hub.exec(&["ip", "link", "set", &link, "master", "br0"]);
            hub.exec(&["ip", "link", "set", &link, "up"]);
            let ip = format!("{prefix}.{}", 11 + i);
            ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
            urls.push((format!("http://{ip}:2379"), format!("http://{ip}:2380")));
            namespaces.push(ns);
            links.push(link);
        }
        let mut members = Self::members(urls);
        for (m, ns) in members.iter_mut().zip(&namespaces) {
            m.netns = Some(ns.name().to_string());
        }
        let net = ClusterNet {
            hub,
            _members: namespaces,
            links,
        };
        let cluster = Self::form(members, Some(net), None);
        assert!(
            cluster.is_some(),
            "the partitionable etcd cluster did not form"
        );
        cluster
    }

    fn members(urls: Vec<(String, String)>) -> Vec<Etcd> {
        let tag = std::process::id();
        let names: Vec<String> = (0..urls.len())
            .map(|i| format!("calyx-test-{tag}-{i}"))
            .collect();
        let initial = names
            .iter()
            .zip(&urls)
            .map(|(name, (_, peer))| format!("{name}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        urls.into_iter()
            .zip(names)
            .map(|((client, peer), name)| {
                let mut m = Etcd::new(client, peer, None);
                m.name = name;
                m.initial_cluster = Some(initial.clone());
                m
            })
            .collect()
    }

    /// Spawns every member at once (a new cluster needs a quorum before anyone is healthy),
    /// then waits for all and reads their IDs.
    fn form(
        mut members: Vec<Etcd>,
        net: Option<ClusterNet>,
        netns: Option<String>,
    ) -> Option<EtcdCluster> {
        for m in &mut members {
            m.spawn();
        }
        let mut all_up = true;
        for m in &mut members {
            all_up &= m.wait_up(Duration::from_secs(30));
        }
        let n = members.len();
        let mut cluster = EtcdCluster {
            members,
            ids: Vec::new(),
            cut: std::sync::Mutex::new(vec![false; n]),
            net,
            netns,
        };
        if !all_up {
            eprintln!("the etcd cluster did not form; logs:\n{}", cluster.logs());
            return None; // Drop kills what runs.
        }
        let mut ids = Vec::new();
        for i in 0..cluster.members.len() {
            ids.push(cluster.status(i)?.0);
        }
        cluster.ids = ids;
        Some(cluster)
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never true for a started one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, comma-separated, as `ETCD_ENDPOINTS` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// The hub namespace of a partitionable cluster: where clients must run.
    pub fn hub(&self) -> Option<&crate::netns::Netns> {
        self.net.as_ref().map(|n| &n.hub)
    }

    /// `etcdctl` with `args` against member `i` (from the hub when there is one); `None` when
    /// it fails or does not answer within 3 s.
    fn etcdctl_at(&self, i: usize, args: &[&str]) -> Option<String> {
        let ns = self
            .net
            .as_ref()
            .map(|n| n.hub.name().to_string())
            .or_else(|| self.netns.clone());
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out = c
            .env("ETCDCTL_API", "3")
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .arg(format!("--endpoints={}", self.members[i].client_url))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Member `i`'s own ID and the leader it sees (0: none), from `endpoint status`.
    fn status(&self, i: usize) -> Option<(u64, u64)> {
        let out = self.etcdctl_at(i, &["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let status = v.get(0)?.get("Status")?;
        let id = status.get("header")?.get("member_id")?.as_u64()?;
        let leader = status.get("leader")?.as_u64()?;
        Some((id, leader))
    }

    /// The index of the leader that a majority of the members agree on right now, if any.
    pub fn leader(&self) -> Option<usize> {
        let quorum = self.members.len() / 2 + 1;
        let cut = self.cut.lock().map(|c| c.clone()).unwrap_or_default();
        let seen: Vec<u64> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !cut.get(i).copied().unwrap_or(false))
            .filter_map(|i| self.status(i).map(|(_, leader)| leader))
            .filter(|&leader| leader != 0)
            .collect();
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && !cut.get(i).copied().unwrap_or(false)
                && seen.iter().filter(|&&l| l == self.ids[i]).count() >= quorum
        })
    }

    /// Waits (at most `limit`) for a leader other than `not`; panics when none is elected.
    pub fn wait_leader(&self, not: Option<usize>, limit: Duration) -> usize {
        let mut found = None;
        let ok = wait_until(limit, || {
            found = self.leader().filter(|&l| Some(l) != not);
            found.is_some()
        });
        match found {
            Some(l) if ok => l,
            _ => panic!(
                "no etcd leader (other than {not:?}) within {limit:?}; logs:\n{}",
                self.logs()
            ),
        }
    }

    /// SIGKILLs member `i` (a crash); its data stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again with its data; it rejoins the cluster.
    pub fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.kill();
        m.spawn();
        assert!(
            m.wait_up(Duration::from_secs(30)),
            "etcd member {i} did not rejoin:\n{}",
            m.log()
        );
    }

    /// Cuts member `i` off the network (its hub-side link down): it keeps running, unreachable.
    /// Panics on a loopback cluster.
    pub fn partition(&self, i: usize) {
        self.set_link(i, "down");
    }

    /// Undoes [`EtcdCluster::partition`].
    pub fn heal(&self, i: usize) {
        self.set_link(i, "up");
    }

    fn set_link(&self, i: usize, state: &str) {
        let net = self
            .net
            .as_ref()
            .unwrap_or_else(|| panic!("partition needs EtcdCluster::start_partitionable"));
        net.hub
            .exec(&["ip", "link", "set", net.links[i].as_str(), state]);
        if let Ok(mut cut) = self.cut.lock() {
            cut[i] = state == "down";
        }
    }

    /// Waits (at most `limit`) until member `i` is healthy (it has a leader and answers).
    pub fn wait_healthy(&self, i: usize, limit: Duration) -> bool {
        wait_until(limit, || {
            self.etcdctl_at(i, &["endpoint", "health"]).is_some()
        })
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("--- member {i} ---\n{}", crate::cluster::tail(&m.log(), 20)))
            .collect()
    }
}

/// Where test etcds keep their data: in memory (`/dev/shm`) when the machine has it. etcd
/// fsyncs its WAL on every write; on a disk shared with parallel builds and tests one fsync can
/// take seconds, and a CNI plugin that waits on such a write under load is what made the suite
/// fail at random. tmpfs makes the fsync free; nothing here needs the data to survive a crash.
fn data_parent() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
