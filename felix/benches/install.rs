//! Route install benchmark (run as root): `cargo bench -p calyx-felix --bench install`.
//!
//! For each size (default 10k, 100k, 1M; override with `FELIX_BENCH_SIZES=10000,100000`) it
//! creates a fresh network namespace with a veth underlay and measures, printing the figures:
//! * the reconciler installing N `/32 via <gw> dev eth0 proto 80` routes from nothing
//!   (compile + dump + diff + pipelined writes; its notification socket is subscribed, as in
//!   the daemon);
//! * a no-change resync of the same N routes (full dump + diff, nothing written);
//! * `ip -batch` installing the same routes in another fresh namespace;
//! * the resident memory the reconciler's state adds.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use calyx_felix::{run_in_netns, Config, DesiredState, Encap, Reconciler, RemoteHop, RemoteRoute};

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("cxf-bench-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        for cmd in [
            "link set lo up",
            "link add eth0 type veth peer name eth0p",
            "link set eth0p up",
            "addr add 192.168.0.1/24 dev eth0",
            "link set eth0 up",
        ] {
            ns.ip(cmd);
        }
        ns
    }
    fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", self.0.as_str()];
        v.extend(args.split_whitespace());
        sh(&v);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn prefix(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the calling thread (user + system, ns precision), from schedstat: unlike wall
/// time it does not count time spent waiting for a core on a busy machine.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list compatibility
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        eprintln!("SKIP install benchmark: needs root for network namespaces");
        return;
    }
    let sizes: Vec<usize> = std::env::var("FELIX_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let gw: IpAddr = "192.168.0.2".parse().unwrap();
    println!("felix install benchmark (routes: N x /32 via 192.168.0.2 dev eth0 proto 80)");
    for &n in &sizes {
        // --- reconciler
        let ns = Ns::new(&format!("r{n}"));
        let desired = DesiredState {
            node_ipv4: Some("192.168.0.1/24".parse().unwrap()),
            remote_routes: (0..n)
                .map(|i| RemoteRoute {
                    dst: ipnet::IpNet::new(IpAddr::V4(prefix(i)), 32).unwrap(),
                    encap: Encap::None,
                    hops: vec![RemoteHop::node(gw)],
                })
                .collect(),
            ..Default::default()
        };
        let rss0 = rss_kib();
        let mut rec = run_in_netns(format!("/run/netns/{}", ns.0), || {
            Reconciler::new(Config::default())
        })
        .unwrap()
        .unwrap();
        rec.set_desired(desired);
        let t = Instant::now();
        let c = thread_cpu();
        let stats = rec.reconcile_once();
        let install = t.elapsed();
        let install_cpu = thread_cpu() - c;
        let st = rec.status();
        assert_eq!(
            st.routes_programmed,
            n,
            "{stats:?} {:?}",
            st.failures.first()
        );
        let rss1 = rss_kib();
        // No-change resync, three times, best and worst.
        let mut resync = Vec::new();
        let mut resync_cpu = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let c = thread_cpu();
            let s = rec.reconcile_once();
            resync.push(t.elapsed());
            resync_cpu.push(thread_cpu() - c);
            assert_eq!(s.added + s.replaced + s.deleted + s.failed, 0, "{s:?}");
        }
        let rss2 = rss_kib();
        drop(rec);
        drop(ns);

        // --- ip -batch, same routes, fresh namespace
        let ns = Ns::new(&format!("b{n}"));
        let path = std::env::temp_dir().join(format!("cxf-bench-{}-{n}.batch", std::process::id()));
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for i in 0..n {
                writeln!(
                    f,
                    "route add {}/32 via 192.168.0.2 dev eth0 proto 80",
                    prefix(i)
                )
                .unwrap();
            }
        }
        let t = Instant::now();
        sh(&["ip", "-n", &ns.0, "-batch", path.to_str().unwrap()]);
        let batch = t.elapsed();
        let _ = std::fs::remove_file(&path);
        drop(ns);

        let best_cpu = resync_cpu.iter().min().copied().unwrap_or_default();
        println!(
            "N={n:>8}: CPU time (thread, excludes waiting for a core): install {:.3} s ({:.2} us/route), \
             no-change resync {:.1} ms ({:.0} ns/route)",
            secs(install_cpu),
            secs(install_cpu) * 1e6 / n as f64,
            secs(best_cpu) * 1e3,
            secs(best_cpu) * 1e9 / n as f64,
        );
        let best = resync.iter().min().copied().unwrap_or_default();
        let worst = resync.iter().max().copied().unwrap_or_default();
        println!(
            "N={n:>8}: reconciler install {:>7.3} s ({:>9.0} routes/s) | ip -batch {:>7.3} s ({:>9.0} routes/s) | \
             no-change resync {:>7.1} ms (worst {:.1} ms, {:.0} ns/route) | RSS +{} MiB after install, +{} MiB after resyncs",
            secs(install),
            n as f64 / secs(install),
            secs(batch),
            n as f64 / secs(batch),
            secs(best) * 1e3,
            secs(worst) * 1e3,
            secs(best) * 1e9 / n as f64,
            rss1.saturating_sub(rss0) / 1024,
            rss2.saturating_sub(rss0) / 1024,
        );
    }
}
