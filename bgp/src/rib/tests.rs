use super::*;
use crate::policy::{MatchOperator, Policy, PolicyRule, PrefixMatch, RuleAction};
use calyx_proto::{Nlri, Origin, PathAttributes};

const AS: u32 = 65000;

fn global() -> RibGlobal {
    RibGlobal {
        local_as: Asn(AS),
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        cluster_id: Ipv4Addr::new(10, 0, 0, 1),
        multipath: false,
        next_hop_v4: None,
        next_hop_v6: None,
    }
}

fn p4(s: &str) -> Prefix {
    Prefix::from_net(s.parse().unwrap())
}

fn v4(s: &str) -> Ipv4Prefix {
    match p4(s) {
        Prefix::V4(p) => p,
        Prefix::V6(_) => unreachable!(),
    }
}

/// The session details of a peer at `addr` that came up with these families.
fn up_info(addr: [u8; 4], tx: mpsc::Sender<OutMsg>, families: &[AfiSafi]) -> UpInfo {
    UpInfo {
        router_id: Ipv4Addr::from(addr),
        local_addr: IpAddr::from([10, 0, 0, 1]),
        families: families.to_vec(),
        tx,
        context: ParseContext::new(),
        peer_restarting: false,
        send_eor: true,
        enhanced_refresh: false,
        wait_eor: false,
    }
}

struct Peer {
    rx: mpsc::Receiver<OutMsg>,
}

fn add(
    rib: &mut Rib,
    id: PeerId,
    addr: [u8; 4],
    asn: u32,
    f: impl FnOnce(&mut PeerConfig),
) -> Peer {
    let mut cfg = PeerConfig::new(IpAddr::from(addr), asn);
    f(&mut cfg);
    rib.add_peer(id, cfg, Asn(AS));
    let (tx, rx) = mpsc::channel(1024);
    rib.peer_up(
        id,
        up_info(addr, tx, &[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]),
    );
    Peer { rx }
}

fn attrs(path: &[u32], nh: [u8; 4]) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(path.iter().map(|a| Asn(*a)))),
        next_hop: Some(Ipv4Addr::from(nh)),
        ..Default::default()
    }
}

fn announce(rib: &mut Rib, id: PeerId, prefixes: &[&str], a: PathAttributes) {
    let u = UpdateMessage {
        attributes: a,
        nlri: prefixes.iter().map(|p| Nlri::new(v4(p))).collect(),
        ..Default::default()
    };
    rib.apply_update(id, u);
}

fn withdraw(rib: &mut Rib, id: PeerId, prefixes: &[&str]) {
    let u = UpdateMessage {
        withdrawn: prefixes.iter().map(|p| Nlri::new(v4(p))).collect(),
        ..Default::default()
    };
    rib.apply_update(id, u);
}

/// Everything the peer's session would send: (announced prefix -> attrs), withdrawn, EoRs.
#[derive(Default, Debug)]
struct Sent {
    ann: Vec<(Ipv4Prefix, Attrs)>,
    wd: Vec<Ipv4Prefix>,
    eor: usize,
    groups: usize,
    /// BoRR, EoRR and where the first routes came, in order.
    markers: Vec<&'static str>,
}

fn drain(rib: &mut Rib, p: &mut Peer) -> Sent {
    rib.flush();
    let mut s = Sent::default();
    while let Ok(m) = p.rx.try_recv() {
        match m {
            OutMsg::Routes(b) => {
                s.groups += b.v4.len();
                for (a, ps) in b.v4 {
                    for x in ps {
                        s.ann.push((x, a.clone()));
                    }
                }
                s.wd.extend(b.withdraw_v4);
            }
            OutMsg::EndOfRib(_) => s.eor += 1,
            OutMsg::BeginRefresh(_) => s.markers.push("BoRR"),
            OutMsg::EndRefresh(_) => s.markers.push("EoRR"),
        }
        if !s.ann.is_empty() && !s.markers.contains(&"routes") {
            s.markers.push("routes");
        }
    }
    s
}

fn best(rib: &Rib, p: &str) -> Option<PeerId> {
    rib.best_routes()
        .into_iter()
        .find(|(x, _, _)| *x == p4(p))
        .map(|(_, _, id)| id)
}

#[test]
fn initial_dump_then_end_of_rib() {
    let mut rib = Rib::new(global());
    rib.originate(p4("10.1.0.0/26"), PathAttributes::default());
    let mut a = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    let s = drain(&mut rib, &mut a);
    assert_eq!(s.ann.len(), 1);
    assert_eq!(s.eor, 2);
    let (_, at) = &s.ann[0];
    assert_eq!(at.next_hop, IpAddr::from([10, 0, 0, 1]));
    assert_eq!(at.attrs.local_pref, Some(100));
    assert_eq!(
        rib.peers
            .get(&1)
            .unwrap()
            .counters
            .advertised
            .load(AtOrd::Relaxed),
        1
    );
}

