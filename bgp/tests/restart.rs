//! Calyx as the restarting speaker of RFC 4724 §4.1: it announces the restart state, defers
//! route selection until every peer has sent End-of-RIB (or the Selection_Deferral_Timer
//! expires), and only then sends its routes, End-of-RIB, and best-route changes to
//! subscribers. A raw peer on loopback (tests/common) sees every message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use calyx_bgp::{CancellationToken, GlobalConfig, PeerConfig, Speaker};
use calyx_proto::capability::{GracefulRestart, GracefulRestartFamily};
use calyx_proto::{AfiSafi, Capability, Message, UpdateMessage};
use common::{ctx, Ev, RawPeer};

const PEER_AS: u32 = 65001;

async fn restarting_speaker(addr: &str, deferral: u16) -> (Speaker, SocketAddr) {
    let cfg = GlobalConfig {
        router_id: addr.parse().unwrap(),
        local_as: 65000,
        listen: Some(SocketAddr::new(addr.parse().unwrap(), 0)),
        graceful_restart_time: 120,
        restarting: true,
        selection_deferral_time: deferral,
        ..Default::default()
    };
    let s = Speaker::start(cfg, CancellationToken::new()).await.unwrap();
    let at = s.local_addr().unwrap();
    (s, at)
}

fn passive_peer(addr: &str) -> PeerConfig {
    PeerConfig {
        passive: true,
        ipv6: false,
        hold_time: 9,
        ..PeerConfig::new(addr.parse::<IpAddr>().unwrap(), PEER_AS)
    }
}

fn gr() -> Capability {
    Capability::GracefulRestart(GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            family: AfiSafi::IPV4_UNICAST,
            forwarding_state: false,
        }],
    })
}

/// Everything that is not a KEEPALIVE within `limit`: (UPDATEs that announce something,
/// End-of-RIBs).
async fn updates(p: &mut RawPeer, limit: Duration) -> (Vec<UpdateMessage>, usize) {
    let (mut routes, mut eors) = (Vec::new(), 0);
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match p.next(left).await {
            Some(Ev::Msg(Message::Update(u))) if u.as_end_of_rib().is_some() => eors += 1,
            Some(Ev::Msg(Message::Update(u))) => routes.push(u),
            Some(Ev::Msg(Message::Keepalive)) => {}
            Some(other) => panic!("{}: unexpected {other:?}", p.name),
            None => break,
        }
    }
    (routes, eors)
}

async fn send(p: &mut RawPeer, m: Message) {
    let mut b = BytesMut::new();
    m.encode(&ctx(), &mut b).unwrap();
    p.send(&b).await;
}

fn announce(prefix: &str, next_hop: &str) -> Message {
    let net: ipnet::Ipv4Net = prefix.parse().unwrap();
    Message::Update(UpdateMessage {
        attributes: calyx_proto::PathAttributes {
            origin: Some(calyx_proto::Origin::Igp),
            as_path: Some(calyx_proto::AsPath::sequence([calyx_proto::Asn(PEER_AS)])),
            next_hop: Some(next_hop.parse().unwrap()),
            ..Default::default()
        },
        nlri: vec![calyx_proto::Nlri::new(net.into())],
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_speaker_waits_for_the_peers_end_of_rib() {
    let (calyx, at) = restarting_speaker("127.0.0.60", 60).await;
    calyx
        .set_peers(vec![passive_peer("127.0.0.61")])
        .await
        .unwrap();
    calyx
        .originate("10.1.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    let mut feed = calyx.subscribe(64).await.unwrap();
    let mut p = RawPeer::connect_with("peer", "127.0.0.61", PEER_AS, 9, at, vec![gr()]).await;

    // The peer's routes arrive, but no End-of-RIB yet: nothing may come out of Calyx.
    send(&mut p, announce("10.9.0.0/24", "127.0.0.61")).await;
    let (routes, eors) = updates(&mut p, Duration::from_secs(2)).await;
    assert!(routes.is_empty(), "UPDATE before our selection: {routes:?}");
    assert_eq!(eors, 0, "End-of-RIB before our selection");
    assert!(
        feed.try_recv().is_err(),
        "best route handed out while deferring"
    );

    // End-of-RIB from the only peer: selection is done, the table follows, then End-of-RIB.
    send(
        &mut p,
        Message::Update(UpdateMessage::end_of_rib(AfiSafi::IPV4_UNICAST)),
    )
    .await;
    let (routes, eors) = updates(&mut p, Duration::from_secs(3)).await;
    let announced: Vec<String> = routes
        .iter()
        .flat_map(|u| u.nlri.iter().map(|n| n.prefix.to_string()))
        .collect();
    assert_eq!(announced, vec!["10.1.0.0/26".to_string()]);
    assert_eq!(eors, 1);
    let change = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.prefix.to_string(), "10.9.0.0/24");
    calyx.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_deferral_timer_ends_the_wait() {
    let (calyx, at) = restarting_speaker("127.0.0.62", 2).await;
    calyx
        .set_peers(vec![passive_peer("127.0.0.63")])
        .await
        .unwrap();
    calyx
        .originate("10.2.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    let t = Instant::now();
    let mut p = RawPeer::connect_with("peer", "127.0.0.63", PEER_AS, 9, at, vec![gr()]).await;
    // This peer never sends End-of-RIB; the 2 s timer releases the table.
    let (routes, eors) = updates(&mut p, Duration::from_secs(6)).await;
    println!(
        "table after {:.1} s with a 2 s deferral timer",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(eors, 1);
    calyx.shutdown(false).await;
}

/// A speaker started right after another one on the same address has shut down (what the node
/// daemon does when the global settings change) can bind the port: the old listener is closed
/// by the time `shutdown` returns. It was closed a moment later, by an aborted task, and the
/// new speaker failed with "Address already in use" on a loaded host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_restarted_at_once_binds_the_same_port() {
    let (first, at) = restarting_speaker("127.0.0.141", 5).await;
    first.shutdown(false).await;
    for i in 0..50 {
        let cfg = GlobalConfig {
            router_id: "127.0.0.141".parse().unwrap(),
            local_as: 65000,
            listen: Some(at),
            ..Default::default()
        };
        let s = Speaker::start(cfg, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("restart {i}: {e}"));
        s.shutdown(i % 2 == 0).await;
    }
}
