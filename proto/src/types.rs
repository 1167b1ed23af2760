//! Small domain types shared by every message: AS numbers and address families.

use std::fmt;

/// An autonomous system number, always held as 4 octets (RFC 6793 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Asn(pub u32);

impl Asn {
    /// `AS_TRANS` (23456), the 2-octet stand-in for a 4-octet AS number (RFC 6793 §9).
    pub const TRANS: Asn = Asn(23456);

    /// True if the number fits the 2-octet encoding (RFC 6793 §3).
    pub fn is_2_octet(self) -> bool {
        self.0 <= u32::from(u16::MAX)
    }

    /// The number to put in a 2-octet field: itself, or `AS_TRANS` if it does not fit
    /// (RFC 6793 §4.2.2).
    pub fn to_2_octet(self) -> u16 {
        u16::try_from(self.0).unwrap_or(23456)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AS{}", self.0)
    }
}

impl From<u32> for Asn {
    fn from(v: u32) -> Self {
        Asn(v)
    }
}

/// Address Family Identifier (RFC 4760 §3, IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    /// IPv4 (1).
    Ipv4,
    /// IPv6 (2).
    Ipv6,
    /// Any other value, kept as received.
    Other(u16),
}

impl From<u16> for Afi {
    fn from(v: u16) -> Self {
        match v {
            1 => Afi::Ipv4,
            2 => Afi::Ipv6,
            o => Afi::Other(o),
        }
    }
}

impl From<Afi> for u16 {
    fn from(a: Afi) -> u16 {
        match a {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
            Afi::Other(o) => o,
        }
    }
}

/// Subsequent Address Family Identifier (RFC 4760 §3, IANA "SAFI Values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Safi {
    /// Unicast forwarding (1).
    Unicast,
    /// Multicast forwarding (2).
    Multicast,
    /// Any other value, kept as received.
    Other(u8),
}

impl From<u8> for Safi {
    fn from(v: u8) -> Self {
        match v {
            1 => Safi::Unicast,
            2 => Safi::Multicast,
            o => Safi::Other(o),
        }
    }
}

impl From<Safi> for u8 {
    fn from(s: Safi) -> u8 {
        match s {
            Safi::Unicast => 1,
            Safi::Multicast => 2,
            Safi::Other(o) => o,
        }
    }
}

/// An AFI/SAFI pair, the unit of multiprotocol negotiation (RFC 4760 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    /// The address family.
    pub afi: Afi,
    /// The subsequent address family.
    pub safi: Safi,
}

impl AfiSafi {
    /// IPv4 unicast (1/1).
    pub const IPV4_UNICAST: AfiSafi = AfiSafi {
        afi: Afi::Ipv4,
        safi: Safi::Unicast,
    };
    /// IPv6 unicast (2/1).
    pub const IPV6_UNICAST: AfiSafi = AfiSafi {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
    };

    /// Build a pair from the raw wire values.
    pub fn new(afi: u16, safi: u8) -> Self {
        AfiSafi {
            afi: afi.into(),
            safi: safi.into(),
        }
    }
}

impl fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", u16::from(self.afi), u8::from(self.safi))
    }
}
