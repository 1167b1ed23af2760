//! Property tests: every message and attribute encodes and decodes back to itself.
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use calyx_proto::attr::{Aggregator, MpNextHop, MpNlri, MpReach, MpUnreach};
use calyx_proto::capability::{
    AddPathFamily, AddPathMode, Capability, GracefulRestart, GracefulRestartFamily, LlgrFamily,
};
use calyx_proto::nlri::{NlriIter, PathId};
use calyx_proto::pack::UpdatePacker;
use calyx_proto::route_refresh::{RouteRefreshMessage, RouteRefreshSubtype};
use calyx_proto::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn ctx_strategy() -> impl Strategy<Value = ParseContext> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(ext, ap4, ap6)| ParseContext {
        four_octet_as: true,
        extended_message: ext,
        add_path_ipv4: ap4,
        add_path_ipv6: ap6,
        external_peer: false,
    })
}

fn v4prefix() -> impl Strategy<Value = Ipv4Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Prefix::new(Ipv4Addr::from(a), l).unwrap())
}

fn v6prefix() -> impl Strategy<Value = Ipv6Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Ipv6Prefix::new(Ipv6Addr::from(a), l).unwrap())
}

fn nlri<P: std::fmt::Debug + Clone>(
    p: impl Strategy<Value = P>,
    add_path: bool,
    max: usize,
) -> impl Strategy<Value = Vec<Nlri<P>>> {
    vec((p, any::<u32>()), 0..max).prop_map(move |v| {
        v.into_iter()
            .map(|(prefix, id)| Nlri {
                path_id: add_path.then_some(PathId(id)),
                prefix,
            })
            .collect()
    })
}

fn asn() -> impl Strategy<Value = Asn> + Clone {
    prop_oneof![any::<u32>().prop_map(Asn), (1u32..65535).prop_map(Asn)]
}

fn as_path(asn: impl Strategy<Value = Asn> + Clone, confed: bool) -> impl Strategy<Value = AsPath> {
    let kinds = if confed {
        vec![
            AsSegmentType::Sequence,
            AsSegmentType::Set,
            AsSegmentType::ConfedSequence,
            AsSegmentType::ConfedSet,
        ]
    } else {
        vec![AsSegmentType::Sequence, AsSegmentType::Set]
    };
    vec((proptest::sample::select(kinds), vec(asn, 1..12)), 0..5).prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn attributes() -> impl Strategy<Value = PathAttributes> {
    let a = (
        option::of(prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ]),
        option::of(as_path(asn(), true)),
        option::of(ipv4()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        any::<bool>(),
        option::of((asn(), ipv4()).prop_map(|(asn, address)| Aggregator { asn, address })),
        vec(
            prop_oneof![
                any::<u32>().prop_map(Community),
                Just(Community::NO_EXPORT),
                Just(Community::NO_ADVERTISE),
                Just(Community::NO_EXPORT_SUBCONFED)
            ],
            0..6,
        ),
    );
    let b = (
        option::of(ipv4()),
        vec(ipv4(), 0..4),
        vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 0..4),
        vec(
            any::<(u32, u32, u32)>().prop_map(|(g, l1, l2)| LargeCommunity {
                global_admin: g,
                local_data1: l1,
                local_data2: l2,
            }),
            0..4,
        ),
        proptest::collection::btree_map(
            33u8..=250,
            (any::<bool>(), vec(any::<u8>(), 0..300)),
            0..3,
        ),
    );
    (a, b).prop_map(
        |(
            (origin, as_path, next_hop, med, local_pref, atomic_aggregate, aggregator, communities),
            (originator_id, cluster_list, extended_communities, large_communities, unknown),
        )| PathAttributes {
            origin,
            as_path,
            next_hop,
            med,
            local_pref,
            atomic_aggregate,
            aggregator,
            communities,
            originator_id,
            cluster_list,
            extended_communities,
            as4_path: None,
            as4_aggregator: None,
            large_communities,
            unknown: unknown
                .into_iter()
                .map(|(type_code, (partial, value))| RawAttribute {
                    // Unknown attributes are kept only if optional transitive; they come back with
                    // the Partial bit set.
                    flags: 0xc0 | 0x20 | if partial { 0x20 } else { 0 },
                    type_code,
                    value,
                })
                .collect(),
        },
    )
}

