//! Session failures are reported, never swallowed: a peer that stops reading is dropped by the
//! write timeout instead of freezing its task, and an announcement no UPDATE can carry is
//! counted in the status and not taken as advertised. Raw peers on loopback; every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use calyx_bgp::{CancellationToken, GlobalConfig, PeerConfig, Policy, Speaker, State};
use calyx_proto::message::decode_stream;
use calyx_proto::{AfiSafi, Asn, Capability, Community, Message, OpenMessage, PathAttributes};
use common::{Ev, RawPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const CALYX_AS: u32 = 65000;
const PEER_AS: u32 = 65100;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn speaker(addr: &str) -> (Speaker, SocketAddr) {
    let listen = SocketAddr::new(ip(addr), calyx_tests::free_port());
    let cfg = GlobalConfig {
        router_id: addr.parse().unwrap(),
        local_as: CALYX_AS,
        listen: Some(listen),
        ..Default::default()
    };
    (
        Speaker::start(cfg, CancellationToken::new()).await.unwrap(),
        listen,
    )
}

/// An eBGP peer that is sent everything this speaker originates, and that only accepts
/// connections (the raw peer connects).
fn raw_peer_config(addr: &str) -> PeerConfig {
    PeerConfig {
        passive: true,
        export: Some(Policy::accept_all()),
        ..PeerConfig::new(ip(addr), PEER_AS)
    }
}

fn status(s: &Speaker, addr: &str) -> Option<calyx_bgp::PeerStatus> {
    s.status().into_iter().find(|p| p.address == ip(addr))
}

/// A peer that completes the handshake (hold time 0: no keepalives, no hold timer on either
/// side) and then never reads again, with a small receive buffer: Calyx's writes stall once
/// the socket buffers are full. Only the write timeout can end the session then; without it
/// the peer task waits in the write forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_dropped_by_the_write_timeout() {
    let (calyx, listen) = speaker("127.0.0.70").await;
    calyx
        .set_peers(vec![raw_peer_config("127.0.0.71")])
        .await
        .unwrap();
    // Distinct attribute sets (a MED each, and enough communities to make each UPDATE about
    // 1 KiB): one UPDATE per prefix, some 20 MB in all, more than the socket buffers hold.
    for i in 0..20_000u32 {
        let attrs = PathAttributes {
            med: Some(i),
            communities: (0..250).map(Community).collect(),
            ..Default::default()
        };
        let p = format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap();
        calyx.originate(p, Some(attrs)).await.unwrap();
    }

    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip("127.0.0.71"), 0)).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stream = tokio::time::timeout(common::WAIT, sock.connect(listen))
        .await
        .unwrap()
        .unwrap();
    let open = OpenMessage::new(
        Asn(PEER_AS),
        0,
        "127.0.0.71".parse().unwrap(),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(PEER_AS)),
        ],
    );
    let mut b = BytesMut::new();
    Message::Open(open).encode(&common::ctx(), &mut b).unwrap();
    calyx_proto::message::encode_keepalive(&mut b);
    stream.write_all(&b).await.unwrap();
    // Read Calyx's OPEN and KEEPALIVE, and not a byte more after them.
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    'handshake: for _ in 0..100 {
        tokio::time::timeout(common::WAIT, stream.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        while let Some((m, len)) = decode_stream(&buf, &common::ctx()).unwrap() {
            let _ = buf.split_to(len);
            seen.push(m);
            if matches!(seen.last(), Some(Message::Keepalive)) {
                break 'handshake;
            }
        }
    }
    assert!(matches!(seen.first(), Some(Message::Open(_))), "{seen:?}");

    // Established, then stalled, then down: the write timeout (10 s) ends it.
    let mut was_up = false;
    let mut down = false;
    for _ in 0..600 {
        let st = status(&calyx, "127.0.0.71").unwrap();
        was_up |= st.state == State::Established;
        if was_up && st.state != State::Established {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(was_up, "never Established: {:?}", calyx.status());
    assert!(
        down,
        "a peer that stopped reading kept its session (the task is stuck writing): {:?}",
        calyx.status()
    );
    drop(stream);
    calyx.shutdown(false).await;
}

/// An originated route whose attributes are longer than a 4096-octet message (the peer has no
/// extended messages): the peer gets the other routes, and the status says that one was left
/// out instead of counting it as advertised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_route_is_counted_and_not_advertised() {
    let (calyx, listen) = speaker("127.0.0.72").await;
    calyx
        .set_peers(vec![raw_peer_config("127.0.0.73")])
        .await
        .unwrap();
    let huge = PathAttributes {
        communities: (0..1100).map(Community).collect(),
        ..Default::default()
    };
    calyx
        .originate("10.1.0.0/24".parse().unwrap(), None)
        .await
        .unwrap();
    calyx
        .originate("10.2.0.0/24".parse().unwrap(), Some(huge))
        .await
        .unwrap();
    let mut peer = RawPeer::connect("raw", "127.0.0.73", PEER_AS, 30, listen).await;
    // Everything Calyx sends until its End-of-RIB.
    let mut announced = Vec::new();
    for _ in 0..100 {
        match peer.next(common::WAIT).await {
            Some(Ev::Msg(Message::Update(u))) => {
                if u.as_end_of_rib().is_some() {
                    break;
                }
                announced.extend(u.nlri.iter().map(|n| n.prefix.to_string()));
            }
            Some(Ev::Msg(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(announced, vec!["10.1.0.0/24".to_string()]);
    let st = status(&calyx, "127.0.0.73").unwrap();
    assert_eq!(st.prefixes_advertised, 1, "{st:?}");
    assert_eq!(st.prefixes_not_encoded, 1, "{st:?}");
    assert_eq!(st.state, State::Established);
    calyx.shutdown(false).await;
}
