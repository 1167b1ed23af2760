//! Error classification (RFC 4271 §6, RFC 7606).
//!
//! Errors that end the session are returned as a [`DecodeError`] carrying the NOTIFICATION to
//! send. The softer RFC 7606 outcomes ("treat-as-withdraw", "attribute discard") are recorded as
//! [`AttrError`]s on the decoded UPDATE. Which outcome an error gets is decided in one place,
//! [`action_for`].

use crate::attr::type_code as t;
use crate::notification::{ErrorCode, HeaderSubcode, NotificationMessage, UpdateSubcode};

/// The decoder refused a message: the session must be reset with this NOTIFICATION
/// (RFC 4271 §6, RFC 7606 §2 "session reset").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session reset ({reason}): {notification}")]
pub struct DecodeError {
    /// The NOTIFICATION to send before closing the connection.
    pub notification: NotificationMessage,
    /// A short human-readable reason, for logs.
    pub reason: &'static str,
}

impl DecodeError {
    /// A session reset with the given NOTIFICATION.
    pub fn reset(notification: NotificationMessage, reason: &'static str) -> Self {
        DecodeError {
            notification,
            reason,
        }
    }

    /// Message Header Error / Bad Message Length with the erroneous length (RFC 4271 §6.1).
    pub(crate) fn bad_length(len: usize) -> Self {
        let field = u16::try_from(len)
            .unwrap_or(u16::MAX)
            .to_be_bytes()
            .to_vec();
        DecodeError::reset(
            NotificationMessage::new(
                ErrorCode::MessageHeader(HeaderSubcode::BadMessageLength),
                field,
            ),
            "bad message length",
        )
    }

    /// UPDATE Message Error with the given subcode and data (RFC 4271 §6.3).
    pub(crate) fn update(subcode: UpdateSubcode, data: Vec<u8>, reason: &'static str) -> Self {
        DecodeError::reset(
            NotificationMessage::new(ErrorCode::Update(subcode), data),
            reason,
        )
    }
}

/// An encoding request that cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed the maximum message length (RFC 4271 §4.1, RFC 8654).
    #[error("message of {len} octets exceeds the maximum of {max}")]
    MessageTooLong {
        /// The length the message would have.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// A path attribute value exceeds 65535 octets (RFC 4271 §4.3).
    #[error("path attribute {type_code} of {len} octets is too long")]
    AttributeTooLong {
        /// Attribute type code.
        type_code: u8,
        /// Its length.
        len: usize,
    },
    /// An optional parameter or capability exceeds its length field.
    #[error("OPEN optional parameters of {len} octets are too long")]
    OptionalParametersTooLong {
        /// Their length.
        len: usize,
    },
}

/// What RFC 7606 says to do about an error (RFC 7606 §2), ordered from mildest to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// "Attribute discard": the attribute was dropped, the rest of the UPDATE stands.
    Discard,
    /// "Treat-as-withdraw": every prefix in the UPDATE (NLRI field and MP_REACH_NLRI) is to be
    /// handled as withdrawn.
    TreatAsWithdraw,
    /// "Session reset": send the NOTIFICATION and close (never stored in an
    /// [`AttrError`]; it becomes a [`DecodeError`]).
    SessionReset,
}

/// What was wrong with an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrErrorKind {
    /// Optional/Transitive flags conflict with the attribute's definition (RFC 7606 §3 c).
    Flags,
    /// The attribute length is wrong for its type (RFC 7606 §7).
    Length,
    /// The value is malformed: bad ORIGIN value, AS_PATH segment error, bad next-hop length,
    /// ... (RFC 7606 §7).
    Value,
    /// The attribute occurred more than once (RFC 7606 §3 g, j).
    Duplicate,
    /// A well-known mandatory attribute is missing (RFC 7606 §3 d).
    Missing,
    /// An unrecognized attribute had the Optional bit clear (RFC 4271 §6.3).
    UnrecognizedWellKnown,
    /// An attribute header or length overruns the path attribute field (RFC 7606 §4).
    Overrun,
    /// An NLRI inside the attribute is malformed (RFC 7606 §5.3).
    InvalidNetwork,
    /// The attribute is well-formed but not allowed from this peer: AS4_PATH / AS4_AGGREGATOR
    /// on a session where both sides use 4-octet AS numbers (RFC 6793 §3), LOCAL_PREF or an
    /// AS_PATH with confederation segments from an external peer (RFC 7606 §7.5, §7.2).
    Unexpected,
}

