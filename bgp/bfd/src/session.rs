//! One BFD session (RFC 5880 §6), Sans-IO: [`Session::handle`] takes an [`Input`] (a received
//! Control packet already matched to this session, a fired timer, an administrative event)
//! and returns the [`Output`]s the I/O layer carries out, in order (send a packet, arm or stop
//! a timer, report a state change). Nothing in here touches a socket or a clock.
//!
//! What is implemented: asynchronous mode, the three-way handshake of §6.2, the Detect Mult
//! and the negotiated intervals of §6.8.2-§6.8.4, Poll/Final sequences for every change of the
//! advertised intervals (§6.5, §6.8.3), the 1 s transmit floor outside Up (§6.8.3), the jitter
//! of §6.8.7, the diagnostics, and the Demand bit of a remote system (we stop periodic packets
//! while it is in Demand mode, §6.6). Not implemented (all optional): the Echo function,
//! Demand mode for ourselves, authentication.

use std::time::Duration;

use crate::packet::{ControlPacket, Diag, State};

/// The transmit interval floor while the session is not Up (RFC 5880 §6.8.3: "not less than
/// one second").
pub const IDLE_TX_US: u32 = 1_000_000;

/// The timers of a session: what we advertise, before negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Timers {
    /// bfd.DesiredMinTxInterval while Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult (at least 1).
    pub detect_mult: u8,
}

impl Default for Timers {
    /// 300 ms x 3: detection within 900 ms (the defaults of Calico Enterprise and FRR).
    fn default() -> Self {
        Timers {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The two timers of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The next periodic Control packet is due.
    Tx,
    /// The Detection Time passed without a valid packet from the remote system.
    Detect,
}

/// Something the session reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: the session starts Down and transmits (unless passive).
    Start,
    /// A Control packet that passed [`ControlPacket::decode`] and was matched to this session.
    Received(ControlPacket),
    /// A timer fired.
    TimerFired(Timer),
    /// Hold the session administratively down (diagnostic 7).
    AdminDown,
    /// Leave AdminDown (back to Down).
    AdminUp,
    /// New timers (starts a Poll Sequence when what we advertise changes).
    SetTimers(Timers),
}

/// Something the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this Control packet now.
    Send(ControlPacket),
    /// (Re)arm a timer to fire after this long.
    ArmTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// The session state changed.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// The local diagnostic after the change (why the session left Up, if it did).
        diag: Diag,
    },
}

/// Fixed settings of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// The timers to advertise.
    pub timers: Timers,
    /// bfd.LocalDiscr: unique among this system's sessions, never 0.
    pub local_discr: u32,
    /// Passive role (§6.1): send nothing until the remote system's discriminator is known.
    pub passive: bool,
    /// Seed of the jitter generator (any value; 0 is replaced).
    pub seed: u64,
}

/// A snapshot of a session for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// bfd.SessionState.
    pub state: State,
    /// bfd.RemoteSessionState.
    pub remote_state: State,
    /// bfd.LocalDiag.
    pub diag: Diag,
    /// The diagnostic the remote system last sent.
    pub remote_diag: Diag,
    /// bfd.LocalDiscr.
    pub local_discr: u32,
    /// bfd.RemoteDiscr (0: unknown).
    pub remote_discr: u32,
    /// The negotiated transmit interval, µs (0 when periodic transmission is off).
    pub tx_interval_us: u32,
    /// The Detection Time, µs (0 before anything was received).
    pub detect_time_us: u64,
    /// A Poll Sequence is in progress.
    pub polling: bool,
}

/// The state variables of RFC 5880 §6.8.1 and the machine around them.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    remote_state: State,
    remote_discr: u32,
    diag: Diag,
    remote_diag: Diag,
    /// What we advertise now (µs).
    desired_min_tx: u32,
    required_min_rx: u32,
    /// The values in effect (they lag behind the advertised ones during a Poll Sequence).
    tx_in_use: u32,
    rx_in_use: u32,
    remote_min_rx: u32,
    remote_desired_min_tx: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    polling: bool,
    /// Timers changed while Up during a Poll Sequence: advertised when it ends (§6.5: a new
    /// Poll Sequence must not start while one is in progress).
    poll_pending: bool,
    /// The base of the transmit timer last armed (0: stopped), to re-arm when it changes.
    armed_tx: u32,
    rng: u64,
}

