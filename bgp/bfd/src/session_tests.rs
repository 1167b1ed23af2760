//! The session machine against RFC 5880's state diagram (§6.2) and its timer and poll rules.

use super::*;
use proptest::prelude::*;

const LOCAL: u32 = 0x1111;
const REMOTE: u32 = 0x2222;

fn session(passive: bool) -> Session {
    Session::new(SessionConfig {
        timers: Timers::default(),
        local_discr: LOCAL,
        passive,
        seed: 7,
    })
}

/// A packet from the remote system in `state`, 300 ms x 3, knowing our discriminator.
fn remote(state: State) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: REMOTE,
        your_discr: if state == State::Down || state == State::AdminDown {
            0
        } else {
            LOCAL
        },
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

fn sent(out: &[Output]) -> Vec<ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn armed(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::ArmTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// A session brought into `state` through the handshake.
fn in_state(state: State) -> Session {
    let mut s = session(false);
    s.handle(Input::Start);
    match state {
        State::Down => {}
        State::Init => {
            s.handle(Input::Received(remote(State::Down)));
        }
        State::Up => {
            s.handle(Input::Received(remote(State::Down)));
            s.handle(Input::Received(remote(State::Up)));
        }
        State::AdminDown => {
            s.handle(Input::AdminDown);
        }
    }
    assert_eq!(s.state(), state);
    s
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Recv(State),
    Timer,
}

#[test]
fn rfc_5880_state_diagram() {
    use State::*;
    // (from, event, to) for every state and every event of the diagram of §6.2.
    let table = [
        (Down, Event::Recv(Down), Init),
        (Down, Event::Recv(Init), Up),
        (Down, Event::Recv(Up), Down),
        (Down, Event::Recv(AdminDown), Down),
        (Down, Event::Timer, Down),
        (Init, Event::Recv(Down), Init),
        (Init, Event::Recv(Init), Up),
        (Init, Event::Recv(Up), Up),
        (Init, Event::Recv(AdminDown), Down),
        (Init, Event::Timer, Down),
        (Up, Event::Recv(Down), Down),
        (Up, Event::Recv(Init), Up),
        (Up, Event::Recv(Up), Up),
        (Up, Event::Recv(AdminDown), Down),
        (Up, Event::Timer, Down),
        // AdminDown ignores everything it receives and has no Detection Time.
        (AdminDown, Event::Recv(Down), AdminDown),
        (AdminDown, Event::Recv(Init), AdminDown),
        (AdminDown, Event::Recv(Up), AdminDown),
        (AdminDown, Event::Recv(AdminDown), AdminDown),
        (AdminDown, Event::Timer, AdminDown),
    ];
    for (from, event, to) in table {
        let mut s = in_state(from);
        let out = match event {
            Event::Recv(st) => s.handle(Input::Received(remote(st))),
            Event::Timer => s.handle(Input::TimerFired(Timer::Detect)),
        };
        assert_eq!(s.state(), to, "{from:?} + {event:?}");
        let changes: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::StateChanged { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        if from == to {
            assert!(changes.is_empty(), "{from:?} + {event:?}: {changes:?}");
        } else {
            assert_eq!(changes, vec![(from, to)], "{from:?} + {event:?}");
            // The remote system learns of the change without waiting for the timer.
            assert!(
                sent(&out).iter().any(|p| p.state == to),
                "{from:?} + {event:?}"
            );
        }
    }
}

#[test]
fn diagnostics_say_why_the_session_went_down() {
    let mut s = in_state(State::Up);
    s.handle(Input::TimerFired(Timer::Detect));
    assert_eq!(s.snapshot().diag, Diag::ControlDetectionTimeExpired);
    // §6.8.1: the remote discriminator is forgotten after a Detection Time.
    let out = s.handle(Input::TimerFired(Timer::Tx));
    let p = sent(&out)[0];
    assert_eq!(
        (p.your_discr, p.diag, p.state),
        (0, Diag::ControlDetectionTimeExpired, State::Down)
    );

    let mut s = in_state(State::Up);
    s.handle(Input::Received(remote(State::Down)));
    assert_eq!(s.snapshot().diag, Diag::NeighborSignaledDown);
    let mut s = in_state(State::Up);
    s.handle(Input::Received(remote(State::AdminDown)));
    assert_eq!(s.snapshot().diag, Diag::NeighborSignaledDown);

    let mut s = in_state(State::Up);
    let out = s.handle(Input::AdminDown);
    assert_eq!(s.snapshot().diag, Diag::AdminDown);
    assert!(out.contains(&Output::StopTimer(Timer::Detect)));
    assert_eq!(sent(&out).last().map(|p| p.state), Some(State::AdminDown));
    s.handle(Input::AdminUp);
    assert_eq!((s.state(), s.snapshot().diag), (State::Down, Diag::None));
}

#[test]
fn a_packet_for_another_discriminator_is_ignored() {
    let mut s = in_state(State::Init);
    let mut p = remote(State::Up);
    p.your_discr = LOCAL + 1;
    assert!(s.handle(Input::Received(p)).is_empty());
    assert_eq!(s.state(), State::Init);
}

#[test]
fn transmits_at_one_second_until_up_then_polls_down_to_the_configured_rate() {
    let mut s = session(false);
    let out = s.handle(Input::Start);
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.desired_min_tx, p.required_min_rx),
        (State::Down, 1_000_000, 300_000)
    );
    assert_eq!((p.detect_mult, p.my_discr, p.your_discr), (3, LOCAL, 0));
    let d = armed(&out, Timer::Tx).unwrap_or_default();
    assert!(
        d >= Duration::from_millis(750) && d < Duration::from_secs(1),
        "{d:?}"
    );

    s.handle(Input::Received(remote(State::Down)));
    let out = s.handle(Input::Received(remote(State::Init)));
    assert_eq!(s.state(), State::Up);
    // Up: the advertised interval drops to 300 ms with a Poll.
    let p = *sent(&out).last().unwrap_or(&remote(State::Down));
    assert!(p.poll && !p.fin);
    assert_eq!((p.state, p.desired_min_tx), (State::Up, 300_000));
    // A decrease takes effect at once.
    assert_eq!(s.snapshot().tx_interval_us, 300_000);
    assert_eq!(s.snapshot().detect_time_us, 900_000);
    assert!(s.snapshot().polling);
    // Periodic packets keep the P bit until the Final arrives.
    let out = s.handle(Input::TimerFired(Timer::Tx));
    assert!(sent(&out)[0].poll);
    let mut f = remote(State::Up);
    f.fin = true;
    s.handle(Input::Received(f));
    assert!(!s.snapshot().polling);
    let out = s.handle(Input::TimerFired(Timer::Tx));
    assert!(!sent(&out)[0].poll);
}

