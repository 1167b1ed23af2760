//! The negotiated session state that changes how messages are encoded and decoded.

use crate::types::AfiSafi;

/// Session state the codec needs, negotiated from the two OPEN messages.
///
/// Build one per direction: for decoding, `add_path_*` say whether the peer *sends* path
/// identifiers to us; for encoding, whether we send them (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseContext {
    /// Both sides announced the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet
    /// AS numbers (RFC 6793 §3). When false they carry 2-octet ones and AS4_PATH /
    /// AS4_AGGREGATOR complete them (RFC 6793 §4.2).
    pub four_octet_as: bool,
    /// Both sides announced the extended message capability: UPDATE, NOTIFICATION and
    /// ROUTE-REFRESH may be up to 65535 octets long (RFC 8654 §3).
    pub extended_message: bool,
    /// NLRI of IPv4 unicast carry a 4-octet path identifier (RFC 7911 §3).
    pub add_path_ipv4: bool,
    /// NLRI of IPv6 unicast carry a 4-octet path identifier (RFC 7911 §3).
    pub add_path_ipv6: bool,
    /// The peer is an external neighbour (another AS, not a member of our confederation):
    /// AS_PATH confederation segments are then treated as withdraw (RFC 7606 §7.2) and
    /// LOCAL_PREF is discarded (RFC 7606 §7.5).
    pub external_peer: bool,
}

impl ParseContext {
    /// The context before any capability is negotiated (plain RFC 4271).
    pub const fn new() -> Self {
        ParseContext {
            four_octet_as: false,
            extended_message: false,
            add_path_ipv4: false,
            add_path_ipv6: false,
            external_peer: false,
        }
    }

    /// A context with 4-octet AS numbers, as nearly every modern session has.
    pub const fn modern() -> Self {
        ParseContext {
            four_octet_as: true,
            ..Self::new()
        }
    }

    /// Largest message length allowed for UPDATE/NOTIFICATION/ROUTE-REFRESH (RFC 8654 §4).
    pub const fn max_message_len(&self) -> usize {
        if self.extended_message {
            crate::header::MAX_EXTENDED_MESSAGE_LEN
        } else {
            crate::header::MAX_MESSAGE_LEN
        }
    }

    /// Whether NLRI of this family carry path identifiers (RFC 7911 §3).
    pub fn add_path(&self, family: AfiSafi) -> bool {
        if family == AfiSafi::IPV4_UNICAST {
            self.add_path_ipv4
        } else if family == AfiSafi::IPV6_UNICAST {
            self.add_path_ipv6
        } else {
            false
        }
    }
}
