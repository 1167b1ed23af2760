//! The embeddable speaker: one RIB task (actor, the only owner of the [`Rib`]), one task per
//! peer ([`crate::session`]), one listener task. All channels are bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use calyx_proto::notification::CeaseSubcode;
use calyx_proto::{
    AfiSafi, Asn, ErrorCode, NotificationMessage, PathAttributes, RouteRefreshSubtype,
    UpdateMessage,
};
use ipnet::IpNet;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::attrs::Prefix;
use crate::config::{ConfigChange, GlobalConfig, PeerConfig, PeerLabel};
use crate::fsm::State;
use crate::rib::{BestRouteChange, PeerId, Rib, RibAction, RibGlobal, UpInfo};
use crate::session::{PeerCtl, PeerShared, PeerTask};
use crate::sockopt;

/// Errors of the speaker API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The speaker has stopped.
    #[error("the speaker has stopped")]
    Stopped,
}

/// Messages to the RIB task: from sessions, and from the API.
#[derive(Debug)]
pub(crate) enum RibMsg {
    Up {
        id: PeerId,
        generation: u64,
        info: UpInfo,
    },
    Down {
        id: PeerId,
        generation: u64,
        keep_stale: Option<Duration>,
    },
    Update {
        id: PeerId,
        generation: u64,
        update: UpdateMessage,
    },
    Refresh {
        id: PeerId,
        generation: u64,
        family: AfiSafi,
        subtype: RouteRefreshSubtype,
    },
    SetPeers(Vec<PeerConfig>, oneshot::Sender<()>),
    Originate(Prefix, PathAttributes),
    Withdraw(Prefix),
    Subscribe(mpsc::Sender<BestRouteChange>),
    Shutdown {
        graceful: bool,
        done: oneshot::Sender<()>,
    },
    Finished,
    /// A peer task ended without being told to (it panicked): start the peer afresh.
    PeerTaskFailed {
        id: PeerId,
    },
}

/// A snapshot of one peer for `calyx node status` and metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Peer address.
    pub address: IpAddr,
    /// Peer AS.
    pub remote_as: u32,
    /// Label (mesh, global, node-specific).
    pub label: PeerLabel,
    /// FSM state.
    pub state: State,
    /// When the state last changed.
    pub since: SystemTime,
    /// Time since Established, if it is.
    pub uptime: Option<Duration>,
    /// The last error (NOTIFICATION sent/received, connect failure, hold timer expiry).
    pub last_error: Option<String>,
    /// Prefixes the peer announces (accepted or filtered).
    pub prefixes_received: u64,
    /// Prefixes accepted by the import policy.
    pub prefixes_accepted: u64,
    /// Prefixes advertised to the peer.
    pub prefixes_advertised: u64,
    /// Negotiated capabilities.
    pub capabilities: Vec<String>,
    /// The peer's BGP identifier, once known.
    pub peer_router_id: Option<std::net::Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// How many times the session reached Established since the peer was configured: more
    /// than one means it was reset in between.
    pub established_count: u64,
}

type Registry = Arc<Mutex<HashMap<IpAddr, (mpsc::Sender<PeerCtl>, PeerConfig, Arc<PeerShared>)>>>;

/// A running BGP speaker.
#[derive(Debug)]
pub struct Speaker {
    tx: mpsc::Sender<RibMsg>,
    registry: Registry,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        a => a,
    }
}

