//! What the node daemon uses: its blocks, claiming a block, tunnel addresses, specific addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_datastore::store::{Operation, Precondition, Revision, Store, Transaction};
use ipnet::IpNet;
use serde::Serialize;

use crate::block;
use crate::error::{IpamError, Result};
use crate::ipam::{decode, encode, find_unclaimed};
use crate::model::{
    affinity_key, block_key, handle_key, host_affinity_prefix, AffinityState, AllocationBlock,
    BlockAffinity, IPAMHandle, BLOCK_KEY_PREFIX,
};
use crate::pools;
use crate::types::{AllocationAttrs, AssignArgs, Family, TunnelKind};
use crate::Ipam;

/// A block affine to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeBlock {
    /// The block.
    pub cidr: IpNet,
    /// The affinity's state (`confirmed` for blocks in use).
    pub state: AffinityState,
    /// Whether the block itself exists (a pending claim may have none).
    pub exists: bool,
    /// Addresses in use.
    pub in_use: usize,
    /// Addresses in the block.
    pub total: usize,
}

impl<S: Store> Ipam<S> {
    /// The blocks affine to `node` (both families), from its affinity keys: what the daemon
    /// originates over BGP and blackholes locally.
    pub async fn node_blocks(&self, node: &str) -> Result<Vec<NodeBlock>> {
        let listing = self.store().list(&host_affinity_prefix(node)).await?;
        let mut out = Vec::new();
        for kv in listing.kvs {
            let Some((_, cidr)) = crate::model::affinity_from_key(&kv.key) else {
                continue;
            };
            let aff: BlockAffinity = decode(&kv)?;
            let block = match self.store().get(&block_key(&cidr)).await? {
                Some(b) => Some(decode::<AllocationBlock>(&b)?),
                None => None,
            };
            let block = block.filter(|b| b.affine_host() == Some(node));
            out.push(NodeBlock {
                cidr,
                state: aff.state,
                exists: block.is_some(),
                in_use: block.as_ref().map_or(0, AllocationBlock::num_allocated),
                total: block.as_ref().map_or_else(
                    || crate::model::AllocationBlock::new(cidr).map_or(0, |b| b.num_addresses()),
                    AllocationBlock::num_addresses,
                ),
            });
        }
        Ok(out)
    }

