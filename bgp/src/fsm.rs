//! The BGP finite state machine of RFC 4271 §8, Sans-IO.
//!
//! [`Fsm::handle`] takes one [`Input`] (an administrative event, a TCP event, a fired timer or a
//! received message) and returns the [`Output`]s the I/O layer must carry out, in order: open a
//! connection, send a message, arm or stop a timer, close the connection, report that the
//! session came up or went down. Nothing in here touches a socket or a clock, so every
//! transition is tested with plain values.
//!
//! Simplifications, all allowed by RFC 4271 §8.1.1 (optional attributes): no DelayOpen, no
//! damping of peer oscillations (the idle-hold time is constant).
//!
//! Connection collisions (§6.8) are detected by the I/O layer, which owns the connections: it
//! keeps a second connection beside the current one until the peer's BGP identifier is known
//! and then tells the FSM the outcome ([`Input::CollisionLost`], [`Input::CollisionTakeover`]).
//! The rule itself is [`resolve_collision`].

use std::net::Ipv4Addr;
use std::time::Duration;

use calyx_proto::capability::{GracefulRestart, GracefulRestartFamily};
use calyx_proto::notification::{CeaseSubcode, FsmSubcode, OpenSubcode};
use calyx_proto::{
    AfiSafi, Asn, Capability, ErrorCode, Message, NotificationMessage, OpenMessage, ParseContext,
};

/// The six states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    /// Refuses connections; waits for a start event.
    Idle,
    /// Waiting for an outgoing TCP connection to complete.
    Connect,
    /// Waiting for an incoming connection (or the next connect retry).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPEN received and KEEPALIVE sent, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// The session is up; UPDATEs flow.
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The timers of RFC 4271 §10, plus the idle-hold timer that triggers the automatic restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// ConnectRetryTimer.
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
    /// Time in Idle before the automatic start (event 3).
    IdleHold,
}

/// Something the FSM reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// ManualStart / AutomaticStart (events 1, 3; passive variants 4, 5 by configuration).
    Start,
    /// ManualStop (event 2): send this NOTIFICATION if a connection is open (RFC 8203 Cease
    /// with a shutdown communication, or another Cease subcode) and, if `restart_after` is
    /// set, start again after that time (used for the max-prefix restart).
    Stop {
        /// The NOTIFICATION to send; `None` closes without one (graceful restart).
        notification: Option<NotificationMessage>,
        /// Automatic restart delay; `None` stays Idle.
        restart_after: Option<Duration>,
    },
    /// The TCP connection (outgoing or accepted) is up (events 16, 17).
    TcpConnected,
    /// A connection from the peer was accepted (events 14-17 with passive TCP establishment):
    /// used in Idle (unless administratively stopped), Connect and Active.
    TcpAccepted,
    /// The outgoing connection attempt failed (event 18).
    TcpFailed,
    /// The connection was closed by the peer or failed (event 18).
    TcpClosed,
    /// A timer fired.
    TimerFired(Timer),
    /// A message was received and decoded. UPDATEs may be passed as
    /// [`Input::UpdateReceived`] instead, without their content.
    Message(Message),
    /// An UPDATE was received (its content goes to the RIB, not to the FSM).
    UpdateReceived,
    /// A received message could not be decoded: send this NOTIFICATION and close (RFC 4271 §6,
    /// RFC 7606 session reset).
    DecodeError(NotificationMessage),
    /// The current connection lost a collision (RFC 4271 §6.8) to a second connection to the
    /// same peer, on which the I/O layer already sent our OPEN: send Cease / Connection
    /// Collision Resolution on the current connection, continue on the second one
    /// ([`Output::SwitchConnection`]) and wait there in OpenSent for the peer's OPEN (which the
    /// I/O layer feeds next if that connection already delivered it). Used in OpenSent and
    /// OpenConfirm; ignored elsewhere: an Established session always wins, and before OpenSent
    /// there is no connection to lose.
    CollisionLost,
    /// The current connection closed while a second connection of a collision was waiting, our
    /// OPEN already sent on it: the I/O layer made that one current, so continue there in
    /// OpenSent without sending a second OPEN. Accepted where [`Input::TcpAccepted`] is (Idle
    /// unless administratively stopped, Connect, Active); elsewhere the connection is closed.
    CollisionTakeover,
    /// BFD detected that the path to the peer failed (RFC 5882 §4.3): an Established session
    /// goes down at once, without a NOTIFICATION (it could not arrive) and without keeping
    /// the peer's routes for graceful restart; it restarts after the idle-hold time. Ignored
    /// in the other states (their own timers cover a dead path).
    BfdDown,
}

/// Something the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Open an outgoing TCP connection.
    Connect,
    /// Send this message.
    Send(Message),
    /// (Re)start a timer.
    ArmTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// Close the TCP connection (after the queued messages are written).
    Close,
    /// Close the current connection (after the queued messages are written) and continue on the
    /// second connection of the collision reported with [`Input::CollisionLost`].
    SwitchConnection,
    /// The session reached Established with this negotiated state.
    Established(Box<Negotiated>),
    /// An Established session ended.
    Down(DownReason),
    /// The state changed (for status).
    StateChanged(State),
}

/// Why a session went down or failed to come up (for status and for graceful restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION.
    NotificationSent(NotificationMessage),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(NotificationMessage),
    /// The hold timer expired (a NOTIFICATION was sent).
    HoldTimerExpired,
    /// The TCP connection was closed or failed.
    ConnectionClosed,
    /// Stopped without a NOTIFICATION (our graceful restart).
    AdminStop,
    /// BFD detected a failure of the path (RFC 5882).
    BfdDown,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::NotificationSent(n) => {
                write!(f, "sent {n}")?;
                if let Some(m) = n.shutdown_message() {
                    write!(f, " \"{m}\"")?;
                }
                Ok(())
            }
            DownReason::NotificationReceived(n) => {
                write!(f, "received {n}")?;
                if let Some(m) = n.shutdown_message() {
                    write!(f, " \"{m}\"")?;
                }
                Ok(())
            }
            DownReason::HoldTimerExpired => write!(f, "hold timer expired"),
            DownReason::ConnectionClosed => write!(f, "connection closed"),
            DownReason::AdminStop => write!(f, "administratively stopped"),
            DownReason::BfdDown => write!(f, "BFD session down"),
        }
    }
}

