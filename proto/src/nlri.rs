//! Network Layer Reachability Information: prefixes as (length, prefix) pairs (RFC 4271 §4.3,
//! RFC 4760 §5), optionally preceded by a path identifier (RFC 7911 §3).
//!
//! The hot decode path never allocates per prefix: [`NlriIter`] walks the bytes lazily, and
//! [`decode_into`] fills a caller-provided (reusable) vector.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

/// A path identifier of ADD-PATH (RFC 7911 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u32);

/// A syntax error inside an NLRI field (RFC 7606 §5.3): prefix longer than the address, or a
/// length running past the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlriError;

/// An address prefix that can be carried in NLRI.
pub trait Prefix: Copy + Eq + Hash + fmt::Debug {
    /// Maximum prefix length in bits.
    const MAX_LEN: u8;
    /// The prefix length in bits.
    fn prefix_len(&self) -> u8;
    /// Build from a length and the `(len + 7) / 8` significant octets; bits beyond `len` are
    /// cleared (RFC 4271 §4.3: trailing bits are irrelevant).
    fn from_wire(len: u8, octets: &[u8]) -> Self;
    /// Append the length octet and the significant octets.
    fn put_wire(&self, out: &mut BytesMut);
    /// Octets this prefix takes on the wire (without a path identifier).
    fn wire_len(&self) -> usize {
        1 + usize::from(self.prefix_len()).div_ceil(8)
    }
}

/// A compact IPv4 prefix: address with host bits cleared, and length (RFC 4271 §4.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

impl Ipv4Prefix {
    /// A prefix; `None` if `len > 32`. Host bits are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Ipv4Prefix {
            addr: u32::from(addr) & mask32(len),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The network address as an integer.
    pub fn addr_u32(&self) -> u32 {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the default route 0.0.0.0/0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[inline]
fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[inline]
fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl Prefix for Ipv4Prefix {
    const MAX_LEN: u8 = 32;
    fn prefix_len(&self) -> u8 {
        self.len
    }
    #[inline]
    fn from_wire(len: u8, octets: &[u8]) -> Self {
        let mut a = [0u8; 4];
        for (d, s) in a.iter_mut().zip(octets) {
            *d = *s;
        }
        Ipv4Prefix {
            addr: u32::from_be_bytes(a) & mask32(len),
            len,
        }
    }
    #[inline]
    fn put_wire(&self, out: &mut BytesMut) {
        let n = usize::from(self.len).div_ceil(8);
        out.put_u8(self.len);
        out.put_slice(self.addr.to_be_bytes().get(..n).unwrap_or_default());
    }
}

impl fmt::Debug for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<Ipv4Net> for Ipv4Prefix {
    fn from(n: Ipv4Net) -> Self {
        Ipv4Prefix {
            addr: u32::from(n.network()),
            len: n.prefix_len(),
        }
    }
}

impl From<Ipv4Prefix> for Ipv4Net {
    fn from(p: Ipv4Prefix) -> Self {
        Ipv4Net::new(p.addr(), p.len).unwrap_or_default()
    }
}

/// A compact IPv6 prefix: address with host bits cleared, and length (RFC 4760 §5, RFC 2545).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ipv6Prefix {
    addr: u128,
    len: u8,
}

impl Ipv6Prefix {
    /// A prefix; `None` if `len > 128`. Host bits are cleared.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128).then(|| Ipv6Prefix {
            addr: u128::from(addr) & mask128(len),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the default route ::/0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Prefix for Ipv6Prefix {
    const MAX_LEN: u8 = 128;
    fn prefix_len(&self) -> u8 {
        self.len
    }
    #[inline]
    fn from_wire(len: u8, octets: &[u8]) -> Self {
        let mut a = [0u8; 16];
        for (d, s) in a.iter_mut().zip(octets) {
            *d = *s;
        }
        Ipv6Prefix {
            addr: u128::from_be_bytes(a) & mask128(len),
            len,
        }
    }
    #[inline]
    fn put_wire(&self, out: &mut BytesMut) {
        let n = usize::from(self.len).div_ceil(8);
        out.put_u8(self.len);
        out.put_slice(self.addr.to_be_bytes().get(..n).unwrap_or_default());
    }
}

impl fmt::Debug for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<Ipv6Net> for Ipv6Prefix {
    fn from(n: Ipv6Net) -> Self {
        Ipv6Prefix {
            addr: u128::from(n.network()),
            len: n.prefix_len(),
        }
    }
}

impl From<Ipv6Prefix> for Ipv6Net {
    fn from(p: Ipv6Prefix) -> Self {
        Ipv6Net::new(p.addr(), p.len).unwrap_or_default()
    }
}

/// One NLRI entry: a prefix and, with ADD-PATH, its path identifier (RFC 7911 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri<P> {
    /// Path identifier, present exactly when ADD-PATH is in use for this family and direction.
    pub path_id: Option<PathId>,
    /// The prefix.
    pub prefix: P,
}

impl<P: Prefix> Nlri<P> {
    /// An entry without path identifier.
    pub fn new(prefix: P) -> Self {
        Nlri {
            path_id: None,
            prefix,
        }
    }

