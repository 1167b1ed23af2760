//! The RIB: Adj-RIB-In per peer, the Loc-RIB with the RFC 4271 §9.1 decision process, and
//! the Adj-RIB-Out per peer with export rules (iBGP split horizon, route reflection, next hop,
//! policy). Synchronous and single-owner: the RIB actor (`crate::actor`) is its only user.
//!
//! Storage ([`table`]): per family, a slab of destinations (the paths of a prefix, one per
//! peer, best first, and a mark per peer it was advertised to) with a hash index. Attribute
//! sets are interned. Every change of a best path appends the destination's position to a
//! change log; each peer catches up with the log at its own pace (a peer whose session is slow
//! only delays itself), sending the export of the current best path, or a withdrawal if it
//! has none and was sent one before, so repeated changes collapse. Modules: [`select`] ranks
//! paths, [`export`] decides and rewrites what each peer is sent, [`lookup`] answers queries
//! about the table (`calyx bgp routes`).

mod export;
mod lookup;
mod select;
mod table;

pub use lookup::{PathEntry, RouteEntry, RouteQuery, RouteTable, DEFAULT_LIMIT};

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;

use calyx_proto::notification::CeaseSubcode;
use calyx_proto::ErrorCode;
use calyx_proto::{Action, NotificationMessage, ParseContext};
use calyx_proto::{AfiSafi, AsPath, Asn, Ipv4Prefix, Ipv6Prefix, MpNextHop, MpNlri, UpdateMessage};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::attrs::{Attrs, FastBuild, FastMap, Interner, Prefix, RouteAttrs};
use crate::config::PeerConfig;
use crate::policy::{DefaultAction, PeerType, Verdict};
use export::{export, ExportCache};
use select::{best_key, next_hops, sort_paths, BestKey, Peers};
use table::{Dest, Key, Loc, Path, Table, Tables};

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
    /// Enhanced route refresh (RFC 7313): Beginning of Route Refresh for this family (the
    /// re-advertisement follows).
    BeginRefresh(AfiSafi),
    /// Enhanced route refresh: End of Route Refresh for this family (the re-advertisement is
    /// complete).
    EndRefresh(AfiSafi),
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
    /// Announcements of a prefix left out because no UPDATE could carry them to this peer
    /// (an attribute set longer than its maximum message): not advertised, tried again when
    /// the prefix changes.
    pub not_encoded: AtomicU64,
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
    /// The session's codec context (4-octet AS, extended messages): what an UPDATE to the
    /// peer can carry.
    pub context: ParseContext,
    /// The peer is restarting and we kept its routes (RFC 4724): wait for End-of-RIB.
    pub peer_restarting: bool,
    /// Whether we send End-of-RIB after the initial table.
    pub send_eor: bool,
    /// Enhanced route refresh was negotiated: a refresh we send is framed by BoRR and EoRR.
    pub enhanced_refresh: bool,
    /// The peer does graceful restart and is not restarting itself: when we restart, route
    /// selection waits for its End-of-RIB (RFC 4724 §4.1).
    pub wait_eor: bool,
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

#[derive(Debug)]
struct RibPeer {
    cfg: PeerConfig,
    ibgp: bool,
    router_id: Ipv4Addr,
    up: Option<UpInfo>,
    /// Adj-RIB-Out mark slot, while up.
    slot: u32,
    /// Position in the change log.
    cursor: usize,
    /// Slab positions still to send of the initial table (or a route refresh), per family.
    dump4: Range<u32>,
    dump6: Range<u32>,
    eor_pending: bool,
    pending: Option<OutMsg>,
    /// Enhanced route refresh: BoRR to send before the re-advertisement of these families,
    /// EoRR after it.
    borr: Vec<AfiSafi>,
    eorr: Vec<AfiSafi>,
    stale_families: Vec<AfiSafi>,
    /// Families the peer is re-advertising after its BoRR (RFC 7313 §4): its routes there
    /// are stale until its EoRR.
    refreshing: Vec<AfiSafi>,
    accepted: u64,
    filtered: HashSet<Prefix, FastBuild>,
    advertised: u64,
    counters: Arc<PeerCounters>,
    /// The family of the last announcement from the peer: the one a max-prefix
    /// NOTIFICATION names (RFC 4486 §4).
    last_family: AfiSafi,
}