#[test]
fn enhanced_refresh_frames_the_readvertisement() {
    let mut rib = Rib::new(global());
    rib.originate(p4("10.1.0.0/26"), PathAttributes::default());
    rib.originate(p4("10.1.0.64/26"), PathAttributes::default());
    let mut cfg = PeerConfig::new(IpAddr::from([10, 0, 0, 2]), AS);
    cfg.ipv6 = false;
    rib.add_peer(1, cfg, Asn(AS));
    let (tx, rx) = mpsc::channel(1024);
    rib.peer_up(
        1,
        UpInfo {
            enhanced_refresh: true,
            ..up_info([10, 0, 0, 2], tx, &[AfiSafi::IPV4_UNICAST])
        },
    );
    let mut a = Peer { rx };
    assert_eq!(drain(&mut rib, &mut a).ann.len(), 2);
    rib.refresh(1, AfiSafi::IPV4_UNICAST);
    let s = drain(&mut rib, &mut a);
    assert_eq!(s.ann.len(), 2, "everything again");
    assert_eq!(s.markers, vec!["BoRR", "routes", "EoRR"]);
    assert_eq!(s.eor, 0, "End-of-RIB only once per session");
}

#[test]
fn peer_refresh_sweeps_what_it_did_not_readvertise() {
    let mut rib = Rib::new(global());
    let mut rr = add(&mut rib, 2, [10, 0, 0, 3], AS, |c| {
        c.route_reflector_client = true
    });
    add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    drain(&mut rib, &mut rr);
    announce(
        &mut rib,
        1,
        &["10.2.0.0/26", "10.2.0.64/26"],
        attrs(&[], [10, 0, 0, 2]),
    );
    assert_eq!(drain(&mut rib, &mut rr).ann.len(), 2);
    // EoRR without BoRR is ignored.
    rib.end_refresh(1, AfiSafi::IPV4_UNICAST);
    assert_eq!(best(&rib, "10.2.0.64/26"), Some(1));
    rib.begin_refresh(1, AfiSafi::IPV4_UNICAST);
    announce(&mut rib, 1, &["10.2.0.0/26"], attrs(&[], [10, 0, 0, 2]));
    assert!(
        drain(&mut rib, &mut rr).ann.is_empty(),
        "re-advertising the same route changes nothing downstream"
    );
    assert_eq!(best(&rib, "10.2.0.64/26"), Some(1), "stale, still used");
    rib.end_refresh(1, AfiSafi::IPV4_UNICAST);
    assert_eq!(best(&rib, "10.2.0.64/26"), None);
    assert_eq!(best(&rib, "10.2.0.0/26"), Some(1));
    assert_eq!(drain(&mut rib, &mut rr).wd, vec![v4("10.2.0.64/26")]);
    let c = &rib.peers.get(&1).unwrap().counters;
    assert_eq!(c.accepted.load(AtOrd::Relaxed), 1);
}

#[test]
fn export_policy_change_withdraws_what_is_no_longer_exported() {
    let mut rib = Rib::new(global());
    let _inj = add(&mut rib, 1, [10, 99, 1, 2], 65001, |_| {});
    let mut mon = add(&mut rib, 2, [10, 99, 2, 2], 65002, |c| {
        c.export = Some(Policy::accept_all())
    });
    drain(&mut rib, &mut mon);
    announce(
        &mut rib,
        1,
        &["20.0.0.0/24", "20.0.1.0/24"],
        attrs(&[65001], [10, 99, 1, 2]),
    );
    assert_eq!(drain(&mut rib, &mut mon).ann.len(), 2);
    // Back to Calico's default export: learned eBGP routes are not passed on.
    let cfg = rib.peers.get(&2).unwrap().cfg.clone();
    rib.update_peer_config(
        2,
        PeerConfig {
            export: None,
            ..cfg
        },
    );
    rib.refresh(2, AfiSafi::IPV4_UNICAST);
    let s = drain(&mut rib, &mut mon);
    assert!(s.ann.is_empty());
    assert_eq!(s.wd.len(), 2);
    assert_eq!(
        rib.peers
            .get(&2)
            .unwrap()
            .counters
            .advertised
            .load(AtOrd::Relaxed),
        0
    );
}

