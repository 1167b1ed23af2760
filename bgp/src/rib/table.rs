//! The prefix table of one address family: each destination (its paths and which peers it was
//! advertised to) lives in a slab, found through a hash index that holds only slab positions.
//!
//! Why this shape: at a million prefixes the table is most of the speaker's memory and its
//! random memory accesses are most of its time. An IPv4 slab entry is 32 bytes and an index
//! bucket 9 (hash and position, and a control byte), where a hash map of prefix to
//! destination with the old per-peer Adj-RIB-Out cost 73 bytes a bucket, more than twice as
//! many buckets as prefixes after growth. Entries are created in arrival order
//! and the change log refers to them by position, so sending a table that just arrived walks
//! the slab sequentially instead of hashing every prefix again. Positions of removed entries
//! are reused.

use std::hash::{Hash, Hasher};

use calyx_proto::{Ipv4Prefix, Ipv6Prefix};

use super::{OutBatch, PeerId};
use crate::attrs::{Attrs, FastHasher, FastMap, Prefix, Small};

/// One path to a destination: the peer it came from and its interned attributes.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub attrs: Attrs,
    pub peer: PeerId,
    /// Kept from a restarting peer until it refreshes the route (RFC 4724).
    pub stale: bool,
}

/// Bit of [`Dest::out`] saying that marks of peer slots beyond the inline ones are in
/// [`Table::out_more`].
const MORE: u64 = 1 << 63;
/// Peer slots whose Adj-RIB-Out mark is kept inline in [`Dest::out`].
pub(crate) const INLINE_SLOTS: u32 = 63;

/// A destination: a prefix, its paths (best first) and its Adj-RIB-Out marks.
#[derive(Debug)]
pub(crate) struct Dest<K> {
    pub key: K,
    pub paths: Small<Path>,
    /// Bit `s` set: a route for this prefix was advertised to the peer in slot `s` and not
    /// withdrawn since. What was advertised is not stored: it is a function of the best path
    /// and the peer's export rules, and a change is simply announced again.
    out: u64,
}

impl<K> Dest<K> {
    /// The best path, if any.
    pub fn best(&self) -> Option<&Path> {
        self.paths.as_slice().first()
    }

    fn unused(&self) -> bool {
        self.paths.is_empty() && self.out == 0
    }
}

/// A prefix type the RIB keeps a table for.
pub(crate) trait Key: Copy + Eq + Hash + std::fmt::Debug {
    /// Whether this is the IPv6 table (tags the change log entries).
    const V6: bool;
    /// As a prefix of either family.
    fn wrap(self) -> Prefix;
    /// This family's table among both.
    fn table(t: &mut Tables) -> &mut Table<Self>;
    /// This family's announcement groups in a batch.
    fn groups(b: &mut OutBatch) -> &mut Vec<(Attrs, Vec<Self>)>;
    /// This family's withdrawals in a batch.
    fn withdrawals(b: &mut OutBatch) -> &mut Vec<Self>;
}

impl Key for Ipv4Prefix {
    const V6: bool = false;
    fn wrap(self) -> Prefix {
        Prefix::V4(self)
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.v4
    }
    fn groups(b: &mut OutBatch) -> &mut Vec<(Attrs, Vec<Self>)> {
        &mut b.v4
    }
    fn withdrawals(b: &mut OutBatch) -> &mut Vec<Self> {
        &mut b.withdraw_v4
    }
}

impl Key for Ipv6Prefix {
    const V6: bool = true;
    fn wrap(self) -> Prefix {
        Prefix::V6(self)
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.v6
    }
    fn groups(b: &mut OutBatch) -> &mut Vec<(Attrs, Vec<Self>)> {
        &mut b.v6
    }
    fn withdrawals(b: &mut OutBatch) -> &mut Vec<Self> {
        &mut b.withdraw_v6
    }
}

/// A reference to a destination in the change log: slab position, with the top bit for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc(u32);

const LOC_V6: u32 = 1 << 31;

impl Loc {
    /// The entry at `pos` of the `K` table.
    pub fn new<K: Key>(pos: u32) -> Loc {
        Loc(if K::V6 { pos | LOC_V6 } else { pos })
    }

    /// Whether it is in the IPv6 table.
    pub fn is_v6(self) -> bool {
        self.0 & LOC_V6 != 0
    }

    /// The slab position.
    pub fn pos(self) -> u32 {
        self.0 & !LOC_V6
    }
}

