//! Packing many prefixes that share one attribute set into as few UPDATE messages as the
//! maximum message length allows (RFC 4271 §4.3, §9.2; RFC 4760 §3; RFC 8654).

use bytes::{BufMut, BytesMut};

use crate::attr::{flags, type_code, AttrEncoder, MpNextHop, PathAttributes};
use crate::context::ParseContext;
use crate::error::EncodeError;
use crate::header::{self, MessageType, HEADER_LEN};
use crate::nlri::{Ipv4Prefix, Ipv6Prefix, Nlri, Prefix};
use crate::types::AfiSafi;

/// A prefix type that can travel in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).
pub trait MpPrefix: Prefix {
    /// Its AFI/SAFI.
    const FAMILY: AfiSafi;
}

impl MpPrefix for Ipv4Prefix {
    const FAMILY: AfiSafi = AfiSafi::IPV4_UNICAST;
}

impl MpPrefix for Ipv6Prefix {
    const FAMILY: AfiSafi = AfiSafi::IPV6_UNICAST;
}

/// Writes UPDATE messages for a session; keeps a scratch buffer so that repeated calls do not
/// allocate.
#[derive(Debug)]
pub struct UpdatePacker {
    ctx: ParseContext,
    attrs: BytesMut,
}

impl UpdatePacker {
    /// A packer for a session with the given (sending-direction) context.
    pub fn new(ctx: ParseContext) -> Self {
        UpdatePacker {
            ctx,
            attrs: BytesMut::with_capacity(512),
        }
    }

    /// The context in use.
    pub fn context(&self) -> &ParseContext {
        &self.ctx
    }

    fn encode_attrs(&mut self, attrs: &PathAttributes) -> Result<(), EncodeError> {
        self.attrs.clear();
        AttrEncoder {
            attrs,
            mp_reach: None,
            mp_unreach: None,
            layout: None,
        }
        .encode(&self.ctx, &mut self.attrs)
    }

    fn max(&self) -> usize {
        self.ctx.max_message_len()
    }

    /// Announce IPv4 unicast prefixes in the NLRI field with `attrs` (which must carry
    /// NEXT_HOP). Returns the number of messages written.
    pub fn announce_ipv4(
        &mut self,
        attrs: &PathAttributes,
        nlri: &[Nlri<Ipv4Prefix>],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        self.encode_attrs(attrs)?;
        let ap = self.ctx.add_path_ipv4;
        let fixed = HEADER_LEN + 4 + self.attrs.len();
        let max = self.max();
        if fixed + 5 + if ap { 4 } else { 0 } > max {
            return Err(EncodeError::MessageTooLong {
                len: fixed + 5,
                max,
            });
        }
        let mut count = 0;
        let mut rest = nlri;
        while !rest.is_empty() {
            let (n, _) = fit(rest, ap, max - fixed);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let start = header::begin_message(out, MessageType::Update);
            out.put_u16(0);
            out.put_u16(self.attrs.len() as u16);
            out.put_slice(&self.attrs);
            for p in chunk {
                p.encode(ap, out);
            }
            header::finish_message(out, start);
            count += 1;
        }
        Ok(count)
    }

    /// Withdraw IPv4 unicast prefixes in the Withdrawn Routes field. Returns the number of
    /// messages written.
    pub fn withdraw_ipv4(
        &mut self,
        nlri: &[Nlri<Ipv4Prefix>],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let ap = self.ctx.add_path_ipv4;
        let room = self.max() - HEADER_LEN - 4;
        let mut count = 0;
        let mut rest = nlri;
        while !rest.is_empty() {
            let (n, bytes) = fit(rest, ap, room);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let start = header::begin_message(out, MessageType::Update);
            out.put_u16(bytes as u16);
            for p in chunk {
                p.encode(ap, out);
            }
            out.put_u16(0);
            header::finish_message(out, start);
            count += 1;
        }
        Ok(count)
    }