#[test]
fn decision_process_tie_breakers_in_order() {
    let mut rib = Rib::new(global());
    let _a = add(&mut rib, 1, [10, 0, 0, 9], AS, |_| {}); // iBGP, high router id
    let _b = add(&mut rib, 2, [10, 0, 0, 3], AS, |_| {}); // iBGP, low router id
    let _c = add(&mut rib, 3, [10, 0, 1, 2], 65001, |_| {}); // eBGP

    // LOCAL_PREF beats a shorter path.
    let mut x = attrs(&[65010, 65011], [10, 0, 0, 9]);
    x.local_pref = Some(200);
    announce(&mut rib, 1, &["192.0.2.0/24"], x);
    announce(
        &mut rib,
        3,
        &["192.0.2.0/24"],
        attrs(&[65001], [10, 0, 1, 2]),
    );
    assert_eq!(best(&rib, "192.0.2.0/24"), Some(1));

    // Shorter AS_PATH.
    announce(
        &mut rib,
        1,
        &["192.0.3.0/24"],
        attrs(&[65010, 65011], [10, 0, 0, 9]),
    );
    announce(
        &mut rib,
        3,
        &["192.0.3.0/24"],
        attrs(&[65001], [10, 0, 1, 2]),
    );
    assert_eq!(best(&rib, "192.0.3.0/24"), Some(3));

    // Lower ORIGIN.
    let mut y = attrs(&[65010], [10, 0, 0, 9]);
    y.origin = Some(Origin::Incomplete);
    announce(&mut rib, 3, &["192.0.4.0/24"], y);
    announce(
        &mut rib,
        1,
        &["192.0.4.0/24"],
        attrs(&[65010], [10, 0, 0, 9]),
    );
    assert_eq!(best(&rib, "192.0.4.0/24"), Some(1));

    // Lower MED from the same neighbour AS wins over eBGP-over-iBGP.
    let mut m1 = attrs(&[65001], [10, 0, 0, 9]);
    m1.med = Some(5);
    let mut m2 = attrs(&[65001], [10, 0, 1, 2]);
    m2.med = Some(50);
    announce(&mut rib, 1, &["192.0.5.0/24"], m1);
    announce(&mut rib, 3, &["192.0.5.0/24"], m2);
    assert_eq!(best(&rib, "192.0.5.0/24"), Some(1));

    // MED not compared across neighbour ASes: eBGP over iBGP decides.
    let mut m3 = attrs(&[65020], [10, 0, 0, 9]);
    m3.med = Some(0);
    let mut m4 = attrs(&[65001], [10, 0, 1, 2]);
    m4.med = Some(99);
    announce(&mut rib, 1, &["192.0.6.0/24"], m3);
    announce(&mut rib, 3, &["192.0.6.0/24"], m4);
    assert_eq!(best(&rib, "192.0.6.0/24"), Some(3));

    // Lowest router ID among iBGP paths; ORIGINATOR_ID replaces it when reflected.
    announce(&mut rib, 1, &["192.0.7.0/24"], attrs(&[], [10, 0, 0, 9]));
    announce(&mut rib, 2, &["192.0.7.0/24"], attrs(&[], [10, 0, 0, 3]));
    assert_eq!(best(&rib, "192.0.7.0/24"), Some(2));
    let mut r = attrs(&[], [10, 0, 0, 9]);
    r.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
    announce(&mut rib, 1, &["192.0.7.0/24"], r);
    assert_eq!(best(&rib, "192.0.7.0/24"), Some(1));

    // Shorter CLUSTER_LIST, then lower peer address.
    let mut c1 = attrs(&[], [10, 0, 0, 9]);
    c1.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
    c1.cluster_list = vec![Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(8, 8, 8, 8)];
    let mut c2 = c1.clone();
    c2.cluster_list.pop();
    announce(&mut rib, 1, &["192.0.8.0/24"], c1.clone());
    announce(&mut rib, 2, &["192.0.8.0/24"], c2);
    assert_eq!(best(&rib, "192.0.8.0/24"), Some(2));
    announce(&mut rib, 2, &["192.0.8.0/24"], c1.clone());
    announce(&mut rib, 1, &["192.0.8.0/24"], c1);
    assert_eq!(best(&rib, "192.0.8.0/24"), Some(2)); // 10.0.0.3 < 10.0.0.9

    // Withdraw the best: the other takes over; withdraw both: gone.
    withdraw(&mut rib, 2, &["192.0.8.0/24"]);
    assert_eq!(best(&rib, "192.0.8.0/24"), Some(1));
    withdraw(&mut rib, 1, &["192.0.8.0/24"]);
    assert_eq!(best(&rib, "192.0.8.0/24"), None);
}

#[test]
fn ibgp_split_horizon_and_calico_default_export() {
    let mut rib = Rib::new(global());
    let mut a = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    let mut b = add(&mut rib, 2, [10, 0, 0, 3], AS, |_| {});
    let mut e = add(&mut rib, 3, [10, 0, 1, 2], 65001, |_| {});
    drain(&mut rib, &mut a);
    drain(&mut rib, &mut b);
    drain(&mut rib, &mut e);
    announce(&mut rib, 1, &["10.2.0.0/26"], attrs(&[], [10, 0, 0, 2]));
    announce(&mut rib, 3, &["0.0.0.0/0"], attrs(&[65001], [10, 0, 1, 2]));
    // Nothing learned leaks by default (not iBGP to iBGP, not eBGP-learned anywhere).
    assert!(drain(&mut rib, &mut a).ann.is_empty());
    assert!(drain(&mut rib, &mut b).ann.is_empty());
    assert!(drain(&mut rib, &mut e).ann.is_empty());
    // Our own block goes everywhere; next hop self and AS prepended towards eBGP.
    rib.originate(p4("10.1.0.0/26"), PathAttributes::default());
    let se = drain(&mut rib, &mut e);
    assert_eq!(se.ann.len(), 1);
    let at = &se.ann[0].1;
    assert_eq!(at.next_hop, IpAddr::from([10, 0, 0, 1]));
    assert_eq!(
        at.attrs.as_path.as_ref().unwrap().first_asn(),
        Some(Asn(AS))
    );
    assert_eq!(at.attrs.local_pref, None);
    assert_eq!(drain(&mut rib, &mut a).ann.len(), 1);
    // Withdrawal propagates.
    rib.withdraw_local(p4("10.1.0.0/26"));
    assert_eq!(drain(&mut rib, &mut e).wd, vec![v4("10.1.0.0/26")]);
    assert_eq!(drain(&mut rib, &mut b).wd, vec![v4("10.1.0.0/26")]);
}