fn mp_reach(ctx: ParseContext) -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (
            prop_oneof![
                ipv4().prop_map(MpNextHop::V4),
                (any::<u128>(), option::of(any::<u128>())).prop_map(|(g, l)| MpNextHop::V6 {
                    global: g.into(),
                    link_local: l.map(Into::into)
                })
            ],
            nlri(v4prefix(), ctx.add_path_ipv4, 30)
        )
            .prop_map(|(next_hop, n)| MpReach {
                next_hop,
                nlri: MpNlri::Ipv4(n)
            }),
        (
            (any::<u128>(), option::of(any::<u128>())),
            nlri(v6prefix(), ctx.add_path_ipv6, 30)
        )
            .prop_map(|((g, l), n)| MpReach {
                next_hop: MpNextHop::V6 {
                    global: g.into(),
                    link_local: l.map(Into::into)
                },
                nlri: MpNlri::Ipv6(n)
            }),
    ]
}

fn mp_unreach(ctx: ParseContext) -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        nlri(v4prefix(), ctx.add_path_ipv4, 30).prop_map(|n| MpUnreach {
            nlri: MpNlri::Ipv4(n)
        }),
        nlri(v6prefix(), ctx.add_path_ipv6, 30).prop_map(|n| MpUnreach {
            nlri: MpNlri::Ipv6(n)
        }),
    ]
}

fn update() -> impl Strategy<Value = (ParseContext, UpdateMessage)> {
    ctx_strategy().prop_flat_map(|ctx| {
        (
            Just(ctx),
            nlri(v4prefix(), ctx.add_path_ipv4, 40),
            attributes(),
            option::of(mp_reach(ctx)),
            option::of(mp_unreach(ctx)),
            nlri(v4prefix(), ctx.add_path_ipv4, 40),
        )
            .prop_map(
                |(ctx, withdrawn, mut attributes, mp_reach, mp_unreach, nlri)| {
                    // Announcements need the mandatory attributes (else RFC 7606 §3 d applies).
                    if !nlri.is_empty() || mp_reach.is_some() {
                        attributes.origin.get_or_insert(Origin::Igp);
                        attributes.as_path.get_or_insert_with(AsPath::default);
                    }
                    if !nlri.is_empty() {
                        attributes
                            .next_hop
                            .get_or_insert(Ipv4Addr::new(192, 0, 2, 1));
                    }
                    (
                        ctx,
                        UpdateMessage {
                            withdrawn,
                            attributes,
                            mp_reach,
                            mp_unreach,
                            nlri,
                            ..Default::default()
                        },
                    )
                },
            )
    })
}

