//! Path attributes (RFC 4271 §4.3, §5) and their RFC 7606 error handling.
//!
//! [`PathAttributes`] is the attribute set the BGP speaker interns: it derives `Hash`/`Eq` and
//! holds every attribute except MP_REACH_NLRI / MP_UNREACH_NLRI, which carry prefixes and live
//! on the [`crate::UpdateMessage`].

mod as_path;
mod community;
pub mod mp;

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

pub use as_path::{AsPath, AsSegment, AsSegmentType};
pub use community::{Community, ExtendedCommunity, LargeCommunity};
pub use mp::{MpNextHop, MpNlri, MpReach, MpUnreach};

use crate::context::ParseContext;
use crate::error::{
    action_for, reset_for, Action, AttrError, AttrErrorKind, DecodeError, EncodeError,
};
use crate::types::Asn;

/// Path attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// ORIGIN (RFC 4271 §5.1.1).
    pub const ORIGIN: u8 = 1;
    /// AS_PATH (RFC 4271 §5.1.2).
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP (RFC 4271 §5.1.3).
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF (RFC 4271 §5.1.5).
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE (RFC 4271 §5.1.6).
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (RFC 4271 §5.1.7).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456 §8).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456 §8).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760 §3).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760 §4).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// EXTENDED_COMMUNITIES (RFC 4360 §2).
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    /// AS4_PATH (RFC 6793 §3).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793 §3).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092 §3).
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive (1) or non-transitive (0).
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: some router on the path did not recognise this optional transitive attribute.
    pub const PARTIAL: u8 = 0x20;
    /// The length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

use flags::{EXTENDED_LENGTH, OPTIONAL, PARTIAL, TRANSITIVE};
use type_code as tc;

/// The Optional/Transitive bits a recognised attribute must carry (RFC 4271 §5, RFC 4760,
/// RFC 1997, RFC 4360, RFC 4456, RFC 6793, RFC 8092); `None` for unrecognised types.
pub fn expected_flags(code: u8) -> Option<u8> {
    Some(match code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            TRANSITIVE
        }
        tc::MULTI_EXIT_DISC
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => OPTIONAL,
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::EXTENDED_COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITY => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// 0: IGP.
    Igp,
    /// 1: EGP.
    Egp,
    /// 2: INCOMPLETE.
    Incomplete,
}

impl Origin {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }
    }
}

/// AGGREGATOR / AS4_AGGREGATOR value (RFC 4271 §5.1.7, RFC 6793 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aggregator {
    /// The AS that formed the aggregate.
    pub asn: Asn,
    /// The BGP identifier of the aggregating speaker.
    pub address: Ipv4Addr,
}

/// An optional transitive attribute this codec does not recognise, kept to be passed on with the
/// Partial bit set (RFC 4271 §5, §9.1.2 ... "Partial").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as they will be sent: Optional, Transitive and Partial (the Extended Length bit is
    /// chosen when encoding).
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// The value, as received.
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE except MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4271 §5).
///
/// Cheap to hash and compare, so that a speaker can intern one shared copy per distinct set.
/// AS numbers are always 4-octet values; on a 2-octet session, [`PathAttributes::as_path`]
/// holds the 2-octet path as received (with AS_TRANS) and [`PathAttributes::as4_path`] the
/// AS4_PATH; [`PathAttributes::merge_as4`] reconstructs the true path (RFC 6793 §4.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttributes {
    /// ORIGIN (RFC 4271 §5.1.1).
    pub origin: Option<Origin>,
    /// AS_PATH (RFC 4271 §5.1.2); `Some(empty)` for a route originated inside the AS.
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI of the UPDATE's NLRI field (RFC 4271 §5.1.3).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    pub med: Option<u32>,
    /// LOCAL_PREF (RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE present (RFC 4271 §5.1.6).
    pub atomic_aggregate: bool,
    /// AGGREGATOR (RFC 4271 §5.1.7).
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES (RFC 1997); empty when absent.
    pub communities: Vec<Community>,
    /// ORIGINATOR_ID (RFC 4456 §8).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456 §8); empty when absent.
    pub cluster_list: Vec<Ipv4Addr>,
    /// EXTENDED_COMMUNITIES (RFC 4360); empty when absent.
    pub extended_communities: Vec<ExtendedCommunity>,
    /// AS4_PATH as received on a 2-octet session (RFC 6793 §3). When encoding for a 2-octet
    /// session and this is `None`, it is derived from `as_path` if needed.
    pub as4_path: Option<AsPath>,
    /// AS4_AGGREGATOR as received on a 2-octet session (RFC 6793 §3); derived like `as4_path`.
    pub as4_aggregator: Option<Aggregator>,
    /// LARGE_COMMUNITY (RFC 8092); empty when absent.
    pub large_communities: Vec<LargeCommunity>,
    /// Unrecognised optional transitive attributes, in the order received (RFC 4271 §5).
    pub unknown: Vec<RawAttribute>,
}

