//! A map from prefix to a small value, keyed compactly per family: an IPv4 prefix as its
//! address and length (8 bytes) instead of an `IpNet` (18 bytes, padded to 24 next to a
//! 4-byte value). The resolver holds one entry per BGP best route: a million at a ToR.

use std::hash::Hash;
use std::net::Ipv4Addr;

use calyx_bgp::attrs::FastMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V4Key {
    addr: u32,
    len: u8,
}

impl V4Key {
    fn new(n: &Ipv4Net) -> V4Key {
        V4Key {
            addr: u32::from(n.addr()),
            len: n.prefix_len(),
        }
    }

    fn net(self) -> Option<IpNet> {
        Ipv4Net::new(Ipv4Addr::from(self.addr), self.len)
            .ok()
            .map(IpNet::V4)
    }
}

/// Prefix -> `V` (small, `Copy`), both families.
#[derive(Debug)]
pub(crate) struct PrefixMap<V> {
    v4: FastMap<V4Key, V>,
    v6: FastMap<Ipv6Net, V>,
}

// Not derived: that would ask `V: Default`.
impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            v4: FastMap::default(),
            v6: FastMap::default(),
        }
    }
}

impl<V: Copy> PrefixMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub(crate) fn get(&self, p: &IpNet) -> Option<V> {
        match p {
            IpNet::V4(n) => self.v4.get(&V4Key::new(n)).copied(),
            IpNet::V6(n) => self.v6.get(n).copied(),
        }
    }

    pub(crate) fn insert(&mut self, p: IpNet, v: V) -> Option<V> {
        match p {
            IpNet::V4(n) => self.v4.insert(V4Key::new(&n), v),
            IpNet::V6(n) => self.v6.insert(n, v),
        }
    }

    pub(crate) fn remove(&mut self, p: &IpNet) -> Option<V> {
        match p {
            IpNet::V4(n) => self.v4.remove(&V4Key::new(n)),
            IpNet::V6(n) => self.v6.remove(n),
        }
    }

    /// Every entry (in no particular order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (IpNet, V)> + '_ {
        let v4 = self.v4.iter().filter_map(|(k, v)| k.net().map(|n| (n, *v)));
        v4.chain(self.v6.iter().map(|(n, v)| (IpNet::V6(*n), *v)))
    }

    /// Empties the map, returning its prefixes.
    pub(crate) fn take_keys(&mut self) -> Vec<IpNet> {
        let keys: Vec<IpNet> = self.iter().map(|(n, _)| n).collect();
        self.v4 = FastMap::default();
        self.v6 = FastMap::default();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_exactly() {
        let mut m: PrefixMap<u32> = PrefixMap::default();
        let a: IpNet = "10.65.1.0/26".parse().unwrap();
        let b: IpNet = "10.65.1.0/24".parse().unwrap();
        let c: IpNet = "fd00:10::40/122".parse().unwrap();
        assert_eq!(m.insert(a, 1), None);
        assert_eq!(m.insert(b, 2), None);
        assert_eq!(m.insert(c, 3), None);
        assert_eq!(m.insert(a, 4), Some(1));
        assert_eq!(
            (m.get(&a), m.get(&b), m.get(&c)),
            (Some(4), Some(2), Some(3))
        );
        assert_eq!(m.len(), 3);
        let mut all: Vec<(IpNet, u32)> = m.iter().collect();
        all.sort();
        assert_eq!(all, vec![(b, 2), (a, 4), (c, 3)]);
        assert_eq!(m.remove(&b), Some(2));
        assert_eq!(m.get(&b), None);
        let mut keys = m.take_keys();
        keys.sort();
        assert_eq!(keys, vec![a, c]);
        assert_eq!(m.len(), 0);
        assert!(std::mem::size_of::<(V4Key, u32)>() <= 12);
    }
}
