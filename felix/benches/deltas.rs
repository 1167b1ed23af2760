//! Incremental route benchmark (run as root): `cargo bench -p calyx-felix --bench deltas`.
//!
//! For each size (default 100k and 1M; override with `FELIX_BENCH_SIZES=100000`) it creates a
//! fresh network namespace with a veth underlay, runs a reconciler task (`Reconciler::run`,
//! notification socket read as in the daemon) and prints:
//! * install: N `/32 via <gw> dev eth0 proto 80` routes sent as `RouteUpdate::Upsert` batches
//!   of 10k through `update_routes` (which waits when the queue is full), timed from the
//!   first batch until the status reports all N programmed;
//! * one change with N installed: one `Upsert` with another gateway, timed until the status
//!   counts the write (several rounds: best, median, worst), and the engine's pass for it;
//! * for comparison, the same one change handed over the old way, as a whole `DesiredState`
//!   (`set_desired`): the reconciler compares all N routes to find it;
//! * removal of all N as `RouteUpdate::Remove` batches;
//! * full resyncs and notification overruns during the run, and the resident memory added.
//!
//! Figures only, no timed asserts.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use calyx_felix::{
    run_in_netns, Config, DesiredState, Encap, HostState, Reconciler, ReconcilerHandle, RemoteHop,
    RemoteRoute, RouteUpdate,
};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 10_000;

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
            let mut v = vec!["ip", "-n", ns.0.as_str()];
            v.extend(cmd.split_whitespace());
            sh(&v);
        }
        ns
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

fn route(i: usize, gw: IpAddr) -> RemoteRoute {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32);
    RemoteRoute {
        dst: ipnet::IpNet::new(IpAddr::V4(a), 32).unwrap(),
        encap: Encap::None,
        hops: vec![RemoteHop::node(gw)],
    }
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

/// Polls the status every 200 µs until `f` holds (bounded: 10 minutes).
async fn wait(h: &ReconcilerHandle, f: impl Fn(&calyx_felix::ReconcilerStatus) -> bool) {
    let start = Instant::now();
    while !f(&h.status()) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "timed out: {:#?}",
            h.status()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn one_size(n: usize) {
    let gw: IpAddr = "192.168.0.2".parse().unwrap();
    let gw2: IpAddr = "192.168.0.3".parse().unwrap();
    let ns = Ns::new(&format!("d{n}"));
    // Let the fresh link settle (operstate, IPv6 link-local): those events would start a full
    // pass in the middle of the figures.
    std::thread::sleep(Duration::from_secs(2));
    let rss0 = rss_kib();
    let rec = run_in_netns(format!("/run/netns/{}", ns.0), || {
        Reconciler::new(Config::default())
    })
    .unwrap()
    .unwrap();
    let h = rec.handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(rec.run(stop.clone()));
    let host = HostState {
        node_ipv4: Some("192.168.0.1/24".parse().unwrap()),
        ..Default::default()
    };
    h.set_host(host.clone());
    wait(&h, |s| s.resyncs >= 1).await;

    // Install as deltas.
    let t = Instant::now();
    for start in (0..n).step_by(BATCH) {
        let batch = (start..(start + BATCH).min(n))
            .map(|i| RouteUpdate::Upsert(route(i, gw)))
            .collect();
        h.update_routes(batch).await.unwrap();
    }
    let sent = t.elapsed();
    wait(&h, |s| s.routes_programmed == n).await;
    let install = t.elapsed();
    let st = h.status();
    let rss1 = rss_kib();
    println!(
        "N={n:>8}: install as deltas {:>8.3} s ({:>9.0} routes/s; producer done after {:.3} s) | \
         full resyncs so far {}, notification overruns {}",
        install.as_secs_f64(),
        n as f64 / install.as_secs_f64(),
        sent.as_secs_f64(),
        st.resyncs,
        st.notification_overruns,
    );

    // One change with N installed.
    // Each round moves route n/2 to the other gateway.
    let mut current = gw;
    let mut flip = || {
        current = if current == gw { gw2 } else { gw };
        current
    };
    let mut one = Vec::new();
    let mut pass = Vec::new();
    for _ in 0..7 {
        let before = h.status().route_writes;
        let g = flip();
        let t = Instant::now();
        h.update_routes(vec![RouteUpdate::Upsert(route(n / 2, g))])
            .await
            .unwrap();
        // Spin rather than sleep: the timer's 1 ms granularity would hide the figure.
        while h.status().route_writes == before {
            assert!(t.elapsed() < Duration::from_secs(60), "{:#?}", h.status());
            tokio::task::yield_now().await;
        }
        one.push(t.elapsed());
        pass.push(h.status().last_apply.duration);
    }
    one.sort();
    pass.sort();
    // The same change handed over as a whole desired state.
    let mut whole = Vec::new();
    for _ in 0..3 {
        let g = flip();
        let d = DesiredState::from_parts(
            host.clone(),
            (0..n)
                .map(|i| route(i, if i == n / 2 { g } else { gw }))
                .collect(),
        );
        let before = h.status().route_writes;
        let t = Instant::now();
        h.set_desired(d);
        wait(&h, |s| s.route_writes > before).await;
        whole.push(t.elapsed());
    }
    whole.sort();
    println!(
        "N={n:>8}: one change as a delta {:>8.3} ms (median {:.3} ms, worst {:.3} ms; engine pass \
         median {:.3} ms) | one change as a whole DesiredState {:>8.1} ms (worst {:.1} ms)",
        ms(one[0]),
        ms(one[one.len() / 2]),
        ms(one[one.len() - 1]),
        ms(pass[pass.len() / 2]),
        ms(whole[0]),
        ms(whole[whole.len() - 1]),
    );

    // Remove all as deltas.
    let t = Instant::now();
    for start in (0..n).step_by(BATCH) {
        let batch = (start..(start + BATCH).min(n))
            .map(|i| RouteUpdate::Remove(route(i, gw).dst))
            .collect();
        h.update_routes(batch).await.unwrap();
    }
    wait(&h, |s| s.routes_desired == 0 && s.routes_programmed == 0).await;
    let st = h.status();
    println!(
        "N={n:>8}: remove all as deltas {:>8.3} s | full resyncs {}, overruns {}, failed {} | \
         RSS +{} MiB with N installed",
        t.elapsed().as_secs_f64(),
        st.resyncs,
        st.notification_overruns,
        st.routes_failed,
        rss1.saturating_sub(rss0) / 1024,
    );
    stop.cancel();
    let _ = task.await;
    drop(ns);
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
        eprintln!("SKIP deltas benchmark: needs root for network namespaces");
        return;
    }
    // RUST_LOG=calyx_felix=debug shows why full passes run.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let sizes: Vec<usize> = std::env::var("FELIX_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "felix deltas benchmark (routes: N x /32 via 192.168.0.2 dev eth0 proto 80, batches of {BATCH})"
    );
    for n in sizes {
        rt.block_on(one_size(n));
    }
}
