//! BFD, Bidirectional Forwarding Detection (RFC 5880), single hop over UDP (RFC 5881).
//!
//! Layers, bottom up:
//! * [`packet`]: the Control packet, its encoding and the receive checks of RFC 5880 §6.8.6.
//! * [`session`]: one session's state machine, Sans-IO (inputs in, outputs out), like the
//!   BGP FSM of `calyx-bgp`.
//! * `sockopt` (private): TTL 255 on send and GTSM on receipt (RFC 5881 §5).
//! * [`Bfd`]: the UDP task on a thread of its own: the shared listener on port 3784, one
//!   sending socket per session from ports 49152-65535, the timers, and a status feed per
//!   session for its clients (the BGP speaker).

pub mod packet;
mod runtime;
pub mod session;
mod sockopt;

pub use packet::{ControlPacket, Diag, PacketError, State};
pub use runtime::{Bfd, BfdConfig, Error, SessionStatus, Stats, PORT, SOURCE_PORTS};
pub use session::{Snapshot, Timers};
