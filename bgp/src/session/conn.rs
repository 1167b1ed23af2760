//! One TCP connection of a session: opening it (connect, socket options), writing to it
//! (always bounded in time), closing it, and the reader task that comes with it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::BytesMut;
use calyx_proto::{Message, NotificationMessage, ParseContext};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{reader, PeerTask, Session};
use crate::config::PeerConfig;
use crate::fsm;
use crate::sockopt;
use crate::tasks::{Event, READER_EVENTS};

/// The longest a write to the peer may take. Every write goes through it: a peer that stops
/// reading must not freeze its task, whose timers (hold, keepalive) and commands wait on it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the farewell of a connection (NOTIFICATION, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Write `b` to `w`, bounded by `limit`.
async fn write_bounded<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    b: &[u8],
    limit: Duration,
) -> io::Result<()> {
    match tokio::time::timeout(limit, w.write_all(b)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

pub(crate) struct Conn {
    pub(crate) writer: OwnedWriteHalf,
    /// Boxed: a message is 456 bytes, and a channel allocates room for 32 at once, which was
    /// 14.6 KB per connection; nearly nothing goes through it once the session is up.
    pub(crate) events: mpsc::Receiver<Box<Event>>,
    pub(crate) reader: JoinHandle<()>,
    pub(crate) ctx_tx: Option<oneshot::Sender<ParseContext>>,
    pub(crate) go_tx: Option<oneshot::Sender<u64>>,
    pub(crate) outgoing: bool,
    pub(crate) local: Option<SocketAddr>,
    /// A NOTIFICATION was written on this connection (by the FSM's Output::Send): closing it
    /// must let the peer read it first, see [`Conn::close`].
    pub(crate) notified: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    /// Write encoded messages, bounded in time: a peer that stops reading must not stall the
    /// task.
    pub(crate) async fn write(&mut self, b: &[u8]) -> io::Result<()> {
        write_bounded(&mut self.writer, b, WRITE_TIMEOUT).await
    }

    /// Send the NOTIFICATION, if any, then FIN. Dropping the value ends the reader task.
    pub(crate) async fn close(mut self, notification: Option<NotificationMessage>) {
        let notified = self.notified || notification.is_some();
        if let Some(n) = notification {
            let mut b = BytesMut::new();
            n.encode(&mut b);
            let _ = write_bounded(&mut self.writer, &b, CLOSE_TIMEOUT).await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.writer.shutdown()).await;
        if notified {
            // Read on (and discard) until the peer closes too, for at most CLOSE_TIMEOUT:
            // closing a socket with unread data makes the kernel send RST, and an RST that
            // reaches the peer before it has read our NOTIFICATION throws the NOTIFICATION
            // away. The peer then sees a reset instead of a Cease and, with graceful restart,
            // keeps our routes as stale instead of withdrawing them.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(event) = self.events.recv().await {
                    if matches!(*event, Event::Closed(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Encode a message the FSM produced; `None` (logged) if it cannot be, which would be a bug in
/// what we build rather than something the peer did.
pub(crate) fn encode(m: &Message, ctx: &ParseContext) -> Option<BytesMut> {
    let mut b = BytesMut::new();
    match m.encode(ctx, &mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!("cannot encode {m:?}: {e}");
            None
        }
    }
}

/// Socket options for a session: MD5, TTL (eBGP single hop = 1, multihop, GTSM).
pub(crate) fn apply_socket_options(
    fd: std::os::fd::RawFd,
    cfg: &PeerConfig,
    ebgp: bool,
) -> io::Result<()> {
    let v6 = cfg.address.is_ipv6();
    if cfg.ttl_security > 0 {
        sockopt::set_gtsm(fd, v6, cfg.ttl_security)?;
    } else if cfg.multihop > 0 {
        sockopt::set_ttl(fd, v6, cfg.multihop)?;
    } else if ebgp {
        sockopt::set_ttl(fd, v6, 1)?;
    }
    Ok(())
}

pub(crate) async fn connect(
    cfg: PeerConfig,
    ebgp: bool,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let addr = SocketAddr::new(cfg.address, cfg.port);
    let sock = if cfg.address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(la) = cfg.local_address {
        sock.bind(SocketAddr::new(la, 0))?;
    }
    if let Some(pw) = &cfg.password {
        sockopt::set_md5(sock.as_raw_fd(), cfg.address, Some(pw))?;
    }
    apply_socket_options(sock.as_raw_fd(), &cfg, ebgp)?;
    match tokio::time::timeout(timeout, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            if cfg.password.is_some() {
                "connect timed out (TCP MD5 password mismatch?)"
            } else {
                "connect timed out"
            },
        )),
    }
}

/// Close a connection that lost a collision before it was used: Cease / Connection Collision
/// Resolution, then FIN.
pub(crate) async fn reject(mut stream: TcpStream) {
    let mut b = BytesMut::new();
    fsm::collision_notification().encode(&mut b);
    let _ = write_bounded(&mut stream, &b, CLOSE_TIMEOUT).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
}

pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PeerTask {
    /// Take a connection into use: split it and start its reader.
    pub(super) fn new_conn(&self, stream: TcpStream, outgoing: bool, s: &Session) -> Conn {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (rd, writer) = stream.into_split();
        let (ev_tx, events) = mpsc::channel(READER_EVENTS);
        let (ctx_tx, ctx_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        let reader = tokio::spawn(reader::reader(
            rd,
            ev_tx,
            ctx_rx,
            go_rx,
            self.rib.clone(),
            self.id,
            s.last_rx.clone(),
            self.epoch,
        ));
        Conn {
            writer,
            events,
            reader,
            ctx_tx: Some(ctx_tx),
            go_tx: Some(go_tx),
            outgoing,
            local,
            notified: false,
        }
    }
}