impl RibPeer {
    fn peer_type(&self) -> PeerType {
        if self.ibgp {
            PeerType::Ibgp
        } else {
            PeerType::Ebgp
        }
    }

    fn dumping(&self) -> bool {
        !self.dump4.is_empty() || !self.dump6.is_empty()
    }
}

/// The RIB.
#[derive(Debug)]
pub struct Rib {
    global: RibGlobal,
    tables: Tables,
    peers: Peers,
    /// Adj-RIB-Out mark slots in use (by established peers).
    slots: Vec<bool>,
    interner: Interner,
    cache: ExportCache,
    log: Vec<Loc>,
    track: bool,
    changes: Vec<BestRouteChange>,
    actions: Vec<RibAction>,
    /// Restarting: nothing is sent to peers or subscribers until the peers' End-of-RIB.
    deferring: bool,
}

/// Where best-path changes are recorded: the log for the peers, the change list for
/// subscribers.
struct Recorder<'a> {
    peers: &'a Peers,
    global: &'a RibGlobal,
    log: &'a mut Vec<Loc>,
    track: bool,
    changes: &'a mut Vec<BestRouteChange>,
}

impl Recorder<'_> {
    /// Re-rank the paths of the destination at `pos` after a change and record it if the best
    /// path changed.
    fn note<K: Key>(&mut self, pos: u32, d: &mut Dest<K>, before: BestKey) {
        sort_paths(d, self.peers);
        let after = best_key(d, self.track, self.peers, self.global);
        let changed = match (&before, &after) {
            (Some(a), Some(b)) => a.0 != b.0 || a.1 != b.1 || a.2 != b.2,
            (None, None) => false,
            _ => true,
        };
        if !changed {
            return;
        }
        self.log.push(Loc::new::<K>(pos));
        if self.track {
            let nh = after.map(|a| a.2).unwrap_or_default();
            let old_nh = before.map(|a| a.2).unwrap_or_default();
            if nh != old_nh {
                self.changes.push(BestRouteChange {
                    prefix: d.key.wrap().to_net(),
                    withdrawn: nh.is_empty(),
                    next_hops: nh,
                });
            }
        }
    }

    /// Set (`Some`) or remove (`None`) the path of `peer` at `pos`; returns the change in the
    /// number of paths of `peer` (-1, 0, 1).
    fn set_path<K: Key>(
        &mut self,
        table: &mut Table<K>,
        pos: u32,
        peer: PeerId,
        attrs: Option<Attrs>,
    ) -> i64 {
        let Some(d) = table.get_mut(pos) else {
            return 0;
        };
        let before = best_key(d, self.track, self.peers, self.global);
        let i = d.paths.as_slice().iter().position(|p| p.peer == peer);
        let mut delta = 0;
        match (attrs, i) {
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
                    attrs: a,
                    peer,
                    stale: false,
                });
                delta = 1;
            }
            (None, Some(i)) => {
                d.paths.remove(i);
                delta = -1;
            }
            (None, None) => {}
        }
        if delta != 0 || i.is_some() {
            self.note(pos, d, before);
        }
        table.release_if_unused(pos);
        delta
    }

    /// Remove the paths of `id` for which `f` holds; returns how many were removed.
    fn sweep<K: Key>(
        &mut self,
        table: &mut Table<K>,
        id: PeerId,
        f: &dyn Fn(&Path) -> bool,
    ) -> u64 {
        let mut removed = 0;
        for pos in 0..table.end() {
            let Some(d) = table.get_mut(pos) else {
                continue;
            };
            if !d.paths.as_slice().iter().any(|p| p.peer == id && f(p)) {
                continue;
            }
            let before = best_key(d, self.track, self.peers, self.global);
            d.paths.retain(|p| !(p.peer == id && f(p)));
            removed += 1;
            self.note(pos, d, before);
            table.release_if_unused(pos);
        }
        removed
    }
}

