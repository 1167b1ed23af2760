//! ROUTE-REFRESH message (RFC 2918 §3) with the enhanced route refresh subtypes
//! (RFC 7313 §3: BoRR and EoRR).

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::header::{self, MessageType};
use crate::notification::{ErrorCode, NotificationMessage, RouteRefreshSubcode};
use crate::types::AfiSafi;

/// The "Message Subtype" octet (RFC 7313 §3; it was "Reserved" in RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    /// 0: normal route refresh request.
    Request,
    /// 1: Beginning of Route Refresh (BoRR).
    BeginningOfRefresh,
    /// 2: End of Route Refresh (EoRR).
    EndOfRefresh,
    /// Any other value; RFC 7313 §5 says to ignore such a message.
    Other(u8),
}

impl From<u8> for RouteRefreshSubtype {
    fn from(v: u8) -> Self {
        match v {
            0 => RouteRefreshSubtype::Request,
            1 => RouteRefreshSubtype::BeginningOfRefresh,
            2 => RouteRefreshSubtype::EndOfRefresh,
            o => RouteRefreshSubtype::Other(o),
        }
    }
}

impl From<RouteRefreshSubtype> for u8 {
    fn from(v: RouteRefreshSubtype) -> u8 {
        match v {
            RouteRefreshSubtype::Request => 0,
            RouteRefreshSubtype::BeginningOfRefresh => 1,
            RouteRefreshSubtype::EndOfRefresh => 2,
            RouteRefreshSubtype::Other(o) => o,
        }
    }
}

/// A ROUTE-REFRESH message (RFC 2918 §3, RFC 7313 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteRefreshMessage {
    /// The family to refresh.
    pub family: AfiSafi,
    /// The subtype.
    pub subtype: RouteRefreshSubtype,
    /// Octets after the fixed part of a normal request (e.g. ORF entries, RFC 5291), kept as
    /// received.
    pub trailing: Vec<u8>,
}

impl RouteRefreshMessage {
    /// A request to re-send the Adj-RIB-Out of `family`.
    pub fn request(family: AfiSafi) -> Self {
        RouteRefreshMessage {
            family,
            subtype: RouteRefreshSubtype::Request,
            trailing: Vec::new(),
        }
    }

    /// Decode the body (after the header). BoRR/EoRR must be exactly 4 octets long, else
    /// ROUTE-REFRESH Message Error / Invalid Message Length with the whole message as data
    /// (RFC 7313 §5).
    pub fn decode(body: &[u8], whole: &[u8]) -> Result<Self, DecodeError> {
        let [a0, a1, sub, safi, ref rest @ ..] = *body else {
            return Err(DecodeError::bad_length(body.len() + header::HEADER_LEN));
        };
        let subtype = RouteRefreshSubtype::from(sub);
        if matches!(
            subtype,
            RouteRefreshSubtype::BeginningOfRefresh | RouteRefreshSubtype::EndOfRefresh
        ) && !rest.is_empty()
        {
            return Err(DecodeError::reset(
                NotificationMessage::new(
                    ErrorCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
                    whole.to_vec(),
                ),
                "BoRR/EoRR with a length other than 23",
            ));
        }
        Ok(RouteRefreshMessage {
            family: AfiSafi::new(u16::from_be_bytes([a0, a1]), safi),
            subtype,
            trailing: rest.to_vec(),
        })
    }

    /// Append the whole message.
    pub fn encode(&self, out: &mut BytesMut) {
        header::put_header(
            out,
            MessageType::RouteRefresh,
            header::ROUTE_REFRESH_LEN + self.trailing.len(),
        );
        out.put_u16(self.family.afi.into());
        out.put_u8(self.subtype.into());
        out.put_u8(self.family.safi.into());
        out.put_slice(&self.trailing);
    }
}
