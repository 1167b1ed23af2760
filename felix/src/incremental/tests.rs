use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{DesiredState, Vtep};
use crate::route::NextHop;

fn env() -> Env {
    Env {
        table: 254,
        metric: 0,
        underlay_v4: Some(2),
        underlay_v6: Some(2),
        tunl0: Some(3),
        vxlan_v4: Some(4),
        vxlan_v6: Some(5),
        subnet_v4: Some("192.168.1.0/24".parse().unwrap()),
        subnet_v6: Some("fd00:1::/64".parse().unwrap()),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn key(dst: &str) -> RouteKey {
    route_key(net(dst), &env())
}

fn vtep_of(last: u8) -> Vtep {
    Vtep {
        tunnel_ip: format!("10.65.{last}.0").parse().unwrap(),
        mac: MacAddr([0x66, 0, 0, 0, 0, last]),
    }
}

fn plain(dst: &str, hops: &[&str]) -> RemoteRoute {
    RemoteRoute {
        dst: net(dst),
        encap: Encap::None,
        hops: hops
            .iter()
            .map(|h| RemoteHop::node(h.parse().unwrap()))
            .collect(),
    }
}

fn vx(dst: &str, node: &str, last: u8) -> RemoteRoute {
    RemoteRoute {
        dst: net(dst),
        encap: Encap::Vxlan,
        hops: vec![RemoteHop {
            node_ip: node.parse().unwrap(),
            vtep: Some(vtep_of(last)),
        }],
    }
}

fn via(gw: &str, oif: u32, onlink: bool) -> NextHop {
    NextHop {
        gateway: gw.parse().unwrap(),
        oif,
        onlink,
    }
}

/// Records the reported changes into a shadow copy of the routes and checks that every
/// report's `old` is what the shadow held: then counters kept from the reports are exact.
#[derive(Default)]
struct Shadow {
    routes: FastMap<RouteKey, RouteSpec>,
    reports: usize,
}

impl Shadow {
    fn hook(&mut self) -> impl FnMut(RouteKey, Option<&RouteSpec>, Option<&RouteSpec>) + '_ {
        move |k, old, new| {
            assert_eq!(self.routes.get(&k), old, "stale `old` reported for {k:?}");
            assert_ne!(old, new, "no-change reported for {k:?}");
            match new {
                Some(n) => self.routes.insert(k, n.clone()),
                None => self.routes.remove(&k),
            };
            self.reports += 1;
        }
    }
}

#[test]
fn upsert_remove_replace_all_with_ecmp() {
    let mut p = IncrementalPlan::new(env());
    let mut sh = Shadow::default();
    p.upsert(plain("10.65.1.0/26", &["192.168.1.11"]), &mut sh.hook());
    p.upsert(
        plain("10.65.2.7/26", &["192.168.1.12", "192.168.1.13"]),
        &mut sh.hook(),
    );
    assert_eq!(sh.reports, 2);
    assert_eq!(
        p.route(&key("10.65.2.0/26")).cloned().unwrap(),
        RouteSpec::Multipath(vec![
            via("192.168.1.12", 2, false),
            via("192.168.1.13", 2, false)
        ])
    );
    // The same route again: nothing to do.
    p.upsert(plain("10.65.1.0/26", &["192.168.1.11"]), &mut sh.hook());
    assert_eq!(sh.reports, 2);
    // Replace the hops: one report.
    p.upsert(plain("10.65.1.0/26", &["192.168.1.14"]), &mut sh.hook());
    assert_eq!(sh.reports, 3);
    assert_eq!(
        p.route(&key("10.65.1.0/26")).cloned().unwrap(),
        RouteSpec::Via(via("192.168.1.14", 2, false))
    );
    // Remove (by an untruncated prefix), and remove of an absent one.
    p.remove(net("10.65.2.9/26"), &mut sh.hook());
    p.remove(net("10.65.9.0/26"), &mut sh.hook());
    assert_eq!(sh.reports, 4);
    assert!(!p.has_route(&key("10.65.2.0/26")));
    // A full resync that names one destination twice merges it into ECMP; only changes count.
    p.replace_all(
        vec![
            plain("10.65.1.0/26", &["192.168.1.14"]),
            plain("10.65.3.0/26", &["192.168.1.15"]),
            plain("10.65.3.0/26", &["192.168.1.16"]),
        ],
        &mut sh.hook(),
    );
    assert_eq!(sh.reports, 5, "only 10.65.3.0/26 is new");
    assert_eq!(
        p.route(&key("10.65.3.0/26")).cloned().unwrap().hops().len(),
        2
    );
    p.replace_all(
        vec![plain("10.65.3.0/26", &["192.168.1.16"])],
        &mut sh.hook(),
    );
    assert_eq!(sh.reports, 7, "10.65.1.0/26 gone, 10.65.3.0/26 single");
    assert_eq!(p.routes_len(), 1);
    assert_eq!(p.remote_len(), 1);
    assert_eq!(sh.routes, p.routes_map());
}

#[test]
fn vxlan_l2_entries_are_reference_counted() {
    let mut p = IncrementalPlan::new(env());
    let mut sh = Shadow::default();
    let neigh = (4, "10.65.7.0".parse::<IpAddr>().unwrap());
    let node: IpAddr = "192.168.9.7".parse().unwrap();
    let mac = MacAddr([0x66, 0, 0, 0, 0, 7]);
    p.upsert(vx("10.66.1.0/26", "192.168.9.7", 7), &mut sh.hook());
    assert!(p.take_l2_changed());
    assert_eq!(p.neighbours().get(&neigh), Some(&mac));
    assert_eq!(p.fdb().get(&(4, mac)), Some(&node));
    // A second route through the same node: same entries, no L2 work.
    p.upsert(vx("10.66.2.0/26", "192.168.9.7", 7), &mut sh.hook());
    assert!(!p.take_l2_changed());
    p.remove(net("10.66.1.0/26"), &mut sh.hook());
    assert!(!p.take_l2_changed(), "still used by 10.66.2.0/26");
    assert_eq!(p.neighbours().len(), 1);
    // The node's VTEP MAC changes; the routes move one by one: the newest MAC is programmed.
    let mut moved = vx("10.66.3.0/26", "192.168.9.7", 7);
    let new_mac = MacAddr([0x66, 0, 0, 0, 0, 0x77]);
    if let Some(v) = moved.hops[0].vtep.as_mut() {
        v.mac = new_mac;
    }
    p.upsert(moved.clone(), &mut sh.hook());
    assert!(p.take_l2_changed());
    assert_eq!(p.neighbours().get(&neigh), Some(&new_mac));
    assert_eq!(p.fdb().len(), 2, "old MAC still used by 10.66.2.0/26");
    moved.dst = net("10.66.2.0/26");
    p.upsert(moved, &mut sh.hook());
    assert!(p.take_l2_changed());
    assert_eq!(p.fdb().len(), 1);
    assert_eq!(p.fdb().get(&(4, new_mac)), Some(&node));
    // Gone entirely, also when the route loses its encapsulation.
    p.remove(net("10.66.3.0/26"), &mut sh.hook());
    assert!(!p.take_l2_changed());
    p.upsert(plain("10.66.2.0/26", &["192.168.1.7"]), &mut sh.hook());
    assert!(p.take_l2_changed());
    assert!(p.neighbours().is_empty() && p.fdb().is_empty());
    assert!(
        p.out.neighbours.is_empty() && p.out.fdb.is_empty(),
        "no empty counters kept"
    );
    assert_eq!(sh.routes, p.routes_map());
}

#[test]
fn local_block_wins_and_the_remote_route_returns() {
    let mut p = IncrementalPlan::new(env());
    let mut sh = Shadow::default();
    p.set_local_blocks(&[net("10.65.0.0/26")], &mut sh.hook());
    p.upsert(plain("10.65.0.0/26", &["192.168.1.11"]), &mut sh.hook());
    assert_eq!(sh.reports, 1, "the remote route is hidden by the block");
    assert_eq!(
        p.route(&key("10.65.0.0/26")).cloned().unwrap(),
        RouteSpec::Blackhole
    );
    // A blocked remote route under a local block is not reported blocked.
    p.upsert(
        RemoteRoute {
            dst: net("10.65.0.0/26"),
            encap: Encap::Vxlan,
            hops: vec![RemoteHop::node("192.168.1.11".parse().unwrap())],
        },
        &mut sh.hook(),
    );
    assert!(p.blocked().is_empty());
    // The block goes: the remote route is reported blocked (no VTEP).
    p.set_local_blocks(&[], &mut sh.hook());
    assert!(p.blocked()[&net("10.65.0.0/26")].contains("VTEP"));
    assert!(p.routes_len() == 0);
    p.upsert(plain("10.65.0.0/26", &["192.168.1.11"]), &mut sh.hook());
    assert!(p.blocked().is_empty());
    p.set_local_blocks(&[net("10.65.0.0/26"), net("10.65.0.64/26")], &mut sh.hook());
    p.set_local_blocks(&[net("10.65.0.64/26")], &mut sh.hook());
    assert_eq!(
        p.route(&key("10.65.0.0/26")).cloned().unwrap(),
        RouteSpec::Via(via("192.168.1.11", 2, false))
    );
    assert_eq!(sh.routes, p.routes_map());
}

#[test]
fn blocked_routes_unblock_on_env_change() {
    let mut e = env();
    e.vxlan_v4 = None;
    let mut p = IncrementalPlan::new(e.clone());
    let mut sh = Shadow::default();
    p.upsert(vx("10.66.1.0/26", "192.168.9.7", 7), &mut sh.hook());
    p.set_local_blocks(&[net("10.65.0.0/26")], &mut sh.hook());
    assert!(p.blocked()[&net("10.66.1.0/26")].contains("vxlan.calico missing"));
    assert!(p.neighbours().is_empty());
    assert!(!p.set_env(e), "same env: nothing to do");
    assert!(p.set_env(env()));
    sh.routes = p.routes_map();
    assert!(p.take_l2_changed());
    assert!(p.blocked().is_empty());
    assert_eq!(
        p.route(&key("10.66.1.0/26")).cloned().unwrap(),
        RouteSpec::Via(via("10.65.7.0", 4, true))
    );
    assert_eq!(
        p.route(&key("10.65.0.0/26")).cloned().unwrap(),
        RouteSpec::Blackhole
    );
    assert_eq!(p.neighbours().len(), 1);
    // Later updates count against the rebuilt L2 set.
    p.remove(net("10.66.1.0/26"), &mut sh.hook());
    assert!(p.take_l2_changed());
    assert!(p.neighbours().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property: any sequence of updates gives the plan `Plan::compile` gives for the final state.

const DSTS: &[&str] = &[
    "10.65.1.0/26",
    "10.65.1.5/26", // same destination once truncated
    "10.65.2.0/26",
    "10.65.3.0/26",
    "10.65.4.4/32",
    "fd00:10::40/122",
    "fd00:10::80/122",
];
/// Nodes: (underlay IP, VTEP index); in and out of the local subnets, both families.
const NODES: &[(&str, u8)] = &[
    ("192.168.1.11", 1),
    ("192.168.1.12", 2),
    ("192.168.2.13", 3),
    ("10.9.9.14", 4),
    ("fd00:1::15", 5),
    ("fd00:2::16", 6),
];
const ENCAPS: &[Encap] = &[
    Encap::None,
    Encap::Ipip,
    Encap::IpipCrossSubnet,
    Encap::Vxlan,
    Encap::VxlanCrossSubnet,
];

fn node_hop(i: usize, with_vtep: bool) -> RemoteHop {
    let (ip, v) = NODES[i];
    let node_ip: IpAddr = ip.parse().unwrap();
    // One VTEP per node (as in a cluster), of the node's family.
    let tunnel_ip: IpAddr = if node_ip.is_ipv4() {
        format!("10.65.{v}.0").parse().unwrap()
    } else {
        format!("fd00:10::{v}:0").parse().unwrap()
    };
    RemoteHop {
        node_ip,
        vtep: with_vtep.then_some(Vtep {
            tunnel_ip,
            mac: MacAddr([0x66, 0, 0, 0, 0, v]),
        }),
    }
}

fn arb_route() -> impl Strategy<Value = RemoteRoute> {
    (
        0..DSTS.len(),
        0..ENCAPS.len(),
        prop::collection::vec((0..NODES.len(), any::<bool>()), 0..3),
    )
        .prop_map(|(d, e, hops)| RemoteRoute {
            dst: net(DSTS[d]),
            encap: ENCAPS[e],
            hops: hops.into_iter().map(|(n, v)| node_hop(n, v)).collect(),
        })
}

#[derive(Debug, Clone)]
enum Op {
    Update(RouteUpdate),
    Local(Vec<usize>),
    Env(u8),
    /// What the kernel holds under a destination's key: 0 nothing, 1 the wanted route (a
    /// write succeeded), 2 a blackhole, 3 a route via another gateway.
    Kernel(usize, u8),
    ClearKernel,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => arb_route().prop_map(|r| Op::Update(RouteUpdate::Upsert(r))),
        2 => (0..DSTS.len()).prop_map(|d| Op::Update(RouteUpdate::Remove(net(DSTS[d])))),
        1 => prop::collection::vec(arb_route(), 0..6)
            .prop_map(|v| Op::Update(RouteUpdate::ReplaceAll(v))),
        1 => prop::collection::vec(0..DSTS.len(), 0..3).prop_map(Op::Local),
        1 => any::<u8>().prop_map(Op::Env),
        3 => (0..DSTS.len(), 0u8..4).prop_map(|(d, v)| Op::Kernel(d, v)),
        1 => Just(Op::ClearKernel),
    ]
}

/// Environments with devices and subnets present or missing, chosen by bits.
fn env_variant(bits: u8) -> Env {
    let mut e = env();
    let has = |b: u8| bits & (1 << b) != 0;
    if has(0) {
        e.tunl0 = None;
    }
    if has(1) {
        e.vxlan_v4 = None;
    }
    if has(2) {
        e.vxlan_v6 = Some(9);
    }
    if has(3) {
        e.subnet_v4 = None;
    }
    if has(4) {
        e.underlay_v6 = None;
    }
    if has(5) {
        e.vxlan_v4 = Some(7);
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_update_sequence_equals_a_full_compile(ops in prop::collection::vec(arb_op(), 1..40)) {
        let mut p = IncrementalPlan::new(env());
        let mut sh = Shadow::default();
        let mut env_now = env();
        // The model: the final full state, destination by destination (in first-seen order
        // within one destination, as `Plan::compile` merges them).
        let mut model: BTreeMap<IpNet, Vec<RemoteRoute>> = BTreeMap::new();
        let mut local: Vec<IpNet> = Vec::new();
        // What the kernel holds, as recorded.
        let mut kernel: BTreeMap<RouteKey, RouteSpec> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Update(u) => {
                    match &u {
                        RouteUpdate::Upsert(r) => {
                            model.insert(r.dst.trunc(), vec![r.clone()]);
                        }
                        RouteUpdate::Remove(d) => {
                            model.remove(&d.trunc());
                        }
                        RouteUpdate::ReplaceAll(v) => {
                            model.clear();
                            for r in v {
                                model.entry(r.dst.trunc()).or_default().push(r.clone());
                            }
                        }
                    }
                    p.apply(u, &mut sh.hook());
                }
                Op::Local(ix) => {
                    local = ix.into_iter().map(|i| net(DSTS[i])).collect();
                    p.set_local_blocks(&local, &mut sh.hook());
                }
                Op::Env(bits) => {
                    env_now = env_variant(bits);
                    if p.set_env(env_now.clone()) {
                        sh.routes = p.routes_map();
                    }
                }
                Op::Kernel(d, v) => {
                    let k = key(DSTS[d]);
                    let spec = match v {
                        0 => None,
                        1 => p.route(&k).cloned(),
                        2 => Some(RouteSpec::Blackhole),
                        _ => Some(RouteSpec::Via(via("192.168.1.99", 2, false))),
                    };
                    if v == 1 {
                        p.set_kernel_wanted(k);
                    } else {
                        p.set_kernel(k, spec.as_ref());
                    }
                    match spec {
                        Some(s) => kernel.insert(k, s),
                        // `set_kernel_wanted` with nothing wanted records nothing.
                        None if v == 1 => None,
                        None => kernel.remove(&k),
                    };
                }
                Op::ClearKernel => {
                    p.clear_kernel();
                    kernel.clear();
                }
            }
            let full = DesiredState {
                local_blocks: local.clone(),
                remote_routes: model.values().flatten().cloned().collect(),
                ..Default::default()
            };
            let want = Plan::compile(&full, &env_now);
            let got = p.to_plan();
            prop_assert_eq!(&got.routes, &want.routes);
            prop_assert_eq!(&got.blocked, &want.blocked);
            prop_assert_eq!(&got.neighbours, &want.neighbours);
            prop_assert_eq!(&got.fdb, &want.fdb);
            prop_assert_eq!(&sh.routes, &p.routes_map());
            // Interned values are counted exactly: none leaks, none is freed while in use.
            let (specs, hop_lists) = p.interned();
            let distinct: std::collections::HashSet<&RouteSpec> = got.routes.values().collect();
            prop_assert_eq!(specs, distinct.len());
            let distinct_hops: std::collections::HashSet<Id> =
                p.out.routes.values().filter_map(|s| s.remote).collect();
            prop_assert_eq!(p.remote_len(), model.len());
            prop_assert_eq!(hop_lists, distinct_hops.len());
            // The kernel side survives plan changes; the counts kept per change are exact.
            let got_kernel: BTreeMap<RouteKey, RouteSpec> =
                p.kernel_routes().map(|(k, s)| (*k, s.clone())).collect();
            prop_assert_eq!(&got_kernel, &kernel);
            prop_assert_eq!(p.kernel_len(), kernel.len());
            prop_assert_eq!(p.routes_len(), got.routes.len());
            let programmed = got.routes.iter().filter(|(k, w)| kernel.get(k) == Some(w)).count();
            prop_assert_eq!(p.programmed(), programmed);
            let distinct_have: std::collections::HashSet<&RouteSpec> = kernel.values().collect();
            prop_assert_eq!(p.out.specs.have.len(), distinct_have.len());
            prop_assert!(p.out.routes.values().all(|s| !s.is_empty()), "no empty slot kept");
        }
    }
}
