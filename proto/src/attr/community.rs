//! Communities (RFC 1997), extended communities (RFC 4360) and large communities (RFC 8092).

use std::fmt;

/// A standard community: 2 octets of AS, 2 octets of value (RFC 1997).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT 0xFFFFFF01: do not advertise outside the AS or confederation (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE 0xFFFFFF02: do not advertise to any peer (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED 0xFFFFFF03: do not advertise to external peers, not even to other
    /// members of the confederation (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    /// A community from its `ASN:value` halves.
    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }

    /// The high half, conventionally an AS number.
    pub fn asn(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The low half.
    pub fn value(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Community::NO_EXPORT => f.write_str("no-export"),
            Community::NO_ADVERTISE => f.write_str("no-advertise"),
            Community::NO_EXPORT_SUBCONFED => f.write_str("no-export-subconfed"),
            c => write!(f, "{}:{}", c.asn(), c.value()),
        }
    }
}

/// An extended community, 8 octets: type, sub-type and value (RFC 4360 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedCommunity(pub [u8; 8]);

impl ExtendedCommunity {
    /// The type octet (high-order octet, RFC 4360 §2).
    pub fn type_high(self) -> u8 {
        self.0[0]
    }

    /// The sub-type octet for types with an extended type (RFC 4360 §2).
    pub fn subtype(self) -> u8 {
        self.0[1]
    }

    /// True if the community may be passed outside the AS (the "T" bit is clear, RFC 4360 §2).
    pub fn is_transitive(self) -> bool {
        self.0[0] & 0x40 == 0
    }

    /// A two-octet-AS specific route target (type 0x00, sub-type 0x02; RFC 4360 §4).
    pub fn route_target(asn: u16, value: u32) -> Self {
        let a = asn.to_be_bytes();
        let v = value.to_be_bytes();
        ExtendedCommunity([0x00, 0x02, a[0], a[1], v[0], v[1], v[2], v[3]])
    }
}

/// A large community: three 4-octet fields (RFC 8092 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator, conventionally an AS number.
    pub global_admin: u32,
    /// First local data part.
    pub local_data1: u32,
    /// Second local data part.
    pub local_data2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.global_admin, self.local_data1, self.local_data2
        )
    }
}
