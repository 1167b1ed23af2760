//! `calyx ipam check [--fix]` and garbage collection of leaked addresses.
//!
//! [`Ipam::check`] reads every block, affinity, handle and node and reports what does not add
//! up; with `fix` it repairs what cannot hurt a running workload, each repair one transaction
//! guarded by the revisions it was decided on:
//!
//! | finding | repair |
//! |---|---|
//! | allocation whose handle record is missing | recreate the record from the blocks (never frees) |
//! | handle record that does not match the blocks (points at nothing) | rewrite or delete the record |
//! | affinity key without its block, or for a block affine elsewhere | delete the key |
//! | block affine to a node without an affinity key | create the key |
//! | empty block affine to a node that does not exist | delete block and affinity |
//! | non-empty block of a node that does not exist | none (run `release --node`) |
//! | borrowed address | none: informational |
//!
//! Leaked addresses (allocations whose handle is not live) are freed by [`Ipam::gc`], only when
//! seen leaked in two runs at least a grace period apart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calyx_datastore::resources::{Kind, WorkloadEndpoint, WORKLOAD_ENDPOINT_PREFIX};
use calyx_datastore::store::{Operation, Precondition, Revision, Store, Transaction};
use ipnet::IpNet;
use serde::Serialize;

use crate::block;
use crate::error::Result;
use crate::ipam::{encode, lock};
use crate::leak::{self, WorkloadClaims};
use crate::model::{
    affinity_from_key, affinity_key, block_key, handle_id_from_key, handle_key, AffinityState,
    AllocationBlock, BlockAffinity, IPAMHandle, AFFINITY_KEY_PREFIX, BLOCK_KEY_PREFIX,
    HANDLE_KEY_PREFIX,
};
use crate::release::Released;
use crate::types::{attr_keys, is_tunnel_type};
use crate::Ipam;

/// What to check and whether to repair.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Repair what is safe to repair.
    pub fix: bool,
    /// When given, allocations whose handle is not in this set are reported as not live
    /// (tunnel addresses excepted: they live as long as their node).
    pub live_handles: Option<HashSet<String>>,
    /// Also read the WorkloadEndpoints and report allocations none of them accounts for
    /// ([`CheckReport::leaked`], by the rule of [`crate::leak`]), as calicoctl's `ipam check`.
    pub workload_leaks: bool,
}

/// One allocation, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocationRef {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// Its handle.
    pub handle: Option<String>,
    /// The node attribute.
    pub node: Option<String>,
    /// The pod, `namespace/name`, when known.
    pub pod: Option<String>,
}

/// A handle record that does not match the blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandleMismatch {
    /// The handle.
    pub handle: String,
    /// What the record says: block -> count.
    pub recorded: BTreeMap<String, u32>,
    /// What the blocks hold: block -> count.
    pub actual: BTreeMap<String, u32>,
}

/// A block affine to a node that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanBlock {
    /// The block.
    pub block: IpNet,
    /// The missing node.
    pub node: String,
    /// Addresses still in use in it.
    pub in_use: usize,
}

/// A block and its affinity keys disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffinityMismatch {
    /// The block.
    pub block: IpNet,
    /// `host:<node>` from the block, if any (and if the block exists).
    pub block_affinity: Option<String>,
    /// The node of the affinity key, if any.
    pub affinity_key_node: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// An address used on a node other than the block's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Borrowed {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// The node the block is affine to.
    pub block_node: String,
    /// The node using the address.
    pub used_by: String,
    /// The handle.
    pub handle: Option<String>,
}

/// A block whose internal bookkeeping is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenBlock {
    /// The block.
    pub block: IpNet,
    /// The problems.
    pub problems: Vec<String>,
}