    /// Makes sure `node` has at least one block of `family` (claims one when it has none, as
    /// Calico's node does at start-up). Returns the node's first block, `None` when no pool of
    /// the family selects the node.
    pub async fn ensure_block(&self, node: &str, family: Family) -> Result<Option<IpNet>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mine: Vec<NodeBlock> = self
                .node_blocks(node)
                .await?
                .into_iter()
                .filter(|b| b.exists && Family::of_net(&b.cidr) == family)
                .collect();
            if let Some(b) = mine.first() {
                return Ok(Some(b.cidr));
            }
            let all = pools::list_pools(self.store()).await?;
            let labels = pools::node_labels(self.store(), node)
                .await?
                .unwrap_or_default();
            let usable = pools::usable_pools(&all, family, &labels, false, None)?;
            let reserved = pools::list_reserved(self.store()).await?;
            let (cfg, _) = self.config_with_rev().await?;
            let listing = self
                .store()
                .list(&format!("{BLOCK_KEY_PREFIX}{}/block/", family.key_part()))
                .await?;
            let existing: BTreeMap<IpNet, (AllocationBlock, Revision)> = listing
                .kvs
                .iter()
                .filter_map(|kv| {
                    let b: AllocationBlock = serde_json::from_slice(&kv.value).ok()?;
                    Some((b.cidr, (b, kv.mod_revision)))
                })
                .collect();
            let Some(cidr) = usable
                .iter()
                .find_map(|p| find_unclaimed(p, &existing, &reserved))
            else {
                return Ok(None);
            };
            let mut block = AllocationBlock::new_affine(cidr, node)
                .ok_or_else(|| IpamError::Invalid(format!("block {cidr} is too large")))?;
            block.strict_affinity = cfg.strict_affinity;
            let aff = BlockAffinity {
                state: AffinityState::Confirmed,
                deleted: false,
            };
            let txn = Transaction::new()
                .when(Precondition::Absent(block_key(&cidr)))
                .when(Precondition::Absent(affinity_key(node, &cidr)))
                .then(Operation::put(block_key(&cidr), encode(&block)))
                .then(Operation::put(affinity_key(node, &cidr), encode(&aff)));
            match self.store().transaction(txn).await {
                Ok(_) => {
                    tracing::info!(node, block = %cidr, "claimed block");
                    return Ok(Some(cidr));
                }
                Err(e) => self.retry_or_fail("claim block", attempt, e).await?,
            }
        }
    }

    /// The node's tunnel address of `kind` (assigned once, then the same one every time).
    pub async fn assign_tunnel_address(&self, node: &str, kind: TunnelKind) -> Result<IpAddr> {
        let args =
            AssignArgs::one(kind.handle(node), node, kind.family()).with_attrs(AllocationAttrs {
                kind: Some(kind.attr_type().to_string()),
                ..Default::default()
            });
        self.assign(args)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| IpamError::Exhausted {
                family: kind.family(),
                node: node.to_string(),
                reason: "no address returned".to_string(),
            })
    }

    /// Assigns the specific address `ip` to `handle` on `node` (static addresses, tunnel
    /// addresses that were configured). When the block does not exist it is claimed for
    /// `node`. Assigning an address its handle already holds succeeds.
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        node: &str,
        attrs: &AllocationAttrs,
    ) -> Result<()> {
        if handle.is_empty() || handle.contains('/') {
            return Err(IpamError::Invalid(format!("bad handle ID {handle:?}")));
        }
        let attr = attrs.to_attribute(handle, node);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let all = pools::list_pools(self.store()).await?;
            let Some(pool) = all.iter().find(|p| !p.disabled && p.cidr.contains(&ip)) else {
                return Err(IpamError::NotInPool { ip });
            };
            let Some(cidr) = pool.block_of(ip) else {
                return Err(IpamError::NotInPool { ip });
            };
            let hkey = handle_key(handle);
            let (hguard, mut record) = match self.store().get(&hkey).await? {
                None => (Precondition::Absent(hkey.clone()), IPAMHandle::default()),
                Some(kv) => (
                    Precondition::ModRevision(hkey.clone(), kv.mod_revision),
                    decode::<IPAMHandle>(&kv)?,
                ),
            };
            record.handle_id = handle.to_string();
            *record.block.entry(cidr.to_string()).or_insert(0) += 1;
            let bkey = block_key(&cidr);
            let mut txn = Transaction::new().when(hguard);
            let block = match self.store().get(&bkey).await? {
                Some(kv) => {
                    let mut b: AllocationBlock = decode(&kv)?;
                    let Some(o) = b.ip_to_ordinal(ip) else {
                        return Err(IpamError::NotInPool { ip });
                    };
                    if let Some(a) = block::attribute_at(&b, o) {
                        let holder = a.handle_id.clone().unwrap_or_default();
                        if holder == handle {
                            return Ok(());
                        }
                        return Err(IpamError::AlreadyAllocated { ip, holder });
                    }
                    block::allocate_ordinal(&mut b, o, &attr);
                    txn = txn.when(Precondition::ModRevision(bkey.clone(), kv.mod_revision));
                    b
                }
                None => {
                    let (cfg, _) = self.config_with_rev().await?;
                    let mut b = AllocationBlock::new_affine(cidr, node)
                        .ok_or_else(|| IpamError::Invalid(format!("block {cidr} is too large")))?;
                    b.strict_affinity = cfg.strict_affinity;
                    let Some(o) = b.ip_to_ordinal(ip) else {
                        return Err(IpamError::NotInPool { ip });
                    };
                    block::allocate_ordinal(&mut b, o, &attr);
                    let aff = BlockAffinity {
                        state: AffinityState::Confirmed,
                        deleted: false,
                    };
                    txn = txn
                        .when(Precondition::Absent(bkey.clone()))
                        .when(Precondition::Absent(affinity_key(node, &cidr)))
                        .then(Operation::put(affinity_key(node, &cidr), encode(&aff)));
                    b
                }
            };
            txn = txn
                .then(Operation::put(&bkey, encode(&block)))
                .then(Operation::put(&hkey, encode(&record)));
            match self.store().transaction(txn).await {
                Ok(rev) => {
                    self.note_block_written(cidr, Some(&block), rev);
                    return Ok(());
                }
                Err(e) => self.retry_or_fail("assign ip", attempt, e).await?,
            }
        }
    }

    /// The addresses `handle` holds (both families).
    pub async fn handle_addresses(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let Some(kv) = self.store().get(&handle_key(handle)).await? else {
            return Ok(Vec::new());
        };
        let record: IPAMHandle = decode(&kv)?;
        let mut out = Vec::new();
        for c in record.block.keys() {
            let Ok(cidr) = c.parse::<IpNet>() else {
                continue;
            };
            if let Some(b) = self.store().get(&block_key(&cidr)).await? {
                let b: AllocationBlock = decode(&b)?;
                out.extend(block::addresses_of(&b, handle));
            }
        }
        out.sort();
        Ok(out)
    }
}