impl PathAttributes {
    /// Reconstruct the 4-octet view after decoding from a 2-octet session (RFC 6793 §4.2.3):
    /// AS_PATH and AS4_PATH are merged, AS4_AGGREGATOR replaces an AGGREGATOR of AS_TRANS,
    /// and both AS4 attributes are removed. If the AGGREGATOR holds an AS other than AS_TRANS,
    /// AS4_AGGREGATOR and AS4_PATH are ignored.
    pub fn merge_as4(&mut self) {
        let as4_path = self.as4_path.take();
        let as4_aggr = self.as4_aggregator.take();
        if let Some(aggr) = &mut self.aggregator {
            if aggr.asn != Asn::TRANS {
                return;
            }
            if let Some(a4) = as4_aggr {
                *aggr = a4;
            }
        }
        if let (Some(path), Some(p4)) = (&self.as_path, &as4_path) {
            self.as_path = Some(path.merge_as4(p4));
        }
    }

    /// True if the set carries the well-known community NO_EXPORT (RFC 1997).
    pub fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }
}

/// Wire order and flags of the attributes of a decoded UPDATE, so that it re-encodes to the
/// same octets (attribute order and the Extended Length / Partial bits are the sender's choice,
/// RFC 4271 §4.3). Not part of the attribute set's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrLayout {
    entries: [(u8, u8); AttrLayout::CAP],
    len: u8,
}

impl AttrLayout {
    const CAP: usize = 24;

    fn push(&mut self, code: u8, flags: u8) {
        if let Some(slot) = self.entries.get_mut(usize::from(self.len)) {
            *slot = (code, flags);
            self.len += 1;
        }
    }

    /// The recorded (type code, flags) pairs in wire order (at most 24).
    pub fn entries(&self) -> &[(u8, u8)] {
        self.entries
            .get(..usize::from(self.len))
            .unwrap_or_default()
    }
}

/// Everything decoded from the path attribute field of an UPDATE.
#[derive(Debug, Default)]
pub(crate) struct AttrBlock {
    pub attrs: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub errors: Vec<AttrError>,
    pub layout: AttrLayout,
    pub overrun: bool,
    pub seen: [u64; 4],
}

