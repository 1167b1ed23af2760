//! Addresses in use on another node than the one their block is affine to ("borrowed"
//! addresses, and every address of a block affine to no node), read from the IPAM blocks'
//! allocation attributes as Felix's `l3_route_resolver` reads them
//! (`AllocationBlock.NonAffineAllocations`: an allocation whose `node` attribute is not the
//! block's host).
//!
//! Only whole blocks are advertised (BGP) or routed (VXLAN), so without this a borrowed
//! address is routed to its block's owner and dies in its blackhole. In VXLAN mode every node
//! therefore routes the /32 to the VTEP of the node using it, from this view. (In BGP mode the
//! node using the address originates its /32 instead, learned from its own kernel's workload
//! routes as BIRD learns them: [`crate::workloads`]; no block is read for that.)
//!
//! **What this costs, and why this watch.** Which node uses an address is recorded only in
//! the address's block, so a node that routes borrowed addresses of other nodes has to see
//! blocks. A node watches every block (`/calico/ipam/v2/assignment/`) while some enabled IPv4
//! pool uses VXLAN and its backend programs routes ([`crate::cluster::ClusterWatch::watch_blocks`],
//! started and ended as pools change): a borrowed address can be in any block of the pool (a
//! full pool, `maxBlocksPerHost`, an explicitly requested address, a block left without
//! affinity by a deleted node), so no narrower set of keys is correct, and etcd cannot filter a
//! watch by value. The blocks not affine to this node would spare only its own pods' churn (a
//! few percent in a large cluster) at the price of a watch per gap between its blocks. This is
//! what Felix pays in etcd mode (it syncs every block), and the watch benchmark's `blocks` row
//! measures it: one block event per pod anywhere, to every node. What keeps the cost bounded on
//! the node is the processing: a block event is decoded once and diffed against the block's
//! previous non-affine allocations; only the addresses that changed become work
//! ([`BorrowedView::take_dirty`]), one route update each, and a block without borrowed
//! addresses before and after costs no route work at all. A cluster without VXLAN pools pays
//! none of it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use calyx_datastore::resources::ipam::{block_cidr_from_key, AllocationBlock};
use calyx_datastore::store::Listing;
use ipnet::IpNet;
use tracing::warn;

/// Calico's allocation attribute naming the node an address is used on.
const NODE_ATTRIBUTE: &str = "node";

/// Every address used on another node than its block's host, kept current from block events.
#[derive(Debug, Clone, Default)]
pub struct BorrowedView {
    /// Block -> its non-affine allocations (address -> node using it).
    blocks: HashMap<IpNet, BTreeMap<IpAddr, String>>,
    /// Address -> node using it, over all blocks (blocks do not overlap).
    by_addr: HashMap<IpAddr, String>,
    /// Addresses changed since the last [`BorrowedView::take_dirty`], with the node that used
    /// each before the first of those changes.
    dirty: BTreeMap<IpAddr, Option<String>>,
}

/// The non-affine allocations of one block: address -> node, for allocations whose `node`
/// attribute is set and is not the block's host.
pub fn non_affine_allocations(block: &AllocationBlock) -> BTreeMap<IpAddr, String> {
    let host = block.affine_host();
    let mut out = BTreeMap::new();
    for (ordinal, slot) in block.allocations.iter().enumerate() {
        let Some(index) = slot else { continue };
        let Some(attr) = block.attributes.get(*index) else {
            continue;
        };
        // Felix skips these too: without a node there is nowhere to route the address.
        let Some(node) = attr.secondary.get(NODE_ATTRIBUTE).filter(|n| !n.is_empty()) else {
            continue;
        };
        if host == Some(node.as_str()) {
            continue;
        }
        if let Some(ip) = block.ordinal_to_ip(ordinal) {
            out.insert(ip, node.clone());
        }
    }
    out
}

impl BorrowedView {
    /// The node using `ip`, when `ip` is used outside its node's blocks.
    pub fn node_of(&self, ip: &IpAddr) -> Option<&str> {
        self.by_addr.get(ip).map(String::as_str)
    }

