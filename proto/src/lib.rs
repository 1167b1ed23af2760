//! BGP wire format: messages, capabilities, path attributes, NLRI (pure, no I/O).
//!
//! Decoding is done with `nom` from a byte slice; encoding appends to a [`bytes::BytesMut`].
//! Everything that depends on the negotiated session state (4-octet AS numbers, ADD-PATH,
//! extended messages) is passed explicitly as a [`ParseContext`].
//!
//! # Decoding
//!
//! [`decode_message`] takes one complete BGP message (use [`frame_length`] to find where it ends
//! in a TCP byte stream) and returns either a [`Message`] or a [`DecodeError`]. A `DecodeError`
//! always carries the exact [`NotificationMessage`] to send before closing the session
//! (RFC 4271 §6, RFC 7606 "session reset"). Softer UPDATE errors (RFC 7606 "treat-as-withdraw"
//! and "attribute discard") are not errors of the decoder: the [`UpdateMessage`] is returned with
//! its [`UpdateMessage::errors`] filled in and [`UpdateMessage::action`] telling the speaker what
//! to do with it. The decision which error leads to which action is made in one place,
//! [`error::action_for`].
//!
//! # Encoding
//!
//! [`Message::encode`] writes one message. [`pack::UpdatePacker`] packs many prefixes that share
//! one attribute set into as few UPDATE messages as the maximum message size allows.
#![forbid(unsafe_code)]

pub mod attr;
pub mod capability;
pub mod context;
pub mod error;
pub mod header;
pub mod message;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod pack;
pub mod route_refresh;
pub mod types;
pub mod update;
mod wire;

pub use attr::{
    AsPath, AsSegment, AsSegmentType, Community, ExtendedCommunity, LargeCommunity, Origin,
    PathAttributes, RawAttribute,
};
pub use capability::Capability;
pub use context::ParseContext;
pub use error::{Action, AttrError, AttrErrorKind, DecodeError, EncodeError};
pub use header::{
    frame_length, MessageType, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN,
};
pub use message::{decode_message, decode_stream, decode_update_into, Message};
pub use nlri::{Ipv4Prefix, Ipv6Prefix, Nlri, PathId};
pub use notification::{ErrorCode, NotificationMessage};
pub use open::OpenMessage;
pub use route_refresh::{RouteRefreshMessage, RouteRefreshSubtype};
pub use types::{Afi, AfiSafi, Asn, Safi};
pub use update::{MpNextHop, MpNlri, MpReach, MpUnreach, UpdateMessage};