impl AttrBlock {
    fn seen(&self, code: u8) -> bool {
        let (w, b) = (usize::from(code / 64), code % 64);
        self.seen.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    fn mark(&mut self, code: u8) {
        let (w, b) = (usize::from(code / 64), code % 64);
        if let Some(x) = self.seen.get_mut(w) {
            *x |= 1 << b;
        }
    }

    pub(crate) fn was_seen(&self, code: u8) -> bool {
        self.seen(code)
    }

    /// Record an error; a session reset aborts decoding.
    pub(crate) fn report(
        &mut self,
        code: u8,
        kind: AttrErrorKind,
        raw: &[u8],
    ) -> Result<(), DecodeError> {
        let action = action_for(code, kind);
        if action == Action::SessionReset {
            return Err(reset_for(code, kind, raw));
        }
        self.errors.push(AttrError {
            type_code: code,
            kind,
            action,
        });
        Ok(())
    }
}

/// Split one attribute off the front of `i`: (flags, code, value, raw attribute, rest).
#[allow(clippy::type_complexity)]
fn split_attr(i: &[u8]) -> Option<(u8, u8, &[u8], &[u8], &[u8])> {
    let (flags, code, len, hdr) = match *i {
        [f, c, l0, l1, ..] if f & EXTENDED_LENGTH != 0 => {
            (f, c, usize::from(u16::from_be_bytes([l0, l1])), 4)
        }
        [f, c, l, ..] if f & EXTENDED_LENGTH == 0 => (f, c, usize::from(l), 3),
        _ => return None,
    };
    let (raw, rest) = i.split_at_checked(hdr + len)?;
    Some((flags, code, raw.get(hdr..)?, raw, rest))
}

/// Decode the path attribute field (RFC 4271 §4.3) into `blk`, applying RFC 7606.
pub(crate) fn decode_attributes(
    mut i: &[u8],
    ctx: &ParseContext,
    blk: &mut AttrBlock,
) -> Result<(), DecodeError> {
    while !i.is_empty() {
        let Some((flags, code, value, raw, rest)) = split_attr(i) else {
            // RFC 7606 §4: the attribute overruns the field; the rest cannot be parsed.
            blk.overrun = true;
            blk.report(0, AttrErrorKind::Overrun, &[])?;
            break;
        };
        i = rest;
        if blk.seen(code) {
            blk.report(code, AttrErrorKind::Duplicate, raw)?;
            continue;
        }
        blk.mark(code);
        blk.layout.push(code, flags);
        if let Err(kind) = decode_one(flags, code, value, ctx, blk) {
            blk.report(code, kind, raw)?;
        }
    }
    Ok(())
}

fn u32_of(v: &[u8]) -> Result<u32, AttrErrorKind> {
    match *v {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(AttrErrorKind::Length),
    }
}

fn aggregator_of(v: &[u8], four_octet: bool) -> Result<Aggregator, AttrErrorKind> {
    match (four_octet, v) {
        (true, [a0, a1, a2, a3, b0, b1, b2, b3]) => Ok(Aggregator {
            asn: Asn(u32::from_be_bytes([*a0, *a1, *a2, *a3])),
            address: Ipv4Addr::new(*b0, *b1, *b2, *b3),
        }),
        (false, [a0, a1, b0, b1, b2, b3]) => Ok(Aggregator {
            asn: Asn(u32::from(u16::from_be_bytes([*a0, *a1]))),
            address: Ipv4Addr::new(*b0, *b1, *b2, *b3),
        }),
        _ => Err(AttrErrorKind::Length),
    }
}

fn multiple_of(v: &[u8], n: usize) -> Result<(), AttrErrorKind> {
    if v.is_empty() || v.len() % n != 0 {
        Err(AttrErrorKind::Length)
    } else {
        Ok(())
    }
}

fn decode_one(
    flags: u8,
    code: u8,
    v: &[u8],
    ctx: &ParseContext,
    blk: &mut AttrBlock,
) -> Result<(), AttrErrorKind> {
    let Some(expected) = expected_flags(code) else {
        if flags & OPTIONAL == 0 {
            return Err(AttrErrorKind::UnrecognizedWellKnown);
        }
        if flags & TRANSITIVE != 0 {
            blk.attrs.unknown.push(RawAttribute {
                flags: (flags & (OPTIONAL | TRANSITIVE)) | PARTIAL,
                type_code: code,
                value: v.to_vec(),
            });
        }
        // Unrecognised optional non-transitive attributes are quietly ignored (RFC 4271 §5).
        return Ok(());
    };
    if flags & (OPTIONAL | TRANSITIVE) != expected {
        return Err(AttrErrorKind::Flags);
    }
    let a = &mut blk.attrs;
    match code {
        tc::ORIGIN => {
            a.origin = Some(match v {
                [0] => Origin::Igp,
                [1] => Origin::Egp,
                [2] => Origin::Incomplete,
                [_] => return Err(AttrErrorKind::Value),
                _ => return Err(AttrErrorKind::Length),
            })
        }
        tc::AS_PATH => {
            let p = AsPath::decode(v, ctx.four_octet_as)?;
            if ctx.external_peer && p.segments.iter().any(|s| s.kind.is_confed()) {
                return Err(AttrErrorKind::Unexpected);
            }
            a.as_path = Some(p);
        }
        tc::NEXT_HOP => a.next_hop = Some(Ipv4Addr::from(u32_of(v)?)),
        tc::MULTI_EXIT_DISC => a.med = Some(u32_of(v)?),
        tc::LOCAL_PREF => {
            let lp = u32_of(v)?;
            if ctx.external_peer {
                return Err(AttrErrorKind::Unexpected);
            }
            a.local_pref = Some(lp);
        }
        tc::ATOMIC_AGGREGATE => {
            if !v.is_empty() {
                return Err(AttrErrorKind::Length);
            }
            a.atomic_aggregate = true;
        }
        tc::AGGREGATOR => a.aggregator = Some(aggregator_of(v, ctx.four_octet_as)?),
        tc::COMMUNITIES => {
            multiple_of(v, 4)?;
            a.communities = v
                .chunks_exact(4)
                .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        }
        tc::ORIGINATOR_ID => a.originator_id = Some(Ipv4Addr::from(u32_of(v)?)),
        tc::CLUSTER_LIST => {
            multiple_of(v, 4)?;
            a.cluster_list = v
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
        }
        tc::MP_REACH_NLRI => blk.mp_reach = Some(MpReach::decode(v, ctx)?),
        tc::MP_UNREACH_NLRI => blk.mp_unreach = Some(MpUnreach::decode(v, ctx)?),
        tc::EXTENDED_COMMUNITIES => {
            multiple_of(v, 8)?;
            a.extended_communities = v
                .chunks_exact(8)
                .map(|c| ExtendedCommunity([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
        }
        tc::AS4_PATH => {
            if ctx.four_octet_as {
                return Err(AttrErrorKind::Unexpected);
            }
            let p = AsPath::decode(v, true)?;
            // Confederation segments must not appear in AS4_PATH (RFC 6793 §6).
            if p.segments.iter().any(|s| s.kind.is_confed()) {
                return Err(AttrErrorKind::Value);
            }
            a.as4_path = Some(p);
        }
        tc::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                return Err(AttrErrorKind::Unexpected);
            }
            a.as4_aggregator = Some(aggregator_of(v, true)?);
        }
        tc::LARGE_COMMUNITY => {
            multiple_of(v, 12)?;
            a.large_communities = v
                .chunks_exact(12)
                .map(|c| LargeCommunity {
                    global_admin: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    local_data1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                    local_data2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                })
                .collect();
        }
        _ => {}
    }
    Ok(())
}

/// Order in which attributes are written when no layout is given: the MP attributes first
/// (RFC 7606 §5.1), then by type code.
const DEFAULT_ORDER: [u8; 16] = [
    tc::MP_REACH_NLRI,
    tc::MP_UNREACH_NLRI,
    tc::ORIGIN,
    tc::AS_PATH,
    tc::NEXT_HOP,
    tc::MULTI_EXIT_DISC,
    tc::LOCAL_PREF,
    tc::ATOMIC_AGGREGATE,
    tc::AGGREGATOR,
    tc::COMMUNITIES,
    tc::ORIGINATOR_ID,
    tc::CLUSTER_LIST,
    tc::EXTENDED_COMMUNITIES,
    tc::AS4_PATH,
    tc::AS4_AGGREGATOR,
    tc::LARGE_COMMUNITY,
];

fn put_attr_header(
    out: &mut BytesMut,
    flags: u8,
    code: u8,
    len: usize,
    force_ext: bool,
) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::AttributeTooLong {
            type_code: code,
            len,
        });
    }
    if force_ext || len > 255 {
        out.put_u8(flags | EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u16(len as u16);
    } else {
        out.put_u8(flags & !EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u8(len as u8);
    }
    Ok(())
}

/// The attributes to encode for one UPDATE.
pub(crate) struct AttrEncoder<'a> {
    pub attrs: &'a PathAttributes,
    pub mp_reach: Option<&'a MpReach>,
    pub mp_unreach: Option<&'a MpUnreach>,
    pub layout: Option<&'a AttrLayout>,
}

