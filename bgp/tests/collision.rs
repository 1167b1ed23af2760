//! Connection collisions (RFC 4271 §6.8) on loopback addresses: the connection initiated by the
//! speaker with the higher BGP identifier survives, the other one gets Cease / Connection
//! Collision Resolution (subcode 7), and nothing is decided by addresses.
//!
//! * Two Calyx speakers that connect to each other at the same moment. The speaker with the
//!   lower address has the higher router ID, so the RFC rule and an address rule disagree. A
//!   small relay in this file sits in each direction and holds both connections until both
//!   speakers are in OpenSent on their own outgoing connection, then releases them together:
//!   the collision happens every run instead of by chance. The relay also records the BGP
//!   messages it forwards, and `/proc/net/tcp` shows which of the speakers' sockets survived.
//! * A raw TCP peer written here (tokio + calyx-proto) opens a second connection to a Calyx
//!   speaker whose own outgoing connection is in OpenSent or OpenConfirm, and checks where
//!   Calyx sends its OPEN and its Cease.
//!
//! Every wait is bounded; speakers, relays and sockets are closed at the end of each test (the
//! relays and readers also on drop, when a test fails).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use calyx_bgp::{
    BestRouteChange, CancellationToken, GlobalConfig, PeerConfig, PeerStatus, Speaker, State,
};
use calyx_proto::capability::{GracefulRestart, GracefulRestartFamily};
use calyx_proto::message::decode_stream;
use calyx_proto::{
    AfiSafi, AsPath, Asn, Capability, Ipv4Prefix, Message, Nlri, OpenMessage, Origin, ParseContext,
    PathAttributes, UpdateMessage,
};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Limit of every single wait in this file.
const WAIT: Duration = Duration::from_secs(10);
const ASN: u32 = 65000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ctx() -> ParseContext {
    let mut c = ParseContext::new();
    c.four_octet_as = true;
    c
}

/// A speaker without graceful restart. With it, a new connection from the peer while
/// Established is taken as the peer restarting (RFC 4724 §4.2) and replaces the session; the
/// relay below can deliver the losing connection of a collision that late (it opens the far
/// half of a connection only when it is released), which is not what these tests are about.
async fn speaker(addr: &str, router_id: &str, port: u16) -> Speaker {
    let cfg = GlobalConfig {
        router_id: router_id.parse().unwrap(),
        local_as: ASN,
        listen: Some(SocketAddr::new(ip(addr), port)),
        graceful_restart_time: 0,
        ..Default::default()
    };
    Speaker::start(cfg, CancellationToken::new()).await.unwrap()
}

fn peer(addr: &str, port: u16, local: &str) -> PeerConfig {
    PeerConfig {
        port,
        local_address: Some(ip(local)),
        hold_time: 9,
        connect_retry: 1,
        ..PeerConfig::new(ip(addr), ASN)
    }
}

fn status_of(s: &Speaker, addr: &str) -> Option<PeerStatus> {
    s.status().into_iter().find(|p| p.address == ip(addr))
}

/// Poll (bounded) until `check` holds; panics with `what` and the `dump` otherwise.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool, dump: impl Fn() -> String) {
    for _ in 0..WAIT.as_millis() / 50 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not reached in {WAIT:?}: {what}\n{}", dump());
}

async fn wait_state(s: &Speaker, addr: &str, st: State) {
    wait_for(
        &format!("{addr} {st}"),
        || status_of(s, addr).is_some_and(|p| p.state == st),
        || format!("{:?}", s.status()),
    )
    .await;
}

/// Wait (bounded) until the best-route feed has `prefix` with next hop `nh`.
async fn wait_route(rx: &mut mpsc::Receiver<BestRouteChange>, prefix: &str, nh: &str) {
    let p: IpNet = prefix.parse().unwrap();
    let mut seen: HashMap<IpNet, BestRouteChange> = HashMap::new();
    let found = tokio::time::timeout(WAIT, async {
        for _ in 0..10_000 {
            let Some(c) = rx.recv().await else { break };
            seen.insert(c.prefix, c);
            if seen
                .get(&p)
                .is_some_and(|c| !c.withdrawn && c.next_hops == vec![ip(nh)])
            {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "{prefix} via {nh} not learned");
}

/// ESTABLISHED IPv4 TCP sockets of this network namespace, as (local, remote).
fn established_sockets() -> Vec<(SocketAddr, SocketAddr)> {
    fn addr(s: &str) -> Option<SocketAddr> {
        let (a, p) = s.split_once(':')?;
        // The kernel prints the address as the native-endian value of its network-order bytes.
        let a = u32::from_str_radix(a, 16).ok()?.to_ne_bytes();
        let p = u16::from_str_radix(p, 16).ok()?;
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p))
    }
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"01") {
                return None;
            }
            Some((addr(f.get(1)?)?, addr(f.get(2)?)?))
        })
        .collect()
}

