//! The UDP task: everything of BFD that touches sockets and clocks, on an OS thread of its
//! own with a single-threaded tokio runtime, so that its timers never wait behind route
//! processing (a busy RIB or a 100k-route burst runs on other threads).
//!
//! ```text
//!            clients (BGP peer tasks)
//!      add/remove/list │        ▲ watch: SessionStatus per session
//!                      ▼        │
//!   ┌───────────── thread "calyx-bfd" ─────────────────────────┐
//!   │ manager task: listeners on port 3784 (v4, v6),           │
//!   │   TTL check (RFC 5881 §5), decode (RFC 5880 §6.8.6),     │
//!   │   demultiplex by Your Discriminator or source address ───┼──> session task per peer:
//!   │                                                          │    Session (Sans-IO), its two
//!   │                                                          │    timers, its own sending
//!   │                                                          │    socket (TTL 255, source
//!   │                                                          │    port 49152-65535)
//!   └──────────────────────────────────────────────────────────┘
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::packet::{ControlPacket, Diag, State};
use crate::session::{Input, Output, Session, SessionConfig, Snapshot, Timer, Timers};
use crate::sockopt;

/// The destination port of single-hop BFD Control packets (RFC 5881 §4).
pub const PORT: u16 = 3784;
/// The source ports single-hop BFD Control packets must come from (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Packets queued per session between the listener and the session task; beyond, packets
/// are dropped and counted (a session only needs the latest few).
const SESSION_QUEUE: usize = 16;

/// Errors of the BFD task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A socket option could not be set.
    #[error("socket option on {addr}: {source}")]
    SocketOption {
        /// The socket's address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The thread could not be started.
    #[error("cannot start the BFD thread: {0}")]
    Thread(io::Error),
    /// The BFD task is gone.
    #[error("the BFD task has stopped")]
    Stopped,
}

/// Settings of the BFD task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    /// Port to listen on and to send to (3784; tests may choose another).
    pub port: u16,
    /// Listen for IPv6 too (failure to bind it is logged, not fatal).
    pub ipv6: bool,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            port: PORT,
            ipv6: true,
        }
    }
}

/// What a client sees of one session (published on every state change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// The remote system.
    pub peer: IpAddr,
    /// The session's variables.
    pub snapshot: Snapshot,
    /// Times the session came Up.
    pub ups: u64,
    /// Times it went from Up to Down because the path failed (Detection Time expired, or the
    /// remote system said Down without being administratively down): what a client such as
    /// BGP acts on (RFC 5882 §3.2: a remote AdminDown is not a failure).
    pub failures: u64,
}

impl SessionStatus {
    /// Whether the session is Up.
    pub fn is_up(&self) -> bool {
        self.snapshot.state == State::Up
    }
}

/// Counters of the BFD task (for metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Control packets received and handed to a session.
    pub rx_packets: AtomicU64,
    /// Datagrams dropped because their TTL was not 255 (RFC 5881 §5).
    pub rx_bad_ttl: AtomicU64,
    /// Datagrams that failed the checks of RFC 5880 §6.8.6.
    pub rx_invalid: AtomicU64,
    /// Valid packets that matched no session.
    pub rx_unknown: AtomicU64,
    /// Packets dropped because a session's queue was full.
    pub rx_queue_full: AtomicU64,
    /// Control packets sent.
    pub tx_packets: AtomicU64,
    /// Sends that failed.
    pub tx_errors: AtomicU64,
    /// Session state changes.
    pub state_changes: AtomicU64,
    /// Up -> Down failures (see [`SessionStatus::failures`]).
    pub failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

enum Cmd {
    Add {
        peer: IpAddr,
        local: Option<IpAddr>,
        timers: Timers,
        reply: oneshot::Sender<Result<watch::Receiver<SessionStatus>, Error>>,
    },
    Remove {
        peer: IpAddr,
    },
    List {
        reply: oneshot::Sender<Vec<SessionStatus>>,
    },
}

enum SessionMsg {
    Packet(ControlPacket),
    SetTimers(Timers),
}

