//! OPEN message (RFC 4271 §4.2, §6.2) with capability optional parameters (RFC 5492) and the
//! extended optional parameters length (RFC 9072).

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

use crate::capability::Capability;
use crate::error::{DecodeError, EncodeError};
use crate::header::{self, MessageType};
use crate::notification::{ErrorCode, NotificationMessage, OpenSubcode};
use crate::types::{AfiSafi, Asn};
use crate::wire;

/// Optional parameter type carrying capabilities (RFC 5492 §4).
pub const PARAM_CAPABILITIES: u8 = 2;
/// Non-Ext OP Type marking the extended optional parameters format (RFC 9072 §2).
pub const PARAM_EXTENDED_LENGTH: u8 = 255;

/// An OPEN message (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpenMessage {
    /// Protocol version; always 4 once decoded.
    pub version: u8,
    /// `My Autonomous System`: the 2-octet AS, or AS_TRANS (23456) for a 4-octet AS
    /// (RFC 6793 §4.2.1).
    pub my_as: u16,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, grouped as they are carried in optional parameters: one inner list per
    /// Capabilities parameter (RFC 5492 §4 allows one or many per parameter).
    pub params: Vec<Vec<Capability>>,
    /// Encode the optional parameters in the RFC 9072 extended format even if they are short
    /// enough for the classic one (set when such an OPEN was received).
    pub extended_params: bool,
}

impl OpenMessage {
    /// An OPEN for `asn` with all `capabilities` in one optional parameter; `My AS` is
    /// AS_TRANS when `asn` does not fit 2 octets (RFC 6793 §4.2.1).
    pub fn new(asn: Asn, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        OpenMessage {
            version: 4,
            my_as: asn.to_2_octet(),
            hold_time,
            bgp_id,
            params: if capabilities.is_empty() {
                Vec::new()
            } else {
                vec![capabilities]
            },
            extended_params: false,
        }
    }

