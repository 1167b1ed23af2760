//! NOTIFICATION message (RFC 4271 §4.5, §6) with every error code and subcode named:
//! RFC 4271, RFC 5492 (capabilities), RFC 6608 (FSM), RFC 4486 / RFC 8538 (cease), RFC 7313
//! (route refresh), and the shutdown communication of RFC 8203 / RFC 9003.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::header::{self, MessageType};

/// Maximum octets of a shutdown communication (RFC 9003 §2).
pub const MAX_SHUTDOWN_MESSAGE_LEN: usize = 255;

/// Error codes of the NOTIFICATION message (RFC 4271 §4.5, IANA "BGP Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: Message Header Error (RFC 4271 §6.1).
    MessageHeader(HeaderSubcode),
    /// 2: OPEN Message Error (RFC 4271 §6.2).
    Open(OpenSubcode),
    /// 3: UPDATE Message Error (RFC 4271 §6.3).
    Update(UpdateSubcode),
    /// 4: Hold Timer Expired (RFC 4271 §6.5).
    HoldTimerExpired,
    /// 5: Finite State Machine Error (RFC 4271 §6.6, subcodes RFC 6608 §3).
    Fsm(FsmSubcode),
    /// 6: Cease (RFC 4271 §6.7, subcodes RFC 4486 §4).
    Cease(CeaseSubcode),
    /// 7: ROUTE-REFRESH Message Error (RFC 7313 §5).
    RouteRefresh(RouteRefreshSubcode),
    /// Any other code/subcode, kept as received.
    Other {
        /// The error code.
        code: u8,
        /// The error subcode.
        subcode: u8,
    },
}

macro_rules! subcodes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            /// 0: Unspecific.
            Unspecific,
            $($(#[$vm])* $v,)*
            /// A subcode not named by the RFCs, kept as received.
            Other(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v { 0 => $name::Unspecific, $($n => $name::$v,)* o => $name::Other(o) }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v { $name::Unspecific => 0, $($name::$v => $n,)* $name::Other(o) => o }
            }
        }
    };
}

subcodes!(
    /// Subcodes of Message Header Error (RFC 4271 §4.5).
    HeaderSubcode {
        /// 1: Connection Not Synchronized (bad marker).
        ConnectionNotSynchronized = 1,
        /// 2: Bad Message Length; data is the erroneous length field.
        BadMessageLength = 2,
        /// 3: Bad Message Type; data is the erroneous type field.
        BadMessageType = 3,
    }
);

subcodes!(
    /// Subcodes of OPEN Message Error (RFC 4271 §4.5, RFC 5492 §5, RFC 9234).
    OpenSubcode {
        /// 1: Unsupported Version Number; data is the largest supported version (2 octets).
        UnsupportedVersionNumber = 1,
        /// 2: Bad Peer AS.
        BadPeerAs = 2,
        /// 3: Bad BGP Identifier.
        BadBgpIdentifier = 3,
        /// 4: Unsupported Optional Parameter.
        UnsupportedOptionalParameter = 4,
        /// 5: Authentication Failure (deprecated by RFC 4271).
        AuthenticationFailure = 5,
        /// 6: Unacceptable Hold Time.
        UnacceptableHoldTime = 6,
        /// 7: Unsupported Capability (RFC 5492 §5); data lists the capabilities.
        UnsupportedCapability = 7,
        /// 11: Role Mismatch (RFC 9234 §4.2).
        RoleMismatch = 11,
    }
);

subcodes!(
    /// Subcodes of UPDATE Message Error (RFC 4271 §4.5).
    UpdateSubcode {
        /// 1: Malformed Attribute List.
        MalformedAttributeList = 1,
        /// 2: Unrecognized Well-known Attribute.
        UnrecognizedWellKnownAttribute = 2,
        /// 3: Missing Well-known Attribute.
        MissingWellKnownAttribute = 3,
        /// 4: Attribute Flags Error.
        AttributeFlagsError = 4,
        /// 5: Attribute Length Error.
        AttributeLengthError = 5,
        /// 6: Invalid ORIGIN Attribute.
        InvalidOriginAttribute = 6,
        /// 7: AS Routing Loop (deprecated by RFC 4271).
        AsRoutingLoop = 7,
        /// 8: Invalid NEXT_HOP Attribute.
        InvalidNextHopAttribute = 8,
        /// 9: Optional Attribute Error.
        OptionalAttributeError = 9,
        /// 10: Invalid Network Field.
        InvalidNetworkField = 10,
        /// 11: Malformed AS_PATH.
        MalformedAsPath = 11,
    }
);

subcodes!(
    /// Subcodes of Finite State Machine Error (RFC 6608 §3).
    FsmSubcode {
        /// 1: Receive Unexpected Message in OpenSent State.
        UnexpectedMessageInOpenSent = 1,
        /// 2: Receive Unexpected Message in OpenConfirm State.
        UnexpectedMessageInOpenConfirm = 2,
        /// 3: Receive Unexpected Message in Established State.
        UnexpectedMessageInEstablished = 3,
    }
);

