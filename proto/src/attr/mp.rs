//! MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760 §3, §4) for IPv4 and IPv6 unicast, with the
//! IPv6 next hop of 16 or 32 octets (RFC 2545 §3) and ADD-PATH NLRI (RFC 7911 §3).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use crate::context::ParseContext;
use crate::error::AttrErrorKind;
use crate::nlri::{self, Ipv4Prefix, Ipv6Prefix, Nlri};
use crate::types::{Afi, AfiSafi, Safi};
use crate::wire;

/// The next hop of MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    /// An IPv4 next hop (4 octets).
    V4(Ipv4Addr),
    /// An IPv6 next hop: global address, and the link-local one when 32 octets were sent
    /// (RFC 2545 §3). Also accepted for IPv4 NLRI (RFC 8950 §3).
    V6 {
        /// The global (or only) address.
        global: Ipv6Addr,
        /// The link-local address, if present.
        link_local: Option<Ipv6Addr>,
    },
    /// The next hop of a family this codec does not interpret, as received.
    Other(Vec<u8>),
}

impl MpNextHop {
    fn wire_len(&self) -> usize {
        match self {
            MpNextHop::V4(_) => 4,
            MpNextHop::V6 {
                link_local: None, ..
            } => 16,
            MpNextHop::V6 {
                link_local: Some(_),
                ..
            } => 32,
            MpNextHop::Other(b) => b.len(),
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            MpNextHop::V4(a) => out.put_slice(&a.octets()),
            MpNextHop::V6 { global, link_local } => {
                out.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.put_slice(&ll.octets());
                }
            }
            MpNextHop::Other(b) => out.put_slice(b),
        }
    }

    fn decode(family: AfiSafi, b: &[u8]) -> Result<Self, AttrErrorKind> {
        let v6 = |b: &[u8]| -> Result<MpNextHop, AttrErrorKind> {
            match b.len() {
                16 => Ok(MpNextHop::V6 {
                    global: ipv6(b),
                    link_local: None,
                }),
                32 => Ok(MpNextHop::V6 {
                    global: ipv6(b.get(..16).unwrap_or_default()),
                    link_local: Some(ipv6(b.get(16..).unwrap_or_default())),
                }),
                _ => Err(AttrErrorKind::Value),
            }
        };
        match (family.afi, family.safi) {
            (Afi::Ipv4, Safi::Unicast) => match b {
                [a, b2, c, d] => Ok(MpNextHop::V4(Ipv4Addr::new(*a, *b2, *c, *d))),
                _ => v6(b),
            },
            (Afi::Ipv6, Safi::Unicast) => v6(b),
            _ => Ok(MpNextHop::Other(b.to_vec())),
        }
    }
}

fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    Ipv6Addr::from(a)
}

/// The NLRI carried by MP_REACH_NLRI or MP_UNREACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpNlri {
    /// IPv4 unicast prefixes.
    Ipv4(Vec<Nlri<Ipv4Prefix>>),
    /// IPv6 unicast prefixes.
    Ipv6(Vec<Nlri<Ipv6Prefix>>),
    /// Another family, left undecoded.
    Other {
        /// The family as received.
        family: AfiSafi,
        /// The NLRI octets.
        bytes: Vec<u8>,
    },
}

impl MpNlri {
    /// The AFI/SAFI.
    pub fn family(&self) -> AfiSafi {
        match self {
            MpNlri::Ipv4(_) => AfiSafi::IPV4_UNICAST,
            MpNlri::Ipv6(_) => AfiSafi::IPV6_UNICAST,
            MpNlri::Other { family, .. } => *family,
        }
    }

    /// An empty list of the given family.
    pub fn empty(family: AfiSafi) -> Self {
        if family == AfiSafi::IPV4_UNICAST {
            MpNlri::Ipv4(Vec::new())
        } else if family == AfiSafi::IPV6_UNICAST {
            MpNlri::Ipv6(Vec::new())
        } else {
            MpNlri::Other {
                family,
                bytes: Vec::new(),
            }
        }
    }

    /// True if no prefix is carried.
    pub fn is_empty(&self) -> bool {
        match self {
            MpNlri::Ipv4(v) => v.is_empty(),
            MpNlri::Ipv6(v) => v.is_empty(),
            MpNlri::Other { bytes, .. } => bytes.is_empty(),
        }
    }

    /// Number of prefixes (0 for undecoded families).
    pub fn len(&self) -> usize {
        match self {
            MpNlri::Ipv4(v) => v.len(),
            MpNlri::Ipv6(v) => v.len(),
            MpNlri::Other { .. } => 0,
        }
    }

