//! The compiled plan kept up to date one destination at a time.
//!
//! [`crate::plan::Plan::compile`] turns a whole desired state into kernel objects; with a
//! million remote routes that costs a pass over all of them for every change. An
//! [`IncrementalPlan`] keeps the desired remote routes by destination next to their compiled
//! kernel routes, so an update recompiles only its own destination and reports exactly the
//! route keys whose compiled form changed. Neighbour and FDB entries of VXLAN hops are
//! reference-counted per route, so that they stay right when routes come and go one by one.
//!
//! Invariant (checked by a property test): after any sequence of updates the plan equals
//! `Plan::compile` of the final full state under the same [`Env`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::fasthash::{FastMap, FastSet};
use crate::intern::{Id, Interner};
use crate::model::{Encap, MacAddr, RemoteHop, RemoteRoute, RouteUpdate};
use crate::plan::{resolve_hop, route_key, Env, Plan};
use crate::route::{RouteKey, RouteSpec};

#[cfg(test)]
mod tests;

/// The hops wanted for one destination, each with the encapsulation of the route it came from
/// (a full resync may name one destination several times, with different pools' modes).
/// Interned: a million routes through a few next hops share a few of these.
type Hops = Box<[(Encap, RemoteHop)]>;

/// Reference counts of the values wanted for one L2 key, in order of first appearance. Almost
/// always one value; two while a node's VTEP changes and its routes move over one by one.
/// The newest value is the one programmed, as the last one wins in `Plan::compile`.
#[derive(Debug, Clone)]
struct Refs<V>(Vec<(V, u32)>);

// Not derived: that would ask `V: Default`, which `IpAddr` is not.
impl<V> Default for Refs<V> {
    fn default() -> Self {
        Refs(Vec::new())
    }
}

impl<V: Copy + PartialEq> Refs<V> {
    fn effective(&self) -> Option<V> {
        self.0.last().map(|e| e.0)
    }

    /// Counts one more user of `v`; true when the programmed value changed.
    fn add(&mut self, v: V) -> bool {
        let before = self.effective();
        match self.0.iter_mut().find(|e| e.0 == v) {
            Some(e) => e.1 += 1,
            None => self.0.push((v, 1)),
        }
        self.effective() != before
    }

    /// Counts one user of `v` less; true when the programmed value changed.
    fn sub(&mut self, v: V) -> bool {
        let before = self.effective();
        if let Some(i) = self.0.iter().position(|e| e.0 == v) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.remove(i);
            }
        }
        self.effective() != before
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Op {
    Add,
    Sub,
    Keep,
}

/// One route key: the desired remote route to its destination (interned hop list), the
/// compiled route wanted there and the route of ours the kernel holds there (interned
/// specs). One map for all three, so that a million routes cost one key and 12 bytes each
/// rather than a key and a value in each of three maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    remote: Option<Id>,
    want: Option<Id>,
    have: Option<Id>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.remote.is_none() && self.want.is_none() && self.have.is_none()
    }
}

/// Both sides' interned specs and the counts kept per change.
#[derive(Debug, Clone, Default)]
struct Specs {
    want: Interner<RouteSpec>,
    have: Interner<RouteSpec>,
    /// Slots with a wanted route.
    wanted: usize,
    /// Slots with a route in the kernel.
    held: usize,
    /// Slots whose kernel route is the wanted one.
    programmed: usize,
}

impl Specs {
    fn programmed(&self, s: Slot) -> bool {
        match (s.want, s.have) {
            (Some(w), Some(h)) => {
                let w = self.want.get(w);
                w.is_some() && w == self.have.get(h)
            }
            _ => false,
        }
    }

    /// Keeps the counts exact across a slot's change from `before` to `after`.
    fn count(&mut self, before: Slot, after: Slot) {
        let (b, a) = (self.programmed(before), self.programmed(after));
        self.programmed = (self.programmed + usize::from(a)).saturating_sub(usize::from(b));
        self.wanted = (self.wanted + usize::from(after.want.is_some()))
            .saturating_sub(usize::from(before.want.is_some()));
        self.held = (self.held + usize::from(after.have.is_some()))
            .saturating_sub(usize::from(before.have.is_some()));
    }
}

