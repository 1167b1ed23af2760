//! The tokio task around one peer: it owns the [`Fsm`], runs its timers, carries out its
//! outputs, and writes what the RIB hands it. Modules, one job each:
//! * [`conn`]: one TCP connection: connect, socket options, bounded writes, close;
//! * [`reader`]: the reader task of a connection (framing, decoding; once Established it
//!   hands UPDATEs straight to the RIB, so a busy RIB slows the reading and TCP pushes back);
//! * [`collide`]: a second connection to the peer (RFC 4271 §6.8 collisions, and a peer that
//!   reconnects while Established);
//! * outbound UPDATE encoding is [`crate::encode`].
//!
//! Every failure is reported, never swallowed: a write that fails or times out closes the
//! connection, an UPDATE that cannot be encoded is logged and counted.

mod collide;
mod conn;
mod reader;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use calyx_proto::notification::CeaseSubcode;
use calyx_proto::pack::UpdatePacker;
use calyx_proto::{
    AfiSafi, Asn, ErrorCode, Message, NotificationMessage, RouteRefreshMessage,
    RouteRefreshSubtype, UpdateMessage,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::config::{GlobalConfig, PeerConfig};
use crate::encode;
use crate::fsm::{self, DownReason, Fsm, FsmConfig, Input, Negotiated, Output, State, Timer};
use crate::rib::{PeerId, UpInfo};
use crate::tasks::{Command, Event, OutMsg, PeerCommands, PeerShared, RibMsg, OUT_QUEUE};
use collide::{Candidate, Reconnect};
use conn::{apply_socket_options, connect, encode as encode_message, AbortOnDrop, Conn};

/// One peer's task: its configuration and its links to the rest of the speaker.
pub(crate) struct PeerTask {
    pub id: PeerId,
    pub cfg: PeerConfig,
    pub global: Arc<GlobalConfig>,
    pub rib: mpsc::Sender<RibMsg>,
    pub shared: Arc<PeerShared>,
    pub epoch: Instant,
    /// The BFD task, when this peer runs BFD (`cfg.bfd`).
    pub bfd: Option<Arc<calyx_bfd::Bfd>>,
}

/// The peer's BFD session for the life of the peer task: its status feed, the failures
/// already acted on, and the removal of the session when the task ends (also on a panic).
struct BfdLink {
    status: tokio::sync::watch::Receiver<calyx_bfd::SessionStatus>,
    failures: u64,
    bfd: Arc<calyx_bfd::Bfd>,
    peer: IpAddr,
}

impl Drop for BfdLink {
    fn drop(&mut self) {
        self.bfd.remove(self.peer);
    }
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

impl PeerTask {
    fn ebgp(&self) -> bool {
        self.cfg.remote_as != self.local_as()
    }

    /// The AS this session presents (the peer's `local_as`, or the global one).
    fn local_as(&self) -> u32 {
        self.cfg.effective_local_as(self.global.local_as)
    }

    fn fsm_config(&self) -> FsmConfig {
        let restart_time = self
            .cfg
            .graceful_restart_time
            .unwrap_or(self.global.graceful_restart_time);
        let gr = (self.cfg.graceful_restart
            && self.global.graceful_restart_time > 0
            && restart_time > 0)
            .then_some(restart_time);
        FsmConfig {
            local_as: Asn(self.local_as()),
            router_id: self.global.router_id,
            remote_as: Asn(self.cfg.remote_as),
            hold_time: self.cfg.hold_time,
            keepalive: self.cfg.keepalive_time,
            passive: self.cfg.passive,
            connect_retry: self.cfg.connect_retry_time(),
            idle_hold: self.cfg.connect_retry_time(),
            open_hold: fsm::open_hold(self.cfg.hold_time),
            capabilities: fsm::capabilities(
                Asn(self.local_as()),
                &families(&self.cfg),
                gr,
                self.global.restarting,
            ),
        }
    }

    /// Add the peer's BFD session (when it runs BFD); a failure is logged and the session
    /// runs on its hold timer alone.
    async fn bfd_link(&self) -> Option<BfdLink> {
        self.bfd_link_with(self.bfd.as_ref(), self.cfg.bfd).await
    }

    /// [`PeerTask::bfd_link`] with these settings (a configuration change).
    async fn bfd_link_with(
        &self,
        bfd: Option<&Arc<calyx_bfd::Bfd>>,
        settings: Option<crate::config::BfdSettings>,
    ) -> Option<BfdLink> {
        let (bfd, settings) = (bfd?, settings?);
        match bfd
            .add(self.cfg.address, self.cfg.local_address, settings.timers())
            .await
        {
            Ok(status) => {
                let st = *status.borrow();
                self.shared.update(|x| x.bfd = Some(st));
                Some(BfdLink {
                    failures: st.failures,
                    status,
                    bfd: bfd.clone(),
                    peer: self.cfg.address,
                })
            }
            Err(e) => {
                tracing::error!(peer = %self.cfg.address, "BFD session not started: {e}");
                None
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run until told to exit.
    /// Run until told to exit (or until the speaker is gone): `incoming` brings the
    /// connections accepted from the peer, `commands` the administrative commands.
    pub async fn run(self, mut incoming: mpsc::Receiver<TcpStream>, commands: Arc<PeerCommands>) {
        let mut s = Session {
            fsm: Fsm::new(self.fsm_config()),
            timers: HashMap::new(),
            conn: None,
            candidate: None,
            reconnect: None,
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
        let mut bfd = self.bfd_link().await;
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
            let reconnect_deadline = s.reconnect.as_ref().map(|r| r.deadline);
            tokio::select! {
                c = commands.next() => match c {
                    Command::Stop { notification, restart_after } => {
                        s.admin_down = restart_after.is_none();
                        // The stop concerns the peer, not one connection: a waiting second
                        // connection hears it too instead of taking over.
                        s.drop_second(notification.clone()).await;
                        queue.push(Input::Stop { notification, restart_after });
                    }
                    Command::Exit { notification, done } => {
                        s.drop_second(notification.clone()).await;
                        queue.push(Input::Stop { notification, restart_after: None });
                        exit = Some(done);
                    }
                    Command::RequestRefresh(families) => self.request_refresh(&mut s, families, &mut queue).await,
                    Command::SetBfd(change) => {
                        // The new link first, then the old one goes: with the same peer the BFD
                        // session stays (new timers by a Poll Sequence), no flap.
                        let new = self.bfd_link_with(change.bfd.as_ref(), change.settings).await;
                        if new.is_none() {
                            self.shared.update(|x| x.bfd = None);
                        }
                        bfd = new;
                    }
                },
                ch = async { match bfd.as_mut() { Some(l) => l.status.changed().await, None => std::future::pending().await } }, if bfd.is_some() => {
                    match (ch, bfd.as_mut()) {
                        (Ok(()), Some(l)) => {
                            let st = *l.status.borrow_and_update();
                            self.shared.update(|x| x.bfd = Some(st));
                            if st.failures > l.failures {
                                l.failures = st.failures;
                                if s.fsm.state() == State::Established {
                                    tracing::warn!(peer = %self.cfg.address, diag = %st.snapshot.diag, "BFD detected a failure: session down");
                                    queue.push(Input::BfdDown);
                                }
                            }
                        }
                        _ => {
                            tracing::warn!(peer = %self.cfg.address, "the BFD task is gone");
                            bfd = None;
                        }
                    }
                },
                c = incoming.recv(), if exit.is_none() => match c {
                    None => {
                        // The speaker is gone.
                        s.drop_second(None).await;
                        queue.push(Input::Stop { notification: None, restart_after: None });
                        let (tx, _rx) = oneshot::channel();
                        exit = Some(tx);
                    }
                    Some(stream) => {
                        if let Err(e) = apply_socket_options(stream.as_raw_fd(), &self.cfg, self.ebgp()) {
                            tracing::debug!("socket options: {e}");
                        }
                        self.arrival(&mut s, stream, false, &mut queue).await;
                    }
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
                ev = async { match s.conn.as_mut() { Some(c) => c.events.recv().await.map(|e| *e), None => std::future::pending().await } }, if s.conn.is_some() => {
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
                ev = async { match s.reconnect.as_mut() { Some(r) => r.conn.events.recv().await.map(|e| *e), None => std::future::pending().await } }, if s.reconnect.is_some() => {
                    self.reconnect_event(&mut s, ev, &mut queue).await;
                }
                _ = async { match reconnect_deadline { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } }, if reconnect_deadline.is_some() => {
                    self.reconnect_deadline(&mut s, &mut queue).await;
                }
                ev = async { match s.candidate.as_mut() { Some(c) => c.conn.events.recv().await.map(|e| *e), None => std::future::pending().await } }, if s.candidate.is_some() => {
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
                    if let (Some(c), Some(b)) = (s.conn.as_mut(), encode_message(&m, &ctx)) {
                        let notification = matches!(m, Message::Notification(_));
                        c.notified |= notification;
                        if c.write(&b).await.is_err() && !notification {
                            queue.push(Input::TcpClosed);
                        }
                    }
                }
                Output::ArmTimer(t, d) => {
                    let d = match t {
                        Timer::ConnectRetry | Timer::IdleHold => jittered(d),
                        Timer::Hold | Timer::Keepalive => d,
                    };
                    s.timers.insert(t, Instant::now() + d);
                }
                Output::StopTimer(t) => {
                    s.timers.remove(&t);
                }
                Output::Close => {
                    if let Some(c) = s.conn.take() {
                        // What the FSM had to say was written by Output::Send before.
                        c.close(None).await;
                    }
                    s.connecting = None;
                    s.out_rx = None;
                    s.packer = None;
                    if let Some(r) = s.reconnect.take() {
                        // The connection from the restarted peer replaces the session (or,
                        // if the old one failed first, is what is left of it).
                        if !s.admin_down {
                            s.conn = Some(r.conn);
                            queue.push(Input::TcpAccepted);
                            if let Some(open) = r.open {
                                queue.push(Input::Message(Message::Open(open)));
                            }
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
            if let Err(e) =
                Message::RouteRefresh(RouteRefreshMessage::request(f)).encode(&ctx, &mut b)
            {
                tracing::error!(peer = %self.cfg.address, "cannot encode ROUTE-REFRESH for {f}: {e}");
            }
        }
        if let Some(c) = s.conn.as_mut() {
            if let Err(e) = c.write(&b).await {
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
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
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
            context: neg.context(),
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
                if let Err(e) = UpdateMessage::end_of_rib(f).encode(packer.context(), &mut b) {
                    tracing::error!(peer = %self.cfg.address, "cannot encode End-of-RIB for {f}: {e}");
                }
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
                if let Err(e) = Message::RouteRefresh(m).encode(packer.context(), &mut b) {
                    tracing::error!(peer = %self.cfg.address, "cannot encode ROUTE-REFRESH for {f}: {e}");
                }
            }
            OutMsg::Routes(batch) => {
                for u in encode::encode_batch(packer, batch, &mut b) {
                    // The RIB checked these sets before marking them advertised; if the two
                    // disagree, the prefixes were withdrawn instead and say so here.
                    tracing::error!(peer = %self.cfg.address, prefixes = u.prefixes, "UPDATE cannot be encoded, withdrawn instead: {}", u.error);
                    self.shared
                        .counters
                        .not_encoded
                        .fetch_add(u.prefixes as u64, AtOrd::Relaxed);
                }
            }
        }
        c.write(&b).await
    }
}

/// The state of a peer task around its FSM.
struct Session {
    fsm: Fsm,
    timers: HashMap<Timer, Instant>,
    /// The connection the FSM runs on.
    conn: Option<Conn>,
    /// A second connection waiting on a collision (only while the FSM is in OpenSent).
    candidate: Option<Candidate>,
    /// A connection from the peer while Established with graceful restart, until its OPEN
    /// says whether the peer restarted (RFC 4724 §4.2) or it lost a collision.
    reconnect: Option<Reconnect>,
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

impl Session {
    /// Close the second connection of a collision, if there is one, with this NOTIFICATION.
    async fn drop_second(&mut self, notification: Option<NotificationMessage>) {
        if let Some(c) = self.candidate.take() {
            c.conn.close(notification).await;
        }
        if let Some(r) = self.reconnect.take() {
            r.conn.close(None).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::GlobalConfig;
    use crate::tasks::INCOMING_QUEUE;
    use tokio::net::TcpListener;

    /// A peer task whose queue of accepted connections is full still gets its exit (before,
    /// commands shared that queue and were sent with `try_send`, and were lost when it was
    /// full).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exit_is_not_lost_when_the_connection_queue_is_full() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let mut clients = Vec::new();
        for _ in 0..=INCOMING_QUEUE {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (s, _) = l.accept().await.unwrap();
            let _ = tx.try_send(s);
        }
        assert!(tx.capacity() == 0, "the queue is full");
        let commands = Arc::new(PeerCommands::default());
        let (done, done_rx) = oneshot::channel();
        commands.exit(None, done);
        let (rib, _rib_rx) = mpsc::channel(16);
        let task = PeerTask {
            id: 1,
            bfd: None,
            cfg: PeerConfig {
                passive: true,
                ..PeerConfig::new("127.0.0.1".parse().unwrap(), 65000)
            },
            global: Arc::new(GlobalConfig {
                router_id: "10.0.0.1".parse().unwrap(),
                local_as: 65000,
                ..Default::default()
            }),
            rib,
            shared: Arc::new(PeerShared::new(Default::default())),
            epoch: Instant::now(),
        };
        let h = tokio::spawn(task.run(rx, commands));
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .expect("the exit was not carried out")
            .expect("the exit was dropped");
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("the task did not end")
            .unwrap();
        drop(tx);
    }
}

/// `d` scaled by a random factor in [0.75, 1.0], as RFC 4271 §10 asks for the ConnectRetry
/// timer (and here for the idle hold before an automatic restart, which starts the next
/// connect): two speakers whose connections collided and were both refused must not retry in
/// lockstep, or a mesh pair can collide again on every retry.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.75..=1.0))
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn connect_retry_jitter_stays_within_three_quarters_and_the_whole() {
        let d = Duration::from_secs(5);
        let got: Vec<Duration> = (0..1000).map(|_| jittered(d)).collect();
        assert!(got.iter().all(|j| *j >= d.mul_f64(0.75) && *j <= d));
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert!(distinct.len() > 100, "the factor is random");
    }
}