/// Builds one batch for one peer: decides per destination and groups announcements by
/// attribute set.
struct BatchBuilder<'a> {
    id: PeerId,
    peer: &'a RibPeer,
    slot: u32,
    peers: &'a Peers,
    global: &'a RibGlobal,
    cache: &'a mut ExportCache,
    batch: OutBatch,
    /// Group of each exported set in the batch, per family, and the last one used.
    groups: [FastMap<usize, usize>; 2],
    last: [Option<(usize, usize)>; 2],
    /// Change of the number of prefixes advertised to the peer.
    advertised: i64,
    /// Whether each exported set of this batch can be encoded for the peer, by set.
    fits: FastMap<usize, bool>,
    /// Announcements left out because they cannot be encoded.
    not_encoded: u64,
}

impl BatchBuilder<'_> {
    fn add<K: Key>(&mut self, table: &mut Table<K>, pos: u32) {
        let Some(d) = table.get(pos) else {
            return;
        };
        let key = d.key;
        let new = export(
            self.id,
            self.peer,
            key.wrap(),
            d.best(),
            self.peers,
            self.global,
            self.cache,
        );
        // What cannot be encoded for this peer is not advertised (and withdrawn if an older
        // version was): marking it sent would leave the peer without it, or with a stale one.
        let new = new.filter(|a| self.fits::<K>(a));
        let was = table.is_out(pos, self.slot);
        match new {
            Some(a) => {
                if !was {
                    table.set_out(pos, self.slot, true);
                    self.advertised += 1;
                }
                self.announce(a, key);
            }
            None if was => {
                table.set_out(pos, self.slot, false);
                table.release_if_unused(pos);
                self.advertised -= 1;
                K::withdrawals(&mut self.batch).push(key);
            }
            None => {}
        }
    }

    /// Whether an announcement with the exported set `a` can be encoded for the peer; counted
    /// when not, and logged once per set and batch.
    fn fits<K: Key>(&mut self, a: &Attrs) -> bool {
        let ptr = Arc::as_ptr(a) as usize;
        let ok = match self.fits.get(&ptr) {
            Some(ok) => *ok,
            None => {
                let ctx = self.peer.up.as_ref().map(|u| u.context).unwrap_or_default();
                let ok = match crate::encode::fits(a, K::V6, &ctx) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(
                            peer = %self.peer.cfg.address,
                            "route not advertised, its UPDATE cannot be encoded: {e}"
                        );
                        false
                    }
                };
                self.fits.insert(ptr, ok);
                ok
            }
        };
        if !ok {
            self.not_encoded += 1;
        }
        ok
    }

    fn announce<K: Key>(&mut self, a: Attrs, key: K) {
        let f = usize::from(K::V6);
        let ptr = Arc::as_ptr(&a) as usize;
        let groups = K::groups(&mut self.batch);
        let i = match self.last[f] {
            Some((p, i)) if p == ptr => i,
            _ => {
                let i = *self.groups[f].entry(ptr).or_insert_with(|| {
                    groups.push((a, Vec::new()));
                    groups.len() - 1
                });
                self.last[f] = Some((ptr, i));
                i
            }
        };
        if let Some(g) = groups.get_mut(i) {
            g.1.push(key);
        }
    }
}

impl Rib {
    /// An empty RIB.
    pub fn new(global: RibGlobal) -> Self {
        Rib {
            global,
            tables: Tables::default(),
            peers: FastMap::default(),
            slots: Vec::new(),
            interner: Interner::default(),
            cache: ExportCache::default(),
            log: Vec::new(),
            track: false,
            changes: Vec::new(),
            actions: Vec::new(),
            deferring: false,
        }
    }

    /// Defer route selection (RFC 4724 §4.1, restarting speaker): routes are received and
    /// ranked, but nothing is advertised and no best-route change is handed out until this is
    /// turned off; then peers get their initial table and End-of-RIB, and subscribers every
    /// change at once.
    pub fn defer_selection(&mut self, on: bool) {
        self.deferring = on;
    }

    /// Whether route selection is deferred.
    pub fn deferring(&self) -> bool {
        self.deferring
    }

