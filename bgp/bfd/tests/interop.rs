//! Calyx's BFD against BIRD 2 (`protocol bfd`) and FRR (`bfdd`) in network namespaces:
//! sessions come Up, a cut path (frames dropped on the bridge: no link event, no reset) is
//! detected by both ends, and 20 cuts leave exactly one session behind on each side. Prints
//! the detection times of both implementations on the same link in the same run.

mod common;

use std::time::{Duration, Instant};

use calyx_bfd::{Bfd, SessionStatus, State, Timers};
use calyx_tests::bgp_daemons::{Daemon, Lan};
use common::{bfd_in, ip, median_max, wait_state};
use tokio::sync::watch;

const CUTS: usize = 20;

/// What one peer implementation looks like to the test.
struct Peer {
    name: &'static str,
    daemon: Daemon,
    /// Whether the daemon shows its session with us Up.
    up: fn(&Daemon) -> bool,
    /// Whether it shows its session with us as anything but Up (Down/Init), not missing.
    down: fn(&Daemon) -> bool,
    /// How many sessions it shows.
    count: fn(&Daemon) -> usize,
    /// When it logged each Up -> Down of its session with us (seconds since midnight UTC,
    /// millisecond resolution), if its log says.
    downs_logged: Option<fn(&Daemon) -> Vec<f64>>,
}

/// Seconds since midnight UTC, now.
fn now_of_day() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_secs_f64() % 86_400.0
}

/// `HH:MM:SS.mmm` at the start of a log line, as seconds of the day.
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let mut it = t.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn bird_line(d: &Daemon) -> Option<String> {
    d.birdc(&["show", "bfd", "sessions"])
        .lines()
        .find(|l| l.starts_with("10.77.0.1 "))
        .map(str::to_string)
}

fn bird(lan: &Lan) -> Peer {
    let conf = r#"
log stderr all;
timeformat log "%T.%3f";
router id 10.77.0.2;
protocol device { scan time 10; }
protocol bfd {
    debug { events };
    interface "eth0" { interval 300 ms; multiplier 3; };
    neighbor 10.77.0.1 local 10.77.0.2;
}
"#;
    Peer {
        name: "BIRD",
        daemon: Daemon::bird(lan.node(2), conf),
        up: |d| bird_line(d).is_some_and(|l| l.split_whitespace().nth(2) == Some("Up")),
        down: |d| {
            bird_line(d)
                .is_some_and(|l| matches!(l.split_whitespace().nth(2), Some("Down") | Some("Init")))
        },
        count: |d| {
            d.birdc(&["show", "bfd", "sessions"])
                .lines()
                .filter(|l| l.starts_with("10.77.0."))
                .count()
        },
        // BIRD's log is in local time: the test machine runs UTC (checked by the caller).
        downs_logged: Some(|d| {
            d.log()
                .lines()
                .filter(|l| l.contains("Session to 10.77.0.1 changed state from Up to Down"))
                .filter_map(log_time)
                .collect()
        }),
    }
}