#[test]
fn export_policy_accept_all_passes_learned_routes_with_next_hop_self() {
    let mut rib = Rib::new(global());
    let _inj = add(&mut rib, 1, [10, 99, 1, 2], 65001, |_| {});
    let mut mon = add(&mut rib, 2, [10, 99, 2, 2], 65002, |c| {
        c.export = Some(Policy::accept_all())
    });
    drain(&mut rib, &mut mon);
    let mut a = attrs(&[65001, 65100], [10, 99, 1, 2]);
    a.med = Some(7);
    announce(&mut rib, 1, &["20.0.0.0/24", "20.0.1.0/24"], a.clone());
    announce(
        &mut rib,
        1,
        &["20.0.2.0/24"],
        attrs(&[65001], [10, 99, 1, 2]),
    );
    let s = drain(&mut rib, &mut mon);
    assert_eq!(s.ann.len(), 3);
    assert_eq!(s.groups, 2, "routes sharing attributes are grouped");
    let at = &s
        .ann
        .iter()
        .find(|(p, _)| *p == v4("20.0.0.0/24"))
        .unwrap()
        .1;
    assert_eq!(at.attrs.med, None, "MED from another AS is not passed on");
    assert_eq!(at.attrs.as_path.as_ref().unwrap().path_len(), 3);
    // AS loop: a path with our AS is not accepted.
    announce(
        &mut rib,
        1,
        &["20.0.3.0/24"],
        attrs(&[65001, AS], [10, 99, 1, 2]),
    );
    assert_eq!(best(&rib, "20.0.3.0/24"), None);
}

#[test]
fn allowed_local_as() {
    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 99, 1, 2], 65001, |c| {
        c.allowed_local_as = 1
    });
    announce(
        &mut rib,
        1,
        &["20.0.3.0/24"],
        attrs(&[65001, AS], [10, 99, 1, 2]),
    );
    assert_eq!(best(&rib, "20.0.3.0/24"), Some(1));
    announce(
        &mut rib,
        1,
        &["20.0.4.0/24"],
        attrs(&[65001, AS, AS], [10, 99, 1, 2]),
    );
    assert_eq!(best(&rib, "20.0.4.0/24"), None);
}

#[test]
fn route_reflection_sets_originator_and_cluster_list() {
    let mut rib = Rib::new(global());
    let mut c1 = add(&mut rib, 1, [10, 0, 0, 2], AS, |c| {
        c.route_reflector_client = true
    });
    let mut c2 = add(&mut rib, 2, [10, 0, 0, 3], AS, |c| {
        c.route_reflector_client = true
    });
    let mut nc = add(&mut rib, 3, [10, 0, 0, 4], AS, |_| {});
    let mut nc2 = add(&mut rib, 4, [10, 0, 0, 5], AS, |_| {});
    for p in [&mut c1, &mut c2, &mut nc, &mut nc2] {
        drain(&mut rib, p);
    }
    announce(&mut rib, 1, &["10.2.0.0/26"], attrs(&[], [10, 0, 0, 2]));
    // Client route goes to the other client and to non-clients, not back.
    assert!(drain(&mut rib, &mut c1).ann.is_empty());
    let s = drain(&mut rib, &mut c2);
    assert_eq!(s.ann.len(), 1);
    let at = &s.ann[0].1;
    assert_eq!(at.attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(at.attrs.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(
        at.next_hop,
        IpAddr::from([10, 0, 0, 2]),
        "next hop unchanged when reflecting"
    );
    assert_eq!(drain(&mut rib, &mut nc).ann.len(), 1);
    assert_eq!(drain(&mut rib, &mut nc2).ann.len(), 1);
    // Non-client route goes to clients only.
    announce(&mut rib, 3, &["10.3.0.0/26"], attrs(&[], [10, 0, 0, 4]));
    assert_eq!(drain(&mut rib, &mut c1).ann.len(), 1);
    assert!(drain(&mut rib, &mut nc2).ann.is_empty());
    // Loops: our cluster ID in CLUSTER_LIST, or our router ID as ORIGINATOR_ID, are dropped.
    let mut l = attrs(&[], [10, 0, 0, 4]);
    l.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 1)];
    announce(&mut rib, 3, &["10.4.0.0/26"], l);
    assert_eq!(best(&rib, "10.4.0.0/26"), None);
    let mut o = attrs(&[], [10, 0, 0, 4]);
    o.originator_id = Some(Ipv4Addr::new(10, 0, 0, 1));
    announce(&mut rib, 3, &["10.5.0.0/26"], o);
    assert_eq!(best(&rib, "10.5.0.0/26"), None);
}

#[test]
fn graceful_restart_helper_keeps_stale_until_end_of_rib() {
    let mut rib = Rib::new(global());
    let mut x = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    let mut rr = add(&mut rib, 2, [10, 0, 0, 3], AS, |c| {
        c.route_reflector_client = true
    });
    drain(&mut rib, &mut x);
    drain(&mut rib, &mut rr);
    announce(
        &mut rib,
        1,
        &["10.2.0.0/26", "10.2.0.64/26"],
        attrs(&[], [10, 0, 0, 2]),
    );
    assert_eq!(drain(&mut rib, &mut rr).ann.len(), 2);
    rib.peer_down(1, true);
    assert!(rib.has_stale(1));
    assert_eq!(best(&rib, "10.2.0.0/26"), Some(1));
    assert!(
        drain(&mut rib, &mut rr).wd.is_empty(),
        "stale routes are not withdrawn"
    );
    // It comes back, refreshes one prefix, then End-of-RIB: the other goes.
    let (tx, _rx) = mpsc::channel(16);
    rib.peer_up(
        1,
        UpInfo {
            peer_restarting: true,
            ..up_info([10, 0, 0, 2], tx, &[AfiSafi::IPV4_UNICAST])
        },
    );
    announce(&mut rib, 1, &["10.2.0.0/26"], attrs(&[], [10, 0, 0, 2]));
    assert_eq!(best(&rib, "10.2.0.64/26"), Some(1));
    rib.apply_update(1, UpdateMessage::end_of_rib(AfiSafi::IPV4_UNICAST));
    assert_eq!(best(&rib, "10.2.0.64/26"), None);
    assert_eq!(best(&rib, "10.2.0.0/26"), Some(1));
    assert_eq!(drain(&mut rib, &mut rr).wd, vec![v4("10.2.0.64/26")]);
    assert!(rib.has_stale(1), "IPv6 has not seen its End-of-RIB yet");
    rib.apply_update(1, UpdateMessage::end_of_rib(AfiSafi::IPV6_UNICAST));
    assert!(!rib.has_stale(1));
}

