//! The synchronous core: holds the compiled plan and a cache of the routes of ours that the
//! kernel holds, and brings the kernel in line (devices, L2 entries, routes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;

use crate::config::{Config, IPIP_DEVICE, VXLAN_V4_DEVICE, VXLAN_V6_DEVICE};
use crate::fasthash::{FastMap, FastSet};
use crate::link::{self, VxlanParams, VxlanWant};
use crate::model::DesiredState;
use crate::mtu;
use crate::nl::{decode, NlSocket};
use crate::plan::{Env, Plan};
use crate::route::{self, RouteKey, RouteSpec, WriteMode};
use crate::status::{ApplyStats, ReconcilerStatus, RouteFailure};
use crate::wire::{self, NLM_F_CREATE, NLM_F_REPLACE};

#[derive(Debug, Clone)]
struct Failure {
    error: String,
    attempts: u32,
    next_retry: Instant,
}

enum Op {
    Write(WriteMode, RouteSpec),
    Delete,
}

/// Underlay facts for one family.
#[derive(Debug, Clone, Copy, Default)]
struct Underlay {
    index: u32,
    mtu: u32,
    subnet: Option<IpNet>,
    local: Option<IpAddr>,
}

/// The reconciliation state machine over one request socket.
pub(crate) struct Engine {
    cfg: Config,
    nl: NlSocket,
    desired: Arc<DesiredState>,
    desired_changed: bool,
    env: Env,
    plan: Plan,
    kernel: FastMap<RouteKey, RouteSpec>,
    need_links: bool,
    need_dump: bool,
    need_l2: bool,
    check_all: bool,
    dirty: FastSet<RouteKey>,
    failures: FastMap<RouteKey, Failure>,
    device_errors: Vec<String>,
    programmed: usize,
    last_full: Option<Instant>,
    synced_once: bool,
    pub(crate) status: ReconcilerStatus,
}

impl Engine {
    pub(crate) fn new(cfg: Config, nl: NlSocket) -> Engine {
        Engine {
            env: Env {
                table: cfg.table,
                metric: cfg.metric,
                ..Default::default()
            },
            cfg,
            nl,
            desired: Arc::new(DesiredState::default()),
            desired_changed: true,
            plan: Plan::default(),
            kernel: FastMap::default(),
            need_links: true,
            need_dump: true,
            need_l2: true,
            check_all: true,
            dirty: FastSet::default(),
            failures: FastMap::default(),
            device_errors: Vec::new(),
            programmed: 0,
            last_full: None,
            synced_once: false,
            status: ReconcilerStatus::default(),
        }
    }

    pub(crate) fn set_desired(&mut self, d: Arc<DesiredState>) {
        if *d != *self.desired || !self.synced_once {
            // Node address or tunnel settings may have changed: devices too.
            let devices_changed = d.node_ipv4 != self.desired.node_ipv4
                || d.node_ipv6 != self.desired.node_ipv6
                || d.ipip != self.desired.ipip
                || d.vxlan_v4 != self.desired.vxlan_v4
                || d.vxlan_v6 != self.desired.vxlan_v6;
            self.desired = d;
            self.desired_changed = true;
            self.need_links |= devices_changed;
        }
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
        self.desired_changed
            || self.need_links
            || self.need_dump
            || self.need_l2
            || self.check_all
            || !self.dirty.is_empty()
            || self.periodic_due(now)
            || self.failures.values().any(|f| f.next_retry <= now)
    }

    /// When the engine next has timed work (a retry or the periodic resync).
    pub(crate) fn next_deadline(&self) -> Instant {
        let periodic = self
            .last_full
            .map_or_else(Instant::now, |t| t + self.cfg.route_refresh_interval);
        self.failures
            .values()
            .map(|f| f.next_retry)
            .min()
            .map_or(periodic, |r| r.min(periodic))
    }

