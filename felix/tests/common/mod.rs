//! Test support: network namespaces that clean up after themselves, command helpers, bounded
//! waits, and a netlink dump of the routes of a namespace.
#![allow(dead_code, missing_docs)]

use std::process::Command;
use std::time::{Duration, Instant};

mod fixtures;
#[allow(unused_imports)] // not every test binary uses the fixtures
pub use fixtures::*;

use calyx_felix::route::{self, ParsedRoute};
use calyx_felix::{run_in_netns, Config, Reconciler};

/// Skips (returns true, printing why) when not root or `ip` is missing.
pub fn skip_without_root(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output();
    let root = matches!(&uid, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("SKIP {test}: needs root for network namespaces");
        return true;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP {test}: the `ip` command is missing");
        return true;
    }
    false
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(test: &str, role: &str) -> Netns {
        let name = format!("cxf-{test}-{role}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NS <args>`; panics on failure.
    pub fn ip(&self, args: &str) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        run(&v)
    }

    /// `ip -n NS <args>`; returns success.
    pub fn try_ip(&self, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "-n", self.name.as_str()];
        v.extend(args.split_whitespace());
        try_run(&v)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend(args.split_whitespace());
        try_run(&v)
    }

    pub fn routes_text(&self) -> String {
        let v4 = self.try_ip("-4 route show table all").unwrap_or_default();
        let v6 = self.try_ip("-6 route show table all").unwrap_or_default();
        format!("--- ip route show table all ({})\n{v4}{v6}", self.name)
    }

    /// A reconciler whose sockets live in this namespace.
    pub fn reconciler(&self, cfg: Config) -> Reconciler {
        run_in_netns(self.path(), move || Reconciler::new(cfg))
            .unwrap()
            .unwrap()
    }

    /// All IPv4 and IPv6 routes of all tables, read through a netlink dump.
    pub fn dump_routes(&self) -> Vec<ParsedRoute> {
        run_in_netns(self.path(), || {
            let mut nl = calyx_felix::nl::NlSocket::open().unwrap();
            let mut out = Vec::new();
            for v6 in [false, true] {
                nl.dump(
                    |buf, seq| route::encode_dump(buf, seq, v6, 0, 0),
                    |m| {
                        if let Some(p) = route::parse(m.payload) {
                            out.push(p);
                        }
                    },
                )
                .unwrap();
            }
            out
        })
        .unwrap()
    }

    /// TX packet counter of a device.
    pub fn tx_packets(&self, dev: &str) -> u64 {
        let out = self.ip(&format!("-s link show dev {dev}"));
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim_start().starts_with("TX:") {
                let next = lines.next().unwrap_or("");
                return next
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
            }
        }
        0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes started in it by the tests are bounded (ping -c -W) and already ended.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn try_run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn run(args: &[&str]) -> String {
    match try_run(args) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Polls `f` every 50 ms until it holds or `timeout` passes (bounded in count too).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    for _ in 0..(timeout.as_millis() / 50 + 1) {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Async variant, for use inside tokio tests.
pub async fn wait_until_async(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    for _ in 0..(timeout.as_millis() / 50 + 1) {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Whether this kernel can create IPIP devices (tried in a throwaway namespace).
pub fn ipip_supported(ns: &Netns) -> Result<(), String> {
    match ns.try_ip("link add cxftestipip type ipip remote 192.0.2.1") {
        Ok(_) => {
            let _ = ns.try_ip("link del cxftestipip");
            Ok(())
        }
        Err(e) => Err(e.trim().to_string()),
    }
}

impl Netns {
    /// Interface index of `dev`.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&format!("-o link show dev {dev}"));
        out.split(':').next().unwrap().trim().parse().unwrap()
    }
}

/// The route of `dst` in `table` with protocol `proto`, if any.
pub fn find<'a>(
    routes: &'a [ParsedRoute],
    table: u32,
    dst: &str,
    proto: u8,
) -> Option<&'a ParsedRoute> {
    let dst: ipnet::IpNet = dst.parse().unwrap();
    routes
        .iter()
        .find(|r| r.key.table == table && r.key.dst == dst && r.protocol == proto)
}
