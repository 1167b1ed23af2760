//! Issue 5, scenario 8: malformed input. A raw TCP peer (this file, bytes built by hand) does
//! the OPEN/KEEPALIVE handshake with a Calyx speaker on loopback and then sends one malformed
//! message per RFC 7606 / RFC 4271 §6 case. For each case the outcome the RFC asks for is
//! checked:
//! * session reset: the exact NOTIFICATION (code, subcode, data) is read back from the socket,
//!   the connection closes, and the routes of the session go away;
//! * treat-as-withdraw: a prefix announced just before is withdrawn by the malformed UPDATE, and
//!   the session stays up (a later well-formed UPDATE on the same connection is accepted);
//! * attribute discard: the route is installed without the malformed attribute (seen through
//!   a second, well-behaved raw peer that receives what Calyx advertises).
//!
//! Meanwhile the well-behaved peer stays Established: after the barrage it still receives
//! routes and Calyx still accepts routes from it. Every read is bounded by a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Ev, RawPeer, WAIT};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use calyx_bgp::{
    BestRouteChange, CancellationToken, GlobalConfig, PeerConfig, Policy, Speaker, State,
};
use calyx_proto::{Message, MpNlri, PathAttributes};
use ipnet::IpNet;
use tokio::sync::mpsc;

const CALYX: &str = "127.0.0.40";
const BAD: &str = "127.0.0.41";
const GOOD: &str = "127.0.0.42";
const CALYX_AS: u32 = 65000;
const BAD_AS: u32 = 65100;
const GOOD_AS: u32 = 65200;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn calyx_addr(port: u16) -> SocketAddr {
    SocketAddr::new(ip(CALYX), port)
}

// ---- wire building (by hand, so that anything can be malformed) ----

const MARKER: [u8; 16] = [0xff; 16];

fn message(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = MARKER.to_vec();
    m.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

/// One path attribute (extended length when the value needs it).
fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    if value.len() > 255 {
        a.extend_from_slice(&[flags | 0x10, code]);
        a.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    } else {
        a.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    a.extend_from_slice(value);
    a
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap().to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    message(2, &b)
}

const WK: u8 = 0x40; // well-known (transitive)
const OPT: u8 = 0x80; // optional non-transitive
const OPT_T: u8 = 0xc0; // optional transitive

fn origin() -> Vec<u8> {
    attr(WK, 1, &[0])
}

fn as_path() -> Vec<u8> {
    let mut v = vec![2, 1];
    v.extend_from_slice(&BAD_AS.to_be_bytes());
    attr(WK, 2, &v)
}

fn next_hop() -> Vec<u8> {
    attr(WK, 3, &ip4(BAD))
}

fn ip4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// The NLRI encoding of an IPv4 or IPv6 prefix.
fn nlri(p: &str) -> Vec<u8> {
    let n: IpNet = p.parse().unwrap();
    let len = n.prefix_len();
    let octets: Vec<u8> = match n.addr() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut v = vec![len];
    v.extend_from_slice(&octets[..usize::from(len).div_ceil(8)]);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A well-formed announcement from the bad peer (IPv6 through MP_REACH_NLRI).
fn announce(p: &str) -> Vec<u8> {
    if p.contains(':') {
        update(
            &[],
            &cat(&[attr(OPT, 14, &mp_reach_v6(16, p)), origin(), as_path()]),
            &[],
        )
    } else {
        update(&[], &cat(&[origin(), as_path(), next_hop()]), &nlri(p))
    }
}

/// MP_REACH_NLRI value for IPv6 unicast with a next hop of `nh_len` octets.
fn mp_reach_v6(nh_len: usize, p: &str) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh_len as u8];
    let nh: std::net::Ipv6Addr = "fd00:41::1".parse().unwrap();
    v.extend(nh.octets().iter().cycle().take(nh_len));
    v.push(0);
    v.extend_from_slice(&nlri(p));
    v
}

// ---- the raw peer ----

/// The routes a well-behaved raw peer has received, with their attributes.
struct Table {
    routes: HashMap<IpNet, PathAttributes>,
}