impl Session {
    /// A session in state Down; feed [`Input::Start`] to begin.
    pub fn new(cfg: SessionConfig) -> Session {
        let required_min_rx = micros(cfg.timers.required_min_rx);
        let desired_min_tx = micros(cfg.timers.desired_min_tx).max(IDLE_TX_US);
        Session {
            cfg,
            state: State::Down,
            remote_state: State::Down,
            remote_discr: 0,
            diag: Diag::None,
            remote_diag: Diag::None,
            desired_min_tx,
            required_min_rx,
            tx_in_use: desired_min_tx,
            rx_in_use: required_min_rx,
            remote_min_rx: 1,
            remote_desired_min_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            polling: false,
            poll_pending: false,
            armed_tx: 0,
            rng: if cfg.seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                cfg.seed
            },
        }
    }

    /// bfd.SessionState.
    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiscr.
    pub fn local_discr(&self) -> u32 {
        self.cfg.local_discr
    }

    /// The current values, for status output.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state,
            remote_state: self.remote_state,
            diag: self.diag,
            remote_diag: self.remote_diag,
            local_discr: self.cfg.local_discr,
            remote_discr: self.remote_discr,
            tx_interval_us: if self.may_transmit() {
                self.tx_base()
            } else {
                0
            },
            detect_time_us: self.detect_time_us(),
            polling: self.polling,
        }
    }

    /// Carry out one input.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                self.send(&mut out, false);
                self.rearm_tx(&mut out, true);
            }
            Input::Received(p) => self.received(p, &mut out),
            Input::TimerFired(Timer::Tx) => {
                self.armed_tx = 0;
                self.send(&mut out, false);
                self.rearm_tx(&mut out, true);
            }
            Input::TimerFired(Timer::Detect) => {
                // §6.8.1: the remote discriminator is forgotten after a Detection Time.
                self.remote_discr = 0;
                self.remote_state = State::Down;
                if matches!(self.state, State::Init | State::Up) {
                    self.change(State::Down, Diag::ControlDetectionTimeExpired, &mut out);
                }
            }
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    out.push(Output::StopTimer(Timer::Detect));
                    self.change(State::AdminDown, Diag::AdminDown, &mut out);
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.change(State::Down, Diag::None, &mut out);
                }
            }
            Input::SetTimers(t) => {
                self.cfg.timers = t;
                self.advertise(&mut out);
            }
        }
        out
    }

    /// §6.8.6, from "If bfd.SessionState is AdminDown" on: the generic checks were made by
    /// [`ControlPacket::decode`] and the demultiplexer.
    fn received(&mut self, p: ControlPacket, out: &mut Vec<Output>) {
        if p.your_discr != 0 && p.your_discr != self.cfg.local_discr {
            return;
        }
        if self.state == State::AdminDown {
            return;
        }
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_demand = p.demand;
        self.remote_desired_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        let old_remote_rx = self.remote_min_rx;
        self.remote_min_rx = p.required_min_rx;
        let mut poll_again = false;
        if p.fin && self.polling {
            // §6.5: the Poll Sequence is over; the advertised values take effect.
            self.polling = false;
            self.tx_in_use = self.desired_min_tx;
            self.rx_in_use = self.required_min_rx;
            poll_again = std::mem::take(&mut self.poll_pending);
        }
        let before = self.state;
        match (self.state, p.state) {
            (State::Init | State::Up, State::AdminDown) => {
                self.change(State::Down, Diag::NeighborSignaledDown, out);
            }
            (State::Down, State::Down) => self.change(State::Init, Diag::None, out),
            (State::Down, State::Init) => self.change(State::Up, Diag::None, out),
            (State::Init, State::Init | State::Up) => self.change(State::Up, Diag::None, out),
            (State::Up, State::Down) => self.change(State::Down, Diag::NeighborSignaledDown, out),
            _ => {}
        }
        // The Detection Time restarts with every valid packet (§6.8.4).
        let detect = self.detect_time_us();
        if detect > 0 {
            out.push(Output::ArmTimer(
                Timer::Detect,
                Duration::from_micros(detect),
            ));
        }
        if p.poll {
            // §6.8.7: answer a Poll at once, without regard to the transmit timer; a packet
            // never carries both P and F.
            self.send(out, true);
        }
        if poll_again {
            // The change that waited for the previous Poll Sequence starts its own.
            self.advertise(out);
        }
        let changed = old_remote_rx != self.remote_min_rx || before != self.state;
        self.rearm_tx(out, changed);
    }

    /// Enter `to` with diagnostic `diag`; send a packet at once so that the remote system
    /// learns of it without waiting for the transmit timer.
    fn change(&mut self, to: State, diag: Diag, out: &mut Vec<Output>) {
        let from = self.state;
        self.state = to;
        // The diagnostic says why the state last changed: cleared on the way up.
        self.diag = diag;
        out.push(Output::StateChanged {
            from,
            to,
            diag: self.diag,
        });
        if !self.advertise(out) {
            self.send(out, false);
        }
    }

    /// Recompute what we advertise (the 1 s floor outside Up, §6.8.3) and start a Poll
    /// Sequence if it changed (§6.8.3); sends the first packet of the poll and returns true
    /// then.
    fn advertise(&mut self, out: &mut Vec<Output>) -> bool {
        let mut tx = micros(self.cfg.timers.desired_min_tx).max(1);
        if self.state != State::Up {
            tx = tx.max(IDLE_TX_US);
        }
        let rx = micros(self.cfg.timers.required_min_rx);
        if tx == self.desired_min_tx && rx == self.required_min_rx {
            self.poll_pending = false;
            return false;
        }
        let up = self.state == State::Up;
        if up && self.polling {
            // §6.5: no new Poll Sequence while one is in progress; the values the remote
            // system is acknowledging stay advertised until its Final.
            self.poll_pending = true;
            return false;
        }
        self.poll_pending = false;
        // An increase of the transmit interval while Up waits for the end of the poll; a
        // decrease takes effect at once. For the receive interval it is the other way round
        // (the Detection Time must not shrink before the remote system knows).
        if !(up && tx > self.tx_in_use) {
            self.tx_in_use = tx;
        }
        if !(up && rx < self.rx_in_use) {
            self.rx_in_use = rx;
        }
        self.desired_min_tx = tx;
        self.required_min_rx = rx;
        self.polling = true;
        self.send(out, false);
        self.rearm_tx(out, true);
        true
    }

    /// §6.8.7: no periodic packets in the passive role before the remote discriminator is
    /// known, when the remote system asks for none (Required Min RX 0), or when it runs
    /// Demand mode while both ends are Up.
    fn may_transmit(&self) -> bool {
        !(self.cfg.passive && self.remote_discr == 0)
            && self.remote_min_rx != 0
            && !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
    }

    fn tx_base(&self) -> u32 {
        self.tx_in_use.max(self.remote_min_rx)
    }

    fn detect_time_us(&self) -> u64 {
        u64::from(self.remote_detect_mult)
            * u64::from(self.rx_in_use.max(self.remote_desired_min_tx))
    }

    /// Arm the transmit timer when it is not armed with the current base, or `force`.
    fn rearm_tx(&mut self, out: &mut Vec<Output>, force: bool) {
        if !self.may_transmit() {
            if self.armed_tx != 0 {
                self.armed_tx = 0;
                out.push(Output::StopTimer(Timer::Tx));
            }
            return;
        }
        let base = self.tx_base();
        if force || self.armed_tx != base {
            self.armed_tx = base;
            let d = self.jittered(base);
            out.push(Output::ArmTimer(Timer::Tx, d));
        }
    }

    /// §6.8.7: the interval is reduced by a random 0-25 % (10-25 % with Detect Mult 1).
    fn jittered(&mut self, base_us: u32) -> Duration {
        // xorshift64*: plenty for jitter, and deterministic under test.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32; // 0 .. 2^32
        let (lo, span) = if self.cfg.timers.detect_mult == 1 {
            (75u128, 15u128)
        } else {
            (75, 25)
        };
        // base x (lo + span x r / 2^32) %: a factor in [lo, lo + span) percent.
        let us = u128::from(base_us) * ((lo << 32) + span * u128::from(r)) / (100u128 << 32);
        Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Queue a Control packet; `fin` answers a Poll.
    fn send(&mut self, out: &mut Vec<Output>, fin: bool) {
        if self.cfg.passive && self.remote_discr == 0 && !fin {
            return;
        }
        out.push(Output::Send(ControlPacket {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.timers.detect_mult.max(1),
            my_discr: self.cfg.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.desired_min_tx,
            required_min_rx: self.required_min_rx,
            required_min_echo_rx: 0,
        }));
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