#[test]
fn session_down_without_gr_withdraws_everywhere() {
    let mut rib = Rib::new(global());
    let _x = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    let mut rr = add(&mut rib, 2, [10, 0, 0, 3], AS, |c| {
        c.route_reflector_client = true
    });
    drain(&mut rib, &mut rr);
    rib.set_tracking(true);
    announce(&mut rib, 1, &["10.2.0.0/26"], attrs(&[], [10, 0, 0, 2]));
    assert_eq!(drain(&mut rib, &mut rr).ann.len(), 1);
    let ch = rib.take_changes();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].next_hops, vec![IpAddr::from([10, 0, 0, 2])]);
    rib.peer_down(1, false);
    assert_eq!(drain(&mut rib, &mut rr).wd.len(), 1);
    let ch = rib.take_changes();
    assert!(ch[0].withdrawn);
    assert_eq!(rib.len(), (0, 0));
}

#[test]
fn multipath_exposes_several_next_hops() {
    let mut g = global();
    g.multipath = true;
    let mut rib = Rib::new(g);
    rib.set_tracking(true);
    add(&mut rib, 1, [10, 0, 0, 2], 65001, |_| {});
    add(&mut rib, 2, [10, 0, 0, 3], 65001, |_| {});
    announce(&mut rib, 1, &["0.0.0.0/0"], attrs(&[65001], [10, 0, 0, 2]));
    announce(&mut rib, 2, &["0.0.0.0/0"], attrs(&[65001], [10, 0, 0, 3]));
    let ch = rib.take_changes();
    let last = ch.last().unwrap();
    assert_eq!(
        last.next_hops,
        vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
    );
}

#[test]
fn import_policy_and_max_prefixes() {
    let mut rib = Rib::new(global());
    let pol = Policy {
        rules: vec![
            PolicyRule {
                prefix: Some(PrefixMatch {
                    cidr: "0.0.0.0/0".parse().unwrap(),
                    operator: MatchOperator::Equal,
                    min_len: None,
                    max_len: None,
                }),
                set_local_pref: Some(50),
                ..Default::default()
            },
            PolicyRule {
                action: RuleAction::Reject,
                ..Default::default()
            },
        ],
        default: DefaultAction::Accept,
    };
    add(&mut rib, 1, [10, 0, 1, 2], 65001, |c| {
        c.import = Some(pol);
        c.max_prefixes = Some(1);
    });
    announce(
        &mut rib,
        1,
        &["0.0.0.0/0", "8.8.8.0/24"],
        attrs(&[65001], [10, 0, 1, 2]),
    );
    assert_eq!(best(&rib, "0.0.0.0/0"), Some(1));
    assert_eq!(best(&rib, "8.8.8.0/24"), None);
    let c = &rib.peers.get(&1).unwrap().counters;
    assert_eq!(c.received.load(AtOrd::Relaxed), 2);
    assert_eq!(c.accepted.load(AtOrd::Relaxed), 1);
    assert!(rib.take_actions().is_empty());
    let mut a = attrs(&[65001], [10, 0, 1, 2]);
    a.local_pref = Some(1);
    announce(&mut rib, 1, &["0.0.0.0/0"], a);
    assert_eq!(rib.advertised(1, p4("0.0.0.0/0")), None);
    // Second accepted prefix: over the limit.
    let pol2 = Policy::accept_all();
    rib.peers.get_mut(&1).unwrap().cfg.import = Some(pol2);
    announce(&mut rib, 1, &["9.9.9.0/24"], attrs(&[65001], [10, 0, 1, 2]));
    let acts = rib.take_actions();
    assert!(
        matches!(&acts[..], [RibAction::ClosePeer(1, n, None)] if n.code == 6 && n.subcode == 1)
    );
}

#[test]
fn treat_as_withdraw_removes_the_prefixes() {
    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 0, 1, 2], 65001, |_| {});
    announce(&mut rib, 1, &["8.8.8.0/24"], attrs(&[65001], [10, 0, 1, 2]));
    assert_eq!(best(&rib, "8.8.8.0/24"), Some(1));
    let u = UpdateMessage {
        attributes: attrs(&[65001], [10, 0, 1, 2]),
        nlri: vec![Nlri::new(v4("8.8.8.0/24"))],
        errors: vec![calyx_proto::AttrError {
            type_code: 4,
            kind: calyx_proto::AttrErrorKind::Length,
            action: Action::TreatAsWithdraw,
        }],
        ..Default::default()
    };
    rib.apply_update(1, u);
    assert_eq!(best(&rib, "8.8.8.0/24"), None);
}

