//! A table of malformed messages, each with the exact outcome RFC 4271 §6 / RFC 7606 call for.
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use calyx_proto::error::{Action, AttrErrorKind as K};
use calyx_proto::{decode_message, Asn, Message, ParseContext};

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 10, 0, 0, 1];
const NLRI: &[u8] = &[24, 10, 1, 2];
const MP_REACH_V6: &[u8] = &[
    0x80, 14, 26, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 32, 0x20,
    1, 0xd, 0xb8,
];

fn attrs(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The three mandatory attributes followed by `extra`.
fn base(extra: &[u8]) -> Vec<u8> {
    attrs(&[ORIGIN, AS_PATH, NEXT_HOP, extra])
}

#[derive(Debug)]
enum Want {
    /// Decodes; the UPDATE has exactly these (type code, kind) errors and this action.
    Update(Option<Action>, &'static [(u8, K)]),
    /// Session reset with this NOTIFICATION code, subcode and, if given, data.
    Reset(u8, u8, Option<Vec<u8>>),
}

fn check(name: &str, ctx: ParseContext, bytes: Vec<u8>, want: Want) {
    let got = decode_message(&bytes, &ctx);
    match (&want, &got) {
        (Want::Update(action, errs), Ok(Message::Update(u))) => {
            let kinds: Vec<(u8, K)> = u.errors.iter().map(|e| (e.type_code, e.kind)).collect();
            assert_eq!(&kinds[..], *errs, "{name}");
            assert_eq!(u.action(), *action, "{name}");
        }
        (Want::Reset(code, sub, data), Err(e)) => {
            assert_eq!(
                (e.notification.code, e.notification.subcode),
                (*code, *sub),
                "{name}: {e}"
            );
            if let Some(d) = data {
                assert_eq!(&e.notification.data, d, "{name}");
            }
        }
        _ => panic!("{name}: wanted {want:?}, got {got:?}"),
    }
}

fn ext_peer() -> ParseContext {
    ParseContext {
        external_peer: true,
        ..ParseContext::modern()
    }
}

fn c4() -> ParseContext {
    ParseContext::modern()
}

use Action::{Discard, TreatAsWithdraw as Taw};

#[test]
fn rfc7606_update_table() {
    let ok: &[(u8, K)] = &[];
    let cases: Vec<(&str, ParseContext, Vec<u8>, Want)> = vec![
        (
            "well-formed",
            c4(),
            update(&[], &base(&[]), NLRI),
            Want::Update(None, ok),
        ),
        (
            "bad ORIGIN value",
            c4(),
            update(&[], &attrs(&[&[0x40, 1, 1, 3], AS_PATH, NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(1, K::Value)]),
        ),
        (
            "ORIGIN length 2",
            c4(),
            update(&[], &attrs(&[&[0x40, 1, 2, 0, 0], AS_PATH, NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(1, K::Length)]),
        ),
        (
            "ORIGIN flags optional",
            c4(),
            update(&[], &attrs(&[&[0xc0, 1, 1, 0], AS_PATH, NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(1, K::Flags)]),
        ),
        (
            "AS_PATH segment overrun",
            c4(),
            update(
                &[],
                &attrs(&[ORIGIN, &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9], NEXT_HOP]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(2, K::Value)]),
        ),
        (
            "AS_PATH segment length 0",
            c4(),
            update(&[], &attrs(&[ORIGIN, &[0x40, 2, 2, 2, 0], NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(2, K::Value)]),
        ),
        (
            "AS_PATH unknown segment type",
            c4(),
            update(
                &[],
                &attrs(&[ORIGIN, &[0x40, 2, 6, 5, 1, 0, 0, 0xfd, 0xe9], NEXT_HOP]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(2, K::Value)]),
        ),
        (
            "AS_PATH single trailing octet",
            c4(),
            update(
                &[],
                &attrs(&[ORIGIN, &[0x40, 2, 7, 2, 1, 0, 0, 0xfd, 0xe9, 2], NEXT_HOP]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(2, K::Value)]),
        ),
        (
            "NEXT_HOP of 5 octets",
            c4(),
            update(
                &[],
                &attrs(&[ORIGIN, AS_PATH, &[0x40, 3, 5, 10, 0, 0, 1, 0]]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(3, K::Length), (3, K::Missing)][..1]),
        ),
        (
            "MED of 3 octets",
            c4(),
            update(&[], &base(&[0x80, 4, 3, 0, 0, 1]), NLRI),
            Want::Update(Some(Taw), &[(4, K::Length)]),
        ),
        (
            "MED flagged well-known",
            c4(),
            update(&[], &base(&[0x40, 4, 4, 0, 0, 0, 1]), NLRI),
            Want::Update(Some(Taw), &[(4, K::Flags)]),
        ),
        (
            "LOCAL_PREF of 3 octets",
            c4(),
            update(&[], &base(&[0x40, 5, 3, 0, 0, 1]), NLRI),
            Want::Update(Some(Taw), &[(5, K::Length)]),
        ),
        (
            "ATOMIC_AGGREGATE of 1 octet",
            c4(),
            update(&[], &base(&[0x40, 6, 1, 0]), NLRI),
            Want::Update(Some(Discard), &[(6, K::Length)]),
        ),
        (
            "AGGREGATOR of 7 octets",
            c4(),
            update(&[], &base(&[0xc0, 7, 7, 0, 0, 0, 1, 1, 2, 3]), NLRI),
            Want::Update(Some(Discard), &[(7, K::Length)]),
        ),
        (
            "AGGREGATOR flagged well-known",
            c4(),
            update(&[], &base(&[0x40, 7, 8, 0, 0, 0, 1, 1, 2, 3, 4]), NLRI),
            Want::Update(Some(Discard), &[(7, K::Flags)]),
        ),
        (
            "COMMUNITIES of 5 octets",
            c4(),
            update(&[], &base(&[0xc0, 8, 5, 0, 0, 0, 1, 0]), NLRI),
            Want::Update(Some(Taw), &[(8, K::Length)]),
        ),
        (
            "COMMUNITIES empty",
            c4(),
            update(&[], &base(&[0xc0, 8, 0]), NLRI),
            Want::Update(Some(Taw), &[(8, K::Length)]),
        ),
        (
            "ORIGINATOR_ID of 3 octets",
            c4(),
            update(&[], &base(&[0x80, 9, 3, 1, 2, 3]), NLRI),
            Want::Update(Some(Taw), &[(9, K::Length)]),
        ),
        (
            "CLUSTER_LIST of 6 octets",
            c4(),
            update(&[], &base(&[0x80, 10, 6, 1, 2, 3, 4, 5, 6]), NLRI),
            Want::Update(Some(Taw), &[(10, K::Length)]),
        ),
        (
            "EXTENDED_COMMUNITIES of 7 octets",
            c4(),
            update(&[], &base(&[0xc0, 16, 7, 0, 2, 0, 1, 0, 0, 0]), NLRI),
            Want::Update(Some(Taw), &[(16, K::Length)]),
        ),
        (
            "LARGE_COMMUNITY of 11 octets",
            c4(),
            update(
                &[],
                &base(&[0xc0, 32, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(32, K::Length)]),
        ),
        (
            "duplicate MED: second discarded",
            c4(),
            update(
                &[],
                &base(&[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2]),
                NLRI,
            ),
            Want::Update(Some(Discard), &[(4, K::Duplicate)]),
        ),
        (
            "missing ORIGIN",
            c4(),
            update(&[], &attrs(&[AS_PATH, NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(1, K::Missing)]),
        ),
        (
            "missing AS_PATH",
            c4(),
            update(&[], &attrs(&[ORIGIN, NEXT_HOP]), NLRI),
            Want::Update(Some(Taw), &[(2, K::Missing)]),
        ),
        (
            "missing NEXT_HOP with IPv4 NLRI",
            c4(),
            update(&[], &attrs(&[ORIGIN, AS_PATH]), NLRI),
            Want::Update(Some(Taw), &[(3, K::Missing)]),
        ),
        (
            "no NEXT_HOP needed for MP_REACH only",
            c4(),
            update(&[], &attrs(&[MP_REACH_V6, ORIGIN, AS_PATH]), &[]),
            Want::Update(None, ok),
        ),
        (
            "no mandatory attributes for a withdrawal",
            c4(),
            update(NLRI, &[], &[]),
            Want::Update(None, ok),
        ),
        (
            "AS4_PATH on a 4-octet session",
            c4(),
            update(&[], &base(&[0xc0, 17, 6, 2, 1, 0, 0, 0xfd, 0xe9]), NLRI),
            Want::Update(Some(Discard), &[(17, K::Unexpected)]),
        ),
        (
            "AS4_PATH with confederation segment",
            ParseContext::new(),
            update(
                &[],
                &attrs(&[
                    ORIGIN,
                    &[0x40, 2, 4, 2, 1, 0x5b, 0xa0],
                    NEXT_HOP,
                    &[0xc0, 17, 6, 3, 1, 0, 0, 0xfd, 0xe9],
                ]),
                NLRI,
            ),
            Want::Update(Some(Discard), &[(17, K::Value)]),
        ),
        (
            "AS4_AGGREGATOR of 6 octets",
            ParseContext::new(),
            update(
                &[],
                &attrs(&[
                    ORIGIN,
                    &[0x40, 2, 4, 2, 1, 0x5b, 0xa0],
                    NEXT_HOP,
                    &[0xc0, 18, 6, 0, 0, 1, 2, 3, 4],
                ]),
                NLRI,
            ),
            Want::Update(Some(Discard), &[(18, K::Length)]),
        ),
        (
            "discard and treat-as-withdraw: the stronger wins",
            c4(),
            update(
                &[],
                &attrs(&[&[0x40, 1, 1, 9], AS_PATH, NEXT_HOP, &[0x40, 6, 1, 0]]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(1, K::Value), (6, K::Length)]),
        ),
        (
            "attribute overruns the field, IPv4 NLRI present",
            c4(),
            update(&[], &base(&[0xc0, 8, 8, 0, 0]), NLRI),
            Want::Update(Some(Taw), &[(0, K::Overrun)]),
        ),
        (
            "fewer than 3 octets left for an attribute",
            c4(),
            update(&[], &base(&[0xc0, 8]), NLRI),
            Want::Update(Some(Taw), &[(0, K::Overrun)]),
        ),
        (
            "unknown optional non-transitive attribute ignored",
            c4(),
            update(&[], &base(&[0x80, 99, 2, 1, 2]), NLRI),
            Want::Update(None, ok),
        ),
        (
            "LOCAL_PREF from an external peer",
            ext_peer(),
            update(&[], &base(&[0x40, 5, 4, 0, 0, 0, 100]), NLRI),
            Want::Update(Some(Discard), &[(5, K::Unexpected)]),
        ),
        (
            "AS_CONFED_SEQUENCE from an external peer",
            ext_peer(),
            update(
                &[],
                &attrs(&[ORIGIN, &[0x40, 2, 6, 3, 1, 0, 0, 0xfd, 0xe9], NEXT_HOP]),
                NLRI,
            ),
            Want::Update(Some(Taw), &[(2, K::Unexpected)]),
        ),
        (
            "AS_CONFED_SEQUENCE from a confederation peer",
            c4(),
            update(
                &[],
                &attrs(&[ORIGIN, &[0x40, 2, 6, 3, 1, 0, 0, 0xfd, 0xe9], NEXT_HOP]),
                NLRI,
            ),
            Want::Update(None, ok),
        ),
        // Session resets.
        (
            "attribute overrun with nothing to withdraw",
            c4(),
            update(&[], &attrs(&[ORIGIN, &[0x40, 2, 9]]), &[]),
            Want::Reset(3, 1, Some(vec![])),
        ),
        (
            "withdrawn length overrun",
            c4(),
            msg(2, &[0, 9, 24, 10, 1, 2, 0, 0]),
            Want::Reset(3, 1, None),
        ),
        (
            "total attribute length overrun",
            c4(),
            msg(2, &[0, 0, 0, 9, 0x40, 1, 1, 0]),
            Want::Reset(3, 1, None),
        ),
        (
            "NLRI prefix length 33",
            c4(),
            update(&[], &base(&[]), &[33, 10, 1, 2, 3, 4]),
            Want::Reset(3, 10, Some(vec![])),
        ),
        (
            "NLRI prefix truncated",
            c4(),
            update(&[], &base(&[]), &[24, 10, 1]),
            Want::Reset(3, 10, None),
        ),
        (
            "withdrawn prefix length 40",
            c4(),
            update(&[40, 1, 2, 3, 4, 5], &[], &[]),
            Want::Reset(3, 10, None),
        ),
        (
            "unrecognized well-known attribute",
            c4(),
            update(&[], &base(&[0x40, 99, 1, 7]), NLRI),
            Want::Reset(3, 2, Some(vec![0x40, 99, 1, 7])),
        ),
        (
            "MP_REACH with next-hop length 20",
            c4(),
            update(
                &[],
                &attrs(&[
                    &[
                        0x80, 14, 25, 0, 2, 1, 20, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 1, 0, 0, 0, 0, 0,
                    ],
                    ORIGIN,
                    AS_PATH,
                ]),
                &[],
            ),
            Want::Reset(
                3,
                9,
                Some(vec![
                    0x80, 14, 25, 0, 2, 1, 20, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    1, 0, 0, 0, 0, 0,
                ]),
            ),
        ),
        (
            "MP_REACH IPv4 with next-hop length 5",
            c4(),
            update(
                &[],
                &attrs(&[
                    &[0x80, 14, 13, 0, 1, 1, 5, 10, 0, 0, 1, 0, 0, 24, 10, 1, 2],
                    ORIGIN,
                    AS_PATH,
                ]),
                &[],
            ),
            Want::Reset(3, 9, None),
        ),
        (
            "MP_REACH prefix length 129",
            c4(),
            update(
                &[],
                &attrs(&[
                    &[
                        0x80, 14, 23, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 1, 0, 129, 0x20,
                    ],
                    ORIGIN,
                    AS_PATH,
                ]),
                &[],
            ),
            Want::Reset(3, 10, None),
        ),
        (
            "MP_REACH flagged transitive",
            c4(),
            update(
                &[],
                &attrs(&[&[0xc0, 14, 26], &MP_REACH_V6[3..], ORIGIN, AS_PATH]),
                &[],
            ),
            Want::Reset(3, 4, None),
        ),
        (
            "MP_REACH twice",
            c4(),
            update(
                &[],
                &attrs(&[MP_REACH_V6, MP_REACH_V6, ORIGIN, AS_PATH]),
                &[],
            ),
            Want::Reset(3, 1, None),
        ),
        (
            "MP_UNREACH of 2 octets",
            c4(),
            update(&[], &[0x80, 15, 2, 0, 2], &[]),
            Want::Reset(3, 9, None),
        ),
    ];
    let n = cases.len();
    for (name, ctx, bytes, want) in cases {
        check(name, ctx, bytes, want);
    }
    assert!(n >= 45);
}

#[test]
fn next_hop_error_is_not_also_reported_missing() {
    let b = update(
        &[],
        &attrs(&[ORIGIN, AS_PATH, &[0x40, 3, 5, 10, 0, 0, 1, 0]]),
        NLRI,
    );
    let Ok(Message::Update(u)) = decode_message(&b, &c4()) else {
        panic!()
    };
    assert_eq!(u.errors.len(), 1);
    assert_eq!(u.attributes.next_hop, None);
    // The NLRI are kept so that they can be withdrawn.
    assert_eq!(u.nlri.len(), 1);
}

#[test]
fn discarded_attribute_is_gone_and_the_rest_stays() {
    let b = update(&[], &base(&[0x40, 6, 1, 0, 0x80, 4, 4, 0, 0, 0, 7]), NLRI);
    let Ok(Message::Update(u)) = decode_message(&b, &c4()) else {
        panic!()
    };
    assert_eq!(u.action(), Some(Discard));
    assert!(!u.attributes.atomic_aggregate);
    assert_eq!(u.attributes.med, Some(7));
    assert_eq!(
        u.attributes.as_path.as_ref().unwrap().first_asn(),
        Some(Asn(65001))
    );
}

#[test]
fn unknown_transitive_attribute_kept_with_partial_bit() {
    let b = update(&[], &base(&[0xc0, 99, 2, 1, 2]), NLRI);
    let ctx = c4();
    let Ok(Message::Update(u)) = decode_message(&b, &ctx) else {
        panic!()
    };
    assert_eq!(u.attributes.unknown.len(), 1);
    let mut out = bytes::BytesMut::new();
    u.encode(&ctx, &mut out).unwrap();
    let pos = out.windows(5).position(|w| w == [0xe0, 99, 2, 1, 2]);
    assert!(pos.is_some(), "re-encoded with Partial: {out:x?}");
}

#[test]
fn header_and_other_message_errors() {
    let ctx = c4();
    let mut bad_marker = msg(4, &[]);
    bad_marker[3] = 0;
    let cases: Vec<(&str, ParseContext, Vec<u8>, Want)> = vec![
        (
            "marker not all ones",
            ctx,
            bad_marker,
            Want::Reset(1, 1, Some(vec![])),
        ),
        (
            "length 18",
            ctx,
            {
                let mut m = msg(4, &[]);
                m[17] = 18;
                m
            },
            Want::Reset(1, 2, Some(vec![0, 18])),
        ),
        (
            "UPDATE over 4096",
            ctx,
            update(&[], &[], &[0; 4090]),
            Want::Reset(1, 2, Some(4113u16.to_be_bytes().to_vec())),
        ),
        (
            "unknown type",
            ctx,
            msg(9, &[]),
            Want::Reset(1, 3, Some(vec![9])),
        ),
        (
            "KEEPALIVE of 20 octets",
            ctx,
            msg(4, &[0]),
            Want::Reset(1, 2, Some(vec![0, 20])),
        ),
        (
            "NOTIFICATION of 20 octets",
            ctx,
            msg(3, &[6]),
            Want::Reset(1, 2, Some(vec![0, 20])),
        ),
        (
            "UPDATE of 22 octets",
            ctx,
            msg(2, &[0, 0, 0]),
            Want::Reset(1, 2, Some(vec![0, 22])),
        ),
        (
            "OPEN version 3",
            ctx,
            msg(1, &[3, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 0]),
            Want::Reset(2, 1, Some(vec![0, 4])),
        ),
        (
            "OPEN hold time 2",
            ctx,
            msg(1, &[4, 0xfd, 0xe9, 0, 2, 1, 2, 3, 4, 0]),
            Want::Reset(2, 6, None),
        ),
        (
            "OPEN BGP identifier 0",
            ctx,
            msg(1, &[4, 0xfd, 0xe9, 0, 90, 0, 0, 0, 0, 0]),
            Want::Reset(2, 3, None),
        ),
        (
            "OPEN authentication parameter",
            ctx,
            msg(1, &[4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 3, 1, 1, 0]),
            Want::Reset(2, 4, None),
        ),
        (
            "OPEN parameter length overrun",
            ctx,
            msg(1, &[4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 4, 2, 6, 65, 4]),
            Want::Reset(2, 0, None),
        ),
        (
            "OPEN malformed 4-octet AS capability",
            ctx,
            msg(1, &[4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 5, 2, 3, 65, 1, 0]),
            Want::Reset(2, 0, None),
        ),
        (
            "BoRR of 24 octets",
            ctx,
            msg(5, &[0, 1, 1, 1, 0]),
            Want::Reset(7, 1, Some(msg(5, &[0, 1, 1, 1, 0]))),
        ),
    ];
    for (name, ctx, bytes, want) in cases {
        check(name, ctx, bytes, want);
    }
    // With extended messages, long UPDATEs are fine (RFC 8654).
    let ext = ParseContext {
        extended_message: true,
        ..c4()
    };
    assert!(decode_message(&update(&[], &[], &[24, 10, 1, 2].repeat(1500)), &ext).is_ok());
    // But OPEN stays limited to 4096 (RFC 8654 §4).
    let mut big_open = msg(1, &[4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 0]);
    big_open.resize(5000, 0);
    big_open[16..18].copy_from_slice(&5000u16.to_be_bytes());
    check(
        "OPEN over 4096 with extended messages",
        ext,
        big_open,
        Want::Reset(1, 2, None),
    );
}

#[test]
fn rfc9072_extended_optional_parameters() {
    // Non-Ext OP Len 255, Non-Ext OP Type 255, Extended Opt. Parm. Length 8,
    // one Capabilities parameter (type 2, 2-octet length 5) holding route refresh + ... .
    let body = [
        4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 255, 255, 0, 7, 2, 0, 4, 2, 0, 70, 0,
    ];
    let m = decode_message(&msg(1, &body), &c4()).unwrap();
    let Message::Open(o) = &m else { panic!() };
    assert!(o.extended_params);
    assert_eq!(o.capabilities().count(), 2);
    let out = m.to_bytes(&c4()).unwrap();
    assert_eq!(&out[..], &msg(1, &body)[..]);
}
