//! Capabilities advertised in OPEN (RFC 5492): multiprotocol (RFC 4760 §8), route refresh
//! (RFC 2918 §2), enhanced route refresh (RFC 7313 §3), 4-octet AS (RFC 6793 §3), graceful
//! restart (RFC 4724 §3), extended message (RFC 8654 §3), ADD-PATH (RFC 7911 §4) and long-lived
//! graceful restart (RFC 9494 §3). Anything else is kept as bytes.

use bytes::{BufMut, BytesMut};

use crate::types::{AfiSafi, Asn};

/// Capability codes (IANA "Capability Codes").
pub mod code {
    /// Multiprotocol Extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route Refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Extended Message (RFC 8654).
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// Graceful Restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// 4-octet AS number (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// ADD-PATH (RFC 7911).
    pub const ADD_PATH: u8 = 69;
    /// Enhanced Route Refresh (RFC 7313).
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    /// Long-Lived Graceful Restart (RFC 9494).
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
}

/// Per-family entry of the graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// The address family.
    pub family: AfiSafi,
    /// F bit: forwarding state was preserved across the restart.
    pub forwarding_state: bool,
}

/// Graceful restart capability value (RFC 4724 §3, N bit RFC 8538 §2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the speaker has restarted.
    pub restart_state: bool,
    /// N bit: graceful restart also applies to NOTIFICATION (RFC 8538 §2).
    pub notification: bool,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Families for which state is preserved.
    pub families: Vec<GracefulRestartFamily>,
}

/// Send/receive field of an ADD-PATH entry (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    /// 1: able to receive multiple paths.
    Receive,
    /// 2: able to send multiple paths.
    Send,
    /// 3: both.
    Both,
}

impl AddPathMode {
    fn code(self) -> u8 {
        match self {
            AddPathMode::Receive => 1,
            AddPathMode::Send => 2,
            AddPathMode::Both => 3,
        }
    }

    /// The speaker can receive multiple paths.
    pub fn can_receive(self) -> bool {
        matches!(self, AddPathMode::Receive | AddPathMode::Both)
    }

    /// The speaker can send multiple paths.
    pub fn can_send(self) -> bool {
        matches!(self, AddPathMode::Send | AddPathMode::Both)
    }
}

/// One ADD-PATH entry (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathFamily {
    /// The address family.
    pub family: AfiSafi,
    /// Send/receive.
    pub mode: AddPathMode,
}

/// One long-lived graceful restart entry (RFC 9494 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LlgrFamily {
    /// The address family.
    pub family: AfiSafi,
    /// F bit: forwarding state preserved.
    pub forwarding_state: bool,
    /// Long-lived stale time in seconds (24 bits).
    pub stale_time: u32,
}

/// A capability (RFC 5492 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI (RFC 4760 §8).
    Multiprotocol(AfiSafi),
    /// Route refresh (RFC 2918 §2).
    RouteRefresh,
    /// Enhanced route refresh (RFC 7313 §3).
    EnhancedRouteRefresh,
    /// Extended message (RFC 8654 §3).
    ExtendedMessage,
    /// 4-octet AS number support and the speaker's real AS (RFC 6793 §3).
    FourOctetAs(Asn),
    /// Graceful restart (RFC 4724 §3).
    GracefulRestart(GracefulRestart),
    /// ADD-PATH (RFC 7911 §4).
    AddPath(Vec<AddPathFamily>),
    /// Long-lived graceful restart (RFC 9494 §3).
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    /// Any other capability, or a recognised one with a value this codec does not accept.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// A capability whose length does not match its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedCapability;

fn fam(afi: [u8; 2], safi: u8) -> AfiSafi {
    AfiSafi::new(u16::from_be_bytes(afi), safi)
}