    fn tracked_index(&self, idx: u32) -> bool {
        [
            self.env.underlay_v4,
            self.env.underlay_v6,
            self.env.tunl0,
            self.env.vxlan_v4,
            self.env.vxlan_v6,
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
        self.desired.node_ipv4.map(|n| IpAddr::V4(n.addr())) == Some(ip)
            || self.desired.node_ipv6.map(|n| IpAddr::V6(n.addr())) == Some(ip)
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
                    if Some(idx) == self.env.vxlan_v4 || Some(idx) == self.env.vxlan_v6 {
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
        if p.protocol == self.cfg.route_protocol {
            if new {
                let spec = p.spec.unwrap_or(RouteSpec::Unsupported);
                if self.kernel.get(&p.key) != Some(&spec) {
                    self.kernel.insert(p.key, spec);
                    self.dirty.insert(p.key);
                }
            } else if self.kernel.remove(&p.key).is_some() {
                self.dirty.insert(p.key);
            }
        } else if self.plan.routes.contains_key(&p.key) {
            if new {
                // A foreign route took this key; it may have replaced ours: look again.
                self.need_dump = true;
            } else {
                // A foreign route left: ours may now be writable.
                if let Some(f) = self.failures.get_mut(&p.key) {
                    f.next_retry = Instant::now();
                }
                self.dirty.insert(p.key);
            }
        }
    }

    fn underlay(&mut self, v6: bool) -> Result<Option<Underlay>, String> {
        let node: Option<IpNet> = if v6 {
            self.desired.node_ipv6.map(IpNet::V6)
        } else {
            self.desired.node_ipv4.map(IpNet::V4)
        };
        let (index, mtu) = if let Some(name) = self.cfg.underlay_interface.clone() {
            match link::get_link(&mut self.nl, &name).map_err(|e| e.to_string())? {
                Some(l) => (l.index, l.mtu),
                None => return Err(format!("underlay interface {name} not found")),
            }
        } else {
            let Some(node) = node else {
                return Ok(None);
            };
            let addrs = link::addresses(&mut self.nl, None, v6).map_err(|e| e.to_string())?;
            let Some((idx, _)) = addrs.iter().find(|(_, n)| n.addr() == node.addr()) else {
                return Err(format!(
                    "no interface holds the node address {}",
                    node.addr()
                ));
            };
            match link::get_link_by_index(&mut self.nl, *idx).map_err(|e| e.to_string())? {
                Some(l) => (l.index, l.mtu),
                None => return Err(format!("underlay interface {idx} vanished")),
            }
        };
        // The local subnet: from the node address if it carries a prefix, else the kernel's.
        let mut subnet = node
            .filter(|n| n.prefix_len() < n.max_prefix_len())
            .map(|n| n.trunc());
        let mut local = node.map(|n| n.addr());
        if subnet.is_none() || local.is_none() {
            let addrs =
                link::addresses(&mut self.nl, Some(index), v6).map_err(|e| e.to_string())?;
            let found = addrs.iter().map(|(_, n)| *n).find(|n| match local {
                Some(ip) => n.addr() == ip,
                None => !matches!(n, IpNet::V6(a) if a.addr().segments()[0] & 0xffc0 == 0xfe80),
            });
            if let Some(n) = found {
                local = local.or(Some(n.addr()));
                if subnet.is_none() && n.prefix_len() < n.max_prefix_len() {
                    subnet = Some(n.trunc());
                }
            }
        }
        Ok(Some(Underlay {
            index,
            mtu,
            subnet,
            local,
        }))
    }

    /// Brings devices in line and returns the resulting environment.
    fn reconcile_links(&mut self) -> Env {
        let mut env = Env {
            table: self.cfg.table,
            metric: self.cfg.metric,
            ..Default::default()
        };
        let mut errors = Vec::new();
        let mut under = [None, None];
        for (i, v6) in [false, true].into_iter().enumerate() {
            match self.underlay(v6) {
                Ok(u) => under[i] = u,
                Err(e) => errors.push(e),
            }
        }
        let [u4, u6] = under;
        env.underlay_v4 = u4.map(|u| u.index);
        env.underlay_v6 = u6.map(|u| u.index);
        env.subnet_v4 = u4.and_then(|u| match u.subnet {
            Some(IpNet::V4(n)) => Some(n),
            _ => None,
        });
        env.subnet_v6 = u6.and_then(|u| match u.subnet {
            Some(IpNet::V6(n)) => Some(n),
            _ => None,
        });
        let desired = self.desired.clone();
        // IPIP
        if let Some(ipip) = &desired.ipip {
            let m = mtu::tunnel_mtu(self.cfg.ipip_mtu, u4.map(|u| u.mtu), mtu::IPIP_OVERHEAD);
            match link::ensure_ipip(&mut self.nl, m, ipip.address.map(IpAddr::V4)) {
                Ok(i) => env.tunl0 = Some(i),
                Err(e) => errors.push(e),
            }
        } else if let Err(e) = link::disable_ipip(&mut self.nl) {
            errors.push(e);
        }
        // VXLAN
        let vx = [
            (
                &desired.vxlan_v4,
                u4,
                VXLAN_V4_DEVICE,
                self.cfg.vxlan_mtu,
                mtu::VXLAN_V4_OVERHEAD,
            ),
            (
                &desired.vxlan_v6,
                u6,
                VXLAN_V6_DEVICE,
                self.cfg.vxlan_v6_mtu,
                mtu::VXLAN_V6_OVERHEAD,
            ),
        ];
        let mut idx = [None, None];
        for (i, (want, under, name, mtu_cfg, overhead)) in vx.into_iter().enumerate() {
            match (want, under) {
                (Some(t), Some(u)) => {
                    let w = VxlanWant {
                        name: name.to_string(),
                        params: VxlanParams {
                            vni: t.vni,
                            port: t.port,
                            parent: u.index,
                            local: u.local,
                        },
                        mac: t.mac,
                        mtu: mtu::tunnel_mtu(mtu_cfg, Some(u.mtu), overhead),
                        address: t.address,
                    };
                    match link::ensure_vxlan(&mut self.nl, &w) {
                        Ok(ix) => idx[i] = Some(ix),
                        Err(e) => errors.push(e),
                    }
                }
                (Some(_), None) => errors.push(format!("{name}: underlay interface unknown")),
                (None, _) => {
                    if let Err(e) = link::remove_link_named(&mut self.nl, name) {
                        errors.push(e);
                    }
                }
            }
        }
        env.vxlan_v4 = idx[0];
        env.vxlan_v6 = idx[1];
        for e in &errors {
            tracing::warn!(error = %e, "dataplane device problem");
        }
        self.device_errors = errors;
        env
    }

    fn reconcile_l2(&mut self) -> Result<(), String> {
        let devices: Vec<u32> = [self.env.vxlan_v4, self.env.vxlan_v6]
            .into_iter()
            .flatten()
            .collect();
        let have_n = link::dump_neighbours(&mut self.nl, &devices).map_err(|e| e.to_string())?;
        let have_f = link::dump_fdb(&mut self.nl, &devices).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        // FDB first, so that a neighbour's MAC already leads somewhere.
        for (&(dev, mac), &ip) in &self.plan.fdb {
            if have_f.get(&(dev, mac)) != Some(&ip) {
                if let Err(f) = self.nl.request(
                    RouteNetlinkMessage::NewNeighbour(link::fdb_msg(dev, mac, Some(ip))),
                    NLM_F_CREATE | NLM_F_REPLACE,
                ) {
                    errors.push(format!("fdb {mac} -> {ip}: {}", f.describe()));
                }
            }
        }
        for (&(dev, mac), _) in have_f.iter() {
            if !self.plan.fdb.contains_key(&(dev, mac)) {
                let _ = self.nl.request(
                    RouteNetlinkMessage::DelNeighbour(link::fdb_msg(dev, mac, None)),
                    0,
                );
            }
        }
        for (&(dev, ip), &mac) in &self.plan.neighbours {
            if have_n.get(&(dev, ip)) != Some(&(Some(mac), true)) {
                if let Err(f) = self.nl.request(
                    RouteNetlinkMessage::NewNeighbour(link::neigh_msg(dev, ip, mac)),
                    NLM_F_CREATE | NLM_F_REPLACE,
                ) {
                    errors.push(format!("neighbour {ip} -> {mac}: {}", f.describe()));
                }
            }
        }
        for (&(dev, ip), &(mac, perm)) in have_n.iter() {
            if perm && !self.plan.neighbours.contains_key(&(dev, ip)) {
                let _ = self.nl.request(
                    RouteNetlinkMessage::DelNeighbour(link::neigh_msg(
                        dev,
                        ip,
                        mac.unwrap_or_default(),
                    )),
                    0,
                );
            }
        }
        self.status.neighbours = self.plan.neighbours.len();
        self.status.fdb_entries = self.plan.fdb.len();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Refreshes the cache of our routes from a kernel dump. Fast path: the dump is compared
    /// with the cache in place (lookups only, no allocation); only when they differ is the
    /// cache rebuilt from a second dump.
    fn dump_routes(&mut self) -> std::io::Result<()> {
        let (table, proto) = (self.cfg.table, self.cfg.route_protocol);
        let mut matched = 0usize;
        let mut differs = false;
        {
            let kernel = &self.kernel;
            for v6 in [false, true] {
                self.nl.dump(
                    |buf, seq| route::encode_dump(buf, seq, v6, table, proto),
                    |m| {
                        if differs || m.ty != wire::RTM_NEWROUTE {
                            return;
                        }
                        if let Some(p) = route::parse(m.payload) {
                            if p.protocol == proto && p.key.table == table {
                                let spec = p.spec.unwrap_or(RouteSpec::Unsupported);
                                if kernel.get(&p.key) == Some(&spec) {
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
        if !differs && matched == self.kernel.len() {
            return Ok(());
        }
        let mut kernel = FastMap::with_capacity_and_hasher(
            self.kernel.len().max(self.plan.routes.len()),
            Default::default(),
        );
        for v6 in [false, true] {
            self.nl.dump(
                |buf, seq| route::encode_dump(buf, seq, v6, table, proto),
                |m| {
                    if m.ty != wire::RTM_NEWROUTE {
                        return;
                    }
                    if let Some(p) = route::parse(m.payload) {
                        if p.protocol == proto && p.key.table == table {
                            kernel.insert(p.key, p.spec.unwrap_or(RouteSpec::Unsupported));
                        }
                    }
                },
            )?;
        }
        self.kernel = kernel;
        Ok(())
    }

    fn op_for(&self, k: &RouteKey) -> Option<Op> {
        match (self.plan.routes.get(k), self.kernel.get(k)) {
            (Some(want), Some(have)) if want == have => None,
            (Some(want), Some(_)) => Some(Op::Write(WriteMode::Replace, want.clone())),
            (Some(want), None) => Some(Op::Write(WriteMode::Create, want.clone())),
            (None, Some(_)) => Some(Op::Delete),
            (None, None) => None,
        }
    }

    fn matches(&self, k: &RouteKey) -> bool {
        matches!((self.plan.routes.get(k), self.kernel.get(k)), (Some(a), Some(b)) if a == b)
    }

    /// One pass: devices, L2, routes. Returns the route apply statistics.
    pub(crate) fn step(&mut self, now: Instant) -> ApplyStats {
        let started = Instant::now();
        let periodic = self.periodic_due(now);
        if periodic {
            self.request_full();
        }
        let full = self.need_dump;
        let driven_by_drift = !self.desired_changed && self.synced_once;
        // Retries that are due.
        let due: Vec<RouteKey> = self
            .failures
            .iter()
            .filter(|(_, f)| f.next_retry <= now)
            .map(|(k, _)| *k)
            .collect();
        self.dirty.extend(due);

        if self.need_links {
            self.need_links = false;
            let env = self.reconcile_links();
            if env != self.env {
                self.env = env;
                self.desired_changed = true;
                self.need_l2 = true;
            }
        }
        if self.desired_changed {
            self.desired_changed = false;
            self.plan = Plan::compile(&self.desired, &self.env);
            self.failures
                .retain(|k, _| self.plan.routes.contains_key(k));
            self.check_all = true;
            self.need_l2 = true;
        }
        if self.need_l2 {
            self.need_l2 = false;
            if let Err(e) = self.reconcile_l2() {
                tracing::warn!(error = %e, "neighbour/FDB reconcile");
                if !self.device_errors.contains(&e) {
                    self.device_errors.push(e);
                }
            }
        }
        if self.need_dump {
            match self.dump_routes() {
                Ok(()) => {
                    self.need_dump = false;
                    self.check_all = true;
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

        // Collect the operations.
        let mut ops: Vec<(RouteKey, Op)> = Vec::new();
        let check_all = std::mem::take(&mut self.check_all);
        let dirty = std::mem::take(&mut self.dirty);
        let mut before = 0usize;
        if check_all {
            for (k, want) in &self.plan.routes {
                match self.kernel.get(k) {
                    Some(have) if have == want => {}
                    Some(_) => ops.push((*k, Op::Write(WriteMode::Replace, want.clone()))),
                    None => ops.push((*k, Op::Write(WriteMode::Create, want.clone()))),
                }
            }
            for k in self.kernel.keys() {
                if !self.plan.routes.contains_key(k) {
                    ops.push((*k, Op::Delete));
                }
            }
        } else {
            for k in &dirty {
                before += usize::from(self.matches(k));
                if let Some(op) = self.op_for(k) {
                    ops.push((*k, op));
                }
            }
        }
        let unmatched_before = if check_all {
            ops.iter()
                .filter(|(_, op)| matches!(op, Op::Write(..)))
                .count()
        } else {
            0
        };
        // Respect back-off of failed routes.
        ops.retain(|(k, _)| self.failures.get(k).is_none_or(|f| f.next_retry <= now));

        let mut stats = self.apply(&ops);
        if check_all {
            // Every desired route without an operation already matched; writes that
            // succeeded now match (a route whose write was postponed by back-off does not).
            let ok_writes = stats.added + stats.replaced;
            self.programmed = (self.plan.routes.len() + ok_writes).saturating_sub(unmatched_before);
        } else {
            let after = dirty.iter().filter(|k| self.matches(k)).count();
            self.programmed = (self.programmed + after).saturating_sub(before);
        }
        if driven_by_drift {
            self.status.drift_repairs += (stats.added + stats.replaced + stats.deleted) as u64;
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
        self.refresh_status(now);
        stats
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        (self.cfg.retry_initial * (1u32 << shift)).min(self.cfg.retry_max)
    }

    fn apply(&mut self, ops: &[(RouteKey, Op)]) -> ApplyStats {
        let mut stats = ApplyStats::default();
        if ops.is_empty() {
            return stats;
        }
        let proto = self.cfg.route_protocol;
        let res = self.nl.batch(ops.len(), |i, buf, seq, ack| {
            let (k, op) = &ops[i];
            match op {
                Op::Write(mode, spec) => route::encode_new(buf, seq, ack, *mode, proto, k, spec),
                Op::Delete => route::encode_del(buf, seq, ack, proto, k),
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
            self.need_dump = true;
        }
        let mut failed: HashMap<usize, crate::nl::NlFailure> = res.failed.into_iter().collect();
        let now = Instant::now();
        for (i, (k, op)) in ops.iter().enumerate() {
            match (op, failed.remove(&i)) {
                (Op::Write(mode, spec), None) => {
                    self.kernel.insert(*k, spec.clone());
                    self.failures.remove(k);
                    match mode {
                        WriteMode::Create => stats.added += 1,
                        WriteMode::Replace => stats.replaced += 1,
                    }
                }
                (Op::Delete, None) => {
                    self.kernel.remove(k);
                    self.failures.remove(k);
                    stats.deleted += 1;
                }
                (Op::Delete, Some(f)) if f.errno == libc::ESRCH => {
                    self.kernel.remove(k);
                    self.failures.remove(k);
                }
                (op, Some(f)) => {
                    stats.failed += 1;
                    let mut error = f.describe();
                    if matches!(op, Op::Write(WriteMode::Create, _)) && f.errno == libc::EEXIST {
                        error = format!("{error} (a route not owned by calyx holds this prefix)");
                    }
                    if matches!(op, Op::Write(WriteMode::Replace, _)) && f.errno == libc::ENOENT {
                        // Ours vanished meanwhile: create next time.
                        self.kernel.remove(k);
                    }
                    let attempts = self.failures.get(k).map_or(0, |f| f.attempts) + 1;
                    let next_retry = now + self.backoff(attempts);
                    tracing::debug!(dst = %k.dst, %error, attempts, "route write failed");
                    self.failures.insert(
                        *k,
                        Failure {
                            error,
                            attempts,
                            next_retry,
                        },
                    );
                }
            }
        }
        stats
    }

    fn refresh_status(&mut self, now: Instant) {
        let s = &mut self.status;
        s.routes_desired = self.plan.routes.len();
        s.routes_programmed = self.programmed;
        s.routes_failed = self.failures.len();
        s.routes_pending = (self.plan.routes.len() + self.plan.blocked.len())
            .saturating_sub(self.programmed)
            .saturating_sub(self.failures.len());
        s.failures = self
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
        s.blocked = self
            .plan
            .blocked
            .iter()
            .take(64)
            .map(|(d, w)| (*d, w.clone()))
            .collect();
        s.device_errors = self.device_errors.clone();
        s.underlay = (self.env.underlay_v4, self.env.underlay_v6);
        s.tunnel_devices = [
            (IPIP_DEVICE, self.env.tunl0),
            (VXLAN_V4_DEVICE, self.env.vxlan_v4),
            (VXLAN_V6_DEVICE, self.env.vxlan_v6),
        ]
        .into_iter()
        .filter_map(|(n, i)| i.map(|i| (n.to_string(), i)))
        .collect();
    }
}
