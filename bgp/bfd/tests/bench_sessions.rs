//! Benchmark (ignored by `cargo test`; run by `bgp/bfd/bench/run.sh`): the CPU cost of 100
//! BFD sessions at 100 ms x 3, Calyx's BFD thread against FRR's `bfdd` at the other end of
//! the same 100 sessions. Prints figures, asserts no times.

mod common;

use std::time::{Duration, Instant};

use calyx_bfd::{State, Timers};
use calyx_tests::bgp_daemons::{Daemon, Lan};
use common::bfd_in;

const SESSIONS: usize = 100;
const WINDOW: Duration = Duration::from_secs(20);

/// utime + stime of one thread or process, in clock ticks, from its `stat` file.
fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The `stat` path of this process's thread named `calyx-bfd` (the one BFD task here).
fn bfd_thread_stat() -> Option<String> {
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let p = e.path();
        if std::fs::read_to_string(p.join("comm")).ok()?.trim() == "calyx-bfd" {
            return Some(p.join("stat").to_string_lossy().into_owned());
        }
    }
    None
}

fn ticks_per_second() -> f64 {
    calyx_tests::bgp_daemons::host("getconf", &["CLK_TCK"])
        .trim()
        .parse()
        .unwrap_or(100.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bgp/bfd/bench/run.sh"]
async fn cpu_of_100_sessions_at_100ms() {
    if !calyx_tests::require_root("bfd_cpu")
        || !calyx_tests::require_binaries("bfd_cpu", &["vtysh"])
        || !std::path::Path::new("/usr/lib/frr/bfdd").exists()
    {
        return;
    }
    let lan = Lan::new("bfdcpu", 2);
    // The far end: 100 addresses on node 2, one FRR session from each to node 1.
    let batch: String = (0..SESSIONS)
        .map(|i| format!("addr add 10.77.1.{}/16 dev eth0\n", i + 1))
        .collect();
    let bf = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(bf.path(), batch).unwrap_or_else(|e| panic!("{e}"));
    lan.node(2)
        .exec(&["ip", "-batch", &bf.path().to_string_lossy()]);
    // FRR keys single-hop sessions by peer address (a second local address to the same peer
    // is the same session): node 1 gets 100 addresses too, one per session.
    let batch: String = (0..SESSIONS)
        .map(|i| format!("addr add 10.77.255.{}/16 dev eth0\n", i + 1))
        .collect();
    let bf1 = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(bf1.path(), batch).unwrap_or_else(|e| panic!("{e}"));
    lan.node(1)
        .exec(&["ip", "-batch", &bf1.path().to_string_lossy()]);
    let mut conf = String::from("log stdout warnings\nbfd\n");
    for i in 0..SESSIONS {
        conf += &format!(
            " peer 10.77.255.{n} local-address 10.77.1.{n}\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n",
            n = i + 1
        );
    }
    conf += "!\n";
    let frr = Daemon::frr_bfdd(lan.node(2), &conf);
    let calyx = bfd_in(lan.node(1));
    let timers = Timers {
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        detect_mult: 3,
    };
    let mut watches = Vec::new();
    for i in 0..SESSIONS {
        let peer = std::net::IpAddr::from([10, 77, 1, (i + 1) as u8]);
        let w = calyx
            .add(
                peer,
                Some(std::net::IpAddr::from([10, 77, 255, (i + 1) as u8])),
                timers,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        watches.push(w);
    }
    let start = Instant::now();
    let all_up = loop {
        let up = watches
            .iter()
            .filter(|w| {
                let s = w.borrow();
                s.snapshot.state == State::Up && !s.snapshot.polling
            })
            .count();
        if up == SESSIONS {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) {
            println!(
                "only {up} of {SESSIONS} sessions Up\n{}\n{}",
                frr.log(),
                frr.vtysh("show bfd peers brief")
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(all_up, "sessions did not come up");
    println!(
        "{SESSIONS} sessions Up and settled after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let stat = bfd_thread_stat().unwrap_or_else(|| panic!("no calyx-bfd thread"));
    let frr_pid = std::fs::read_to_string(frr.dir.path().join("bfdd.pid")).unwrap_or_default();
    let frr_stat = format!("/proc/{}/stat", frr_pid.trim());
    let stats = calyx.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (c0, f0) = (cpu_ticks(&stat), cpu_ticks(&frr_stat));
    let (tx0, rx0, fail0) = (
        load(&stats.tx_packets),
        load(&stats.rx_packets),
        load(&stats.failures),
    );
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let secs = t0.elapsed().as_secs_f64();
    let (c1, f1) = (cpu_ticks(&stat), cpu_ticks(&frr_stat));
    let hz = ticks_per_second();
    let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2} %", (b - a) as f64 / hz / secs * 100.0),
        _ => "n/a".to_string(),
    };
    let tx = load(&stats.tx_packets) - tx0;
    let rx = load(&stats.rx_packets) - rx0;
    println!(
        "{SESSIONS} BFD sessions at 100 ms x 3 over {secs:.0} s: Calyx BFD thread {} of one core ({:.0} packets/s sent, {:.0} received); FRR bfdd at the other end {} of one core; failures during the window: {}",
        pct(c0, c1),
        tx as f64 / secs,
        rx as f64 / secs,
        pct(f0, f1),
        load(&stats.failures) - fail0
    );
}
