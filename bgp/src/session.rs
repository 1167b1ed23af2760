//! The tokio task around one peer: it owns the [`Fsm`], makes and accepts the TCP connection,
//! runs the timers, writes what the FSM and the RIB hand it, and spawns a reader task per
//! connection. Once Established, the reader hands decoded UPDATEs straight to the RIB task
//! (bounded channel: a busy RIB slows the reading, TCP pushes back on the peer).
//!
//! Connection collisions (RFC 4271 §6.8): a second connection to the peer while the first is
//! in OpenSent is kept as a [`Candidate`] with our OPEN sent on it; the first OPEN the peer
//! sends, on either connection, names its BGP identifier and decides which connection
//! survives ([`collision`]). The loser gets Cease / Connection Collision Resolution.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use calyx_proto::message::decode_stream;
use calyx_proto::notification::{CeaseSubcode, FsmSubcode};
use calyx_proto::pack::UpdatePacker;
use calyx_proto::{
    AfiSafi, Asn, ErrorCode, Message, MpNextHop, Nlri, NotificationMessage, OpenMessage,
    ParseContext, RouteRefreshMessage, RouteRefreshSubtype, UpdateMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::collision::{self, Arrival, Identity, Situation, Survivor};
use crate::config::{GlobalConfig, PeerConfig};
use crate::fsm::{self, DownReason, Fsm, FsmConfig, Input, Negotiated, Output, State, Timer};
use crate::rib::{OutBatch, OutMsg, PeerCounters, PeerId, UpInfo};
use crate::sockopt;
use crate::speaker::RibMsg;

/// Status of one peer, written by its task, read by [`crate::Speaker::status`].
#[derive(Debug, Clone)]
pub(crate) struct StatusInner {
    pub state: State,
    pub since: SystemTime,
    pub established_at: Option<Instant>,
    pub last_error: Option<String>,
    pub capabilities: Vec<String>,
    pub peer_id: Option<std::net::Ipv4Addr>,
    pub hold_time: Option<u16>,
    /// How many times the session reached Established since the peer was configured.
    pub established_count: u64,
}

/// What a peer task shares with the speaker.
#[derive(Debug)]
pub(crate) struct PeerShared {
    pub status: Mutex<StatusInner>,
    pub counters: Arc<PeerCounters>,
}

impl PeerShared {
    pub fn new(counters: Arc<PeerCounters>) -> Self {
        PeerShared {
            status: Mutex::new(StatusInner {
                state: State::Idle,
                since: SystemTime::now(),
                established_at: None,
                last_error: None,
                capabilities: Vec::new(),
                peer_id: None,
                hold_time: None,
                established_count: 0,
            }),
            counters,
        }
    }

    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// Commands to a peer task.
#[derive(Debug)]
pub(crate) enum PeerCtl {
    /// A connection from this peer was accepted.
    Incoming(TcpStream),
    /// Close the session with this NOTIFICATION; restart after the delay if any.
    Stop {
        notification: Option<NotificationMessage>,
        restart_after: Option<Duration>,
    },
    /// Close the session (with the NOTIFICATION, or silently for a graceful restart) and end.
    Exit {
        notification: Option<NotificationMessage>,
        done: oneshot::Sender<()>,
    },
    /// Our import rules changed: ask the peer to send these families again (ROUTE-REFRESH),
    /// or reset the session if it cannot refresh.
    RequestRefresh(Vec<AfiSafi>),
}

/// From a reader task to its peer task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Event {
    Msg(Message),
    Decode(NotificationMessage),
    Closed(String),
}

struct Conn {
    writer: OwnedWriteHalf,
    events: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    ctx_tx: Option<oneshot::Sender<ParseContext>>,
    go_tx: Option<oneshot::Sender<u64>>,
    outgoing: bool,
    local: Option<SocketAddr>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    /// Write encoded messages, bounded in time: a peer that stops reading must not stall the
    /// task.
    async fn write(&mut self, b: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(Duration::from_secs(10), self.writer.write_all(b)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Send the NOTIFICATION, if any, then FIN. Dropping the value ends the reader task.
    async fn close(mut self, notification: Option<NotificationMessage>) {
        if let Some(n) = notification {
            let mut b = BytesMut::new();
            n.encode(&mut b);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.write_all(&b)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
    }
}

/// Encode a message the FSM produced; `None` (logged) if it cannot be, which would be a bug in
/// what we build rather than something the peer did.
fn encode(m: &Message, ctx: &ParseContext) -> Option<BytesMut> {
    let mut b = BytesMut::new();
    match m.encode(ctx, &mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!("cannot encode {m:?}: {e}");
            None
        }
    }
}

/// The second connection of a collision (RFC 4271 §6.8), kept beside the session's current
/// one, with our OPEN sent on it, until the peer's BGP identifier says which one survives.
/// The session only has one while the FSM is in OpenSent: the first OPEN received, on either
/// connection, resolves the collision.
struct Candidate {
    conn: Conn,
    /// The peer's OPEN read on this connection, for the FSM once this one is current.
    open: Option<OpenMessage>,
}

pub(crate) struct PeerTask {
    pub id: PeerId,
    pub cfg: PeerConfig,
    pub global: Arc<GlobalConfig>,
    pub rib: mpsc::Sender<RibMsg>,
    pub shared: Arc<PeerShared>,
    pub epoch: Instant,
}

fn families(cfg: &PeerConfig) -> Vec<AfiSafi> {
    let mut v = Vec::new();
    if cfg.ipv4 {
        v.push(AfiSafi::IPV4_UNICAST);
    }
    if cfg.ipv6 {
        v.push(AfiSafi::IPV6_UNICAST);
    }
    v
}

/// Socket options for a session: MD5, TTL (eBGP single hop = 1, multihop, GTSM).
fn apply_socket_options(fd: std::os::fd::RawFd, cfg: &PeerConfig, ebgp: bool) -> io::Result<()> {
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

async fn connect(cfg: PeerConfig, ebgp: bool, timeout: Duration) -> io::Result<TcpStream> {
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

impl PeerTask {
    fn ebgp(&self) -> bool {
        self.cfg.remote_as != self.global.local_as
    }

    fn fsm_config(&self) -> FsmConfig {
        let gr = (self.cfg.graceful_restart && self.global.graceful_restart_time > 0)
            .then_some(self.global.graceful_restart_time);
        FsmConfig {
            local_as: Asn(self.global.local_as),
            router_id: self.global.router_id,
            remote_as: Asn(self.cfg.remote_as),
            hold_time: self.cfg.hold_time,
            passive: self.cfg.passive,
            connect_retry: self.cfg.connect_retry_time(),
            idle_hold: self.cfg.connect_retry_time(),
            capabilities: fsm::capabilities(
                Asn(self.global.local_as),
                &families(&self.cfg),
                gr,
                self.global.restarting,
            ),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run until told to exit.
    pub async fn run(self, mut ctl: mpsc::Receiver<PeerCtl>) {
        let mut s = Session {
            fsm: Fsm::new(self.fsm_config()),
            timers: HashMap::new(),
            conn: None,
            candidate: None,
            restarted: None,
            connecting: None,
            out_rx: None,
            packer: None,
            generation: 0,
            up_generation: None,
            last_rx: Arc::new(AtomicU64::new(0)),
            negotiated: None,
            admin_down: false,
            connect_error: None,
        };
        let mut queue: Vec<Input> = vec![Input::Start];
        let mut exit: Option<oneshot::Sender<()>> = None;
        loop {
            while !queue.is_empty() {
                let inputs = std::mem::take(&mut queue);
                for i in inputs {
                    let outs = s.fsm.handle(i);
                    self.apply(&mut s, outs, &mut queue).await;
                }
            }
            if let Some(done) = exit.take() {
                let _ = done.send(());
                return;
            }
            let next = s.timers.values().min().copied();
            tokio::select! {
                c = ctl.recv() => match c {
                    None => {
                        queue.push(Input::Stop { notification: None, restart_after: None });
                        let (tx, _rx) = oneshot::channel();
                        exit = Some(tx);
                    }
                    Some(PeerCtl::Stop { notification, restart_after }) => {
                        s.admin_down = restart_after.is_none();
                        // The stop concerns the peer, not one connection: a waiting second
                        // connection hears it too instead of taking over.
                        if let Some(c) = s.candidate.take() {
                            c.conn.close(notification.clone()).await;
                        }
                        queue.push(Input::Stop { notification, restart_after });
                    }
                    Some(PeerCtl::Exit { notification, done }) => {
                        if let Some(c) = s.candidate.take() {
                            c.conn.close(notification.clone()).await;
                        }
                        queue.push(Input::Stop { notification, restart_after: None });
                        exit = Some(done);
                    }
                    Some(PeerCtl::Incoming(stream)) => {
                        if let Err(e) = apply_socket_options(stream.as_raw_fd(), &self.cfg, self.ebgp()) {
                            tracing::debug!("socket options: {e}");
                        }
                        self.arrival(&mut s, stream, false, &mut queue).await;
                    }
                    Some(PeerCtl::RequestRefresh(families)) => self.request_refresh(&mut s, families, &mut queue).await,
                },
                r = async { match s.connecting.as_mut() { Some((_, rx)) => rx.await, None => std::future::pending().await } }, if s.connecting.is_some() => {
                    s.connecting = None;
                    // An attempt that outlived Connect (an accepted connection moved the FSM
                    // on) is a second connection when it succeeds, and nothing when it fails.
                    let ours = matches!(s.fsm.state(), State::Connect | State::Active);
                    match r {
                        Ok(Ok(stream)) => {
                            s.connect_error = None;
                            self.arrival(&mut s, stream, true, &mut queue).await;
                        }
                        Ok(Err(e)) if ours => {
                            s.connect_error = Some(format!("connect: {e}"));
                            queue.push(Input::TcpFailed);
                        }
                        Ok(Err(e)) => tracing::debug!(peer = %self.cfg.address, "late connect attempt: {e}"),
                        Err(_) if ours => queue.push(Input::TcpFailed),
                        Err(_) => {}
                    }
                }
                ev = async { match s.conn.as_mut() { Some(c) => c.events.recv().await, None => std::future::pending().await } }, if s.conn.is_some() => {
                    match ev {
                        Some(Event::Msg(Message::Open(open))) if s.candidate.is_some() => {
                            self.open_on_current(&mut s, open, &mut queue).await;
                        }
                        Some(Event::Msg(m)) => queue.push(Input::Message(m)),
                        Some(Event::Decode(n)) => queue.push(Input::DecodeError(n)),
                        Some(Event::Closed(why)) => {
                            tracing::debug!(peer = %self.cfg.address, "connection closed: {why}");
                            queue.push(Input::TcpClosed);
                        }
                        None => queue.push(Input::TcpClosed),
                    }
                }
                ev = async { match s.candidate.as_mut() { Some(c) => c.conn.events.recv().await, None => std::future::pending().await } }, if s.candidate.is_some() => {
                    self.candidate_event(&mut s, ev, &mut queue).await;
                }
                o = async { match s.out_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } }, if s.out_rx.is_some() => {
                    match o {
                        Some(msg) => {
                            if let Err(e) = self.write_out(&mut s, msg).await {
                                tracing::debug!(peer = %self.cfg.address, "write failed: {e}");
                                queue.push(Input::TcpClosed);
                            }
                        }
                        None => s.out_rx = None,
                    }
                }
                _ = async { match next { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } }, if next.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Timer> = s.timers.iter().filter(|(_, t)| **t <= now).map(|(k, _)| *k).collect();
                    for t in due {
                        s.timers.remove(&t);
                        if t == Timer::Hold {
                            // Messages the reader handled itself count as received.
                            if let Some(n) = s.negotiated.as_ref().filter(|n| n.hold_time > 0) {
                                let hold = u64::from(n.hold_time) * 1000;
                                let idle = self.now_ms().saturating_sub(s.last_rx.load(AtOrd::Relaxed));
                                if idle < hold {
                                    s.timers.insert(Timer::Hold, now + Duration::from_millis(hold - idle));
                                    continue;
                                }
                            }
                        }
                        if t == Timer::ConnectRetry && s.connecting.is_some() {
                            s.connect_error = Some(if self.cfg.password.is_some() {
                                "connect: timed out (TCP MD5 password mismatch?)".to_string()
                            } else {
                                "connect: timed out".to_string()
                            });
                        }
                        queue.push(Input::TimerFired(t));
                    }
                }
            }
        }
    }

    fn identity(&self) -> Identity {
        Identity {
            id: self.global.router_id,
            asn: Asn(self.global.local_as),
        }
    }

    /// A TCP connection to (`outgoing`) or from the peer appeared: the first one, or a second
    /// one that collides with it.
    async fn arrival(
        &self,
        s: &mut Session,
        stream: TcpStream,
        outgoing: bool,
        queue: &mut Vec<Input>,
    ) {
        let situation = Situation {
            state: s.fsm.state(),
            admin_down: s.admin_down,
            current_outgoing: s.conn.as_ref().map(|c| c.outgoing),
            waiting: s.candidate.is_some(),
            local: self.identity(),
            peer: s.fsm.negotiated().map(|n| Identity {
                id: n.peer_id,
                asn: n.peer_as,
            }),
            peer_graceful_restart: s
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some()),
        };
        let decision = collision::arrival(&situation, outgoing);
        tracing::debug!(peer = %self.cfg.address, outgoing, state = %situation.state, ?decision, "connection");
        match decision {
            Arrival::Refuse => drop(stream),
            Arrival::First => {
                s.conn = Some(self.new_conn(stream, outgoing, s));
                queue.push(if outgoing {
                    Input::TcpConnected
                } else {
                    Input::TcpAccepted
                });
            }
            Arrival::Reject => reject(stream).await,
            Arrival::Wait => s.candidate = self.candidate(stream, outgoing, s).await,
            Arrival::TakeOver => {
                s.candidate = self.candidate(stream, outgoing, s).await;
                if s.candidate.is_some() {
                    tracing::info!(peer = %self.cfg.address, "collision: current connection closed");
                    queue.push(Input::CollisionLost);
                }
            }
            Arrival::PeerRestarted => {
                // RFC 4724 §4.2: a new connection while Established means the peer
                // restarted; its routes are kept as stale.
                s.restarted = Some(stream);
                queue.push(Input::TcpClosed);
            }
        }
    }

    /// Keep a second connection: its reader runs, and our OPEN goes out on it so that the
    /// peer, whichever connection it favours, gets an OPEN on each.
    async fn candidate(&self, stream: TcpStream, outgoing: bool, s: &Session) -> Option<Candidate> {
        let mut conn = self.new_conn(stream, outgoing, s);
        let open = encode(
            &Message::Open(s.fsm.open_message()),
            &ParseContext::default(),
        )?;
        if let Err(e) = conn.write(&open).await {
            tracing::debug!(peer = %self.cfg.address, "second connection: {e}");
            return None;
        }
        Some(Candidate { conn, open: None })
    }

    /// Which connection survives, now that `open` names the peer.
    fn survivor(&self, s: &Session, open: &OpenMessage, second_outgoing: bool) -> Survivor {
        let peer = Identity {
            id: open.bgp_id,
            asn: open.asn(),
        };
        let current_outgoing = s.conn.as_ref().is_some_and(|c| c.outgoing);
        collision::survivor(self.identity(), peer, current_outgoing, second_outgoing)
    }

    /// The peer's OPEN arrived on the current connection while a second one waits.
    async fn open_on_current(&self, s: &mut Session, open: OpenMessage, queue: &mut Vec<Input>) {
        let Some(second_outgoing) = s.candidate.as_ref().map(|c| c.conn.outgoing) else {
            queue.push(Input::Message(Message::Open(open)));
            return;
        };
        match self.survivor(s, &open, second_outgoing) {
            Survivor::Current => {
                tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: second connection closed");
                if let Some(c) = s.candidate.take() {
                    c.conn.close(Some(fsm::collision_notification())).await;
                }
                queue.push(Input::Message(Message::Open(open)));
            }
            Survivor::Second => {
                // The OPEN goes with its connection; the second one waits for its own.
                tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: current connection closed");
                queue.push(Input::CollisionLost);
            }
        }
    }

    /// Something happened on the waiting second connection.
    async fn candidate_event(&self, s: &mut Session, ev: Option<Event>, queue: &mut Vec<Input>) {
        let close_with = match ev {
            Some(Event::Msg(Message::Open(open))) => {
                let second_outgoing = s.candidate.as_ref().is_some_and(|c| c.conn.outgoing);
                match self.survivor(s, &open, second_outgoing) {
                    Survivor::Second => {
                        tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: current connection closed");
                        if let Some(c) = s.candidate.as_mut() {
                            c.open = Some(open);
                        }
                        queue.push(Input::CollisionLost);
                        return;
                    }
                    Survivor::Current => {
                        tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: second connection closed");
                        Some(fsm::collision_notification())
                    }
                }
            }
            Some(Event::Msg(Message::Notification(n))) => {
                // The peer resolved the collision (or failed) on this connection.
                tracing::debug!(peer = %self.cfg.address, "second connection: received {n}");
                None
            }
            // Anything but an OPEN first is what an FSM in OpenSent calls unexpected.
            Some(Event::Msg(_)) => Some(NotificationMessage::new(
                ErrorCode::Fsm(FsmSubcode::UnexpectedMessageInOpenSent),
                Vec::new(),
            )),
            Some(Event::Decode(n)) => Some(n),
            Some(Event::Closed(why)) => {
                tracing::debug!(peer = %self.cfg.address, "second connection closed: {why}");
                None
            }
            None => None,
        };
        if let Some(c) = s.candidate.take() {
            c.conn.close(close_with).await;
        }
    }

    fn new_conn(&self, stream: TcpStream, outgoing: bool, s: &Session) -> Conn {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (rd, writer) = stream.into_split();
        let (ev_tx, events) = mpsc::channel(64);
        let (ctx_tx, ctx_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        let reader = tokio::spawn(reader(
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
        }
    }

    async fn apply(&self, s: &mut Session, outs: Vec<Output>, queue: &mut Vec<Input>) {
        for o in outs {
            match o {
                Output::Connect => {
                    let cfg = self.cfg.clone();
                    let ebgp = self.ebgp();
                    let timeout = self.cfg.connect_retry_time();
                    let (tx, rx) = oneshot::channel();
                    let h = tokio::spawn(async move {
                        let _ = tx.send(connect(cfg, ebgp, timeout).await);
                    });
                    s.connecting = Some((AbortOnDrop(h), rx));
                }
                Output::Send(m) => {
                    let ctx = s.fsm.negotiated().map(|n| n.context()).unwrap_or_default();
                    if let (Some(c), Some(b)) = (s.conn.as_mut(), encode(&m, &ctx)) {
                        if c.write(&b).await.is_err() && !matches!(m, Message::Notification(_)) {
                            queue.push(Input::TcpClosed);
                        }
                    }
                }
                Output::ArmTimer(t, d) => {
                    s.timers.insert(t, Instant::now() + d);
                }
                Output::StopTimer(t) => {
                    s.timers.remove(&t);
                }
                Output::Close => {
                    if let Some(mut c) = s.conn.take() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), c.writer.shutdown()).await;
                    }
                    s.connecting = None;
                    s.out_rx = None;
                    s.packer = None;
                    if let Some(stream) = s.restarted.take() {
                        // The restarted peer's connection replaces the session.
                        if !s.admin_down {
                            s.conn = Some(self.new_conn(stream, false, s));
                            queue.push(Input::TcpAccepted);
                        }
                    } else if let Some(c) = s.candidate.take() {
                        // The current connection failed while a second one waited: that one
                        // is what is left of the session (§6.8 would have run its own FSM).
                        if !s.admin_down {
                            s.conn = Some(c.conn);
                            queue.push(Input::CollisionTakeover);
                            if let Some(open) = c.open {
                                queue.push(Input::Message(Message::Open(open)));
                            }
                        }
                    }
                }
                Output::SwitchConnection => {
                    if let Some(old) = s.conn.take() {
                        // The Cease was written just before, by Output::Send.
                        old.close(None).await;
                    }
                    match s.candidate.take() {
                        Some(c) => {
                            s.conn = Some(c.conn);
                            if let Some(open) = c.open {
                                queue.push(Input::Message(Message::Open(open)));
                            }
                        }
                        // Not reached: the session only reports a collision with a candidate.
                        // Without a connection the attempt is over; say so at once rather
                        // than at the expiry of the OpenSent hold timer.
                        None => {
                            tracing::warn!(peer = %self.cfg.address, "collision lost without a second connection");
                            queue.push(Input::TcpClosed);
                        }
                    }
                }
                Output::StateChanged(st) => {
                    self.shared.update(|x| {
                        x.state = st;
                        x.since = SystemTime::now();
                    });
                    if st == State::OpenConfirm {
                        if let (Some(c), Some(n)) = (s.conn.as_mut(), s.fsm.negotiated()) {
                            if let Some(tx) = c.ctx_tx.take() {
                                // Decoding from an external peer: confederation segments in
                                // AS_PATH are treated as withdraw, LOCAL_PREF is discarded
                                // (RFC 7606 §7.2, §7.5).
                                let mut ctx = n.context();
                                ctx.external_peer = self.ebgp();
                                let _ = tx.send(ctx);
                            }
                        }
                        s.last_rx.store(self.now_ms(), AtOrd::Relaxed);
                    }
                }
                Output::Established(neg) => self.established(s, *neg).await,
                Output::Down(reason) => self.down(s, reason).await,
            }
        }
        let err = match (s.fsm.last_error(), &s.connect_error) {
            (None | Some(DownReason::ConnectionClosed), Some(c))
                if matches!(s.fsm.state(), State::Connect | State::Active) =>
            {
                Some(c.clone())
            }
            (e, _) => e.map(|e| e.to_string()),
        };
        if let Some(e) = err {
            self.shared.update(|x| x.last_error = Some(e));
        }
    }

    /// Send ROUTE-REFRESH requests for `families`; without the capability, reset the session
    /// (soft reconfiguration needs the peer's routes again).
    async fn request_refresh(
        &self,
        s: &mut Session,
        families: Vec<AfiSafi>,
        queue: &mut Vec<Input>,
    ) {
        let Some(neg) = s.negotiated.as_ref() else {
            return;
        };
        if !neg.route_refresh {
            tracing::info!(peer = %self.cfg.address, "peer cannot refresh routes: resetting the session");
            queue.push(Input::Stop {
                notification: Some(NotificationMessage::new(
                    ErrorCode::Cease(CeaseSubcode::OtherConfigurationChange),
                    Vec::new(),
                )),
                restart_after: Some(Duration::from_secs(1)),
            });
            return;
        }
        let ctx = neg.context();
        let mut b = BytesMut::new();
        for f in families {
            let _ = Message::RouteRefresh(RouteRefreshMessage::request(f)).encode(&ctx, &mut b);
        }
        if let Some(c) = s.conn.as_mut() {
            if let Err(e) = c.writer.write_all(&b).await {
                tracing::debug!(peer = %self.cfg.address, "write failed: {e}");
                queue.push(Input::TcpClosed);
            }
        }
    }

    async fn established(&self, s: &mut Session, neg: Negotiated) {
        // A connect attempt still in flight could only collide with the Established session,
        // which always wins.
        s.connecting = None;
        s.generation += 1;
        let generation = s.generation;
        let (tx, rx) = mpsc::channel(8);
        let local_addr = s
            .conn
            .as_ref()
            .and_then(|c| c.local)
            .map(|a| a.ip())
            .or(self.cfg.local_address)
            .unwrap_or(IpAddr::V4(self.global.router_id));
        let local_addr = match local_addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
            a => a,
        };
        let info = UpInfo {
            router_id: neg.peer_id,
            local_addr,
            families: neg.families.clone(),
            tx,
            peer_restarting: neg.peer_graceful_restart.is_some(),
            send_eor: true,
            enhanced_refresh: neg.enhanced_route_refresh,
            wait_eor: neg
                .peer_graceful_restart
                .as_ref()
                .is_some_and(|g| !g.restart_state),
        };
        self.shared.update(|x| {
            x.established_at = Some(Instant::now());
            x.capabilities = neg.capability_names();
            x.peer_id = Some(neg.peer_id);
            x.hold_time = Some(neg.hold_time);
            x.last_error = None;
            x.established_count += 1;
        });
        let _ = self
            .rib
            .send(RibMsg::Up {
                id: self.id,
                generation,
                info,
            })
            .await;
        s.packer = Some(UpdatePacker::new(neg.context()));
        s.out_rx = Some(rx);
        s.up_generation = Some(generation);
        if let Some(c) = s.conn.as_mut() {
            if let Some(go) = c.go_tx.take() {
                let _ = go.send(generation);
            }
        }
        s.negotiated = Some(neg);
    }

    async fn down(&self, s: &mut Session, reason: DownReason) {
        let keep = s
            .negotiated
            .as_ref()
            .and_then(|n| n.peer_graceful_restart.as_ref())
            .filter(|g| reason.keeps_routes() && g.restart_time > 0 && !g.families.is_empty())
            .map(|g| Duration::from_secs(u64::from(g.restart_time)));
        self.shared.update(|x| x.established_at = None);
        if let Some(generation) = s.up_generation.take() {
            let _ = self
                .rib
                .send(RibMsg::Down {
                    id: self.id,
                    generation,
                    keep_stale: keep,
                })
                .await;
        }
        s.negotiated = None;
    }

    async fn write_out(&self, s: &mut Session, msg: OutMsg) -> io::Result<()> {
        let (Some(c), Some(packer)) = (s.conn.as_mut(), s.packer.as_mut()) else {
            return Ok(());
        };
        let mut b = BytesMut::with_capacity(64 * 1024);
        match msg {
            OutMsg::EndOfRib(f) => {
                let _ = UpdateMessage::end_of_rib(f).encode(packer.context(), &mut b);
            }
            OutMsg::BeginRefresh(f) | OutMsg::EndRefresh(f) => {
                let subtype = if matches!(msg, OutMsg::BeginRefresh(_)) {
                    RouteRefreshSubtype::BeginningOfRefresh
                } else {
                    RouteRefreshSubtype::EndOfRefresh
                };
                let m = RouteRefreshMessage {
                    family: f,
                    subtype,
                    trailing: Vec::new(),
                };
                let _ = Message::RouteRefresh(m).encode(packer.context(), &mut b);
            }
            OutMsg::Routes(batch) => encode_batch(packer, batch, &mut b),
        }
        c.writer.write_all(&b).await
    }
}

/// Encode one batch: withdrawals first, then announcements packed per attribute set.
pub(crate) fn encode_batch(packer: &mut UpdatePacker, batch: OutBatch, b: &mut BytesMut) {
    if !batch.withdraw_v4.is_empty() {
        let w: Vec<Nlri<_>> = batch.withdraw_v4.into_iter().map(Nlri::new).collect();
        let _ = packer.withdraw_ipv4(&w, b);
    }
    if !batch.withdraw_v6.is_empty() {
        let w: Vec<Nlri<_>> = batch.withdraw_v6.into_iter().map(Nlri::new).collect();
        let _ = packer.withdraw_mp(&w, b);
    }
    for (a, ps) in batch.v4 {
        let n: Vec<Nlri<_>> = ps.into_iter().map(Nlri::new).collect();
        let mut attrs = a.attrs.clone();
        match a.next_hop {
            IpAddr::V4(nh) => {
                attrs.next_hop = Some(nh);
                let _ = packer.announce_ipv4(&attrs, &n, b);
            }
            IpAddr::V6(global) => {
                let nh = MpNextHop::V6 {
                    global,
                    link_local: a.link_local,
                };
                let _ = packer.announce_mp(&attrs, &nh, &n, b);
            }
        }
    }
    for (a, ps) in batch.v6 {
        let n: Vec<Nlri<_>> = ps.into_iter().map(Nlri::new).collect();
        let nh = match a.next_hop {
            IpAddr::V6(global) => MpNextHop::V6 {
                global,
                link_local: a.link_local,
            },
            IpAddr::V4(v4) => MpNextHop::V6 {
                global: v4.to_ipv6_mapped(),
                link_local: None,
            },
        };
        let _ = packer.announce_mp(&a.attrs, &nh, &n, b);
    }
}

/// Close a connection that lost a collision before it was used: Cease / Connection Collision
/// Resolution, then FIN.
async fn reject(mut stream: TcpStream) {
    let mut b = BytesMut::new();
    fsm::collision_notification().encode(&mut b);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&b)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Session {
    fsm: Fsm,
    timers: HashMap<Timer, Instant>,
    /// The connection the FSM runs on.
    conn: Option<Conn>,
    /// A second connection waiting on a collision (only while the FSM is in OpenSent).
    candidate: Option<Candidate>,
    /// A connection from a peer that restarted while Established (RFC 4724 §4.2), taking over
    /// once the old session is down.
    restarted: Option<TcpStream>,
    connecting: Option<(AbortOnDrop, oneshot::Receiver<io::Result<TcpStream>>)>,
    out_rx: Option<mpsc::Receiver<OutMsg>>,
    packer: Option<UpdatePacker>,
    generation: u64,
    up_generation: Option<u64>,
    last_rx: Arc<AtomicU64>,
    negotiated: Option<Negotiated>,
    admin_down: bool,
    connect_error: Option<String>,
}

/// Reads one connection: frames and decodes messages. Before Established every message goes
/// to the peer task; after, UPDATEs and ROUTE-REFRESHes go straight to the RIB task.
#[allow(clippy::too_many_arguments)]
async fn reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    ev: mpsc::Sender<Event>,
    ctx_rx: oneshot::Receiver<ParseContext>,
    go_rx: oneshot::Receiver<u64>,
    rib: mpsc::Sender<RibMsg>,
    id: PeerId,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut ctx = ParseContext::new();
    let mut ctx_rx = Some(ctx_rx);
    let mut go_rx = Some(go_rx);
    let mut generation: Option<u64> = None;
    loop {
        // Decode every complete message in the buffer.
        loop {
            let res = decode_stream(&buf, &ctx);
            match res {
                Ok(None) => break,
                Err(e) => {
                    let _ = ev.send(Event::Decode(e.notification)).await;
                    return;
                }
                Ok(Some((msg, len))) => {
                    let _ = buf.split_to(len);
                    last_rx.store(epoch.elapsed().as_millis() as u64, AtOrd::Relaxed);
                    match (generation, msg) {
                        (Some(g), Message::Update(mut u)) => {
                            if !ctx.four_octet_as {
                                u.attributes.merge_as4();
                            }
                            if rib
                                .send(RibMsg::Update {
                                    id,
                                    generation: g,
                                    update: u,
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        (Some(g), Message::RouteRefresh(r)) => {
                            let _ = rib
                                .send(RibMsg::Refresh {
                                    id,
                                    generation: g,
                                    family: r.family,
                                    subtype: r.subtype,
                                })
                                .await;
                        }
                        (Some(_), Message::Keepalive) => {}
                        (_, msg) => {
                            let is_open = matches!(msg, Message::Open(_));
                            let is_ka = matches!(msg, Message::Keepalive);
                            if ev.send(Event::Msg(msg)).await.is_err() {
                                return;
                            }
                            if is_open {
                                // Wait for the FSM to accept the OPEN and negotiate.
                                if let Some(rx) = ctx_rx.take() {
                                    match rx.await {
                                        Ok(c) => ctx = c,
                                        Err(_) => return,
                                    }
                                }
                            } else if is_ka && ctx_rx.is_none() && generation.is_none() {
                                // KEEPALIVE in OpenConfirm: wait until the RIB knows the
                                // session is up before handing it UPDATEs.
                                if let Some(rx) = go_rx.take() {
                                    match rx.await {
                                        Ok(g) => generation = Some(g),
                                        Err(_) => return,
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < 65536 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = ev.send(Event::Closed("end of stream".into())).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = ev.send(Event::Closed(e.to_string())).await;
                return;
            }
        }
    }
}
