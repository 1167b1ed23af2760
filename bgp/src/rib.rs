//! The RIB: Adj-RIB-In per peer, the Loc-RIB with the RFC 4271 §9.1 decision process, and
//! the Adj-RIB-Out per peer with export rules (iBGP split horizon, route reflection, next hop,
//! policy). Synchronous and single-owner: the RIB task ([`crate::speaker`]) is its only user.
//!
//! Storage: one hash table per family, keyed by prefix. Each entry holds the paths (one per
//! peer, sorted best first) and what was advertised to each peer (the Adj-RIB-Out). Attribute
//! sets are interned. Every change of a best path is appended to a change log; each peer's
//! Adj-RIB-Out catches up with the log at its own pace (a peer whose session is slow only
//! delays itself), computing what to send by comparing the export of the current best path
//! with what it last sent for that prefix, so repeated changes collapse.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;

use calyx_proto::notification::CeaseSubcode;
use calyx_proto::ErrorCode;
use calyx_proto::{Action, NotificationMessage};
use calyx_proto::{
    AfiSafi, AsPath, AsSegment, AsSegmentType, Asn, Community, Ipv4Prefix, Ipv6Prefix, MpNextHop,
    MpNlri, UpdateMessage,
};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::attrs::{Attrs, FastBuild, FastMap, Interner, Prefix, RouteAttrs, Small};
use crate::config::PeerConfig;
use crate::policy::{DefaultAction, PeerType, Verdict};

/// Index of a peer in the RIB; [`LOCAL`] is this speaker.
pub type PeerId = u32;
/// The pseudo-peer of locally originated routes.
pub const LOCAL: PeerId = 0;

/// Prefixes per batch handed to a session.
pub const BATCH: usize = 8192;

/// One change of the best route of a prefix, for subscribers (the node's reconciler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestRouteChange {
    /// The prefix.
    pub prefix: IpNet,
    /// Next hops of the best route (several with multipath); empty when withdrawn.
    pub next_hops: Vec<IpAddr>,
    /// No route learned from a peer is selected any more (withdrawn, or only our own).
    pub withdrawn: bool,
}

/// Routes for one session to send: announcements grouped by attribute set (so they pack into
/// few UPDATEs) and withdrawals.
#[derive(Debug, Default)]
pub struct OutBatch {
    /// IPv4 announcements per attribute set.
    pub v4: Vec<(Attrs, Vec<Ipv4Prefix>)>,
    /// IPv6 announcements per attribute set.
    pub v6: Vec<(Attrs, Vec<Ipv6Prefix>)>,
    /// IPv4 withdrawals.
    pub withdraw_v4: Vec<Ipv4Prefix>,
    /// IPv6 withdrawals.
    pub withdraw_v6: Vec<Ipv6Prefix>,
}

impl OutBatch {
    fn is_empty(&self) -> bool {
        self.v4.is_empty()
            && self.v6.is_empty()
            && self.withdraw_v4.is_empty()
            && self.withdraw_v6.is_empty()
    }
}

/// A message from the RIB to a session.
#[derive(Debug)]
pub enum OutMsg {
    /// Routes to announce / withdraw.
    Routes(OutBatch),
    /// The initial table has been sent: send End-of-RIB for this family.
    EndOfRib(AfiSafi),
}

/// Counters of one peer, shared with status readers.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Prefixes the peer announces (accepted or filtered).
    pub received: AtomicU64,
    /// Prefixes accepted into the Adj-RIB-In.
    pub accepted: AtomicU64,
    /// Prefixes advertised to the peer.
    pub advertised: AtomicU64,
}

/// What the RIB needs to know about an Established session.
#[derive(Debug)]
pub struct UpInfo {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our address on the session (next hop self).
    pub local_addr: IpAddr,
    /// Negotiated families.
    pub families: Vec<AfiSafi>,
    /// Where to send routes.
    pub tx: mpsc::Sender<OutMsg>,
    /// The peer is restarting and we kept its routes (RFC 4724): wait for End-of-RIB.
    pub peer_restarting: bool,
    /// Whether we send End-of-RIB after the initial table.
    pub send_eor: bool,
}

/// Something the RIB asks the speaker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RibAction {
    /// Close this peer's session with the NOTIFICATION; restart after the delay if any.
    ClosePeer(PeerId, NotificationMessage, Option<std::time::Duration>),
}

/// Global settings the RIB uses.
#[derive(Debug, Clone)]
pub struct RibGlobal {
    /// Local AS.
    pub local_as: Asn,
    /// Router ID.
    pub router_id: Ipv4Addr,
    /// Cluster ID for route reflection.
    pub cluster_id: Ipv4Addr,
    /// ECMP.
    pub multipath: bool,
    /// IPv4 next hop for IPv4 routes on IPv6 sessions.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop for IPv6 routes on IPv4 sessions.
    pub next_hop_v6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone)]
struct Path {
    peer: PeerId,
    stale: bool,
    attrs: Attrs,
}

#[derive(Debug, Default)]
struct Dest {
    paths: Small<Path>,
    out: Small<(PeerId, Attrs)>,
}

#[derive(Debug)]
struct RibPeer {
    cfg: PeerConfig,
    ibgp: bool,
    router_id: Ipv4Addr,
    up: Option<UpInfo>,
    cursor: usize,
    dump: Vec<Prefix>,
    dump_force: bool,
    eor_pending: bool,
    pending: Option<OutMsg>,
    stale_families: Vec<AfiSafi>,
    accepted: u64,
    filtered: HashSet<Prefix, FastBuild>,
    advertised: u64,
    counters: Arc<PeerCounters>,
}