/// Everything derived from the desired routes, and the kernel's routes next to them; kept
/// apart from the desired remote routes so that a destination's old and new hops can be read
/// while this part changes.
#[derive(Debug, Clone, Default)]
struct Compiled {
    env: Env,
    local: FastSet<IpNet>,
    /// Wanted and kernel routes by key (4 bytes each side, specs interned in `specs`).
    routes: FastMap<RouteKey, Slot>,
    specs: Specs,
    blocked: FastMap<IpNet, String>,
    neighbours: FastMap<(u32, IpAddr), Refs<MacAddr>>,
    fdb: FastMap<(u32, MacAddr), Refs<IpAddr>>,
    l2_changed: bool,
}

impl Compiled {
    /// Resolves the hops of `dst` into a route spec (or the last reason why none can be
    /// programmed), counting their L2 entries in or out as `l2` says.
    fn resolve(
        &mut self,
        dst: IpNet,
        hops: &[(Encap, RemoteHop)],
        l2: L2Op,
    ) -> (Option<RouteSpec>, Option<String>) {
        let mut next_hops = Vec::with_capacity(hops.len());
        let mut why = None;
        for (encap, hop) in hops {
            match resolve_hop(*encap, dst, hop, &self.env) {
                Ok((nh, entry)) => {
                    if let Some((ifi, vtep, node)) = entry {
                        self.count_l2(ifi, vtep.tunnel_ip, vtep.mac, node, l2);
                    }
                    next_hops.push(nh);
                }
                Err(e) => why = Some(e),
            }
        }
        (RouteSpec::unicast(next_hops), why)
    }

    fn count_l2(&mut self, ifi: u32, tunnel_ip: IpAddr, mac: MacAddr, node: IpAddr, op: L2Op) {
        let changed = match op {
            L2Op::Keep => return,
            L2Op::Add => {
                let n = self
                    .neighbours
                    .entry((ifi, tunnel_ip))
                    .or_default()
                    .add(mac);
                let f = self.fdb.entry((ifi, mac)).or_default().add(node);
                n | f
            }
            L2Op::Sub => {
                let n = sub_entry(&mut self.neighbours, (ifi, tunnel_ip), mac);
                let f = sub_entry(&mut self.fdb, (ifi, mac), node);
                n | f
            }
        };
        self.l2_changed |= changed;
    }

    /// Sets the compiled route of a non-local destination, reporting a change of its spec.
    fn set_route(
        &mut self,
        dst: IpNet,
        spec: Option<RouteSpec>,
        why: Option<String>,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let key = route_key(dst, &self.env);
        match spec {
            Some(spec) => {
                self.blocked.remove(&dst);
                self.set_spec(key, spec, on_change);
            }
            None => {
                self.unset_want(key, on_change);
                match why {
                    Some(why) => {
                        self.blocked.insert(dst, why);
                    }
                    None => {
                        self.blocked.remove(&dst);
                    }
                }
            }
        }
    }

    /// Destination `dst` goes from `old` hops to `new` hops.
    fn update(
        &mut self,
        dst: IpNet,
        old: Option<&[(Encap, RemoteHop)]>,
        new: Option<&[(Encap, RemoteHop)]>,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        if let Some(old) = old {
            self.resolve(dst, old, L2Op::Sub);
        }
        let (spec, why) = match new {
            Some(new) => self.resolve(dst, new, L2Op::Add),
            None => (None, None),
        };
        // A local block wins over a remote route of the same destination (the remote route's
        // L2 entries are still wanted, as in `Plan::compile`).
        if !self.local.contains(&dst) {
            self.set_route(dst, spec, why, on_change);
        }
    }
}

