//! The 19-octet message header (RFC 4271 §4.1) and its checks (RFC 4271 §6.1, RFC 8654 §4).

use bytes::{BufMut, BytesMut};

use crate::context::ParseContext;
use crate::error::DecodeError;
use crate::notification::{ErrorCode, HeaderSubcode, NotificationMessage};

/// Length of the message header: 16-octet marker, 2-octet length, 1-octet type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message length without extended messages (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message length once extended messages are negotiated (RFC 8654 §3).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The all-ones marker (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];

/// Minimum length of an OPEN message (RFC 4271 §4.2).
pub const MIN_OPEN_LEN: usize = 29;
/// Minimum length of an UPDATE message (RFC 4271 §4.3).
pub const MIN_UPDATE_LEN: usize = 23;
/// Minimum length of a NOTIFICATION message (RFC 4271 §4.5).
pub const MIN_NOTIFICATION_LEN: usize = 21;
/// Length of a ROUTE-REFRESH message without ORF entries (RFC 2918 §3).
pub const ROUTE_REFRESH_LEN: usize = 23;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1: OPEN.
    Open,
    /// 2: UPDATE.
    Update,
    /// 3: NOTIFICATION.
    Notification,
    /// 4: KEEPALIVE.
    Keepalive,
    /// 5: ROUTE-REFRESH (RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    /// Parse the wire value; `None` for an unknown type.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }
}

/// Check the header at the start of `buf` and return the total message length it announces.
///
/// Returns `Ok(None)` while fewer than 19 octets are available; once the header is there, the
/// marker, the length (RFC 4271 §6.1, with the per-type bounds and the RFC 8654 limit) and the
/// type are checked. The caller reads until `buf.len() >= length` and then calls
/// [`crate::decode_message`] on `&buf[..length]`.
pub fn frame_length(buf: &[u8], ctx: &ParseContext) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    parse_header(buf, ctx).map(|(_, len)| Some(len))
}

/// Validate a header and return its type and the announced length (RFC 4271 §6.1).
pub(crate) fn parse_header(
    buf: &[u8],
    ctx: &ParseContext,
) -> Result<(MessageType, usize), DecodeError> {
    let (marker, rest) = buf
        .split_at_checked(16)
        .ok_or_else(|| DecodeError::bad_length(buf.len()))?;
    if marker != MARKER {
        return Err(DecodeError::reset(
            NotificationMessage::new(
                ErrorCode::MessageHeader(HeaderSubcode::ConnectionNotSynchronized),
                Vec::new(),
            ),
            "header marker is not all ones",
        ));
    }
    let [l0, l1, ty, ..] = *rest else {
        return Err(DecodeError::bad_length(buf.len()));
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let bad_len = || DecodeError::bad_length(len);
    if len < HEADER_LEN || len > ctx.max_message_len() {
        return Err(bad_len());
    }
    let Some(kind) = MessageType::from_code(ty) else {
        return Err(DecodeError::reset(
            NotificationMessage::new(
                ErrorCode::MessageHeader(HeaderSubcode::BadMessageType),
                vec![ty],
            ),
            "unknown message type",
        ));
    };
    let ok = match kind {
        // OPEN and KEEPALIVE never exceed 4096 octets (RFC 8654 §4).
        MessageType::Open => (MIN_OPEN_LEN..=MAX_MESSAGE_LEN).contains(&len),
        MessageType::Keepalive => len == HEADER_LEN,
        MessageType::Update => len >= MIN_UPDATE_LEN,
        MessageType::Notification => len >= MIN_NOTIFICATION_LEN,
        MessageType::RouteRefresh => len >= ROUTE_REFRESH_LEN,
    };
    if !ok {
        return Err(bad_len());
    }
    Ok((kind, len))
}

/// Append a header announcing `total_len` octets (header included).
pub(crate) fn put_header(out: &mut BytesMut, kind: MessageType, total_len: usize) {
    out.put_slice(&MARKER);
    out.put_u16(u16::try_from(total_len).unwrap_or(u16::MAX));
    out.put_u8(kind.code());
}

/// Start a message whose length is not yet known; returns the offset to pass to
/// [`finish_message`].
pub(crate) fn begin_message(out: &mut BytesMut, kind: MessageType) -> usize {
    let start = out.len();
    out.put_slice(&MARKER);
    out.put_u16(0);
    out.put_u8(kind.code());
    start
}

/// Patch the length field of the message begun at `start`.
pub(crate) fn finish_message(out: &mut BytesMut, start: usize) {
    let len = out.len() - start;
    let bytes = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(start + 16..start + 18) {
        slot.copy_from_slice(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_waits_for_a_full_header() {
        let ctx = ParseContext::new();
        let mut m = MARKER.to_vec();
        assert_eq!(frame_length(&m, &ctx), Ok(None));
        m.extend_from_slice(&[0, 19, 4]);
        assert_eq!(frame_length(&m, &ctx), Ok(Some(19)));
        m[17] = 200; // a KEEPALIVE of 200 octets
        assert!(frame_length(&m, &ctx).is_err());
    }
}