fn is_collision_cease(m: &Message) -> bool {
    matches!(m, Message::Notification(n) if n.code == 6 && n.subcode == 7)
}

// ---- relay ----

/// What one relayed connection carried.
#[derive(Debug, Default)]
struct Pipe {
    /// Messages from the initiator to the target.
    forward: Vec<Message>,
    /// Messages from the target back to the initiator.
    backward: Vec<Message>,
    closed: bool,
}

/// Forwards connections accepted on `listen` to `target`, connecting from the initiator's own
/// address so the target sees the right peer, once `gate` is open.
struct Relay {
    port: u16,
    pipes: Arc<Mutex<Vec<Pipe>>>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every pipe.
        self.task.abort();
    }
}

impl Relay {
    async fn start(listen: &str, target: SocketAddr, gate: watch::Receiver<bool>) -> Relay {
        let l = TcpListener::bind(SocketAddr::new(ip(listen), 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let pipes: Arc<Mutex<Vec<Pipe>>> = Arc::default();
        let p = pipes.clone();
        let task = tokio::spawn(async move {
            let mut running = JoinSet::new();
            for _ in 0..32 {
                let Ok((inbound, from)) = l.accept().await else {
                    return;
                };
                let idx = {
                    let mut v = p.lock().unwrap();
                    v.push(Pipe::default());
                    v.len() - 1
                };
                running.spawn(relay_one(
                    inbound,
                    from,
                    target,
                    gate.clone(),
                    p.clone(),
                    idx,
                ));
            }
            // Keep the pipes running until the relay is dropped.
            std::future::pending::<()>().await;
        });
        Relay { port, pipes, task }
    }

    fn with<T>(&self, f: impl FnOnce(&[Pipe]) -> T) -> T {
        f(&self.pipes.lock().unwrap())
    }

    /// Message types per pipe and direction, for failure output.
    fn summary(&self) -> String {
        fn kinds(v: &[Message]) -> Vec<String> {
            v.iter()
                .map(|m| match m {
                    Message::Open(o) => format!("OPEN {}", o.bgp_id),
                    Message::Keepalive => "KA".into(),
                    Message::Update(_) => "UPD".into(),
                    Message::Notification(n) => format!("NOTIF {}/{}", n.code, n.subcode),
                    Message::RouteRefresh(_) => "RR".into(),
                })
                .collect()
        }
        self.with(|p| {
            p.iter()
                .map(|p| {
                    format!(
                        "[closed {} fwd {:?} back {:?}]",
                        p.closed,
                        kinds(&p.forward),
                        kinds(&p.backward)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

async fn relay_one(
    inbound: TcpStream,
    from: SocketAddr,
    target: SocketAddr,
    mut gate: watch::Receiver<bool>,
    pipes: Arc<Mutex<Vec<Pipe>>>,
    idx: usize,
) {
    let opened = matches!(
        tokio::time::timeout(WAIT, gate.wait_for(|open| *open)).await,
        Ok(Ok(_))
    );
    let outbound = if opened {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from.ip(), 0)).unwrap();
        tokio::time::timeout(WAIT, sock.connect(target))
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    if let Some(outbound) = outbound {
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        tokio::join!(
            pump(ri, wo, pipes.clone(), idx, true),
            pump(ro, wi, pipes.clone(), idx, false)
        );
    }
    if let Some(p) = pipes.lock().unwrap().get_mut(idx) {
        p.closed = true;
    }
}

/// Copy one direction, decoding what passes; the end of one direction closes the other's
/// write side, as the speaker's own FIN would.
async fn pump(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    pipes: Arc<Mutex<Vec<Pipe>>>,
    idx: usize,
    forward: bool,
) {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let c = ctx();
    for _ in 0..1_000_000 {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Recorded before forwarding: what a speaker sent counts even if the other end is
        // already gone (both ends close a losing connection, and may do so at once).
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((m, len))) = decode_stream(&buf, &c) {
            let _ = buf.split_to(len);
            if let Some(p) = pipes.lock().unwrap().get_mut(idx) {
                if forward {
                    p.forward.push(m);
                } else {
                    p.backward.push(m);
                }
            }
        }
        if wr.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connections_keep_the_one_of_the_higher_router_id() {
    // A has the lower address and the higher router ID.
    let (a_ip, b_ip) = ("127.0.0.51", "127.0.0.52");
    let (a_id, b_id) = ("10.255.0.2", "10.255.0.1");
    let (pa, pb) = (calyx_tests::free_port(), calyx_tests::free_port());
    let a = speaker(a_ip, a_id, pa).await;
    let b = speaker(b_ip, b_id, pb).await;
    let (open_gate, gate) = watch::channel(false);
    // A reaches B through `ab` (listening on B's address), B reaches A through `ba`.
    let ab = Relay::start(b_ip, SocketAddr::new(ip(b_ip), pb), gate.clone()).await;
    let ba = Relay::start(a_ip, SocketAddr::new(ip(a_ip), pa), gate).await;
    let mut feed_a = a.subscribe(1024).await.unwrap();
    let mut feed_b = b.subscribe(1024).await.unwrap();
    a.originate("10.51.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    b.originate("10.52.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.set_peers(vec![peer(b_ip, ab.port, a_ip)]),
        b.set_peers(vec![peer(a_ip, ba.port, b_ip)])
    );
    ra.unwrap();
    rb.unwrap();

    // Both speakers sent their OPEN on their own outgoing connection; neither connection has
    // reached the other speaker yet.
    let dump = || {
        format!(
            "A {:?}\nB {:?}\nA->B relay {}\nB->A relay {}\nsockets {:?}",
            a.status(),
            b.status(),
            ab.summary(),
            ba.summary(),
            established_sockets()
        )
    };
    wait_for(
        "both outgoing connections held by the relays",
        || ab.with(|p| p.len() == 1) && ba.with(|p| p.len() == 1),
        dump,
    )
    .await;
    wait_state(&a, b_ip, State::OpenSent).await;
    wait_state(&b, a_ip, State::OpenSent).await;
    open_gate.send(true).unwrap();

    wait_state(&a, b_ip, State::Established).await;
    wait_state(&b, a_ip, State::Established).await;
    let (sa, sb) = (status_of(&a, b_ip).unwrap(), status_of(&b, a_ip).unwrap());
    assert_eq!(sa.peer_router_id, Some(b_id.parse().unwrap()), "{sa:?}");
    assert_eq!(sb.peer_router_id, Some(a_id.parse().unwrap()), "{sb:?}");

    // B's connection (lower router ID) was closed with Cease / Connection Collision
    // Resolution; A's, the one an address rule would have closed, carries the session.
    wait_for(
        "B-initiated connection closed",
        || ba.with(|p| p.iter().all(|p| p.closed)),
        dump,
    )
    .await;
    // (Facts are taken under the relay's lock, asserted outside it: `dump` locks it too.)
    let seen = |r: &Relay, f: fn(&Message) -> bool| {
        r.with(|p| p.iter().any(|p| p.forward.iter().chain(&p.backward).any(f)))
    };
    let count_opens = |v: &[Message]| v.iter().filter(|m| matches!(m, Message::Open(_))).count();
    let is_update = |m: &Message| matches!(m, Message::Update(_));
    assert_eq!(ba.with(|p| p.len()), 1, "B connected again\n{}", dump());
    assert!(
        seen(&ba, is_collision_cease),
        "no Cease/7 on B's\n{}",
        dump()
    );
    assert!(
        !seen(&ba, is_update),
        "routes on B's connection\n{}",
        dump()
    );
    assert_eq!(ab.with(|p| p.len()), 1, "A connected again\n{}", dump());
    assert!(!seen(&ab, is_collision_cease), "Cease/7 on A's\n{}", dump());
    let a_opens = ab.with(|p| (count_opens(&p[0].forward), count_opens(&p[0].backward)));
    assert_eq!(a_opens, (1, 1), "{}", dump());
    assert!(
        !ab.with(|p| p[0].closed),
        "A's connection closed\n{}",
        dump()
    );

    // The speakers' own sockets: A's outgoing one is up at both ends, nothing B initiated is.
    let a_out = |l: &SocketAddr, r: &SocketAddr| {
        l.ip() == ip(a_ip) && *r == SocketAddr::new(ip(b_ip), ab.port)
    };
    let b_side_of_a_out = |l: &SocketAddr, _: &SocketAddr| *l == SocketAddr::new(ip(b_ip), pb);
    let b_out = |l: &SocketAddr, r: &SocketAddr| {
        l.ip() == ip(b_ip) && *r == SocketAddr::new(ip(a_ip), ba.port)
    };
    let a_side_of_b_out = |l: &SocketAddr, _: &SocketAddr| *l == SocketAddr::new(ip(a_ip), pa);
    let count = |f: &dyn Fn(&SocketAddr, &SocketAddr) -> bool| {
        established_sockets()
            .iter()
            .filter(|(l, r)| f(l, r))
            .count()
    };
    wait_for(
        "B's sockets of its outgoing connection gone",
        || count(&b_out) == 0 && count(&a_side_of_b_out) == 0,
        dump,
    )
    .await;
    assert_eq!(count(&a_out), 1, "{}", dump());
    assert_eq!(count(&b_side_of_a_out), 1, "{}", dump());

    // Routes flow both ways, over it.
    wait_route(&mut feed_b, "10.51.0.0/26", a_ip).await;
    wait_route(&mut feed_a, "10.52.0.0/26", b_ip).await;
    let updates = ab.with(|p| {
        let has = |v: &[Message]| v.iter().any(|m| matches!(m, Message::Update(_)));
        (has(&p[0].forward), has(&p[0].backward))
    });
    assert_eq!(updates, (true, true), "{}", dump());

    // And it stays: same session (same `since`), same single connection, for a few seconds
    // (more than one keepalive interval of the 9 s hold time).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (s, addr, before) in [(&a, b_ip, &sa), (&b, a_ip, &sb)] {
            let now = status_of(s, addr).unwrap();
            assert_eq!(now.state, State::Established, "{}", dump());
            assert_eq!(now.since, before.since, "session flapped\n{}", dump());
        }
        assert_eq!(count(&a_out), 1, "{}", dump());
        let connections = ab.with(|p| p.len()) + ba.with(|p| p.len());
        assert_eq!(connections, 2, "reconnected\n{}", dump());
    }
    a.shutdown(false).await;
    b.shutdown(false).await;
}

// ---- raw peer ----

/// What the reader of a raw connection saw (short-lived, one per message: not worth boxing).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Ev {
    Msg(Message),
    Closed(String),
}

/// One raw connection: a reader task decodes what Calyx sends.
struct RawConn {
    name: &'static str,
    wr: OwnedWriteHalf,
    rx: mpsc::Receiver<Ev>,
    reader: JoinHandle<()>,
}

impl Drop for RawConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(mut rd: OwnedReadHalf, tx: mpsc::Sender<Ev>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let c = ctx();
    for _ in 0..1_000_000 {
        loop {
            match decode_stream(&buf, &c) {
                Ok(None) => break,
                Ok(Some((m, len))) => {
                    let _ = buf.split_to(len);
                    if tx.send(Ev::Msg(m)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Ev::Closed(format!("undecodable: {e}"))).await;
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(Ev::Closed("end of stream".into())).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Ev::Closed(e.to_string())).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

impl RawConn {
    fn new(name: &'static str, stream: TcpStream) -> RawConn {
        stream.set_nodelay(true).unwrap();
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(256);
        RawConn {
            name,
            wr,
            rx,
            reader: tokio::spawn(read_loop(rd, tx)),
        }
    }

    /// Open a connection from `from` to Calyx.
    async fn connect(name: &'static str, from: &str, to: SocketAddr) -> RawConn {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ip(from), 0)).unwrap();
        let stream = tokio::time::timeout(WAIT, sock.connect(to))
            .await
            .expect("connect timed out")
            .unwrap();
        RawConn::new(name, stream)
    }

    async fn next(&mut self) -> Ev {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => Ev::Closed("reader ended".into()),
            Err(_) => panic!("{}: nothing from Calyx in {WAIT:?}", self.name),
        }
    }

    async fn expect_open(&mut self) -> OpenMessage {
        match self.next().await {
            Ev::Msg(Message::Open(o)) => o,
            other => panic!("{}: expected Calyx's OPEN, got {other:?}", self.name),
        }
    }

    async fn expect_keepalive(&mut self) {
        match self.next().await {
            Ev::Msg(Message::Keepalive) => {}
            other => panic!("{}: expected a KEEPALIVE, got {other:?}", self.name),
        }
    }

    /// The next message is Cease / Connection Collision Resolution, then the connection ends.
    async fn expect_collision_cease(&mut self) {
        match self.next().await {
            Ev::Msg(m) if is_collision_cease(&m) => {}
            other => panic!("{}: expected Cease/7, got {other:?}", self.name),
        }
        match self.next().await {
            Ev::Closed(why) => println!("{}: closed after Cease/7 ({why})", self.name),
            other => panic!(
                "{}: expected the close after Cease/7, got {other:?}",
                self.name
            ),
        }
    }

    async fn send(&mut self, msgs: &[Message]) {
        let mut b = BytesMut::new();
        for m in msgs {
            m.encode(&ctx(), &mut b).unwrap();
        }
        tokio::time::timeout(WAIT, self.wr.write_all(&b))
            .await
            .expect("write timed out")
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }
}

/// The raw peer's OPEN; hold time 0 so that the test owes Calyx no keepalives.
fn raw_open(router_id: &str) -> Message {
    Message::Open(OpenMessage::new(
        Asn(ASN),
        0,
        router_id.parse().unwrap(),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(ASN)),
        ],
    ))
}

/// A Calyx speaker with one active peer, the raw peer at `raw_ip`; returns it with its
/// listening address and its outgoing connection (`first`), on which its OPEN was read:
/// Calyx is in OpenSent.
async fn calyx_connected_to_raw(
    calyx_ip: &str,
    calyx_id: &str,
    raw_ip: &str,
) -> (Speaker, SocketAddr, RawConn) {
    let listener = TcpListener::bind(SocketAddr::new(ip(raw_ip), 0))
        .await
        .unwrap();
    let raw_port = listener.local_addr().unwrap().port();
    let calyx_addr = SocketAddr::new(ip(calyx_ip), calyx_tests::free_port());
    let calyx = speaker(calyx_ip, calyx_id, calyx_addr.port()).await;
    calyx
        .set_peers(vec![peer(raw_ip, raw_port, calyx_ip)])
        .await
        .unwrap();
    let (stream, from) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("Calyx did not connect")
        .unwrap();
    assert_eq!(from.ip(), ip(calyx_ip));
    // Further connection attempts (there should be none) find no listener.
    drop(listener);
    let mut first = RawConn::new("Calyx's connection", stream);
    let open = first.expect_open().await;
    assert_eq!(open.bgp_id, calyx_id.parse::<Ipv4Addr>().unwrap());
    wait_state(&calyx, raw_ip, State::OpenSent).await;
    (calyx, calyx_addr, first)
}

async fn assert_established_with(calyx: &Speaker, raw_ip: &str, raw_id: &str) {
    wait_state(calyx, raw_ip, State::Established).await;
    let st = status_of(calyx, raw_ip).unwrap();
    assert_eq!(st.peer_router_id, Some(raw_id.parse().unwrap()), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sent_second_connection_of_a_lower_router_id_gets_cease_7() {
    // Calyx: lower address, higher router ID. An address rule would keep the raw peer's
    // connection; §6.8 keeps Calyx's own.
    let (calyx_ip, raw_ip) = ("127.0.0.61", "127.0.0.62");
    let (calyx_id, raw_id) = ("10.61.0.2", "10.61.0.1");
    let (calyx, calyx_addr, mut first) = calyx_connected_to_raw(calyx_ip, calyx_id, raw_ip).await;
    let mut second = RawConn::connect("raw peer's connection", raw_ip, calyx_addr).await;
    // Calyx does not decide yet: it keeps both and sends its OPEN on the second one too.
    second.expect_open().await;
    second.send(&[raw_open(raw_id)]).await;
    second.expect_collision_cease().await;
    // Calyx's connection carries on.
    first.send(&[raw_open(raw_id), Message::Keepalive]).await;
    first.expect_keepalive().await;
    assert_established_with(&calyx, raw_ip, raw_id).await;
    calyx.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sent_open_of_a_higher_router_id_on_the_first_connection_moves_to_the_second() {
    // The peer's OPEN arrives on Calyx's own connection and names a higher identifier: that
    // connection loses, the session continues on the peer's. Calyx has the higher address
    // here, so an address rule would have refused the peer's connection on sight.
    let (calyx_ip, raw_ip) = ("127.0.0.64", "127.0.0.63");
    let (calyx_id, raw_id) = ("10.63.0.1", "10.63.0.2");
    let (calyx, calyx_addr, mut first) = calyx_connected_to_raw(calyx_ip, calyx_id, raw_ip).await;
    let mut second = RawConn::connect("raw peer's connection", raw_ip, calyx_addr).await;
    second.expect_open().await;
    first.send(&[raw_open(raw_id)]).await;
    first.expect_collision_cease().await;
    second.send(&[raw_open(raw_id), Message::Keepalive]).await;
    second.expect_keepalive().await;
    assert_established_with(&calyx, raw_ip, raw_id).await;
    calyx.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_confirm_second_connection_of_a_lower_router_id_is_ceased_at_once() {
    // In OpenConfirm the identifier is known: the second connection is refused right away,
    // without an OPEN.
    let (calyx_ip, raw_ip) = ("127.0.0.65", "127.0.0.66");
    let (calyx_id, raw_id) = ("10.65.0.2", "10.65.0.1");
    let (calyx, calyx_addr, mut first) = calyx_connected_to_raw(calyx_ip, calyx_id, raw_ip).await;
    first.send(&[raw_open(raw_id)]).await;
    first.expect_keepalive().await;
    wait_state(&calyx, raw_ip, State::OpenConfirm).await;
    let mut second = RawConn::connect("raw peer's connection", raw_ip, calyx_addr).await;
    second.expect_collision_cease().await;
    first.send(&[Message::Keepalive]).await;
    assert_established_with(&calyx, raw_ip, raw_id).await;
    calyx.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_confirm_keeps_its_connection_even_against_a_higher_router_id() {
    // In OpenConfirm Calyx has sent its KEEPALIVE: the peer may be Established on that
    // connection already, and giving it up would reset the peer's session. So even though the
    // peer's identifier is higher (by §6.8 alone its connection would win), the new connection
    // gets Cease/7 without an OPEN, and the handshake completes on the first one.
    let (calyx_ip, raw_ip) = ("127.0.0.67", "127.0.0.68");
    let (calyx_id, raw_id) = ("10.67.0.1", "10.67.0.2");
    let (calyx, calyx_addr, mut first) = calyx_connected_to_raw(calyx_ip, calyx_id, raw_ip).await;
    first.send(&[raw_open(raw_id)]).await;
    first.expect_keepalive().await;
    wait_state(&calyx, raw_ip, State::OpenConfirm).await;
    let mut second = RawConn::connect("raw peer's connection", raw_ip, calyx_addr).await;
    second.expect_collision_cease().await;
    first.send(&[Message::Keepalive]).await;
    assert_established_with(&calyx, raw_ip, raw_id).await;
    calyx.shutdown(false).await;
}

// ---- a connection from the peer while Established, with graceful restart ----

/// A raw peer's OPEN with the graceful restart capability (`restarted`: the R bit).
fn raw_open_gr(router_id: &str, restarted: bool) -> Message {
    Message::Open(OpenMessage::new(
        Asn(ASN),
        0,
        router_id.parse().unwrap(),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(ASN)),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: restarted,
                notification: false,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    family: AfiSafi::IPV4_UNICAST,
                    forwarding_state: true,
                }],
            }),
        ],
    ))
}

/// An announcement of `prefix` from the raw peer at `raw_ip` (iBGP).
fn raw_announce(prefix: &str, raw_ip: &str) -> Message {
    let net: ipnet::Ipv4Net = prefix.parse().unwrap();
    Message::Update(UpdateMessage {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some(raw_ip.parse().unwrap()),
            local_pref: Some(100),
            ..Default::default()
        },
        nlri: vec![Nlri::new(Ipv4Prefix::from(net))],
        ..Default::default()
    })
}

/// A Calyx speaker with graceful restart, Established with a raw peer (graceful restart too)
/// that announced `10.82.0.0/24`; returns the speaker, its listening address, the session's
/// connection and the best-route feed (the prefix already seen on it).
async fn calyx_established_with_gr_raw(
    calyx_ip: &str,
    calyx_id: &str,
    raw_ip: &str,
    raw_id: &str,
) -> (
    Speaker,
    SocketAddr,
    RawConn,
    mpsc::Receiver<BestRouteChange>,
) {
    let listener = TcpListener::bind(SocketAddr::new(ip(raw_ip), 0))
        .await
        .unwrap();
    let raw_port = listener.local_addr().unwrap().port();
    let calyx_addr = SocketAddr::new(ip(calyx_ip), calyx_tests::free_port());
    let cfg = GlobalConfig {
        router_id: calyx_id.parse().unwrap(),
        local_as: ASN,
        listen: Some(calyx_addr),
        graceful_restart_time: 120,
        ..Default::default()
    };
    let calyx = Speaker::start(cfg, CancellationToken::new()).await.unwrap();
    let mut feed = calyx.subscribe(64).await.unwrap();
    calyx
        .set_peers(vec![peer(raw_ip, raw_port, calyx_ip)])
        .await
        .unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("Calyx did not connect")
        .unwrap();
    drop(listener);
    let mut first = RawConn::new("the session's connection", stream);
    first.expect_open().await;
    first
        .send(&[raw_open_gr(raw_id, false), Message::Keepalive])
        .await;
    first.expect_keepalive().await;
    assert_established_with(&calyx, raw_ip, raw_id).await;
    first
        .send(&[
            raw_announce("10.82.0.0/24", raw_ip),
            Message::Update(UpdateMessage::end_of_rib(AfiSafi::IPV4_UNICAST)),
        ])
        .await;
    wait_route(&mut feed, "10.82.0.0/24", raw_ip).await;
    (calyx, calyx_addr, first, feed)
}

/// No withdrawal of `prefix` is queued on the feed.
fn assert_not_withdrawn(feed: &mut mpsc::Receiver<BestRouteChange>, prefix: &str) {
    let p: IpNet = prefix.parse().unwrap();
    while let Ok(c) = feed.try_recv() {
        assert!(!(c.prefix == p && c.withdrawn), "{prefix} was withdrawn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_a_collision_loser_with_an_open_does_not_disturb_the_session() {
    // The losing connection of a collision carries the peer's OPEN and then its Cease/7 (the
    // peer sent its OPEN before it knew). With graceful restart, taking that OPEN (or the
    // connection) as the peer restarting reset a good session; it must be dropped instead.
    let (calyx_ip, raw_ip) = ("127.0.0.81", "127.0.0.82");
    let (calyx_id, raw_id) = ("10.81.0.1", "10.81.0.2");
    let (calyx, calyx_addr, mut first, mut feed) =
        calyx_established_with_gr_raw(calyx_ip, calyx_id, raw_ip, raw_id).await;
    let before = status_of(&calyx, raw_ip).unwrap();
    assert_eq!(before.established_count, 1);

    let mut second = RawConn::connect("the collision's loser", raw_ip, calyx_addr).await;
    second
        .send(&[
            raw_open_gr(raw_id, false),
            Message::Notification(calyx_proto::NotificationMessage::new(
                calyx_proto::ErrorCode::Cease(
                    calyx_proto::notification::CeaseSubcode::ConnectionCollisionResolution,
                ),
                Vec::new(),
            )),
        ])
        .await;
    // Calyx sends nothing on it (no OPEN: it is not taken as a new session) and closes it
    // once it has read the Cease.
    match second.next().await {
        Ev::Closed(_) => {}
        other => panic!("expected the loser to be closed silently, got {other:?}"),
    }
    // The session's connection carries on: at most Calyx's probe KEEPALIVE came on it, and
    // it still answers.
    first.send(&[Message::Keepalive]).await;
    let now = status_of(&calyx, raw_ip).unwrap();
    assert_eq!(now.state, State::Established, "{now:?}");
    assert_eq!(now.established_count, 1, "the session was reset: {now:?}");
    assert_eq!(now.since, before.since, "{now:?}");
    assert_eq!(now.prefixes_accepted, 1, "{now:?}");
    assert_not_withdrawn(&mut feed, "10.82.0.0/24");
    while let Ok(ev) = first.rx.try_recv() {
        assert!(
            matches!(ev, Ev::Msg(Message::Keepalive | Message::Update(_))),
            "the session's connection was disturbed: {ev:?}"
        );
    }
    calyx.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_a_new_open_from_the_peer_is_a_graceful_restart() {
    // RFC 4724 §4.2: the peer restarted and connects again while Calyx still has the old
    // session (no FIN reached it). Its OPEN on the new connection, with nothing saying the
    // old session is alive, is the restart: the old connection is closed, the routes kept
    // (stale), and the session continues on the new connection.
    let (calyx_ip, raw_ip) = ("127.0.0.83", "127.0.0.84");
    let (calyx_id, raw_id) = ("10.83.0.1", "10.83.0.2");
    let (calyx, calyx_addr, mut first, mut feed) =
        calyx_established_with_gr_raw(calyx_ip, calyx_id, raw_ip, raw_id).await;

    let mut second = RawConn::connect("the restarted peer", raw_ip, calyx_addr).await;
    second.send(&[raw_open_gr(raw_id, true)]).await;
    // Calyx answers on the new connection with its OPEN and KEEPALIVE.
    second.expect_open().await;
    second.expect_keepalive().await;
    second.send(&[Message::Keepalive]).await;
    // The old connection ends (closed by Calyx), after at most Calyx's End-of-RIB and its
    // probe KEEPALIVE.
    let mut closed = false;
    for _ in 0..10 {
        match first.next().await {
            Ev::Msg(Message::Keepalive | Message::Update(_)) => {}
            Ev::Closed(_) => {
                closed = true;
                break;
            }
            other => panic!("old connection: {other:?}"),
        }
    }
    assert!(closed, "the old connection was not closed");
    wait_for(
        "Established again on the new connection",
        || {
            status_of(&calyx, raw_ip)
                .is_some_and(|p| p.state == State::Established && p.established_count == 2)
        },
        || format!("{:?}", calyx.status()),
    )
    .await;
    // The routes were kept across the restart (stale until the End-of-RIB).
    assert_not_withdrawn(&mut feed, "10.82.0.0/24");
    second
        .send(&[
            raw_announce("10.82.0.0/24", raw_ip),
            Message::Update(UpdateMessage::end_of_rib(AfiSafi::IPV4_UNICAST)),
        ])
        .await;
    assert_eq!(
        status_of(&calyx, raw_ip).unwrap().prefixes_accepted,
        1,
        "{:?}",
        calyx.status()
    );
    calyx.shutdown(false).await;
}

// ---- full mesh ----

/// Speakers in the full-mesh test; `CALYX_MESH_SIZE` (at most 150) runs a larger mesh by hand.
fn mesh_size() -> usize {
    std::env::var("CALYX_MESH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14)
        .clamp(2, 150)
}
/// Limit of the wait for the whole mesh to converge.
const MESH_WAIT: Duration = Duration::from_secs(60);

fn mesh_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 77, 1 + i as u8))
}

/// Router IDs run against the address order, so that neither rule can pass for the other.
fn mesh_id(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, (mesh_size() - i) as u8)
}

fn mesh_prefix(i: usize) -> IpNet {
    format!("10.{}.0.0/24", 100 + i).parse().unwrap()
}

/// Per speaker: not yet converged, with the reason (for the failure output).
fn mesh_lagging(
    speakers: &[Speaker],
    feeds: &[Arc<Mutex<HashMap<IpNet, BestRouteChange>>>],
) -> Vec<String> {
    let mut lagging = Vec::new();
    for (i, s) in speakers.iter().enumerate() {
        let st = s.status();
        let up = st.iter().filter(|p| p.state == State::Established).count();
        let feed = feeds[i].lock().unwrap();
        let missing: Vec<usize> = (0..mesh_size())
            .filter(|j| *j != i)
            .filter(|j| {
                !feed
                    .get(&mesh_prefix(*j))
                    .is_some_and(|c| !c.withdrawn && c.next_hops == vec![mesh_ip(*j)])
            })
            .collect();
        if up != mesh_size() - 1 || !missing.is_empty() {
            let states: Vec<String> = st
                .iter()
                .filter(|p| p.state != State::Established)
                .map(|p| format!("{} {} {:?}", p.address, p.state, p.last_error))
                .collect();
            lagging.push(format!(
                "speaker {i}: {up} established, missing {missing:?}, {states:?}"
            ));
        }
    }
    lagging
}

/// A full mesh of Calyx speakers with graceful restart, where every speaker is given all its
/// peers at once, so that every pair connects both ways at the same moment. Every session
/// must come up, every speaker must learn every other's prefix, and no session that reached
/// Established may be reset afterwards: neither by the losing connection of a collision taken
/// for a graceful restart, nor by anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mesh_with_graceful_restart_converges_without_resets() {
    // RUST_LOG=calyx_bgp=debug shows each speaker's decisions when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // One port for every speaker: each listens on its own loopback address.
    let port = calyx_tests::free_port();
    let mesh = mesh_size();
    let mut speakers = Vec::new();
    for i in 0..mesh {
        let cfg = GlobalConfig {
            router_id: mesh_id(i),
            local_as: ASN,
            listen: Some(SocketAddr::new(mesh_ip(i), port)),
            graceful_restart_time: 120,
            ..Default::default()
        };
        let s = Speaker::start(cfg, CancellationToken::new()).await.unwrap();
        s.originate(mesh_prefix(i), None).await.unwrap();
        speakers.push(s);
    }
    let mut feeds = Vec::new();
    let mut feed_tasks = JoinSet::new();
    for s in &speakers {
        let mut rx = s.subscribe(4096).await.unwrap();
        let seen: Arc<Mutex<HashMap<IpNet, BestRouteChange>>> = Arc::default();
        let w = seen.clone();
        feed_tasks.spawn(async move {
            while let Some(c) = rx.recv().await {
                w.lock().unwrap().insert(c.prefix, c);
            }
        });
        feeds.push(seen);
    }
    let configs: Vec<Vec<PeerConfig>> = (0..mesh)
        .map(|i| {
            (0..mesh)
                .filter(|j| *j != i)
                .map(|j| PeerConfig {
                    port,
                    local_address: Some(mesh_ip(i)),
                    hold_time: 30,
                    connect_retry: 2,
                    ..PeerConfig::new(mesh_ip(j), ASN)
                })
                .collect()
        })
        .collect();
    // All at once.
    futures_all(
        speakers
            .iter()
            .zip(configs)
            .map(|(s, c)| async move { s.set_peers(c).await.unwrap() }),
    )
    .await;

    let mut converged = false;
    for _ in 0..MESH_WAIT.as_millis() / 100 {
        if mesh_lagging(&speakers, &feeds).is_empty() {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        converged,
        "the mesh did not converge in {MESH_WAIT:?}:\n{}",
        mesh_lagging(&speakers, &feeds).join("\n")
    );
    // Leave time for late connections of the collisions to arrive and be dealt with (a
    // connect attempt outlives its connect-retry period at most), then check that nothing
    // was reset: every session came up exactly once and is still up, with the routes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, s) in speakers.iter().enumerate() {
        for p in s.status() {
            assert_eq!(p.state, State::Established, "speaker {i}: {p:?}");
            assert_eq!(
                p.established_count, 1,
                "speaker {i}: session with {} was reset: {p:?}",
                p.address
            );
        }
    }
    assert!(
        mesh_lagging(&speakers, &feeds).is_empty(),
        "routes lost after convergence:\n{}",
        mesh_lagging(&speakers, &feeds).join("\n")
    );
    for s in speakers {
        s.shutdown(false).await;
    }
    feed_tasks.abort_all();
}

/// Run the futures concurrently and wait for all of them.
async fn futures_all<F: std::future::Future<Output = ()>>(fs: impl IntoIterator<Item = F>) {
    let fs: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut pending: Vec<_> = fs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    all = false;
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