fn family() -> impl Strategy<Value = AfiSafi> {
    prop_oneof![
        Just(AfiSafi::IPV4_UNICAST),
        Just(AfiSafi::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| AfiSafi::new(a, s))
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        family().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(|a| Capability::FourOctetAs(Asn(a))),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            vec((family(), any::<bool>()), 0..4)
        )
            .prop_map(|(r, n, t, f)| {
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: r,
                    notification: n,
                    restart_time: t,
                    families: f
                        .into_iter()
                        .map(|(family, forwarding_state)| GracefulRestartFamily {
                            family,
                            forwarding_state,
                        })
                        .collect(),
                })
            }),
        vec(
            (
                family(),
                prop_oneof![
                    Just(AddPathMode::Receive),
                    Just(AddPathMode::Send),
                    Just(AddPathMode::Both)
                ]
            ),
            0..4
        )
        .prop_map(|v| Capability::AddPath(
            v.into_iter()
                .map(|(family, mode)| AddPathFamily { family, mode })
                .collect()
        )),
        vec((family(), any::<bool>(), 0u32..(1 << 24)), 0..4).prop_map(|v| {
            Capability::LongLivedGracefulRestart(
                v.into_iter()
                    .map(|(family, forwarding_state, stale_time)| LlgrFamily {
                        family,
                        forwarding_state,
                        stale_time,
                    })
                    .collect(),
            )
        }),
        (72u8..=255, vec(any::<u8>(), 0..40))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = OpenMessage> {
    (
        any::<u16>(),
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        vec(vec(capability(), 0..6), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(my_as, hold_time, id, params, extended_params)| OpenMessage {
                version: 4,
                my_as,
                hold_time,
                bgp_id: Ipv4Addr::from(id),
                params,
                extended_params,
            },
        )
}

/// Join adjacent AS_SEQUENCEs: the same path, written differently (RFC 4271 §5.1.2).
fn normalize(p: AsPath) -> AsPath {
    let mut out: Vec<AsSegment> = Vec::new();
    for s in p.segments {
        match out.last_mut() {
            Some(l) if l.kind == AsSegmentType::Sequence && s.kind == AsSegmentType::Sequence => {
                l.asns.extend(s.asns)
            }
            _ => out.push(s),
        }
    }
    AsPath { segments: out }
}

fn roundtrip(msg: &Message, ctx: &ParseContext) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    match msg.encode(ctx, &mut out) {
        Ok(()) => {}
        Err(EncodeError::MessageTooLong { .. }) => return Err(TestCaseError::reject("too long")),
        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
    }
    let back = decode_message(&out, ctx).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&back, msg);
    // And the decoded message re-encodes to the same octets.
    prop_assert_eq!(&back.to_bytes(ctx).unwrap()[..], &out[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn update_roundtrip((ctx, u) in update()) {
        roundtrip(&Message::Update(u), &ctx)?;
    }

    #[test]
    fn open_roundtrip(o in open()) {
        roundtrip(&Message::Open(o), &ParseContext::modern())?;
    }

    #[test]
    fn notification_roundtrip(code in any::<u8>(), subcode in any::<u8>(), data in vec(any::<u8>(), 0..200)) {
        roundtrip(&Message::Notification(NotificationMessage { code, subcode, data }), &ParseContext::modern())?;
    }

    #[test]
    fn shutdown_message_roundtrip(text in "\\PC{0,300}") {
        let n = NotificationMessage::shutdown(notification::CeaseSubcode::AdministrativeShutdown, &text);
        let got = n.shutdown_message().unwrap();
        prop_assert!(text.starts_with(got) && got.len() <= 255);
        roundtrip(&Message::Notification(n), &ParseContext::modern())?;
    }

    #[test]
    fn route_refresh_roundtrip(f in family(), sub in any::<u8>(), trailing in vec(any::<u8>(), 0..20)) {
        let subtype = RouteRefreshSubtype::from(sub);
        let trailing = if matches!(subtype, RouteRefreshSubtype::BeginningOfRefresh | RouteRefreshSubtype::EndOfRefresh) { Vec::new() } else { trailing };
        roundtrip(&Message::RouteRefresh(RouteRefreshMessage { family: f, subtype, trailing }), &ParseContext::modern())?;
    }

    /// On a 2-octet session, 4-octet AS numbers travel as AS_TRANS plus AS4_PATH /
    /// AS4_AGGREGATOR and are reconstructed (RFC 6793 §4.2).
    #[test]
    fn two_octet_session_reconstructs_4_octet_path(path in as_path(asn(), false), aggr in option::of(((65536u32..).prop_map(Asn), ipv4()))) {
        let ctx = ParseContext::new();
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(path),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            aggregator: aggr.map(|(asn, address)| Aggregator { asn, address }),
            ..Default::default()
        };
        let u = UpdateMessage { attributes: attrs.clone(), nlri: vec![Nlri::new(Ipv4Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap())], ..Default::default() };
        let bytes = Message::Update(u).to_bytes(&ctx).unwrap();
        let Message::Update(back) = decode_message(&bytes, &ctx).unwrap() else { panic!() };
        prop_assert!(back.errors.is_empty());
        let mut merged = back.attributes.clone();
        merged.merge_as4();
        merged.as_path = merged.as_path.map(normalize);
        let attrs = PathAttributes { as_path: attrs.as_path.map(normalize), ..attrs };
        prop_assert_eq!(merged, attrs);
    }

    /// The packer splits any number of prefixes into valid messages that carry them all.
    #[test]
    fn packer_splits_and_preserves(ctx in ctx_strategy(), attrs in attributes(), n4 in nlri(v4prefix(), false, 1500), n6 in nlri(v6prefix(), false, 600)) {
        let mut attrs = attrs;
        attrs.origin = Some(Origin::Igp);
        attrs.as_path.get_or_insert_with(AsPath::default);
        attrs.next_hop = Some(Ipv4Addr::new(10, 0, 0, 1));
        attrs.unknown.clear();
        let ctx = ParseContext { add_path_ipv4: false, add_path_ipv6: false, ..ctx };
        let mut p = UpdatePacker::new(ctx);
        let mut out = BytesMut::new();
        let r = p.announce_ipv4(&attrs, &n4, &mut out);
        if r.is_err() { return Err(TestCaseError::reject("attributes too large")); }
        p.withdraw_ipv4(&n4, &mut out).unwrap();
        let nh = MpNextHop::V6 { global: Ipv6Addr::LOCALHOST, link_local: None };
        p.announce_mp(&attrs, &nh, &n6, &mut out).unwrap();
        p.withdraw_mp(&n6, &mut out).unwrap();
        let (mut a4, mut w4, mut a6, mut w6) = (vec![], vec![], vec![], vec![]);
        let mut off = 0;
        while let Some((m, len)) = message::decode_stream(&out[off..], &ctx).unwrap() {
            prop_assert!(len <= ctx.max_message_len());
            let Message::Update(u) = m else { panic!() };
            prop_assert!(u.errors.is_empty(), "{:?}", u.errors);
            a4.extend(u.nlri);
            w4.extend(u.withdrawn);
            if let Some(MpReach { nlri: MpNlri::Ipv6(v), .. }) = u.mp_reach { a6.extend(v) }
            if let Some(MpUnreach { nlri: MpNlri::Ipv6(v) }) = u.mp_unreach { w6.extend(v) }
            off += len;
        }
        prop_assert_eq!(off, out.len());
        prop_assert_eq!(&a4, &n4);
        prop_assert_eq!(&w4, &n4);
        prop_assert_eq!(&a6, &n6);
        prop_assert_eq!(&w6, &n6);
    }

    /// The lazy NLRI iterator agrees with the buffer decoder.
    #[test]
    fn nlri_iter_matches(n in nlri(v4prefix(), true, 50)) {
        let mut b = BytesMut::new();
        nlri::encode_all(&n, true, &mut b);
        let lazy: Vec<_> = NlriIter::<Ipv4Prefix>::new(&b, true).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(lazy, n);
    }

    /// Arbitrary bytes never panic the decoder, with any context.
    #[test]
    fn decoder_never_panics(ctx in ctx_strategy(), kind in 1u8..=5, body in vec(any::<u8>(), 0..600)) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(kind);
        m.extend_from_slice(&body);
        let _ = decode_message(&m, &ctx);
        let ctx2 = ParseContext { four_octet_as: false, ..ctx };
        let _ = decode_message(&m, &ctx2);
    }
}

