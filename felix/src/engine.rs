//! The synchronous core: holds the incremental plan and a cache of the routes of ours that the
//! kernel holds, and brings the kernel in line (devices and L2 entries through [`devices`],
//! routes here).
//!
//! Route work is per key: a plan change or a notification marks its key dirty, and a pass
//! diffs and writes the dirty keys only. A full pass (start, periodic resync, overrun, device
//! change) dumps the kernel and walks everything instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;

use crate::config::{Config, IPIP_DEVICE, VXLAN_V4_DEVICE, VXLAN_V6_DEVICE};
use crate::devices;
use crate::fasthash::{FastMap, FastSet};
use crate::incremental::IncrementalPlan;
use crate::intern::{Id, Interner};
use crate::model::{HostState, RouteUpdate};
use crate::nl::{decode, NlSocket};
use crate::plan::Env;
use crate::route::{self, RouteKey, RouteSpec, WriteMode};
use crate::status::{ApplyStats, ReconcilerStatus, RouteFailure};
use crate::wire;

mod live;
use live::seen_spec;

#[derive(Debug, Clone)]
struct Failure {
    error: String,
    attempts: u32,
    next_retry: Instant,
}

/// A route write to do; a write's spec is the plan's (read when it is encoded, so that a
/// million pending writes hold no copy of it).
enum Op {
    Write(WriteMode),
    Delete,
}

/// What is derived from comparing the plan with the kernel (whose routes the plan holds next
/// to its own, see [`IncrementalPlan::kernel`]), kept apart from the plan so that the plan's
/// change reports can update it while the plan changes.
#[derive(Default)]
struct Track {
    /// Keys to diff and write in the next pass.
    dirty: FastSet<RouteKey>,
    /// Keys that notifications showed changed under us (for the drift-repair counter).
    drifted: FastSet<RouteKey>,
    failures: FastMap<RouteKey, Failure>,
    /// The plan changed and the resulting writes are not all done yet.
    plan_changed: bool,
}

impl Track {
    /// The plan's report that the route wanted under `key` changed.
    fn on_plan_change(&mut self, key: RouteKey) {
        // A new spec deserves a fresh attempt, not the old one's back-off.
        self.failures.remove(&key);
        self.dirty.insert(key);
        self.plan_changed = true;
    }
}

/// The reconciliation state machine over one request socket.
pub(crate) struct Engine {
    cfg: Config,
    nl: NlSocket,
    host: HostState,
    plan: IncrementalPlan,
    track: Track,
    need_links: bool,
    need_dump: bool,
    need_l2: bool,
    check_all: bool,
    device_errors: Vec<String>,
    last_full: Option<Instant>,
    synced_once: bool,
    pub(crate) status: ReconcilerStatus,
}

impl Engine {
    pub(crate) fn new(cfg: Config, nl: NlSocket) -> Engine {
        Engine {
            plan: IncrementalPlan::new(Env {
                table: cfg.table,
                metric: cfg.metric,
                ..Default::default()
            }),
            cfg,
            nl,
            host: HostState::default(),
            track: Track::default(),
            need_links: true,
            need_dump: true,
            need_l2: true,
            check_all: true,
            device_errors: Vec::new(),
            last_full: None,
            synced_once: false,
            status: ReconcilerStatus::default(),
        }
    }

    /// Replaces the host part of the desired state: local blocks change per block; a change
    /// of node addresses or tunnel settings schedules a device pass.
    pub(crate) fn set_host(&mut self, host: HostState) {
        if host == self.host {
            return;
        }
        self.need_links |= host.devices_differ(&self.host);
        if host.local_blocks != self.host.local_blocks {
            let track = &mut self.track;
            self.plan
                .set_local_blocks(&host.local_blocks, &mut |k, _, _| track.on_plan_change(k));
        }
        self.host = host;
    }

