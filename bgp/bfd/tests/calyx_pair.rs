//! Two Calyx BFD tasks in two network namespaces on one bridge: the handshake, failure
//! detection when the path is cut without any link event, recovery, GTSM and malformed
//! packets, and removal (AdminDown, which is not a failure).

mod common;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calyx_bfd::{ControlPacket, State, Timers};
use calyx_tests::bgp_daemons::Lan;
use common::{bfd_in, ip, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calyx_sessions_come_up_detect_a_cut_and_recover() {
    if !calyx_tests::require_root("two_calyx_sessions")
        || !calyx_tests::require_binaries("two_calyx_sessions", &["nft"])
    {
        return;
    }
    let lan = Lan::new("bfdp", 2);
    let a = bfd_in(lan.node(1));
    let b = bfd_in(lan.node(2));
    let t = Timers::default();
    let mut wa = a
        .add(ip(2), Some(ip(1)), t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wb = b
        .add(ip(1), Some(ip(2)), t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let up = wait_state(&mut wa, State::Up, Duration::from_secs(15)).await;
    assert!(up.is_some(), "a: {:?}", *wa.borrow());
    assert!(wait_state(&mut wb, State::Up, Duration::from_secs(15))
        .await
        .is_some());
    println!("calyx-calyx: Up after {:?}", up.unwrap_or_default());
    // After the poll sequence, both run the configured 300 ms x 3.
    let settled = tokio::time::timeout(
        Duration::from_secs(10),
        wa.wait_for(|s| !s.snapshot.polling && s.snapshot.tx_interval_us == 300_000),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    assert!(settled, "{:?}", *wa.borrow());
    assert_eq!(wa.borrow().snapshot.detect_time_us, 900_000);

    // Cut: nothing arrives, no link event, no reset.
    for round in 0..3 {
        let failures = wa.borrow().failures;
        lan.cut(2);
        let down = wait_state(&mut wa, State::Down, Duration::from_secs(5)).await;
        assert!(
            down.is_some(),
            "round {round}: not Down: {:?}",
            *wa.borrow()
        );
        println!(
            "calyx-calyx: round {round}: Down {:?} after the cut",
            down.unwrap_or_default()
        );
        assert!(wa.borrow().failures > failures);
        assert_eq!(
            wa.borrow().snapshot.diag,
            calyx_bfd::Diag::ControlDetectionTimeExpired
        );
        lan.heal();
        assert!(
            wait_state(&mut wa, State::Up, Duration::from_secs(15))
                .await
                .is_some(),
            "round {round}: not Up again: {:?}",
            *wa.borrow()
        );
    }

    // GTSM: a valid packet with TTL 64 is dropped and counted; garbage is counted.
    let bad_ttl = a.stats().rx_bad_ttl.load(Ordering::Relaxed);
    let invalid = a.stats().rx_invalid.load(Ordering::Relaxed);
    let name = lan.node(2).name().to_string();
    let pkt = ControlPacket {
        state: State::AdminDown,
        my_discr: 77,
        ..ControlPacket::decode(&[
            0x20, 0x40, 3, 24, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    };
    std::thread::spawn(move || {
        calyx_tests::netns::enter_netns(&name);
        let s = UdpSocket::bind("10.77.0.2:50000").unwrap_or_else(|e| panic!("{e}"));
        s.set_ttl(64).unwrap_or_else(|e| panic!("{e}"));
        s.send_to(&pkt.encode(), "10.77.0.1:3784")
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_ttl(255).unwrap_or_else(|e| panic!("{e}"));
        s.send_to(&[0xffu8; 30], "10.77.0.1:3784")
            .unwrap_or_else(|e| panic!("{e}"));
        s.send_to(&[0x20u8, 0x40, 0, 24], "10.77.0.1:3784")
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .join()
    .unwrap_or_else(|_| panic!("sender panicked"));
    assert!(calyx_tests::wait_until(Duration::from_secs(5), || {
        a.stats().rx_bad_ttl.load(Ordering::Relaxed) > bad_ttl
            && a.stats().rx_invalid.load(Ordering::Relaxed) >= invalid + 2
    }));
    // The AdminDown with TTL 64 did nothing.
    assert_eq!(wa.borrow().snapshot.state, State::Up);

    // Removing the session on b sends AdminDown: a goes Down, but it is not a failure.
    let failures = wa.borrow().failures;
    b.remove(ip(1));
    assert!(wait_state(&mut wa, State::Down, Duration::from_secs(5))
        .await
        .is_some());
    assert_eq!(wa.borrow().failures, failures);
    assert_eq!(wa.borrow().snapshot.remote_state, State::AdminDown);
    assert!(b.sessions().await.is_empty());
    assert_eq!(a.sessions().await.len(), 1);
    drop(a);
    drop(b);
}

/// The same over IPv6 (hop limit 255, the v6 listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calyx_sessions_over_ipv6() {
    if !calyx_tests::require_root("two_calyx_sessions_over_ipv6")
        || !calyx_tests::require_binaries("two_calyx_sessions_over_ipv6", &["nft"])
    {
        return;
    }
    let lan = Lan::new("bfd6", 2);
    let a = bfd_in(lan.node(1));
    let b = bfd_in(lan.node(2));
    let (ip1, ip2): (std::net::IpAddr, std::net::IpAddr) = (
        Lan::ip6(1).parse().unwrap_or_else(|e| panic!("{e}")),
        Lan::ip6(2).parse().unwrap_or_else(|e| panic!("{e}")),
    );
    let t = Timers::default();
    let mut wa = a
        .add(ip2, Some(ip1), t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _wb = b
        .add(ip1, Some(ip2), t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_state(&mut wa, State::Up, Duration::from_secs(15))
            .await
            .is_some(),
        "{:?}",
        *wa.borrow()
    );
    lan.cut(2);
    let down = wait_state(&mut wa, State::Down, Duration::from_secs(5)).await;
    assert!(down.is_some(), "{:?}", *wa.borrow());
    println!("IPv6: Down {:?} after the cut", down.unwrap_or_default());
    assert!(wa.borrow().failures >= 1);
}
