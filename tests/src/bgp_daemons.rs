//! BGP interop fixtures: a LAN of network namespaces joined by a bridge, and BIRD 2, FRR
//! (`bgpd -Z`), GoBGP and Calyx (`calyx-bgpd`) started inside them. Every process is killed
//! and every namespace deleted in `Drop`, also when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::netns::{run, Netns};

/// Namespaces `<prefix>-1 .. <prefix>-n` on one bridge (in namespace `<prefix>-h`), with
/// `10.77.0.i/24` and `fd00:77::i/64` on their `eth0`.
pub struct Lan {
    nodes: Vec<Netns>,
    hub: Netns,
}

impl Lan {
    /// Build the LAN. `tag` must be short and unique per test (`cxb-<tag>-<pid>`).
    pub fn new(tag: &str, n: usize) -> Lan {
        let base = format!("cxb-{tag}-{}", std::process::id());
        let hub = Netns::new(&format!("{base}-h"));
        hub.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.exec(&["ip", "link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = Netns::new(&format!("{base}-{i}"));
            let port = format!("v{i}");
            ns.exec(&[
                "ip",
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                hub.name(),
            ]);
            hub.exec(&["ip", "link", "set", &port, "master", "br0"]);
            hub.exec(&["ip", "link", "set", &port, "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                "eth0",
            ]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("fd00:77::{i}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
            nodes.push(ns);
        }
        Lan { nodes, hub }
    }

    /// Namespace of node `i` (1-based).
    pub fn node(&self, i: usize) -> &Netns {
        &self.nodes[i - 1]
    }

    /// IPv4 address of node `i`.
    pub fn ip4(i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// IPv6 address of node `i`.
    pub fn ip6(i: usize) -> String {
        format!("fd00:77::{i}")
    }

    /// Take node `i`'s link down (inside its namespace).
    pub fn link_down(&self, i: usize) {
        self.node(i).exec(&["ip", "link", "set", "eth0", "down"]);
    }

    /// Drop every frame to and from node `i` on the bridge (nftables in the hub): the link
    /// stays up on both ends and nothing sends a TCP reset, like a dead switch port or a
    /// frozen host. The kernel here has no `netem` qdisc, so this is the 100 % loss.
    pub fn cut(&self, i: usize) {
        let port = format!("v{i}");
        let _ = self
            .hub
            .try_exec(&["nft", "add", "table", "bridge", "calyx_cut"]);
        let _ = self.hub.try_exec(&[
            "nft",
            "add chain bridge calyx_cut cut { type filter hook forward priority 0; policy accept; }",
        ]);
        self.hub.exec(&[
            "nft",
            "add",
            "rule",
            "bridge",
            "calyx_cut",
            "cut",
            "iifname",
            &port,
            "drop",
        ]);
        self.hub.exec(&[
            "nft",
            "add",
            "rule",
            "bridge",
            "calyx_cut",
            "cut",
            "oifname",
            &port,
            "drop",
        ]);
    }

    /// Undo every [`Lan::cut`].
    pub fn heal(&self) {
        let _ = self
            .hub
            .try_exec(&["nft", "delete", "table", "bridge", "calyx_cut"]);
    }

    /// The hub namespace.
    pub fn hub(&self) -> &Netns {
        &self.hub
    }
}

/// A daemon process started in a namespace; killed in `Drop`.
pub struct Daemon {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Working directory (configs, sockets, logs).
    pub dir: tempfile::TempDir,
    ns: String,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bird,
    Frr,
    Gobgp(u16),
    Calyx,
}

fn workdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("cxb-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    // FRR drops privileges to frr:frr; BIRD and GoBGP run as root.
    let _ = Command::new("chmod").arg("777").arg(d.path()).output();
    d
}

fn spawn(ns: &Netns, argv: &[&str], dir: &Path, stdin: bool) -> Child {
    let log = std::fs::File::create(dir.join("out.log")).unwrap_or_else(|e| panic!("log: {e}"));
    let err = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(argv)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
}

impl Daemon {
    /// BIRD 2 with this configuration.
    pub fn bird(ns: &Netns, conf: &str) -> Daemon {
        let dir = workdir();
        let c = dir.path().join("bird.conf");
        std::fs::write(&c, conf).unwrap_or_else(|e| panic!("{e}"));
        let ctl = dir.path().join("bird.ctl");
        let pid = dir.path().join("bird.pid");
        let child = spawn(
            ns,
            &["bird", "-f", "-c", &s(&c), "-s", &s(&ctl), "-P", &s(&pid)],
            dir.path(),
            false,
        );
        Daemon {
            child: Some(child),
            stdin: None,
            dir,
            ns: ns.name().into(),
            kind: Kind::Bird,
        }
    }

    /// FRR `bgpd -Z` with this configuration.
    pub fn frr(ns: &Netns, conf: &str) -> Daemon {
        let dir = workdir();
        let c = dir.path().join("bgpd.conf");
        std::fs::write(&c, conf).unwrap_or_else(|e| panic!("{e}"));
        let _ = Command::new("chgrp").arg("frr").arg(dir.path()).output();
        let pid = dir.path().join("bgpd.pid");
        let d = s(dir.path());
        let child = spawn(
            ns,
            &[
                "/usr/lib/frr/bgpd",
                "--vty_socket",
                &d,
                "-P",
                "0",
                "-Z",
                "-f",
                &s(&c),
                "-i",
                &s(&pid),
            ],
            dir.path(),
            false,
        );
        Daemon {
            child: Some(child),
            stdin: None,
            dir,
            ns: ns.name().into(),
            kind: Kind::Frr,
        }
    }

    /// FRR's BFD daemon `bfdd` with this configuration, without zebra (single-hop peers given
    /// by address need none); `vtysh` reaches it like `bgpd`.
    pub fn frr_bfdd(ns: &Netns, conf: &str) -> Daemon {
        let dir = workdir();
        let c = dir.path().join("bfdd.conf");
        std::fs::write(&c, conf).unwrap_or_else(|e| panic!("{e}"));
        let _ = Command::new("chgrp").arg("frr").arg(dir.path()).output();
        let d = s(dir.path());
        let child = spawn(
            ns,
            &[
                "/usr/lib/frr/bfdd",
                "--vty_socket",
                &d,
                "-P",
                "0",
                "--bfdctl",
                &s(&dir.path().join("bfdd.sock")),
                "-z",
                &s(&dir.path().join("zserv.api")),
                "-f",
                &s(&c),
                "-i",
                &s(&dir.path().join("bfdd.pid")),
            ],
            dir.path(),
            false,
        );
        Daemon {
            child: Some(child),
            stdin: None,
            dir,
            ns: ns.name().into(),
            kind: Kind::Frr,
        }
    }

    /// GoBGP with this TOML configuration; its API listens on 127.0.0.1:`api_port` in `ns`.
    pub fn gobgp(ns: &Netns, conf: &str, api_port: u16) -> Daemon {
        let dir = workdir();
        let c = dir.path().join("gobgp.toml");
        std::fs::write(&c, conf).unwrap_or_else(|e| panic!("{e}"));
        let api = format!("127.0.0.1:{api_port}");
        let child = spawn(
            ns,
            &[
                "gobgpd",
                "-f",
                &s(&c),
                "-t",
                "toml",
                "--api-hosts",
                &api,
                "--pprof-disable",
            ],
            dir.path(),
            false,
        );
        Daemon {
            child: Some(child),
            stdin: None,
            dir,
            ns: ns.name().into(),
            kind: Kind::Gobgp(api_port),
        }
    }

    /// `calyx-bgpd` (path `bin`) with this JSON configuration; the status and routes files are
    /// added to it (`status.json`, `routes.txt` in the work directory).
    pub fn calyx(ns: &Netns, bin: &Path, conf: &str) -> Daemon {
        let dir = workdir();
        Self::calyx_in(ns, bin, conf, dir)
    }

    /// Like [`Daemon::calyx`], reusing a work directory (restart tests).
    pub fn calyx_in(ns: &Netns, bin: &Path, conf: &str, dir: tempfile::TempDir) -> Daemon {
        let c = dir.path().join("calyx.json");
        let status = s(&dir.path().join("status.json"));
        let routes = s(&dir.path().join("routes.txt"));
        let conf = conf.trim_end().trim_end_matches('}').to_string()
            + &format!(", \"status\": \"{status}\", \"routes\": \"{routes}\" }}");
        std::fs::write(&c, conf).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_file(dir.path().join("routes.txt"));
        let mut child = spawn(ns, &[&s(bin), &s(&c)], dir.path(), true);
        let stdin = child.stdin.take();
        Daemon {
            child: Some(child),
            stdin,
            dir,
            ns: ns.name().into(),
            kind: Kind::Calyx,
        }
    }

    /// Send a command line to `calyx-bgpd`.
    pub fn command(&self, line: &str) {
        if let Some(i) = self.stdin.as_ref() {
            let mut w: &ChildStdin = i;
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        }
    }

    /// `calyx-bgpd`: the status JSON.
    pub fn status(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("status.json")).unwrap_or_default()
    }

    /// The routes this daemon has selected, one line per prefix starting with the prefix.
    pub fn routes(&self) -> String {
        match self.kind {
            Kind::Calyx => {
                std::fs::read_to_string(self.dir.path().join("routes.txt")).unwrap_or_default()
            }
            Kind::Bird => self.birdc(&["show", "route", "all"]),
            Kind::Frr => self.vtysh("show bgp ipv4 unicast") + &self.vtysh("show bgp ipv6 unicast"),
            Kind::Gobgp(_) => {
                self.gobgp_cli(&["global", "rib", "-a", "ipv4"])
                    + &self.gobgp_cli(&["global", "rib", "-a", "ipv6"])
            }
        }
    }

    /// Whether `prefix` is among [`Daemon::routes`].
    pub fn has_route(&self, prefix: &str) -> bool {
        let r = self.routes();
        r.lines().any(|l| {
            l.split_whitespace().any(|w| {
                w == prefix || w.trim_start_matches(|c: char| "*>=is".contains(c)) == prefix
            })
        })
    }

    /// Run `birdc` against this BIRD.
    pub fn birdc(&self, args: &[&str]) -> String {
        let ctl = s(&self.dir.path().join("bird.ctl"));
        let mut a = vec!["birdc", "-s", &ctl];
        a.extend_from_slice(args);
        out(&self.ns, &a)
    }

    /// Run `vtysh -c` against this FRR.
    pub fn vtysh(&self, cmd: &str) -> String {
        let d = s(self.dir.path());
        out(&self.ns, &["vtysh", "--vty_socket", &d, "-c", cmd])
    }

    /// Run the `gobgp` client against this GoBGP.
    pub fn gobgp_cli(&self, args: &[&str]) -> String {
        let Kind::Gobgp(port) = self.kind else {
            return String::new();
        };
        let p = port.to_string();
        let mut a = vec!["gobgp", "-u", "127.0.0.1", "-p", &p];
        a.extend_from_slice(args);
        out(&self.ns, &a)
    }

    /// The daemon's combined output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }

    /// Stop the process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).output();
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill the process at once (SIGKILL): a crash, no NOTIFICATION.
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to exit by itself (after a `stop`/`restart` command).
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        self.stdin = None;
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        let ok = crate::wait_until(limit, || matches!(c.try_wait(), Ok(Some(_))));
        if ok {
            self.child = None;
        }
        ok
    }

    /// Give up the work directory (to restart in it); the process is killed.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, workdir())
    }

    /// Path of the work directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn out(ns: &str, argv: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output();
    match o {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => format!("cannot run {argv:?}: {e}"),
    }
}

/// Keep `run` reachable for callers that build extra links.
pub fn host(program: &str, args: &[&str]) -> String {
    run(program, args)
}