    fn recorder(&mut self) -> (&mut Tables, Recorder<'_>) {
        let Rib {
            tables,
            peers,
            global,
            log,
            track,
            changes,
            ..
        } = self;
        (
            tables,
            Recorder {
                peers,
                global,
                log,
                track: *track,
                changes,
            },
        )
    }

    /// Record best-route changes for subscribers (off by default: it costs a little per route).
    pub fn set_tracking(&mut self, on: bool) {
        self.track = on;
    }

    /// Best-route changes recorded and not taken yet.
    pub fn changes_recorded(&self) -> usize {
        self.changes.len()
    }

    /// Take the best-route changes recorded since the last call (none while deferring).
    pub fn take_changes(&mut self) -> Vec<BestRouteChange> {
        if self.deferring {
            return Vec::new();
        }
        std::mem::take(&mut self.changes)
    }

    /// Take the actions requested since the last call.
    pub fn take_actions(&mut self) -> Vec<RibAction> {
        std::mem::take(&mut self.actions)
    }

    /// Number of IPv4 and IPv6 prefixes held.
    pub fn len(&self) -> (usize, usize) {
        (self.tables.v4.len(), self.tables.v6.len())
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
                slot: 0,
                cursor: 0,
                dump4: 0..0,
                dump6: 0..0,
                eor_pending: false,
                pending: None,
                borr: Vec::new(),
                eorr: Vec::new(),
                stale_families: Vec::new(),
                refreshing: Vec::new(),
                accepted: 0,
                filtered: HashSet::default(),
                advertised: 0,
                counters: counters.clone(),
                last_family: AfiSafi::IPV4_UNICAST,
            },
        );
        counters
    }

    /// Remove a peer and everything learned from it.
    pub fn remove_peer(&mut self, id: PeerId) {
        self.peer_down(id, false);
        self.peers.remove(&id);
    }

    /// The session with `id` is Established.
    pub fn peer_up(&mut self, id: PeerId, up: UpInfo) {
        if self.peers.get(&id).is_some_and(|p| p.up.is_some()) {
            self.forget_advertised(id);
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.router_id = up.router_id;
        if !up.peer_restarting && !p.stale_families.is_empty() {
            // It came back without keeping state: what we kept is worthless.
            p.stale_families.clear();
            self.sweep(id, |path| path.stale);
        }
        let slot = match self.slots.iter().position(|used| !used) {
            Some(s) => s,
            None => {
                self.slots.push(false);
                self.slots.len() - 1
            }
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = true;
        }
        let (end4, end6) = (self.tables.v4.end(), self.tables.v6.end());
        let log_len = self.log.len();
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.slot = u32::try_from(slot).unwrap_or(u32::MAX);
        p.eor_pending = up.send_eor;
        p.dump4 = 0..if up.families.contains(&AfiSafi::IPV4_UNICAST) {
            end4
        } else {
            0
        };
        p.dump6 = 0..if up.families.contains(&AfiSafi::IPV6_UNICAST) {
            end6
        } else {
            0
        };
        p.up = Some(up);
        p.cursor = log_len;
        p.pending = None;
        p.borr.clear();
        p.eorr.clear();
        p.refreshing.clear();
    }

    /// Drop the Adj-RIB-Out of a peer whose session ended, and free its mark slot.
    fn forget_advertised(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.up.take().is_none() {
            return;
        }
        let slot = p.slot;
        p.dump4 = 0..0;
        p.dump6 = 0..0;
        p.pending = None;
        p.advertised = 0;
        p.counters.advertised.store(0, AtOrd::Relaxed);
        self.tables.v4.clear_slot(slot);
        self.tables.v6.clear_slot(slot);
        for pos in 0..self.tables.v4.end() {
            self.tables.v4.release_if_unused(pos);
        }
        for pos in 0..self.tables.v6.end() {
            self.tables.v6.release_if_unused(pos);
        }
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = false;
        }
    }

    /// The session went down; with `keep_stale`, the peer's routes are kept, marked stale,
    /// until [`Rib::flush_stale`] or an End-of-RIB after it comes back (RFC 4724 §4.2).
    pub fn peer_down(&mut self, id: PeerId, keep_stale: bool) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        let families =
            p.up.as_ref()
                .map(|u| u.families.clone())
                .unwrap_or_default();
        self.forget_advertised(id);
        if keep_stale && !families.is_empty() {
            if let Some(p) = self.peers.get_mut(&id) {
                p.stale_families = families;
            }
            mark_stale(&mut self.tables.v4, id);
            mark_stale(&mut self.tables.v6, id);
        } else {
            if let Some(p) = self.peers.get_mut(&id) {
                p.stale_families.clear();
                p.filtered.clear();
            }
            self.sweep(id, |_| true);
        }
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

    /// Remove the paths of `id` for which `f` holds, in both families, updating best paths.
    fn sweep(&mut self, id: PeerId, f: impl Fn(&Path) -> bool) {
        let (tables, mut rec) = self.recorder();
        let removed = rec.sweep(&mut tables.v4, id, &f) + rec.sweep(&mut tables.v6, id, &f);
        self.lose_accepted(id, removed);
    }

    fn lose_accepted(&mut self, id: PeerId, removed: u64) {
        if let Some(p) = self.peers.get_mut(&id) {
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
            self.receive(id, w.prefix, None);
        }
        if let Some(m) = u.mp_unreach.take() {
            match m.nlri {
                MpNlri::Ipv4(v) => v.into_iter().for_each(|n| self.receive(id, n.prefix, None)),
                MpNlri::Ipv6(v) => v.into_iter().for_each(|n| self.receive(id, n.prefix, None)),
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
        let mp_reach = u.mp_reach.take();
        let announced = match mp_reach.as_ref().map(|m| &m.nlri) {
            Some(MpNlri::Ipv4(v)) if !v.is_empty() => Some(AfiSafi::IPV4_UNICAST),
            Some(MpNlri::Ipv6(v)) if !v.is_empty() => Some(AfiSafi::IPV6_UNICAST),
            _ => (!u.nlri.is_empty()).then_some(AfiSafi::IPV4_UNICAST),
        };
        if let (Some(f), Some(p)) = (announced, self.peers.get_mut(&id)) {
            p.last_family = f;
        }
        if !u.nlri.is_empty() {
            let shared = match (nh4, reject) {
                (Some(nh), false) => {
                    // The attributes are moved, not copied, unless MP_REACH needs them too.
                    let a = if mp_reach.is_some() {
                        attrs.clone()
                    } else {
                        std::mem::take(&mut attrs)
                    };
                    Some(self.interner.intern(RouteAttrs {
                        attrs: a,
                        next_hop: IpAddr::V4(nh),
                        link_local: None,
                    }))
                }
                _ => None,
            };
            for n in std::mem::take(&mut u.nlri) {
                self.receive_with_policy(id, n.prefix, shared.as_ref());
            }
        }
        if let Some(m) = mp_reach {
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
                MpNlri::Ipv4(v) => v
                    .into_iter()
                    .for_each(|n| self.receive_with_policy(id, n.prefix, shared.as_ref())),
                MpNlri::Ipv6(v) => v
                    .into_iter()
                    .for_each(|n| self.receive_with_policy(id, n.prefix, shared.as_ref())),
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
        if !p.stale_families.contains(&f) {
            return;
        }
        p.stale_families.retain(|x| *x != f);
        self.sweep_stale(id, f);
    }

    /// Remove the stale paths of `id` in family `f`.
    fn sweep_stale(&mut self, id: PeerId, f: AfiSafi) {
        let stale = |p: &Path| p.stale;
        let (tables, mut rec) = self.recorder();
        let removed = if f == AfiSafi::IPV4_UNICAST {
            rec.sweep(&mut tables.v4, id, &stale)
        } else if f == AfiSafi::IPV6_UNICAST {
            rec.sweep(&mut tables.v6, id, &stale)
        } else {
            0
        };
        self.lose_accepted(id, removed);
    }

    /// AS_PATH / ORIGINATOR_ID / CLUSTER_LIST loop checks (RFC 4271 §9.1.2, RFC 4456 §8).
    fn loops(&self, id: PeerId, a: &calyx_proto::PathAttributes) -> bool {
        let peer = self.peers.get(&id);
        let allowed = peer.map_or(0, |p| usize::from(p.cfg.allowed_local_as));
        // The AS this session presents, as BIRD checks `local as` per protocol.
        let own = peer
            .and_then(|p| p.cfg.local_as)
            .map_or(self.global.local_as, Asn);
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

    fn receive_with_policy<K: Key>(&mut self, id: PeerId, k: K, attrs: Option<&Attrs>) {
        let Some(a) = attrs else {
            self.receive(id, k, None);
            return;
        };
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(pol) = &peer.cfg.import else {
            self.receive(id, k, Some(a.clone()));
            return;
        };
        match pol.evaluate(&k.wrap().to_net(), &a.attrs, peer.peer_type()) {
            Verdict::Reject | Verdict::Default(DefaultAction::Reject) => {
                self.receive(id, k, None);
                if let Some(p) = self.peers.get_mut(&id) {
                    p.filtered.insert(k.wrap());
                }
            }
            Verdict::Default(_) => self.receive(id, k, Some(a.clone())),
            Verdict::Rule(i) => {
                let a = match pol.rules.get(i) {
                    Some(r) if r.modifies() => {
                        let mut ra = RouteAttrs::clone(a);
                        r.apply(&mut ra.attrs);
                        self.interner.intern(ra)
                    }
                    _ => a.clone(),
                };
                self.receive(id, k, Some(a));
            }
        }
    }

    fn receive<K: Key>(&mut self, id: PeerId, k: K, attrs: Option<Attrs>) {
        if let Some(p) = self.peers.get_mut(&id) {
            if !p.filtered.is_empty() {
                p.filtered.remove(&k.wrap());
            }
        }
        self.set_path_in(k, id, attrs);
    }

    fn check_max(&mut self, id: PeerId) {
        let Some(p) = self.peers.get(&id) else { return };
        if let Some(max) = p.cfg.max_prefixes {
            if p.accepted > u64::from(max) && p.up.is_some() {
                let restart = (p.cfg.max_prefixes_restart > 0)
                    .then(|| std::time::Duration::from_secs(u64::from(p.cfg.max_prefixes_restart)));
                // RFC 4486 §4: data = AFI (2 octets), SAFI (1), upper bound (4), for the
                // family whose announcement crossed the limit.
                let f = p.last_family;
                let mut data = u16::from(f.afi).to_be_bytes().to_vec();
                data.push(u8::from(f.safi));
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
        match prefix {
            Prefix::V4(k) => self.set_path_in(k, peer, attrs),
            Prefix::V6(k) => self.set_path_in(k, peer, attrs),
        }
    }

    fn set_path_in<K: Key>(&mut self, k: K, peer: PeerId, attrs: Option<Attrs>) {
        let (tables, mut rec) = self.recorder();
        let table = K::table(tables);
        let pos = match &attrs {
            Some(_) => table.find_or_insert(k),
            None => match table.find(&k) {
                Some(pos) => pos,
                None => return,
            },
        };
        let delta = rec.set_path(table, pos, peer, attrs);
        if delta != 0 {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.accepted = p.accepted.saturating_add_signed(delta);
            }
        }
    }

    /// The peer asked for a route refresh (or its export rules changed): send everything of
    /// `family` again, framed by BoRR and EoRR with enhanced route refresh (RFC 7313 §4).
    /// Prefixes no longer exported are withdrawn on the way.
    pub fn refresh(&mut self, id: PeerId, family: AfiSafi) {
        let (end4, end6) = (self.tables.v4.end(), self.tables.v6.end());
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(up) = &p.up else { return };
        if !up.families.contains(&family) {
            return;
        }
        if family == AfiSafi::IPV4_UNICAST {
            p.dump4 = 0..end4;
        } else if family == AfiSafi::IPV6_UNICAST {
            p.dump6 = 0..end6;
        } else {
            return;
        }
        if up.enhanced_refresh {
            if !p.borr.contains(&family) {
                p.borr.push(family);
            }
            if !p.eorr.contains(&family) {
                p.eorr.push(family);
            }
        }
    }

    /// The peer sent BoRR (RFC 7313 §4): its routes of `family` are stale until its EoRR.
    pub fn begin_refresh(&mut self, id: PeerId, family: AfiSafi) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.stale_families.contains(&family) {
            // Graceful restart already keeps them stale until End-of-RIB.
            return;
        }
        if !p.refreshing.contains(&family) {
            p.refreshing.push(family);
        }
        if family == AfiSafi::IPV4_UNICAST {
            mark_stale(&mut self.tables.v4, id);
        } else if family == AfiSafi::IPV6_UNICAST {
            mark_stale(&mut self.tables.v6, id);
        }
    }

    /// The peer sent EoRR: what it did not re-advertise since its BoRR is gone.
    pub fn end_refresh(&mut self, id: PeerId, family: AfiSafi) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.refreshing.contains(&family) {
            // EoRR without BoRR: ignored (RFC 7313 §4).
            return;
        }
        p.refreshing.retain(|f| *f != family);
        self.sweep_stale(id, family);
    }

    /// Replace the parts of a peer's configuration that do not need a new session (policy,
    /// reflection, next hop, limits). The caller decides whether a refresh is needed.
    pub fn update_peer_config(&mut self, id: PeerId, cfg: PeerConfig) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.cfg = cfg;
        }
        self.check_max(id);
    }

    /// The families negotiated with an established peer.
    pub fn families(&self, id: PeerId) -> Vec<AfiSafi> {
        self.peers
            .get(&id)
            .and_then(|p| p.up.as_ref())
            .map(|u| u.families.clone())
            .unwrap_or_default()
    }

    /// Whether some peer still has routes to be sent (call [`Rib::flush`] again later).
    pub fn has_pending(&self) -> bool {
        !self.deferring
            && self.peers.values().any(|p| {
                p.up.is_some()
                    && (p.pending.is_some()
                        || !p.borr.is_empty()
                        || !p.eorr.is_empty()
                        || p.dumping()
                        || p.cursor < self.log.len()
                        || p.eor_pending)
            })
    }

    /// Bring every Adj-RIB-Out up to date as far as the sessions accept batches. Returns true
    /// if work is left (a session's queue was full).
    pub fn flush(&mut self) -> bool {
        if self.deferring {
            return false;
        }
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
        self.cache.clear();
        let min = self
            .peers
            .values()
            .filter(|p| p.up.is_some())
            .map(|p| p.cursor)
            .min();
        match min {
            Some(m) if m == self.log.len() => self.trim_log(m),
            None => self.trim_log(self.log.len()),
            Some(m) if m > 1 << 16 => self.trim_log(m),
            _ => {}
        }
        left
    }

    /// Drop the first `n` log entries (every peer has read them).
    fn trim_log(&mut self, n: usize) {
        if n >= self.log.len() {
            self.log.clear();
            if self.log.capacity() > 1 << 16 {
                self.log.shrink_to(1 << 16);
            }
        } else {
            self.log.drain(..n);
        }
        self.peers
            .values_mut()
            .for_each(|p| p.cursor = p.cursor.saturating_sub(n));
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
            while let Some(f) = p.borr.first().copied() {
                match up.tx.try_send(OutMsg::BeginRefresh(f)) {
                    Ok(()) => {
                        p.borr.remove(0);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => return true,
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if !p.dumping() {
                while let Some(f) = p.eorr.first().copied() {
                    match up.tx.try_send(OutMsg::EndRefresh(f)) {
                        Ok(()) => {
                            p.eorr.remove(0);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => return true,
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                }
            }
            let work = p.dumping() || p.cursor < self.log.len();
            if !work {
                if p.eor_pending {
                    p.eor_pending = false;
                    for f in up.families.clone() {
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

    /// Compute up to [`BATCH`] route changes for peer `id` from its initial table and the log.
    fn build_batch(&mut self, id: PeerId) -> OutBatch {
        let mut items: Vec<Loc> = Vec::with_capacity(BATCH);
        {
            let Some(p) = self.peers.get_mut(&id) else {
                return OutBatch::default();
            };
            while items.len() < BATCH {
                if let Some(pos) = p.dump4.next() {
                    items.push(Loc::new::<Ipv4Prefix>(pos));
                } else if let Some(pos) = p.dump6.next() {
                    items.push(Loc::new::<Ipv6Prefix>(pos));
                } else if let Some(l) = self.log.get(p.cursor) {
                    items.push(*l);
                    p.cursor += 1;
                } else {
                    break;
                }
            }
        }
        let Rib {
            tables,
            peers,
            global,
            cache,
            ..
        } = self;
        let Some(peer) = peers.get(&id) else {
            return OutBatch::default();
        };
        let mut b = BatchBuilder {
            id,
            peer,
            slot: peer.slot,
            peers,
            global,
            cache,
            batch: OutBatch::default(),
            groups: Default::default(),
            last: [None, None],
            advertised: 0,
            fits: FastMap::default(),
            not_encoded: 0,
        };
        for l in items {
            if l.is_v6() {
                b.add(&mut tables.v6, l.pos());
            } else {
                b.add(&mut tables.v4, l.pos());
            }
        }
        let (batch, delta, not_encoded) = (b.batch, b.advertised, b.not_encoded);
        if let Some(p) = self.peers.get_mut(&id) {
            if not_encoded > 0 {
                p.counters
                    .not_encoded
                    .fetch_add(not_encoded, AtOrd::Relaxed);
            }
            p.advertised = p.advertised.saturating_add_signed(delta);
            p.counters.advertised.store(p.advertised, AtOrd::Relaxed);
        }
        batch
    }

    /// Drop interned sets nobody uses any more.
    pub fn collect_garbage(&mut self) {
        self.interner.collect();
    }

    /// The current best routes learned from peers, as changes (for a new subscriber).
    pub fn snapshot(&self) -> Vec<BestRouteChange> {
        fn add<K: Key>(t: &Table<K>, rib: &Rib, v: &mut Vec<BestRouteChange>) {
            for (_, d) in t.iter() {
                let nh = next_hops(d, &rib.peers, &rib.global);
                if !nh.is_empty() {
                    v.push(BestRouteChange {
                        prefix: d.key.wrap().to_net(),
                        next_hops: nh,
                        withdrawn: false,
                    });
                }
            }
        }
        let mut v = Vec::new();
        add(&self.tables.v4, self, &mut v);
        add(&self.tables.v6, self, &mut v);
        v
    }

    /// The best paths: (prefix, next hop, peer) for inspection and tests.
    pub fn best_routes(&self) -> Vec<(Prefix, IpAddr, PeerId)> {
        fn add<K: Key>(t: &Table<K>, v: &mut Vec<(Prefix, IpAddr, PeerId)>) {
            for (_, d) in t.iter() {
                if let Some(b) = d.best() {
                    v.push((d.key.wrap(), b.attrs.next_hop, b.peer));
                }
            }
        }
        let mut v = Vec::new();
        add(&self.tables.v4, &mut v);
        add(&self.tables.v6, &mut v);
        v.sort();
        v
    }

    /// What peer `id` was last sent for `prefix` (Adj-RIB-Out), if anything, for tests and
    /// inspection: the export of the current best path once the peer is caught up.
    pub fn advertised(&self, id: PeerId, prefix: Prefix) -> Option<Attrs> {
        let q = self.peers.get(&id)?;
        q.up.as_ref()?;
        let (out, best) = match prefix {
            Prefix::V4(k) => {
                let pos = self.tables.v4.find(&k)?;
                (
                    self.tables.v4.is_out(pos, q.slot),
                    self.tables.v4.get(pos)?.best().cloned(),
                )
            }
            Prefix::V6(k) => {
                let pos = self.tables.v6.find(&k)?;
                (
                    self.tables.v6.is_out(pos, q.slot),
                    self.tables.v6.get(pos)?.best().cloned(),
                )
            }
        };
        if !out {
            return None;
        }
        let mut cache = ExportCache::default();
        export(
            id,
            q,
            prefix,
            best.as_ref(),
            &self.peers,
            &self.global,
            &mut cache,
        )
    }
}

fn mark_stale<K: Key>(table: &mut Table<K>, id: PeerId) {
    for pos in 0..table.end() {
        if let Some(d) = table.get_mut(pos) {
            for path in d.paths.as_mut_slice() {
                if path.peer == id {
                    path.stale = true;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