#[test]
fn ipv6_over_ipv4_session_uses_mapped_or_configured_next_hop() {
    let mut rib = Rib::new(global());
    let mut a = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    drain(&mut rib, &mut a);
    rib.originate(
        Prefix::from_net("fd00:1::/122".parse().unwrap()),
        PathAttributes::default(),
    );
    rib.flush();
    let mut got = None;
    while let Ok(m) = a.rx.try_recv() {
        if let OutMsg::Routes(b) = m {
            got = b.v6.into_iter().next();
        }
    }
    let (at, ps) = got.unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(
        at.next_hop,
        IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())
    );
}

#[test]
fn interned_sets_are_shared_and_collected() {
    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 0, 1, 2], 65001, |_| {});
    for i in 0..100u8 {
        announce(
            &mut rib,
            1,
            &[&format!("20.{i}.0.0/24")],
            attrs(&[65001], [10, 0, 1, 2]),
        );
    }
    assert_eq!(rib.attribute_sets(), 1);
    rib.peer_down(1, false);
    rib.collect_garbage();
    assert_eq!(rib.attribute_sets(), 0);
}

mod model {
    //! Model-based check of the tables, the change log and the Adj-RIB-Out marks: after any
    //! sequence of announcements, withdrawals, flushes and session resets, what each peer has
    //! received (applying every batch in order) is exactly the export of the current best
    //! paths, and nothing is left behind in the tables.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const SENDERS: [(PeerId, [u8; 4], u32); 3] = [
        (1, [10, 0, 1, 2], 65001),
        (2, [10, 0, 2, 2], 65002),
        (3, [10, 0, 3, 2], AS),
    ];
    /// eBGP, exports everything.
    const MON: PeerId = 4;
    /// iBGP, Calico default export: only our own routes.
    const IBGP: PeerId = 5;

    #[derive(Debug, Clone)]
    enum Op {
        Announce { peer: usize, prefix: u8, len: u8 },
        Withdraw { peer: usize, prefix: u8 },
        Originate { prefix: u8 },
        WithdrawLocal { prefix: u8 },
        SenderDown { peer: usize },
        MonitorReset,
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..40u8, 0..4u8).prop_map(|(peer, prefix, len)| Op::Announce { peer, prefix, len }),
            3 => (0..3usize, 0..40u8).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
            1 => (0..40u8).prop_map(|prefix| Op::Originate { prefix }),
            1 => (0..40u8).prop_map(|prefix| Op::WithdrawLocal { prefix }),
            1 => (0..3usize).prop_map(|peer| Op::SenderDown { peer }),
            1 => Just(Op::MonitorReset),
            2 => Just(Op::Flush),
        ]
    }

    fn prefix(i: u8) -> Ipv4Prefix {
        v4(&format!("20.0.{i}.0/24"))
    }

    fn up(rib: &mut Rib, id: PeerId, addr: [u8; 4]) -> mpsc::Receiver<OutMsg> {
        let (tx, rx) = mpsc::channel(1 << 16);
        rib.peer_up(
            id,
            UpInfo {
                send_eor: false,
                ..up_info(addr, tx, &[AfiSafi::IPV4_UNICAST])
            },
        );
        rx
    }

    /// Apply what the RIB sent to a peer's view of its Adj-RIB-In.
    fn receive(rx: &mut mpsc::Receiver<OutMsg>, view: &mut BTreeMap<Ipv4Prefix, Attrs>) {
        while let Ok(m) = rx.try_recv() {
            if let OutMsg::Routes(b) = m {
                for w in b.withdraw_v4 {
                    view.remove(&w);
                }
                for (a, ps) in b.v4 {
                    for p in ps {
                        view.insert(p, a.clone());
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn peers_receive_exactly_the_export_of_the_best_paths(ops in proptest::collection::vec(op(), 1..120)) {
            let mut rib = Rib::new(global());
            for (id, addr, asn) in SENDERS {
                rib.add_peer(id, PeerConfig::new(IpAddr::from(addr), asn), Asn(AS));
                let _ = up(&mut rib, id, addr);
            }
            let mut mon_cfg = PeerConfig::new(IpAddr::from([10, 0, 4, 2]), 65004);
            mon_cfg.export = Some(Policy::accept_all());
            rib.add_peer(MON, mon_cfg, Asn(AS));
            rib.add_peer(IBGP, PeerConfig::new(IpAddr::from([10, 0, 5, 2]), AS), Asn(AS));
            let mut mon_rx = up(&mut rib, MON, [10, 0, 4, 2]);
            let mut ibgp_rx = up(&mut rib, IBGP, [10, 0, 5, 2]);
            let mut mon: BTreeMap<Ipv4Prefix, Attrs> = BTreeMap::new();
            let mut ibgp: BTreeMap<Ipv4Prefix, Attrs> = BTreeMap::new();
            // What each sender currently announces, and what we originate.
            let mut announced: BTreeMap<(PeerId, u8), u8> = BTreeMap::new();
            let mut local: BTreeSet<u8> = BTreeSet::new();
            for o in ops {
                match o {
                    Op::Announce { peer, prefix: p, len } => {
                        let (id, addr, asn) = SENDERS[peer];
                        let path: Vec<u32> = if asn == AS { vec![65100; len as usize] } else { vec![asn; 1 + len as usize] };
                        announce(&mut rib, id, &[&prefix(p).to_string()], attrs(&path, addr));
                        announced.insert((id, p), len);
                    }
                    Op::Withdraw { peer, prefix: p } => {
                        let id = SENDERS[peer].0;
                        withdraw(&mut rib, id, &[&prefix(p).to_string()]);
                        announced.remove(&(id, p));
                    }
                    Op::Originate { prefix: p } => {
                        rib.originate(Prefix::V4(prefix(p)), PathAttributes::default());
                        local.insert(p);
                    }
                    Op::WithdrawLocal { prefix: p } => {
                        rib.withdraw_local(Prefix::V4(prefix(p)));
                        local.remove(&p);
                    }
                    Op::SenderDown { peer } => {
                        let (id, addr, _) = SENDERS[peer];
                        rib.peer_down(id, false);
                        announced.retain(|(x, _), _| *x != id);
                        let _ = up(&mut rib, id, addr);
                    }
                    Op::MonitorReset => {
                        receive(&mut mon_rx, &mut mon);
                        rib.peer_down(MON, false);
                        mon.clear();
                        mon_rx = up(&mut rib, MON, [10, 0, 4, 2]);
                    }
                    Op::Flush => {
                        rib.flush();
                        receive(&mut mon_rx, &mut mon);
                        receive(&mut ibgp_rx, &mut ibgp);
                    }
                }
            }
            while rib.flush() {}
            receive(&mut mon_rx, &mut mon);
            receive(&mut ibgp_rx, &mut ibgp);

            // The Loc-RIB holds exactly the prefixes someone announces.
            let mut expected: BTreeSet<u8> = announced.keys().map(|(_, p)| *p).collect();
            expected.extend(local.iter().copied());
            let held: BTreeSet<Ipv4Prefix> = rib.best_routes().into_iter().map(|(p, _, _)| match p {
                Prefix::V4(p) => p,
                Prefix::V6(_) => unreachable!(),
            }).collect();
            let want: BTreeSet<Ipv4Prefix> = expected.iter().map(|p| prefix(*p)).collect();
            prop_assert_eq!(&held, &want);
            prop_assert_eq!(rib.len().0, want.len(), "no destination left behind");

            // The eBGP monitor has every best path, with our AS prepended to the best path's.
            let best: BTreeMap<Ipv4Prefix, PeerId> = rib.best_routes().into_iter().map(|(p, _, id)| match p {
                Prefix::V4(p) => (p, id),
                Prefix::V6(_) => unreachable!(),
            }).collect();
            prop_assert_eq!(mon.keys().copied().collect::<BTreeSet<_>>(), want.clone());
            for (p, a) in &mon {
                let id = best[p];
                let want_len = if id == LOCAL {
                    1
                } else {
                    let i = p.addr().octets()[2];
                    let len = usize::from(announced[&(id, i)]);
                    if id == 3 { 1 + len } else { 2 + len }
                };
                prop_assert_eq!(a.attrs.as_path.as_ref().map(|x| x.path_len()), Some(want_len), "{}", p);
                prop_assert_eq!(a.next_hop, IpAddr::from([10, 0, 0, 1]));
            }
            // The iBGP peer has exactly our own routes (Calico default export), and nothing
            // learned from the iBGP sender.
            let own: BTreeSet<Ipv4Prefix> = best.iter().filter(|(_, id)| **id == LOCAL).map(|(p, _)| *p).collect();
            prop_assert_eq!(ibgp.keys().copied().collect::<BTreeSet<_>>(), own);
            let adv = |id: PeerId| rib.peers.get(&id).unwrap().counters.advertised.load(AtOrd::Relaxed);
            prop_assert_eq!(adv(MON), mon.len() as u64);
            prop_assert_eq!(adv(IBGP), ibgp.len() as u64);
        }
    }
}

/// RFC 4486 §4: the max-prefix Cease carries the AFI and SAFI of the family that crossed the
/// limit, then the limit.
#[test]
fn max_prefix_notification_names_the_family_that_crossed_the_limit() {
    use calyx_proto::{MpReach, Nlri as N};
    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 0, 1, 2], 65001, |c| {
        c.max_prefixes = Some(1)
    });
    let v6 = |s: &str| match Prefix::from_net(s.parse().unwrap()) {
        Prefix::V6(p) => p,
        Prefix::V4(_) => unreachable!(),
    };
    let u = UpdateMessage {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([Asn(65001)])),
            ..Default::default()
        },
        mp_reach: Some(MpReach {
            next_hop: MpNextHop::V6 {
                global: "fd00::2".parse().unwrap(),
                link_local: None,
            },
            nlri: MpNlri::Ipv6(vec![N::new(v6("fd00:1::/64")), N::new(v6("fd00:2::/64"))]),
        }),
        ..Default::default()
    };
    rib.apply_update(1, u);
    let acts = rib.take_actions();
    let [RibAction::ClosePeer(1, n, None)] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!((n.code, n.subcode), (6, 1));
    assert_eq!(
        n.data,
        vec![0, 2, 1, 0, 0, 0, 1],
        "AFI 2 (IPv6), SAFI 1, limit 1"
    );

    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 0, 1, 2], 65001, |c| {
        c.max_prefixes = Some(1)
    });
    announce(
        &mut rib,
        1,
        &["8.8.8.0/24", "9.9.9.0/24"],
        attrs(&[65001], [10, 0, 1, 2]),
    );
    let acts = rib.take_actions();
    let [RibAction::ClosePeer(1, n, None)] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(
        n.data,
        vec![0, 1, 1, 0, 0, 0, 1],
        "AFI 1 (IPv4), SAFI 1, limit 1"
    );
}