    /// Every non-affine address with the node using it.
    pub fn all(&self) -> impl Iterator<Item = (IpAddr, &str)> + '_ {
        self.by_addr.iter().map(|(ip, n)| (*ip, n.as_str()))
    }

    /// How many addresses are used outside their node's blocks.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// True when no address is used outside its node's blocks.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// The addresses changed since the last call, each with the node that used it before.
    pub fn take_dirty(&mut self) -> BTreeMap<IpAddr, Option<String>> {
        std::mem::take(&mut self.dirty)
    }

    /// A block key was written. Keys that are not block keys are ignored.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        let Some(cidr) = block_cidr_from_key(key) else {
            return;
        };
        match serde_json::from_slice::<AllocationBlock>(value) {
            Ok(block) => self.set_block(cidr, non_affine_allocations(&block)),
            Err(e) => warn!(%key, error = %e, "ignoring an IPAM block that does not decode"),
        }
    }

    /// A block key was deleted.
    pub fn delete(&mut self, key: &str) {
        if let Some(cidr) = block_cidr_from_key(key) {
            self.set_block(cidr, BTreeMap::new());
        }
    }

    /// Replaces every block with those of `listing` (a fresh listing after a compaction).
    pub fn replace(&mut self, listing: &Listing) {
        let mut fresh: HashMap<IpNet, BTreeMap<IpAddr, String>> = HashMap::new();
        for kv in &listing.kvs {
            let Some(cidr) = block_cidr_from_key(&kv.key) else {
                continue;
            };
            match serde_json::from_slice::<AllocationBlock>(&kv.value) {
                Ok(block) => {
                    fresh.insert(cidr, non_affine_allocations(&block));
                }
                Err(e) => {
                    warn!(key = %kv.key, error = %e, "ignoring an IPAM block that does not decode")
                }
            }
        }
        let gone: Vec<IpNet> = self
            .blocks
            .keys()
            .filter(|c| !fresh.contains_key(c))
            .copied()
            .collect();
        for cidr in gone {
            self.set_block(cidr, BTreeMap::new());
        }
        for (cidr, allocs) in fresh {
            self.set_block(cidr, allocs);
        }
    }

    /// Makes `cidr`'s non-affine allocations `new`, recording each address that changed.
    fn set_block(&mut self, cidr: IpNet, new: BTreeMap<IpAddr, String>) {
        let old = if new.is_empty() {
            self.blocks.remove(&cidr).unwrap_or_default()
        } else {
            self.blocks.insert(cidr, new.clone()).unwrap_or_default()
        };
        if old == new {
            return;
        }
        for (ip, node) in &old {
            if new.get(ip) != Some(node) {
                self.unset(*ip, node);
            }
        }
        for (ip, node) in &new {
            if old.get(ip) != Some(node) {
                self.set(*ip, node);
            }
        }
    }

    fn unset(&mut self, ip: IpAddr, node: &str) {
        self.mark(ip);
        if self.by_addr.get(&ip).is_some_and(|n| n == node) {
            self.by_addr.remove(&ip);
        }
    }

    fn set(&mut self, ip: IpAddr, node: &str) {
        self.mark(ip);
        self.by_addr.insert(ip, node.to_string());
    }

    fn mark(&mut self, ip: IpAddr) {
        let before = self.by_addr.get(&ip).cloned();
        self.dirty.entry(ip).or_insert(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calyx_datastore::resources::ipam::{block_key, AllocationAttribute};

    fn block(cidr: &str, host: Option<&str>, allocs: &[(usize, &str)]) -> AllocationBlock {
        let net: IpNet = cidr.parse().unwrap();
        let mut b = match host {
            Some(h) => AllocationBlock::new_affine(net, h).unwrap(),
            None => AllocationBlock::new(net).unwrap(),
        };
        for (ordinal, node) in allocs {
            let mut secondary = BTreeMap::new();
            if !node.is_empty() {
                secondary.insert("node".to_string(), node.to_string());
            }
            b.attributes.push(AllocationAttribute {
                handle_id: Some(format!("h{ordinal}")),
                secondary,
            });
            b.allocations[*ordinal] = Some(b.attributes.len() - 1);
            b.unallocated.retain(|o| o != ordinal);
        }
        b
    }

    fn put(view: &mut BorrowedView, b: &AllocationBlock) {
        view.put(&block_key(&b.cidr), &serde_json::to_vec(b).unwrap());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_allocations_of_other_nodes_count() {
        // node1's block: two of its own, one borrowed by node2, one without a node attribute.
        let b = block(
            "10.65.0.0/29",
            Some("node1"),
            &[(0, "node1"), (1, "node1"), (2, "node2"), (3, "")],
        );
        let got = non_affine_allocations(&b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[&ip("10.65.0.2")], "node2");
        // A block affine to nobody: every allocation with a node is routed per address.
        let orphan = block("10.65.0.8/29", None, &[(0, "node1"), (1, "node3")]);
        assert_eq!(non_affine_allocations(&orphan).len(), 2);
    }

    #[test]
    fn changes_name_only_the_addresses_that_changed() {
        let mut v = BorrowedView::default();
        let mut b = block("10.65.0.0/29", Some("node1"), &[(0, "node1"), (2, "node2")]);
        put(&mut v, &b);
        let dirty = v.take_dirty();
        assert_eq!(
            dirty.into_iter().collect::<Vec<_>>(),
            [(ip("10.65.0.2"), None)]
        );
        assert_eq!(v.node_of(&ip("10.65.0.2")), Some("node2"));

        // The block's owner allocates more for itself: no borrowed address changed.
        b = block(
            "10.65.0.0/29",
            Some("node1"),
            &[(0, "node1"), (1, "node1"), (2, "node2")],
        );
        put(&mut v, &b);
        assert!(v.take_dirty().is_empty());

        // node3 borrows one more, node2's is released.
        b = block(
            "10.65.0.0/29",
            Some("node1"),
            &[(0, "node1"), (1, "node1"), (5, "node3")],
        );
        put(&mut v, &b);
        let dirty: Vec<_> = v.take_dirty().into_iter().collect();
        assert_eq!(
            dirty,
            [
                (ip("10.65.0.2"), Some("node2".to_string())),
                (ip("10.65.0.5"), None)
            ]
        );
        assert_eq!(v.node_of(&ip("10.65.0.2")), None);
        assert_eq!(v.len(), 1);

        // The block is deleted: its borrowed address goes.
        v.delete(&block_key(&b.cidr));
        let dirty: Vec<_> = v.take_dirty().into_iter().collect();
        assert_eq!(dirty, [(ip("10.65.0.5"), Some("node3".to_string()))]);
        assert!(v.is_empty());
    }

    #[test]
    fn a_resync_replaces_everything() {
        let mut v = BorrowedView::default();
        put(
            &mut v,
            &block("10.65.0.0/29", Some("node1"), &[(2, "node2")]),
        );
        put(
            &mut v,
            &block("10.65.0.8/29", Some("node1"), &[(1, "node3")]),
        );
        v.take_dirty();
        let kept = block("10.65.0.8/29", Some("node1"), &[(1, "node3")]);
        let listing = Listing {
            kvs: vec![calyx_datastore::store::KeyValue {
                key: block_key(&kept.cidr),
                value: serde_json::to_vec(&kept).unwrap(),
                create_revision: 1,
                mod_revision: 1,
            }],
            revision: 9,
        };
        v.replace(&listing);
        let dirty: Vec<_> = v.take_dirty().into_iter().collect();
        assert_eq!(dirty, [(ip("10.65.0.2"), Some("node2".to_string()))]);
        assert_eq!(v.node_of(&ip("10.65.0.9")), Some("node3"));
    }

    #[test]
    fn an_address_that_moves_between_nodes_is_one_change() {
        let mut v = BorrowedView::default();
        put(
            &mut v,
            &block("10.65.0.0/29", Some("node1"), &[(2, "node2")]),
        );
        v.take_dirty();
        put(
            &mut v,
            &block("10.65.0.0/29", Some("node1"), &[(2, "node3")]),
        );
        let dirty: Vec<_> = v.take_dirty().into_iter().collect();
        assert_eq!(dirty, [(ip("10.65.0.2"), Some("node2".to_string()))]);
        assert_eq!(v.node_of(&ip("10.65.0.2")), Some("node3"));
    }
}