/// The BFD task: a handle to the thread that runs every session. Dropping it sends
/// AdminDown on every session and stops the thread.
pub struct Bfd {
    // Unbounded on purpose: commands come from configuration (one per peer change), never
    // from the network, and `remove` must work from `Drop` without awaiting.
    cmds: mpsc::UnboundedSender<Cmd>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn udp_socket(addr: SocketAddr) -> Result<Socket, Error> {
    let opt = |source| Error::SocketOption { addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(opt)?;
    if addr.is_ipv6() {
        // v6 only, so that the IPv4 listener can share the port.
        s.set_only_v6(true).map_err(opt)?;
    }
    s.set_nonblocking(true).map_err(opt)?;
    Ok(s)
}

/// The shared listener on `addr`, reporting the TTL of each datagram.
fn bind_listener(addr: SocketAddr) -> Result<StdUdpSocket, Error> {
    let s = udp_socket(addr)?;
    sockopt::set_recv_ttl(s.as_raw_fd(), addr.is_ipv6())
        .map_err(|source| Error::SocketOption { addr, source })?;
    s.bind(&addr.into())
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(s.into())
}

/// A session's sending socket: TTL 255, bound to `local` (or any address) and a free source
/// port of 49152-65535 (RFC 5881 §4), connected to the peer.
fn bind_sender(peer: SocketAddr, local: Option<IpAddr>) -> Result<StdUdpSocket, Error> {
    let any = if peer.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let ip = local.unwrap_or(any);
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    // Random ports first (bounded tries), so that sessions do not cluster on one port.
    for _ in 0..64 {
        let port = SOURCE_PORTS.start() + (rand::random::<u32>() % span) as u16;
        let addr = SocketAddr::new(ip, port);
        let s = udp_socket(addr)?;
        let opt = |source| Error::SocketOption { addr, source };
        if peer.is_ipv6() {
            s.set_unicast_hops_v6(255).map_err(opt)?;
        } else {
            s.set_ttl_v4(255).map_err(opt)?;
        }
        match s.bind(&addr.into()) {
            Ok(()) => {
                s.connect(&peer.into()).map_err(opt)?;
                return Ok(s.into());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    Err(Error::Bind {
        addr: SocketAddr::new(ip, *SOURCE_PORTS.start()),
        source: last,
    })
}

impl Bfd {
    /// Bind the listeners (errors are returned here) and start the thread.
    pub fn start(cfg: BfdConfig) -> Result<Bfd, Error> {
        let v4 = bind_listener(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.port))?;
        let v6 = if cfg.ipv6 {
            match bind_listener(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port)) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "BFD: no IPv6 listener");
                    None
                }
            }
        } else {
            None
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let (st, c) = (stats.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("calyx-bfd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "BFD: cannot build the runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let m = match Manager::new(cfg, v4, v6, st, c) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::error!(error = %e, "BFD: cannot register the listeners");
                            return;
                        }
                    };
                    m.run(rx).await;
                });
            })
            .map_err(Error::Thread)?;
        Ok(Bfd {
            cmds: tx,
            stats,
            cancel,
            thread: Some(thread),
        })
    }

    /// Watch a session with `peer` (created on first use; every `add` must be matched by a
    /// [`Bfd::remove`]). `local` is the source address to send from (the BGP session's
    /// local address). New `timers` on an existing session start a Poll Sequence.
    pub async fn add(
        &self,
        peer: IpAddr,
        local: Option<IpAddr>,
        timers: Timers,
    ) -> Result<watch::Receiver<SessionStatus>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Add {
                peer: peer.to_canonical(),
                local: local.map(|a| a.to_canonical()),
                timers,
                reply,
            })
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Drop one use of the session with `peer`; the last one takes it AdminDown (so that the
    /// remote system does not see a failure, RFC 5880 §6.8.16) and removes it.
    pub fn remove(&self, peer: IpAddr) {
        let _ = self.cmds.send(Cmd::Remove {
            peer: peer.to_canonical(),
        });
    }

    /// Every session's status.
    pub async fn sessions(&self) -> Vec<SessionStatus> {
        let (reply, rx) = oneshot::channel();
        if self.cmds.send(Cmd::List { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The task's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl std::fmt::Debug for Bfd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bfd")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("BFD: the thread panicked");
            }
        }
    }
}

