//! Pure operations on an [`AllocationBlock`] in Calico's JSON form: allocate ordinals, release
//! them, and keep `unallocated`, `attributes` and the sequence numbers consistent.
//!
//! The block is Calico's: `allocations[ordinal]` is `None` (free) or an index into `attributes`;
//! `unallocated` lists the free ordinals in the order they are handed out. Released ordinals go
//! to the back of `unallocated`, so an address that was just freed is the last to be reused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{AllocationAttribute, AllocationBlock};

/// Number of free ordinals.
pub fn free_count(block: &AllocationBlock) -> usize {
    block.allocations.iter().filter(|a| a.is_none()).count()
}

/// The reservations (IPReservation `reservedCIDRs`) that touch `cidr`; usually none, which
/// keeps the per-ordinal checks below off the common path.
fn touching<'a>(cidr: &IpNet, reserved: &'a [IpNet]) -> Vec<&'a IpNet> {
    reserved
        .iter()
        .filter(|r| r.contains(&cidr.network()) || cidr.contains(&r.network()))
        .collect()
}

/// Whether `ordinal` of the block at `cidr` lies in one of `touching`.
fn is_reserved(cidr: &IpNet, ordinal: usize, touching: &[&IpNet]) -> bool {
    !touching.is_empty()
        && crate::model::ordinal_to_ip(cidr, ordinal)
            .is_some_and(|ip| touching.iter().any(|r| r.contains(&ip)))
}

/// Number of free ordinals that automatic assignment may take: free and outside `reserved`.
pub fn free_unreserved(block: &AllocationBlock, reserved: &[IpNet]) -> usize {
    let t = touching(&block.cidr, reserved);
    if t.is_empty() {
        return free_count(block);
    }
    block
        .allocations
        .iter()
        .enumerate()
        .filter(|(o, a)| a.is_none() && !is_reserved(&block.cidr, *o, &t))
        .count()
}

/// Whether a block `cidr` that does not exist yet would have an address outside `reserved`.
pub fn fresh_has_unreserved(cidr: &IpNet, reserved: &[IpNet]) -> bool {
    let t = touching(cidr, reserved);
    if t.is_empty() {
        return true;
    }
    // A reservation that covers the whole block settles it without walking its addresses.
    if t.iter()
        .any(|r| r.contains(&cidr.network()) && r.prefix_len() <= cidr.prefix_len())
    {
        return false;
    }
    let size = 1usize << (cidr.max_prefix_len() - cidr.prefix_len()).min(20);
    (0..size).any(|o| !is_reserved(cidr, o, &t))
}

/// Allocates up to `count` free ordinals to `attr`; returns the ordinals taken (fewer than
/// `count` when the block runs out). Identical attributes share one `attributes` entry.
pub fn allocate(
    block: &mut AllocationBlock,
    count: usize,
    attr: &AllocationAttribute,
) -> Vec<usize> {
    allocate_unreserved(block, count, attr, &[])
}

/// [`allocate`], skipping free ordinals inside `reserved` (as Calico's automatic assignment
/// skips IPReservations); skipped ordinals keep their place in `unallocated`.
pub fn allocate_unreserved(
    block: &mut AllocationBlock,
    count: usize,
    attr: &AllocationAttribute,
    reserved: &[IpNet],
) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    repair_unallocated(block);
    let t = touching(&block.cidr, reserved);
    let ordinals: Vec<usize> = if t.is_empty() {
        let take = count.min(block.unallocated.len());
        block.unallocated.drain(..take).collect()
    } else {
        let cidr = block.cidr;
        let picked: Vec<usize> = block
            .unallocated
            .iter()
            .copied()
            .filter(|&o| !is_reserved(&cidr, o, &t))
            .take(count)
            .collect();
        block.unallocated.retain(|o| !picked.contains(o));
        picked
    };
    if ordinals.is_empty() {
        return Vec::new();
    }
    let index = attribute_index(block, attr);
    block.sequence_number += 1;
    for &o in &ordinals {
        block.allocations[o] = Some(index);
        block
            .sequence_number_for_allocation
            .insert(o.to_string(), block.sequence_number);
    }
    ordinals
}

/// Allocates one specific ordinal; false when it is taken or out of range.
pub fn allocate_ordinal(
    block: &mut AllocationBlock,
    ordinal: usize,
    attr: &AllocationAttribute,
) -> bool {
    match block.allocations.get(ordinal) {
        Some(None) => {}
        _ => return false,
    }
    repair_unallocated(block);
    block.unallocated.retain(|&o| o != ordinal);
    let index = attribute_index(block, attr);
    block.sequence_number += 1;
    block.allocations[ordinal] = Some(index);
    block
        .sequence_number_for_allocation
        .insert(ordinal.to_string(), block.sequence_number);
    true
}

