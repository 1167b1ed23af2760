//! UPDATE message (RFC 4271 §4.3) with multiprotocol extensions (RFC 4760), ADD-PATH
//! (RFC 7911), End-of-RIB markers (RFC 4724 §2) and RFC 7606 error handling.

use bytes::{BufMut, BytesMut};

use crate::attr::{
    decode_attributes, type_code, AttrBlock, AttrEncoder, AttrLayout, PathAttributes,
};
use crate::context::ParseContext;
use crate::error::{Action, AttrError, AttrErrorKind, DecodeError, EncodeError};
use crate::header::{self, MessageType, HEADER_LEN};
use crate::nlri::{self, Ipv4Prefix, Nlri};
use crate::notification::UpdateSubcode;
use crate::types::AfiSafi;
use crate::wire;

pub use crate::attr::mp::{MpNextHop, MpNlri, MpReach, MpUnreach};

/// An UPDATE message (RFC 4271 §4.3).
///
/// After decoding, [`UpdateMessage::errors`] lists the RFC 7606 findings that did not require a
/// session reset and [`UpdateMessage::action`] the resulting action. Equality ignores the
/// recorded wire layout.
#[derive(Debug, Clone, Default)]
pub struct UpdateMessage {
    /// Withdrawn IPv4 unicast routes (RFC 4271 §4.3 "Withdrawn Routes").
    pub withdrawn: Vec<Nlri<Ipv4Prefix>>,
    /// The path attributes except the multiprotocol ones.
    pub attributes: PathAttributes,
    /// MP_REACH_NLRI (RFC 4760 §3).
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI (RFC 4760 §4).
    pub mp_unreach: Option<MpUnreach>,
    /// Reachable IPv4 unicast routes (RFC 4271 §4.3 "NLRI").
    pub nlri: Vec<Nlri<Ipv4Prefix>>,
    /// Errors found while decoding that call for "treat-as-withdraw" or "attribute discard"
    /// (RFC 7606 §2). Empty for a well-formed message.
    pub errors: Vec<AttrError>,
    /// Attribute order and flags as received, used to re-encode the same octets.
    pub layout: Option<AttrLayout>,
}

impl PartialEq for UpdateMessage {
    fn eq(&self, o: &Self) -> bool {
        self.withdrawn == o.withdrawn
            && self.attributes == o.attributes
            && self.mp_reach == o.mp_reach
            && self.mp_unreach == o.mp_unreach
            && self.nlri == o.nlri
            && self.errors == o.errors
    }
}

impl Eq for UpdateMessage {}