#[test]
fn a_timer_change_during_a_poll_waits_for_its_final_then_polls_again() {
    let mut s = in_state(State::Up);
    // Up: the 1 s floor is lifted with a Poll still unanswered.
    assert!(s.snapshot().polling);
    let fast = Timers {
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        detect_mult: 3,
    };
    // A change now does not start a second Poll Sequence: the packets keep advertising what
    // the first one asks the remote system to acknowledge.
    let out = s.handle(Input::SetTimers(fast));
    assert!(sent(&out).is_empty(), "{out:?}");
    let out = s.handle(Input::TimerFired(Timer::Tx));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!((p.desired_min_tx, p.required_min_rx), (300_000, 300_000));
    // The Final ends it; the waiting change starts its own Poll Sequence at once.
    let mut f = remote(State::Up);
    f.fin = true;
    let out = s.handle(Input::Received(f));
    let p = *sent(&out).last().expect("a packet with the new values");
    assert!(p.poll && !p.fin);
    assert_eq!((p.desired_min_tx, p.required_min_rx), (100_000, 100_000));
    assert!(s.snapshot().polling);
    // Its Final ends it; nothing waits any more.
    let out = s.handle(Input::Received(f));
    assert!(sent(&out).is_empty(), "{out:?}");
    assert!(!s.snapshot().polling);
    // A change back to the advertised values while polling cancels what waited.
    s.handle(Input::SetTimers(Timers::default()));
    assert!(s.snapshot().polling);
    s.handle(Input::SetTimers(fast));
    s.handle(Input::SetTimers(Timers::default()));
    let out = s.handle(Input::Received(f));
    assert!(sent(&out).is_empty(), "{out:?}");
    assert!(!s.snapshot().polling);
}

#[test]
fn negotiated_intervals_and_detection_time() {
    let mut s = in_state(State::Up);
    // The remote system wants packets no faster than 500 ms and sends every 1 s, x 5.
    let mut p = remote(State::Up);
    p.required_min_rx = 500_000;
    p.desired_min_tx = 1_000_000;
    p.detect_mult = 5;
    let out = s.handle(Input::Received(p));
    assert_eq!(armed(&out, Timer::Detect), Some(Duration::from_secs(5)));
    let tx = armed(&out, Timer::Tx).unwrap_or_default();
    assert!(
        tx >= Duration::from_millis(375) && tx < Duration::from_millis(500),
        "{tx:?}"
    );
    assert_eq!(s.snapshot().tx_interval_us, 500_000);
    // Required Min RX 0: no periodic packets (§6.8.7).
    p.required_min_rx = 0;
    let out = s.handle(Input::Received(p));
    assert!(out.contains(&Output::StopTimer(Timer::Tx)));
    assert_eq!(s.snapshot().tx_interval_us, 0);
}

#[test]
fn a_poll_is_answered_at_once_with_final() {
    let mut s = in_state(State::Up);
    let mut p = remote(State::Up);
    p.poll = true;
    let out = s.handle(Input::Received(p));
    let f = sent(&out);
    assert_eq!(f.len(), 1);
    assert!(f[0].fin && !f[0].poll);
}