/// The result of [`Ipam::check`]; `-o report.json` is this as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Blocks read.
    pub blocks: usize,
    /// Allocations found in them.
    pub allocations: usize,
    /// Handle records read.
    pub handles: usize,
    /// Affinity keys read.
    pub affinities: usize,
    /// Allocations whose handle record is missing or does not count them.
    pub allocations_without_handle: Vec<AllocationRef>,
    /// Allocations whose handle is not live (only with [`CheckOptions::live_handles`]).
    pub not_live: Vec<AllocationRef>,
    /// With [`CheckOptions::workload_leaks`]: WorkloadEndpoints read.
    pub workload_endpoints: Option<usize>,
    /// With [`CheckOptions::workload_leaks`]: allocations no WorkloadEndpoint accounts for
    /// (tunnel, WireGuard and reserved addresses excepted). Not counted by
    /// [`CheckReport::is_clean`]: an address mid-ADD is one until its endpoint is written.
    pub leaked: Vec<AllocationRef>,
    /// Handle records that do not match the blocks (including ones that point at nothing).
    pub handle_mismatches: Vec<HandleMismatch>,
    /// Blocks affine to nodes that do not exist.
    pub blocks_of_missing_nodes: Vec<OrphanBlock>,
    /// Blocks and affinity keys that disagree.
    pub affinity_mismatches: Vec<AffinityMismatch>,
    /// Blocks whose bookkeeping is inconsistent, or that overlap another block.
    pub broken_blocks: Vec<BrokenBlock>,
    /// Borrowed addresses (informational).
    pub borrowed: Vec<Borrowed>,
    /// Repairs made (with `fix`).
    pub fixed: Vec<String>,
    /// Repairs that failed (someone changed the data meanwhile; run again).
    pub fix_failures: Vec<String>,
}

impl CheckReport {
    /// True when nothing needs attention (borrowed addresses are fine).
    pub fn is_clean(&self) -> bool {
        self.allocations_without_handle.is_empty()
            && self.not_live.is_empty()
            && self.handle_mismatches.is_empty()
            && self.blocks_of_missing_nodes.is_empty()
            && self.affinity_mismatches.is_empty()
            && self.broken_blocks.is_empty()
    }

    /// A short human summary, one finding per line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "Checked {} blocks, {} allocations, {} handles, {} affinities.\n",
            self.blocks, self.allocations, self.handles, self.affinities
        );
        let mut line = |n: usize, what: &str| {
            s.push_str(&format!("{n} {what}\n"));
        };
        line(
            self.allocations_without_handle.len(),
            "allocations without a matching handle",
        );
        if !self.not_live.is_empty() {
            line(
                self.not_live.len(),
                "allocations whose handle is not live (leaked)",
            );
        }
        line(
            self.handle_mismatches.len(),
            "handles that do not match the blocks",
        );
        line(
            self.blocks_of_missing_nodes.len(),
            "blocks affine to nodes that do not exist",
        );
        line(self.affinity_mismatches.len(), "block/affinity mismatches");
        line(self.broken_blocks.len(), "inconsistent blocks");
        line(self.borrowed.len(), "borrowed addresses");
        if !self.fixed.is_empty() || !self.fix_failures.is_empty() {
            line(self.fixed.len(), "repairs made");
            line(self.fix_failures.len(), "repairs failed (run again)");
        }
        if let Some(weps) = self.workload_endpoints {
            s.push_str(&format!(
                "Found {weps} workload endpoints.\nFound {} leaked IPs\n",
                self.leaked.len()
            ));
        }
        s
    }
}

/// What [`Ipam::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Handles seen leaked in this run.
    pub leaked: Vec<String>,
    /// Of those, how many are waiting for their grace period or second sighting.
    pub waiting: usize,
    /// Addresses released.
    pub released: Vec<Released>,
}

/// Everything IPAM keeps, read once.
struct Snapshot {
    blocks: BTreeMap<IpNet, (AllocationBlock, Revision)>,
    affinities: Vec<(String, IpNet, String, Revision, BlockAffinity)>,
    handles: BTreeMap<String, (IPAMHandle, Revision)>,
    nodes: BTreeSet<String>,
}

impl<S: Store> Ipam<S> {
    async fn snapshot(&self) -> Result<Snapshot> {
        let mut blocks = BTreeMap::new();
        for kv in self.store().list(BLOCK_KEY_PREFIX).await?.kvs {
            match serde_json::from_slice::<AllocationBlock>(&kv.value) {
                Ok(b) => {
                    blocks.insert(b.cidr, (b, kv.mod_revision));
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "undecodable block"),
            }
        }
        let mut affinities = Vec::new();
        for kv in self.store().list(AFFINITY_KEY_PREFIX).await?.kvs {
            let Some((node, cidr)) = affinity_from_key(&kv.key) else {
                continue;
            };
            let aff = serde_json::from_slice::<BlockAffinity>(&kv.value).unwrap_or_default();
            affinities.push((node.to_string(), cidr, kv.key.clone(), kv.mod_revision, aff));
        }
        let mut handles = BTreeMap::new();
        for kv in self.store().list(HANDLE_KEY_PREFIX).await?.kvs {
            let Some(id) = handle_id_from_key(&kv.key) else {
                continue;
            };
            let h = serde_json::from_slice::<IPAMHandle>(&kv.value).unwrap_or_default();
            handles.insert(id.to_string(), (h, kv.mod_revision));
        }
        let nodes = self
            .store()
            .list(Kind::Node.key_prefix())
            .await?
            .kvs
            .iter()
            .filter_map(|kv| Kind::from_key(&kv.key).map(|(_, n)| n.to_string()))
            .collect();
        Ok(Snapshot {
            blocks,
            affinities,
            handles,
            nodes,
        })
    }