impl Table {
    fn apply(&mut self, ev: Ev, who: &str) {
        let u = match ev {
            Ev::Msg(Message::Update(u)) => u,
            Ev::Msg(Message::Keepalive) => return,
            other => panic!("{who}: well-behaved session disturbed: {other:?}"),
        };
        for w in &u.withdrawn {
            self.routes.remove(&IpNet::V4(w.prefix.into()));
        }
        if let Some(m) = &u.mp_unreach {
            if let MpNlri::Ipv6(v) = &m.nlri {
                for n in v {
                    self.routes.remove(&IpNet::V6(n.prefix.into()));
                }
            }
        }
        for n in &u.nlri {
            self.routes
                .insert(IpNet::V4(n.prefix.into()), u.attributes.clone());
        }
        if let Some(m) = &u.mp_reach {
            if let MpNlri::Ipv6(v) = &m.nlri {
                for n in v {
                    self.routes
                        .insert(IpNet::V6(n.prefix.into()), u.attributes.clone());
                }
            }
        }
    }

    /// Wait (bounded) until `prefix` is advertised to the good peer, and return its attributes.
    async fn wait(&mut self, peer: &mut RawPeer, prefix: &str) -> PathAttributes {
        let p: IpNet = prefix.parse().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(a) = self.routes.get(&p) {
                return a.clone();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match peer.next(left).await {
                Some(ev) => self.apply(ev, peer.name),
                None => panic!(
                    "{prefix} not advertised to the good peer: {:?}",
                    self.routes
                ),
            }
        }
    }

    fn drain(&mut self, peer: &mut RawPeer) {
        while let Ok(ev) = peer.rx.try_recv() {
            self.apply(ev, peer.name);
        }
    }
}

/// Calyx's best routes, as its subscribers see them.
struct Feed {
    rx: mpsc::Receiver<BestRouteChange>,
    seen: HashMap<IpNet, BestRouteChange>,
}