    /// Every capability, in order.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flatten()
    }

    /// The speaker's AS: from the 4-octet AS capability if present, else `My AS`
    /// (RFC 6793 §4.1).
    pub fn asn(&self) -> Asn {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(Asn(u32::from(self.my_as)))
    }

    /// The families announced with the multiprotocol capability (RFC 4760 §8).
    pub fn multiprotocol(&self) -> impl Iterator<Item = AfiSafi> + '_ {
        self.capabilities().filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
    }

    /// Whether a capability with this code was announced.
    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities().any(|c| c.code() == code)
    }

    /// Decode the body (after the header) of an OPEN and check it (RFC 4271 §6.2): version 4,
    /// a non-zero BGP identifier, hold time 0 or at least 3, only the Capabilities optional
    /// parameter, well-formed lengths (RFC 9072 §2 for the extended format).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let open_err = |sub: OpenSubcode, data: Vec<u8>, reason| {
            DecodeError::reset(NotificationMessage::new(ErrorCode::Open(sub), data), reason)
        };
        let malformed = || {
            open_err(
                OpenSubcode::Unspecific,
                Vec::new(),
                "malformed OPEN optional parameters",
            )
        };
        let short = |_| DecodeError::bad_length(body.len() + header::HEADER_LEN);
        let (i, version) = wire::u8_(body).map_err(short)?;
        let (i, my_as) = wire::u16_(i).map_err(short)?;
        let (i, hold_time) = wire::u16_(i).map_err(short)?;
        let (i, id) = wire::u32_(i).map_err(short)?;
        let (i, opt_len) = wire::u8_(i).map_err(short)?;
        if version != 4 {
            return Err(open_err(
                OpenSubcode::UnsupportedVersionNumber,
                vec![0, 4],
                "unsupported version",
            ));
        }
        if hold_time == 1 || hold_time == 2 {
            return Err(open_err(
                OpenSubcode::UnacceptableHoldTime,
                Vec::new(),
                "hold time 1 or 2",
            ));
        }
        if id == 0 {
            return Err(open_err(
                OpenSubcode::BadBgpIdentifier,
                Vec::new(),
                "BGP identifier 0",
            ));
        }
        let (mut i, extended) = match i {
            [PARAM_EXTENDED_LENGTH, rest @ ..] if opt_len != 0 => {
                // RFC 9072 §2: Non-Ext OP Type 255, then a 2-octet length.
                let (rest, ext_len) = wire::u16_(rest).map_err(|_| malformed())?;
                if rest.len() != usize::from(ext_len) {
                    return Err(malformed());
                }
                (rest, true)
            }
            _ => {
                if i.len() != usize::from(opt_len) {
                    return Err(malformed());
                }
                (i, false)
            }
        };
        let mut params = Vec::new();
        while !i.is_empty() {
            let (r, ty) = wire::u8_(i).map_err(|_| malformed())?;
            let (r, len) = if extended {
                wire::u16_(r).map_err(|_| malformed())?
            } else {
                wire::u8_(r)
                    .map(|(r, l)| (r, u16::from(l)))
                    .map_err(|_| malformed())?
            };
            let (r, value) = wire::take(r, usize::from(len)).map_err(|_| malformed())?;
            i = r;
            if ty != PARAM_CAPABILITIES {
                return Err(open_err(
                    OpenSubcode::UnsupportedOptionalParameter,
                    Vec::new(),
                    "unsupported optional parameter",
                ));
            }
            let mut caps = Vec::new();
            let mut v = value;
            while !v.is_empty() {
                let (r, code) = wire::u8_(v).map_err(|_| malformed())?;
                let (r, clen) = wire::u8_(r).map_err(|_| malformed())?;
                let (r, cval) = wire::take(r, usize::from(clen)).map_err(|_| malformed())?;
                v = r;
                caps.push(Capability::decode(code, cval).map_err(|_| malformed())?);
            }
            params.push(caps);
        }
        Ok(OpenMessage {
            version,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            params,
            extended_params: extended,
        })
    }

    fn params_len(&self, extended: bool) -> usize {
        let hdr = if extended { 3 } else { 2 };
        self.params
            .iter()
            .map(|p| hdr + p.iter().map(|c| 2 + c.value_len()).sum::<usize>())
            .sum()
    }

    /// Append the whole message. The RFC 9072 format is used when asked for or when the
    /// parameters do not fit the 1-octet length fields.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let too_long = |len| EncodeError::OptionalParametersTooLong { len };
        for c in self.capabilities() {
            if c.value_len() > 255 {
                return Err(too_long(c.value_len()));
            }
        }
        let classic = self.params_len(false);
        let classic_fits = classic <= 255
            && self
                .params
                .iter()
                .all(|p| p.iter().map(|c| 2 + c.value_len()).sum::<usize>() <= 255);
        let extended = self.extended_params || !classic_fits;
        let plen = self.params_len(extended);
        let total = header::HEADER_LEN + 10 + plen + if extended { 3 } else { 0 };
        if total > header::MAX_MESSAGE_LEN {
            return Err(EncodeError::MessageTooLong {
                len: total,
                max: header::MAX_MESSAGE_LEN,
            });
        }
        header::put_header(out, MessageType::Open, total);
        out.put_u8(self.version);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_u32(u32::from(self.bgp_id));
        if extended {
            out.put_u8(255);
            out.put_u8(PARAM_EXTENDED_LENGTH);
            out.put_u16(plen as u16);
        } else {
            out.put_u8(plen as u8);
        }
        for p in &self.params {
            let len: usize = p.iter().map(|c| 2 + c.value_len()).sum();
            out.put_u8(PARAM_CAPABILITIES);
            if extended {
                out.put_u16(len as u16);
            } else {
                out.put_u8(len as u8);
            }
            for c in p {
                c.encode(out);
            }
        }
        Ok(())
    }
}