struct Entry {
    tx: mpsc::Sender<SessionMsg>,
    refs: usize,
    discr: u32,
    timers: Timers,
    status: watch::Receiver<SessionStatus>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Manager {
    port: u16,
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    sessions: HashMap<IpAddr, Entry>,
    by_discr: HashMap<u32, IpAddr>,
}

/// Receive one datagram with its TTL from `sock`, or never when there is no socket.
async fn recv(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    match sock {
        Some(s) => {
            s.async_io(Interest::READABLE, || {
                sockopt::recv_with_ttl(s.as_raw_fd(), buf)
            })
            .await
        }
        None => std::future::pending().await,
    }
}

impl Manager {
    fn new(
        cfg: BfdConfig,
        v4: StdUdpSocket,
        v6: Option<StdUdpSocket>,
        stats: Arc<Stats>,
        cancel: CancellationToken,
    ) -> io::Result<Manager> {
        Ok(Manager {
            port: cfg.port,
            v4: UdpSocket::from_std(v4)?,
            v6: v6.map(UdpSocket::from_std).transpose()?,
            stats,
            cancel,
            sessions: HashMap::new(),
            by_discr: HashMap::new(),
        })
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut b4 = [0u8; 512];
        let mut b6 = [0u8; 512];
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                cmd = cmds.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                r = recv(Some(&self.v4), &mut b4) => self.datagram(r, &b4),
                r = recv(self.v6.as_ref(), &mut b6) => self.datagram(r, &b6),
            }
        }
        // AdminDown on every session, then wait for the tasks (each sends and exits).
        for (_, e) in self.sessions.drain() {
            e.stop.cancel();
            if tokio::time::timeout(Duration::from_secs(2), e.task)
                .await
                .is_err()
            {
                tracing::warn!("BFD: a session task did not stop in time");
            }
        }
    }

    fn datagram(&mut self, r: io::Result<(usize, SocketAddr, Option<u8>)>, buf: &[u8]) {
        let (n, from, ttl) = match r {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "BFD: receive failed");
                return;
            }
        };
        if ttl != Some(255) {
            bump(&self.stats.rx_bad_ttl);
            tracing::debug!(%from, ?ttl, "BFD: dropped a packet whose TTL is not 255");
            return;
        }
        let p = match ControlPacket::decode(buf.get(..n).unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                bump(&self.stats.rx_invalid);
                tracing::debug!(%from, error = %e, "BFD: invalid packet");
                return;
            }
        };
        let ip = from.ip().to_canonical();
        // RFC 5880 §6.8.6: by Your Discriminator when set, else by source address (single hop).
        let peer = if p.your_discr != 0 {
            self.by_discr
                .get(&p.your_discr)
                .copied()
                .filter(|a| *a == ip)
        } else {
            self.sessions.contains_key(&ip).then_some(ip)
        };
        let Some(e) = peer.and_then(|a| self.sessions.get(&a)) else {
            bump(&self.stats.rx_unknown);
            tracing::trace!(%from, "BFD: packet for no session");
            return;
        };
        match e.tx.try_send(SessionMsg::Packet(p)) {
            Ok(()) => bump(&self.stats.rx_packets),
            Err(_) => bump(&self.stats.rx_queue_full),
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Add {
                peer,
                local,
                timers,
                reply,
            } => {
                let r = self.add(peer, local, timers);
                let _ = reply.send(r);
            }
            Cmd::Remove { peer } => {
                let gone = match self.sessions.get_mut(&peer) {
                    Some(e) => {
                        e.refs = e.refs.saturating_sub(1);
                        e.refs == 0
                    }
                    None => false,
                };
                if gone {
                    if let Some(e) = self.sessions.remove(&peer) {
                        self.by_discr.remove(&e.discr);
                        e.stop.cancel();
                        tracing::info!(%peer, "BFD: session removed");
                    }
                }
            }
            Cmd::List { reply } => {
                let mut v: Vec<SessionStatus> =
                    self.sessions.values().map(|e| *e.status.borrow()).collect();
                v.sort_by_key(|s| s.peer);
                let _ = reply.send(v);
            }
        }
    }

    fn add(
        &mut self,
        peer: IpAddr,
        local: Option<IpAddr>,
        timers: Timers,
    ) -> Result<watch::Receiver<SessionStatus>, Error> {
        if let Some(e) = self.sessions.get_mut(&peer) {
            e.refs += 1;
            // Recorded only once the session has them: a queue full of received packets
            // would otherwise lose the change for good (every later add would see it done).
            if e.timers != timers {
                match e.tx.try_send(SessionMsg::SetTimers(timers)) {
                    Ok(()) => e.timers = timers,
                    Err(err) => tracing::warn!(
                        %peer, error = %err,
                        "BFD timers not changed now (session queue full); retried at the next add"
                    ),
                }
            }
            return Ok(e.status.clone());
        }
        let sock = bind_sender(SocketAddr::new(peer, self.port), local)?;
        let sock = UdpSocket::from_std(sock).map_err(|source| Error::SocketOption {
            addr: SocketAddr::new(peer, self.port),
            source,
        })?;
        let mut discr = 0;
        while discr == 0 || self.by_discr.contains_key(&discr) {
            discr = rand::random();
        }
        let session = Session::new(SessionConfig {
            timers,
            local_discr: discr,
            passive: false,
            seed: rand::random(),
        });
        let (status_tx, status_rx) = watch::channel(SessionStatus {
            peer,
            snapshot: session.snapshot(),
            ups: 0,
            failures: 0,
        });
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let stop = self.cancel.child_token();
        let task = tokio::spawn(
            SessionTask {
                peer,
                session,
                sock,
                status: status_tx,
                stats: self.stats.clone(),
                tx_at: None,
                detect_at: None,
            }
            .run(rx, stop.clone()),
        );
        tracing::info!(%peer, discr, ?timers, "BFD: session added");
        self.by_discr.insert(discr, peer);
        self.sessions.insert(
            peer,
            Entry {
                tx,
                refs: 1,
                discr,
                timers,
                status: status_rx.clone(),
                stop,
                task,
            },
        );
        Ok(status_rx)
    }
}

