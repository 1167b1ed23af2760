//! Connection collision detection (RFC 4271 §6.8) as pure decisions, apart from the session
//! task that owns the sockets, so that every case is tested with plain values.
//!
//! A second connection to a peer that already has one is not decided on sight: the rule
//! compares BGP identifiers, and the peer's is only known from an OPEN. Until then both
//! connections are kept, our OPEN sent on each, and the first OPEN the peer sends, on either of
//! them, decides ([`survivor`]), before we answer it with a KEEPALIVE.
//!
//! One rule is stricter than §6.8, which also resolves collisions in OpenConfirm by the
//! identifiers: a connection on which we sent our KEEPALIVE (OpenConfirm, Established) is
//! never given up for a second one. The peer may already have that KEEPALIVE and be
//! Established on it; switching would reset its session. In a mesh where every pair connects
//! at once that is not rare but the common case (it is how "collision resolved" turned into
//! session resets). The second connection is refused with Cease / Connection Collision
//! Resolution without an OPEN on it, so an RFC 4271 peer never sees a collision there and keeps
//! the same connection. A connection from the peer while Established with graceful restart
//! may mean that the peer restarted; that is decided by its OPEN, not by its arrival
//! ([`Arrival::Reconnect`]).

use std::net::Ipv4Addr;

use calyx_proto::Asn;

use crate::fsm::{self, State};

/// A speaker as a collision compares it: its BGP identifier, and its AS for the tie-break of
/// RFC 6286 §2.1 (eBGP peers may share an identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// BGP identifier.
    pub id: Ipv4Addr,
    /// AS number.
    pub asn: Asn,
}

/// Which of two connections to the same peer survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Survivor {
    /// The session's current connection (the one the FSM runs on).
    Current,
    /// The second connection.
    Second,
}

/// Whether the connection *we* initiated is the one to keep: §6.8 keeps the connection of the
/// speaker with the higher identifier (as 32-bit unsigned integers); with equal identifiers,
/// RFC 6286 §2.1 keeps the one of the speaker with the larger AS number.
fn keep_ours(local: Identity, peer: Identity) -> bool {
    if local.id == peer.id {
        local.asn.0 > peer.asn.0
    } else {
        fsm::resolve_collision(local.id, peer.id)
    }
}

/// The connection that survives, given which side initiated each.
pub(crate) fn survivor(
    local: Identity,
    peer: Identity,
    current_outgoing: bool,
    second_outgoing: bool,
) -> Survivor {
    if current_outgoing == second_outgoing {
        // Both started by the same side: §6.8 cannot tell them apart. Keeping the current one
        // (as BIRD does) means a peer reconnecting in a loop cannot reset a handshake in
        // progress.
        return Survivor::Current;
    }
    if keep_ours(local, peer) == current_outgoing {
        Survivor::Current
    } else {
        Survivor::Second
    }
}

/// What the session has when a connection to or from the peer appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Situation {
    /// The FSM state.
    pub state: State,
    /// The peer was stopped administratively (Idle refuses connections then).
    pub admin_down: bool,
    /// Who initiated the current connection (`true`: we did), if there is one.
    pub current_outgoing: Option<bool>,
    /// A second connection is already waiting on a collision.
    pub waiting: bool,
    /// The Established session negotiated graceful restart with the peer (RFC 4724).
    pub peer_graceful_restart: bool,
}

/// What to do with a connection that appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Close it without a word: Idle after an administrative stop refuses connections.
    Refuse,
    /// There is no connection yet: this one becomes the session's.
    First,
    /// Close it with Cease / Connection Collision Resolution.
    Reject,
    /// Keep it beside the current one with our OPEN sent, until an OPEN from the peer on either
    /// of them names its identifier.
    Wait,
    /// Established with graceful restart, a connection from the peer: either the peer
    /// restarted (RFC 4724 §4.2), or it is the losing connection of a collision that arrived
    /// late (in a mesh where every pair connects at once, the common case). Only the peer's
    /// OPEN on it can say it restarted: keep it aside, without sending our OPEN and without
    /// touching the Established session, until then.
    Reconnect,
}

