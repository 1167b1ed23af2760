//! Messages captured from real BIRD 2, FRR and GoBGP sessions (see fixtures/capture/) decode
//! without error and re-encode to the same octets.
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::BytesMut;
use calyx_proto::attr::MpNextHop;
use calyx_proto::capability::Capability;
use calyx_proto::notification::{CeaseSubcode, ErrorCode, UpdateSubcode};
use calyx_proto::route_refresh::RouteRefreshSubtype;
use calyx_proto::{decode_message, AfiSafi, Asn, Message, ParseContext};

struct Fixture {
    name: String,
    ctx: ParseContext,
    messages: Vec<Vec<u8>>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn load(name: &str) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut ctx = ParseContext::new();
    let mut messages = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("# ctx:") {
            for f in flags.split_whitespace() {
                match f {
                    "four_octet_as" => ctx.four_octet_as = true,
                    "extended_message" => ctx.extended_message = true,
                    "add_path_ipv4" => ctx.add_path_ipv4 = true,
                    "add_path_ipv6" => ctx.add_path_ipv6 = true,
                    "external_peer" => ctx.external_peer = true,
                    other => panic!("unknown ctx flag {other}"),
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            messages.push(hex(line.trim()));
        }
    }
    Fixture {
        name: name.to_string(),
        ctx,
        messages,
    }
}

const ALL: &[&str] = &[
    "bird-to-frr-ipv4",
    "frr-to-bird-ipv4",
    "bird-to-frr-ipv6",
    "frr-to-bird-ipv6",
    "bird-to-gobgp-ipv4",
    "gobgp-to-bird-ipv4",
    "bird-to-gobgp-ipv6",
    "gobgp-to-bird-ipv6",
    "frr-notification-invalid-network",
];

fn decode_all(f: &Fixture) -> Vec<Message> {
    f.messages
        .iter()
        .enumerate()
        .map(|(i, m)| match decode_message(m, &f.ctx) {
            Ok(msg) => msg,
            Err(e) => panic!("{} message {i}: {e}", f.name),
        })
        .collect()
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let mut total = 0;
    for name in ALL {
        let f = load(name);
        assert!(!f.messages.is_empty(), "{name} is empty");
        for (i, (raw, msg)) in f.messages.iter().zip(decode_all(&f)).enumerate() {
            if let Message::Update(u) = &msg {
                assert!(u.errors.is_empty(), "{name} message {i}: {:?}", u.errors);
            }
            let mut out = BytesMut::new();
            msg.encode(&f.ctx, &mut out).unwrap();
            assert_eq!(
                &out[..],
                &raw[..],
                "{name} message {i} re-encoded differently: {msg:#?}"
            );
            total += 1;
        }
    }
    assert!(total > 40, "only {total} messages");
}

fn opens(f: &Fixture) -> Vec<calyx_proto::OpenMessage> {
    decode_all(f)
        .into_iter()
        .filter_map(|m| match m {
            Message::Open(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn gobgp_open_has_4_octet_as_and_add_path() {
    let f = load("gobgp-to-bird-ipv4");
    let o = &opens(&f)[0];
    assert_eq!(o.my_as, 23456, "My AS is AS_TRANS");
    assert_eq!(o.asn(), Asn(4_200_000_003));
    assert!(o
        .capabilities()
        .any(|c| matches!(c, Capability::AddPath(_))));
    assert!(o
        .capabilities()
        .any(|c| matches!(c, Capability::GracefulRestart(g) if g.restart_time == 120)));
}

#[test]
fn bird_open_has_llgr_and_graceful_restart() {
    let f = load("bird-to-gobgp-ipv4");
    let o = &opens(&f)[0];
    assert_eq!(o.asn(), Asn(65001));
    assert!(o
        .capabilities()
        .any(|c| matches!(c, Capability::LongLivedGracefulRestart(_))));
    assert!(o
        .capabilities()
        .any(|c| matches!(c, Capability::ExtendedMessage)));
    assert!(o.multiprotocol().any(|f| f == AfiSafi::IPV4_UNICAST));
}

#[test]
fn bird_as4_path_merges_to_the_real_path() {
    // BIRD re-advertises GoBGP's routes (AS 4200000003) to FRR on a 2-octet session.
    let f = load("bird-to-frr-ipv4");
    let mut merged = 0;
    for m in decode_all(&f) {
        let Message::Update(u) = m else { continue };
        if let Some(p4) = &u.attributes.as4_path {
            let mut a = u.attributes.clone();
            assert!(a.as_path.as_ref().unwrap().contains(Asn::TRANS));
            a.merge_as4();
            let path = a.as_path.unwrap();
            assert!(path.contains(Asn(4_200_000_003)), "{path:?} from {p4:?}");
            assert!(!path.contains(Asn::TRANS));
            merged += 1;
        }
    }
    assert!(merged > 0);
}

#[test]
fn bird_shutdown_communication() {
    let f = load("bird-to-frr-ipv4");
    let n = decode_all(&f)
        .into_iter()
        .find_map(|m| match m {
            Message::Notification(n) => Some(n),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        n.error_code(),
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(
        n.shutdown_message(),
        Some("calyx fixture capture: maintenance")
    );
}

#[test]
fn frr_enhanced_route_refresh_and_invalid_network_notification() {
    let f = load("frr-to-bird-ipv4");
    let subtypes: Vec<_> = decode_all(&f)
        .into_iter()
        .filter_map(|m| match m {
            Message::RouteRefresh(r) => Some(r.subtype),
            _ => None,
        })
        .collect();
    assert!(subtypes.contains(&RouteRefreshSubtype::BeginningOfRefresh));
    assert!(subtypes.contains(&RouteRefreshSubtype::EndOfRefresh));
    let f = load("frr-notification-invalid-network");
    let Message::Notification(n) = &decode_all(&f)[0] else {
        panic!()
    };
    assert_eq!(
        n.error_code(),
        ErrorCode::Update(UpdateSubcode::InvalidNetworkField)
    );
}

#[test]
fn ipv6_link_local_next_hop_and_end_of_rib() {
    let f = load("bird-to-gobgp-ipv6");
    let mut ll = false;
    let mut eor = false;
    for m in decode_all(&f) {
        let Message::Update(u) = m else { continue };
        if let Some(r) = &u.mp_reach {
            if let MpNextHop::V6 {
                link_local: Some(a),
                ..
            } = r.next_hop
            {
                assert_eq!(a.segments()[0], 0xfe80);
                ll = true;
            }
        }
        eor |= u.as_end_of_rib() == Some(AfiSafi::IPV6_UNICAST);
    }
    assert!(ll && eor);
}

#[test]
fn add_path_identifiers_from_gobgp() {
    let f = load("gobgp-to-bird-ipv4");
    let ids: Vec<_> = decode_all(&f)
        .into_iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u.nlri),
            _ => None,
        })
        .flatten()
        .map(|n| n.path_id)
        .collect();
    assert!(!ids.is_empty() && ids.iter().all(|p| p.is_some()));
}