    /// Octets on the wire.
    pub fn wire_len(&self) -> usize {
        self.prefix.wire_len() + if self.path_id.is_some() { 4 } else { 0 }
    }

    /// Append to `out`; the path identifier is written when `add_path` is set (0 if absent).
    #[inline]
    pub fn encode(&self, add_path: bool, out: &mut BytesMut) {
        if add_path {
            out.put_u32(self.path_id.map_or(0, |p| p.0));
        }
        self.prefix.put_wire(out);
    }
}

/// A lazy iterator over an NLRI field; stops after the first error.
#[derive(Debug, Clone)]
pub struct NlriIter<'a, P> {
    rest: &'a [u8],
    add_path: bool,
    _p: PhantomData<P>,
}

impl<'a, P: Prefix> NlriIter<'a, P> {
    /// Iterate over `bytes`, which hold path identifiers if `add_path` (RFC 7911 §3).
    pub fn new(bytes: &'a [u8], add_path: bool) -> Self {
        NlriIter {
            rest: bytes,
            add_path,
            _p: PhantomData,
        }
    }
}

impl<P: Prefix> Iterator for NlriIter<'_, P> {
    type Item = Result<Nlri<P>, NlriError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = decode_one::<P>(self.rest, self.add_path);
        match item {
            Ok((rest, n)) => {
                self.rest = rest;
                Some(Ok(n))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[inline]
fn decode_one<P: Prefix>(mut i: &[u8], add_path: bool) -> Result<(&[u8], Nlri<P>), NlriError> {
    let mut path_id = None;
    if add_path {
        let (id, rest) = i.split_first_chunk::<4>().ok_or(NlriError)?;
        path_id = Some(PathId(u32::from_be_bytes(*id)));
        i = rest;
    }
    let (&len, rest) = i.split_first().ok_or(NlriError)?;
    if len > P::MAX_LEN {
        return Err(NlriError);
    }
    let (octets, rest) = rest
        .split_at_checked(usize::from(len).div_ceil(8))
        .ok_or(NlriError)?;
    Ok((
        rest,
        Nlri {
            path_id,
            prefix: P::from_wire(len, octets),
        },
    ))
}

/// Decode a whole NLRI field, appending to `out` (which the caller may reuse across messages).
pub fn decode_into<P: Prefix>(
    bytes: &[u8],
    add_path: bool,
    out: &mut Vec<Nlri<P>>,
) -> Result<(), NlriError> {
    // A prefix takes at least one octet, so this never reserves more than the input justifies.
    out.reserve(bytes.len() / if add_path { 8 } else { 4 });
    let mut i = bytes;
    while !i.is_empty() {
        let (rest, n) = decode_one::<P>(i, add_path)?;
        out.push(n);
        i = rest;
    }
    Ok(())
}

/// Append every entry of `nlri`.
pub fn encode_all<P: Prefix>(nlri: &[Nlri<P>], add_path: bool, out: &mut BytesMut) {
    for n in nlri {
        n.encode(add_path, out);
    }
}

/// Octets `nlri` take on the wire.
pub fn wire_len_all<P: Prefix>(nlri: &[Nlri<P>], add_path: bool) -> usize {
    nlri.iter()
        .map(|n| n.prefix.wire_len() + if add_path { 4 } else { 0 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_lengths_checked() {
        let mut v: Vec<Nlri<Ipv4Prefix>> = Vec::new();
        decode_into(&[20, 10, 1, 0xff, 0, 0], false, &mut v).unwrap();
        assert_eq!(
            v[0].prefix,
            Ipv4Prefix::new(Ipv4Addr::new(10, 1, 0xf0, 0), 20).unwrap()
        );
        assert_eq!(v[1].prefix.len(), 0);
        assert!(decode_into(&[33, 1, 2, 3, 4, 5], false, &mut v).is_err());
        assert!(decode_into(&[24, 1, 2], false, &mut v).is_err());
        assert!(decode_into(&[0, 0, 0], true, &mut v).is_err());
        let mut b = BytesMut::new();
        Nlri::new(Ipv4Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 23).unwrap()).encode(false, &mut b);
        assert_eq!(&b[..], &[23, 10, 1, 2]);
    }

    #[test]
    fn ipnet_conversions() {
        let n: Ipv6Net = "2001:db8::/32".parse().unwrap();
        assert_eq!(Ipv6Net::from(Ipv6Prefix::from(n)), n);
        let n: Ipv4Net = "192.0.2.0/24".parse().unwrap();
        assert_eq!(Ipv4Net::from(Ipv4Prefix::from(n)), n);
    }
}