subcodes!(
    /// Subcodes of Cease (RFC 4486 §4, RFC 8538 §3, RFC 9384).
    CeaseSubcode {
        /// 1: Maximum Number of Prefixes Reached.
        MaximumPrefixesReached = 1,
        /// 2: Administrative Shutdown (may carry a shutdown communication, RFC 9003).
        AdministrativeShutdown = 2,
        /// 3: Peer De-configured.
        PeerDeconfigured = 3,
        /// 4: Administrative Reset (may carry a shutdown communication, RFC 9003).
        AdministrativeReset = 4,
        /// 5: Connection Rejected.
        ConnectionRejected = 5,
        /// 6: Other Configuration Change.
        OtherConfigurationChange = 6,
        /// 7: Connection Collision Resolution.
        ConnectionCollisionResolution = 7,
        /// 8: Out of Resources.
        OutOfResources = 8,
        /// 9: Hard Reset (RFC 8538 §3).
        HardReset = 9,
        /// 10: BFD Down (RFC 9384).
        BfdDown = 10,
    }
);

subcodes!(
    /// Subcodes of ROUTE-REFRESH Message Error (RFC 7313 §5).
    RouteRefreshSubcode {
        /// 1: Invalid Message Length.
        InvalidMessageLength = 1,
    }
);

impl ErrorCode {
    /// Build from the two wire octets.
    pub fn from_raw(code: u8, subcode: u8) -> Self {
        match code {
            1 => ErrorCode::MessageHeader(subcode.into()),
            2 => ErrorCode::Open(subcode.into()),
            3 => ErrorCode::Update(subcode.into()),
            4 if subcode == 0 => ErrorCode::HoldTimerExpired,
            5 => ErrorCode::Fsm(subcode.into()),
            6 => ErrorCode::Cease(subcode.into()),
            7 => ErrorCode::RouteRefresh(subcode.into()),
            _ => ErrorCode::Other { code, subcode },
        }
    }

    /// The (code, subcode) wire octets.
    pub fn to_raw(self) -> (u8, u8) {
        match self {
            ErrorCode::MessageHeader(s) => (1, s.into()),
            ErrorCode::Open(s) => (2, s.into()),
            ErrorCode::Update(s) => (3, s.into()),
            ErrorCode::HoldTimerExpired => (4, 0),
            ErrorCode::Fsm(s) => (5, s.into()),
            ErrorCode::Cease(s) => (6, s.into()),
            ErrorCode::RouteRefresh(s) => (7, s.into()),
            ErrorCode::Other { code, subcode } => (code, subcode),
        }
    }
}

/// A NOTIFICATION message (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationMessage {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Diagnostic data, as defined per code/subcode.
    pub data: Vec<u8>,
}

impl NotificationMessage {
    /// A notification with the given code and data.
    pub fn new(code: ErrorCode, data: Vec<u8>) -> Self {
        let (code, subcode) = code.to_raw();
        NotificationMessage {
            code,
            subcode,
            data,
        }
    }

    /// Cease / Administrative Shutdown or Reset with a shutdown communication (RFC 9003 §2).
    /// The text is cut at a character boundary to at most 255 octets.
    pub fn shutdown(subcode: CeaseSubcode, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_MESSAGE_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = message.get(..end).unwrap_or_default().as_bytes();
        let mut data = Vec::with_capacity(text.len() + 1);
        data.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(text);
        Self::new(ErrorCode::Cease(subcode), data)
    }

    /// The classified code and subcode.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_raw(self.code, self.subcode)
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or Reset
    /// (RFC 9003 §2), if present and well-formed UTF-8.
    pub fn shutdown_message(&self) -> Option<&str> {
        if self.code != 6 || !(self.subcode == 2 || self.subcode == 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    /// Decode the body (after the 19-octet header) of a NOTIFICATION (RFC 4271 §4.5).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match body {
            [code, subcode, data @ ..] => Ok(NotificationMessage {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }),
            _ => Err(DecodeError::bad_length(body.len() + header::HEADER_LEN)),
        }
    }

    /// Length of the body on the wire.
    pub fn body_len(&self) -> usize {
        2 + self.data.len()
    }

    /// Append the whole message, header included.
    pub fn encode(&self, out: &mut BytesMut) {
        header::put_header(
            out,
            MessageType::Notification,
            header::HEADER_LEN + self.body_len(),
        );
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }
}

impl fmt::Display for NotificationMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NOTIFICATION {:?} ({}/{})",
            self.error_code(),
            self.code,
            self.subcode
        )?;
        if !self.data.is_empty() {
            write!(f, " data")?;
            for b in self.data.iter().take(32) {
                write!(f, " {b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_raw_values() {
        for code in 0..=8u8 {
            for sub in 0..=12u8 {
                let e = ErrorCode::from_raw(code, sub);
                assert_eq!(e.to_raw(), (code, sub), "{e:?}");
            }
        }
        assert_eq!(
            ErrorCode::from_raw(6, 2),
            ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
        );
        assert_eq!(
            ErrorCode::from_raw(3, 11),
            ErrorCode::Update(UpdateSubcode::MalformedAsPath)
        );
    }

    #[test]
    fn shutdown_message_is_cut_at_a_char_boundary() {
        let long = "é".repeat(200); // 400 octets
        let n = NotificationMessage::shutdown(CeaseSubcode::AdministrativeReset, &long);
        let text = n.shutdown_message().unwrap();
        assert_eq!(text.len(), 254);
        assert_eq!(usize::from(n.data[0]), 254);
        // A length byte that overruns the data yields no message rather than a panic.
        let bad = NotificationMessage {
            code: 6,
            subcode: 2,
            data: vec![10, b'a'],
        };
        assert_eq!(bad.shutdown_message(), None);
    }
}