    /// Announce prefixes in MP_REACH_NLRI (RFC 4760 §3) with `next_hop` and `attrs` (whose
    /// NEXT_HOP, if any, is sent as is). MP_REACH_NLRI is written first (RFC 7606 §5.1).
    pub fn announce_mp<P: MpPrefix>(
        &mut self,
        attrs: &PathAttributes,
        next_hop: &MpNextHop,
        nlri: &[Nlri<P>],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        self.encode_attrs(attrs)?;
        let ap = self.ctx.add_path(P::FAMILY);
        let mut nh = BytesMut::new();
        match next_hop {
            MpNextHop::V4(a) => nh.put_slice(&a.octets()),
            MpNextHop::V6 { global, link_local } => {
                nh.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    nh.put_slice(&ll.octets());
                }
            }
            MpNextHop::Other(b) => nh.put_slice(b),
        }
        // flags, type, 2-octet length, AFI, SAFI, next-hop length, next hop, reserved.
        let mp_fixed = 4 + 3 + 1 + nh.len() + 1;
        let fixed = HEADER_LEN + 4 + self.attrs.len() + mp_fixed;
        let max = self.max();
        if fixed + 17 + 4 > max || nh.len() > 255 {
            return Err(EncodeError::MessageTooLong {
                len: fixed + 17,
                max,
            });
        }
        let mut count = 0;
        let mut rest = nlri;
        while !rest.is_empty() {
            let (n, bytes) = fit(rest, ap, max - fixed);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let start = header::begin_message(out, MessageType::Update);
            out.put_u16(0);
            out.put_u16((mp_fixed + bytes + self.attrs.len()) as u16);
            out.put_u8(flags::OPTIONAL | flags::EXTENDED_LENGTH);
            out.put_u8(type_code::MP_REACH_NLRI);
            out.put_u16((mp_fixed - 4 + bytes) as u16);
            out.put_u16(P::FAMILY.afi.into());
            out.put_u8(P::FAMILY.safi.into());
            out.put_u8(nh.len() as u8);
            out.put_slice(&nh);
            out.put_u8(0);
            for p in chunk {
                p.encode(ap, out);
            }
            out.put_slice(&self.attrs);
            header::finish_message(out, start);
            count += 1;
        }
        Ok(count)
    }

    /// Withdraw prefixes in MP_UNREACH_NLRI (RFC 4760 §4).
    pub fn withdraw_mp<P: MpPrefix>(
        &mut self,
        nlri: &[Nlri<P>],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let ap = self.ctx.add_path(P::FAMILY);
        let fixed = HEADER_LEN + 4 + 4 + 3;
        let room = self.max() - fixed;
        let mut count = 0;
        let mut rest = nlri;
        while !rest.is_empty() {
            let (n, bytes) = fit(rest, ap, room);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let start = header::begin_message(out, MessageType::Update);
            out.put_u16(0);
            out.put_u16((7 + bytes) as u16);
            out.put_u8(flags::OPTIONAL | flags::EXTENDED_LENGTH);
            out.put_u8(type_code::MP_UNREACH_NLRI);
            out.put_u16((3 + bytes) as u16);
            out.put_u16(P::FAMILY.afi.into());
            out.put_u8(P::FAMILY.safi.into());
            for p in chunk {
                p.encode(ap, out);
            }
            header::finish_message(out, start);
            count += 1;
        }
        Ok(count)
    }
}

/// How many leading entries fit in `room` octets (at least one), and their total size.
fn fit<P: Prefix>(nlri: &[Nlri<P>], add_path: bool, room: usize) -> (usize, usize) {
    let extra = if add_path { 4 } else { 0 };
    let mut used = 0;
    for (i, n) in nlri.iter().enumerate() {
        let l = n.prefix.wire_len() + extra;
        if used + l > room {
            return (i.max(1), if i == 0 { l } else { used });
        }
        used += l;
    }
    (nlri.len(), used)
}
