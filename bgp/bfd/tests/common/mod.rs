//! Shared by the BFD integration tests: a Calyx BFD task started inside a namespace, and
//! waits on its sessions with bounded deadlines.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use calyx_bfd::{Bfd, BfdConfig, SessionStatus, State};
use calyx_tests::netns::Netns;
use tokio::sync::watch;

/// Start a BFD task whose sockets live in `ns` (the thread that binds them, and the BFD
/// thread it starts, are in the namespace).
pub fn bfd_in(ns: &Netns) -> Bfd {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        calyx_tests::netns::enter_netns(&name);
        Bfd::start(BfdConfig::default())
    })
    .join()
    .unwrap_or_else(|_| panic!("thread panicked"))
    .unwrap_or_else(|e| panic!("BFD start: {e}"))
}

/// Wait until the session is in `state`; returns how long it took, or None after `limit`.
pub async fn wait_state(
    w: &mut watch::Receiver<SessionStatus>,
    state: State,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let ok = tokio::time::timeout(limit, w.wait_for(|s| s.snapshot.state == state))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    ok.then(|| start.elapsed())
}

/// The IPv4 address `10.77.0.i` of a `Lan` node.
pub fn ip(i: usize) -> IpAddr {
    IpAddr::from([10, 77, 0, i as u8])
}

/// Median and maximum of durations, in ms.
pub fn median_max(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        ms(v[v.len() / 2])
    } else {
        (ms(v[v.len() / 2 - 1]) + ms(v[v.len() / 2])) / 2.0
    };
    (med, v.last().map(|d| ms(*d)).unwrap_or(0.0))
}