/// An announcement no UPDATE can carry to the peer (attributes longer than its maximum
/// message) is not marked advertised: it is counted, a version the peer had before is
/// withdrawn, and a later encodable version goes out.
#[test]
fn an_unencodable_announcement_is_counted_and_not_marked_advertised() {
    use calyx_proto::Community;
    let mut rib = Rib::new(global());
    let mut a = add(&mut rib, 1, [10, 0, 0, 2], AS, |_| {});
    let huge = PathAttributes {
        communities: (0..1100).map(Community).collect(),
        ..Default::default()
    };
    rib.originate(p4("10.1.0.0/26"), PathAttributes::default());
    rib.originate(p4("10.2.0.0/26"), huge.clone());
    let s = drain(&mut rib, &mut a);
    let sent: Vec<Ipv4Prefix> = s.ann.iter().map(|(p, _)| *p).collect();
    assert_eq!(sent, vec![v4("10.1.0.0/26")]);
    let c = rib.peers.get(&1).unwrap().counters.clone();
    assert_eq!(c.not_encoded.load(AtOrd::Relaxed), 1);
    assert_eq!(c.advertised.load(AtOrd::Relaxed), 1);
    assert!(rib.advertised(1, p4("10.2.0.0/26")).is_none());

    // An encodable version is sent when the route changes.
    rib.originate(p4("10.2.0.0/26"), PathAttributes::default());
    let s = drain(&mut rib, &mut a);
    assert_eq!(s.ann.len(), 1);
    assert_eq!(s.ann[0].0, v4("10.2.0.0/26"));
    assert_eq!(c.advertised.load(AtOrd::Relaxed), 2);

    // It becomes unencodable again: the peer's version is withdrawn, not left in place.
    rib.originate(p4("10.2.0.0/26"), huge);
    let s = drain(&mut rib, &mut a);
    assert!(s.ann.is_empty(), "{s:?}");
    assert_eq!(s.wd, vec![v4("10.2.0.0/26")]);
    assert_eq!(c.not_encoded.load(AtOrd::Relaxed), 2);
    assert_eq!(c.advertised.load(AtOrd::Relaxed), 1);
}

