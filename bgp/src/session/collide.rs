//! Connection collisions (RFC 4271 §6.8) in the session: a second connection to the peer is
//! kept beside the current one as a [`Candidate`] until the peer's BGP identifier, from an
//! OPEN on either, decides which survives ([`crate::collision`] holds the decisions).

use calyx_proto::notification::FsmSubcode;
use calyx_proto::{Asn, ErrorCode, Message, NotificationMessage, OpenMessage, ParseContext};
use std::time::{Duration, Instant};

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

/// How long a connection from the peer while Established waits for the peer's OPEN.
const RECONNECT_OPEN_WAIT: Duration = Duration::from_secs(10);
/// After the peer's OPEN on such a connection, how long the old session is given to show
/// that it is still alive (a collision's loser: its Cease follows the OPEN at once) or dead
/// (the probe we send on it is answered with a reset) before the OPEN is taken as the peer
/// restarting.
pub(super) const RESTART_CONFIRM: Duration = Duration::from_secs(2);

/// A connection from the peer while Established with graceful restart
/// ([`Arrival::Reconnect`]): its reader runs, nothing is sent on it.
pub(crate) struct Reconnect {
    pub(crate) conn: Conn,
    /// The peer's OPEN on it, once read.
    pub(crate) open: Option<OpenMessage>,
    /// When to decide: drop it (no OPEN yet) or take it as the restart (OPEN read).
    pub(crate) deadline: Instant,
}

impl PeerTask {
    /// Something happened on the connection kept by [`Arrival::Reconnect`].
    ///
    /// RFC 4724 §4.2 takes a new OPEN from the peer while Established as the peer
    /// restarting. But the losing connection of a collision also carries the peer's OPEN
    /// (§6.8: each side sends an OPEN on both connections before the identifiers decide),
    /// followed by its Cease: taking that OPEN at once as a restart drops a good session. So
    /// after the OPEN, the old connection is probed with a KEEPALIVE and given
    /// [`RESTART_CONFIRM`]: a Cease or close on the new connection means collision, nothing
    /// changes; the old one failing is the restart, through the ordinary close path; neither
    /// within the time, the OPEN is the restart, as the RFC says.
    pub(super) async fn reconnect_event(
        &self,
        s: &mut Session,
        ev: Option<Event>,
        queue: &mut Vec<Input>,
    ) {
        match ev {
            Some(Event::Msg(Message::Open(open)))
                if s.reconnect.as_ref().is_some_and(|r| r.open.is_none()) =>
            {
                tracing::debug!(peer = %self.cfg.address, peer_id = %open.bgp_id, "OPEN on a new connection while Established: probing the old one");
                if let Some(r) = s.reconnect.as_mut() {
                    r.open = Some(open);
                    r.deadline = Instant::now() + RESTART_CONFIRM;
                }
                let mut b = bytes::BytesMut::new();
                calyx_proto::message::encode_keepalive(&mut b);
                if let Some(c) = s.conn.as_mut() {
                    if let Err(e) = c.write(&b).await {
                        tracing::info!(peer = %self.cfg.address, "old connection failed ({e}): the peer restarted");
                        queue.push(Input::TcpClosed);
                    }
                }
            }
            other => {
                // A NOTIFICATION (Cease / Connection Collision Resolution, typically), a
                // close, or anything else: not a restarted peer. The session is untouched.
                let why = match &other {
                    Some(Event::Msg(Message::Notification(n))) => format!("received {n}"),
                    Some(Event::Msg(m)) => format!("unexpected {m:?}"),
                    Some(Event::Decode(n)) => format!("decode error {n}"),
                    Some(Event::Closed(w)) => w.clone(),
                    None => "reader ended".into(),
                };
                tracing::debug!(peer = %self.cfg.address, "connection while Established dropped: {why}");
                if let Some(r) = s.reconnect.take() {
                    r.conn.close(None).await;
                }
            }
        }
    }

    /// The connection kept by [`Arrival::Reconnect`] reached its deadline.
    pub(super) async fn reconnect_deadline(&self, s: &mut Session, queue: &mut Vec<Input>) {
        let has_open = s.reconnect.as_ref().is_some_and(|r| r.open.is_some());
        if has_open {
            // RFC 4724 §4.2: the peer restarted. Its routes are kept as stale; the new
            // connection replaces the session when the old one is closed (Output::Close).
            tracing::info!(peer = %self.cfg.address, "the peer restarted (new OPEN while Established)");
            queue.push(Input::TcpClosed);
        } else if let Some(r) = s.reconnect.take() {
            tracing::debug!(peer = %self.cfg.address, "connection while Established sent no OPEN: closed");
            r.conn.close(None).await;
        }
    }

    fn identity(&self) -> Identity {
        Identity {
            id: self.global.router_id,
            asn: Asn(self.local_as()),
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
            Arrival::Reconnect => {
                if s.reconnect.is_some() {
                    // The newer of two is the live one if the peer restarted twice.
                    tracing::debug!(peer = %self.cfg.address, "a newer connection replaces the one waiting for its OPEN");
                }
                s.reconnect = Some(Reconnect {
                    conn: self.new_conn(stream, outgoing, s),
                    open: None,
                    deadline: Instant::now() + RECONNECT_OPEN_WAIT,
                });
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