    fn decode(family: AfiSafi, b: &[u8], ctx: &ParseContext) -> Result<Self, AttrErrorKind> {
        let add_path = ctx.add_path(family);
        match (family.afi, family.safi) {
            (Afi::Ipv4, Safi::Unicast) => {
                let mut v = Vec::new();
                nlri::decode_into(b, add_path, &mut v)
                    .map_err(|_| AttrErrorKind::InvalidNetwork)?;
                Ok(MpNlri::Ipv4(v))
            }
            (Afi::Ipv6, Safi::Unicast) => {
                let mut v = Vec::new();
                nlri::decode_into(b, add_path, &mut v)
                    .map_err(|_| AttrErrorKind::InvalidNetwork)?;
                Ok(MpNlri::Ipv6(v))
            }
            _ => Ok(MpNlri::Other {
                family,
                bytes: b.to_vec(),
            }),
        }
    }

    fn wire_len(&self, ctx: &ParseContext) -> usize {
        let ap = ctx.add_path(self.family());
        match self {
            MpNlri::Ipv4(v) => nlri::wire_len_all(v, ap),
            MpNlri::Ipv6(v) => nlri::wire_len_all(v, ap),
            MpNlri::Other { bytes, .. } => bytes.len(),
        }
    }

    fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) {
        let ap = ctx.add_path(self.family());
        match self {
            MpNlri::Ipv4(v) => nlri::encode_all(v, ap, out),
            MpNlri::Ipv6(v) => nlri::encode_all(v, ap, out),
            MpNlri::Other { bytes, .. } => out.put_slice(bytes),
        }
    }
}

/// MP_REACH_NLRI: next hop and reachable prefixes of one family (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The next hop.
    pub next_hop: MpNextHop,
    /// The prefixes (the family is implied by the variant).
    pub nlri: MpNlri,
}

impl MpReach {
    /// Decode the attribute value (RFC 4760 §3). Errors are "session reset" class
    /// (RFC 7606 §7.11).
    pub fn decode(b: &[u8], ctx: &ParseContext) -> Result<Self, AttrErrorKind> {
        let v = AttrErrorKind::Value;
        let (i, afi) = wire::u16_(b).map_err(|_| v)?;
        let (i, safi) = wire::u8_(i).map_err(|_| v)?;
        let (i, nh_len) = wire::u8_(i).map_err(|_| v)?;
        let (i, nh) = wire::take(i, usize::from(nh_len)).map_err(|_| v)?;
        let (i, _reserved) = wire::u8_(i).map_err(|_| v)?;
        let family = AfiSafi::new(afi, safi);
        let next_hop = MpNextHop::decode(family, nh)?;
        let nlri = MpNlri::decode(family, i, ctx)?;
        Ok(MpReach { next_hop, nlri })
    }

    /// Octets of the value.
    pub fn wire_len(&self, ctx: &ParseContext) -> usize {
        5 + self.next_hop.wire_len() + self.nlri.wire_len(ctx)
    }

    /// Append the value.
    pub fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) {
        let f = self.nlri.family();
        out.put_u16(f.afi.into());
        out.put_u8(f.safi.into());
        out.put_u8(u8::try_from(self.next_hop.wire_len()).unwrap_or(u8::MAX));
        self.next_hop.encode(out);
        out.put_u8(0);
        self.nlri.encode(ctx, out);
    }
}

/// MP_UNREACH_NLRI: withdrawn prefixes of one family (RFC 4760 §4). Empty, it is the
/// End-of-RIB marker of that family (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The withdrawn prefixes.
    pub nlri: MpNlri,
}

impl MpUnreach {
    /// Decode the attribute value (RFC 4760 §4).
    pub fn decode(b: &[u8], ctx: &ParseContext) -> Result<Self, AttrErrorKind> {
        let v = AttrErrorKind::Value;
        let (i, afi) = wire::u16_(b).map_err(|_| v)?;
        let (i, safi) = wire::u8_(i).map_err(|_| v)?;
        Ok(MpUnreach {
            nlri: MpNlri::decode(AfiSafi::new(afi, safi), i, ctx)?,
        })
    }

    /// Octets of the value.
    pub fn wire_len(&self, ctx: &ParseContext) -> usize {
        3 + self.nlri.wire_len(ctx)
    }

    /// Append the value.
    pub fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) {
        let f = self.nlri.family();
        out.put_u16(f.afi.into());
        out.put_u8(f.safi.into());
        self.nlri.encode(ctx, out);
    }
}