impl Feed {
    async fn wait(&mut self, prefix: &str, present: bool, case: &str) {
        let p: IpNet = prefix.parse().unwrap();
        let r = tokio::time::timeout(WAIT, async {
            loop {
                if self.seen.get(&p).is_some_and(|c| c.withdrawn != present) {
                    return;
                }
                match self.rx.recv().await {
                    Some(c) => {
                        self.seen.insert(c.prefix, c);
                    }
                    None => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "{case}: {prefix} {} not seen in time",
            if present { "installed" } else { "withdrawn" }
        );
    }
}

// ---- the cases ----

enum Expect {
    /// Session reset with this NOTIFICATION (code, subcode, data; `None`: data not checked).
    Reset(u8, u8, Option<Vec<u8>>),
    /// The prefixes of the UPDATE are withdrawn; the session stays up.
    Withdraw,
    /// The route is installed; the check sees what the good peer receives.
    Discard(fn(&PathAttributes) -> bool),
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    /// The prefix the malformed message carries (treat-as-withdraw / discard cases), or the
    /// canary announced before a reset.
    prefix: String,
    bytes: Vec<u8>,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut n = 0u8;
    let mut next = |v6: bool| {
        n += 1;
        if v6 {
            format!("fd00:200:{n}::/64")
        } else {
            format!("10.200.{n}.0/24")
        }
    };
    let mk = |p: &str, attrs: Vec<Vec<u8>>| update(&[], &cat(&attrs), &nlri(p));

    // Treat-as-withdraw.
    let p = next(false);
    v.push(Case {
        name: "ORIGIN with the optional bit set (attribute flags)",
        rfc: "RFC 7606 §3 c",
        bytes: mk(&p, vec![attr(OPT_T, 1, &[0]), as_path(), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "NEXT_HOP marked optional (attribute flags)",
        rfc: "RFC 7606 §3 c",
        bytes: mk(&p, vec![origin(), as_path(), attr(OPT, 3, &ip4(BAD))]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "ORIGIN value 3",
        rfc: "RFC 7606 §7.1",
        bytes: mk(&p, vec![attr(WK, 1, &[3]), as_path(), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "ORIGIN of length 2",
        rfc: "RFC 7606 §7.1",
        bytes: mk(&p, vec![attr(WK, 1, &[0, 0]), as_path(), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    let mut overrun = vec![2, 5];
    overrun.extend_from_slice(&BAD_AS.to_be_bytes());
    v.push(Case {
        name: "AS_PATH segment overrun (5 ASes announced, 1 present)",
        rfc: "RFC 7606 §7.2",
        bytes: mk(&p, vec![origin(), attr(WK, 2, &overrun), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    let mut badseg = vec![9, 1];
    badseg.extend_from_slice(&BAD_AS.to_be_bytes());
    v.push(Case {
        name: "AS_PATH segment type 9",
        rfc: "RFC 7606 §7.2",
        bytes: mk(&p, vec![origin(), attr(WK, 2, &badseg), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "AS_PATH segment of length 0",
        rfc: "RFC 7606 §7.2",
        bytes: mk(&p, vec![origin(), attr(WK, 2, &[2, 0]), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    let mut confed = vec![3, 1];
    confed.extend_from_slice(&BAD_AS.to_be_bytes());
    v.push(Case {
        name: "AS_CONFED_SEQUENCE from an external peer",
        rfc: "RFC 7606 §7.2 (RFC 5065 §5)",
        bytes: mk(&p, vec![origin(), attr(WK, 2, &confed), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "NEXT_HOP of length 3",
        rfc: "RFC 7606 §7.3",
        bytes: mk(&p, vec![origin(), as_path(), attr(WK, 3, &[127, 0, 0])]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "NEXT_HOP of length 5",
        rfc: "RFC 7606 §7.3",
        bytes: mk(
            &p,
            vec![origin(), as_path(), attr(WK, 3, &[127, 0, 0, 41, 0])],
        ),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "MULTI_EXIT_DISC of length 3",
        rfc: "RFC 7606 §7.4",
        bytes: mk(
            &p,
            vec![origin(), as_path(), next_hop(), attr(OPT, 4, &[0, 0, 1])],
        ),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "COMMUNITIES of length 5",
        rfc: "RFC 7606 §7.8",
        bytes: mk(
            &p,
            vec![
                origin(),
                as_path(),
                next_hop(),
                attr(OPT_T, 8, &[0, 1, 0, 1, 9]),
            ],
        ),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "ORIGIN missing",
        rfc: "RFC 7606 §3 d",
        bytes: mk(&p, vec![as_path(), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "AS_PATH missing",
        rfc: "RFC 7606 §3 d",
        bytes: mk(&p, vec![origin(), next_hop()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    v.push(Case {
        name: "NEXT_HOP missing with IPv4 NLRI",
        rfc: "RFC 7606 §3 d",
        bytes: mk(&p, vec![origin(), as_path()]),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(false);
    // The last attribute announces 40 octets where 4 remain; the NLRI field is still found
    // through the total path attribute length.
    let mut cut = cat(&[origin(), as_path(), next_hop()]);
    cut.extend_from_slice(&[OPT, 4, 40, 0, 0, 0, 1]);
    v.push(Case {
        name: "attribute overruns the path attribute field",
        rfc: "RFC 7606 §4",
        bytes: update(&[], &cut, &nlri(&p)),
        prefix: p,
        expect: Expect::Withdraw,
    });
    let p = next(true);
    v.push(Case {
        name: "IPv6 MP_REACH with a malformed ORIGIN",
        rfc: "RFC 7606 §7.1, §2 (MP_REACH prefixes withdrawn too)",
        bytes: update(
            &[],
            &cat(&[
                attr(OPT, 14, &mp_reach_v6(16, &p)),
                attr(WK, 1, &[7]),
                as_path(),
            ]),
            &[],
        ),
        prefix: p,
        expect: Expect::Withdraw,
    });

    // Attribute discard.
    let p = next(false);
    v.push(Case {
        name: "AGGREGATOR of length 6 on a 4-octet-AS session",
        rfc: "RFC 7606 §7.7",
        bytes: mk(
            &p,
            vec![
                origin(),
                as_path(),
                next_hop(),
                attr(OPT_T, 7, &[0xfe, 0x4c, 127, 0, 0, 41]),
            ],
        ),
        prefix: p,
        expect: Expect::Discard(|a| a.aggregator.is_none()),
    });
    let p = next(false);
    v.push(Case {
        name: "ATOMIC_AGGREGATE of length 1",
        rfc: "RFC 7606 §7.6",
        bytes: mk(&p, vec![origin(), as_path(), next_hop(), attr(WK, 6, &[1])]),
        prefix: p,
        expect: Expect::Discard(|a| !a.atomic_aggregate),
    });
    let p = next(false);
    v.push(Case {
        name: "LOCAL_PREF from an external peer",
        rfc: "RFC 7606 §7.5",
        bytes: mk(
            &p,
            vec![
                origin(),
                as_path(),
                next_hop(),
                attr(WK, 5, &[0, 0, 0, 200]),
            ],
        ),
        prefix: p,
        expect: Expect::Discard(|a| a.local_pref.is_none()),
    });
    let p = next(false);
    v.push(Case {
        name: "duplicate ORIGIN (IGP, then INCOMPLETE)",
        rfc: "RFC 7606 §3 g",
        bytes: mk(&p, vec![origin(), as_path(), next_hop(), attr(WK, 1, &[2])]),
        prefix: p,
        expect: Expect::Discard(|a| a.origin == Some(calyx_proto::Origin::Igp)),
    });
    let p = next(false);
    v.push(Case {
        name: "duplicate COMMUNITIES (first kept)",
        rfc: "RFC 7606 §3 g",
        bytes: mk(
            &p,
            vec![
                origin(),
                as_path(),
                next_hop(),
                attr(OPT_T, 8, &[0xfe, 0x4c, 0, 1]),
                attr(OPT_T, 8, &[0xfe, 0x4c, 0, 2]),
            ],
        ),
        prefix: p,
        expect: Expect::Discard(|a| {
            a.communities.iter().map(|c| c.0).collect::<Vec<_>>() == [0xfe4c_0001]
        }),
    });

    // Session reset.
    let p = next(false);
    let bad_nh = mp_reach_v6(5, "fd00:201::/64");
    v.push(Case {
        name: "MP_REACH_NLRI with a next hop of length 5",
        rfc: "RFC 7606 §7.11, RFC 4760 §7",
        bytes: update(
            &[],
            &cat(&[attr(OPT, 14, &bad_nh), origin(), as_path()]),
            &[],
        ),
        prefix: p,
        expect: Expect::Reset(3, 9, Some(attr(OPT, 14, &bad_nh))),
    });
    let p = next(false);
    let mp = mp_reach_v6(16, "fd00:202::/64");
    v.push(Case {
        name: "MP_REACH_NLRI with well-known flags",
        rfc: "RFC 7606 §7.11, RFC 4271 §6.3",
        bytes: update(&[], &cat(&[attr(WK, 14, &mp), origin(), as_path()]), &[]),
        prefix: p,
        expect: Expect::Reset(3, 4, Some(attr(WK, 14, &mp))),
    });
    let p = next(false);
    v.push(Case {
        name: "MP_REACH_NLRI twice",
        rfc: "RFC 7606 §3 g",
        bytes: update(
            &[],
            &cat(&[
                attr(OPT, 14, &mp),
                attr(OPT, 14, &mp_reach_v6(16, "fd00:203::/64")),
                origin(),
                as_path(),
            ]),
            &[],
        ),
        prefix: p,
        expect: Expect::Reset(3, 1, Some(Vec::new())),
    });
    let p = next(false);
    v.push(Case {
        name: "unrecognized well-known attribute (type 200)",
        rfc: "RFC 4271 §6.3",
        bytes: mk(
            "10.202.0.0/24",
            vec![origin(), as_path(), next_hop(), attr(WK, 200, &[1, 2])],
        ),
        prefix: p,
        expect: Expect::Reset(3, 2, Some(attr(WK, 200, &[1, 2]))),
    });
    let p = next(false);
    v.push(Case {
        name: "NLRI prefix length 33",
        rfc: "RFC 7606 §5.3, RFC 4271 §6.3",
        bytes: update(
            &[],
            &cat(&[origin(), as_path(), next_hop()]),
            &[33, 10, 203, 0, 0, 0],
        ),
        prefix: p,
        expect: Expect::Reset(3, 10, Some(Vec::new())),
    });
    let p = next(false);
    // Withdrawn Routes Length 200 in a body of 8 octets.
    let body = vec![0, 200, 24, 10, 0, 0, 0, 0];
    v.push(Case {
        name: "Withdrawn Routes Length overruns the message",
        rfc: "RFC 4271 §6.3 (RFC 7606 §5: not treat-as-withdraw)",
        bytes: message(2, &body),
        prefix: p,
        expect: Expect::Reset(3, 1, Some(Vec::new())),
    });
    let p = next(false);
    let mut long = message(2, &[0, 0, 0, 0]);
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    v.push(Case {
        name: "header length 5000 (no extended messages)",
        rfc: "RFC 4271 §6.1, RFC 8654",
        bytes: long,
        prefix: p,
        expect: Expect::Reset(1, 2, Some(5000u16.to_be_bytes().to_vec())),
    });
    let p = next(false);
    let mut short = message(2, &[0, 0, 0, 0]);
    short[16..18].copy_from_slice(&18u16.to_be_bytes());
    v.push(Case {
        name: "header length 18 (shorter than a header)",
        rfc: "RFC 4271 §6.1",
        bytes: short,
        prefix: p,
        expect: Expect::Reset(1, 2, Some(18u16.to_be_bytes().to_vec())),
    });
    let p = next(false);
    v.push(Case {
        name: "KEEPALIVE of length 20",
        rfc: "RFC 4271 §6.1",
        bytes: message(4, &[0]),
        prefix: p,
        expect: Expect::Reset(1, 2, Some(20u16.to_be_bytes().to_vec())),
    });
    let p = next(false);
    let mut marker = message(4, &[]);
    marker[3] = 0;
    v.push(Case {
        name: "marker not all ones",
        rfc: "RFC 4271 §6.1",
        bytes: marker,
        prefix: p,
        expect: Expect::Reset(1, 1, Some(Vec::new())),
    });
    let p = next(false);
    v.push(Case {
        name: "unknown message type 9",
        rfc: "RFC 4271 §6.1",
        bytes: message(9, &[]),
        prefix: p,
        expect: Expect::Reset(1, 3, Some(vec![9])),
    });
    v
}

fn status_of(s: &Speaker, addr: &str) -> Option<calyx_bgp::PeerStatus> {
    s.status().into_iter().find(|p| p.address == ip(addr))
}

async fn wait_established(s: &Speaker, addr: &str) {
    for _ in 0..200 {
        if status_of(s, addr).is_some_and(|p| p.state == State::Established) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} not Established: {:?}", s.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7606_malformed_updates_get_the_rfc_outcome_and_other_peers_keep_going() {
    let port = calyx_tests::free_port();
    let calyx = Speaker::start(
        GlobalConfig {
            router_id: CALYX.parse().unwrap(),
            local_as: CALYX_AS,
            listen: Some(SocketAddr::new(ip(CALYX), port)),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let peer = |addr: &str, asn: u32| PeerConfig {
        passive: true,
        hold_time: 90,
        connect_retry: 1,
        graceful_restart: false,
        export: Some(Policy::accept_all()),
        ..PeerConfig::new(ip(addr), asn)
    };
    calyx
        .set_peers(vec![peer(BAD, BAD_AS), peer(GOOD, GOOD_AS)])
        .await
        .unwrap();
    let mut feed = Feed {
        rx: calyx.subscribe(4096).await.unwrap(),
        seen: HashMap::new(),
    };
    calyx
        .originate("10.40.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();

    // The well-behaved peer (hold time 0: no keepalives needed from this test).
    let mut good = RawPeer::connect("good", GOOD, GOOD_AS, 0, calyx_addr(port)).await;
    let mut table = Table {
        routes: HashMap::new(),
    };
    let good_nh = attr(WK, 3, &ip4(GOOD));
    let mut good_path = vec![2, 1];
    good_path.extend_from_slice(&GOOD_AS.to_be_bytes());
    let good_announce = |p: &str| {
        update(
            &[],
            &cat(&[origin(), attr(WK, 2, &good_path), good_nh.clone()]),
            &nlri(p),
        )
    };
    good.send(&good_announce("10.42.0.0/24")).await;
    feed.wait("10.42.0.0/24", true, "good peer before").await;
    table.wait(&mut good, "10.40.0.0/26").await;

    let mut bad = RawPeer::connect("bad", BAD, BAD_AS, 0, calyx_addr(port)).await;
    wait_established(&calyx, BAD).await;
    let mut resets = 0;
    for (i, c) in cases().into_iter().enumerate() {
        println!("case {i}: {} ({}) -> {:?}", c.name, c.rfc, kind(&c.expect));
        match c.expect {
            Expect::Withdraw => {
                bad.send(&announce(&c.prefix)).await;
                feed.wait(&c.prefix, true, c.name).await;
                bad.send(&c.bytes).await;
                feed.wait(&c.prefix, false, c.name).await;
                // The session is still up: a later UPDATE on it is taken.
                let sentinel = format!("10.201.{i}.0/24");
                bad.send(&announce(&sentinel)).await;
                feed.wait(&sentinel, true, c.name).await;
                bad.assert_no_notification(c.name);
            }
            Expect::Discard(check) => {
                bad.send(&c.bytes).await;
                feed.wait(&c.prefix, true, c.name).await;
                let a = table.wait(&mut good, &c.prefix).await;
                assert!(check(&a), "{}: attribute not discarded: {a:?}", c.name);
                bad.assert_no_notification(c.name);
            }
            Expect::Reset(code, subcode, data) => {
                // A canary route of this session must go away with it.
                bad.send(&announce(&c.prefix)).await;
                feed.wait(&c.prefix, true, c.name).await;
                bad.send(&c.bytes).await;
                let n = bad.expect_notification(c.name).await;
                assert_eq!(
                    (n.code, n.subcode),
                    (code, subcode),
                    "{}: wrong NOTIFICATION {n}",
                    c.name
                );
                if let Some(d) = data {
                    assert_eq!(n.data, d, "{}: NOTIFICATION data", c.name);
                }
                println!("  NOTIFICATION {code}/{subcode} data {:02x?}", n.data);
                feed.wait(&c.prefix, false, c.name).await;
                resets += 1;
                bad = RawPeer::connect("bad", BAD, BAD_AS, 0, calyx_addr(port)).await;
                wait_established(&calyx, BAD).await;
            }
        }
    }
    assert!(resets > 0);

    // After the barrage: the well-behaved peer never saw a NOTIFICATION, still gets routes,
    // and Calyx still takes its routes.
    table.drain(&mut good);
    calyx
        .originate("10.40.1.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    table.wait(&mut good, "10.40.1.0/26").await;
    good.send(&good_announce("10.42.1.0/24")).await;
    feed.wait("10.42.1.0/24", true, "good peer after").await;
    feed.wait("10.42.0.0/24", true, "good peer after").await;
    let st = status_of(&calyx, GOOD).unwrap();
    assert_eq!(st.state, State::Established, "{st:?}");
    // The bad peer's last session is usable too, and the good peer learns what it announces.
    bad.send(&announce("10.203.0.0/24")).await;
    feed.wait("10.203.0.0/24", true, "bad peer after").await;
    table.wait(&mut good, "10.203.0.0/24").await;
    bad.assert_no_notification("after the barrage");
    calyx.shutdown(false).await;
}

fn kind(e: &Expect) -> String {
    match e {
        Expect::Reset(c, s, _) => format!("session reset {c}/{s}"),
        Expect::Withdraw => "treat-as-withdraw".into(),
        Expect::Discard(_) => "attribute discard".into(),
    }
}