    /// Applies route updates to the plan; only the keys they change are diffed and written in
    /// the next passes.
    pub(crate) fn update_routes(&mut self, updates: impl IntoIterator<Item = RouteUpdate>) {
        let track = &mut self.track;
        let mut n = 0u64;
        for u in updates {
            n += 1;
            self.plan.apply(u, &mut |k, _, _| track.on_plan_change(k));
        }
        self.status.route_updates += n;
    }

    /// Route keys waiting to be diffed and written.
    pub(crate) fn backlog(&self) -> usize {
        self.track.dirty.len()
    }

    /// Schedules a full resync (links, L2, route dump).
    pub(crate) fn request_full(&mut self) {
        self.need_links = true;
        self.need_dump = true;
        self.need_l2 = true;
    }

    pub(crate) fn on_overrun(&mut self) {
        self.status.notification_overruns += 1;
        self.request_full();
    }

    fn periodic_due(&self, now: Instant) -> bool {
        self.last_full
            .is_none_or(|t| now.duration_since(t) >= self.cfg.route_refresh_interval)
    }

    pub(crate) fn has_work(&self, now: Instant) -> bool {
        self.need_links
            || self.need_dump
            || self.need_l2
            // A VTEP's MAC can change with no route changing (same tunnel IP).
            || self.plan.l2_changed()
            || self.check_all
            || !self.track.dirty.is_empty()
            || self.periodic_due(now)
            || self.track.failures.values().any(|f| f.next_retry <= now)
    }

    /// When the engine next has timed work (a retry or the periodic resync).
    pub(crate) fn next_deadline(&self) -> Instant {
        let periodic = self
            .last_full
            .map_or_else(Instant::now, |t| t + self.cfg.route_refresh_interval);
        self.track
            .failures
            .values()
            .map(|f| f.next_retry)
            .min()
            .map_or(periodic, |r| r.min(periodic))
    }

    /// The configured source addresses (IPv4, IPv6).
    fn route_src(&self) -> (Option<IpAddr>, Option<IpAddr>) {
        (
            self.cfg.route_src_v4.map(IpAddr::V4),
            self.cfg.route_src_v6.map(IpAddr::V6),
        )
    }

    fn tracked_index(&self, idx: u32) -> bool {
        let env = self.plan.env();
        [
            env.underlay_v4,
            env.underlay_v6,
            env.tunl0,
            env.vxlan_v4,
            env.vxlan_v6,
        ]
        .contains(&Some(idx))
    }

    fn tracked_name(&self, name: &str) -> bool {
        name == IPIP_DEVICE
            || name == VXLAN_V4_DEVICE
            || name == VXLAN_V6_DEVICE
            || self.cfg.underlay_interface.as_deref() == Some(name)
    }

    fn node_ip(&self, ip: IpAddr) -> bool {
        self.host.node_ipv4.map(|n| IpAddr::V4(n.addr())) == Some(ip)
            || self.host.node_ipv6.map(|n| IpAddr::V6(n.addr())) == Some(ip)
    }

