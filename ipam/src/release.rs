//! Releasing addresses: by address, by handle, and everything of a node that has left.
//!
//! Each block is changed in one transaction together with the handle records that point into
//! it. A block that becomes empty is deleted with its affinity when it is affine to no node or
//! to a node that no longer exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calyx_datastore::store::{Operation, Precondition, Store, Transaction};
use ipnet::IpNet;
use serde::Serialize;

use crate::block;
use crate::error::Result;
use crate::ipam::{decode, encode};
use crate::model::{
    affinity_from_key, affinity_key, block_key, handle_key, host_affinity_prefix, AllocationBlock,
    IPAMHandle, AFFINITY_KEY_PREFIX, BLOCK_KEY_PREFIX,
};
use crate::pools;
use crate::types::{attr_keys, TunnelKind};
use crate::Ipam;

/// One released address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    /// The address.
    pub ip: IpAddr,
    /// The handle that held it, if it had one.
    pub handle: Option<String>,
}

/// What [`Ipam::release_node`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeRelease {
    /// Addresses freed (the node's pods and tunnel addresses, also those borrowed elsewhere).
    pub released: Vec<Released>,
    /// Blocks deleted because they became empty.
    pub deleted_blocks: Vec<IpNet>,
    /// Blocks kept (addresses of other nodes remain in them) but no longer affine to the node.
    pub unaffined_blocks: Vec<IpNet>,
    /// Affinity keys removed.
    pub removed_affinities: usize,
}

impl NodeRelease {
    /// Adds one block's outcome; `affine`: the block was the node's (its affinity went with it).
    fn record(&mut self, cidr: IpNet, r: BlockRelease, affine: bool) {
        self.released.extend(r.released);
        if r.deleted {
            self.deleted_blocks.push(cidr);
        } else if r.unaffined {
            self.unaffined_blocks.push(cidr);
        }
        if affine && (r.deleted || r.unaffined) {
            self.removed_affinities += 1;
        }
    }
}

/// The ordinals of `block` allocated to `node`: those whose `node` attribute names it, and,
/// in the node's own block, those without a `node` attribute.
fn node_allocations(block: &AllocationBlock, node: &str) -> Vec<usize> {
    block::allocated(block)
        .into_iter()
        .filter(|(_, a)| match a.secondary.get(attr_keys::NODE) {
            Some(x) => x == node,
            None => block.affine_host() == Some(node),
        })
        .map(|(o, _)| o)
        .collect()
}

/// The outcome of one block's release transaction.
pub(crate) struct BlockRelease {
    pub released: Vec<Released>,
    pub deleted: bool,
    pub unaffined: bool,
}

impl<S: Store> Ipam<S> {
    /// Releases one address. `Ok(None)` when it was not allocated.
    pub async fn release_ip(&self, ip: IpAddr) -> Result<Option<Released>> {
        let Some(cidr) = self.block_containing(ip).await? else {
            return Ok(None);
        };
        let out = self
            .release_in_block(cidr, false, None, |b| {
                b.ip_to_ordinal(ip)
                    .filter(|o| block::attribute_at(b, *o).is_some())
                    .into_iter()
                    .collect()
            })
            .await?;
        Ok(out.released.into_iter().next())
    }