/// Decide on a connection that appears; `outgoing` when we initiated it.
pub(crate) fn arrival(s: &Situation, outgoing: bool) -> Arrival {
    match s.state {
        State::Idle if s.admin_down => Arrival::Refuse,
        State::Idle | State::Connect | State::Active => Arrival::First,
        State::Established => {
            // Only the peer reconnects after a restart; a late connect attempt of ours
            // collides with the Established session, which always wins.
            if s.peer_graceful_restart && !outgoing {
                Arrival::Reconnect
            } else {
                Arrival::Reject
            }
        }
        // Our KEEPALIVE is out on the current connection: the peer may be Established on it.
        State::OpenConfirm => Arrival::Reject,
        State::OpenSent => {
            let Some(current_outgoing) = s.current_outgoing else {
                return Arrival::Reject;
            };
            if s.waiting || current_outgoing == outgoing {
                // A third connection, or a second one from the same side: there is nothing
                // for §6.8 to compare, the current connection stays.
                return Arrival::Reject;
            }
            Arrival::Wait
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn me(id: [u8; 4]) -> Identity {
        Identity {
            id: Ipv4Addr::from(id),
            asn: Asn(65000),
        }
    }

    const HIGH: [u8; 4] = [10, 0, 0, 9];
    const LOW: [u8; 4] = [10, 0, 0, 1];

    #[test]
    fn the_connection_of_the_higher_identifier_survives() {
        // We are higher: keep the connection we initiated, wherever it sits.
        assert_eq!(survivor(me(HIGH), me(LOW), true, false), Survivor::Current);
        assert_eq!(survivor(me(HIGH), me(LOW), false, true), Survivor::Second);
        // We are lower: keep the one the peer initiated.
        assert_eq!(survivor(me(LOW), me(HIGH), true, false), Survivor::Second);
        assert_eq!(survivor(me(LOW), me(HIGH), false, true), Survivor::Current);
    }

    #[test]
    fn identifiers_compare_as_unsigned_integers() {
        // 128.0.0.1 is negative as a signed 32-bit integer, and smaller than 9.0.0.0 if the
        // octets were compared as text.
        let big = me([128, 0, 0, 1]);
        for small in [me([127, 255, 255, 255]), me([9, 0, 0, 0]), me([1, 2, 3, 4])] {
            assert_eq!(survivor(big, small, true, false), Survivor::Current);
            assert_eq!(survivor(small, big, true, false), Survivor::Second);
        }
    }

    #[test]
    fn equal_identifiers_fall_back_to_the_larger_as() {
        let a = Identity {
            id: Ipv4Addr::new(10, 0, 0, 1),
            asn: Asn(65001),
        };
        let b = Identity {
            asn: Asn(4_200_000_000),
            ..a
        };
        assert_eq!(survivor(b, a, true, false), Survivor::Current);
        assert_eq!(survivor(a, b, true, false), Survivor::Second);
    }

    #[test]
    fn connections_from_the_same_side_keep_the_current_one() {
        for (l, p) in [(HIGH, LOW), (LOW, HIGH)] {
            assert_eq!(survivor(me(l), me(p), true, true), Survivor::Current);
            assert_eq!(survivor(me(l), me(p), false, false), Survivor::Current);
        }
    }

    proptest! {
        /// Both ends of the same two connections keep the same one, whichever of the two each
        /// end happens to run its FSM on, so a collision never closes both.
        #[test]
        fn both_ends_keep_the_same_connection(
            a in any::<u32>(), b in any::<u32>(),
            asn_a in any::<u32>(), asn_b in any::<u32>(),
            a_current_is_a_initiated in any::<bool>(),
            b_current_is_a_initiated in any::<bool>(),
        ) {
            prop_assume!(a != b || asn_a != asn_b);
            let ia = Identity { id: Ipv4Addr::from(a), asn: Asn(asn_a) };
            let ib = Identity { id: Ipv4Addr::from(b), asn: Asn(asn_b) };
            // Connection X is initiated by A, Y by B. At A, X is outgoing; at B, Y is.
            let kept_at_a = match survivor(ia, ib, a_current_is_a_initiated, !a_current_is_a_initiated) {
                Survivor::Current => a_current_is_a_initiated,
                Survivor::Second => !a_current_is_a_initiated,
            };
            let kept_at_b = match survivor(ib, ia, !b_current_is_a_initiated, b_current_is_a_initiated) {
                Survivor::Current => b_current_is_a_initiated,
                Survivor::Second => !b_current_is_a_initiated,
            };
            // `kept_at_*` is "X (the A-initiated connection) is kept".
            prop_assert_eq!(kept_at_a, kept_at_b);
            prop_assert_eq!(kept_at_a, keep_ours(ia, ib));
        }
    }

    fn situation(state: State) -> Situation {
        Situation {
            state,
            admin_down: false,
            current_outgoing: Some(true),
            waiting: false,
            peer_graceful_restart: false,
        }
    }

    #[test]
    fn without_a_connection_it_becomes_the_first() {
        for st in [State::Idle, State::Connect, State::Active] {
            let s = Situation {
                current_outgoing: None,
                ..situation(st)
            };
            assert_eq!(arrival(&s, false), Arrival::First, "{st}");
            assert_eq!(arrival(&s, true), Arrival::First, "{st}");
        }
        let s = Situation {
            admin_down: true,
            current_outgoing: None,
            ..situation(State::Idle)
        };
        assert_eq!(arrival(&s, false), Arrival::Refuse);
    }

    #[test]
    fn in_open_sent_a_second_connection_waits_for_an_open() {
        // Not by addresses, not by anything else: the identifier is not known yet.
        let s = situation(State::OpenSent);
        assert_eq!(arrival(&s, false), Arrival::Wait);
        let s = Situation {
            current_outgoing: Some(false),
            ..situation(State::OpenSent)
        };
        assert_eq!(arrival(&s, true), Arrival::Wait);
    }

    #[test]
    fn same_side_third_or_connectionless_arrivals_are_rejected() {
        let s = situation(State::OpenSent);
        assert_eq!(arrival(&s, true), Arrival::Reject);
        let s = Situation {
            waiting: true,
            ..situation(State::OpenSent)
        };
        assert_eq!(arrival(&s, false), Arrival::Reject);
        let s = Situation {
            current_outgoing: None,
            ..situation(State::OpenConfirm)
        };
        assert_eq!(arrival(&s, false), Arrival::Reject);
    }

    #[test]
    fn in_open_confirm_the_current_connection_stays_whatever_the_identifiers() {
        // Our KEEPALIVE is out on it: the peer may be Established there already. Whichever
        // side initiated it, and whatever the identifiers (not even looked at), the second
        // connection is refused.
        for current_outgoing in [true, false] {
            let s = Situation {
                current_outgoing: Some(current_outgoing),
                ..situation(State::OpenConfirm)
            };
            assert_eq!(arrival(&s, !current_outgoing), Arrival::Reject);
        }
    }

    #[test]
    fn established_always_wins_and_a_graceful_restart_peer_may_reconnect() {
        let s = situation(State::Established);
        assert_eq!(arrival(&s, false), Arrival::Reject);
        let gr = Situation {
            peer_graceful_restart: true,
            ..s
        };
        // Not taken as a restart yet: kept aside until its OPEN.
        assert_eq!(arrival(&gr, false), Arrival::Reconnect);
        // A late connect attempt of ours is no restart of the peer.
        assert_eq!(arrival(&gr, true), Arrival::Reject);
    }
}
