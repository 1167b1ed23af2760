//! The BFD Control packet of RFC 5880 §4.1, and the packet checks of §6.8.6 that need no
//! session (version, length, detect multiplier, multipoint bit, discriminators,
//! authentication).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```
//!
//! Calyx does not use authentication, so a packet with the A bit set is discarded (§6.8.6:
//! "If the A bit is set and no authentication is in use ... the packet MUST be discarded").

use std::fmt;

/// The length of a Control packet without authentication.
pub const PACKET_LEN: usize = 24;

/// The BFD protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// The session states of RFC 5880 §4.1 (the `Sta` field) and §6.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    /// Administratively held down (0).
    AdminDown,
    /// Down (1).
    Down,
    /// Init: the remote end was seen Down (2).
    Init,
    /// Up (3).
    Up,
}

impl State {
    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The state of a 2-bit wire value (only the low two bits are read).
    pub fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The diagnostic codes of RFC 5880 §4.1: why the local system last left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Diag {
    /// 0: No Diagnostic.
    None,
    /// 1: Control Detection Time Expired.
    ControlDetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFunctionFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborSignaledDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdminDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9-31: reserved for future use; kept as received.
    Reserved(u8),
}

impl Diag {
    /// The 5-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(v) => v & 0x1f,
        }
    }

    /// The diagnostic of a 5-bit wire value (only the low five bits are read).
    pub fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedPathDown,
            v => Diag::Reserved(v),
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Diag::None => "none",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdminDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved(v) => return write!(f, "reserved diagnostic {v}"),
        };
        f.write_str(s)
    }
}