fn sub_entry<K: std::hash::Hash + Eq, V: Copy + PartialEq>(
    map: &mut FastMap<K, Refs<V>>,
    key: K,
    v: V,
) -> bool {
    let Entry::Occupied(mut o) = map.entry(key) else {
        return false;
    };
    let changed = o.get_mut().sub(v);
    if o.get().0.is_empty() {
        o.remove();
    }
    changed
}

impl Compiled {
    /// Sets the compiled spec of `key`, reporting a change.
    fn set_spec(
        &mut self,
        key: RouteKey,
        spec: RouteSpec,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let specs = &mut self.specs;
        let slot = self.routes.entry(key).or_default();
        let before = *slot;
        if before
            .want
            .is_some_and(|w| specs.want.get(w) == Some(&spec))
        {
            return;
        }
        let new = specs.want.intern(spec);
        slot.want = Some(new);
        specs.count(before, *slot);
        on_change(
            key,
            before.want.and_then(|o| specs.want.get(o)),
            specs.want.get(new),
        );
        if let Some(old) = before.want {
            specs.want.release(old);
        }
    }

    /// Removes the compiled route of `key`, reporting it.
    fn unset_want(
        &mut self,
        key: RouteKey,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let Entry::Occupied(mut o) = self.routes.entry(key) else {
            return;
        };
        let before = *o.get();
        let Some(old) = before.want else {
            return;
        };
        o.get_mut().want = None;
        self.specs.count(before, *o.get());
        if o.get().is_empty() {
            o.remove();
        }
        on_change(key, self.specs.want.get(old), None);
        self.specs.want.release(old);
    }

    /// Forgets the slot of `key` when nothing is left in it.
    fn drop_if_empty(&mut self, key: RouteKey) {
        if self.routes.get(&key).is_some_and(Slot::is_empty) {
            self.routes.remove(&key);
        }
    }

    /// Records what the kernel holds under `key` (`None`: nothing of ours).
    fn set_have(&mut self, key: RouteKey, have: Option<&RouteSpec>) {
        let specs = &mut self.specs;
        match have {
            Some(spec) => {
                let slot = self.routes.entry(key).or_default();
                let before = *slot;
                if before.have.is_some_and(|h| specs.have.get(h) == Some(spec)) {
                    return;
                }
                slot.have = Some(specs.have.intern_by(spec, RouteSpec::clone));
                specs.count(before, *slot);
                if let Some(old) = before.have {
                    specs.have.release(old);
                }
            }
            None => {
                let Entry::Occupied(mut o) = self.routes.entry(key) else {
                    return;
                };
                let before = *o.get();
                let Some(old) = before.have else {
                    return;
                };
                o.get_mut().have = None;
                specs.count(before, *o.get());
                if o.get().is_empty() {
                    o.remove();
                }
                specs.have.release(old);
            }
        }
    }
}

fn hops_of(r: RemoteRoute, into: &mut Vec<(Encap, RemoteHop)>) {
    let encap = r.encap;
    into.extend(r.hops.into_iter().map(|h| (encap, h)));
}

/// Desired remote routes by destination plus their compiled kernel routes, updated per
/// destination. Every method that changes routes calls `on_change(key, old, new)` once for
/// each route key whose compiled spec changed (`None` = absent), and for no other key.
#[derive(Debug, Clone, Default)]
pub struct IncrementalPlan {
    /// The hop lists of the desired remote destinations (in their slots of `out.routes`).
    hops: Interner<Hops>,
    /// Desired remote destinations.
    remotes: usize,
    /// Reused to build an update's hop list without an allocation per route.
    scratch: Vec<(Encap, RemoteHop)>,
    out: Compiled,
}

impl IncrementalPlan {
    /// An empty plan under `env`.
    pub fn new(env: Env) -> IncrementalPlan {
        IncrementalPlan {
            hops: Interner::default(),
            remotes: 0,
            scratch: Vec::new(),
            out: Compiled {
                env,
                ..Default::default()
            },
        }
    }

    /// The environment the routes are compiled under.
    pub fn env(&self) -> &Env {
        &self.out.env
    }