fn frr_status(d: &Daemon) -> Option<String> {
    let out = d.vtysh("show bfd peers");
    let mut in_peer = false;
    for l in out.lines() {
        let t = l.trim();
        if t.starts_with("peer ") {
            in_peer = t.starts_with("peer 10.77.0.1 ");
        }
        if in_peer {
            if let Some(v) = t.strip_prefix("Status:") {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

fn frr(lan: &Lan) -> Peer {
    let conf = r#"
log stdout informational
bfd
 peer 10.77.0.1 local-address 10.77.0.2
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
"#;
    Peer {
        name: "FRR",
        daemon: Daemon::frr_bfdd(lan.node(2), conf),
        up: |d| frr_status(d).as_deref() == Some("up"),
        down: |d| matches!(frr_status(d).as_deref(), Some("down") | Some("init")),
        count: |d| {
            d.vtysh("show bfd peers")
                .lines()
                .filter(|l| l.trim().starts_with("peer "))
                .count()
        },
        downs_logged: None,
    }
}

/// Poll a daemon's view until `check` holds; the time it took (including one CLI call).
fn poll_daemon(p: &Peer, check: fn(&Daemon) -> bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    calyx_tests::wait_until(limit, || check(&p.daemon)).then(|| start.elapsed())
}

async fn run(tag: &str, make: fn(&Lan) -> Peer) {
    let lan = Lan::new(tag, 2);
    let calyx: Bfd = bfd_in(lan.node(1));
    let peer = make(&lan);
    let mut w: watch::Receiver<SessionStatus> = calyx
        .add(ip(2), Some(ip(1)), Timers::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let up = wait_state(&mut w, State::Up, Duration::from_secs(20)).await;
    assert!(
        up.is_some(),
        "{}: Calyx side not Up: {:?}\n{}",
        peer.name,
        *w.borrow(),
        peer.daemon.log()
    );
    assert!(
        poll_daemon(&peer, peer.up, Duration::from_secs(20)).is_some(),
        "{}: its side not Up\n{}",
        peer.name,
        peer.daemon.log()
    );
    println!("{}: both Up after {:?}", peer.name, up.unwrap_or_default());

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut logged = Vec::new();
    // Log times are local: only use them when local time is UTC.
    let utc = calyx_tests::bgp_daemons::host("date", &["+%z"]).trim() == "+0000";
    for round in 0..CUTS {
        // Cut only in the steady state: both polls over, 300 ms x 3 both ways (right after
        // Up the remote system may still advertise its 1 s idle interval).
        let settled = tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| !s.snapshot.polling && s.snapshot.detect_time_us == 900_000),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        assert!(settled, "{}: round {round}: {:?}", peer.name, *w.borrow());
        let cut_at = Instant::now();
        let cut_of_day = now_of_day();
        lan.cut(2);
        // Our detection, measured exactly from the status feed, concurrently with polling
        // the peer's CLI on a blocking thread.
        let their = {
            let check = peer.down;
            let d = &peer.daemon;
            std::thread::scope(|s| {
                let h = s.spawn(|| {
                    calyx_tests::wait_until(Duration::from_secs(10), || check(d))
                        .then(|| cut_at.elapsed())
                });
                let ours_now =
                    futures_block(wait_state(&mut w, State::Down, Duration::from_secs(10)));
                (ours_now, h.join().ok().flatten())
            })
        };
        let (o, t) = their;
        let o = o.unwrap_or_else(|| {
            panic!(
                "{}: round {round}: Calyx not Down: {:?}",
                peer.name,
                *w.borrow()
            )
        });
        let t = t.unwrap_or_else(|| panic!("{}: round {round}: peer not Down", peer.name));
        assert!(
            o < Duration::from_secs(5),
            "{}: round {round}: {o:?}",
            peer.name
        );
        assert!(
            t < Duration::from_secs(5),
            "{}: round {round}: {t:?}",
            peer.name
        );
        ours.push(o);
        theirs.push(t);
        if let (Some(f), true) = (peer.downs_logged, utc) {
            if let Some(at) = f(&peer.daemon).get(round) {
                let mut d = at - cut_of_day;
                if d < -43_200.0 {
                    d += 86_400.0;
                }
                logged.push(Duration::from_secs_f64(d.max(0.0)));
            }
        }
        lan.heal();
        assert!(
            wait_state(&mut w, State::Up, Duration::from_secs(20))
                .await
                .is_some(),
            "{}: round {round}: Calyx not Up again: {:?}",
            peer.name,
            *w.borrow()
        );
        assert!(
            poll_daemon(&peer, peer.up, Duration::from_secs(20)).is_some(),
            "{}: round {round}: peer not Up again",
            peer.name
        );
    }
    let (om, ox) = median_max(&mut ours);
    let (tm, tx) = median_max(&mut theirs);
    println!(
        "{}: detection over {CUTS} cuts at 300 ms x 3: Calyx median {om:.0} ms max {ox:.0} ms; {} median {tm:.0} ms max {tx:.0} ms (polled through its CLI)",
        peer.name, peer.name
    );
    if logged.len() == CUTS {
        let (lm, lx) = median_max(&mut logged);
        println!(
            "{}: its own log: median {lm:.0} ms max {lx:.0} ms after the cut",
            peer.name
        );
    }
    // No stale state: one session on each side, counters that add up.
    let s = *w.borrow();
    // Every cut is a failure; a loaded machine may add a flap of its own, but the counters
    // must agree with the state (Up now: one more Up than failures).
    assert!(s.failures >= CUTS as u64, "{s:?}");
    assert_eq!(s.ups, s.failures + 1, "{s:?}");
    if s.failures > CUTS as u64 {
        println!(
            "{}: {} flaps beside the cuts",
            peer.name,
            s.failures - CUTS as u64
        );
    }
    assert_eq!(calyx.sessions().await.len(), 1);
    assert_eq!((peer.count)(&peer.daemon), 1, "{}", peer.name);
    assert_eq!(
        calyx
            .stats()
            .rx_queue_full
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// Await a future from a scoped thread's sibling: the test runtime is multi-threaded, so
/// block in place.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_bfd_interop_and_20_cuts() {
    if !calyx_tests::require_root("bird_bfd")
        || !calyx_tests::require_binaries("bird_bfd", &["bird", "birdc", "nft"])
    {
        return;
    }
    run("bfdbird", bird).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_bfdd_interop_and_20_cuts() {
    if !calyx_tests::require_root("frr_bfdd")
        || !calyx_tests::require_binaries("frr_bfdd", &["vtysh", "nft"])
        || !std::path::Path::new("/usr/lib/frr/bfdd").exists()
    {
        return;
    }
    run("bfdfrr", frr).await;
}