impl DownReason {
    /// Whether the peer may be graceful-restarting: the connection went away without a
    /// NOTIFICATION (RFC 4724 §4.2). Hold timer expiry counts too (RFC 4724 §4.2 allows it).
    /// A BFD-detected failure does not: the forwarding path is known to be dead, so routes
    /// through the peer go at once (RFC 5882 §4.3).
    pub fn keeps_routes(&self) -> bool {
        matches!(
            self,
            DownReason::ConnectionClosed | DownReason::HoldTimerExpired | DownReason::AdminStop
        )
    }
}

/// The session parameters both OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// The peer's AS.
    pub peer_as: Asn,
    /// Hold time in seconds (the smaller of both; 0 = no keepalives).
    pub hold_time: u16,
    /// Keepalive interval in seconds (hold / 3).
    pub keepalive: u16,
    /// Both sides support 4-octet AS numbers.
    pub four_octet_as: bool,
    /// Both sides support extended messages.
    pub extended_message: bool,
    /// Families both sides announced.
    pub families: Vec<AfiSafi>,
    /// The peer supports route refresh.
    pub route_refresh: bool,
    /// The peer supports enhanced route refresh.
    pub enhanced_route_refresh: bool,
    /// The peer's graceful restart capability, if both sides announced one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// The peer's capabilities as received.
    pub peer_capabilities: Vec<Capability>,
}

impl Negotiated {
    /// The codec context for this session (the same both ways: no ADD-PATH).
    pub fn context(&self) -> ParseContext {
        ParseContext {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
            ..ParseContext::new()
        }
    }

    /// Whether the family was negotiated.
    pub fn has_family(&self, f: AfiSafi) -> bool {
        self.families.contains(&f)
    }

    /// Short names of the negotiated capabilities, for status.
    pub fn capability_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .families
            .iter()
            .map(|f| {
                if *f == AfiSafi::IPV4_UNICAST {
                    "ipv4-unicast".into()
                } else if *f == AfiSafi::IPV6_UNICAST {
                    "ipv6-unicast".into()
                } else {
                    format!("mp {f}")
                }
            })
            .collect();
        if self.four_octet_as {
            v.push("4-octet-as".into());
        }
        if self.route_refresh {
            v.push("route-refresh".into());
        }
        if self.enhanced_route_refresh {
            v.push("enhanced-route-refresh".into());
        }
        if self.extended_message {
            v.push("extended-message".into());
        }
        if self.peer_graceful_restart.is_some() {
            v.push("graceful-restart".into());
        }
        v
    }
}

/// Static parameters of one FSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// Our AS.
    pub local_as: Asn,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The AS the peer must have.
    pub remote_as: Asn,
    /// Our proposed hold time.
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; `None` (or a longer value) is a third of the negotiated
    /// hold time.
    pub keepalive: Option<u16>,
    /// Never initiate connections.
    pub passive: bool,
    /// ConnectRetryTime.
    pub connect_retry: Duration,
    /// Time in Idle before an automatic restart after an error.
    pub idle_hold: Duration,
    /// How long OpenSent waits for the peer's OPEN (see [`open_hold`]).
    pub open_hold: Duration,
    /// Capabilities we announce.
    pub capabilities: Vec<Capability>,
}

/// The KEEPALIVE interval for a negotiated hold time: the configured one, but never more than a
/// third of the hold time (RFC 4271 §10's suggestion, which BIRD and FRR use by default), so a
/// long setting cannot make the peer's hold timer expire; none at all with hold time 0.
pub fn keepalive_interval(hold_time: u16, configured: Option<u16>) -> u16 {
    let third = hold_time / 3;
    match configured {
        _ if hold_time == 0 => 0,
        Some(k) if k > 0 => k.min(third).max(1),
        _ => third,
    }
}

/// The "large value" RFC 4271 §8.2.2 suggests for the hold timer in OpenSent (4 minutes): the
/// upper bound of [`open_hold`].
pub const LARGE_HOLD: Duration = Duration::from_secs(240);

/// The longest OpenSent waits for the peer's OPEN when no hold time is configured.
pub const OPEN_HOLD_MAX: Duration = Duration::from_secs(30);

/// How long OpenSent waits for the peer's OPEN, for a configured hold time (seconds). A
/// speaker sends its OPEN as soon as its connection is up, so waiting minutes (the RFC's
/// suggestion) only keeps a dead connection around, and with it the connection attempts and
/// collisions of a mesh: the configured hold time bounds it, and [`OPEN_HOLD_MAX`].
pub fn open_hold(hold_time: u16) -> Duration {
    match hold_time {
        0 => OPEN_HOLD_MAX,
        h => Duration::from_secs(u64::from(h)).min(OPEN_HOLD_MAX),
    }
}

/// One BGP session's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    negotiated: Option<Negotiated>,
    /// The last error, for status.
    last_error: Option<DownReason>,
    /// Automatic restart after an error (cleared by a Stop without restart).
    auto_restart: bool,
    /// Connection attempts that failed in a row (reset once a connection is up).
    connect_failures: u32,
    /// Connections closed by the peer before its OPEN, in a row (reset once Established).
    early_closes: u32,
}