    /// Digests one datagram from the notification socket.
    pub(crate) fn on_notifications(&mut self, buf: &[u8]) {
        for m in wire::messages(buf) {
            match m.ty {
                wire::RTM_NEWROUTE | wire::RTM_DELROUTE => self.on_route_event(&m),
                wire::RTM_NEWLINK | wire::RTM_DELLINK => {
                    let idx = m
                        .payload
                        .get(4..8)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    let mut relevant = self.tracked_index(idx);
                    if !relevant {
                        if let Some(
                            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l),
                        ) = decode(&m)
                        {
                            relevant = l.attributes.iter().any(
                                |a| matches!(a, LinkAttribute::IfName(n) if self.tracked_name(n)),
                            );
                        }
                    }
                    if relevant {
                        tracing::debug!(index = idx, "link event: full pass");
                        self.need_links = true;
                        self.need_dump = true;
                        self.need_l2 = true;
                    }
                }
                wire::RTM_NEWADDR | wire::RTM_DELADDR => {
                    let idx = m
                        .payload
                        .get(4..8)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    // Link-scope addresses (an IPv6 link-local appearing after DAD, say) are
                    // never the node address nor its subnet: no full pass for them.
                    const RT_SCOPE_LINK: u8 = 253;
                    if m.payload.get(3) == Some(&RT_SCOPE_LINK) {
                        continue;
                    }
                    let mut relevant = self.tracked_index(idx);
                    if !relevant {
                        if let Some(
                            RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
                        ) = decode(&m)
                        {
                            relevant = a.attributes.iter().any(|x| match x {
                                netlink_packet_route::address::AddressAttribute::Local(ip)
                                | netlink_packet_route::address::AddressAttribute::Address(ip) => {
                                    self.node_ip(*ip)
                                }
                                _ => false,
                            });
                        }
                    }
                    if relevant {
                        tracing::debug!(index = idx, "address event: full pass");
                        self.need_links = true;
                        self.need_dump = true;
                    }
                }
                wire::RTM_NEWNEIGH | wire::RTM_DELNEIGH => {
                    let idx = m
                        .payload
                        .get(4..8)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if Some(idx) == self.plan.env().vxlan_v4
                        || Some(idx) == self.plan.env().vxlan_v6
                    {
                        self.need_l2 = true;
                    }
                }
                _ => {}
            }
        }
    }

    fn on_route_event(&mut self, m: &wire::RawMsg<'_>) {
        let Some(p) = route::parse(m.payload) else {
            return;
        };
        if p.key.table != self.cfg.table {
            return;
        }
        let new = m.ty == wire::RTM_NEWROUTE;
        let want = self.plan.route(&p.key);
        if p.protocol == self.cfg.route_protocol {
            let have = if new {
                Some(seen_spec(&p, self.route_src()))
            } else {
                None
            };
            if self.plan.kernel(&p.key) != have.as_ref() {
                // Echoes of our own writes match the cache and end here; anything else is a
                // change under us (or an echo overtaken by a newer write: the diff sorts it).
                if want != have.as_ref() {
                    self.track.drifted.insert(p.key);
                }
                self.plan.set_kernel(p.key, have.as_ref());
                self.track.dirty.insert(p.key);
            }
        } else if want.is_some() {
            if new {
                // A foreign route took this key; it may have replaced ours: look again.
                tracing::debug!(dst = %p.key.dst, "foreign route on a key of ours: full pass");
                self.need_dump = true;
            } else {
                // A foreign route left: ours may now be writable.
                if let Some(f) = self.track.failures.get_mut(&p.key) {
                    f.next_retry = Instant::now();
                }
                self.track.dirty.insert(p.key);
            }
        }
    }

    /// Refreshes the cache of our routes from a kernel dump. Fast path: the dump is compared
    /// with the cache in place (lookups only, no allocation); only when they differ is the
    /// cache rebuilt from a second dump. Returns whether it was rebuilt.
    fn dump_routes(&mut self) -> std::io::Result<bool> {
        let (table, proto) = (self.cfg.table, self.cfg.route_protocol);
        let src = self.route_src();
        let mut matched = 0usize;
        let mut differs = false;
        {
            let plan = &self.plan;
            for v6 in [false, true] {
                self.nl.dump(
                    |buf, seq| route::encode_dump(buf, seq, v6, table, proto),
                    |m| {
                        if differs || m.ty != wire::RTM_NEWROUTE {
                            return;
                        }
                        if let Some(p) = route::parse(m.payload) {
                            if p.protocol == proto && p.key.table == table {
                                let spec = seen_spec(&p, src);
                                if plan.kernel(&p.key) == Some(&spec) {
                                    matched += 1;
                                } else {
                                    differs = true;
                                }
                            }
                        }
                    },
                )?;
            }
        }
        if !differs && matched == self.plan.kernel_len() {
            return Ok(false);
        }
        // Read into a map of its own first: a dump that fails half-way leaves the cache as
        // it was (and is retried), not half-empty. Rare: only when the kernel differs.
        let mut kernel: FastMap<RouteKey, Id> = FastMap::with_capacity_and_hasher(
            self.plan.kernel_len().max(self.plan.routes_len()),
            Default::default(),
        );
        let mut specs: Interner<RouteSpec> = Interner::default();
        for v6 in [false, true] {
            self.nl.dump(
                |buf, seq| route::encode_dump(buf, seq, v6, table, proto),
                |m| {
                    if m.ty != wire::RTM_NEWROUTE {
                        return;
                    }
                    if let Some(p) = route::parse(m.payload) {
                        if p.protocol == proto && p.key.table == table {
                            let id = specs.intern(seen_spec(&p, src));
                            if let Some(old) = kernel.insert(p.key, id) {
                                specs.release(old);
                            }
                        }
                    }
                },
            )?;
        }
        self.plan.clear_kernel();
        for (k, id) in kernel {
            self.plan.set_kernel(k, specs.get(id));
        }
        Ok(true)
    }
    /// Drops the failures of keys neither wanted nor in the kernel (after the cache or the
    /// plan was rebuilt wholesale).
    fn prune_failures(&mut self) {
        let plan = &self.plan;
        self.track
            .failures
            .retain(|k, _| plan.has_route(k) || plan.kernel(k).is_some());
    }

    fn op_for(&self, k: &RouteKey) -> Option<Op> {
        match (self.plan.route(k), self.plan.kernel(k)) {
            (Some(want), Some(have)) if want == have => None,
            (Some(_), Some(_)) => Some(Op::Write(WriteMode::Replace)),
            (Some(_), None) => Some(Op::Write(WriteMode::Create)),
            (None, Some(_)) => Some(Op::Delete),
            (None, None) => None,
        }
    }

    /// One pass: devices and L2 entries when needed, then at most `max_ops` route writes
    /// (the rest stay dirty for the next pass, so that the caller can read the notifications
    /// these writes cause before the kernel's buffer for them overflows). Returns the route
    /// apply statistics.
    pub(crate) fn step(&mut self, now: Instant, max_ops: usize) -> ApplyStats {
        let started = Instant::now();
        if self.periodic_due(now) {
            self.request_full();
        }
        let full = self.need_dump;
        // Retries that are due.
        let due: Vec<RouteKey> = self
            .track
            .failures
            .iter()
            .filter(|(_, f)| f.next_retry <= now)
            .map(|(k, _)| *k)
            .collect();
        self.track.dirty.extend(due);

        let mut recount = false;
        if self.need_links {
            self.need_links = false;
            let (env, errors) = devices::reconcile_links(&mut self.nl, &self.cfg, &self.host);
            for e in &errors {
                tracing::warn!(error = %e, "dataplane device problem");
            }
            self.device_errors = errors;
            if self.plan.set_env(env) {
                // Every route may compile differently: walk them all (rare).
                self.check_all = true;
                self.track.plan_changed = true;
                recount = true;
            }
        }
        self.need_l2 |= self.plan.take_l2_changed();
        if self.need_l2 {
            self.need_l2 = false;
            let (neighbours, fdb) = (self.plan.neighbours(), self.plan.fdb());
            if let Err(e) = devices::reconcile_l2(&mut self.nl, self.plan.env(), &neighbours, &fdb)
            {
                tracing::warn!(error = %e, "neighbour/FDB reconcile");
                if !self.device_errors.contains(&e) {
                    self.device_errors.push(e);
                }
            }
            self.status.neighbours = neighbours.len();
            self.status.fdb_entries = fdb.len();
        }
        if self.need_dump {
            match self.dump_routes() {
                Ok(rebuilt) => {
                    self.need_dump = false;
                    self.check_all = true;
                    recount |= rebuilt;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "route dump failed");
                    let e = format!("route dump: {e}");
                    if !self.device_errors.contains(&e) {
                        self.device_errors.push(e);
                    }
                }
            }
        }
        if recount {
            self.prune_failures();
        }

        // Collect the operations: all differences after a dump or an environment change,
        // else those of the dirty keys.
        let check_all = std::mem::take(&mut self.check_all);
        let mut ops: Vec<(RouteKey, Op)> = Vec::new();
        if check_all {
            let plan = &self.plan;
            for (k, want) in plan.routes() {
                match plan.kernel(k) {
                    Some(have) if have == want => {}
                    Some(_) => ops.push((*k, Op::Write(WriteMode::Replace))),
                    None => ops.push((*k, Op::Write(WriteMode::Create))),
                }
            }
            for (k, _) in plan.kernel_routes() {
                if !plan.has_route(k) {
                    ops.push((*k, Op::Delete));
                }
            }
            self.track.dirty.clear();
        } else {
            let keys: Vec<RouteKey> = if self.track.dirty.len() <= max_ops {
                self.track.dirty.drain().collect()
            } else {
                let keys: Vec<RouteKey> = self.track.dirty.iter().take(max_ops).copied().collect();
                for k in &keys {
                    self.track.dirty.remove(k);
                }
                keys
            };
            for k in keys {
                match self.op_for(&k) {
                    Some(op) => ops.push((k, op)),
                    None => {
                        self.track.drifted.remove(&k);
                    }
                }
            }
        }
        // Respect back-off of failed routes (they are retried when due).
        let failures = &self.track.failures;
        ops.retain(|(k, _)| failures.get(k).is_none_or(|f| f.next_retry <= now));
        if ops.len() > max_ops {
            for (k, _) in ops.drain(max_ops..) {
                self.track.dirty.insert(k);
            }
        }

        // A full pass with no plan change behind it repairs what changed under us (a flushed
        // underlay, say): its writes count as drift repairs, as do writes of drifted keys.
        let full_repair = check_all && !self.track.plan_changed && self.synced_once;
        let mut stats = self.apply(&ops, full_repair);
        if check_all {
            self.track.drifted.clear();
        }
        if self.track.dirty.is_empty() {
            self.track.plan_changed = false;
            // A bulk change leaves a table sized for it (58 MiB after 1M keys): give it back.
            if self.track.dirty.capacity() > 65_536 {
                self.track.dirty.shrink_to_fit();
            }
        }
        self.synced_once = true;
        stats.duration = started.elapsed();
        if full {
            self.last_full = Some(now);
            self.status.resyncs += 1;
            self.status.last_resync = Some(SystemTime::now());
            self.status.last_resync_duration = Some(stats.duration);
        }
        self.status.last_apply = stats;
        self.status.route_writes += (stats.added + stats.replaced + stats.deleted) as u64;
        self.refresh_status(now);
        stats
    }

    fn apply(&mut self, ops: &[(RouteKey, Op)], full_repair: bool) -> ApplyStats {
        let mut stats = ApplyStats::default();
        if ops.is_empty() {
            return stats;
        }
        let proto = self.cfg.route_protocol;
        let (src_v4, src_v6) = self.route_src();
        let plan = &self.plan;
        let res = self.nl.batch(ops.len(), |i, buf, seq, ack| {
            let (k, op) = &ops[i];
            match (op, plan.route(k)) {
                (Op::Write(mode), Some(spec)) => {
                    let src = if k.dst.addr().is_ipv4() {
                        src_v4
                    } else {
                        src_v6
                    };
                    route::encode_new_src(buf, seq, ack, *mode, proto, k, spec, src)
                }
                // Ops are made from the plan just before and nothing changes it in between;
                // were a spec missing, a delete is the safe reading of "not wanted".
                (Op::Write(_), None) | (Op::Delete, _) => {
                    route::encode_del(buf, seq, ack, proto, k)
                }
            }
        });
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "netlink batch failed");
                self.need_dump = true;
                stats.failed = ops.len();
                return stats;
            }
        };
        if res.lost_replies {
            tracing::warn!("netlink replies lost: full pass");
            self.need_dump = true;
        }
        let mut failed: HashMap<usize, crate::nl::NlFailure> = res.failed.into_iter().collect();
        let now = Instant::now();
        let plan = &mut self.plan;
        let track = &mut self.track;
        let mut repaired = 0u64;
        for (i, (k, op)) in ops.iter().enumerate() {
            match (op, failed.remove(&i)) {
                (Op::Write(mode), None) => {
                    plan.set_kernel_wanted(*k);
                    track.failures.remove(k);
                    match mode {
                        WriteMode::Create => stats.added += 1,
                        WriteMode::Replace => stats.replaced += 1,
                    }
                    repaired += u64::from(track.drifted.remove(k) || full_repair);
                }
                (Op::Delete, None) => {
                    plan.set_kernel(*k, None);
                    track.failures.remove(k);
                    stats.deleted += 1;
                    repaired += u64::from(track.drifted.remove(k) || full_repair);
                }
                (Op::Delete, Some(f)) if f.errno == libc::ESRCH => {
                    plan.set_kernel(*k, None);
                    track.failures.remove(k);
                    track.drifted.remove(k);
                }
                (op, Some(f)) => {
                    stats.failed += 1;
                    let mut error = f.describe();
                    if matches!(op, Op::Write(WriteMode::Create)) && f.errno == libc::EEXIST {
                        error = format!("{error} (a route not owned by calyx holds this prefix)");
                    }
                    if matches!(op, Op::Write(WriteMode::Replace)) && f.errno == libc::ENOENT {
                        // Ours vanished meanwhile: create next time.
                        plan.set_kernel(*k, None);
                    }
                    let attempts = track.failures.get(k).map_or(0, |f| f.attempts) + 1;
                    let delay = backoff(&self.cfg, attempts);
                    tracing::debug!(dst = %k.dst, %error, attempts, "route write failed");
                    track.failures.insert(
                        *k,
                        Failure {
                            error,
                            attempts,
                            next_retry: now + delay,
                        },
                    );
                }
            }
        }
        self.status.drift_repairs += repaired;
        stats
    }

    fn refresh_status(&mut self, now: Instant) {
        let blocked = self.plan.blocked();
        let t = &self.track;
        let s = &mut self.status;
        s.routes_desired = self.plan.routes_len();
        s.routes_programmed = self.plan.programmed();
        s.routes_failed = t.failures.len();
        s.routes_pending = (s.routes_desired + blocked.len())
            .saturating_sub(s.routes_programmed)
            .saturating_sub(t.failures.len());
        s.routes_remote = self.plan.remote_len();
        s.failures = t
            .failures
            .iter()
            .take(64)
            .map(|(k, f)| RouteFailure {
                dst: k.dst,
                error: f.error.clone(),
                attempts: f.attempts,
                retry_in: f.next_retry.saturating_duration_since(now),
            })
            .collect();
        s.blocked = blocked
            .iter()
            .take(64)
            .map(|(d, w)| (*d, w.clone()))
            .collect();
        s.device_errors = self.device_errors.clone();
        let env = self.plan.env();
        s.underlay = (env.underlay_v4, env.underlay_v6);
        s.tunnel_devices = [
            (IPIP_DEVICE, env.tunl0),
            (VXLAN_V4_DEVICE, env.vxlan_v4),
            (VXLAN_V6_DEVICE, env.vxlan_v6),
        ]
        .into_iter()
        .filter_map(|(n, i)| i.map(|i| (n.to_string(), i)))
        .collect();
    }
}

/// Exponential back-off of a route's `attempts`-th failed write.
fn backoff(cfg: &Config, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    (cfg.retry_initial * (1u32 << shift)).min(cfg.retry_max)
}