impl RibPeer {
    fn peer_type(&self) -> PeerType {
        if self.ibgp {
            PeerType::Ibgp
        } else {
            PeerType::Ebgp
        }
    }
}

type CacheKey = (usize, PeerId, PeerId, u32);

/// The RIB.
#[derive(Debug)]
pub struct Rib {
    global: RibGlobal,
    v4: FastMap<Ipv4Prefix, Dest>,
    v6: FastMap<Ipv6Prefix, Dest>,
    peers: FastMap<PeerId, RibPeer>,
    interner: Interner,
    cache: FastMap<CacheKey, (Attrs, Option<Attrs>)>,
    log: Vec<Prefix>,
    track: bool,
    changes: Vec<BestRouteChange>,
    actions: Vec<RibAction>,
}

fn unspecified(a: &IpAddr) -> bool {
    a.is_unspecified()
}

impl Rib {
    /// An empty RIB.
    pub fn new(global: RibGlobal) -> Self {
        Rib {
            global,
            v4: FastMap::default(),
            v6: FastMap::default(),
            peers: FastMap::default(),
            interner: Interner::default(),
            cache: FastMap::default(),
            log: Vec::new(),
            track: false,
            changes: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Record best-route changes for subscribers (off by default: it costs a little per route).
    pub fn set_tracking(&mut self, on: bool) {
        self.track = on;
    }

    /// Take the best-route changes recorded since the last call.
    pub fn take_changes(&mut self) -> Vec<BestRouteChange> {
        std::mem::take(&mut self.changes)
    }

    /// Take the actions requested since the last call.
    pub fn take_actions(&mut self) -> Vec<RibAction> {
        std::mem::take(&mut self.actions)
    }

    /// Number of IPv4 and IPv6 prefixes held.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Distinct interned attribute sets.
    pub fn attribute_sets(&self) -> usize {
        self.interner.len()
    }

    /// Add or replace a peer's configuration (the session is not up yet).
    pub fn add_peer(&mut self, id: PeerId, cfg: PeerConfig, local_as: Asn) -> Arc<PeerCounters> {
        let counters = Arc::new(PeerCounters::default());
        let ibgp = Asn(cfg.remote_as) == local_as;
        self.peers.insert(
            id,
            RibPeer {
                cfg,
                ibgp,
                router_id: Ipv4Addr::UNSPECIFIED,
                up: None,
                cursor: 0,
                dump: Vec::new(),
                dump_force: false,
                eor_pending: false,
                pending: None,
                stale_families: Vec::new(),
                accepted: 0,
                filtered: HashSet::default(),
                advertised: 0,
                counters: counters.clone(),
            },
        );
        counters
    }

    /// Remove a peer and everything learned from it.
    pub fn remove_peer(&mut self, id: PeerId) {
        self.peer_down(id, false);
        self.peers.remove(&id);
    }

    fn all_prefixes(&self) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = Vec::with_capacity(self.v4.len() + self.v6.len());
        v.extend(self.v4.keys().map(|k| Prefix::V4(*k)));
        v.extend(self.v6.keys().map(|k| Prefix::V6(*k)));
        v
    }

    /// The session with `id` is Established.
    pub fn peer_up(&mut self, id: PeerId, up: UpInfo) {
        let dump = self.all_prefixes();
        let log_len = self.log.len();
        self.cache.retain(|k, _| k.1 != id && k.2 != id);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.router_id = up.router_id;
        if !up.peer_restarting && !p.stale_families.is_empty() {
            // It came back without keeping state: what we kept is worthless.
            p.stale_families.clear();
            self.sweep(id, |path| path.stale);
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.eor_pending = up.send_eor;
        p.up = Some(up);
        p.cursor = log_len;
        p.dump = dump;
        p.dump_force = false;
        p.pending = None;
    }

    /// The session went down; with `keep_stale`, the peer's routes are kept, marked stale,
    /// until [`Rib::flush_stale`] or an End-of-RIB after it comes back (RFC 4724 §4.2).
    pub fn peer_down(&mut self, id: PeerId, keep_stale: bool) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let families =
            p.up.as_ref()
                .map(|u| u.families.clone())
                .unwrap_or_default();
        p.up = None;
        p.dump = Vec::new();
        p.pending = None;
        p.advertised = 0;
        p.counters.advertised.store(0, AtOrd::Relaxed);
        self.cache.retain(|k, _| k.2 != id);
        // Forget what was advertised to it.
        let drop_out = |d: &mut Dest| d.out.retain(|(q, _)| *q != id);
        self.v4.values_mut().for_each(drop_out);
        self.v6.values_mut().for_each(drop_out);
        if keep_stale && !families.is_empty() {
            if let Some(p) = self.peers.get_mut(&id) {
                p.stale_families = families;
            }
            let mark = |d: &mut Dest| {
                for path in d.paths.as_mut_slice() {
                    if path.peer == id {
                        path.stale = true;
                    }
                }
            };
            self.v4.values_mut().for_each(mark);
            self.v6.values_mut().for_each(mark);
        } else {
            if let Some(p) = self.peers.get_mut(&id) {
                p.stale_families.clear();
                p.filtered.clear();
            }
            self.sweep(id, |_| true);
        }
        self.v4
            .retain(|_, d| !(d.paths.is_empty() && d.out.is_empty()));
        self.v6
            .retain(|_, d| !(d.paths.is_empty() && d.out.is_empty()));
        self.publish(id);
    }

    /// Drop the stale routes of a peer (restart timer expired, or End-of-RIB for every
    /// family).
    pub fn flush_stale(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.stale_families.clear();
        }
        self.sweep(id, |path| path.stale);
    }