/// One attribute error found while decoding an UPDATE, with the action it calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrError {
    /// Attribute type code (0 when the error is about the attribute field as a whole).
    pub type_code: u8,
    /// What was wrong.
    pub kind: AttrErrorKind,
    /// What to do about it ([`action_for`]).
    pub action: Action,
}

/// The single place where an attribute error is mapped to its RFC 7606 action.
///
/// * ORIGIN, AS_PATH, NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID,
///   CLUSTER_LIST, EXTENDED_COMMUNITIES, LARGE_COMMUNITY: treat-as-withdraw
///   (RFC 7606 §7.1–7.10, §7.14, RFC 8092 §6).
/// * ATOMIC_AGGREGATE, AGGREGATOR: attribute discard (RFC 7606 §7.6, §7.7);
///   AS4_PATH, AS4_AGGREGATOR: attribute discard (RFC 6793 §6).
/// * MP_REACH_NLRI, MP_UNREACH_NLRI: session reset (RFC 7606 §7.11, §3 j; "AFI/SAFI disable"
///   is not offered).
/// * A duplicate of any other attribute: discard (RFC 7606 §3 g).
/// * Not allowed from this peer (see [`AttrErrorKind::Unexpected`]): AS_PATH treat-as-withdraw,
///   the others discard.
/// * A missing mandatory attribute or an overrun of the attribute field: treat-as-withdraw
///   (RFC 7606 §3 d, §4).
/// * An unrecognized well-known attribute: session reset (RFC 4271 §6.3).
/// * A malformed NLRI: session reset (RFC 7606 §5.3).
pub fn action_for(code: u8, kind: AttrErrorKind) -> Action {
    match kind {
        AttrErrorKind::UnrecognizedWellKnown | AttrErrorKind::InvalidNetwork => {
            Action::SessionReset
        }
        AttrErrorKind::Missing | AttrErrorKind::Overrun => Action::TreatAsWithdraw,
        AttrErrorKind::Unexpected if code == t::AS_PATH => Action::TreatAsWithdraw,
        AttrErrorKind::Unexpected => Action::Discard,
        AttrErrorKind::Duplicate => match code {
            t::MP_REACH_NLRI | t::MP_UNREACH_NLRI => Action::SessionReset,
            _ => Action::Discard,
        },
        AttrErrorKind::Flags | AttrErrorKind::Length | AttrErrorKind::Value => match code {
            t::MP_REACH_NLRI | t::MP_UNREACH_NLRI => Action::SessionReset,
            t::ATOMIC_AGGREGATE | t::AGGREGATOR | t::AS4_PATH | t::AS4_AGGREGATOR => {
                Action::Discard
            }
            _ => Action::TreatAsWithdraw,
        },
    }
}

/// The NOTIFICATION for an attribute error whose action is a session reset (RFC 4271 §6.3):
/// the subcode follows the kind of error, the data is the offending attribute (flags, type,
/// length and value) where RFC 4271 asks for it.
pub(crate) fn reset_for(code: u8, kind: AttrErrorKind, attribute: &[u8]) -> DecodeError {
    let attr = attribute.to_vec();
    match kind {
        AttrErrorKind::Flags => DecodeError::update(
            UpdateSubcode::AttributeFlagsError,
            attr,
            "attribute flags error",
        ),
        AttrErrorKind::Length => DecodeError::update(
            UpdateSubcode::AttributeLengthError,
            attr,
            "attribute length error",
        ),
        AttrErrorKind::Value if code == t::MP_REACH_NLRI || code == t::MP_UNREACH_NLRI => {
            DecodeError::update(
                UpdateSubcode::OptionalAttributeError,
                attr,
                "malformed multiprotocol attribute",
            )
        }
        AttrErrorKind::Value => DecodeError::update(
            UpdateSubcode::OptionalAttributeError,
            attr,
            "malformed attribute",
        ),
        AttrErrorKind::Duplicate
        | AttrErrorKind::Overrun
        | AttrErrorKind::Missing
        | AttrErrorKind::Unexpected => DecodeError::update(
            UpdateSubcode::MalformedAttributeList,
            Vec::new(),
            "malformed attribute list",
        ),
        AttrErrorKind::UnrecognizedWellKnown => DecodeError::update(
            UpdateSubcode::UnrecognizedWellKnownAttribute,
            attr,
            "unrecognized well-known attribute",
        ),
        AttrErrorKind::InvalidNetwork => DecodeError::update(
            UpdateSubcode::InvalidNetworkField,
            Vec::new(),
            "invalid network field",
        ),
    }
}
