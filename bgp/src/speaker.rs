//! The embeddable speaker's API ([`Speaker`]): a handle on the RIB actor ([`crate::actor`]),
//! which runs the peer tasks, and on the listener task, which hands each accepted connection
//! to its peer's task. The tasks and their channels are drawn in [`crate::tasks`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use calyx_proto::PathAttributes;
use ipnet::IpNet;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actor::Actor;
use crate::attrs::Prefix;
use crate::config::{GlobalConfig, PeerConfig, PeerLabel};
use crate::fsm::State;
use crate::rib::{BestRouteChange, RouteQuery, RouteTable};
use crate::tasks::{Registry, RibMsg, RIB_QUEUE};

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
    /// Announcements left out because no UPDATE could carry them to the peer (attributes
    /// longer than its maximum message); they are not counted as advertised.
    pub prefixes_not_encoded: u64,
    /// Negotiated capabilities.
    pub capabilities: Vec<String>,
    /// The peer's BGP identifier, once known.
    pub peer_router_id: Option<std::net::Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// How many times the session reached Established since the peer was configured: more
    /// than one means it was reset in between.
    pub established_count: u64,
    /// The peer's BFD session (state, diagnostic, negotiated intervals, failures), when the
    /// peer runs BFD.
    pub bfd: Option<calyx_bfd::SessionStatus>,
}

/// Answers [`RouteQuery`]s from the speaker's RIB (see [`Speaker::lookup_handle`]).
#[derive(Debug, Clone)]
pub struct RouteLookup {
    tx: mpsc::Sender<RibMsg>,
}

impl RouteLookup {
    /// Every path of the destinations `query` names, best first; [`Error::Stopped`] once the
    /// speaker has stopped.
    pub async fn routes(&self, query: RouteQuery) -> Result<RouteTable, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(RibMsg::Lookup(query, reply))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }
}

/// A running BGP speaker.
#[derive(Debug)]
pub struct Speaker {
    tx: mpsc::Sender<RibMsg>,
    registry: Registry,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
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
                crate::sockopt::listen(addr).map_err(|e| Error::Bind(addr, e))?,
            )),
            None => None,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel(RIB_QUEUE);
        let cfg = Arc::new(cfg);
        let listen_task = listener
            .clone()
            .map(|l| tokio::spawn(accept_loop(l, registry.clone())));
        let actor = Actor::new(cfg, tx.clone(), registry.clone(), listener);
        let task = tokio::spawn(async move {
            actor.run(rx, shutdown).await;
            if let Some(l) = listen_task {
                // Awaited after the abort: the listening socket is closed only when the
                // aborted task has been dropped, and a speaker started right after this one
                // (new global settings) must be able to bind the same port.
                l.abort();
                let _ = l.await;
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

    /// A handle that answers questions about the table while the speaker runs; it can be
    /// kept apart from the speaker (by a status endpoint).
    pub fn lookup_handle(&self) -> RouteLookup {
        RouteLookup {
            tx: self.tx.clone(),
        }
    }

    /// A number that changes whenever [`Speaker::status`] would answer differently (a peer
    /// added or removed, a status change, a prefix counter moved), apart from the `uptime`
    /// of Established peers, which grows by itself. Cheap (no allocation): a caller that
    /// refreshes a status view often asks this first and copies the status only when it
    /// moved, which at 100 peers and a 100 ms refresh was most of an idle node's CPU.
    pub fn status_digest(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(reg) = self.registry.lock() else {
            return 0;
        };
        // Order-independent (the registry is a hash map): a sum of one mixed word per peer.
        reg.iter().fold(reg.len() as u64, |acc, (addr, r)| {
            let c = &r.shared.counters;
            let addr = match addr {
                IpAddr::V4(a) => u64::from(a.to_bits()),
                IpAddr::V6(a) => {
                    let b = a.to_bits();
                    (b as u64) ^ ((b >> 64) as u64)
                }
            };
            let word = [
                r.shared.changes.load(Relaxed),
                c.received.load(Relaxed),
                c.accepted.load(Relaxed),
                c.advertised.load(Relaxed),
                c.not_encoded.load(Relaxed),
            ]
            .iter()
            .fold(addr, |h, v| mix(h ^ v));
            acc.wrapping_add(word)
        })
    }

    /// A status snapshot per peer.
    pub fn status(&self) -> Vec<PeerStatus> {
        // Only what the snapshot shows is copied out of the registry (not the whole
        // PeerConfig with its filters and password), and the lock is held only for that.
        let reg = match self.registry.lock() {
            Ok(r) => r
                .values()
                .map(|r| {
                    (
                        (r.cfg.address, r.cfg.remote_as, r.cfg.label),
                        r.shared.clone(),
                    )
                })
                .collect::<Vec<_>>(),
            Err(_) => return Vec::new(),
        };
        let mut v: Vec<PeerStatus> = reg
            .into_iter()
            .filter_map(|((address, remote_as, label), sh)| {
                let st = sh.status.lock().ok()?.clone();
                let c = &sh.counters;
                use std::sync::atomic::Ordering::Relaxed;
                Some(PeerStatus {
                    address,
                    remote_as,
                    label,
                    state: st.state,
                    since: st.since,
                    uptime: st.established_at.map(|t| t.elapsed()),
                    last_error: st.last_error,
                    prefixes_received: c.received.load(Relaxed),
                    prefixes_accepted: c.accepted.load(Relaxed),
                    prefixes_advertised: c.advertised.load(Relaxed),
                    prefixes_not_encoded: c.not_encoded.load(Relaxed),
                    capabilities: st.capabilities,
                    peer_router_id: st.peer_id,
                    hold_time: st.hold_time,
                    established_count: st.established_count,
                    bfd: st.bfd,
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

/// A 64-bit finaliser (splitmix64's): every input bit moves about half the output bits, so
/// that a sum of mixed words changes when any one input does.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn accept_loop(l: Arc<TcpListener>, registry: Registry) {
    loop {
        let Ok((stream, remote)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ip = remote.ip().to_canonical();
        let incoming = registry
            .lock()
            .ok()
            .and_then(|r| r.get(&ip).map(|r| r.incoming.clone()));
        match incoming {
            Some(c) => {
                // Awaited: the peer task takes connections in turn; a full queue means it is
                // busy, and the connection waits rather than being dropped unanswered.
                let _ = c.send(stream).await;
            }
            None => tracing::debug!(%remote, "connection from an unknown peer refused"),
        }
    }
}