impl AttrEncoder<'_> {
    /// Append the path attribute field (without its 2-octet length).
    pub fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut done = [0u64; 4];
        let mut mark = |c: u8| -> bool {
            let (w, b) = (usize::from(c / 64), c % 64);
            match done.get_mut(w) {
                Some(x) if *x & (1 << b) == 0 => {
                    *x |= 1 << b;
                    true
                }
                _ => false,
            }
        };
        if let Some(l) = self.layout {
            for &(code, fl) in l.entries() {
                if mark(code) {
                    self.encode_code(code, Some(fl), ctx, out)?;
                }
            }
        }
        for code in DEFAULT_ORDER {
            if mark(code) {
                self.encode_code(code, None, ctx, out)?;
            }
        }
        for u in &self.attrs.unknown {
            if mark(u.type_code) {
                self.encode_code(u.type_code, None, ctx, out)?;
            }
        }
        Ok(())
    }

    fn encode_code(
        &self,
        code: u8,
        hint: Option<u8>,
        ctx: &ParseContext,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let a = self.attrs;
        let force_ext = hint.is_some_and(|f| f & EXTENDED_LENGTH != 0);
        let fl = |code: u8| {
            expected_flags(code).unwrap_or(OPTIONAL | TRANSITIVE) | (hint.unwrap_or(0) & PARTIAL)
        };
        let four = ctx.four_octet_as;
        match code {
            tc::ORIGIN => {
                if let Some(o) = a.origin {
                    put_attr_header(out, fl(code), code, 1, force_ext)?;
                    out.put_u8(o.code());
                }
            }
            tc::AS_PATH => {
                if let Some(p) = &a.as_path {
                    put_attr_header(out, fl(code), code, p.wire_len(four), force_ext)?;
                    p.encode(four, out);
                }
            }
            tc::NEXT_HOP => {
                if let Some(nh) = a.next_hop {
                    put_attr_header(out, fl(code), code, 4, force_ext)?;
                    out.put_slice(&nh.octets());
                }
            }
            tc::MULTI_EXIT_DISC | tc::LOCAL_PREF => {
                let v = if code == tc::MULTI_EXIT_DISC {
                    a.med
                } else {
                    a.local_pref
                };
                if let Some(v) = v {
                    put_attr_header(out, fl(code), code, 4, force_ext)?;
                    out.put_u32(v);
                }
            }
            tc::ATOMIC_AGGREGATE => {
                if a.atomic_aggregate {
                    put_attr_header(out, fl(code), code, 0, force_ext)?;
                }
            }
            tc::AGGREGATOR => {
                if let Some(ag) = a.aggregator {
                    put_attr_header(out, fl(code), code, if four { 8 } else { 6 }, force_ext)?;
                    if four {
                        out.put_u32(ag.asn.0);
                    } else {
                        out.put_u16(ag.asn.to_2_octet());
                    }
                    out.put_slice(&ag.address.octets());
                }
            }
            tc::COMMUNITIES => {
                if !a.communities.is_empty() {
                    put_attr_header(out, fl(code), code, a.communities.len() * 4, force_ext)?;
                    for c in &a.communities {
                        out.put_u32(c.0);
                    }
                }
            }
            tc::ORIGINATOR_ID => {
                if let Some(id) = a.originator_id {
                    put_attr_header(out, fl(code), code, 4, force_ext)?;
                    out.put_slice(&id.octets());
                }
            }
            tc::CLUSTER_LIST => {
                if !a.cluster_list.is_empty() {
                    put_attr_header(out, fl(code), code, a.cluster_list.len() * 4, force_ext)?;
                    for c in &a.cluster_list {
                        out.put_slice(&c.octets());
                    }
                }
            }
            tc::MP_REACH_NLRI => {
                if let Some(m) = self.mp_reach {
                    put_attr_header(out, fl(code), code, m.wire_len(ctx), force_ext)?;
                    m.encode(ctx, out);
                }
            }
            tc::MP_UNREACH_NLRI => {
                if let Some(m) = self.mp_unreach {
                    put_attr_header(out, fl(code), code, m.wire_len(ctx), force_ext)?;
                    m.encode(ctx, out);
                }
            }
            tc::EXTENDED_COMMUNITIES => {
                if !a.extended_communities.is_empty() {
                    put_attr_header(
                        out,
                        fl(code),
                        code,
                        a.extended_communities.len() * 8,
                        force_ext,
                    )?;
                    for c in &a.extended_communities {
                        out.put_slice(&c.0);
                    }
                }
            }
            // RFC 6793 §3: AS4_PATH / AS4_AGGREGATOR are only sent to 2-octet speakers, and
            // derived from the 4-octet values when not given explicitly (§4.2.2).
            tc::AS4_PATH if !four => {
                let derived;
                let p = match (&a.as4_path, &a.as_path) {
                    (Some(p), _) => Some(p),
                    (None, Some(path)) if path.has_4_octet() => {
                        derived = path.to_as4_path();
                        Some(&derived)
                    }
                    _ => None,
                };
                if let Some(p) = p {
                    put_attr_header(out, fl(code), code, p.wire_len(true), force_ext)?;
                    p.encode(true, out);
                }
            }
            tc::AS4_AGGREGATOR if !four => {
                let ag = a
                    .as4_aggregator
                    .or(a.aggregator.filter(|g| !g.asn.is_2_octet()));
                if let Some(ag) = ag {
                    put_attr_header(out, fl(code), code, 8, force_ext)?;
                    out.put_u32(ag.asn.0);
                    out.put_slice(&ag.address.octets());
                }
            }
            tc::AS4_PATH | tc::AS4_AGGREGATOR => {}
            tc::LARGE_COMMUNITY => {
                if !a.large_communities.is_empty() {
                    put_attr_header(
                        out,
                        fl(code),
                        code,
                        a.large_communities.len() * 12,
                        force_ext,
                    )?;
                    for c in &a.large_communities {
                        out.put_u32(c.global_admin);
                        out.put_u32(c.local_data1);
                        out.put_u32(c.local_data2);
                    }
                }
            }
            _ => {
                for u in a.unknown.iter().filter(|u| u.type_code == code) {
                    let f = (u.flags & (OPTIONAL | TRANSITIVE)) | PARTIAL;
                    put_attr_header(out, f, code, u.value.len(), force_ext)?;
                    out.put_slice(&u.value);
                }
            }
        }
        Ok(())
    }
}