    /// Releases every address of `handle` and deletes its record; returns what was freed
    /// (empty when the handle does not exist: releasing twice is not an error).
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<Released>> {
        let key = handle_key(handle);
        let Some(kv) = self.store().get(&key).await? else {
            return Ok(Vec::new());
        };
        let record: IPAMHandle = decode(&kv)?;
        let cidrs: Vec<IpNet> = record.block.keys().filter_map(|c| c.parse().ok()).collect();
        let mut released = self.release_handle_in_blocks(handle, &cidrs).await?;
        // A record that claimed more than the blocks held is left over: drop it, guarded.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(kv) = self.store().get(&key).await? else {
                break;
            };
            let record: IPAMHandle = decode(&kv)?;
            let cidrs: Vec<IpNet> = record.block.keys().filter_map(|c| c.parse().ok()).collect();
            let mut holds = false;
            for c in &cidrs {
                if let Some(b) = self.store().get(&block_key(c)).await? {
                    let b: AllocationBlock = decode(&b)?;
                    if !block::ordinals_of(&b, handle).is_empty() {
                        holds = true;
                    }
                }
            }
            if holds {
                // Allocated again meanwhile (by a retried assign): release that too.
                released.extend(self.release_handle_in_blocks(handle, &cidrs).await?);
                if attempt < self.policy().max_attempts {
                    continue;
                }
                break;
            }
            let txn = Transaction::new()
                .when(Precondition::ModRevision(key.clone(), kv.mod_revision))
                .then(Operation::delete(&key));
            match self.store().transaction(txn).await {
                Ok(_) => break,
                Err(e) => self.retry_or_fail("release handle", attempt, e).await?,
            }
        }
        Ok(released)
    }

    /// Releases the addresses of `handle` in the given blocks (whether or not its record
    /// exists).
    pub async fn release_handle_in_blocks(
        &self,
        handle: &str,
        cidrs: &[IpNet],
    ) -> Result<Vec<Released>> {
        let mut released = Vec::new();
        for cidr in cidrs {
            let h = handle.to_string();
            let out = self
                .release_in_block(*cidr, false, None, move |b| block::ordinals_of(b, &h))
                .await?;
            released.extend(out.released);
        }
        Ok(released)
    }

    /// Frees everything of a node that has left, as calicoctl's node deletion does (release
    /// its addresses, then `RemoveIPAMHost`), each block in one compare-and-swap transaction
    /// with the handle records that point into it:
    /// - its addresses in every block (its own and those it borrowed, tunnel addresses
    ///   included); a handle record whose count reaches zero is deleted with them;
    /// - its blocks: deleted when that leaves them empty, else kept for the other nodes'
    ///   addresses in them but no longer affine to it;
    /// - its affinities (also pending claims and stale ones naming a block that is no longer
    ///   its), its tunnel-address handles and the host key `/calico/ipam/v2/host/<node>`.
    ///
    /// Afterwards no key of the node is left under `/calico/ipam/v2/`.
    pub async fn release_node(&self, node: &str) -> Result<NodeRelease> {
        let mut out = NodeRelease::default();
        let listing = self.store().list(BLOCK_KEY_PREFIX).await?;
        for kv in &listing.kvs {
            let Ok(b) = serde_json::from_slice::<AllocationBlock>(&kv.value) else {
                continue;
            };
            let affine = b.affine_host() == Some(node);
            if !affine && node_allocations(&b, node).is_empty() {
                continue;
            }
            let r = self
                .release_in_block(b.cidr, affine, Some(node), |b| node_allocations(b, node))
                .await?;
            out.record(b.cidr, r, affine);
        }
        // Tunnel-address handles whose record outlived its addresses (a crash between writes
        // of an older version, or a record written by hand).
        for kind in [TunnelKind::Ipip, TunnelKind::Vxlan, TunnelKind::VxlanV6] {
            out.released
                .extend(self.release_handle(&kind.handle(node)).await?);
        }
        self.remove_affinities(node, &mut out).await?;
        self.remove_host_key(node).await?;
        self.forget_node(node);
        tracing::info!(
            node,
            released = out.released.len(),
            deleted_blocks = out.deleted_blocks.len(),
            "released node"
        );
        Ok(out)
    }

    /// Deletes every affinity key left for `node`: pending claims, affinities of blocks deleted
    /// meanwhile, stale ones whose block is affine to another node or to none. A block that is
    /// (again) affine to the node is released like the others. Each deletion is guarded by the
    /// affinity's and the block's revisions; a lost race is retried.
    async fn remove_affinities(&self, node: &str, out: &mut NodeRelease) -> Result<()> {
        let prefix = host_affinity_prefix(node);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let affs = self.store().list(&prefix).await?;
            let mut lost_race = None;
            for kv in affs.kvs {
                let mut txn = Transaction::new()
                    .when(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
                if let Some((_, cidr)) = affinity_from_key(&kv.key) {
                    let key = block_key(&cidr);
                    match self.store().get(&key).await? {
                        None => txn = txn.when(Precondition::Absent(key)),
                        Some(bkv) => {
                            let block = serde_json::from_slice::<AllocationBlock>(&bkv.value).ok();
                            if block.as_ref().and_then(AllocationBlock::affine_host) == Some(node) {
                                let r = self
                                    .release_in_block(cidr, true, Some(node), |b| {
                                        node_allocations(b, node)
                                    })
                                    .await?;
                                out.record(cidr, r, true);
                                continue;
                            }
                            txn = txn.when(Precondition::ModRevision(key, bkv.mod_revision));
                        }
                    }
                }
                // A key under the node's prefix that is not an affinity is the node's too.
                match self
                    .store()
                    .transaction(txn.then(Operation::delete(&kv.key)))
                    .await
                {
                    Ok(_) => out.removed_affinities += 1,
                    Err(e) => lost_race = Some(e),
                }
            }
            match lost_race {
                None => return Ok(()),
                Some(e) => self.retry_or_fail("remove affinities", attempt, e).await?,
            }
        }
    }

    /// Deletes `/calico/ipam/v2/host/<node>` itself when present (Calico's `IPAMHostKey`,
    /// which older versions wrote), guarded by its revision.
    async fn remove_host_key(&self, node: &str) -> Result<()> {
        let key = format!("{AFFINITY_KEY_PREFIX}{node}");
        if let Some(kv) = self.store().get(&key).await? {
            let txn = Transaction::new()
                .when(Precondition::ModRevision(key.clone(), kv.mod_revision))
                .then(Operation::delete(&key));
            if let Err(e) = self.store().transaction(txn).await {
                // Rewritten meanwhile by a node of that name that is running again: keep it.
                tracing::warn!(node, error = %e, "kept the IPAM host key");
            }
        }
        Ok(())
    }

    /// The block that holds `ip`: from the pool's block size, else by listing the blocks.
    pub(crate) async fn block_containing(&self, ip: IpAddr) -> Result<Option<IpNet>> {
        let all_pools = pools::list_pools(self.store()).await?;
        for p in &all_pools {
            if let Some(cidr) = p.block_of(ip) {
                if self.store().get(&block_key(&cidr)).await?.is_some() {
                    return Ok(Some(cidr));
                }
            }
        }
        // The pool is gone or its block size changed: look through the blocks.
        let fam = crate::Family::of(&ip).key_part();
        let listing = self
            .store()
            .list(&format!("{BLOCK_KEY_PREFIX}{fam}/block/"))
            .await?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| crate::model::block_cidr_from_key(&kv.key))
            .find(|c| c.contains(&ip)))
    }

    /// Releases the ordinals `pick` chooses in block `cidr`, updating the handle records that
    /// point into it, in one transaction (retried on conflict). An emptied block is deleted with
    /// its affinity when its node is gone (or when `drop_affinity`); a non-empty one loses its
    /// affinity when `drop_affinity`.
    pub(crate) async fn release_in_block(
        &self,
        cidr: IpNet,
        drop_affinity: bool,
        gone_node: Option<&str>,
        pick: impl Fn(&AllocationBlock) -> Vec<usize>,
    ) -> Result<BlockRelease> {
        let key = block_key(&cidr);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(kv) = self.store().get(&key).await? else {
                return Ok(BlockRelease {
                    released: Vec::new(),
                    deleted: false,
                    unaffined: false,
                });
            };
            let original: AllocationBlock = decode(&kv)?;
            let ordinals = pick(&original);
            if ordinals.is_empty() && !drop_affinity {
                return Ok(BlockRelease {
                    released: Vec::new(),
                    deleted: false,
                    unaffined: false,
                });
            }
            let mut b = original.clone();
            let freed = block::release(&mut b, &ordinals);
            let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
            for (_, h) in &freed {
                if let Some(h) = h {
                    *per_handle.entry(h.clone()).or_insert(0) += 1;
                }
            }
            let handles: Vec<String> = per_handle.keys().cloned().collect();
            let reads = self
                .get_many(handles.iter().map(|h| handle_key(h)).collect())
                .await;
            let mut txn =
                Transaction::new().when(Precondition::ModRevision(key.clone(), kv.mod_revision));
            for (h, r) in handles.iter().zip(reads) {
                let hk = handle_key(h);
                match r? {
                    None => txn = txn.when(Precondition::Absent(hk)),
                    Some(hkv) => {
                        let mut record: IPAMHandle = decode(&hkv)?;
                        let n = per_handle.get(h).copied().unwrap_or(0);
                        let c = cidr.to_string();
                        let left = record.block.get(&c).copied().unwrap_or(0).saturating_sub(n);
                        if left == 0 {
                            record.block.remove(&c);
                        } else {
                            record.block.insert(c, left);
                        }
                        txn = txn.when(Precondition::ModRevision(hk.clone(), hkv.mod_revision));
                        txn = if record.block.is_empty() {
                            txn.then(Operation::delete(hk))
                        } else {
                            txn.then(Operation::put(hk, encode(&record)))
                        };
                    }
                }
            }
            let affine = b.affine_host().map(str::to_string);
            let empty = block::is_empty(&b);
            let node_gone = match affine.as_deref() {
                None => true,
                Some(n) if Some(n) == gone_node => true,
                Some(n) => !pools::node_exists(self.store(), n).await?,
            };
            let delete = empty && (drop_affinity || node_gone);
            let unaffine = !delete && drop_affinity && affine.is_some();
            if delete {
                txn = txn.then(Operation::delete(&key));
                if let Some(n) = &affine {
                    txn = txn.then(Operation::delete(affinity_key(n, &cidr)));
                }
            } else {
                if unaffine {
                    if let Some(n) = &affine {
                        txn = txn.then(Operation::delete(affinity_key(n, &cidr)));
                    }
                    b.affinity = None;
                    b.strict_affinity = false;
                }
                txn = txn.then(Operation::put(&key, encode(&b)));
            }
            match self.store().transaction(txn).await {
                Ok(rev) => {
                    self.note_block_written(cidr, (!delete && !unaffine).then_some(&b), rev);
                    if delete {
                        tracing::info!(block = %cidr, "deleted empty block");
                    }
                    let released = freed
                        .into_iter()
                        .filter_map(|(o, handle)| {
                            Some(Released {
                                ip: b.ordinal_to_ip(o)?,
                                handle,
                            })
                        })
                        .collect();
                    return Ok(BlockRelease {
                        released,
                        deleted: delete,
                        unaffined: unaffine,
                    });
                }
                Err(e) => self.retry_or_fail("release", attempt, e).await?,
            }
        }
    }

    /// Releases the given addresses; returns those that were allocated.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<Released>> {
        let mut by_block: BTreeMap<IpNet, BTreeSet<IpAddr>> = BTreeMap::new();
        for ip in ips {
            match self.block_containing(*ip).await? {
                Some(c) => {
                    by_block.entry(c).or_default().insert(*ip);
                }
                None => continue,
            }
        }
        let mut out = Vec::new();
        for (cidr, set) in by_block {
            let r = self
                .release_in_block(cidr, false, None, move |b| {
                    set.iter()
                        .filter_map(|ip| b.ip_to_ordinal(*ip))
                        .filter(|o| block::attribute_at(b, *o).is_some())
                        .collect()
                })
                .await?;
            out.extend(r.released);
        }
        Ok(out)
    }
}