/// Both families' tables.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub v4: Table<Ipv4Prefix>,
    pub v6: Table<Ipv6Prefix>,
}

/// The table of one family.
#[derive(Debug)]
pub(crate) struct Table<K> {
    slab: Vec<Dest<K>>,
    free: Vec<u32>,
    /// Per destination, the high 32 bits of its key's hash and its slab position: growing
    /// the index rehashes from these alone, and a probe touches the slab only when the
    /// hash matches.
    index: hashbrown::HashTable<u64>,
    /// Adj-RIB-Out marks of peer slots from [`INLINE_SLOTS`] on, by slab position (bit
    /// `s - INLINE_SLOTS` of the bit vector); only used with more established peers than
    /// that.
    out_more: FastMap<u32, Vec<u64>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            slab: Vec::new(),
            free: Vec::new(),
            index: hashbrown::HashTable::new(),
            out_more: FastMap::default(),
        }
    }
}

/// The 32-bit hash of a key, kept in the index.
fn hash_of<K: Hash>(k: &K) -> u32 {
    let mut h = FastHasher::default();
    k.hash(&mut h);
    (h.finish() >> 32) as u32
}

/// The hash hashbrown sees for an index entry or a key hash: its bucket comes from the low
/// bits and its tag from the top 7, so the 32 bits go to both ends.
fn spread(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

fn entry(h: u32, pos: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(pos)
}

fn entry_hash(e: u64) -> u32 {
    (e >> 32) as u32
}

fn entry_pos(e: u64) -> u32 {
    e as u32
}

impl<K: Key> Table<K> {
    /// Number of destinations.
    pub fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    /// One past the highest slab position in use (for walking the table in slab order).
    pub fn end(&self) -> u32 {
        u32::try_from(self.slab.len()).unwrap_or(u32::MAX)
    }

    /// The position of `k`'s destination.
    pub fn find(&self, k: &K) -> Option<u32> {
        self.find_hashed(k, hash_of(k))
    }

    fn find_hashed(&self, k: &K, h: u32) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(spread(h), |&e| {
                entry_hash(e) == h && slab.get(entry_pos(e) as usize).is_some_and(|d| d.key == *k)
            })
            .map(|&e| entry_pos(e))
    }

    /// The position of `k`'s destination, created empty if there is none.
    pub fn find_or_insert(&mut self, k: K) -> u32 {
        let h = hash_of(&k);
        if let Some(i) = self.find_hashed(&k, h) {
            return i;
        }
        let dest = Dest {
            key: k,
            paths: Small::Empty,
            out: 0,
        };
        let pos = match self.free.pop() {
            Some(p) => {
                if let Some(slot) = self.slab.get_mut(p as usize) {
                    *slot = dest;
                }
                p
            }
            None => {
                self.slab.push(dest);
                self.end() - 1
            }
        };
        self.index
            .insert_unique(spread(h), entry(h, pos), |&e| spread(entry_hash(e)));
        pos
    }

    /// The destination at `pos`, if it is in use.
    pub fn get(&self, pos: u32) -> Option<&Dest<K>> {
        self.slab.get(pos as usize).filter(|d| !d.unused())
    }

    /// The destination at `pos` (in use or not: callers that just created it see it empty).
    pub fn get_mut(&mut self, pos: u32) -> Option<&mut Dest<K>> {
        self.slab.get_mut(pos as usize)
    }

    /// Free the destination at `pos` if it has no path and was advertised to nobody.
    pub fn release_if_unused(&mut self, pos: u32) {
        let Some(d) = self.slab.get(pos as usize) else {
            return;
        };
        if !d.unused() {
            return;
        }
        let h = hash_of(&d.key);
        if let Ok(e) = self.index.find_entry(spread(h), |&e| e == entry(h, pos)) {
            e.remove();
            self.free.push(pos);
        }
        if self.free.len() == self.slab.len() {
            // Empty again: give the memory back.
            *self = Table::default();
        }
    }

    /// Every destination in use with its position.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Dest<K>)> {
        self.slab
            .iter()
            .zip(0u32..)
            .filter(|(d, _)| !d.unused())
            .map(|(d, i)| (i, d))
    }

    /// Whether the destination at `pos` was advertised to the peer in `slot`.
    pub fn is_out(&self, pos: u32, slot: u32) -> bool {
        let Some(d) = self.slab.get(pos as usize) else {
            return false;
        };
        if slot < INLINE_SLOTS {
            return d.out & (1 << slot) != 0;
        }
        let bit = (slot - INLINE_SLOTS) as usize;
        d.out & MORE != 0
            && self
                .out_more
                .get(&pos)
                .and_then(|v| v.get(bit / 64))
                .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// Mark (or unmark) the destination at `pos` as advertised to the peer in `slot`.
    pub fn set_out(&mut self, pos: u32, slot: u32, on: bool) {
        let Some(d) = self.slab.get_mut(pos as usize) else {
            return;
        };
        if slot < INLINE_SLOTS {
            if on {
                d.out |= 1 << slot;
            } else {
                d.out &= !(1 << slot);
            }
            return;
        }
        let bit = (slot - INLINE_SLOTS) as usize;
        let words = self.out_more.entry(pos).or_default();
        if words.len() <= bit / 64 {
            words.resize(bit / 64 + 1, 0);
        }
        if let Some(w) = words.get_mut(bit / 64) {
            if on {
                *w |= 1 << (bit % 64);
            } else {
                *w &= !(1 << (bit % 64));
            }
        }
        if words.iter().all(|w| *w == 0) {
            self.out_more.remove(&pos);
            d.out &= !MORE;
        } else {
            d.out |= MORE;
        }
    }

    /// Drop every mark of `slot` (its peer went down).
    pub fn clear_slot(&mut self, slot: u32) {
        if slot < INLINE_SLOTS {
            let mask = !(1u64 << slot);
            self.slab.iter_mut().for_each(|d| d.out &= mask);
        } else {
            let positions: Vec<u32> = self.out_more.keys().copied().collect();
            for p in positions {
                self.set_out(p, slot, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn k(i: u32) -> Ipv4Prefix {
        Ipv4Prefix::new(Ipv4Addr::from(i << 8), 24).unwrap()
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<Small<Path>>(), 16);
        assert_eq!(std::mem::size_of::<Dest<Ipv4Prefix>>(), 32);
    }

    #[test]
    fn insert_find_release_reuse() {
        let mut t: Table<Ipv4Prefix> = Table::default();
        let a = t.find_or_insert(k(1));
        let b = t.find_or_insert(k(2));
        assert_eq!(t.find_or_insert(k(1)), a);
        assert_ne!(a, b);
        // An entry with neither paths nor marks is not in use.
        assert_eq!(t.len(), 2);
        assert!(t.get(a).is_none());
        t.set_out(a, 3, true);
        assert!(t.get(a).is_some());
        assert!(t.is_out(a, 3));
        t.release_if_unused(a);
        assert_eq!(t.find(&k(1)), Some(a), "still advertised: kept");
        t.set_out(a, 3, false);
        t.release_if_unused(a);
        assert_eq!(t.find(&k(1)), None);
        assert_eq!(t.len(), 1);
        let c = t.find_or_insert(k(3));
        assert_eq!(c, a, "freed position reused");
        assert_eq!(t.find(&k(3)), Some(c));
        assert_eq!(t.find(&k(2)), Some(b));
    }

    #[test]
    fn many_peer_slots_spill_out_of_line() {
        let mut t: Table<Ipv4Prefix> = Table::default();
        let a = t.find_or_insert(k(1));
        for s in [0, 62, 63, 64, 200] {
            t.set_out(a, s, true);
        }
        for s in [0, 62, 63, 64, 200] {
            assert!(t.is_out(a, s), "slot {s}");
        }
        assert!(!t.is_out(a, 65));
        t.clear_slot(200);
        t.clear_slot(63);
        assert!(!t.is_out(a, 200));
        assert!(t.is_out(a, 64));
        t.set_out(a, 64, false);
        assert!(t.out_more.is_empty());
        t.clear_slot(0);
        assert!(!t.is_out(a, 0));
        assert!(t.is_out(a, 62));
    }

    #[test]
    fn thousands_of_prefixes_round_trip() {
        let mut t: Table<Ipv4Prefix> = Table::default();
        let pos: Vec<u32> = (0..5000).map(|i| t.find_or_insert(k(i))).collect();
        for (i, p) in pos.iter().enumerate() {
            assert_eq!(t.find(&k(i as u32)), Some(*p));
        }
        for p in &pos {
            t.release_if_unused(*p);
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.end(), 0, "memory given back");
    }

    #[test]
    fn locations_tag_the_family() {
        let l = Loc::new::<Ipv6Prefix>(7);
        assert!(l.is_v6());
        assert_eq!(l.pos(), 7);
        assert!(!Loc::new::<Ipv4Prefix>(7).is_v6());
    }
}