impl UpdateMessage {
    /// The End-of-RIB marker of a family (RFC 4724 §2): an empty UPDATE for IPv4 unicast,
    /// an UPDATE with only an empty MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(family: AfiSafi) -> Self {
        if family == AfiSafi::IPV4_UNICAST {
            UpdateMessage::default()
        } else {
            UpdateMessage {
                mp_unreach: Some(MpUnreach {
                    nlri: MpNlri::empty(family),
                }),
                ..Default::default()
            }
        }
    }

    /// If this UPDATE is an End-of-RIB marker, its family (RFC 4724 §2).
    pub fn as_end_of_rib(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || self.mp_reach.is_some() {
            return None;
        }
        if self.attributes != PathAttributes::default() {
            return None;
        }
        match &self.mp_unreach {
            None => Some(AfiSafi::IPV4_UNICAST),
            Some(u) if u.nlri.is_empty() => Some(u.nlri.family()),
            Some(_) => None,
        }
    }

    /// The most severe RFC 7606 action among [`UpdateMessage::errors`], `None` if there is none.
    /// With [`Action::TreatAsWithdraw`], every prefix in `nlri` and `mp_reach` must be handled
    /// as withdrawn; with [`Action::Discard`], the UPDATE is used as decoded (the malformed
    /// attributes are already gone).
    pub fn action(&self) -> Option<Action> {
        self.errors.iter().map(|e| e.action).max()
    }

    /// True if the message announces any prefix (NLRI field or MP_REACH_NLRI).
    pub fn has_reachable(&self) -> bool {
        !self.nlri.is_empty() || self.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty())
    }

    /// Decode the body (after the 19-octet header) of an UPDATE (RFC 4271 §4.3, §6.3,
    /// RFC 7606).
    pub fn decode(body: &[u8], ctx: &ParseContext) -> Result<Self, DecodeError> {
        let mut msg = UpdateMessage::default();
        msg.decode_into(body, ctx)?;
        Ok(msg)
    }

    /// Like [`UpdateMessage::decode`], but reuses this message's buffers (the NLRI and
    /// withdrawn vectors keep their capacity), so a receive loop decoding into one
    /// `UpdateMessage` does not allocate for prefixes. On error the message content is
    /// unspecified.
    pub fn decode_into(&mut self, body: &[u8], ctx: &ParseContext) -> Result<(), DecodeError> {
        let malformed = || {
            DecodeError::update(
                UpdateSubcode::MalformedAttributeList,
                Vec::new(),
                "UPDATE length fields overrun",
            )
        };
        let invalid_net = || {
            DecodeError::update(
                UpdateSubcode::InvalidNetworkField,
                Vec::new(),
                "invalid NLRI",
            )
        };
        let (i, wlen) = wire::u16_(body).map_err(|_| malformed())?;
        let (i, wbytes) = wire::take(i, usize::from(wlen)).map_err(|_| malformed())?;
        let (i, alen) = wire::u16_(i).map_err(|_| malformed())?;
        let (nlri_bytes, abytes) = wire::take(i, usize::from(alen)).map_err(|_| malformed())?;

        self.withdrawn.clear();
        self.nlri.clear();
        nlri::decode_into(wbytes, ctx.add_path_ipv4, &mut self.withdrawn)
            .map_err(|_| invalid_net())?;
        let mut blk = AttrBlock::default();
        decode_attributes(abytes, ctx, &mut blk)?;
        nlri::decode_into(nlri_bytes, ctx.add_path_ipv4, &mut self.nlri)
            .map_err(|_| invalid_net())?;

        if blk.overrun && blk.mp_reach.is_none() && blk.mp_unreach.is_none() && self.nlri.is_empty()
        {
            // RFC 7606 §5.1: treat-as-withdraw needs every NLRI to be found; an MP attribute may
            // hide in the part that cannot be parsed, so only a reset is safe.
            return Err(DecodeError::update(
                UpdateSubcode::MalformedAttributeList,
                Vec::new(),
                "path attribute field overrun",
            ));
        }

        // RFC 7606 §3 d, §5.2: mandatory attributes are checked only when routes are announced;
        // NEXT_HOP only for the IPv4 NLRI field (RFC 4760 §3).
        let reach = !self.nlri.is_empty() || blk.mp_reach.is_some();
        if reach && !blk.overrun {
            for code in [type_code::ORIGIN, type_code::AS_PATH] {
                if !blk.was_seen(code) {
                    blk.report(code, AttrErrorKind::Missing, &[])?;
                }
            }
            if !self.nlri.is_empty() && !blk.was_seen(type_code::NEXT_HOP) {
                blk.report(type_code::NEXT_HOP, AttrErrorKind::Missing, &[])?;
            }
        }

        self.attributes = blk.attrs;
        self.mp_reach = blk.mp_reach;
        self.mp_unreach = blk.mp_unreach;
        self.errors = blk.errors;
        self.layout = Some(blk.layout);
        Ok(())
    }

    /// Append the whole message, header included. Fails if it exceeds the maximum message
    /// length of `ctx` (RFC 4271 §4.1, RFC 8654); use [`crate::pack::UpdatePacker`] to split
    /// large sets of prefixes.
    pub fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = header::begin_message(out, MessageType::Update);
        let res = self.encode_body(ctx, out);
        let len = out.len() - start;
        if res.is_err() || len > ctx.max_message_len() {
            out.truncate(start);
            res?;
            return Err(EncodeError::MessageTooLong {
                len,
                max: ctx.max_message_len(),
            });
        }
        header::finish_message(out, start);
        Ok(())
    }

    fn encode_body(&self, ctx: &ParseContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let ap = ctx.add_path_ipv4;
        let wlen = nlri::wire_len_all(&self.withdrawn, ap);
        out.put_u16(u16::try_from(wlen).map_err(|_| too_long(wlen, ctx))?);
        nlri::encode_all(&self.withdrawn, ap, out);
        let alen_at = out.len();
        out.put_u16(0);
        AttrEncoder {
            attrs: &self.attributes,
            mp_reach: self.mp_reach.as_ref(),
            mp_unreach: self.mp_unreach.as_ref(),
            layout: self.layout.as_ref(),
        }
        .encode(ctx, out)?;
        let alen = out.len() - alen_at - 2;
        let alen16 = u16::try_from(alen).map_err(|_| too_long(alen, ctx))?;
        if let Some(slot) = out.get_mut(alen_at..alen_at + 2) {
            slot.copy_from_slice(&alen16.to_be_bytes());
        }
        nlri::encode_all(&self.nlri, ap, out);
        Ok(())
    }

    /// The encoded length, header included.
    pub fn wire_len(&self, ctx: &ParseContext) -> Result<usize, EncodeError> {
        let mut b = BytesMut::new();
        self.encode_body(ctx, &mut b)?;
        Ok(HEADER_LEN + b.len())
    }
}

fn too_long(len: usize, ctx: &ParseContext) -> EncodeError {
    EncodeError::MessageTooLong {
        len,
        max: ctx.max_message_len(),
    }
}