/// Releases the given ordinals; returns, for each one that was allocated, its handle (if any).
/// Ordinals that were free or out of range are ignored.
pub fn release(block: &mut AllocationBlock, ordinals: &[usize]) -> Vec<(usize, Option<String>)> {
    let mut out = Vec::new();
    for &o in ordinals {
        let Some(slot) = block.allocations.get_mut(o) else {
            continue;
        };
        let Some(index) = slot.take() else {
            continue;
        };
        let handle = block
            .attributes
            .get(index)
            .and_then(|a| a.handle_id.clone());
        block.unallocated.push(o);
        block.sequence_number_for_allocation.remove(&o.to_string());
        out.push((o, handle));
    }
    if !out.is_empty() {
        block.sequence_number += 1;
        compact_attributes(block);
    }
    out
}

/// The ordinals allocated to `handle`.
pub fn ordinals_of(block: &AllocationBlock, handle: &str) -> Vec<usize> {
    block
        .allocations
        .iter()
        .enumerate()
        .filter_map(|(o, a)| {
            let attr = block.attributes.get((*a)?)?;
            (attr.handle_id.as_deref() == Some(handle)).then_some(o)
        })
        .collect()
}

/// The addresses allocated to `handle`.
pub fn addresses_of(block: &AllocationBlock, handle: &str) -> Vec<IpAddr> {
    ordinals_of(block, handle)
        .into_iter()
        .filter_map(|o| block.ordinal_to_ip(o))
        .collect()
}

/// The attribute of the allocation at `ordinal`, when allocated.
pub fn attribute_at(block: &AllocationBlock, ordinal: usize) -> Option<&AllocationAttribute> {
    let index = (*block.allocations.get(ordinal)?)?;
    block.attributes.get(index)
}

/// Every allocated ordinal with its attribute (a default attribute when the index is bad).
pub fn allocated(block: &AllocationBlock) -> Vec<(usize, AllocationAttribute)> {
    block
        .allocations
        .iter()
        .enumerate()
        .filter_map(|(o, a)| {
            let index = (*a)?;
            Some((o, block.attributes.get(index).cloned().unwrap_or_default()))
        })
        .collect()
}

/// Per handle, the number of addresses it holds in the block.
pub fn handle_counts(block: &AllocationBlock) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for (_, attr) in allocated(block) {
        if let Some(h) = attr.handle_id {
            *counts.entry(h).or_insert(0) += 1;
        }
    }
    counts
}

/// True when nothing is allocated.
pub fn is_empty(block: &AllocationBlock) -> bool {
    block.allocations.iter().all(Option::is_none)
}

/// Internal consistency: `unallocated` is exactly the free ordinals without duplicates, every
/// attribute index is valid, and `allocations` has one slot per address. Returns the problems.
pub fn consistency_problems(block: &AllocationBlock) -> Vec<String> {
    let mut problems = Vec::new();
    let n = block.num_addresses();
    if block.allocations.len() != n {
        problems.push(format!(
            "{} allocation slots for {} addresses",
            block.allocations.len(),
            n
        ));
    }
    let free: BTreeSet<usize> = block
        .allocations
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_none())
        .map(|(o, _)| o)
        .collect();
    let listed: BTreeSet<usize> = block.unallocated.iter().copied().collect();
    if listed.len() != block.unallocated.len() {
        problems.push("duplicate ordinals in unallocated".to_string());
    }
    if listed != free {
        problems.push("unallocated does not match the free ordinals".to_string());
    }
    for (o, a) in block.allocations.iter().enumerate() {
        if let Some(i) = a {
            if *i >= block.attributes.len() {
                problems.push(format!("ordinal {o} refers to missing attribute {i}"));
            }
        }
    }
    problems
}

/// Makes `unallocated` match the free ordinals again (drops taken or duplicate ordinals, appends
/// free ones that are missing), keeping the order of those that were right.
fn repair_unallocated(block: &mut AllocationBlock) {
    let n = block.allocations.len();
    let mut seen = vec![false; n];
    let allocations = &block.allocations;
    block.unallocated.retain(|&o| {
        if o < n && allocations[o].is_none() && !seen[o] {
            seen[o] = true;
            true
        } else {
            false
        }
    });
    if block.unallocated.len() != block.allocations.iter().filter(|a| a.is_none()).count() {
        for (o, a) in block.allocations.iter().enumerate() {
            if a.is_none() && !seen[o] {
                block.unallocated.push(o);
            }
        }
    }
}

fn attribute_index(block: &mut AllocationBlock, attr: &AllocationAttribute) -> usize {
    if let Some(i) = block.attributes.iter().position(|a| a == attr) {
        return i;
    }
    block.attributes.push(attr.clone());
    block.attributes.len() - 1
}

