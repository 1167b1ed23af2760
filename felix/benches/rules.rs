//! nftables rules benchmark (run as root): `cargo bench -p calyx-felix --bench rules`.
//!
//! In a fresh network namespace, with `FELIX_BENCH_POOLS` pools (default 1,000; half of them
//! natOutgoing, none adjacent so each is its own range in the sets), it measures and prints:
//! * a pool change (one pool's natOutgoing toggled) until the kernel has committed it: through
//!   the blocking worker (read back + diff + one transaction, acknowledged), the same planned
//!   against the state last written (the engine's fast path), and through the running engine
//!   as the daemon uses it (handle -> engine task -> transaction acknowledged; then checked
//!   by an independent read-back);
//! * writing the whole table from nothing;
//! * a full resync that finds nothing to do (read back every chain, rule and set element and
//!   compare);
//! * the repair of the table deleted by hand (read back, rebuild in one transaction);
//! * the resident memory the worker and its desired ruleset add.
//!
//! Medians of several runs; figures are printed, never asserted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use calyx_felix::rules::calyx::{self, NatSettings};
use calyx_felix::rules::model::{Family, TableId};
use calyx_felix::rules::sock::NfSocket;
use calyx_felix::rules::{sync, RulesConfig, RulesEngine, Worker};
use calyx_felix::run_in_netns;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("cxf-bench-{tag}-{}", std::process::id());
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
    fn nft(&self, args: &str) {
        let mut v = vec!["netns", "exec", self.0.as_str(), "nft"];
        v.extend(args.split_whitespace());
        let out = Command::new("ip").args(&v).output().expect("spawn nft");
        assert!(out.status.success(), "nft {args}: {out:?}");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn settings(pools: usize, toggled: bool) -> NatSettings {
    let pools = (0..pools)
        .map(|i| {
            // 10.a.b.0/24 with b even: no two pools adjacent.
            let net: IpNet = format!("10.{}.{}.0/24", i / 128, (i % 128) * 2)
                .parse()
                .unwrap();
            let nat = if i == 0 { toggled } else { i % 2 == 0 };
            (net, nat)
        })
        .collect();
    NatSettings {
        pools,
        accept_in_iptables_forward: true,
        ..NatSettings::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Whether pool 0 (10.0.0.0/24) is in the kernel's masquerade set, read back independently.
fn pool0_masqueraded(sock: &mut NfSocket) -> bool {
    let t = sync::read_table(sock, &TableId::new(Family::Inet, calyx::TABLE)).unwrap();
    t.and_then(|t| {
        t.sets
            .get("masq-ipam-pools-v4")
            .map(|(_, r)| r.iter().any(|r| r.start == 0x0a00_0000))
    })
    .unwrap_or(false)
}

/// `VmRSS` of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("rules bench: the `nft` command is missing (package nftables); skipped");
        return;
    }
    let n: usize = std::env::var("FELIX_BENCH_POOLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runs = 7;
    let ns = Ns::new("rules");
    let rss_before = rss_kib();
    let mut worker = run_in_netns(ns.path(), Worker::open).unwrap().unwrap();

    // Write from nothing (the table deleted between runs).
    let mut build = Vec::new();
    for _ in 0..runs {
        worker.set_desired(calyx::ruleset(&settings(n, true)));
        let t = Instant::now();
        worker.sync().unwrap();
        build.push(t.elapsed());
        ns.nft("delete table inet calyx");
    }
    worker.sync().unwrap();
    let rss_after = rss_kib();

    // No-op resync.
    let mut noop = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let stats = worker.sync().unwrap();
        noop.push(t.elapsed());
        assert!(stats.is_empty(), "{stats:?}");
    }

    // One pool toggled, through the worker.
    let mut toggle = Vec::new();
    for i in 0..runs * 2 {
        worker.set_desired(calyx::ruleset(&settings(n, i % 2 == 1)));
        let t = Instant::now();
        let stats = worker.sync().unwrap();
        toggle.push(t.elapsed());
        assert_eq!(stats.ranges_changed, 1, "{stats:?}");
    }

    // The same through the fast path (planned against what was last written, no read-back),
    // as the engine does for a change of the desired rules when no one else changed the kernel.
    let mut toggle_fast = Vec::new();
    for i in 0..runs * 2 {
        worker.set_desired(calyx::ruleset(&settings(n, i % 2 == 1)));
        let t = Instant::now();
        let stats = worker.sync_fast().unwrap();
        toggle_fast.push(t.elapsed());
        assert_eq!(stats.ranges_changed, 1, "{stats:?}");
    }

    // Repair after a hand deletion.
    let mut repair = Vec::new();
    for _ in 0..runs {
        ns.nft("delete table inet calyx");
        let t = Instant::now();
        worker.sync().unwrap();
        repair.push(t.elapsed());
    }
    drop(worker);

    // Through the running engine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = run_in_netns(ns.path(), || RulesEngine::new(RulesConfig::default()))
        .unwrap()
        .unwrap();
    let mut probe = run_in_netns(ns.path(), NfSocket::open).unwrap().unwrap();
    let handle = engine.handle();
    let token = CancellationToken::new();
    let task = rt.spawn(engine.run(token.clone()));
    handle.set_desired(calyx::ruleset(&settings(n, true)));
    let mut live = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pool0_masqueraded(&mut probe) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..runs * 2 {
        let on = i % 2 == 1;
        // Let the engine settle (a check after the previous change's notifications).
        std::thread::sleep(Duration::from_millis(100));
        let rules = calyx::ruleset(&settings(n, on));
        let before = handle.status().transactions;
        let t = Instant::now();
        handle.set_desired(rules);
        // The engine counts a transaction once the kernel acknowledged it.
        while handle.status().transactions == before {
            if t.elapsed() > Duration::from_secs(10) {
                panic!("pool change not applied: {:?}", handle.status());
            }
            std::hint::spin_loop();
        }
        live.push(t.elapsed());
        assert_eq!(pool0_masqueraded(&mut probe), on, "{:?}", handle.status());
    }
    token.cancel();
    let _ = rt.block_on(task);

    println!(
        "rules bench: {n} pools ({} natOutgoing), medians of {runs}+ runs",
        n / 2
    );
    println!(
        "  write the whole table from nothing:          {}",
        ms(median(build))
    );
    println!(
        "  full resync, nothing to do (read back all):   {}",
        ms(median(noop))
    );
    println!(
        "  repair after `nft delete table inet calyx`:   {}",
        ms(median(repair))
    );
    println!(
        "  one pool's natOutgoing toggled (worker):      {}",
        ms(median(toggle))
    );
    println!(
        "  the same without read-back (fast path):       {}",
        ms(median(toggle_fast))
    );
    println!(
        "  one pool toggled, handle -> kernel acknowledged (running engine): {}",
        ms(median(live))
    );
    println!(
        "  resident memory of the worker with the ruleset: {} KiB (socket buffers are kernel memory)",
        rss_after.saturating_sub(rss_before)
    );
}