    /// Whether the peer has routes kept as stale.
    pub fn has_stale(&self, id: PeerId) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| !p.stale_families.is_empty())
    }

    /// Remove the paths of `id` for which `f` holds, updating best paths.
    fn sweep(&mut self, id: PeerId, f: impl Fn(&Path) -> bool) {
        let Rib {
            v4,
            v6,
            peers,
            global,
            log,
            track,
            changes,
            ..
        } = self;
        let mut removed = 0u64;
        for (k, d) in v4.iter_mut() {
            if d.paths.as_slice().iter().any(|p| p.peer == id && f(p)) {
                let before = best_key(d, *track, peers, global);
                d.paths.retain(|p| !(p.peer == id && f(p)));
                removed += 1;
                note_change(
                    Prefix::V4(*k),
                    d,
                    before,
                    *track,
                    peers,
                    global,
                    log,
                    changes,
                );
            }
        }
        for (k, d) in v6.iter_mut() {
            if d.paths.as_slice().iter().any(|p| p.peer == id && f(p)) {
                let before = best_key(d, *track, peers, global);
                d.paths.retain(|p| !(p.peer == id && f(p)));
                removed += 1;
                note_change(
                    Prefix::V6(*k),
                    d,
                    before,
                    *track,
                    peers,
                    global,
                    log,
                    changes,
                );
            }
        }
        if let Some(p) = peers.get_mut(&id) {
            p.accepted = p.accepted.saturating_sub(removed);
        }
        self.publish(id);
    }

    fn publish(&self, id: PeerId) {
        if let Some(p) = self.peers.get(&id) {
            p.counters.accepted.store(p.accepted, AtOrd::Relaxed);
            p.counters
                .received
                .store(p.accepted + p.filtered.len() as u64, AtOrd::Relaxed);
            p.counters.advertised.store(p.advertised, AtOrd::Relaxed);
        }
    }

    /// Originate a prefix from this speaker (next hop self towards every peer).
    pub fn originate(&mut self, prefix: Prefix, mut attrs: calyx_proto::PathAttributes) {
        if attrs.origin.is_none() {
            attrs.origin = Some(calyx_proto::Origin::Igp);
        }
        if attrs.as_path.is_none() {
            attrs.as_path = Some(AsPath::default());
        }
        attrs.next_hop = None;
        let next_hop = match prefix {
            Prefix::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Prefix::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let a = self.interner.intern(RouteAttrs {
            attrs,
            next_hop,
            link_local: None,
        });
        self.set_path(prefix, LOCAL, Some(a));
    }

    /// Withdraw a locally originated prefix.
    pub fn withdraw_local(&mut self, prefix: Prefix) {
        self.set_path(prefix, LOCAL, None);
    }

    /// Apply an UPDATE received from peer `id` (already decoded, AS4 merged). Returns the
    /// family whose End-of-RIB it was, if it was one.
    pub fn apply_update(&mut self, id: PeerId, mut u: UpdateMessage) -> Option<AfiSafi> {
        if let Some(f) = u.as_end_of_rib() {
            self.end_of_rib(id, f);
            return Some(f);
        }
        let peer = self.peers.get(&id)?;
        let ibgp = peer.ibgp;
        let treat_as_withdraw = u.action() == Some(Action::TreatAsWithdraw);
        for w in std::mem::take(&mut u.withdrawn) {
            self.receive(id, Prefix::V4(w.prefix), None);
        }
        if let Some(m) = u.mp_unreach.take() {
            match m.nlri {
                MpNlri::Ipv4(v) => v
                    .into_iter()
                    .for_each(|n| self.receive(id, Prefix::V4(n.prefix), None)),
                MpNlri::Ipv6(v) => v
                    .into_iter()
                    .for_each(|n| self.receive(id, Prefix::V6(n.prefix), None)),
                MpNlri::Other { .. } => {}
            }
        }
        let mut attrs = std::mem::take(&mut u.attributes);
        let nh4 = attrs.next_hop.take();
        if !ibgp {
            // LOCAL_PREF is not taken from eBGP peers (RFC 4271 §5.1.5).
            attrs.local_pref = None;
        }
        let reject = treat_as_withdraw || self.loops(id, &attrs);
        if !u.nlri.is_empty() {
            let ra = nh4.map(|nh| RouteAttrs {
                attrs: attrs.clone(),
                next_hop: IpAddr::V4(nh),
                link_local: None,
            });
            let shared = match (&ra, reject) {
                (Some(ra), false) => Some(self.interner.intern(ra.clone())),
                _ => None,
            };
            for n in std::mem::take(&mut u.nlri) {
                self.receive_with_policy(id, Prefix::V4(n.prefix), shared.as_ref());
            }
        }
        if let Some(m) = u.mp_reach.take() {
            let (next_hop, link_local) = match m.next_hop {
                MpNextHop::V4(a) => (Some(IpAddr::V4(a)), None),
                MpNextHop::V6 { global, link_local } => (Some(IpAddr::V6(global)), link_local),
                MpNextHop::Other(_) => (None, None),
            };
            let shared = match (next_hop, reject) {
                (Some(nh), false) => Some(self.interner.intern(RouteAttrs {
                    attrs,
                    next_hop: nh,
                    link_local,
                })),
                _ => None,
            };
            match m.nlri {
                MpNlri::Ipv4(v) => v.into_iter().for_each(|n| {
                    self.receive_with_policy(id, Prefix::V4(n.prefix), shared.as_ref())
                }),
                MpNlri::Ipv6(v) => v.into_iter().for_each(|n| {
                    self.receive_with_policy(id, Prefix::V6(n.prefix), shared.as_ref())
                }),
                MpNlri::Other { .. } => {}
            }
        }
        self.check_max(id);
        self.publish(id);
        None
    }

    fn end_of_rib(&mut self, id: PeerId, f: AfiSafi) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.stale_families.contains(&f) {
            p.stale_families.retain(|x| *x != f);
            self.sweep_family(id, f);
        }
    }

    fn sweep_family(&mut self, id: PeerId, f: AfiSafi) {
        let Rib {
            v4,
            v6,
            peers,
            global,
            log,
            track,
            changes,
            ..
        } = self;
        let mut removed = 0u64;
        if f == AfiSafi::IPV4_UNICAST {
            for (k, d) in v4.iter_mut() {
                if d.paths.as_slice().iter().any(|p| p.peer == id && p.stale) {
                    let before = best_key(d, *track, peers, global);
                    d.paths.retain(|p| !(p.peer == id && p.stale));
                    removed += 1;
                    note_change(
                        Prefix::V4(*k),
                        d,
                        before,
                        *track,
                        peers,
                        global,
                        log,
                        changes,
                    );
                }
            }
        } else if f == AfiSafi::IPV6_UNICAST {
            for (k, d) in v6.iter_mut() {
                if d.paths.as_slice().iter().any(|p| p.peer == id && p.stale) {
                    let before = best_key(d, *track, peers, global);
                    d.paths.retain(|p| !(p.peer == id && p.stale));
                    removed += 1;
                    note_change(
                        Prefix::V6(*k),
                        d,
                        before,
                        *track,
                        peers,
                        global,
                        log,
                        changes,
                    );
                }
            }
        }
        if let Some(p) = peers.get_mut(&id) {
            p.accepted = p.accepted.saturating_sub(removed);
        }
        self.publish(id);
    }

    /// AS_PATH / ORIGINATOR_ID / CLUSTER_LIST loop checks (RFC 4271 §9.1.2, RFC 4456 §8).
    fn loops(&self, id: PeerId, a: &calyx_proto::PathAttributes) -> bool {
        let allowed = self
            .peers
            .get(&id)
            .map(|p| usize::from(p.cfg.allowed_local_as))
            .unwrap_or(0);
        let own = self.global.local_as;
        let count = a
            .as_path
            .as_ref()
            .map(|p| {
                p.segments
                    .iter()
                    .flat_map(|s| s.asns.iter())
                    .filter(|x| **x == own)
                    .count()
            })
            .unwrap_or(0);
        let ibgp = self.peers.get(&id).is_some_and(|p| p.ibgp);
        if !ibgp && count > allowed {
            return true;
        }
        if a.originator_id == Some(self.global.router_id) {
            return true;
        }
        a.cluster_list.contains(&self.global.cluster_id)
    }

    fn receive_with_policy(&mut self, id: PeerId, prefix: Prefix, attrs: Option<&Attrs>) {
        let Some(a) = attrs else {
            self.receive(id, prefix, None);
            return;
        };
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(pol) = &peer.cfg.import else {
            self.receive(id, prefix, Some(a.clone()));
            return;
        };
        match pol.evaluate(&prefix.to_net(), &a.attrs, peer.peer_type()) {
            Verdict::Reject | Verdict::Default(DefaultAction::Reject) => {
                self.receive(id, prefix, None);
                if let Some(p) = self.peers.get_mut(&id) {
                    p.filtered.insert(prefix);
                }
            }
            Verdict::Default(_) => self.receive(id, prefix, Some(a.clone())),
            Verdict::Rule(i) => {
                let rule = pol.rules.get(i);
                let a = match rule {
                    Some(r) if r.modifies() => {
                        let mut ra = RouteAttrs::clone(a);
                        r.apply(&mut ra.attrs);
                        self.interner.intern(ra)
                    }
                    _ => a.clone(),
                };
                self.receive(id, prefix, Some(a));
            }
        }
    }

    fn receive(&mut self, id: PeerId, prefix: Prefix, attrs: Option<Attrs>) {
        if let Some(p) = self.peers.get_mut(&id) {
            if !p.filtered.is_empty() {
                p.filtered.remove(&prefix);
            }
        }
        self.set_path(prefix, id, attrs);
    }

    fn check_max(&mut self, id: PeerId) {
        let Some(p) = self.peers.get(&id) else { return };
        if let Some(max) = p.cfg.max_prefixes {
            if p.accepted > u64::from(max) && p.up.is_some() {
                let restart = (p.cfg.max_prefixes_restart > 0)
                    .then(|| std::time::Duration::from_secs(u64::from(p.cfg.max_prefixes_restart)));
                // RFC 4486 §4: data = AFI, SAFI, upper bound.
                let mut data = vec![0, 1, 1];
                data.extend_from_slice(&max.to_be_bytes());
                let n = NotificationMessage::new(
                    ErrorCode::Cease(CeaseSubcode::MaximumPrefixesReached),
                    data,
                );
                let act = RibAction::ClosePeer(id, n, restart);
                if !self.actions.contains(&act) {
                    self.actions.push(act);
                }
            }
        }
    }

    /// Set (`Some`) or remove (`None`) the path of `peer` for `prefix`.
    fn set_path(&mut self, prefix: Prefix, peer: PeerId, attrs: Option<Attrs>) {
        let Rib {
            v4,
            v6,
            peers,
            global,
            log,
            track,
            changes,
            ..
        } = self;
        let delta = match prefix {
            Prefix::V4(k) => set_path_in(
                v4, k, prefix, peer, attrs, *track, peers, global, log, changes,
            ),
            Prefix::V6(k) => set_path_in(
                v6, k, prefix, peer, attrs, *track, peers, global, log, changes,
            ),
        };
        if delta != 0 {
            if let Some(p) = peers.get_mut(&peer) {
                p.accepted = p.accepted.saturating_add_signed(delta);
            }
        }
    }

    /// The peer asked for a route refresh: send everything again.
    pub fn refresh(&mut self, id: PeerId, family: AfiSafi) {
        let mut dump = self.all_prefixes();
        dump.retain(|p| p.family() == family);
        if let Some(p) = self.peers.get_mut(&id) {
            if p.up.is_some() {
                p.dump = dump;
                p.dump_force = true;
            }
        }
    }

    /// Whether some peer still has routes to be sent (call [`Rib::flush`] again later).
    pub fn has_pending(&self) -> bool {
        self.peers.values().any(|p| {
            p.up.is_some()
                && (p.pending.is_some()
                    || !p.dump.is_empty()
                    || p.cursor < self.log.len()
                    || p.eor_pending)
        })
    }

    /// Bring every Adj-RIB-Out up to date as far as the sessions accept batches. Returns true
    /// if work is left (a session's queue was full).
    pub fn flush(&mut self) -> bool {
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up.is_some())
            .map(|(k, _)| *k)
            .collect();
        let mut left = false;
        for id in ids {
            left |= self.flush_peer(id);
        }
        let min = self
            .peers
            .values()
            .filter(|p| p.up.is_some())
            .map(|p| p.cursor)
            .min();
        match min {
            Some(m) if m == self.log.len() => {
                self.log.clear();
                self.peers.values_mut().for_each(|p| p.cursor = 0);
            }
            None => {
                self.log.clear();
                self.peers.values_mut().for_each(|p| p.cursor = 0);
            }
            Some(m) if m > 1 << 16 => {
                self.log.drain(..m);
                self.peers
                    .values_mut()
                    .for_each(|p| p.cursor = p.cursor.saturating_sub(m));
            }
            _ => {}
        }
        left
    }

    fn flush_peer(&mut self, id: PeerId) -> bool {
        for _round in 0..64 {
            let Some(p) = self.peers.get_mut(&id) else {
                return false;
            };
            let Some(up) = &p.up else { return false };
            if let Some(msg) = p.pending.take() {
                match up.tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(m)) => {
                        p.pending = Some(m);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            let work = !p.dump.is_empty() || p.cursor < self.log.len();
            if !work {
                if p.eor_pending {
                    p.eor_pending = false;
                    let fams = up.families.clone();
                    for f in fams {
                        if let Some(p) = self.peers.get_mut(&id) {
                            if let Some(up) = &p.up {
                                if let Err(mpsc::error::TrySendError::Full(m)) =
                                    up.tx.try_send(OutMsg::EndOfRib(f))
                                {
                                    // Rare: keep it for later; remaining families follow after.
                                    p.pending = Some(m);
                                    p.eor_pending = true;
                                    return true;
                                }
                            }
                        }
                    }
                }
                return false;
            }
            let batch = self.build_batch(id);
            let Some(p) = self.peers.get_mut(&id) else {
                return false;
            };
            if batch.is_empty() {
                continue;
            }
            let Some(up) = &p.up else { return false };
            match up.tx.try_send(OutMsg::Routes(batch)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    p.pending = Some(m);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Compute up to [`BATCH`] route changes for peer `id` from its dump list and the log.
    fn build_batch(&mut self, id: PeerId) -> OutBatch {
        let Rib {
            v4,
            v6,
            peers,
            global,
            log,
            interner,
            cache,
            ..
        } = self;
        let mut batch = OutBatch::default();
        let mut idx4: FastMap<usize, usize> = FastMap::default();
        let mut idx6: FastMap<usize, usize> = FastMap::default();
        let mut n = 0;
        let mut adv_delta: i64 = 0;
        let mut items: Vec<(Prefix, bool)> = Vec::with_capacity(BATCH);
        {
            let Some(p) = peers.get_mut(&id) else {
                return batch;
            };
            while n < BATCH {
                if let Some(x) = p.dump.pop() {
                    items.push((x, p.dump_force));
                } else if let Some(x) = log.get(p.cursor) {
                    items.push((*x, false));
                    p.cursor += 1;
                } else {
                    break;
                }
                n += 1;
            }
            if p.dump.is_empty() {
                p.dump = Vec::new();
            }
        }
        let Some(q) = peers.get(&id) else {
            return batch;
        };
        for (prefix, force) in items {
            let dest = match prefix {
                Prefix::V4(k) => v4.get_mut(&k),
                Prefix::V6(k) => v6.get_mut(&k),
            };
            let Some(dest) = dest else { continue };
            let new = export(id, q, prefix, dest, peers, global, interner, cache);
            let pos = dest.out.as_slice().iter().position(|(x, _)| *x == id);
            let old = pos
                .and_then(|i| dest.out.as_slice().get(i))
                .map(|(_, a)| a.clone());
            let same = match (&old, &new) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same && !force {
                continue;
            }
            match &new {
                Some(a) => {
                    match pos.and_then(|i| dest.out.as_mut_slice().get_mut(i)) {
                        Some(slot) => slot.1 = a.clone(),
                        None => {
                            dest.out.push((id, a.clone()));
                            adv_delta += 1;
                        }
                    }
                    let key = Arc::as_ptr(a) as usize;
                    match prefix {
                        Prefix::V4(k) => {
                            let i = *idx4.entry(key).or_insert_with(|| {
                                batch.v4.push((a.clone(), Vec::new()));
                                batch.v4.len() - 1
                            });
                            if let Some(g) = batch.v4.get_mut(i) {
                                g.1.push(k);
                            }
                        }
                        Prefix::V6(k) => {
                            let i = *idx6.entry(key).or_insert_with(|| {
                                batch.v6.push((a.clone(), Vec::new()));
                                batch.v6.len() - 1
                            });
                            if let Some(g) = batch.v6.get_mut(i) {
                                g.1.push(k);
                            }
                        }
                    }
                }
                None => {
                    if let Some(i) = pos {
                        dest.out.remove(i);
                        adv_delta -= 1;
                        match prefix {
                            Prefix::V4(k) => batch.withdraw_v4.push(k),
                            Prefix::V6(k) => batch.withdraw_v6.push(k),
                        }
                    }
                }
            }
            if dest.paths.is_empty() && dest.out.is_empty() {
                match prefix {
                    Prefix::V4(k) => {
                        v4.remove(&k);
                    }
                    Prefix::V6(k) => {
                        v6.remove(&k);
                    }
                }
            }
        }
        if let Some(p) = peers.get_mut(&id) {
            p.advertised = p.advertised.saturating_add_signed(adv_delta);
            p.counters.advertised.store(p.advertised, AtOrd::Relaxed);
        }
        batch
    }

    /// Drop interned sets and cached exports nobody uses any more.
    pub fn collect_garbage(&mut self) {
        self.cache.retain(|_, (src, _)| Arc::strong_count(src) > 2);
        self.interner.collect();
    }

    /// The current best routes learned from peers, as changes (for a new subscriber).
    pub fn snapshot(&self) -> Vec<BestRouteChange> {
        let mut v = Vec::new();
        let mut add = |p: Prefix, d: &Dest| {
            let nh = next_hops(d, &self.peers, &self.global);
            if !nh.is_empty() {
                v.push(BestRouteChange {
                    prefix: p.to_net(),
                    next_hops: nh,
                    withdrawn: false,
                });
            }
        };
        self.v4.iter().for_each(|(k, d)| add(Prefix::V4(*k), d));
        self.v6.iter().for_each(|(k, d)| add(Prefix::V6(*k), d));
        v
    }

    /// The best paths: (prefix, next hop, peer) for inspection and tests.
    pub fn best_routes(&self) -> Vec<(Prefix, IpAddr, PeerId)> {
        let mut v: Vec<(Prefix, IpAddr, PeerId)> = Vec::new();
        let mut add = |p: Prefix, d: &Dest| {
            if let Some(b) = d.paths.as_slice().first() {
                v.push((p, b.attrs.next_hop, b.peer));
            }
        };
        self.v4.iter().for_each(|(k, d)| add(Prefix::V4(*k), d));
        self.v6.iter().for_each(|(k, d)| add(Prefix::V6(*k), d));
        v.sort();
        v
    }

    /// The attributes advertised to peer `id` for `prefix` (Adj-RIB-Out), for tests.
    pub fn advertised(&self, id: PeerId, prefix: Prefix) -> Option<Attrs> {
        let d = match prefix {
            Prefix::V4(k) => self.v4.get(&k),
            Prefix::V6(k) => self.v6.get(&k),
        }?;
        d.out
            .as_slice()
            .iter()
            .find(|(x, _)| *x == id)
            .map(|(_, a)| a.clone())
    }
}

type BestKey = Option<(PeerId, usize, Vec<IpAddr>)>;

fn best_key(d: &Dest, track: bool, peers: &FastMap<PeerId, RibPeer>, g: &RibGlobal) -> BestKey {
    let b = d.paths.as_slice().first()?;
    let nh = if track {
        next_hops(d, peers, g)
    } else {
        Vec::new()
    };
    Some((b.peer, Arc::as_ptr(&b.attrs) as usize, nh))
}

#[allow(clippy::too_many_arguments)]
fn note_change(
    prefix: Prefix,
    d: &mut Dest,
    before: BestKey,
    track: bool,
    peers: &FastMap<PeerId, RibPeer>,
    g: &RibGlobal,
    log: &mut Vec<Prefix>,
    changes: &mut Vec<BestRouteChange>,
) {
    sort_paths(d, peers, g);
    let after = best_key(d, track, peers, g);
    let changed = match (&before, &after) {
        (Some(a), Some(b)) => a.0 != b.0 || a.1 != b.1 || a.2 != b.2,
        (None, None) => false,
        _ => true,
    };
    if changed {
        log.push(prefix);
        if track {
            let nh = after.map(|a| a.2).unwrap_or_default();
            let old_nh = before.map(|a| a.2).unwrap_or_default();
            if nh != old_nh {
                changes.push(BestRouteChange {
                    prefix: prefix.to_net(),
                    withdrawn: nh.is_empty(),
                    next_hops: nh,
                });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn set_path_in<K: std::hash::Hash + Eq + Copy>(
    table: &mut FastMap<K, Dest>,
    k: K,
    prefix: Prefix,
    peer: PeerId,
    attrs: Option<Attrs>,
    track: bool,
    peers: &FastMap<PeerId, RibPeer>,
    g: &RibGlobal,
    log: &mut Vec<Prefix>,
    changes: &mut Vec<BestRouteChange>,
) -> i64 {
    let d = match &attrs {
        Some(_) => table.entry(k).or_default(),
        None => match table.get_mut(&k) {
            Some(d) => d,
            None => return 0,
        },
    };
    let before = best_key(d, track, peers, g);
    let pos = d.paths.as_slice().iter().position(|p| p.peer == peer);
    let mut delta = 0;
    match (attrs, pos) {
        (Some(a), Some(i)) => {
            if let Some(p) = d.paths.as_mut_slice().get_mut(i) {
                if Arc::ptr_eq(&p.attrs, &a) && !p.stale {
                    return 0;
                }
                p.attrs = a;
                p.stale = false;
            }
        }
        (Some(a), None) => {
            d.paths.push(Path {
                peer,
                stale: false,
                attrs: a,
            });
            delta = 1;
        }
        (None, Some(i)) => {
            d.paths.remove(i);
            delta = -1;
        }
        (None, None) => return 0,
    }
    note_change(prefix, d, before, track, peers, g, log, changes);
    if d.paths.is_empty() && d.out.is_empty() {
        table.remove(&k);
    }
    delta
}

fn sort_paths(d: &mut Dest, peers: &FastMap<PeerId, RibPeer>, g: &RibGlobal) {
    if let Small::Many(v) = &mut d.paths {
        v.sort_by(|a, b| compare(a, b, peers, g));
    }
}

fn peer_addr(peers: &FastMap<PeerId, RibPeer>, id: PeerId) -> IpAddr {
    peers
        .get(&id)
        .map(|p| p.cfg.address)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The RFC 4271 §9.1.2.2 tie-breakers in order, `Less` meaning `a` is preferred.
fn compare(a: &Path, b: &Path, peers: &FastMap<PeerId, RibPeer>, g: &RibGlobal) -> Ordering {
    let pre = compare_multipath(a, b, peers);
    if pre != Ordering::Equal {
        return pre;
    }
    let _ = g;
    let rid = |p: &Path| {
        p.attrs.attrs.originator_id.unwrap_or_else(|| {
            peers
                .get(&p.peer)
                .map(|x| x.router_id)
                .unwrap_or(Ipv4Addr::UNSPECIFIED)
        })
    };
    u32::from(rid(a))
        .cmp(&u32::from(rid(b)))
        .then_with(|| {
            a.attrs
                .attrs
                .cluster_list
                .len()
                .cmp(&b.attrs.attrs.cluster_list.len())
        })
        .then_with(|| peer_addr(peers, a.peer).cmp(&peer_addr(peers, b.peer)))
}

/// The steps up to (and including) eBGP over iBGP: paths equal here are ECMP candidates.
fn compare_multipath(a: &Path, b: &Path, peers: &FastMap<PeerId, RibPeer>) -> Ordering {
    // Our own routes first (like a weight).
    let local = (b.peer == LOCAL).cmp(&(a.peer == LOCAL));
    if local != Ordering::Equal {
        return local;
    }
    let (x, y) = (&a.attrs.attrs, &b.attrs.attrs);
    let lp = y
        .local_pref
        .unwrap_or(100)
        .cmp(&x.local_pref.unwrap_or(100));
    if lp != Ordering::Equal {
        return lp;
    }
    let len =
        |p: &calyx_proto::PathAttributes| p.as_path.as_ref().map(|a| a.path_len()).unwrap_or(0);
    let l = len(x).cmp(&len(y));
    if l != Ordering::Equal {
        return l;
    }
    let o = x.origin.cmp(&y.origin);
    if o != Ordering::Equal {
        return o;
    }
    let first = |p: &calyx_proto::PathAttributes| p.as_path.as_ref().and_then(|a| a.first_asn());
    if first(x) == first(y) {
        let m = x.med.unwrap_or(0).cmp(&y.med.unwrap_or(0));
        if m != Ordering::Equal {
            return m;
        }
    }
    let ibgp = |p: &Path| peers.get(&p.peer).is_some_and(|x| x.ibgp);
    ibgp(a).cmp(&ibgp(b))
}

fn next_hops(d: &Dest, peers: &FastMap<PeerId, RibPeer>, g: &RibGlobal) -> Vec<IpAddr> {
    let paths = d.paths.as_slice();
    let Some(best) = paths.first() else {
        return Vec::new();
    };
    if best.peer == LOCAL {
        return Vec::new();
    }
    let nh = |p: &Path| {
        if unspecified(&p.attrs.next_hop) {
            peer_addr(peers, p.peer)
        } else {
            p.attrs.next_hop
        }
    };
    if !g.multipath {
        return vec![nh(best)];
    }
    let mut v: Vec<IpAddr> = paths
        .iter()
        .take_while(|p| compare_multipath(p, best, peers) == Ordering::Equal)
        .map(nh)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What to advertise to peer `qid` for this prefix (None: nothing / withdraw).
#[allow(clippy::too_many_arguments)]
fn export(
    qid: PeerId,
    q: &RibPeer,
    prefix: Prefix,
    dest: &Dest,
    peers: &FastMap<PeerId, RibPeer>,
    g: &RibGlobal,
    interner: &mut Interner,
    cache: &mut FastMap<CacheKey, (Attrs, Option<Attrs>)>,
) -> Option<Attrs> {
    let up = q.up.as_ref()?;
    if !up.families.contains(&prefix.family()) {
        return None;
    }
    let best = dest.paths.as_slice().first()?;
    if best.peer == qid {
        return None;
    }
    let src = if best.peer == LOCAL {
        None
    } else {
        Some(peers.get(&best.peer)?)
    };
    let src_type = src.map(|s| s.peer_type()).unwrap_or(PeerType::Local);
    let a = &best.attrs.attrs;
    if a.has_community(Community::NO_ADVERTISE) {
        return None;
    }
    if !q.ibgp
        && (a.has_community(Community::NO_EXPORT)
            || a.has_community(Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let reflecting = src_type == PeerType::Ibgp && q.ibgp;
    if reflecting
        && !(src.is_some_and(|s| s.cfg.route_reflector_client) || q.cfg.route_reflector_client)
    {
        // iBGP split horizon (RFC 4271 §9.2), relaxed by route reflection (RFC 4456 §6).
        return None;
    }
    let calico_default = src_type == PeerType::Local || reflecting;
    let rule = match &q.cfg.export {
        None => {
            if !calico_default {
                return None;
            }
            u32::MAX
        }
        Some(pol) => match pol.evaluate(&prefix.to_net(), a, src_type) {
            Verdict::Reject | Verdict::Default(DefaultAction::Reject) => return None,
            Verdict::Default(DefaultAction::Accept) => u32::MAX,
            Verdict::Default(DefaultAction::Calico) => {
                if !calico_default {
                    return None;
                }
                u32::MAX
            }
            Verdict::Rule(i) => u32::try_from(i).unwrap_or(u32::MAX - 1),
        },
    };
    let key: CacheKey = (Arc::as_ptr(&best.attrs) as usize, best.peer, qid, rule);
    if let Some((_, out)) = cache.get(&key) {
        return out.clone();
    }
    let out = transform(q, up, &best.attrs, best.peer, src, prefix, rule, g)
        .map(|ra| interner.intern(ra));
    cache.insert(key, (best.attrs.clone(), out.clone()));
    out
}

#[allow(clippy::too_many_arguments)]
fn transform(
    q: &RibPeer,
    up: &UpInfo,
    src_attrs: &RouteAttrs,
    src_id: PeerId,
    src: Option<&RibPeer>,
    prefix: Prefix,
    rule: u32,
    g: &RibGlobal,
) -> Option<RouteAttrs> {
    let mut ra = src_attrs.clone();
    let local = src_id == LOCAL;
    let mut self_nh = local;
    if q.ibgp {
        if ra.attrs.local_pref.is_none() {
            ra.attrs.local_pref = Some(100);
        }
        if q.cfg.next_hop_self {
            self_nh = true;
        }
        if let Some(s) = src.filter(|s| s.ibgp) {
            // Reflection (RFC 4456 §8).
            if ra.attrs.originator_id.is_none() {
                ra.attrs.originator_id = Some(s.router_id);
            }
            ra.attrs.cluster_list.insert(0, g.cluster_id);
        }
    } else {
        let path = ra.attrs.as_path.take().unwrap_or_default();
        ra.attrs.as_path = Some(prepend(path, g.local_as));
        ra.attrs.local_pref = None;
        if src.is_some_and(|s| !s.ibgp) {
            ra.attrs.med = None;
        }
        ra.attrs.originator_id = None;
        ra.attrs.cluster_list.clear();
        self_nh = true;
    }
    if q.cfg.keep_original_next_hop && !local {
        self_nh = false;
    }
    if self_nh || unspecified(&ra.next_hop) {
        ra.link_local = None;
        ra.next_hop = match (prefix, up.local_addr) {
            (Prefix::V4(_), IpAddr::V4(a)) => IpAddr::V4(a),
            (Prefix::V4(_), IpAddr::V6(_)) => IpAddr::V4(g.next_hop_v4.unwrap_or(g.router_id)),
            (Prefix::V6(_), IpAddr::V6(a)) => IpAddr::V6(a),
            (Prefix::V6(_), IpAddr::V4(a)) => {
                IpAddr::V6(g.next_hop_v6.unwrap_or_else(|| a.to_ipv6_mapped()))
            }
        };
    }
    if let Some(r) = q
        .cfg
        .export
        .as_ref()
        .and_then(|p| p.rules.get(rule as usize))
    {
        r.apply(&mut ra.attrs);
    }
    Some(ra)
}

fn prepend(mut path: AsPath, asn: Asn) -> AsPath {
    match path.segments.first_mut() {
        Some(s) if s.kind == AsSegmentType::Sequence && s.asns.len() < 255 => s.asns.insert(0, asn),
        _ => path.segments.insert(
            0,
            AsSegment {
                kind: AsSegmentType::Sequence,
                asns: vec![asn],
            },
        ),
    }
    path
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