/// A BFD Control packet (without authentication section). Intervals are in microseconds, as
/// on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    /// Diagnostic code.
    pub diag: Diag,
    /// The sender's session state.
    pub state: State,
    /// Poll (P): the sender asks for a packet with F set (a parameter change).
    pub poll: bool,
    /// Final (F): the answer to a Poll.
    pub fin: bool,
    /// Control Plane Independent (C).
    pub cpi: bool,
    /// Demand (D): the sender wishes to run in Demand mode.
    pub demand: bool,
    /// Detect Mult.
    pub detect_mult: u8,
    /// My Discriminator (never 0).
    pub my_discr: u32,
    /// Your Discriminator (0 when the remote one is not yet known).
    pub your_discr: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs (0: send no periodic packets).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (0: no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the fixed header, or than the Length field says.
    #[error("packet too short: {got} octets, need {need}")]
    Short {
        /// Octets received.
        got: usize,
        /// Octets needed.
        need: usize,
    },
    /// The version is not 1.
    #[error("unsupported BFD version {0}")]
    Version(u8),
    /// The Length field is smaller than the minimum.
    #[error("length field {0} below the minimum")]
    Length(u8),
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    /// The Multipoint bit is set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    ZeroMyDiscr,
    /// Your Discriminator is zero while the state is Init or Up.
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscr(State),
    /// The A bit is set; Calyx uses no authentication.
    #[error("authentication present but not configured")]
    Authentication,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

impl ControlPacket {
    /// Decode and validate one received datagram (RFC 5880 §6.8.6, the checks that need no
    /// session). Never panics, whatever the input.
    pub fn decode(b: &[u8]) -> Result<ControlPacket, PacketError> {
        if b.len() < PACKET_LEN {
            return Err(PacketError::Short {
                got: b.len(),
                need: PACKET_LEN,
            });
        }
        let version = b[0] >> 5;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let flags = b[1];
        let auth = flags & 0x04 != 0;
        let length = b[3];
        let min = if auth { 26 } else { PACKET_LEN as u8 };
        if length < min {
            return Err(PacketError::Length(length));
        }
        if usize::from(length) > b.len() {
            return Err(PacketError::Short {
                got: b.len(),
                need: usize::from(length),
            });
        }
        let p = ControlPacket {
            diag: Diag::from_bits(b[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            fin: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: b[2],
            my_discr: be32(b, 4),
            your_discr: be32(b, 8),
            desired_min_tx: be32(b, 12),
            required_min_rx: be32(b, 16),
            required_min_echo_rx: be32(b, 20),
        };
        if p.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        if p.my_discr == 0 {
            return Err(PacketError::ZeroMyDiscr);
        }
        if p.your_discr == 0 && matches!(p.state, State::Init | State::Up) {
            return Err(PacketError::ZeroYourDiscr(p.state));
        }
        if auth {
            return Err(PacketError::Authentication);
        }
        Ok(p)
    }

    /// Encode as the 24 octets of a Control packet without authentication.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (VERSION << 5) | self.diag.bits();
        b[1] = (self.state.bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.fin) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Control packet assembled by hand from the layout of RFC 5880 §4.1, in the shape a
    /// peer sends in state Down at an idle rate of 1 s before it knows the remote
    /// discriminator: Vers 1, Diag 0, Sta Down, Detect Mult 5, Length 24, RX 100 ms.
    const DOWN: [u8; 24] = [
        0x20, 0x40, 0x05, 0x18, 0x2f, 0x3a, 0x61, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42,
        0x40, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn decodes_a_down_packet() {
        let p = ControlPacket::decode(&DOWN).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.state, State::Down);
        assert_eq!(p.diag, Diag::None);
        assert_eq!(p.detect_mult, 5);
        assert_eq!(p.my_discr, 0x2f3a_610d);
        assert_eq!(p.your_discr, 0);
        assert_eq!(p.desired_min_tx, 1_000_000);
        assert_eq!(p.required_min_rx, 100_000);
        assert_eq!(p.encode(), DOWN);
    }

    /// Captured with tcpdump in a network namespace on 2026-12-03: BIRD 2.0.12 (`interval
    /// 300 ms; multiplier 3;`) in state Down, at its 1 s idle rate.
    const BIRD_2_0_12_DOWN: &str = "20400318 8f0ae4e4 00000000 000f4240 000493e0 00000000";
    /// The same from FRR bfdd 8.4.4 (`receive-interval 300`, `transmit-interval 300`,
    /// `detect-multiplier 3`): it asks for 1 s receive while Down and offers echo at 50 ms.
    const FRR_8_4_4_DOWN: &str = "20400318 27a77624 00000000 000f4240 000f4240 0000c350";

    fn hex(s: &str) -> Vec<u8> {
        let h: String = s.split_whitespace().collect();
        (0..h.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect()
    }

    #[test]
    fn decodes_what_bird_and_frr_send() {
        for (name, fixture, my, rx, echo) in [
            ("BIRD", BIRD_2_0_12_DOWN, 0x8f0a_e4e4, 300_000, 0),
            ("FRR", FRR_8_4_4_DOWN, 0x27a7_7624, 1_000_000, 50_000),
        ] {
            let b = hex(fixture);
            let p = ControlPacket::decode(&b).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (p.state, p.diag, p.detect_mult),
                (State::Down, Diag::None, 3)
            );
            assert_eq!((p.my_discr, p.your_discr), (my, 0), "{name}");
            assert_eq!(p.desired_min_tx, 1_000_000, "{name}");
            assert_eq!((p.required_min_rx, p.required_min_echo_rx), (rx, echo));
            assert!(!p.poll && !p.fin && !p.demand && !p.cpi);
            assert_eq!(p.encode().to_vec(), b, "{name}");
        }
    }

    fn with(mut b: [u8; 24], at: usize, v: u8) -> [u8; 24] {
        b[at] = v;
        b
    }

    #[test]
    fn rfc_5880_6_8_6_checks() {
        let d = ControlPacket::decode;
        assert!(matches!(d(&DOWN[..23]), Err(PacketError::Short { .. })));
        assert_eq!(d(&with(DOWN, 0, 0x40)), Err(PacketError::Version(2)));
        assert_eq!(d(&with(DOWN, 3, 23)), Err(PacketError::Length(23)));
        assert!(matches!(
            d(&with(DOWN, 3, 25)),
            Err(PacketError::Short { got: 24, need: 25 })
        ));
        assert_eq!(d(&with(DOWN, 2, 0)), Err(PacketError::ZeroDetectMult));
        assert_eq!(d(&with(DOWN, 1, 0x41)), Err(PacketError::Multipoint));
        let mut z = DOWN;
        z[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(d(&z), Err(PacketError::ZeroMyDiscr));
        // Your Discriminator 0 is only valid in Down and AdminDown.
        assert_eq!(
            d(&with(DOWN, 1, 0xc0)),
            Err(PacketError::ZeroYourDiscr(State::Up))
        );
        assert_eq!(
            d(&with(DOWN, 1, 0x80)),
            Err(PacketError::ZeroYourDiscr(State::Init))
        );
        assert!(d(&with(DOWN, 1, 0x00)).is_ok());
        // Authentication: a 24-octet packet with A set is too short; a longer one is refused.
        assert_eq!(d(&with(DOWN, 1, 0x44)), Err(PacketError::Length(24)));
        let mut a = [0u8; 28];
        a[..24].copy_from_slice(&DOWN);
        a[1] = 0x44;
        a[3] = 28;
        assert_eq!(d(&a), Err(PacketError::Authentication));
        // Trailing octets beyond Length are ignored.
        let mut long = [0u8; 40];
        long[..24].copy_from_slice(&DOWN);
        assert!(d(&long).is_ok());
    }

    #[test]
    fn codes_round_trip() {
        for v in 0..32u8 {
            assert_eq!(Diag::from_bits(v).bits(), v);
        }
        for v in 0..4u8 {
            assert_eq!(State::from_bits(v).bits(), v);
        }
    }

    fn arb_packet() -> impl Strategy<Value = ControlPacket> {
        (
            0u8..32,
            0u8..4,
            any::<[bool; 4]>(),
            1u8..=255,
            1u32..,
            any::<u32>(),
            any::<[u32; 3]>(),
        )
            .prop_map(|(diag, sta, f, mult, my, your, iv)| {
                let state = State::from_bits(sta);
                let your = if matches!(state, State::Init | State::Up) {
                    your.max(1)
                } else {
                    your
                };
                ControlPacket {
                    diag: Diag::from_bits(diag),
                    state,
                    poll: f[0],
                    fin: f[1],
                    cpi: f[2],
                    demand: f[3],
                    detect_mult: mult,
                    my_discr: my,
                    your_discr: your,
                    desired_min_tx: iv[0],
                    required_min_rx: iv[1],
                    required_min_echo_rx: iv[2],
                }
            })
    }

    proptest! {
        #[test]
        fn valid_packets_round_trip(p in arb_packet()) {
            prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
        }

        /// Bytes with the right version and length, the rest random: most decode or fail on
        /// one named check, never panic; what decodes passes every check of §6.8.6.
        #[test]
        fn near_valid_bytes_obey_the_checks(mut b in proptest::collection::vec(any::<u8>(), 24..40)) {
            b[0] = (b[0] & 0x1f) | 0x20;
            b[3] = 24;
            if let Ok(p) = ControlPacket::decode(&b) {
                prop_assert!(p.detect_mult != 0 && p.my_discr != 0);
                prop_assert!(b[1] & 0x05 == 0, "A and M bits refused");
                prop_assert!(p.your_discr != 0 || matches!(p.state, State::Down | State::AdminDown));
                prop_assert_eq!(&p.encode()[..], &b[..24]);
            }
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = ControlPacket::decode(&b) {
                // What decodes re-encodes to the same fixed part (flags A and M are never
                // accepted, the length is rewritten to 24).
                let e = p.encode();
                prop_assert_eq!(&e[4..24], &b[4..24]);
                prop_assert_eq!(e[2], b[2]);
                prop_assert_eq!(e[0], b[0]);
            }
        }
    }
}