fn put_fam(out: &mut BytesMut, f: AfiSafi) {
    out.put_u16(f.afi.into());
    out.put_u8(f.safi.into());
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::LongLivedGracefulRestart(_) => code::LONG_LIVED_GRACEFUL_RESTART,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decode one capability value (RFC 5492 §4).
    pub(crate) fn decode(code: u8, v: &[u8]) -> Result<Self, MalformedCapability> {
        let m = MalformedCapability;
        Ok(match code {
            code::MULTIPROTOCOL => match *v {
                [a0, a1, _res, safi] => Capability::Multiprotocol(fam([a0, a1], safi)),
                _ => return Err(m),
            },
            code::ROUTE_REFRESH if v.is_empty() => Capability::RouteRefresh,
            code::ENHANCED_ROUTE_REFRESH if v.is_empty() => Capability::EnhancedRouteRefresh,
            code::EXTENDED_MESSAGE if v.is_empty() => Capability::ExtendedMessage,
            code::ROUTE_REFRESH | code::ENHANCED_ROUTE_REFRESH | code::EXTENDED_MESSAGE => {
                return Err(m)
            }
            code::FOUR_OCTET_AS => match *v {
                [a, b, c, d] => Capability::FourOctetAs(Asn(u32::from_be_bytes([a, b, c, d]))),
                _ => return Err(m),
            },
            code::GRACEFUL_RESTART => {
                let ([f0, f1], rest) = v.split_first_chunk::<2>().map(|(h, r)| (*h, r)).ok_or(m)?;
                if rest.len() % 4 != 0 {
                    return Err(m);
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: f0 & 0x80 != 0,
                    notification: f0 & 0x40 != 0,
                    restart_time: u16::from_be_bytes([f0 & 0x0f, f1]),
                    families: rest
                        .chunks_exact(4)
                        .map(|c| GracefulRestartFamily {
                            family: fam([c[0], c[1]], c[2]),
                            forwarding_state: c[3] & 0x80 != 0,
                        })
                        .collect(),
                })
            }
            code::ADD_PATH => {
                if v.len() % 4 != 0 {
                    return Err(m);
                }
                let mut out = Vec::with_capacity(v.len() / 4);
                for c in v.chunks_exact(4) {
                    let mode = match c[3] {
                        1 => AddPathMode::Receive,
                        2 => AddPathMode::Send,
                        3 => AddPathMode::Both,
                        // RFC 7911 §4: other values make the capability not understood.
                        _ => {
                            return Ok(Capability::Unknown {
                                code,
                                value: v.to_vec(),
                            })
                        }
                    };
                    out.push(AddPathFamily {
                        family: fam([c[0], c[1]], c[2]),
                        mode,
                    });
                }
                Capability::AddPath(out)
            }
            code::LONG_LIVED_GRACEFUL_RESTART => {
                if v.len() % 7 != 0 {
                    return Err(m);
                }
                Capability::LongLivedGracefulRestart(
                    v.chunks_exact(7)
                        .map(|c| LlgrFamily {
                            family: fam([c[0], c[1]], c[2]),
                            forwarding_state: c[3] & 0x80 != 0,
                            stale_time: u32::from_be_bytes([0, c[4], c[5], c[6]]),
                        })
                        .collect(),
                )
            }
            _ => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        })
    }

    /// Length of the value.
    pub fn value_len(&self) -> usize {
        match self {
            Capability::Multiprotocol(_) | Capability::FourOctetAs(_) => 4,
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => 0,
            Capability::GracefulRestart(g) => 2 + 4 * g.families.len(),
            Capability::AddPath(v) => 4 * v.len(),
            Capability::LongLivedGracefulRestart(v) => 7 * v.len(),
            Capability::Unknown { value, .. } => value.len(),
        }
    }

    /// Append code, length and value (RFC 5492 §4). Values over 255 octets are truncated in
    /// the length field; callers check [`Capability::value_len`].
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code());
        out.put_u8(u8::try_from(self.value_len()).unwrap_or(u8::MAX));
        match self {
            Capability::Multiprotocol(f) => {
                out.put_u16(f.afi.into());
                out.put_u8(0);
                out.put_u8(f.safi.into());
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(a) => out.put_u32(a.0),
            Capability::GracefulRestart(g) => {
                let mut flags = 0u16;
                if g.restart_state {
                    flags |= 0x8000;
                }
                if g.notification {
                    flags |= 0x4000;
                }
                out.put_u16(flags | (g.restart_time & 0x0fff));
                for f in &g.families {
                    put_fam(out, f.family);
                    out.put_u8(if f.forwarding_state { 0x80 } else { 0 });
                }
            }
            Capability::AddPath(v) => {
                for e in v {
                    put_fam(out, e.family);
                    out.put_u8(e.mode.code());
                }
            }
            Capability::LongLivedGracefulRestart(v) => {
                for e in v {
                    put_fam(out, e.family);
                    out.put_u8(if e.forwarding_state { 0x80 } else { 0 });
                    let t = e.stale_time.to_be_bytes();
                    out.put_slice(t.get(1..).unwrap_or_default());
                }
            }
            Capability::Unknown { value, .. } => out.put_slice(value),
        }
    }
}