impl Speaker {
    /// Start the speaker: bind the listener (if configured) and spawn the RIB task. Cancelling
    /// `shutdown` stops everything (as [`Speaker::shutdown`] with `graceful = false`).
    pub async fn start(cfg: GlobalConfig, shutdown: CancellationToken) -> Result<Speaker, Error> {
        if cfg.router_id.is_unspecified() {
            return Err(Error::Config("router ID 0.0.0.0".into()));
        }
        let listener = match cfg.listen {
            Some(addr) => Some(Arc::new(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Bind(addr, e))?,
            )),
            None => None,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel(1024);
        let deferral = cfg.restarting && cfg.graceful_restart_time > 0;
        let deferral_time = Duration::from_secs(u64::from(cfg.selection_deferral_time));
        let cfg = Arc::new(cfg);
        let listen_task = listener
            .clone()
            .map(|l| tokio::spawn(accept_loop(l, registry.clone())));
        let mut actor = Actor {
            rib: Rib::new(RibGlobal {
                local_as: Asn(cfg.local_as),
                router_id: cfg.router_id,
                cluster_id: cfg.cluster_id.unwrap_or(cfg.router_id),
                multipath: cfg.multipath,
                next_hop_v4: cfg.next_hop_v4,
                next_hop_v6: cfg.next_hop_v6,
            }),
            global: cfg,
            tx: tx.clone(),
            registry: registry.clone(),
            peers: HashMap::new(),
            next_id: 1,
            generations: HashMap::new(),
            stale: HashMap::new(),
            subscribers: Vec::new(),
            listener,
            epoch: Instant::now(),
            deferral: deferral.then(|| Deferral {
                deadline: Instant::now() + deferral_time,
                peers_known: false,
                owed: HashMap::new(),
            }),
        };
        if actor.deferral.is_some() {
            tracing::info!("restarting: route selection deferred until the peers' End-of-RIB");
            actor.rib.defer_selection(true);
        }
        let task = tokio::spawn(async move {
            actor.run(rx, shutdown).await;
            if let Some(l) = listen_task {
                l.abort();
            }
        });
        Ok(Speaker {
            tx,
            registry,
            local_addr,
            task,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Replace the set of peers: new ones start, removed ones stop (Cease "peer
    /// de-configured"), changed ones restart; unchanged ones are not touched.
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(RibMsg::SetPeers(peers, done))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Originate `prefix` (next hop self towards every peer). `attrs` may set ORIGIN,
    /// communities, MED, LOCAL_PREF; `None` means ORIGIN IGP and nothing else.
    pub async fn originate(
        &self,
        prefix: IpNet,
        attrs: Option<PathAttributes>,
    ) -> Result<(), Error> {
        self.tx
            .send(RibMsg::Originate(
                Prefix::from_net(prefix.trunc()),
                attrs.unwrap_or_default(),
            ))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Withdraw a prefix this speaker originated.
    pub async fn withdraw(&self, prefix: IpNet) -> Result<(), Error> {
        self.tx
            .send(RibMsg::Withdraw(Prefix::from_net(prefix.trunc())))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Subscribe to best-route changes of routes learned from peers. The current table comes
    /// first, then every change. The channel is bounded: a slow reader slows the RIB.
    pub async fn subscribe(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<BestRouteChange>, Error> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.tx
            .send(RibMsg::Subscribe(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(rx)
    }

    /// A status snapshot per peer.
    pub fn status(&self) -> Vec<PeerStatus> {
        let reg = match self.registry.lock() {
            Ok(r) => r
                .values()
                .map(|(_, c, s)| (c.clone(), s.clone()))
                .collect::<Vec<_>>(),
            Err(_) => return Vec::new(),
        };
        let mut v: Vec<PeerStatus> = reg
            .into_iter()
            .filter_map(|(cfg, sh)| {
                let st = sh.status.lock().ok()?.clone();
                let c = &sh.counters;
                use std::sync::atomic::Ordering::Relaxed;
                Some(PeerStatus {
                    address: cfg.address,
                    remote_as: cfg.remote_as,
                    label: cfg.label,
                    state: st.state,
                    since: st.since,
                    uptime: st.established_at.map(|t| t.elapsed()),
                    last_error: st.last_error,
                    prefixes_received: c.received.load(Relaxed),
                    prefixes_accepted: c.accepted.load(Relaxed),
                    prefixes_advertised: c.advertised.load(Relaxed),
                    capabilities: st.capabilities,
                    peer_router_id: st.peer_id,
                    hold_time: st.hold_time,
                    established_count: st.established_count,
                })
            })
            .collect();
        v.sort_by_key(|s| s.address);
        v
    }

    /// Stop every session and the speaker. `graceful`: close the connections without a
    /// NOTIFICATION, so that graceful-restart peers keep our routes while we restart;
    /// otherwise send Cease / Administrative Shutdown with a shutdown communication
    /// (RFC 8203).
    pub async fn shutdown(self, graceful: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .tx
            .send(RibMsg::Shutdown { graceful, done })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

async fn accept_loop(l: Arc<TcpListener>, registry: Registry) {
    loop {
        let Ok((stream, remote)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ip = canonical(remote.ip());
        let ctl = registry
            .lock()
            .ok()
            .and_then(|r| r.get(&ip).map(|(c, _, _)| c.clone()));
        match ctl {
            Some(c) => {
                let _ = c.send(PeerCtl::Incoming(stream)).await;
            }
            None => tracing::debug!(%remote, "connection from an unknown peer refused"),
        }
    }
}

struct PeerEntry {
    id: PeerId,
    cfg: PeerConfig,
    ctl: mpsc::Sender<PeerCtl>,
}

struct Actor {
    rib: Rib,
    global: Arc<GlobalConfig>,
    tx: mpsc::Sender<RibMsg>,
    registry: Registry,
    peers: HashMap<IpAddr, PeerEntry>,
    next_id: PeerId,
    generations: HashMap<PeerId, u64>,
    stale: HashMap<PeerId, (Instant, Duration)>,
    subscribers: Vec<mpsc::Sender<BestRouteChange>>,
    listener: Option<Arc<TcpListener>>,
    epoch: Instant,
    deferral: Option<Deferral>,
}

/// Route selection deferral of a restarting speaker (RFC 4724 §4.1): it ends when every
/// configured peer is up and has sent End-of-RIB for each family (peers without graceful
/// restart, or restarting themselves, count once up), or at the deadline.
#[derive(Debug)]
struct Deferral {
    deadline: Instant,
    /// The peer set has been given at least once (before that, "every peer" means nothing).
    peers_known: bool,
    /// Established peers: families still owing an End-of-RIB.
    owed: HashMap<PeerId, Vec<AfiSafi>>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<RibMsg>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gc_at = Instant::now() + Duration::from_secs(30);
        let mut shutdown_done: Option<oneshot::Sender<()>> = None;
        let mut cancelled = false;
        loop {
            let pending = self.rib.has_pending();
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    let mut finished = self.handle(m, &mut shutdown_done).await;
                    // Drain what is queued so that route changes are grouped.
                    let mut n = 0;
                    while !finished && n < 512 {
                        match rx.try_recv() {
                            Ok(m) => finished = self.handle(m, &mut shutdown_done).await,
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    if finished {
                        break;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(2)), if pending => {}
                _ = tick.tick() => {
                    let now = Instant::now();
                    let expired: Vec<PeerId> = self.stale.iter().filter(|(_, (t, _))| *t <= now).map(|(k, _)| *k).collect();
                    for id in expired {
                        self.stale.remove(&id);
                        if self.rib.has_stale(id) {
                            tracing::info!(peer = id, "graceful restart: stale routes flushed");
                            self.rib.flush_stale(id);
                        }
                    }
                    if now >= gc_at {
                        self.rib.collect_garbage();
                        gc_at = now + Duration::from_secs(30);
                    }
                }
                _ = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    let (done, _rx) = oneshot::channel();
                    self.handle(RibMsg::Shutdown { graceful: false, done }, &mut shutdown_done).await;
                }
            }
            self.check_deferral();
            self.rib.flush();
            self.publish().await;
            for a in self.rib.take_actions() {
                let RibAction::ClosePeer(id, n, restart_after) = a;
                if let Some(p) = self.peers.values().find(|p| p.id == id) {
                    tracing::warn!(peer = %p.cfg.address, "maximum prefixes exceeded");
                    let _ = p.ctl.try_send(PeerCtl::Stop {
                        notification: Some(n),
                        restart_after,
                    });
                }
            }
        }
        if let Some(d) = shutdown_done {
            let _ = d.send(());
        }
    }

    /// End the route selection deferral when every peer has sent its End-of-RIB, or at the
    /// deadline.
    fn check_deferral(&mut self) {
        let Some(d) = &self.deferral else {
            return;
        };
        let all_in = d.peers_known
            && self
                .peers
                .values()
                .all(|p| d.owed.get(&p.id).is_some_and(|f| f.is_empty()));
        let late = Instant::now() >= d.deadline;
        if all_in || late {
            if late && !all_in {
                tracing::warn!("route selection deferral timer expired before every End-of-RIB");
            } else {
                tracing::info!("End-of-RIB from every peer: route selection done");
            }
            self.deferral = None;
            self.rib.defer_selection(false);
        }
    }

    async fn publish(&mut self) {
        let changes = self.rib.take_changes();
        if changes.is_empty() {
            return;
        }
        for s in &self.subscribers {
            for c in &changes {
                if s.send(c.clone()).await.is_err() {
                    break;
                }
            }
        }
        self.subscribers.retain(|s| !s.is_closed());
        if self.subscribers.is_empty() {
            self.rib.set_tracking(false);
        }
    }

    /// Returns true when the actor should stop.
    async fn handle(&mut self, m: RibMsg, shutdown_done: &mut Option<oneshot::Sender<()>>) -> bool {
        match m {
            RibMsg::Update {
                id,
                generation,
                update,
            } => {
                if self.generations.get(&id) == Some(&generation) {
                    let eor = self.rib.apply_update(id, update);
                    if let (Some(f), Some(d)) = (eor, self.deferral.as_mut()) {
                        if let Some(owed) = d.owed.get_mut(&id) {
                            owed.retain(|x| *x != f);
                        }
                    }
                    if self.stale.contains_key(&id) && !self.rib.has_stale(id) {
                        self.stale.remove(&id);
                    }
                }
            }
            RibMsg::Up {
                id,
                generation,
                info,
            } => {
                if self.peers.values().any(|p| p.id == id) {
                    if let Some(d) = self.deferral.as_mut() {
                        let owed = if info.wait_eor {
                            info.families.clone()
                        } else {
                            Vec::new()
                        };
                        d.owed.insert(id, owed);
                    }
                    self.generations.insert(id, generation);
                    self.rib.peer_up(id, info);
                    if self.rib.has_stale(id) {
                        let d = self
                            .stale
                            .get(&id)
                            .map(|(_, d)| *d)
                            .unwrap_or(Duration::from_secs(120));
                        self.stale
                            .insert(id, (Instant::now() + d.max(Duration::from_secs(60)), d));
                    }
                }
            }
            RibMsg::Down {
                id,
                generation,
                keep_stale,
            } => {
                if self.generations.get(&id) == Some(&generation) {
                    if let Some(d) = self.deferral.as_mut() {
                        d.owed.remove(&id);
                    }
                    self.generations.remove(&id);
                    self.rib.peer_down(id, keep_stale.is_some());
                    if let Some(d) = keep_stale {
                        self.stale.insert(id, (Instant::now() + d, d));
                    }
                }
            }
            RibMsg::Refresh {
                id,
                generation,
                family,
                subtype,
            } => {
                if self.generations.get(&id) == Some(&generation) {
                    match subtype {
                        RouteRefreshSubtype::Request => self.rib.refresh(id, family),
                        RouteRefreshSubtype::BeginningOfRefresh => {
                            self.rib.begin_refresh(id, family)
                        }
                        RouteRefreshSubtype::EndOfRefresh => self.rib.end_refresh(id, family),
                        // RFC 7313 §5: ignore unknown subtypes.
                        RouteRefreshSubtype::Other(_) => {}
                    }
                }
            }
            RibMsg::SetPeers(peers, done) => {
                self.set_peers(peers);
                if let Some(d) = self.deferral.as_mut() {
                    d.peers_known = true;
                }
                let _ = done.send(());
            }
            RibMsg::Originate(p, a) => self.rib.originate(p, a),
            RibMsg::Withdraw(p) => self.rib.withdraw_local(p),
            RibMsg::Subscribe(s) => {
                self.rib.set_tracking(true);
                for c in self.rib.snapshot() {
                    if s.send(c).await.is_err() {
                        break;
                    }
                }
                self.subscribers.push(s);
            }
            RibMsg::Shutdown { graceful, done } => {
                let n = (!graceful).then(|| {
                    NotificationMessage::shutdown(
                        CeaseSubcode::AdministrativeShutdown,
                        "calyx: speaker shutting down",
                    )
                });
                let mut waits = Vec::new();
                for (_, p) in self.peers.drain() {
                    let (d, r) = oneshot::channel();
                    let _ = p.ctl.try_send(PeerCtl::Exit {
                        notification: n.clone(),
                        done: d,
                    });
                    waits.push(r);
                }
                if let Ok(mut r) = self.registry.lock() {
                    r.clear();
                }
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(3), futures_join(waits)).await;
                    let _ = tx.send(RibMsg::Finished).await;
                });
                *shutdown_done = Some(done);
            }
            RibMsg::Finished => return true,
            RibMsg::PeerTaskFailed { id } => {
                let found = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.id == id)
                    .map(|(a, p)| (*a, p.cfg.clone()));
                if let Some((addr, cfg)) = found {
                    tracing::error!(peer = %addr, "peer task failed; starting the peer afresh");
                    self.stop_peer(addr, CeaseSubcode::OutOfResources);
                    self.start_peer(addr, cfg);
                }
            }
        }
        false
    }

    fn listener_md5(&self, addr: IpAddr, pw: Option<&str>) {
        if let Some(l) = &self.listener {
            let fd = l.as_raw_fd();
            let a = match (l.local_addr().map(|a| a.is_ipv6()).unwrap_or(false), addr) {
                (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                (_, a) => a,
            };
            if let Err(e) = sockopt::set_md5(fd, a, pw) {
                tracing::warn!(peer = %addr, "TCP MD5 on listener: {e}");
            }
        }
    }

    fn stop_peer(&mut self, addr: IpAddr, sub: CeaseSubcode) {
        if let Some(p) = self.peers.remove(&addr) {
            let (d, _r) = oneshot::channel();
            let n = NotificationMessage::new(ErrorCode::Cease(sub), Vec::new());
            let _ = p.ctl.try_send(PeerCtl::Exit {
                notification: Some(n),
                done: d,
            });
            self.rib.remove_peer(p.id);
            self.generations.remove(&p.id);
            self.stale.remove(&p.id);
            if p.cfg.password.is_some() {
                self.listener_md5(addr, None);
            }
            if let Ok(mut r) = self.registry.lock() {
                r.remove(&addr);
            }
        }
    }

    /// Apply a policy-only change without resetting the session: what we send is re-evaluated
    /// (a refresh towards the peer, withdrawing what is no longer exported), and for import
    /// changes the peer is asked to send its routes again (ROUTE-REFRESH; the session resets
    /// instead if the peer cannot refresh).
    fn soft_reconfigure(&mut self, addr: IpAddr, cfg: PeerConfig, import: bool, export: bool) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        tracing::info!(peer = %addr, import, export, "peer policy changed: soft reconfiguration");
        p.cfg = cfg.clone();
        let (id, ctl) = (p.id, p.ctl.clone());
        self.rib.update_peer_config(id, cfg.clone());
        if let Ok(mut r) = self.registry.lock() {
            if let Some(entry) = r.get_mut(&addr) {
                entry.1 = cfg;
            }
        }
        let families = self.rib.families(id);
        if export {
            for f in &families {
                self.rib.refresh(id, *f);
            }
        }
        if import && !families.is_empty() {
            let _ = ctl.try_send(PeerCtl::RequestRefresh(families));
        }
    }

    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        let mut wanted: HashMap<IpAddr, PeerConfig> = HashMap::new();
        for mut p in peers {
            p.address = canonical(p.address);
            wanted.insert(p.address, p);
        }
        let existing: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in existing {
            let Some(old) = self.peers.get(&a).map(|p| p.cfg.clone()) else {
                continue;
            };
            match wanted.get(&a) {
                None => self.stop_peer(a, CeaseSubcode::PeerDeconfigured),
                Some(c) => match ConfigChange::between(&old, c) {
                    ConfigChange::None => {}
                    ConfigChange::Reset => {
                        self.stop_peer(a, CeaseSubcode::OtherConfigurationChange)
                    }
                    ConfigChange::Soft { import, export } => {
                        self.soft_reconfigure(a, c.clone(), import, export)
                    }
                },
            }
        }
        for (a, cfg) in wanted {
            if !self.peers.contains_key(&a) {
                self.start_peer(a, cfg);
            }
        }
    }

    /// Start the task of a newly configured peer.
    fn start_peer(&mut self, a: IpAddr, cfg: PeerConfig) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(pw) = &cfg.password {
            self.listener_md5(a, Some(pw));
        }
        let counters = self
            .rib
            .add_peer(id, cfg.clone(), Asn(self.global.local_as));
        let shared = Arc::new(PeerShared::new(counters));
        let (ctl, ctl_rx) = mpsc::channel(16);
        let task = PeerTask {
            id,
            cfg: cfg.clone(),
            global: self.global.clone(),
            rib: self.tx.clone(),
            shared: shared.clone(),
            epoch: self.epoch,
        };
        tokio::spawn(supervise(id, task.run(ctl_rx), self.tx.clone()));
        if let Ok(mut r) = self.registry.lock() {
            r.insert(a, (ctl.clone(), cfg.clone(), shared));
        }
        self.peers.insert(a, PeerEntry { id, cfg, ctl });
    }
}

/// Run a peer task; if it panics, tell the RIB task so that the peer does not stay registered
/// with nobody serving it.
async fn supervise(
    id: PeerId,
    task: impl std::future::Future<Output = ()> + Send + 'static,
    rib: mpsc::Sender<RibMsg>,
) {
    if let Err(e) = tokio::spawn(task).await {
        if e.is_panic() {
            tracing::error!(peer = id, "peer task panicked");
            let _ = rib.send(RibMsg::PeerTaskFailed { id }).await;
        }
    }
}

async fn futures_join(waits: Vec<oneshot::Receiver<()>>) {
    for w in waits {
        let _ = w.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_peer_task_is_reported() {
        let (tx, mut rx) = mpsc::channel(4);
        supervise(7, async { panic!("boom") }, tx.clone()).await;
        assert!(matches!(
            rx.try_recv(),
            Ok(RibMsg::PeerTaskFailed { id: 7 })
        ));
        supervise(8, async {}, tx).await;
        assert!(
            rx.try_recv().is_err(),
            "a task that returns is not a failure"
        );
    }
}