#[test]
fn slower_timers_while_up_wait_for_the_poll() {
    let mut s = in_state(State::Up);
    let mut f = remote(State::Up);
    f.fin = true;
    s.handle(Input::Received(f));
    let slow = Timers {
        desired_min_tx: Duration::from_millis(800),
        required_min_rx: Duration::from_millis(100),
        detect_mult: 3,
    };
    let out = s.handle(Input::SetTimers(slow));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!((p.desired_min_tx, p.required_min_rx), (800_000, 100_000));
    // Until the Final: old transmit interval, old (longer) receive interval.
    assert_eq!(s.snapshot().tx_interval_us, 300_000);
    assert_eq!(s.snapshot().detect_time_us, 900_000);
    s.handle(Input::Received(f));
    assert_eq!(s.snapshot().tx_interval_us, 800_000);
    // The remote system sends every 300 ms: detection is 3 x max(100, 300) ms.
    assert_eq!(s.snapshot().detect_time_us, 900_000);
}

#[test]
fn passive_waits_for_the_remote_system() {
    let mut s = session(true);
    assert!(sent(&s.handle(Input::Start)).is_empty());
    assert!(sent(&s.handle(Input::TimerFired(Timer::Tx))).is_empty());
    let out = s.handle(Input::Received(remote(State::Down)));
    assert_eq!(s.state(), State::Init);
    assert!(!sent(&out).is_empty());
}

#[test]
fn remote_demand_mode_stops_periodic_packets_while_both_are_up() {
    let mut s = in_state(State::Up);
    let mut p = remote(State::Up);
    p.demand = true;
    let out = s.handle(Input::Received(p));
    assert!(out.contains(&Output::StopTimer(Timer::Tx)));
}

#[test]
fn jitter_is_within_rfc_5880_6_8_7_bounds() {
    for (mult, hi) in [(3u8, 100u128), (1, 90)] {
        let mut s = Session::new(SessionConfig {
            timers: Timers {
                detect_mult: mult,
                ..Timers::default()
            },
            local_discr: LOCAL,
            passive: false,
            seed: 12345,
        });
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let out = s.handle(Input::TimerFired(Timer::Tx));
            let d = armed(&out, Timer::Tx).unwrap_or_default().as_micros();
            assert!(d >= 750_000 && d < hi * 10_000, "mult {mult}: {d}");
            seen.insert(d / 10_000);
        }
        // Spread over the whole range, not stuck.
        assert!(
            seen.len() as u128 >= (hi - 75) - 2,
            "mult {mult}: {}",
            seen.len()
        );
    }
}

fn arb_input() -> impl Strategy<Value = Input> {
    let pkt = (
        0u8..4,
        any::<[bool; 3]>(),
        1u8..=5,
        prop_oneof![Just(0u32), Just(LOCAL), Just(LOCAL + 1)],
        prop_oneof![Just(0u32), 1u32..2_000_000],
        prop_oneof![Just(0u32), 1u32..2_000_000],
    )
        .prop_map(|(st, f, mult, your, tx, rx)| {
            Input::Received(ControlPacket {
                state: State::from_bits(st),
                poll: f[0],
                fin: f[1],
                demand: f[2],
                detect_mult: mult,
                your_discr: your,
                desired_min_tx: tx,
                required_min_rx: rx,
                ..remote(State::Down)
            })
        });
    prop_oneof![
        6 => pkt,
        2 => Just(Input::TimerFired(Timer::Tx)),
        1 => Just(Input::TimerFired(Timer::Detect)),
        1 => Just(Input::AdminDown),
        1 => Just(Input::AdminUp),
        1 => (1u64..2000, 1u64..2000, 1u8..10).prop_map(|(t, r, m)| Input::SetTimers(Timers {
            desired_min_tx: Duration::from_millis(t),
            required_min_rx: Duration::from_millis(r),
            detect_mult: m,
        })),
    ]
}

proptest! {
    /// Any sequence of inputs: no panic, and every output obeys the RFC's rules.
    #[test]
    fn invariants_hold_for_any_input_sequence(inputs in proptest::collection::vec(arb_input(), 1..60)) {
        let mut s = session(false);
        let mut state = State::Down;
        s.handle(Input::Start);
        for i in inputs {
            for o in s.handle(i.clone()) {
                match o {
                    Output::Send(p) => {
                        prop_assert!(!(p.poll && p.fin));
                        prop_assert_eq!(p.my_discr, LOCAL);
                        prop_assert!(p.detect_mult >= 1);
                        // Outside Up we never advertise less than 1 s (§6.8.3).
                        if p.state != State::Up {
                            prop_assert!(p.desired_min_tx >= IDLE_TX_US);
                        }
                        prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
                    }
                    Output::StateChanged { from, to, .. } => {
                        prop_assert_eq!(from, state);
                        prop_assert_ne!(from, to);
                        state = to;
                    }
                    Output::ArmTimer(Timer::Tx, d) => {
                        prop_assert!(d > Duration::ZERO);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(s.state(), state);
        }
    }
}
