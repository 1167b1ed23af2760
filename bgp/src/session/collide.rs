//! Connection collisions (RFC 4271 §6.8) in the session: a second connection to the peer is
//! kept beside the current one as a [`Candidate`] until the peer's BGP identifier, from an
//! OPEN on either, decides which survives ([`crate::collision`] holds the decisions).

use calyx_proto::notification::FsmSubcode;
use calyx_proto::{Asn, ErrorCode, Message, NotificationMessage, OpenMessage, ParseContext};
use tokio::net::TcpStream;

use super::conn::{encode, reject, Conn};
use super::{PeerTask, Session};
use crate::collision::{self, Arrival, Identity, Situation, Survivor};
use crate::fsm::{self, Input};
use crate::tasks::Event;

/// The second connection of a collision (RFC 4271 §6.8), kept beside the session's current
/// one, with our OPEN sent on it, until the peer's BGP identifier says which one survives.
/// The session only has one while the FSM is in OpenSent: the first OPEN received, on either
/// connection, resolves the collision.
pub(crate) struct Candidate {
    pub(crate) conn: Conn,
    /// The peer's OPEN read on this connection, for the FSM once this one is current.
    pub(crate) open: Option<OpenMessage>,
}

impl PeerTask {
    fn identity(&self) -> Identity {
        Identity {
            id: self.global.router_id,
            asn: Asn(self.global.local_as),
        }
    }

    /// A TCP connection to (`outgoing`) or from the peer appeared: the first one, or a second
    /// one that collides with it.
    pub(super) async fn arrival(
        &self,
        s: &mut Session,
        stream: TcpStream,
        outgoing: bool,
        queue: &mut Vec<Input>,
    ) {
        let situation = Situation {
            state: s.fsm.state(),
            admin_down: s.admin_down,
            current_outgoing: s.conn.as_ref().map(|c| c.outgoing),
            waiting: s.candidate.is_some(),
            local: self.identity(),
            peer: s.fsm.negotiated().map(|n| Identity {
                id: n.peer_id,
                asn: n.peer_as,
            }),
            peer_graceful_restart: s
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some()),
        };
        let decision = collision::arrival(&situation, outgoing);
        tracing::debug!(peer = %self.cfg.address, outgoing, state = %situation.state, ?decision, "connection");
        match decision {
            Arrival::Refuse => drop(stream),
            Arrival::First => {
                s.conn = Some(self.new_conn(stream, outgoing, s));
                queue.push(if outgoing {
                    Input::TcpConnected
                } else {
                    Input::TcpAccepted
                });
            }
            Arrival::Reject => reject(stream).await,
            Arrival::Wait => s.candidate = self.candidate(stream, outgoing, s).await,
            Arrival::TakeOver => {
                s.candidate = self.candidate(stream, outgoing, s).await;
                if s.candidate.is_some() {
                    tracing::info!(peer = %self.cfg.address, "collision: current connection closed");
                    queue.push(Input::CollisionLost);
                }
            }
            Arrival::PeerRestarted => {
                // RFC 4724 §4.2: a new connection while Established means the peer
                // restarted; its routes are kept as stale.
                s.restarted = Some(stream);
                queue.push(Input::TcpClosed);
            }
        }
    }

    /// Keep a second connection: its reader runs, and our OPEN goes out on it so that the
    /// peer, whichever connection it favours, gets an OPEN on each.
    async fn candidate(&self, stream: TcpStream, outgoing: bool, s: &Session) -> Option<Candidate> {
        let mut conn = self.new_conn(stream, outgoing, s);
        let open = encode(
            &Message::Open(s.fsm.open_message()),
            &ParseContext::default(),
        )?;
        if let Err(e) = conn.write(&open).await {
            tracing::debug!(peer = %self.cfg.address, "second connection: {e}");
            return None;
        }
        Some(Candidate { conn, open: None })
    }

    /// Which connection survives, now that `open` names the peer.
    fn survivor(&self, s: &Session, open: &OpenMessage, second_outgoing: bool) -> Survivor {
        let peer = Identity {
            id: open.bgp_id,
            asn: open.asn(),
        };
        let current_outgoing = s.conn.as_ref().is_some_and(|c| c.outgoing);
        collision::survivor(self.identity(), peer, current_outgoing, second_outgoing)
    }

    /// The peer's OPEN arrived on the current connection while a second one waits.
    pub(super) async fn open_on_current(
        &self,
        s: &mut Session,
        open: OpenMessage,
        queue: &mut Vec<Input>,
    ) {
        let Some(second_outgoing) = s.candidate.as_ref().map(|c| c.conn.outgoing) else {
            queue.push(Input::Message(Message::Open(open)));
            return;
        };
        match self.survivor(s, &open, second_outgoing) {
            Survivor::Current => {
                tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: second connection closed");
                if let Some(c) = s.candidate.take() {
                    c.conn.close(Some(fsm::collision_notification())).await;
                }
                queue.push(Input::Message(Message::Open(open)));
            }
            Survivor::Second => {
                // The OPEN goes with its connection; the second one waits for its own.
                tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: current connection closed");
                queue.push(Input::CollisionLost);
            }
        }
    }

    /// Something happened on the waiting second connection.
    pub(super) async fn candidate_event(
        &self,
        s: &mut Session,
        ev: Option<Event>,
        queue: &mut Vec<Input>,
    ) {
        let close_with = match ev {
            Some(Event::Msg(Message::Open(open))) => {
                let second_outgoing = s.candidate.as_ref().is_some_and(|c| c.conn.outgoing);
                match self.survivor(s, &open, second_outgoing) {
                    Survivor::Second => {
                        tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: current connection closed");
                        if let Some(c) = s.candidate.as_mut() {
                            c.open = Some(open);
                        }
                        queue.push(Input::CollisionLost);
                        return;
                    }
                    Survivor::Current => {
                        tracing::info!(peer = %self.cfg.address, peer_id = %open.bgp_id, "collision: second connection closed");
                        Some(fsm::collision_notification())
                    }
                }
            }
            Some(Event::Msg(Message::Notification(n))) => {
                // The peer resolved the collision (or failed) on this connection.
                tracing::debug!(peer = %self.cfg.address, "second connection: received {n}");
                None
            }
            // Anything but an OPEN first is what an FSM in OpenSent calls unexpected.
            Some(Event::Msg(_)) => Some(NotificationMessage::new(
                ErrorCode::Fsm(FsmSubcode::UnexpectedMessageInOpenSent),
                Vec::new(),
            )),
            Some(Event::Decode(n)) => Some(n),
            Some(Event::Closed(why)) => {
                tracing::debug!(peer = %self.cfg.address, "second connection closed: {why}");
                None
            }
            None => None,
        };
        if let Some(c) = s.candidate.take() {
            c.conn.close(close_with).await;
        }
    }
}