/// One session's task: its state machine, its timers, its sending socket.
struct SessionTask {
    peer: IpAddr,
    session: Session,
    sock: UdpSocket,
    status: watch::Sender<SessionStatus>,
    stats: Arc<Stats>,
    tx_at: Option<Instant>,
    detect_at: Option<Instant>,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl SessionTask {
    async fn run(mut self, mut rx: mpsc::Receiver<SessionMsg>, stop: CancellationToken) {
        self.apply(Input::Start);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = sleep_until(self.detect_at) => {
                    self.detect_at = None;
                    self.apply(Input::TimerFired(Timer::Detect));
                }
                _ = sleep_until(self.tx_at) => {
                    self.tx_at = None;
                    self.apply(Input::TimerFired(Timer::Tx));
                }
                m = rx.recv() => match m {
                    Some(SessionMsg::Packet(p)) => self.apply(Input::Received(p)),
                    Some(SessionMsg::SetTimers(t)) => self.apply(Input::SetTimers(t)),
                    None => break,
                },
            }
        }
        // AdminDown (RFC 5880 §6.8.16), repeated so that one lost packet does not turn the
        // removal into a failure on the remote system.
        self.apply(Input::AdminDown);
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.apply(Input::TimerFired(Timer::Tx));
        }
    }

    fn apply(&mut self, input: Input) {
        for o in self.session.handle(input) {
            match o {
                Output::Send(p) => match self.sock.try_send(&p.encode()) {
                    Ok(_) => bump(&self.stats.tx_packets),
                    Err(e) => {
                        bump(&self.stats.tx_errors);
                        tracing::debug!(peer = %self.peer, error = %e, "BFD: send failed");
                    }
                },
                Output::ArmTimer(Timer::Tx, d) => self.tx_at = Some(Instant::now() + d),
                Output::ArmTimer(Timer::Detect, d) => self.detect_at = Some(Instant::now() + d),
                Output::StopTimer(Timer::Tx) => self.tx_at = None,
                Output::StopTimer(Timer::Detect) => self.detect_at = None,
                Output::StateChanged { from, to, diag } => self.changed(from, to, diag),
            }
        }
        let snap = self.session.snapshot();
        self.status.send_if_modified(|s| {
            let changed = s.snapshot != snap;
            s.snapshot = snap;
            changed
        });
    }

    fn changed(&mut self, from: State, to: State, diag: Diag) {
        bump(&self.stats.state_changes);
        let snap = self.session.snapshot();
        // A remote AdminDown is not a path failure (RFC 5882 §3.2).
        let failure = from == State::Up
            && to == State::Down
            && !(diag == Diag::NeighborSignaledDown && snap.remote_state == State::AdminDown);
        if failure {
            bump(&self.stats.failures);
            tracing::warn!(peer = %self.peer, %diag, "BFD: session down");
        } else {
            tracing::info!(peer = %self.peer, %from, %to, %diag, "BFD: session state");
        }
        self.status.send_modify(|s| {
            s.snapshot = snap;
            if to == State::Up {
                s.ups += 1;
            }
            if failure {
                s.failures += 1;
            }
        });
    }
}