impl Fsm {
    /// A new FSM in Idle.
    pub fn new(cfg: FsmConfig) -> Self {
        Fsm {
            cfg,
            state: State::Idle,
            negotiated: None,
            last_error: None,
            auto_restart: true,
            connect_failures: 0,
            early_closes: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// The negotiated parameters, once OpenConfirm is reached.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The last error that ended a session or an attempt.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// The OPEN we send.
    pub fn open_message(&self) -> OpenMessage {
        OpenMessage::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            self.cfg.capabilities.clone(),
        )
    }

    fn set_state(&mut self, s: State, out: &mut Vec<Output>) {
        if s == State::Established {
            self.early_closes = 0;
        }
        if self.state != s {
            self.state = s;
            out.push(Output::StateChanged(s));
        }
    }

    /// Leave for Idle after an error or a close; `reason` is recorded and reported.
    fn go_idle(&mut self, reason: DownReason, restart: Option<Duration>, out: &mut Vec<Output>) {
        out.push(Output::StopTimer(Timer::ConnectRetry));
        out.push(Output::StopTimer(Timer::Hold));
        out.push(Output::StopTimer(Timer::Keepalive));
        out.push(Output::Close);
        if self.state == State::Established {
            out.push(Output::Down(reason.clone()));
        }
        self.last_error = Some(reason);
        self.negotiated = None;
        self.set_state(State::Idle, out);
        if let Some(d) = restart {
            out.push(Output::ArmTimer(Timer::IdleHold, d));
        }
    }

    fn error_restart(&self) -> Option<Duration> {
        self.auto_restart.then_some(self.cfg.idle_hold)
    }

    fn notify_and_idle(&mut self, n: NotificationMessage, out: &mut Vec<Output>) {
        out.push(Output::Send(Message::Notification(n.clone())));
        let restart = self.error_restart();
        self.go_idle(DownReason::NotificationSent(n), restart, out);
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        out.push(Output::StopTimer(Timer::IdleHold));
        if self.cfg.passive {
            self.set_state(State::Active, out);
        } else {
            out.push(Output::Connect);
            out.push(Output::ArmTimer(
                Timer::ConnectRetry,
                self.cfg.connect_retry,
            ));
            self.set_state(State::Connect, out);
        }
    }

    fn tcp_up(&mut self, out: &mut Vec<Output>) {
        self.connect_failures = 0;
        out.push(Output::Send(Message::Open(self.open_message())));
        self.wait_for_open(out);
    }

    /// The wait after a connection attempt failed: 1 s, doubling with every failure in a row,
    /// up to ConnectRetryTime. A peer that refuses is usually one whose speaker is not up yet
    /// (nodes of a cluster start together); waiting the whole ConnectRetryTime for it at once
    /// made a 50-node mesh take a retry period longer than needed.
    fn retry_after_failure(&mut self) -> Duration {
        let shift = self.connect_failures.min(16);
        self.connect_failures = self.connect_failures.saturating_add(1);
        Duration::from_secs(1u64 << shift).min(self.cfg.connect_retry)
    }

    /// OpenSent: our OPEN is out, the peer's is awaited for at most the open hold time.
    fn wait_for_open(&mut self, out: &mut Vec<Output>) {
        out.push(Output::StopTimer(Timer::ConnectRetry));
        out.push(Output::ArmTimer(Timer::Hold, self.cfg.open_hold));
        self.set_state(State::OpenSent, out);
    }

    /// Feed one input; returns what to do.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                self.auto_restart = true;
                if self.state == State::Idle {
                    self.start(&mut out);
                }
            }
            Input::Stop {
                notification,
                restart_after,
            } => {
                self.auto_restart = restart_after.is_some();
                let connected = matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                );
                let reason = match notification {
                    Some(n) if connected => {
                        out.push(Output::Send(Message::Notification(n.clone())));
                        DownReason::NotificationSent(n)
                    }
                    _ => DownReason::AdminStop,
                };
                out.push(Output::StopTimer(Timer::IdleHold));
                if self.state != State::Idle || restart_after.is_some() {
                    self.go_idle(reason, restart_after, &mut out);
                }
            }
            Input::BfdDown => {
                if self.state == State::Established {
                    let restart = Some(self.cfg.idle_hold);
                    self.go_idle(DownReason::BfdDown, restart, &mut out);
                }
            }
            Input::TimerFired(Timer::IdleHold) => {
                if self.state == State::Idle {
                    self.start(&mut out);
                }
            }
            Input::TcpConnected => match self.state {
                State::Connect | State::Active => self.tcp_up(&mut out),
                // Idle refuses connections; in the other states the connection is a second one
                // and the I/O layer resolves the collision before feeding the FSM.
                _ => out.push(Output::Close),
            },
            Input::TcpAccepted => match self.state {
                State::Idle if self.auto_restart => {
                    out.push(Output::StopTimer(Timer::IdleHold));
                    self.tcp_up(&mut out);
                }
                State::Connect | State::Active => self.tcp_up(&mut out),
                _ => out.push(Output::Close),
            },
            Input::TcpFailed => {
                if self.state == State::Connect {
                    out.push(Output::Close);
                    out.push(Output::ArmTimer(
                        Timer::ConnectRetry,
                        self.retry_after_failure(),
                    ));
                    self.last_error = Some(DownReason::ConnectionClosed);
                    self.set_state(State::Active, &mut out);
                }
            }
            Input::TimerFired(Timer::ConnectRetry) => match self.state {
                State::Connect | State::Active if !self.cfg.passive => {
                    out.push(Output::Close);
                    out.push(Output::Connect);
                    out.push(Output::ArmTimer(
                        Timer::ConnectRetry,
                        self.cfg.connect_retry,
                    ));
                    self.set_state(State::Connect, &mut out);
                }
                _ => {}
            },
            Input::TcpClosed => match self.state {
                State::Idle => {}
                State::Connect | State::Active => {
                    out.push(Output::Close);
                    out.push(Output::ArmTimer(
                        Timer::ConnectRetry,
                        self.cfg.connect_retry,
                    ));
                    self.set_state(State::Active, &mut out);
                }
                // Closed before the peer's OPEN: usually a peer that does not know us yet (its
                // speaker is starting, or the datastore has not told it about us) and dropped
                // the connection. Like a failed connect, retried in 1 s doubling up to the
                // idle hold, rather than after the whole idle hold at once: in a one-way mesh
                // nobody else will connect.
                State::OpenSent if self.auto_restart => {
                    let shift = self.early_closes.min(16);
                    self.early_closes = self.early_closes.saturating_add(1);
                    let r = Duration::from_secs(1u64 << shift).min(self.cfg.idle_hold);
                    self.go_idle(DownReason::ConnectionClosed, Some(r), &mut out);
                }
                _ => {
                    let r = self.error_restart();
                    self.go_idle(DownReason::ConnectionClosed, r, &mut out);
                }
            },
            Input::TimerFired(Timer::Hold) => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    let n = NotificationMessage::new(ErrorCode::HoldTimerExpired, Vec::new());
                    out.push(Output::Send(Message::Notification(n)));
                    let r = self.error_restart();
                    self.go_idle(DownReason::HoldTimerExpired, r, &mut out);
                }
            }
            Input::TimerFired(Timer::Keepalive) => {
                if matches!(self.state, State::OpenConfirm | State::Established) {
                    out.push(Output::Send(Message::Keepalive));
                    if let Some(n) = &self.negotiated {
                        if n.keepalive > 0 {
                            out.push(Output::ArmTimer(
                                Timer::Keepalive,
                                Duration::from_secs(u64::from(n.keepalive)),
                            ));
                        }
                    }
                }
            }
            Input::DecodeError(n) => {
                if self.state != State::Idle {
                    self.notify_and_idle(n, &mut out);
                }
            }
            Input::CollisionLost => {
                if matches!(self.state, State::OpenSent | State::OpenConfirm) {
                    // The Cease goes out before the switch, on the losing connection.
                    out.push(Output::Send(
                        Message::Notification(collision_notification()),
                    ));
                    out.push(Output::SwitchConnection);
                    // Whatever the losing connection negotiated is void; the winner starts
                    // over in OpenSent (our OPEN is already on it).
                    out.push(Output::StopTimer(Timer::Keepalive));
                    self.negotiated = None;
                    self.wait_for_open(&mut out);
                }
            }
            Input::CollisionTakeover => match self.state {
                State::Idle if self.auto_restart => {
                    out.push(Output::StopTimer(Timer::IdleHold));
                    self.wait_for_open(&mut out);
                }
                State::Connect | State::Active => self.wait_for_open(&mut out),
                _ => out.push(Output::Close),
            },
            Input::UpdateReceived => self.on_message(None, &mut out),
            Input::Message(m) => self.on_message(Some(m), &mut out),
        }
        out
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.hold_time > 0 {
                out.push(Output::ArmTimer(
                    Timer::Hold,
                    Duration::from_secs(u64::from(n.hold_time)),
                ));
            }
        }
    }

    fn unexpected(&mut self, out: &mut Vec<Output>) {
        let sub = match self.state {
            State::OpenSent => FsmSubcode::UnexpectedMessageInOpenSent,
            State::OpenConfirm => FsmSubcode::UnexpectedMessageInOpenConfirm,
            State::Established => FsmSubcode::UnexpectedMessageInEstablished,
            _ => FsmSubcode::Unspecific,
        };
        self.notify_and_idle(
            NotificationMessage::new(ErrorCode::Fsm(sub), Vec::new()),
            out,
        );
    }

    /// `None` stands for an UPDATE whose content went elsewhere.
    fn on_message(&mut self, m: Option<Message>, out: &mut Vec<Output>) {
        if let Some(Message::Notification(n)) = &m {
            if !matches!(self.state, State::Idle | State::Connect | State::Active) {
                let r = self.error_restart();
                self.go_idle(DownReason::NotificationReceived(n.clone()), r, out);
            }
            return;
        }
        match self.state {
            State::Idle | State::Connect | State::Active => {}
            State::OpenSent => match m {
                Some(Message::Open(open)) => match self.check_open(&open) {
                    Ok(neg) => {
                        out.push(Output::Send(Message::Keepalive));
                        if neg.hold_time > 0 {
                            out.push(Output::ArmTimer(
                                Timer::Keepalive,
                                Duration::from_secs(u64::from(neg.keepalive)),
                            ));
                            out.push(Output::ArmTimer(
                                Timer::Hold,
                                Duration::from_secs(u64::from(neg.hold_time)),
                            ));
                        } else {
                            out.push(Output::StopTimer(Timer::Hold));
                        }
                        self.negotiated = Some(neg);
                        self.set_state(State::OpenConfirm, out);
                    }
                    Err(n) => self.notify_and_idle(n, out),
                },
                _ => self.unexpected(out),
            },
            State::OpenConfirm => match m {
                Some(Message::Keepalive) => {
                    self.restart_hold(out);
                    self.set_state(State::Established, out);
                    self.last_error = None;
                    if let Some(n) = &self.negotiated {
                        out.push(Output::Established(Box::new(n.clone())));
                    }
                }
                _ => self.unexpected(out),
            },
            State::Established => match m {
                Some(Message::Keepalive)
                | Some(Message::Update(_))
                | Some(Message::RouteRefresh(_))
                | None => self.restart_hold(out),
                _ => self.unexpected(out),
            },
        }
    }

    /// Check a received OPEN (RFC 4271 §6.2) and negotiate; the NOTIFICATION on error.
    pub fn check_open(&self, open: &OpenMessage) -> Result<Negotiated, NotificationMessage> {
        let peer_as = open.asn();
        if peer_as != self.cfg.remote_as {
            return Err(NotificationMessage::new(
                ErrorCode::Open(OpenSubcode::BadPeerAs),
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        let ibgp = self.cfg.remote_as == self.cfg.local_as;
        if ibgp && open.bgp_id == self.cfg.router_id {
            return Err(NotificationMessage::new(
                ErrorCode::Open(OpenSubcode::BadBgpIdentifier),
                Vec::new(),
            ));
        }
        let hold_time = self.cfg.hold_time.min(open.hold_time);
        let ours = |code: u8| self.cfg.capabilities.iter().any(|c| c.code() == code);
        use calyx_proto::capability::code;
        let our_fams: Vec<AfiSafi> = self
            .cfg
            .capabilities
            .iter()
            .filter_map(|c| {
                if let Capability::Multiprotocol(f) = c {
                    Some(*f)
                } else {
                    None
                }
            })
            .collect();
        let mut peer_fams: Vec<AfiSafi> = open.multiprotocol().collect();
        if !open.has_capability(code::MULTIPROTOCOL) {
            // RFC 4760 §8: without the capability, only IPv4 unicast.
            peer_fams.push(AfiSafi::IPV4_UNICAST);
        }
        let families: Vec<AfiSafi> = our_fams
            .iter()
            .copied()
            .filter(|f| peer_fams.contains(f))
            .collect();
        let gr = if ours(code::GRACEFUL_RESTART) {
            open.capabilities().find_map(|c| {
                if let Capability::GracefulRestart(g) = c {
                    Some(g.clone())
                } else {
                    None
                }
            })
        } else {
            None
        };
        Ok(Negotiated {
            peer_id: open.bgp_id,
            peer_as,
            hold_time,
            keepalive: keepalive_interval(hold_time, self.cfg.keepalive),
            four_octet_as: ours(code::FOUR_OCTET_AS) && open.has_capability(code::FOUR_OCTET_AS),
            extended_message: ours(code::EXTENDED_MESSAGE)
                && open.has_capability(code::EXTENDED_MESSAGE),
            families,
            route_refresh: open.has_capability(code::ROUTE_REFRESH),
            enhanced_route_refresh: ours(code::ENHANCED_ROUTE_REFRESH)
                && open.has_capability(code::ENHANCED_ROUTE_REFRESH),
            peer_graceful_restart: gr,
            peer_capabilities: open.capabilities().cloned().collect(),
        })
    }
}

/// The capabilities to announce: the families, route refresh, enhanced route refresh, 4-octet
/// AS, extended message and, if `restart_time` is set, graceful restart (with the R bit and the
/// F bits when `restarting`).
pub fn capabilities(
    local_as: Asn,
    families: &[AfiSafi],
    restart_time: Option<u16>,
    restarting: bool,
) -> Vec<Capability> {
    let mut caps: Vec<Capability> = families
        .iter()
        .map(|f| Capability::Multiprotocol(*f))
        .collect();
    caps.push(Capability::RouteRefresh);
    caps.push(Capability::EnhancedRouteRefresh);
    caps.push(Capability::FourOctetAs(local_as));
    caps.push(Capability::ExtendedMessage);
    if let Some(t) = restart_time {
        caps.push(Capability::GracefulRestart(GracefulRestart {
            restart_state: restarting,
            notification: false,
            restart_time: t.min(4095),
            families: families
                .iter()
                .map(|f| GracefulRestartFamily {
                    family: *f,
                    forwarding_state: restarting,
                })
                .collect(),
        }));
    }
    caps
}

/// Connection collision resolution (RFC 4271 §6.8): given our BGP identifier and the peer's,
/// whether to keep the connection *we* initiated (true) or the one the peer initiated.
pub fn resolve_collision(local_id: Ipv4Addr, peer_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(peer_id)
}

/// The Cease sent to the connection that loses a collision.
pub fn collision_notification() -> NotificationMessage {
    NotificationMessage::new(
        ErrorCode::Cease(CeaseSubcode::ConnectionCollisionResolution),
        Vec::new(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use calyx_proto::notification::HeaderSubcode;

    fn cfg(passive: bool) -> FsmConfig {
        FsmConfig {
            local_as: Asn(65000),
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            remote_as: Asn(65000),
            hold_time: 90,
            keepalive: None,
            passive,
            connect_retry: Duration::from_secs(5),
            idle_hold: Duration::from_secs(5),
            open_hold: open_hold(90),
            capabilities: capabilities(
                Asn(65000),
                &[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
                Some(120),
                false,
            ),
        }
    }

    fn peer_open(hold: u16, id: [u8; 4], asn: u32, caps: Vec<Capability>) -> Message {
        Message::Open(OpenMessage::new(Asn(asn), hold, Ipv4Addr::from(id), caps))
    }

    fn modern_caps() -> Vec<Capability> {
        capabilities(Asn(65000), &[AfiSafi::IPV4_UNICAST], None, false)
    }

    fn sent(out: &[Output]) -> Vec<&Message> {
        out.iter()
            .filter_map(|o| {
                if let Output::Send(m) = o {
                    Some(m)
                } else {
                    None
                }
            })
            .collect()
    }

    fn established(f: &mut Fsm, hold: u16) -> Vec<Output> {
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::Message(peer_open(
            hold,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        f.handle(Input::Message(Message::Keepalive))
    }

    #[test]
    fn active_open_to_established() {
        let mut f = Fsm::new(cfg(false));
        let out = f.handle(Input::Start);
        assert!(out.contains(&Output::Connect));
        assert!(out.contains(&Output::ArmTimer(
            Timer::ConnectRetry,
            Duration::from_secs(5)
        )));
        assert_eq!(f.state(), State::Connect);
        let out = f.handle(Input::TcpConnected);
        assert!(matches!(sent(&out)[..], [Message::Open(_)]));
        // OpenSent waits a bounded time for the OPEN, never the minutes of LARGE_HOLD.
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, Duration::from_secs(30))));
        assert_eq!(open_hold(90), Duration::from_secs(30));
        assert_eq!(open_hold(9), Duration::from_secs(9));
        assert_eq!(open_hold(0), OPEN_HOLD_MAX);
        assert!(OPEN_HOLD_MAX < LARGE_HOLD);
        assert_eq!(f.state(), State::OpenSent);
        let out = f.handle(Input::Message(peer_open(
            30,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        assert_eq!(sent(&out), vec![&Message::Keepalive]);
        assert!(out.contains(&Output::ArmTimer(Timer::Keepalive, Duration::from_secs(10))));
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, Duration::from_secs(30))));
        assert_eq!(f.state(), State::OpenConfirm);
        let out = f.handle(Input::Message(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        let neg = out
            .iter()
            .find_map(|o| {
                if let Output::Established(n) = o {
                    Some(n)
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(neg.hold_time, 30);
        assert_eq!(neg.keepalive, 10);
        assert!(neg.four_octet_as);
        assert_eq!(neg.families, vec![AfiSafi::IPV4_UNICAST]);
        // Peer offered no graceful restart: none negotiated.
        assert!(neg.peer_graceful_restart.is_none());
    }

    #[test]
    fn configured_keepalive_is_used_up_to_a_third_of_the_hold_time() {
        assert_eq!(keepalive_interval(90, None), 30);
        assert_eq!(keepalive_interval(90, Some(10)), 10);
        assert_eq!(keepalive_interval(90, Some(60)), 30);
        assert_eq!(keepalive_interval(90, Some(0)), 30);
        assert_eq!(keepalive_interval(0, Some(10)), 0);
        assert_eq!(keepalive_interval(3, Some(10)), 1);
        let mut c = cfg(false);
        c.keepalive = Some(7);
        let f = Fsm::new(c);
        let open = OpenMessage::new(Asn(65000), 90, Ipv4Addr::new(10, 0, 0, 2), modern_caps());
        assert_eq!(f.check_open(&open).unwrap().keepalive, 7);
    }

    #[test]
    fn hold_time_is_the_smaller_and_zero_means_no_keepalives() {
        let mut f = Fsm::new(cfg(false));
        let out = established(&mut f, 0);
        assert_eq!(f.state(), State::Established);
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::ArmTimer(Timer::Keepalive | Timer::Hold, _))));
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 200);
        assert_eq!(f.negotiated().unwrap().hold_time, 90);
        assert_eq!(f.negotiated().unwrap().keepalive, 30);
    }

    #[test]
    fn accepted_connection_in_idle_and_after_admin_stop() {
        let mut f = Fsm::new(cfg(false));
        let out = f.handle(Input::TcpAccepted);
        assert!(matches!(sent(&out)[..], [Message::Open(_)]));
        assert_eq!(f.state(), State::OpenSent);
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Stop {
            notification: None,
            restart_after: None,
        });
        let out = f.handle(Input::TcpAccepted);
        assert_eq!(out, vec![Output::Close]);
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn passive_waits_in_active() {
        let mut f = Fsm::new(cfg(true));
        let out = f.handle(Input::Start);
        assert!(!out.contains(&Output::Connect));
        assert_eq!(f.state(), State::Active);
        let out = f.handle(Input::TimerFired(Timer::ConnectRetry));
        assert!(out.is_empty());
        f.handle(Input::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn connect_failure_and_retry() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpFailed);
        assert_eq!(f.state(), State::Active);
        let out = f.handle(Input::TimerFired(Timer::ConnectRetry));
        assert!(out.contains(&Output::Connect));
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn a_connection_closed_before_the_open_is_retried_soon() {
        let mut c = cfg(false);
        c.idle_hold = Duration::from_secs(5);
        let mut f = Fsm::new(c);
        let mut waits = Vec::new();
        for _ in 0..4 {
            f.handle(Input::Start);
            f.handle(Input::TcpConnected);
            assert_eq!(f.state(), State::OpenSent);
            let out = f.handle(Input::TcpClosed);
            assert_eq!(f.state(), State::Idle);
            waits.extend(out.iter().filter_map(|o| match o {
                Output::ArmTimer(Timer::IdleHold, d) => Some(d.as_secs()),
                _ => None,
            }));
        }
        assert_eq!(waits, [1, 2, 4, 5]);
    }

    #[test]
    fn failed_connects_back_off_from_one_second_to_connect_retry() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        let mut waits = Vec::new();
        for _ in 0..5 {
            let out = f.handle(Input::TcpFailed);
            waits.extend(out.iter().filter_map(|o| match o {
                Output::ArmTimer(Timer::ConnectRetry, d) => Some(d.as_secs()),
                _ => None,
            }));
            f.handle(Input::TimerFired(Timer::ConnectRetry));
        }
        // cfg() has a 5 s ConnectRetryTime.
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        // A connection that comes up starts the count again.
        f.handle(Input::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
        assert_eq!(f.connect_failures, 0);
    }

    #[test]
    fn bad_peer_as_and_bad_id() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let caps = capabilities(Asn(65001), &[AfiSafi::IPV4_UNICAST], None, false);
        let out = f.handle(Input::Message(peer_open(90, [10, 0, 0, 2], 65001, caps)));
        let n = sent(&out);
        assert!(matches!(n[..], [Message::Notification(m)] if m.code == 2 && m.subcode == 2));
        assert!(out.contains(&Output::Close));
        assert!(out.contains(&Output::ArmTimer(Timer::IdleHold, Duration::from_secs(5))));
        assert_eq!(f.state(), State::Idle);

        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 1],
            65000,
            modern_caps(),
        )));
        assert!(
            matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 2 && m.subcode == 3)
        );
    }

    #[test]
    fn four_octet_as_peer_via_as_trans() {
        let mut c = cfg(false);
        c.remote_as = Asn(4_200_000_000);
        let mut f = Fsm::new(c);
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let caps = capabilities(Asn(4_200_000_000), &[AfiSafi::IPV4_UNICAST], None, false);
        let open = OpenMessage::new(Asn(4_200_000_000), 90, Ipv4Addr::new(1, 1, 1, 1), caps);
        assert_eq!(open.my_as, 23456);
        f.handle(Input::Message(Message::Open(open)));
        assert_eq!(f.state(), State::OpenConfirm);
    }

    #[test]
    fn hold_timer_expiry_sends_notification_and_goes_down() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 9);
        let out = f.handle(Input::TimerFired(Timer::Hold));
        assert!(matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 4));
        assert!(out.contains(&Output::Down(DownReason::HoldTimerExpired)));
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.last_error(), Some(&DownReason::HoldTimerExpired));
        // Automatic restart after the idle hold.
        let out = f.handle(Input::TimerFired(Timer::IdleHold));
        assert!(out.contains(&Output::Connect));
    }

    #[test]
    fn keepalive_timer_sends_and_rearms() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 9);
        let out = f.handle(Input::TimerFired(Timer::Keepalive));
        assert_eq!(sent(&out), vec![&Message::Keepalive]);
        assert!(out.contains(&Output::ArmTimer(Timer::Keepalive, Duration::from_secs(3))));
        let out = f.handle(Input::UpdateReceived);
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, Duration::from_secs(9))));
    }

    #[test]
    fn unexpected_messages_are_fsm_errors() {
        // UPDATE in OpenSent.
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::UpdateReceived);
        assert!(
            matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 5 && m.subcode == 1)
        );
        // OPEN in OpenConfirm.
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        let out = f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        assert!(
            matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 5 && m.subcode == 2)
        );
        // OPEN in Established.
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let out = f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        assert!(
            matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 5 && m.subcode == 3)
        );
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Down(DownReason::NotificationSent(_)))));
    }

    #[test]
    fn notification_received_goes_idle_without_reply() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let n = NotificationMessage::shutdown(CeaseSubcode::AdministrativeShutdown, "maintenance");
        let out = f.handle(Input::Message(Message::Notification(n.clone())));
        assert!(sent(&out).is_empty());
        assert!(out.contains(&Output::Down(DownReason::NotificationReceived(n))));
        assert_eq!(f.state(), State::Idle);
        assert!(format!("{}", f.last_error().unwrap()).contains("maintenance"));
    }

    #[test]
    fn admin_stop_sends_shutdown_communication_and_stays_idle() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let n = NotificationMessage::shutdown(CeaseSubcode::AdministrativeShutdown, "bye");
        let out = f.handle(Input::Stop {
            notification: Some(n.clone()),
            restart_after: None,
        });
        assert_eq!(sent(&out), vec![&Message::Notification(n)]);
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::ArmTimer(Timer::IdleHold, _))));
        assert_eq!(f.state(), State::Idle);
        // A later idle-hold tick (stale) does nothing harmful: it only restarts on Start.
        let out = f.handle(Input::Start);
        assert!(out.contains(&Output::Connect));
    }

    #[test]
    fn stop_with_restart_arms_idle_hold() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let n = NotificationMessage::new(
            ErrorCode::Cease(CeaseSubcode::MaximumPrefixesReached),
            Vec::new(),
        );
        let out = f.handle(Input::Stop {
            notification: Some(n),
            restart_after: Some(Duration::from_secs(30)),
        });
        assert!(out.contains(&Output::ArmTimer(Timer::IdleHold, Duration::from_secs(30))));
    }

    #[test]
    fn graceful_stop_closes_without_notification() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let out = f.handle(Input::Stop {
            notification: None,
            restart_after: None,
        });
        assert!(sent(&out).is_empty());
        assert!(out.contains(&Output::Down(DownReason::AdminStop)));
        assert!(DownReason::AdminStop.keeps_routes());
    }

    #[test]
    fn decode_error_sends_its_notification() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let n = NotificationMessage::new(
            ErrorCode::MessageHeader(HeaderSubcode::BadMessageType),
            vec![9],
        );
        let out = f.handle(Input::DecodeError(n.clone()));
        assert_eq!(sent(&out), vec![&Message::Notification(n)]);
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn bfd_down_takes_an_established_session_down_without_keeping_routes() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let out = f.handle(Input::BfdDown);
        assert!(out.contains(&Output::Down(DownReason::BfdDown)));
        assert!(out.contains(&Output::Close));
        assert!(!out.iter().any(|o| matches!(o, Output::Send(_))));
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::ArmTimer(Timer::IdleHold, _))));
        assert_eq!(f.state(), State::Idle);
        assert!(!DownReason::BfdDown.keeps_routes());
        // Before Established it changes nothing.
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        assert!(f.handle(Input::BfdDown).is_empty());
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn tcp_close_in_established_is_down_and_keeps_routes() {
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        let out = f.handle(Input::TcpClosed);
        assert!(out.contains(&Output::Down(DownReason::ConnectionClosed)));
        assert!(DownReason::ConnectionClosed.keeps_routes());
    }

    #[test]
    fn graceful_restart_negotiated_when_both_offer() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let caps = capabilities(
            Asn(65000),
            &[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            Some(60),
            true,
        );
        f.handle(Input::Message(peer_open(90, [10, 0, 0, 2], 65000, caps)));
        let n = f.negotiated().unwrap();
        let gr = n.peer_graceful_restart.as_ref().unwrap();
        assert!(gr.restart_state);
        assert_eq!(gr.restart_time, 60);
        assert_eq!(n.families.len(), 2);
        assert!(n
            .capability_names()
            .contains(&"graceful-restart".to_string()));
    }

    #[test]
    fn collision_keeps_higher_id_initiator() {
        assert!(resolve_collision(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1)
        ));
        assert!(!resolve_collision(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2)
        ));
        assert_eq!(collision_notification().subcode, 7);
    }

    fn position(out: &[Output], want: &Output) -> usize {
        out.iter()
            .position(|o| o == want)
            .unwrap_or_else(|| panic!("{want:?} not in {out:?}"))
    }

    #[test]
    fn collision_lost_in_open_sent_ceases_then_switches_and_keeps_waiting() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        let out = f.handle(Input::CollisionLost);
        let cease = Output::Send(Message::Notification(collision_notification()));
        // The Cease is written on the losing connection, i.e. before the switch.
        assert!(position(&out, &cease) < position(&out, &Output::SwitchConnection));
        assert_eq!(sent(&out).len(), 1, "no second OPEN: {out:?}");
        assert!(!out.contains(&Output::Close));
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, open_hold(90))));
        assert_eq!(f.state(), State::OpenSent);
        assert!(f.last_error().is_none());
        // The winner's OPEN then completes the handshake as usual.
        let out = f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        assert_eq!(sent(&out), vec![&Message::Keepalive]);
        assert_eq!(f.state(), State::OpenConfirm);
    }

    #[test]
    fn collision_lost_in_open_confirm_forgets_the_negotiation() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        assert!(f.negotiated().is_some());
        let out = f.handle(Input::CollisionLost);
        assert!(out.contains(&Output::SwitchConnection));
        assert!(out.contains(&Output::StopTimer(Timer::Keepalive)));
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, open_hold(90))));
        assert!(out.contains(&Output::StateChanged(State::OpenSent)));
        assert!(f.negotiated().is_none());
        assert_eq!(f.state(), State::OpenSent);
        // A KEEPALIVE before the new connection's OPEN is an FSM error, as in any OpenSent.
        let out = f.handle(Input::Message(Message::Keepalive));
        assert!(
            matches!(sent(&out)[..], [Message::Notification(m)] if m.code == 5 && m.subcode == 1)
        );
    }

    #[test]
    fn collision_lost_does_nothing_outside_open_sent_and_open_confirm() {
        // Established always wins; Idle/Connect/Active have no connection to lose.
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        assert!(f.handle(Input::CollisionLost).is_empty());
        assert_eq!(f.state(), State::Established);
        let mut f = Fsm::new(cfg(false));
        assert!(f.handle(Input::CollisionLost).is_empty());
        f.handle(Input::Start);
        assert!(f.handle(Input::CollisionLost).is_empty());
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn collision_takeover_continues_in_open_sent_without_a_second_open() {
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Start);
        f.handle(Input::TcpConnected);
        // The current connection fails while the second one waits.
        let out = f.handle(Input::TcpClosed);
        assert!(out.contains(&Output::Close));
        assert_eq!(f.state(), State::Idle);
        let out = f.handle(Input::CollisionTakeover);
        assert!(sent(&out).is_empty(), "OPEN sent twice: {out:?}");
        assert!(out.contains(&Output::StopTimer(Timer::IdleHold)));
        assert!(out.contains(&Output::ArmTimer(Timer::Hold, open_hold(90))));
        assert!(!out.contains(&Output::Close));
        assert_eq!(f.state(), State::OpenSent);
        f.handle(Input::Message(peer_open(
            90,
            [10, 0, 0, 2],
            65000,
            modern_caps(),
        )));
        f.handle(Input::Message(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        // Administratively stopped, or already on a connection: the takeover is refused.
        let mut f = Fsm::new(cfg(false));
        f.handle(Input::Stop {
            notification: None,
            restart_after: None,
        });
        assert_eq!(f.handle(Input::CollisionTakeover), vec![Output::Close]);
        assert_eq!(f.state(), State::Idle);
        let mut f = Fsm::new(cfg(false));
        established(&mut f, 90);
        assert_eq!(f.handle(Input::CollisionTakeover), vec![Output::Close]);
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn every_input_in_every_state_is_handled_without_panic() {
        let inputs = vec![
            Input::Start,
            Input::Stop {
                notification: None,
                restart_after: None,
            },
            Input::TcpConnected,
            Input::TcpAccepted,
            Input::TcpFailed,
            Input::TcpClosed,
            Input::TimerFired(Timer::ConnectRetry),
            Input::TimerFired(Timer::Hold),
            Input::TimerFired(Timer::Keepalive),
            Input::TimerFired(Timer::IdleHold),
            Input::Message(Message::Keepalive),
            Input::UpdateReceived,
            Input::Message(peer_open(90, [10, 0, 0, 2], 65000, modern_caps())),
            Input::DecodeError(NotificationMessage::new(
                ErrorCode::HoldTimerExpired,
                vec![],
            )),
            Input::CollisionLost,
            Input::CollisionTakeover,
        ];
        // Drive to each state by a prefix of the happy path, then apply every input.
        for depth in 0..5 {
            for i in &inputs {
                let mut f = Fsm::new(cfg(false));
                let path = [
                    Input::Start,
                    Input::TcpConnected,
                    Input::Message(peer_open(90, [10, 0, 0, 2], 65000, modern_caps())),
                    Input::Message(Message::Keepalive),
                ];
                for p in path.iter().take(depth) {
                    f.handle(p.clone());
                }
                let before = f.state();
                let out = f.handle(i.clone());
                // Leaving Established always reports Down exactly once.
                if before == State::Established && f.state() != State::Established {
                    assert_eq!(
                        out.iter().filter(|o| matches!(o, Output::Down(_))).count(),
                        1
                    );
                }
            }
        }
    }
}
