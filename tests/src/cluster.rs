//! A cluster on one machine: an "underlay" network namespace holding a bridge (one subnet) and
//! etcd, node namespaces joined to the bridge by veth pairs, and `calyx node run` daemons in
//! them. Everything is removed in `Drop`, also when a test fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::etcd::Etcd;
use crate::netns::Netns;
use crate::wait_until;

/// The underlay: a namespace with bridge `br0` on `<prefix>.1/24`, and etcd on that address.
pub struct Underlay {
    /// The namespace.
    pub ns: Netns,
    /// `10.X.Y` of the bridge subnet.
    pub prefix: String,
    /// etcd inside the namespace.
    pub etcd: Etcd,
    tag: String,
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
            etcd,
            tag: tag.to_string(),
        })
    }

    /// etcd's client URL as the nodes reach it.
    pub fn etcd_endpoint(&self) -> String {
        format!("http://{}.1:2379", self.prefix)
    }

    /// Adds node namespace number `index` with address `<prefix>.<10+index>/24` on `eth0`.
    pub fn add_node(&self, index: u8) -> NodeNs {
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
            .exec(&["ip", "link", "set", &host_end, "master", "br0"]);
        self.ns.exec(&["ip", "link", "set", &host_end, "up"]);
        let ip = format!("{}.{}", self.prefix, 10 + u32::from(index));
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
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
        vars.insert("CALYX_DATASTORE_WAIT", "20".into());
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
