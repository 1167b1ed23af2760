//! Minimal netlink framing helpers: message headers, attributes, iteration. Used for the hot
//! route path, where hand-written encoding and parsing is several times cheaper than building
//! generic message trees.

/// `nlmsghdr` length.
pub const NLMSG_HDRLEN: usize = 16;
/// Request flag.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Dump request (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// Replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object if missing.
pub const NLM_F_CREATE: u16 = 0x400;
/// Multi-part message flag (dump replies).
pub const NLM_F_MULTI: u16 = 0x2;
/// Error / acknowledgement message type.
pub const NLMSG_ERROR: u16 = 2;
/// End of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Route messages.
pub const RTM_NEWROUTE: u16 = 24;
/// Route deletion.
pub const RTM_DELROUTE: u16 = 25;
/// Route dump.
pub const RTM_GETROUTE: u16 = 26;
/// Link messages.
pub const RTM_NEWLINK: u16 = 16;
/// Link deletion.
pub const RTM_DELLINK: u16 = 17;
/// Address messages.
pub const RTM_NEWADDR: u16 = 20;
/// Address deletion.
pub const RTM_DELADDR: u16 = 21;
/// Neighbour messages.
pub const RTM_NEWNEIGH: u16 = 28;
/// Neighbour deletion.
pub const RTM_DELNEIGH: u16 = 29;

/// Rounds up to the 4-byte netlink alignment.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Starts a message: writes a header with a placeholder length; returns its offset.
pub fn begin_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    start
}

/// Finishes a message started at `start`: fixes its length and pads it.
pub fn end_msg(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    buf.resize(align4(buf.len()), 0);
}

/// Appends one attribute.
pub fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = (4 + data.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Appends a u32 attribute.
pub fn put_u32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put_attr(buf, ty, &v.to_ne_bytes());
}

/// One message of a received datagram.
#[derive(Debug, Clone, Copy)]
pub struct RawMsg<'a> {
    /// Message type.
    pub ty: u16,
    /// Flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Payload after the header.
    pub payload: &'a [u8],
    /// The whole message, header included.
    pub whole: &'a [u8],
}

/// Iterates the messages of a datagram; stops at the first malformed one.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = RawMsg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = RawMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
            whole: &buf[..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

/// Iterates `(type, value)` attributes; the nested flag is masked off the type.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let val = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, val))
    })
}

/// Reads a native-endian u32 from an attribute value.
pub fn get_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Reads an `nlmsgerr`: the error code (0 = ack) and the sequence number of the request it
/// answers, plus the extended-ack message text if present.
pub fn parse_error(payload: &[u8]) -> Option<(i32, Option<String>)> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    // With NETLINK_CAP_ACK the original header (16 bytes) follows, then TLVs if
    // NETLINK_EXT_ACK is on (NLMSGERR_ATTR_MSG = 1).
    let mut text = None;
    if let Some(rest) = payload.get(4 + NLMSG_HDRLEN..) {
        for (ty, v) in attrs(rest) {
            if ty == 1 {
                let s = v.split(|b| *b == 0).next().unwrap_or(&[]);
                text = Some(String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    Some((code, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip() {
        let mut buf = Vec::new();
        let s = begin_msg(&mut buf, RTM_NEWROUTE, NLM_F_REQUEST, 7);
        put_attr(&mut buf, 1, &[1, 2, 3]);
        put_u32(&mut buf, 4, 9);
        end_msg(&mut buf, s);
        let s = begin_msg(&mut buf, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, 8);
        end_msg(&mut buf, s);
        let msgs: Vec<_> = messages(&buf).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[1].ty, RTM_DELROUTE);
        let a: Vec<_> = attrs(msgs[0].payload).collect();
        assert_eq!(a, vec![(1, &[1u8, 2, 3][..]), (4, &9u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn malformed_stops() {
        let buf = [200u8, 0, 0, 0, 0, 0];
        assert_eq!(messages(&buf).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}