/// RFC 6793 §4.2.3: an AGGREGATOR with a 2-octet AS other than AS_TRANS means an old speaker
/// aggregated, so AS4_PATH is ignored.
#[test]
fn as4_path_ignored_after_old_aggregator() {
    let mut a = PathAttributes {
        as_path: Some(AsPath::sequence([Asn(65001), Asn::TRANS])),
        as4_path: Some(AsPath::sequence([Asn(4_200_000_000)])),
        aggregator: Some(Aggregator {
            asn: Asn(65001),
            address: Ipv4Addr::new(1, 2, 3, 4),
        }),
        ..Default::default()
    };
    let before = a.as_path.clone();
    a.merge_as4();
    assert_eq!(a.as_path, before);
    assert_eq!(a.as4_path, None);
    // Without the AGGREGATOR the paths merge.
    let mut b = PathAttributes {
        as_path: Some(AsPath::sequence([Asn(65001), Asn::TRANS])),
        as4_path: Some(AsPath::sequence([Asn(4_200_000_000)])),
        ..Default::default()
    };
    b.merge_as4();
    assert_eq!(
        b.as_path,
        Some(AsPath::sequence([Asn(65001), Asn(4_200_000_000)]))
    );
    // An AS4_PATH longer than the AS_PATH is ignored.
    let mut c = PathAttributes {
        as_path: Some(AsPath::sequence([Asn::TRANS])),
        as4_path: Some(AsPath::sequence([Asn(70000), Asn(70001)])),
        ..Default::default()
    };
    c.merge_as4();
    assert_eq!(c.as_path, Some(AsPath::sequence([Asn::TRANS])));
}

#[test]
fn keepalive_and_end_of_rib() {
    let ctx = ParseContext::modern();
    let k = Message::Keepalive.to_bytes(&ctx).unwrap();
    assert_eq!(
        &k[..],
        &[0xff; 16]
            .iter()
            .copied()
            .chain([0, 19, 4])
            .collect::<Vec<_>>()[..]
    );
    for f in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
        let b = Message::Update(UpdateMessage::end_of_rib(f))
            .to_bytes(&ctx)
            .unwrap();
        let Message::Update(u) = decode_message(&b, &ctx).unwrap() else {
            panic!()
        };
        assert_eq!(u.as_end_of_rib(), Some(f));
    }
    assert_eq!(
        Message::Update(UpdateMessage::end_of_rib(AfiSafi::IPV4_UNICAST))
            .to_bytes(&ctx)
            .unwrap()
            .len(),
        23
    );
}
