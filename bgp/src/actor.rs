//! The RIB actor: the one task that owns the [`Rib`]. It takes route changes from the
//! sessions and the API, runs the decision process, hands each session its routes and the
//! subscribers their best-route changes, and starts, stops and supervises the peer tasks
//! ([`crate::session`]). The messages it exchanges are in [`crate::tasks`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calyx_proto::notification::CeaseSubcode;
use calyx_proto::{AfiSafi, Asn, ErrorCode, NotificationMessage, RouteRefreshSubtype};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ConfigChange, GlobalConfig, PeerConfig};
use crate::rib::{BestRouteChange, PeerId, Rib, RibAction, RibGlobal};
use crate::session::PeerTask;
use crate::sockopt;
use crate::tasks::{PeerCommands, PeerShared, Registered, Registry, RibMsg, INCOMING_QUEUE};

/// Best-route changes recorded for subscribers at which the actor stops taking more UPDATEs
/// and publishes them (they wait in the subscribers' bounded channels meanwhile).
const PUBLISH_AT: usize = 16_384;

struct PeerEntry {
    id: PeerId,
    cfg: PeerConfig,
    commands: Arc<PeerCommands>,
}

pub(crate) struct Actor {
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
    /// The BFD task, started with the first peer that runs BFD (it binds UDP port 3784).
    bfd: Option<Arc<calyx_bfd::Bfd>>,
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
    /// An actor for a speaker with this configuration; `tx` is its own queue (handed to the
    /// peer tasks it starts), `listener` the socket whose TCP MD5 keys it keeps.
    pub(crate) fn new(
        cfg: Arc<GlobalConfig>,
        tx: mpsc::Sender<RibMsg>,
        registry: Registry,
        listener: Option<Arc<TcpListener>>,
    ) -> Actor {
        let deferral = cfg.restarting && cfg.graceful_restart_time > 0;
        let deferral_time = Duration::from_secs(u64::from(cfg.selection_deferral_time));
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
            tx,
            registry,
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
            bfd: None,
        };
        if actor.deferral.is_some() {
            tracing::info!("restarting: route selection deferred until the peers' End-of-RIB");
            actor.rib.defer_selection(true);
        }
        actor
    }

    /// Run until shut down (by [`RibMsg::Shutdown`] or by `cancel`).
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<RibMsg>, cancel: CancellationToken) {
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
                    // Drain what is queued so that route changes are grouped, but publish
                    // once a batch of best-route changes is recorded: 512 UPDATEs of a
                    // storm are half a million changes, held twice while they are sent.
                    let mut n = 0;
                    while !finished && n < 512 && self.rib.changes_recorded() < PUBLISH_AT {
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
                    p.commands.stop(Some(n), restart_after);
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
        // The last subscriber (usually the only one) takes the changes themselves.
        if let Some((last, others)) = self.subscribers.split_last() {
            for s in others {
                for c in &changes {
                    if s.send(c.clone()).await.is_err() {
                        break;
                    }
                }
            }
            for c in changes {
                if last.send(c).await.is_err() {
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
            RibMsg::Lookup(q, reply) => {
                let _ = reply.send(self.rib.lookup(&q));
            }
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
                    p.commands.exit(n.clone(), d);
                    waits.push(r);
                }
                let tx = self.tx.clone();
                let registry = self.registry.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(3), wait_all(waits)).await;
                    // Only now: the registry holds each peer task's channel of accepted
                    // connections, and a task whose channel closes takes it as "the speaker
                    // is gone" and stops without the NOTIFICATION if it sees that before its
                    // exit command (select! picks either).
                    if let Ok(mut r) = registry.lock() {
                        r.clear();
                    }
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
            p.commands.exit(Some(n), d);
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
        let bfd_changed = p.cfg.bfd != cfg.bfd;
        p.cfg = cfg.clone();
        let (id, commands) = (p.id, p.commands.clone());
        if bfd_changed {
            let bfd = if cfg.bfd.is_some() { self.bfd() } else { None };
            commands.set_bfd(crate::tasks::BfdChange {
                bfd,
                settings: cfg.bfd,
            });
        }
        self.rib.update_peer_config(id, cfg.clone());
        if let Ok(mut r) = self.registry.lock() {
            if let Some(entry) = r.get_mut(&addr) {
                entry.cfg = cfg;
            }
        }
        let families = self.rib.families(id);
        if export {
            for f in &families {
                self.rib.refresh(id, *f);
            }
        }
        if import && !families.is_empty() {
            commands.request_refresh(families);
        }
    }

    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        let mut wanted: HashMap<IpAddr, PeerConfig> = HashMap::new();
        for mut p in peers {
            p.address = p.address.to_canonical();
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

    /// The BFD task, started on first use; `None` (logged) when it cannot start, and the
    /// peers then run on their hold timers alone.
    fn bfd(&mut self) -> Option<Arc<calyx_bfd::Bfd>> {
        if self.bfd.is_none() {
            match calyx_bfd::Bfd::start(calyx_bfd::BfdConfig::default()) {
                Ok(b) => self.bfd = Some(Arc::new(b)),
                Err(e) => tracing::error!("BFD cannot start, peers run without it: {e}"),
            }
        }
        self.bfd.clone()
    }

    /// Start the task of a newly configured peer.
    fn start_peer(&mut self, a: IpAddr, cfg: PeerConfig) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(pw) = &cfg.password {
            self.listener_md5(a, Some(pw));
        }
        let counters = self.rib.add_peer(
            id,
            cfg.clone(),
            Asn(cfg.effective_local_as(self.global.local_as)),
        );
        let shared = Arc::new(PeerShared::new(counters));
        let (incoming, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let commands = Arc::new(PeerCommands::default());
        let bfd = if cfg.bfd.is_some() { self.bfd() } else { None };
        let task = PeerTask {
            id,
            bfd,
            cfg: cfg.clone(),
            global: self.global.clone(),
            rib: self.tx.clone(),
            shared: shared.clone(),
            epoch: self.epoch,
        };
        tokio::spawn(supervise(
            id,
            // Every log line of the session names this speaker and the peer.
            task.run(incoming_rx, commands.clone()).instrument(
                tracing::info_span!("session", local = %self.global.router_id, peer = %a),
            ),
            self.tx.clone(),
        ));
        if let Ok(mut r) = self.registry.lock() {
            r.insert(
                a,
                Registered {
                    incoming,
                    cfg: cfg.clone(),
                    shared,
                },
            );
        }
        self.peers.insert(a, PeerEntry { id, cfg, commands });
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

/// Wait for every receiver (each ends when its task says so or is gone).
async fn wait_all(waits: Vec<oneshot::Receiver<()>>) {
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
