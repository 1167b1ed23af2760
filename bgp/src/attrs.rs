//! Prefixes, interned route attributes, and a small fast hasher for the RIB tables.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use calyx_proto::{AfiSafi, Ipv4Prefix, Ipv6Prefix, PathAttributes};
use ipnet::IpNet;

/// A unicast prefix of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    /// IPv4.
    V4(Ipv4Prefix),
    /// IPv6.
    V6(Ipv6Prefix),
}

impl Prefix {
    /// As an `IpNet`.
    pub fn to_net(self) -> IpNet {
        match self {
            Prefix::V4(p) => IpNet::V4(p.into()),
            Prefix::V6(p) => IpNet::V6(p.into()),
        }
    }

    /// From an `IpNet` (host bits cleared).
    pub fn from_net(n: IpNet) -> Self {
        match n {
            IpNet::V4(n) => Prefix::V4(n.into()),
            IpNet::V6(n) => Prefix::V6(n.into()),
        }
    }

    /// The family.
    pub fn family(self) -> AfiSafi {
        match self {
            Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
            Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::V4(p) => write!(f, "{p}"),
            Prefix::V6(p) => write!(f, "{p}"),
        }
    }
}

/// The attributes of one route: the path attributes (without NEXT_HOP) and the next hop,
/// whichever family and attribute it came in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    /// Path attributes; `next_hop` is always `None` here.
    pub attrs: PathAttributes,
    /// The next hop (unspecified for locally originated routes: "self").
    pub next_hop: IpAddr,
    /// IPv6 link-local next hop, when one came with a global one (RFC 2545 §3).
    pub link_local: Option<Ipv6Addr>,
}

/// An interned attribute set: one shared copy per distinct set.
pub type Attrs = Arc<RouteAttrs>;

/// The interning table.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Attrs, FastBuild>,
}

impl Interner {
    /// The shared copy of `a`.
    pub fn intern(&mut self, a: RouteAttrs) -> Attrs {
        if let Some(x) = self.set.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.set.insert(x.clone());
        x
    }

    /// Forget sets nobody else holds.
    pub fn collect(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
    }

    /// Number of distinct sets held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// FxHash-style multiplicative hasher with a final folded multiply: the RIB keys are small
/// integers, hashing them with SipHash costs more than the table operation itself. Not
/// DoS-resistant: prefixes come from peers, but a peer that wants to slow the table down
/// can simply send more of them, and max-prefix limits bound that.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high half of a 128-bit product into the low half: the multiply-rotate
        // rounds above leave the low bits depending only on the low bits of the input, and
        // prefixes have their low bits zero; hashbrown picks buckets by the low bits.
        let m = u128::from(self.0) * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        (m as u64) ^ ((m >> 64) as u64)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;

/// Zero, one (inline) or many values: most prefixes have one path, which then costs no extra
/// allocation.
#[derive(Debug, Clone, Default)]
pub enum Small<T> {
    /// None.
    #[default]
    Empty,
    /// One, inline.
    One(T),
    /// Several (boxed so that the enum is no bigger than one value plus a niche).
    Many(Box<Vec<T>>),
}

impl<T> Small<T> {
    /// As a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Small::Empty => &[],
            Small::One(t) => std::slice::from_ref(t),
            Small::Many(v) => v.as_slice(),
        }
    }

    /// As a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Small::Empty => &mut [],
            Small::One(t) => std::slice::from_mut(t),
            Small::Many(v) => v.as_mut_slice(),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append.
    pub fn push(&mut self, t: T) {
        if let Small::Empty = self {
            *self = Small::One(t);
            return;
        }
        match std::mem::take(self) {
            Small::Empty => *self = Small::One(t),
            Small::One(a) => *self = Small::Many(Box::new(vec![a, t])),
            Small::Many(mut v) => {
                v.push(t);
                *self = Small::Many(v);
            }
        }
    }

    /// Remove and return the value at `i`, keeping the order of the others.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        match std::mem::take(self) {
            Small::Empty => None,
            Small::One(a) => {
                if i == 0 {
                    Some(a)
                } else {
                    *self = Small::One(a);
                    None
                }
            }
            Small::Many(mut v) => {
                let r = (i < v.len()).then(|| v.remove(i));
                *self = match v.len() {
                    0 => Small::Empty,
                    1 => v.pop().map(Small::One).unwrap_or_default(),
                    _ => Small::Many(v),
                };
                r
            }
        }
    }

    /// Keep only the values for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        let mut i = 0;
        while i < self.len() {
            if self.as_slice().get(i).is_some_and(&mut f) {
                i += 1;
            } else {
                self.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vec_ops() {
        let mut s: Small<u32> = Small::Empty;
        s.push(1);
        s.push(2);
        s.push(3);
        assert_eq!(s.as_slice(), &[1, 2, 3]);
        assert_eq!(s.remove(1), Some(2));
        s.retain(|x| *x != 1);
        assert_eq!(s.as_slice(), &[3]);
        assert!(matches!(s, Small::One(3)));
        assert_eq!(s.remove(5), None);
        assert_eq!(s.remove(0), Some(3));
        assert!(s.is_empty());
    }

    #[test]
    fn interning_shares_one_copy() {
        let mut i = Interner::default();
        let a = RouteAttrs {
            attrs: PathAttributes::default(),
            next_hop: IpAddr::from([10, 0, 0, 1]),
            link_local: None,
        };
        let x = i.intern(a.clone());
        let y = i.intern(a);
        assert!(Arc::ptr_eq(&x, &y));
        drop((x, y));
        i.collect();
        assert!(i.is_empty());
    }

    #[test]
    fn prefixes_spread_over_the_low_bits() {
        // /24s have their low 8 bits zero; hashbrown indexes buckets with the low bits.
        let mut low: HashSet<u64> = HashSet::new();
        for i in 0..4096u32 {
            let p = calyx_proto::Ipv4Prefix::new((i << 8).into(), 24);
            let mut h = FastHasher::default();
            std::hash::Hash::hash(&p, &mut h);
            low.insert(h.finish() & 0xfff);
        }
        assert!(low.len() > 2000, "{} distinct bucket indexes", low.len());
    }

    #[test]
    fn sizes_stay_small() {
        // The Many variant fits around the niche of the inline value.
        assert_eq!(std::mem::size_of::<Small<(Attrs, u32, bool)>>(), 16);
    }
}