/// Drops attributes no allocation refers to, renumbering the references.
fn compact_attributes(block: &mut AllocationBlock) {
    let mut used = vec![false; block.attributes.len()];
    for i in block.allocations.iter().flatten() {
        if let Some(u) = used.get_mut(*i) {
            *u = true;
        }
    }
    if used.iter().all(|u| *u) {
        return;
    }
    let mut remap = vec![None; block.attributes.len()];
    let mut kept = Vec::new();
    for (i, attr) in std::mem::take(&mut block.attributes)
        .into_iter()
        .enumerate()
    {
        if used[i] {
            remap[i] = Some(kept.len());
            kept.push(attr);
        }
    }
    block.attributes = kept;
    for slot in block.allocations.iter_mut() {
        if let Some(i) = *slot {
            *slot = remap.get(i).copied().flatten();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn attr(h: &str) -> AllocationAttribute {
        AllocationAttribute {
            handle_id: Some(h.to_string()),
            secondary: BTreeMap::new(),
        }
    }

    fn block(len: u8) -> AllocationBlock {
        AllocationBlock::new(format!("10.0.0.0/{len}").parse().unwrap()).unwrap()
    }

    #[test]
    fn allocate_release_roundtrip() {
        let mut b = block(29);
        let got = allocate(&mut b, 3, &attr("a"));
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(allocate(&mut b, 2, &attr("b")), vec![3, 4]);
        assert_eq!(b.attributes.len(), 2);
        assert_eq!(free_count(&b), 3);
        assert_eq!(ordinals_of(&b, "a"), vec![0, 1, 2]);
        let rel = release(&mut b, &[0, 1, 2, 7]);
        assert_eq!(rel.len(), 3);
        assert!(rel.iter().all(|(_, h)| h.as_deref() == Some("a")));
        // The attribute of "a" is gone and "b" renumbered.
        assert_eq!(b.attributes, vec![attr("b")]);
        assert_eq!(b.allocations[3], Some(0));
        // Freed ordinals are reused last.
        assert_eq!(allocate(&mut b, 4, &attr("c")), vec![5, 6, 7, 0]);
        assert!(consistency_problems(&b).is_empty());
    }

    #[test]
    fn specific_ordinal_and_full_block() {
        let mut b = block(30);
        assert!(allocate_ordinal(&mut b, 2, &attr("t")));
        assert!(!allocate_ordinal(&mut b, 2, &attr("u")));
        assert!(!allocate_ordinal(&mut b, 9, &attr("u")));
        assert_eq!(allocate(&mut b, 10, &attr("x")), vec![0, 1, 3]);
        assert_eq!(allocate(&mut b, 1, &attr("x")), Vec::<usize>::new());
        assert!(consistency_problems(&b).is_empty());
    }

    #[test]
    fn corrupt_unallocated_is_repaired_not_trusted() {
        let mut b = block(30);
        allocate(&mut b, 1, &attr("a"));
        // A writer left a taken ordinal and a duplicate in the free list.
        b.unallocated = vec![0, 2, 2];
        let got = allocate(&mut b, 3, &attr("b"));
        assert_eq!(got, vec![2, 1, 3]);
        assert!(consistency_problems(&b).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize, u8),
        AllocAt(usize, u8),
        Release(Vec<usize>),
        ReleaseHandle(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..10, 0u8..5).prop_map(|(n, h)| Op::Alloc(n, h)),
            (0usize..40, 0u8..5).prop_map(|(o, h)| Op::AllocAt(o, h)),
            proptest::collection::vec(0usize..40, 0..8).prop_map(Op::Release),
            (0u8..5).prop_map(Op::ReleaseHandle),
        ]
    }

    proptest! {
        /// A model (ordinal -> handle) and the block agree after any sequence of operations;
        /// no ordinal is ever handed out twice and the counts are exact.
        #[test]
        fn block_matches_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut b = block(27);
            let mut model: BTreeMap<usize, String> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Alloc(n, h) => {
                        let h = format!("h{h}");
                        let free_before = 32 - model.len();
                        let got = allocate(&mut b, n, &attr(&h));
                        prop_assert_eq!(got.len(), n.min(free_before));
                        for o in got {
                            prop_assert!(model.insert(o, h.clone()).is_none(), "ordinal {} given twice", o);
                        }
                    }
                    Op::AllocAt(o, h) => {
                        let h = format!("h{h}");
                        let ok = allocate_ordinal(&mut b, o, &attr(&h));
                        prop_assert_eq!(ok, o < 32 && !model.contains_key(&o));
                        if ok { model.insert(o, h); }
                    }
                    Op::Release(os) => {
                        let rel = release(&mut b, &os);
                        for (o, h) in rel {
                            prop_assert_eq!(model.remove(&o), h);
                        }
                        for o in os { prop_assert!(!model.contains_key(&o)); }
                    }
                    Op::ReleaseHandle(h) => {
                        let h = format!("h{h}");
                        let os = ordinals_of(&b, &h);
                        let expected: Vec<usize> = model.iter().filter(|(_, v)| **v == h).map(|(k, _)| *k).collect();
                        prop_assert_eq!(&os, &expected);
                        release(&mut b, &os);
                        model.retain(|_, v| *v != h);
                    }
                }
                prop_assert!(consistency_problems(&b).is_empty(), "{:?}", consistency_problems(&b));
                prop_assert_eq!(free_count(&b), 32 - model.len());
                let counts = handle_counts(&b);
                prop_assert_eq!(counts.values().sum::<u32>() as usize, model.len());
                // JSON round trip keeps the block.
                let json = serde_json::to_vec(&b).unwrap();
                let back: AllocationBlock = serde_json::from_slice(&json).unwrap();
                prop_assert_eq!(&back, &b);
            }
        }
    }
}