#[test]
fn lookup_answers_prefixes_addresses_peers_and_limits() {
    let mut rib = Rib::new(global());
    add(&mut rib, 1, [10, 0, 0, 2], 65001, |_| {});
    add(&mut rib, 2, [10, 0, 0, 3], 65002, |_| {});
    announce(
        &mut rib,
        1,
        &["10.1.0.0/16", "10.1.2.0/24"],
        attrs(&[65001], [10, 0, 0, 2]),
    );
    announce(
        &mut rib,
        2,
        &["10.1.0.0/16"],
        attrs(&[65002, 65009], [10, 0, 0, 3]),
    );
    rib.originate(p4("192.168.5.0/26"), PathAttributes::default());

    let q = |prefix: Option<&str>, address: Option<&str>, peer: Option<&str>, limit| RouteQuery {
        prefix: prefix.map(|p| p.parse().unwrap()),
        address: address.map(|a| a.parse().unwrap()),
        peer: peer.map(|a| a.parse().unwrap()),
        limit,
    };
    // A prefix: both paths, best first (the shorter AS path), attributes rendered.
    let t = rib.lookup(&q(Some("10.1.0.0/16"), None, None, 0));
    assert_eq!(t.routes.len(), 1);
    let paths = &t.routes[0].paths;
    assert_eq!(paths.len(), 2);
    assert!(paths[0].best && !paths[1].best);
    assert_eq!(paths[0].from, Some(IpAddr::from([10, 0, 0, 2])));
    assert_eq!(paths[0].peer_as, Some(65001));
    assert_eq!(paths[0].as_path, "65001");
    assert_eq!(paths[1].as_path, "65002 65009");
    assert_eq!(paths[0].origin, "IGP");
    // A peer filter keeps that peer's path only, and says whether it is the best.
    let t = rib.lookup(&q(Some("10.1.0.0/16"), None, Some("10.0.0.3"), 0));
    assert_eq!(t.routes[0].paths.len(), 1);
    assert!(!t.routes[0].paths[0].best);
    // An address: the most specific destination holding it.
    let t = rib.lookup(&q(None, Some("10.1.2.9"), None, 0));
    assert_eq!(t.routes[0].prefix.to_string(), "10.1.2.0/24");
    let t = rib.lookup(&q(None, Some("10.1.3.9"), None, 0));
    assert_eq!(t.routes[0].prefix.to_string(), "10.1.0.0/16");
    // ... and with a peer filter, the most specific one that peer has.
    let t = rib.lookup(&q(None, Some("10.1.2.9"), Some("10.0.0.3"), 0));
    assert_eq!(t.routes[0].prefix.to_string(), "10.1.0.0/16");
    assert!(rib
        .lookup(&q(None, Some("172.16.0.1"), None, 0))
        .routes
        .is_empty());
    assert!(rib
        .lookup(&q(Some("10.9.0.0/16"), None, None, 0))
        .routes
        .is_empty());
    // Everything, sorted; our own route has no peer and next hop "self".
    let t = rib.lookup(&RouteQuery::default());
    let prefixes: Vec<String> = t.routes.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(prefixes, ["10.1.0.0/16", "10.1.2.0/24", "192.168.5.0/26"]);
    assert!(!t.truncated);
    let own = &t.routes[2].paths[0];
    assert_eq!(own.from, None);
    assert!(own.next_hop.is_unspecified());
    // A limit cuts the listing and says so.
    let t = rib.lookup(&q(None, None, None, 2));
    assert_eq!(t.routes.len(), 2);
    assert!(t.truncated);
}