    /// Every WorkloadEndpoint in the store; undecodable ones are skipped with a warning.
    pub async fn workload_endpoints(&self) -> Result<Vec<WorkloadEndpoint>> {
        let mut out = Vec::new();
        for kv in self.store().list(WORKLOAD_ENDPOINT_PREFIX).await?.kvs {
            if WorkloadEndpoint::split_key(&kv.key).is_none() {
                continue;
            }
            match WorkloadEndpoint::from_json(&kv.value) {
                Ok(w) => out.push(w),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "undecodable endpoint"),
            }
        }
        Ok(out)
    }

    /// Checks the IPAM data for inconsistencies and leaks; repairs the safe ones with `fix`.
    pub async fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let snap = self.snapshot().await?;
        let mut r = CheckReport {
            blocks: snap.blocks.len(),
            handles: snap.handles.len(),
            affinities: snap.affinities.len(),
            ..Default::default()
        };
        // Per handle, per block, the count the blocks hold; and each allocation.
        let mut actual: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        // Each allocation, whether it is a tunnel address, whether it is never garbage.
        let mut allocs: Vec<(AllocationRef, bool, bool)> = Vec::new();
        let mut prev: Option<IpNet> = None;
        for (cidr, (b, _)) in &snap.blocks {
            let problems = block::consistency_problems(b);
            if !problems.is_empty() {
                r.broken_blocks.push(BrokenBlock {
                    block: *cidr,
                    problems,
                });
            }
            if let Some(p) = prev {
                if p.contains(&cidr.network()) {
                    r.broken_blocks.push(BrokenBlock {
                        block: *cidr,
                        problems: vec![format!("overlaps block {p}")],
                    });
                }
            }
            prev = Some(*cidr);
            for (o, attr) in block::allocated(b) {
                let Some(ip) = b.ordinal_to_ip(o) else {
                    continue;
                };
                r.allocations += 1;
                if let Some(h) = &attr.handle_id {
                    *actual
                        .entry(h.clone())
                        .or_default()
                        .entry(cidr.to_string())
                        .or_insert(0) += 1;
                }
                let node = attr.secondary.get(attr_keys::NODE).cloned();
                let tunnel = attr
                    .secondary
                    .get(attr_keys::TYPE)
                    .is_some_and(|t| is_tunnel_type(t));
                let pod = attr.secondary.get(attr_keys::POD).map(|p| {
                    match attr.secondary.get(attr_keys::NAMESPACE) {
                        Some(ns) => format!("{ns}/{p}"),
                        None => p.clone(),
                    }
                });
                if let (Some(bn), Some(n)) = (b.affine_host(), &node) {
                    if bn != n {
                        r.borrowed.push(Borrowed {
                            ip,
                            block: *cidr,
                            block_node: bn.to_string(),
                            used_by: n.clone(),
                            handle: attr.handle_id.clone(),
                        });
                    }
                }
                allocs.push((
                    AllocationRef {
                        ip,
                        block: *cidr,
                        handle: attr.handle_id.clone(),
                        node,
                        pod,
                    },
                    tunnel,
                    leak::gc_exempt(&attr),
                ));
            }
        }
        // Handles.
        let mut fix_handles: BTreeSet<String> = BTreeSet::new();
        let claims = if opts.workload_leaks {
            let weps = self.workload_endpoints().await?;
            r.workload_endpoints = Some(weps.len());
            Some(WorkloadClaims::new(&weps))
        } else {
            None
        };
        for (a, tunnel, exempt) in &allocs {
            if let (Some(claims), false, Some(h)) = (&claims, exempt, &a.handle) {
                if !claims.claims(h, a.ip) {
                    r.leaked.push(a.clone());
                }
            }
            let counted = a.handle.as_ref().is_some_and(|h| {
                snap.handles
                    .get(h)
                    .is_some_and(|(rec, _)| rec.block.contains_key(&a.block.to_string()))
            });
            if !counted {
                r.allocations_without_handle.push(a.clone());
                if let Some(h) = &a.handle {
                    fix_handles.insert(h.clone());
                }
            }
            if let (Some(live), false) = (&opts.live_handles, tunnel) {
                if !a.handle.as_ref().is_some_and(|h| live.contains(h)) {
                    r.not_live.push(a.clone());
                }
            }
        }
        for (id, (rec, _)) in &snap.handles {
            let act = actual.get(id).cloned().unwrap_or_default();
            if rec.block != act {
                r.handle_mismatches.push(HandleMismatch {
                    handle: id.clone(),
                    recorded: rec.block.clone(),
                    actual: act,
                });
                fix_handles.insert(id.clone());
            }
        }
        // Affinities.
        let mut keyed: BTreeSet<(String, IpNet)> = BTreeSet::new();
        let mut fix_affinities: Vec<(String, IpNet, String, Revision, bool)> = Vec::new();
        for (node, cidr, key, rev, aff) in &snap.affinities {
            keyed.insert((node.clone(), *cidr));
            match snap.blocks.get(cidr) {
                None => {
                    let what = if aff.state == AffinityState::Pending {
                        "pending affinity without a block"
                    } else {
                        "affinity without a block"
                    };
                    r.affinity_mismatches.push(AffinityMismatch {
                        block: *cidr,
                        block_affinity: None,
                        affinity_key_node: Some(node.clone()),
                        problem: what.to_string(),
                    });
                    fix_affinities.push((node.clone(), *cidr, key.clone(), *rev, false));
                }
                Some((b, _)) if b.affine_host() != Some(node.as_str()) => {
                    r.affinity_mismatches.push(AffinityMismatch {
                        block: *cidr,
                        block_affinity: b.affinity.clone(),
                        affinity_key_node: Some(node.clone()),
                        problem: "the block is not affine to the affinity key's node".to_string(),
                    });
                    fix_affinities.push((node.clone(), *cidr, key.clone(), *rev, true));
                }
                Some(_) => {}
            }
        }
        let mut create_affinities: Vec<(String, IpNet)> = Vec::new();
        let mut delete_orphans: Vec<(String, IpNet)> = Vec::new();
        for (cidr, (b, _)) in &snap.blocks {
            let Some(node) = b.affine_host() else {
                continue;
            };
            if !snap.nodes.contains(node) {
                let in_use = b.num_allocated();
                r.blocks_of_missing_nodes.push(OrphanBlock {
                    block: *cidr,
                    node: node.to_string(),
                    in_use,
                });
                if in_use == 0 {
                    delete_orphans.push((node.to_string(), *cidr));
                }
                continue;
            }
            if !keyed.contains(&(node.to_string(), *cidr)) {
                r.affinity_mismatches.push(AffinityMismatch {
                    block: *cidr,
                    block_affinity: b.affinity.clone(),
                    affinity_key_node: None,
                    problem: "the block is affine to a node that has no affinity key for it"
                        .to_string(),
                });
                create_affinities.push((node.to_string(), *cidr));
            }
        }
        if opts.fix {
            self.repair(
                &snap,
                &actual,
                &fix_handles,
                &fix_affinities,
                &create_affinities,
                &delete_orphans,
                &mut r,
            )
            .await;
        }
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    async fn repair(
        &self,
        snap: &Snapshot,
        actual: &BTreeMap<String, BTreeMap<String, u32>>,
        fix_handles: &BTreeSet<String>,
        fix_affinities: &[(String, IpNet, String, Revision, bool)],
        create_affinities: &[(String, IpNet)],
        delete_orphans: &[(String, IpNet)],
        r: &mut CheckReport,
    ) {
        let block_guard = |cidr: &IpNet| match snap.blocks.get(cidr) {
            Some((_, rev)) => Precondition::ModRevision(block_key(cidr), *rev),
            None => Precondition::Absent(block_key(cidr)),
        };
        let mut outcomes: Vec<(String, Transaction)> = Vec::new();
        for h in fix_handles {
            let act = actual.get(h).cloned().unwrap_or_default();
            let key = handle_key(h);
            let mut txn = Transaction::new();
            let mut involved: BTreeSet<String> = act.keys().cloned().collect();
            match snap.handles.get(h) {
                Some((rec, rev)) => {
                    txn = txn.when(Precondition::ModRevision(key.clone(), *rev));
                    involved.extend(rec.block.keys().cloned());
                }
                None => txn = txn.when(Precondition::Absent(key.clone())),
            }
            for c in &involved {
                if let Ok(cidr) = c.parse::<IpNet>() {
                    txn = txn.when(block_guard(&cidr));
                }
            }
            let what;
            if act.is_empty() {
                txn = txn.then(Operation::delete(&key));
                what = format!("deleted handle {h} (it pointed at nothing)");
            } else {
                let rec = IPAMHandle {
                    handle_id: h.clone(),
                    block: act,
                    deleted: false,
                };
                txn = txn.then(Operation::put(&key, encode(&rec)));
                what = format!("rewrote handle {h} from the blocks");
            }
            outcomes.push((what, txn));
        }
        for (node, cidr, key, rev, block_exists) in fix_affinities {
            let mut txn = Transaction::new().when(Precondition::ModRevision(key.clone(), *rev));
            txn = if *block_exists {
                txn.when(block_guard(cidr))
            } else {
                txn.when(Precondition::Absent(block_key(cidr)))
            };
            txn = txn.then(Operation::delete(key));
            outcomes.push((format!("deleted stale affinity of {node} for {cidr}"), txn));
        }
        for (node, cidr) in create_affinities {
            let aff = BlockAffinity {
                state: AffinityState::Confirmed,
                deleted: false,
            };
            let key = affinity_key(node, cidr);
            let txn = Transaction::new()
                .when(block_guard(cidr))
                .when(Precondition::Absent(key.clone()))
                .then(Operation::put(&key, encode(&aff)));
            outcomes.push((format!("created affinity of {node} for {cidr}"), txn));
        }
        for (node, cidr) in delete_orphans {
            let txn = Transaction::new()
                .when(block_guard(cidr))
                .when(Precondition::Absent(Kind::Node.key(node)))
                .then(Operation::delete(block_key(cidr)))
                .then(Operation::delete(affinity_key(node, cidr)));
            outcomes.push((
                format!("deleted empty block {cidr} of missing node {node}"),
                txn,
            ));
        }
        for (what, txn) in outcomes {
            match self.store().transaction(txn).await {
                Ok(_) => {
                    tracing::info!("ipam check: {what}");
                    r.fixed.push(what);
                }
                Err(e) => r.fix_failures.push(format!("{what}: {e}")),
            }
        }
    }

    /// Releases allocations whose handle is not in `live` — but only handles that were already
    /// seen leaked by an earlier call at least `grace` ago, so that an address being assigned
    /// to a pod that the caller does not know yet is never freed. Tunnel addresses are left to
    /// [`Ipam::release_node`]. Call it periodically with the orchestrator's live handles.
    pub async fn gc(&self, live: &HashSet<String>, grace: Duration) -> Result<GcReport> {
        let snap = self.snapshot().await?;
        let mut where_: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
        for (cidr, (b, _)) in &snap.blocks {
            for (_, attr) in block::allocated(b) {
                let tunnel = attr
                    .secondary
                    .get(attr_keys::TYPE)
                    .is_some_and(|t| is_tunnel_type(t));
                if let (Some(h), false) = (attr.handle_id, tunnel) {
                    where_.entry(h).or_default().insert(*cidr);
                }
            }
        }
        for (h, (rec, _)) in &snap.handles {
            if !where_.contains_key(h) && !h.contains("tunnel-addr-") {
                // A record that points at nothing is also leaked.
                let cidrs = rec.block.keys().filter_map(|c| c.parse().ok()).collect();
                where_.insert(h.clone(), cidrs);
            }
        }
        let leaked: Vec<String> = where_
            .keys()
            .filter(|h| !live.contains(*h))
            .cloned()
            .collect();
        let now = Instant::now();
        let due: Vec<String> = {
            let mut seen = lock(&self.inner.gc_seen);
            let leaked_set: HashSet<&String> = leaked.iter().collect();
            seen.retain(|h, _| leaked_set.contains(h));
            let mut due = Vec::new();
            for h in &leaked {
                match seen.get(h) {
                    Some(first) if now.duration_since(*first) >= grace => due.push(h.clone()),
                    Some(_) => {}
                    None => {
                        seen.insert(h.clone(), now);
                    }
                }
            }
            due
        };
        let mut report = GcReport {
            waiting: leaked.len() - due.len(),
            leaked,
            released: Vec::new(),
        };
        for h in due {
            let cidrs: Vec<IpNet> = where_
                .get(&h)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            let mut freed = self.release_handle_in_blocks(&h, &cidrs).await?;
            freed.extend(self.release_handle(&h).await?);
            tracing::info!(handle = %h, addresses = freed.len(), "gc released leaked handle");
            lock(&self.inner.gc_seen).remove(&h);
            report.released.extend(freed);
        }
        Ok(report)
    }
}