    /// The compiled route of `key`.
    pub fn route(&self, key: &RouteKey) -> Option<&RouteSpec> {
        let id = self.out.routes.get(key)?.want?;
        self.out.specs.want.get(id)
    }

    /// Compiled routes by key.
    pub fn routes(&self) -> impl Iterator<Item = (&RouteKey, &RouteSpec)> + '_ {
        let specs = &self.out.specs.want;
        self.out
            .routes
            .iter()
            .filter_map(move |(k, s)| s.want.and_then(|id| specs.get(id)).map(|s| (k, s)))
    }

    /// Number of compiled routes.
    pub fn routes_len(&self) -> usize {
        self.out.specs.wanted
    }

    /// Whether `key` has a compiled route.
    pub fn has_route(&self, key: &RouteKey) -> bool {
        self.out.routes.get(key).is_some_and(|s| s.want.is_some())
    }

    /// The route of ours the kernel holds under `key`, as last recorded with
    /// [`Self::set_kernel`].
    pub fn kernel(&self, key: &RouteKey) -> Option<&RouteSpec> {
        let id = self.out.routes.get(key)?.have?;
        self.out.specs.have.get(id)
    }

    /// The routes of ours the kernel holds, by key.
    pub fn kernel_routes(&self) -> impl Iterator<Item = (&RouteKey, &RouteSpec)> + '_ {
        let specs = &self.out.specs.have;
        self.out
            .routes
            .iter()
            .filter_map(move |(k, s)| s.have.and_then(|id| specs.get(id)).map(|s| (k, s)))
    }

    /// Number of routes of ours the kernel holds.
    pub fn kernel_len(&self) -> usize {
        self.out.specs.held
    }

    /// Records that the kernel holds `have` under `key` (`None`: no route of ours).
    pub fn set_kernel(&mut self, key: RouteKey, have: Option<&RouteSpec>) {
        self.out.set_have(key, have);
    }

    /// Records that the kernel holds the wanted route under `key` (a write of it succeeded);
    /// nothing when none is wanted.
    pub fn set_kernel_wanted(&mut self, key: RouteKey) {
        let Some(want) = self.route(&key).cloned() else {
            return;
        };
        self.out.set_have(key, Some(&want));
    }

    /// Forgets every kernel route (before reading them all again).
    pub fn clear_kernel(&mut self) {
        let specs = &mut self.out.specs;
        self.out.routes.retain(|_, slot| {
            let before = *slot;
            if let Some(h) = slot.have.take() {
                specs.count(before, *slot);
                specs.have.release(h);
            }
            !slot.is_empty()
        });
    }

    /// Wanted routes the kernel holds exactly as wanted; kept exact per change.
    pub fn programmed(&self) -> usize {
        self.out.specs.programmed
    }

    /// Distinct compiled specs and distinct hop lists held (diagnostics: a few per next hop).
    pub fn interned(&self) -> (usize, usize) {
        (self.out.specs.want.len(), self.hops.len())
    }

    /// All compiled routes as a map (tests, diagnostics; walks everything).
    pub fn routes_map(&self) -> FastMap<RouteKey, RouteSpec> {
        self.routes().map(|(k, s)| (*k, s.clone())).collect()
    }

    /// Desired destinations that cannot be programmed now, with the reason.
    pub fn blocked(&self) -> &FastMap<IpNet, String> {
        &self.out.blocked
    }

    /// Number of desired remote destinations.
    pub fn remote_len(&self) -> usize {
        self.remotes
    }

    /// Permanent neighbour entries wanted: `(ifindex, tunnel IP) -> VTEP MAC`.
    pub fn neighbours(&self) -> HashMap<(u32, IpAddr), MacAddr> {
        effective(&self.out.neighbours)
    }

    /// Permanent FDB entries wanted: `(ifindex, VTEP MAC) -> remote node IP`.
    pub fn fdb(&self) -> HashMap<(u32, MacAddr), IpAddr> {
        effective(&self.out.fdb)
    }

    /// Whether the wanted neighbour/FDB set changed since the last [`Self::take_l2_changed`].
    pub fn l2_changed(&self) -> bool {
        self.out.l2_changed
    }

    /// Whether the wanted neighbour/FDB set changed since the last call (then it is reset).
    pub fn take_l2_changed(&mut self) -> bool {
        std::mem::take(&mut self.out.l2_changed)
    }

    /// Recompiles everything under a new environment (devices, underlay, subnets: rare).
    /// Returns false and does nothing when `env` is the current one. No `on_change` is
    /// reported: after `true` the caller must treat every key as changed.
    pub fn set_env(&mut self, env: Env) -> bool {
        if env == self.out.env {
            return false;
        }
        // Everything compiled goes; the kernel side of the slots stays. The remote routes
        // are taken out and put back (under new keys, should the table or metric change).
        let specs = &mut self.out.specs;
        let mut remote: Vec<(IpNet, Id)> = Vec::with_capacity(self.remotes);
        self.out.routes.retain(|k, slot| {
            let before = *slot;
            if let Some(w) = slot.want.take() {
                specs.count(before, *slot);
                specs.want.release(w);
            }
            if let Some(r) = slot.remote.take() {
                remote.push((k.dst, r));
            }
            !slot.is_empty()
        });
        self.out.env = env;
        self.out.blocked = FastMap::default();
        self.out.neighbours = FastMap::default();
        self.out.fdb = FastMap::default();
        self.out.routes.reserve(remote.len());
        let mut silent = |_: RouteKey, _: Option<&RouteSpec>, _: Option<&RouteSpec>| {};
        for (dst, id) in remote {
            let key = route_key(dst, &self.out.env);
            self.out.routes.entry(key).or_default().remote = Some(id);
            let hops = self.hops.get(id).map(|h| &h[..]);
            self.out.update(dst, None, hops, &mut silent);
        }
        let blocks: Vec<IpNet> = self.out.local.iter().copied().collect();
        for dst in blocks {
            self.out.blocked.remove(&dst);
            let key = route_key(dst, &self.out.env);
            self.out.set_spec(key, RouteSpec::Blackhole, &mut silent);
        }
        self.out.l2_changed = true;
        true
    }

    /// Applies one update.
    pub fn apply(
        &mut self,
        update: RouteUpdate,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        match update {
            RouteUpdate::Upsert(r) => self.upsert(r, on_change),
            RouteUpdate::Remove(dst) => self.remove(dst, on_change),
            RouteUpdate::ReplaceAll(v) => self.replace_all(v, on_change),
        }
    }

    /// Adds or replaces the route to `r.dst`.
    pub fn upsert(
        &mut self,
        r: RemoteRoute,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let dst = r.dst.trunc();
        let mut new = std::mem::take(&mut self.scratch);
        new.clear();
        hops_of(r, &mut new);
        let hops = &mut self.hops;
        let key = route_key(dst, &self.out.env);
        let old = self.out.routes.get(&key).and_then(|s| s.remote);
        if old.is_some_and(|o| hops.get(o).is_some_and(|h| h[..] == new[..])) {
            self.scratch = new;
            return;
        }
        let id = hops.intern_by(&new[..], |h| Box::from(h));
        self.out.routes.entry(key).or_default().remote = Some(id);
        self.remotes += usize::from(old.is_none());
        let old_h = old.and_then(|o| hops.get(o)).map(|h| &h[..]);
        self.out
            .update(dst, old_h, hops.get(id).map(|h| &h[..]), on_change);
        if let Some(old) = old {
            hops.release(old);
        }
        self.scratch = new;
    }

    /// Removes the route to `dst` (no-op if absent).
    pub fn remove(
        &mut self,
        dst: IpNet,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let dst = dst.trunc();
        let key = route_key(dst, &self.out.env);
        let Some(old) = self.out.routes.get_mut(&key).and_then(|s| s.remote.take()) else {
            return;
        };
        self.remotes -= 1;
        let old_h = self.hops.get(old).map(|h| &h[..]);
        self.out.update(dst, old_h, None, on_change);
        self.hops.release(old);
        self.out.drop_if_empty(key);
    }

    /// Replaces all remote routes; only destinations whose hops differ are recompiled.
    pub fn replace_all(
        &mut self,
        routes: Vec<RemoteRoute>,
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let mut lists: FastMap<IpNet, Vec<(Encap, RemoteHop)>> =
            FastMap::with_capacity_and_hasher(routes.len(), Default::default());
        for r in routes {
            let dst = r.dst.trunc();
            hops_of(r, lists.entry(dst).or_default());
        }
        let hops = &mut self.hops;
        let mut new: FastMap<IpNet, Id> =
            FastMap::with_capacity_and_hasher(lists.len(), Default::default());
        for (dst, list) in lists {
            new.insert(dst, hops.intern_by(&list[..], |h| Box::from(h)));
        }
        // Every slot's remote route is set to the new one first, then each destination
        // whose hop list changed is recompiled.
        let mut old: FastMap<IpNet, Id> =
            FastMap::with_capacity_and_hasher(self.remotes, Default::default());
        for (k, slot) in self.out.routes.iter_mut() {
            if let Some(r) = slot.remote.take() {
                old.insert(k.dst, r);
            }
        }
        self.remotes = new.len();
        for (dst, id) in &new {
            let key = route_key(*dst, &self.out.env);
            self.out.routes.entry(key).or_default().remote = Some(*id);
        }
        for (dst, old_id) in &old {
            let old_h = hops.get(*old_id).map(|h| &h[..]);
            match new.get(dst) {
                None => {
                    self.out.update(*dst, old_h, None, on_change);
                    self.out.drop_if_empty(route_key(*dst, &self.out.env));
                }
                Some(n) if n != old_id => {
                    let new_h = hops.get(*n).map(|h| &h[..]);
                    self.out.update(*dst, old_h, new_h, on_change)
                }
                Some(_) => {}
            }
        }
        for (dst, n) in &new {
            if !old.contains_key(dst) {
                let new_h = hops.get(*n).map(|h| &h[..]);
                self.out.update(*dst, None, new_h, on_change);
            }
        }
        for id in old.into_values() {
            hops.release(id);
        }
    }

    /// Sets the local blocks (blackholes); a block wins over a remote route of the same
    /// destination, which comes back when the block goes.
    pub fn set_local_blocks(
        &mut self,
        blocks: &[IpNet],
        on_change: &mut impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>),
    ) {
        let new: FastSet<IpNet> = blocks.iter().map(|b| b.trunc()).collect();
        let gone: Vec<IpNet> = self.out.local.difference(&new).copied().collect();
        for dst in gone {
            self.out.local.remove(&dst);
            let key = route_key(dst, &self.out.env);
            let remote = self.out.routes.get(&key).and_then(|s| s.remote);
            let hops = remote.and_then(|id| self.hops.get(id));
            let (spec, why) = match hops {
                Some(hops) => self.out.resolve(dst, hops, L2Op::Keep),
                None => (None, None),
            };
            self.out.set_route(dst, spec, why, on_change);
        }
        for dst in new {
            if self.out.local.insert(dst) {
                self.out.blocked.remove(&dst);
                let key = route_key(dst, &self.out.env);
                self.out.set_spec(key, RouteSpec::Blackhole, on_change);
            }
        }
    }

    /// The whole plan as [`Plan::compile`] returns it (tests, diagnostics; walks everything).
    pub fn to_plan(&self) -> Plan {
        Plan {
            routes: self.routes_map(),
            blocked: self
                .out
                .blocked
                .iter()
                .map(|(d, w)| (*d, w.clone()))
                .collect(),
            neighbours: self.neighbours(),
            fdb: self.fdb(),
        }
    }
}

fn effective<K: Copy + Eq + std::hash::Hash, V: Copy + PartialEq>(
    m: &FastMap<K, Refs<V>>,
) -> HashMap<K, V> {
    m.iter()
        .filter_map(|(k, r)| r.effective().map(|v| (*k, v)))
        .collect()
}
