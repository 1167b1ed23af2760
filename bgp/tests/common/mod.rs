//! A raw BGP peer for tests: plain TCP and the codec, so that a test controls every message
//! (malformed input, End-of-RIB timing) and sees every message Calyx sends. Reads are bounded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use calyx_proto::message::decode_stream;
use calyx_proto::{
    AfiSafi, Asn, Capability, Message, NotificationMessage, OpenMessage, ParseContext,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound of every wait on Calyx.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the reader of a raw connection saw (printed in failure messages).
#[derive(Debug)]
#[allow(clippy::large_enum_variant, dead_code)]
pub enum Ev {
    Msg(Message),
    Garbage(String),
    Closed,
}

pub struct RawPeer {
    pub name: &'static str,
    pub wr: OwnedWriteHalf,
    pub rx: mpsc::Receiver<Ev>,
    reader: JoinHandle<()>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub fn ctx() -> ParseContext {
    let mut c = ParseContext::new();
    c.four_octet_as = true;
    c
}

async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<Ev>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let c = ctx();
    loop {
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
                    let _ = tx.send(Ev::Garbage(e.to_string())).await;
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Ev::Closed).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

impl RawPeer {
    /// Connect from `local` to Calyx and complete the handshake (OPEN, KEEPALIVE both ways),
    /// offering IPv4 and IPv6 unicast and 4-octet AS. Calyx may still be in its idle-hold
    /// time after a reset: retried, bounded.
    pub async fn connect(
        name: &'static str,
        local: &str,
        asn: u32,
        hold: u16,
        calyx: SocketAddr,
    ) -> RawPeer {
        Self::connect_with(name, local, asn, hold, calyx, Vec::new()).await
    }

    /// [`RawPeer::connect`] with more capabilities in the OPEN.
    pub async fn connect_with(
        name: &'static str,
        local: &str,
        asn: u32,
        hold: u16,
        calyx: SocketAddr,
        extra: Vec<Capability>,
    ) -> RawPeer {
        for attempt in 0..20 {
            if let Some(p) = Self::try_connect(name, local, asn, hold, calyx, extra.clone()).await {
                return p;
            }
            println!("{name}: handshake attempt {attempt} failed, retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{name}: no session with Calyx");
    }

    async fn try_connect(
        name: &'static str,
        local: &str,
        asn: u32,
        hold: u16,
        calyx: SocketAddr,
        extra: Vec<Capability>,
    ) -> Option<RawPeer> {
        let sock = TcpSocket::new_v4().ok()?;
        sock.set_reuseaddr(true).ok()?;
        sock.bind(SocketAddr::new(local.parse().ok()?, 0)).ok()?;
        let stream: TcpStream = tokio::time::timeout(WAIT, sock.connect(calyx))
            .await
            .ok()?
            .ok()?;
        stream.set_nodelay(true).ok()?;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(4096);
        let reader = tokio::spawn(read_loop(rd, tx));
        let mut p = RawPeer {
            name,
            wr,
            rx,
            reader,
        };
        let open = OpenMessage::new(
            Asn(asn),
            hold,
            local.parse().unwrap(),
            [
                Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::FourOctetAs(Asn(asn)),
            ]
            .into_iter()
            .chain(extra)
            .collect(),
        );
        let mut b = BytesMut::new();
        Message::Open(open).encode(&ctx(), &mut b).unwrap();
        calyx_proto::message::encode_keepalive(&mut b);
        p.wr.write_all(&b).await.ok()?;
        let (mut got_open, mut got_ka) = (false, false);
        while !(got_open && got_ka) {
            match p.next(Duration::from_secs(5)).await? {
                Ev::Msg(Message::Open(_)) => got_open = true,
                Ev::Msg(Message::Keepalive) if got_open => got_ka = true,
                Ev::Msg(Message::Notification(n)) => {
                    println!("{name}: NOTIFICATION during handshake: {n}");
                    return None;
                }
                Ev::Msg(_) => {}
                Ev::Garbage(_) | Ev::Closed => return None,
            }
        }
        Some(p)
    }

    pub async fn next(&mut self, limit: Duration) -> Option<Ev> {
        tokio::time::timeout(limit, self.rx.recv()).await.ok()?
    }

    pub async fn send(&mut self, b: &[u8]) {
        tokio::time::timeout(WAIT, self.wr.write_all(b))
            .await
            .expect("write timed out")
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }

    /// Nothing but KEEPALIVE/UPDATE has come from Calyx so far (the session was not reset).
    pub fn assert_no_notification(&mut self, case: &str) {
        while let Ok(ev) = self.rx.try_recv() {
            match ev {
                Ev::Msg(Message::Update(_) | Message::Keepalive) => {}
                other => panic!("{case}: session disturbed: {other:?}"),
            }
        }
    }

    /// Read until a NOTIFICATION arrives (bounded), then expect the connection to close.
    pub async fn expect_notification(&mut self, case: &str) -> NotificationMessage {
        let n = loop {
            match self.next(WAIT).await {
                Some(Ev::Msg(Message::Notification(n))) => break n,
                Some(Ev::Msg(_)) => {}
                other => panic!("{case}: expected a NOTIFICATION, got {other:?}"),
            }
        };
        loop {
            match self.next(WAIT).await {
                Some(Ev::Closed) => break,
                Some(Ev::Msg(_)) => {}
                other => panic!("{case}: expected the connection to close, got {other:?}"),
            }
        }
        n
    }
}
