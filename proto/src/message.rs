//! The BGP message (RFC 4271 §4) and the entry points for decoding one from a byte stream.

use bytes::{BufMut, BytesMut};

use crate::context::ParseContext;
use crate::error::{DecodeError, EncodeError};
use crate::header::{self, parse_header, MessageType, HEADER_LEN};
use crate::notification::NotificationMessage;
use crate::open::OpenMessage;
use crate::route_refresh::RouteRefreshMessage;
use crate::update::UpdateMessage;

/// Any BGP message (RFC 4271 §4.1).
// UPDATE is by far the most frequent message; boxing it would cost an allocation per UPDATE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN (RFC 4271 §4.2).
    Open(OpenMessage),
    /// UPDATE (RFC 4271 §4.3).
    Update(UpdateMessage),
    /// NOTIFICATION (RFC 4271 §4.5).
    Notification(NotificationMessage),
    /// KEEPALIVE (RFC 4271 §4.4).
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918 §3).
    RouteRefresh(RouteRefreshMessage),
}

impl Message {
    /// The message type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Append the whole message (header included) to `out`.
    pub fn encode(&self, ctx: &ParseContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Message::Open(m) => m.encode(out),
            Message::Update(m) => m.encode(ctx, out),
            Message::Notification(m) => {
                let len = HEADER_LEN + m.body_len();
                if len > ctx.max_message_len() {
                    return Err(EncodeError::MessageTooLong {
                        len,
                        max: ctx.max_message_len(),
                    });
                }
                m.encode(out);
                Ok(())
            }
            Message::Keepalive => {
                header::put_header(out, MessageType::Keepalive, HEADER_LEN);
                Ok(())
            }
            Message::RouteRefresh(m) => {
                let len = header::ROUTE_REFRESH_LEN + m.trailing.len();
                if len > ctx.max_message_len() {
                    return Err(EncodeError::MessageTooLong {
                        len,
                        max: ctx.max_message_len(),
                    });
                }
                m.encode(out);
                Ok(())
            }
        }
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self, ctx: &ParseContext) -> Result<BytesMut, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(ctx, &mut b)?;
        Ok(b)
    }
}

/// Decode exactly one message: `buf` must hold the message and nothing else
/// (RFC 4271 §4.1, §6.1). See [`decode_stream`] for a buffer holding a stream.
pub fn decode_message(buf: &[u8], ctx: &ParseContext) -> Result<Message, DecodeError> {
    let (kind, len) = parse_header(buf, ctx)?;
    if buf.len() != len {
        return Err(DecodeError::bad_length(len));
    }
    let body = buf.get(HEADER_LEN..).unwrap_or_default();
    Ok(match kind {
        MessageType::Open => Message::Open(OpenMessage::decode(body)?),
        MessageType::Update => Message::Update(UpdateMessage::decode(body, ctx)?),
        MessageType::Notification => Message::Notification(NotificationMessage::decode(body)?),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => Message::RouteRefresh(RouteRefreshMessage::decode(body, buf)?),
    })
}

/// Decode the first message of a byte stream. Returns `Ok(None)` if the message is not complete
/// yet, else the message and the number of octets it took.
pub fn decode_stream(
    buf: &[u8],
    ctx: &ParseContext,
) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(len) = header::frame_length(buf, ctx)? else {
        return Ok(None);
    };
    let Some(msg) = buf.get(..len) else {
        return Ok(None);
    };
    decode_message(msg, ctx).map(|m| Some((m, len)))
}

/// Decode one UPDATE message (header included) into `msg`, reusing its buffers
/// ([`UpdateMessage::decode_into`]). Returns `Ok(false)` without touching `msg` if `buf` holds a
/// message of another type (decode that one with [`decode_message`]).
pub fn decode_update_into(
    buf: &[u8],
    ctx: &ParseContext,
    msg: &mut UpdateMessage,
) -> Result<bool, DecodeError> {
    let (kind, len) = parse_header(buf, ctx)?;
    if buf.len() != len {
        return Err(DecodeError::bad_length(len));
    }
    if kind != MessageType::Update {
        return Ok(false);
    }
    msg.decode_into(buf.get(HEADER_LEN..).unwrap_or_default(), ctx)?;
    Ok(true)
}

/// Append a KEEPALIVE (RFC 4271 §4.4).
pub fn encode_keepalive(out: &mut BytesMut) {
    out.put_slice(&header::MARKER);
    out.put_u16(HEADER_LEN as u16);
    out.put_u8(MessageType::Keepalive.code());
}
