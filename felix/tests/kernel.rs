//! Real-kernel tests in network namespaces created by the tests (root only; they skip with a
//! printed reason otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use calyx_felix::route::RouteSpec;
use calyx_felix::*;
use common::*;

/// Foreign routes every test puts next to ours; they must survive everything.
const FOREIGN: &[(&str, &str, u32, u8)] = &[
    // (ip route add args, dst, table, protocol)
    (
        "10.65.0.0/16 via 192.168.1.1 proto static",
        "10.65.0.0/16",
        MAIN,
        4,
    ),
    (
        "10.65.1.0/26 via 192.168.1.1 table 100",
        "10.65.1.0/26",
        100,
        3,
    ),
    (
        "10.65.5.0/26 via 192.168.1.99 proto 80 table 100",
        "10.65.5.0/26",
        100,
        80,
    ),
    (
        "10.65.6.0/26 via 192.168.1.1 metric 50",
        "10.65.6.0/26",
        MAIN,
        3,
    ),
    (
        "10.65.7.0/26 via 192.168.1.1 proto static",
        "10.65.7.0/26",
        MAIN,
        4,
    ),
    (
        "fd00:10::/124 via fd00:1::1 proto static",
        "fd00:10::/124",
        MAIN,
        4,
    ),
];

fn add_foreign(ns: &Netns) {
    for (args, ..) in FOREIGN {
        let v6 = if args.contains(':') { "-6 " } else { "" };
        ns.ip(&format!("{v6}route add {args}"));
    }
}

fn assert_foreign_intact(ns: &Netns, stage: &str) {
    let routes = ns.dump_routes();
    for (args, dst, table, proto) in FOREIGN {
        assert!(
            find(&routes, *table, dst, *proto).is_some(),
            "{stage}: foreign route `{args}` is gone\n{}",
            ns.routes_text()
        );
    }
}

#[test]
fn every_route_kind_is_programmed_and_foreign_routes_survive() {
    if skip_without_root("route_kinds") {
        return;
    }
    let ns = node_ns("kinds", "n", "192.168.1.10/24", Some("fd00:1::10/64"));
    add_foreign(&ns);
    let mut rec = ns.reconciler(Config::default());
    rec.set_desired(full_state(true));
    let stats = rec.reconcile_once();
    let st = rec.status();
    let routes = ns.dump_routes();
    let ctx = || format!("{stats:?}\n{st:#?}\n{}", ns.routes_text());

    let eth0 = ns.ifindex("eth0");
    let vx = ns.ifindex("vxlan.calico");
    let vx6 = ns.ifindex("vxlan-v6.calico");
    let spec = |dst: &str| {
        find(&routes, MAIN, dst, PROTO)
            .and_then(|r| r.spec.clone())
            .unwrap_or_else(|| panic!("route {dst} missing\n{}", ctx()))
    };
    assert_eq!(spec("10.65.0.0/26"), RouteSpec::Blackhole, "{}", ctx());
    assert_eq!(spec("fd00:10::/122"), RouteSpec::Blackhole, "{}", ctx());
    assert_eq!(
        spec("10.65.1.0/26"),
        RouteSpec::Via(via("192.168.1.11", eth0, false)),
        "{}",
        ctx()
    );
    assert_eq!(
        spec("10.65.2.0/26"),
        RouteSpec::Via(via("10.65.2.0", vx, true)),
        "{}",
        ctx()
    );
    assert_eq!(
        spec("10.65.3.0/26"),
        RouteSpec::Multipath(vec![
            via("192.168.1.13", eth0, false),
            via("192.168.1.14", eth0, false)
        ]),
        "{}",
        ctx()
    );
    assert_eq!(
        spec("10.65.4.5/32"),
        RouteSpec::Via(via("192.168.1.15", eth0, false)),
        "{}",
        ctx()
    );
    assert_eq!(
        spec("fd00:10::40/122"),
        RouteSpec::Via(via("fd00:1::11", eth0, false)),
        "{}",
        ctx()
    );
    assert_eq!(
        spec("fd00:10::80/122"),
        RouteSpec::Via(via("fd00:10::80", vx6, true)),
        "{}",
        ctx()
    );
    // The foreign route holding 10.65.7.0/26 in main wins; ours is reported failed.
    assert!(
        find(&routes, MAIN, "10.65.7.0/26", PROTO).is_none(),
        "{}",
        ctx()
    );
    assert_eq!(st.routes_failed, 1, "{}", ctx());
    assert!(st.failures[0].error.contains("not owned"), "{}", ctx());
    assert_eq!(st.routes_programmed, 8, "{}", ctx());
    assert_foreign_intact(&ns, "after first sync");

    // Devices, neighbours, FDB.
    let d = ns.ip("-d link show dev vxlan.calico");
    for want in [
        "mtu 1450",
        "vxlan id 4096",
        "dstport 4789",
        "local 192.168.1.10",
        "dev eth0",
        "66:ca:1e:00:00:01",
    ] {
        assert!(d.contains(want), "`{want}` not in {d}");
    }
    let d6 = ns.ip("-d link show dev vxlan-v6.calico");
    assert!(
        d6.contains("mtu 1430") && d6.contains("local fd00:1::10"),
        "{d6}"
    );
    assert!(ns.ip("addr show dev vxlan.calico").contains("10.65.0.0/32"));
    let neigh = ns.ip("neigh show dev vxlan.calico");
    assert!(
        neigh.contains("10.65.2.0 lladdr 66:ca:1e:00:00:02 PERMANENT"),
        "{neigh}"
    );
    let fdb = ns.exec("bridge fdb show dev vxlan.calico").unwrap();
    assert!(
        fdb.contains("66:ca:1e:00:00:02 dst 192.168.1.12 self permanent"),
        "{fdb}"
    );
    let fdb6 = ns.exec("bridge fdb show dev vxlan-v6.calico").unwrap();
    assert!(
        fdb6.contains("66:ca:1e:00:00:03 dst fd00:1::12 self permanent"),
        "{fdb6}"
    );

    // A second pass changes nothing.
    let again = rec.reconcile_once();
    assert_eq!(
        (again.added, again.replaced, again.deleted),
        (0, 0, 0),
        "{again:?}"
    );

    // Change: drop one, move one, ECMP -> single, no IPv6 VXLAN, MTU auto-follow.
    let mut d = full_state(false);
    d.remote_routes
        .retain(|r| r.dst.to_string() != "10.65.1.0/26");
    for r in &mut d.remote_routes {
        match r.dst.to_string().as_str() {
            "10.65.4.5/32" => r.hops = vec![hop("192.168.1.16")],
            "10.65.3.0/26" => r.hops.truncate(1),
            "fd00:10::80/122" => r.encap = Encap::None,
            _ => {}
        }
    }
    rec.set_desired(d);
    let s2 = rec.reconcile_once();
    let routes = ns.dump_routes();
    assert!(
        find(&routes, MAIN, "10.65.1.0/26", PROTO).is_none(),
        "{s2:?}\n{}",
        ns.routes_text()
    );
    assert_eq!(
        find(&routes, MAIN, "10.65.4.5/32", PROTO).unwrap().spec,
        Some(RouteSpec::Via(via("192.168.1.16", eth0, false)))
    );
    assert_eq!(
        find(&routes, MAIN, "10.65.3.0/26", PROTO).unwrap().spec,
        Some(RouteSpec::Via(via("192.168.1.13", eth0, false)))
    );
    assert!(
        ns.try_ip("link show dev vxlan-v6.calico").is_err(),
        "vxlan-v6.calico not removed"
    );
    assert_foreign_intact(&ns, "after change");

    // Nothing desired: every route of ours and the devices go, nothing else.
    rec.set_desired(DesiredState::default());
    rec.reconcile_once();
    let routes = ns.dump_routes();
    let ours: Vec<_> = routes
        .iter()
        .filter(|r| r.protocol == PROTO && r.key.table == MAIN)
        .collect();
    assert!(ours.is_empty(), "left over: {ours:?}\n{}", ns.routes_text());
    assert!(ns.try_ip("link show dev vxlan.calico").is_err());
    assert_foreign_intact(&ns, "after clearing");
}

#[test]
fn configurable_protocol_table_and_mtu() {
    if skip_without_root("config") {
        return;
    }
    let ns = node_ns("cfg", "n", "192.168.1.10/24", None);
    ns.ip("link set eth0 mtu 9000");
    let cfg = Config {
        route_protocol: 77,
        table: 1234,
        vxlan_mtu: None,
        ..Default::default()
    };
    let mut rec = ns.reconciler(cfg);
    let mut d = full_state(false);
    d.node_ipv6 = None;
    d.remote_routes.retain(|r| r.dst.addr().is_ipv4());
    d.local_blocks.retain(|b| b.addr().is_ipv4());
    rec.set_desired(d.clone());
    rec.reconcile_once();
    let routes = ns.dump_routes();
    assert!(
        find(&routes, 1234, "10.65.1.0/26", 77).is_some(),
        "{}",
        ns.routes_text()
    );
    assert!(
        find(&routes, 1234, "10.65.7.0/26", 77).is_some(),
        "{}",
        ns.routes_text()
    );
    assert!(ns.ip("link show dev vxlan.calico").contains("mtu 8950"));
    // MTU override, updated in place (same ifindex).
    let before = ns.ifindex("vxlan.calico");
    drop(rec);
    let mut rec = ns.reconciler(Config {
        route_protocol: 77,
        table: 1234,
        vxlan_mtu: Some(1400),
        ..Default::default()
    });
    rec.set_desired(d);
    rec.reconcile_once();
    assert!(ns.ip("link show dev vxlan.calico").contains("mtu 1400"));
    assert_eq!(ns.ifindex("vxlan.calico"), before);
}

#[test]
fn ipip_device_and_routes_or_skip() {
    if skip_without_root("ipip") {
        return;
    }
    let ns = node_ns("ipip", "n", "192.168.1.10/24", None);
    let mut rec = ns.reconciler(Config::default());
    rec.set_desired(DesiredState {
        node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
        local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
        remote_routes: vec![
            rr("10.65.1.0/26", Encap::Ipip, vec![hop("192.168.1.11")]),
            rr(
                "10.65.2.0/26",
                Encap::IpipCrossSubnet,
                vec![hop("192.168.1.12")],
            ),
        ],
        ipip: Some(IpipTunnel {
            address: Some("10.65.0.1".parse().unwrap()),
        }),
        ..Default::default()
    });
    rec.reconcile_once();
    let st = rec.status();
    let routes = ns.dump_routes();
    // Whatever the kernel, the rest of the dataplane works.
    assert!(
        find(&routes, MAIN, "10.65.0.0/26", PROTO).is_some(),
        "{}",
        ns.routes_text()
    );
    assert!(
        find(&routes, MAIN, "10.65.2.0/26", PROTO).is_some(),
        "{}",
        ns.routes_text()
    );
    match ipip_supported(&ns) {
        Err(why) => {
            eprintln!("SKIP ipip device checks: this kernel has no IPIP support ({why})");
            assert!(
                st.device_errors.iter().any(|e| e.contains("tunl0")),
                "{st:#?}"
            );
            assert!(
                st.blocked
                    .iter()
                    .any(|(d, _)| d.to_string() == "10.65.1.0/26"),
                "{st:#?}"
            );
        }
        Ok(()) => {
            let tunl = ns.ifindex("tunl0");
            assert_eq!(
                find(&routes, MAIN, "10.65.1.0/26", PROTO).unwrap().spec,
                Some(RouteSpec::Via(via("192.168.1.11", tunl, true))),
                "{}",
                ns.routes_text()
            );
            let l = ns.ip("link show dev tunl0");
            assert!(l.contains("mtu 1480"), "{l}");
            assert!(ns.ip("addr show dev tunl0").contains("10.65.0.1/32"));
        }
    }
}

/// Two nodes joined by a veth pair; VXLAN between them.
fn vxlan_node(
    ip: &str,
    block: &str,
    tunnel: &str,
    m: u8,
    peer: (&str, &str, &str, u8),
) -> DesiredState {
    DesiredState {
        node_ipv4: Some(ip.parse().unwrap()),
        local_blocks: vec![block.parse().unwrap()],
        remote_routes: vec![rr(
            peer.0,
            Encap::Vxlan,
            vec![vx_hop(peer.1, peer.2, peer.3)],
        )],
        vxlan_v4: Some(VxlanTunnel::calico(mac(m), Some(tunnel.parse().unwrap()))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_ping_between_two_nodes() {
    if skip_without_root("vxlan_ping") {
        return;
    }
    let a = Netns::new("vxping", "a");
    let b = Netns::new("vxping", "b");
    a.ip(&format!(
        "link add eth0 type veth peer name eth0 netns {}",
        b.name
    ));
    a.ip("addr add 192.168.10.1/24 dev eth0");
    b.ip("addr add 192.168.10.2/24 dev eth0");
    for ns in [&a, &b] {
        ns.ip("link set eth0 up");
    }
    a.ip("addr add 10.65.1.5/32 dev lo");
    b.ip("addr add 10.65.2.5/32 dev lo");
    let ra = Running::start(
        &a,
        Config::default(),
        vxlan_node(
            "192.168.10.1/24",
            "10.65.1.0/26",
            "10.65.1.0",
            1,
            ("10.65.2.0/26", "192.168.10.2", "10.65.2.0", 2),
        ),
    );
    let rb = Running::start(
        &b,
        Config::default(),
        vxlan_node(
            "192.168.10.2/24",
            "10.65.2.0/26",
            "10.65.2.0",
            2,
            ("10.65.1.0/26", "192.168.10.1", "10.65.1.0", 1),
        ),
    );
    ra.wait_programmed(2, "node a", &a).await;
    rb.wait_programmed(2, "node b", &b).await;
    let tx_before = a.tx_packets("vxlan.calico");
    let ping = a.exec("ping -c 3 -i 0.2 -W 2 -I 10.65.1.5 10.65.2.5");
    let tx_after = a.tx_packets("vxlan.calico");
    assert!(
        ping.is_ok(),
        "ping failed: {ping:?}\n{}\n{}\n{}",
        a.routes_text(),
        b.routes_text(),
        a.ip("neigh show")
    );
    assert!(
        tx_after >= tx_before + 3,
        "vxlan.calico TX {tx_before} -> {tx_after}"
    );
    ra.stop().await;
    rb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_subnet_encapsulates_only_across_the_router() {
    if skip_without_root("cross_subnet") {
        return;
    }
    // a, b on 192.168.10.0/24 (bridge in the router namespace), c on 192.168.20.0/24.
    let r = Netns::new("xsub", "r");
    let a = Netns::new("xsub", "a");
    let b = Netns::new("xsub", "b");
    let c = Netns::new("xsub", "c");
    r.ip("link add br0 type bridge");
    r.ip("addr add 192.168.10.254/24 dev br0");
    r.ip("link set br0 up");
    r.exec("sysctl -qw net.ipv4.ip_forward=1").unwrap();
    for (i, ns) in [&a, &b].into_iter().enumerate() {
        r.ip(&format!(
            "link add p{i} type veth peer name eth0 netns {}",
            ns.name
        ));
        r.ip(&format!("link set p{i} master br0"));
        r.ip(&format!("link set p{i} up"));
    }
    r.ip(&format!(
        "link add pc type veth peer name eth0 netns {}",
        c.name
    ));
    r.ip("addr add 192.168.20.254/24 dev pc");
    r.ip("link set pc up");
    let nodes = [
        (
            &a,
            "192.168.10.1/24",
            "192.168.10.254",
            "10.65.1.0/26",
            "10.65.1.0",
            "10.65.1.5",
            1u8,
        ),
        (
            &b,
            "192.168.10.2/24",
            "192.168.10.254",
            "10.65.2.0/26",
            "10.65.2.0",
            "10.65.2.5",
            2,
        ),
        (
            &c,
            "192.168.20.1/24",
            "192.168.20.254",
            "10.65.3.0/26",
            "10.65.3.0",
            "10.65.3.5",
            3,
        ),
    ];
    for (ns, ip, gw, _, _, pod, _) in nodes {
        ns.ip(&format!("addr add {ip} dev eth0"));
        ns.ip("link set eth0 up");
        ns.ip(&format!("route add default via {gw}"));
        ns.ip(&format!("addr add {pod}/32 dev lo"));
    }
    let mut running = Vec::new();
    for (ns, ip, _, block, tunnel, _, m) in nodes {
        let remote = nodes
            .iter()
            .filter(|n| n.1 != ip)
            .map(|n| {
                rr(
                    n.3,
                    Encap::VxlanCrossSubnet,
                    vec![vx_hop(n.1.split('/').next().unwrap(), n.4, n.6)],
                )
            })
            .collect();
        let d = DesiredState {
            node_ipv4: Some(ip.parse().unwrap()),
            local_blocks: vec![block.parse().unwrap()],
            remote_routes: remote,
            vxlan_v4: Some(VxlanTunnel::calico(mac(m), Some(tunnel.parse().unwrap()))),
            ..Default::default()
        };
        running.push(Running::start(ns, Config::default(), d));
    }
    for (i, (ns, ..)) in nodes.iter().enumerate() {
        running[i].wait_programmed(3, "cross-subnet node", ns).await;
    }
    // Routes on a: b unencapsulated on eth0, c through the tunnel.
    let routes = a.dump_routes();
    let eth0 = a.ifindex("eth0");
    let vx = a.ifindex("vxlan.calico");
    assert_eq!(
        find(&routes, MAIN, "10.65.2.0/26", PROTO).and_then(|r| r.spec.clone()),
        Some(RouteSpec::Via(via("192.168.10.2", eth0, false))),
        "{}",
        a.routes_text()
    );
    assert_eq!(
        find(&routes, MAIN, "10.65.3.0/26", PROTO).and_then(|r| r.spec.clone()),
        Some(RouteSpec::Via(via("10.65.3.0", vx, true))),
        "{}",
        a.routes_text()
    );
    // Same subnet: no VXLAN packets.
    let t0 = a.tx_packets("vxlan.calico");
    let p = a.exec("ping -c 3 -i 0.2 -W 2 -I 10.65.1.5 10.65.2.5");
    let t1 = a.tx_packets("vxlan.calico");
    assert!(p.is_ok(), "same-subnet ping: {p:?}\n{}", a.routes_text());
    assert_eq!(t0, t1, "same-subnet traffic went through vxlan.calico");
    // Across the router: through the tunnel.
    let p = a.exec("ping -c 3 -i 0.2 -W 2 -I 10.65.1.5 10.65.3.5");
    let t2 = a.tx_packets("vxlan.calico");
    assert!(
        p.is_ok(),
        "cross-subnet ping: {p:?}\n{}\n{}",
        a.routes_text(),
        c.routes_text()
    );
    assert!(
        t2 >= t1 + 3,
        "cross-subnet traffic did not use vxlan.calico ({t1} -> {t2})"
    );
    for r in running {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_foreign_routes_left_alone() {
    if skip_without_root("drift") {
        return;
    }
    let ns = node_ns("drift", "n", "192.168.1.10/24", Some("fd00:1::10/64"));
    add_foreign(&ns);
    let mut d = full_state(true);
    d.remote_routes
        .retain(|r| r.dst.to_string() != "10.65.7.0/26");
    let run = Running::start(&ns, Config::default(), d);
    run.wait_programmed(8, "initial", &ns).await;
    let present = |dst: &str| find(&ns.dump_routes(), MAIN, dst, PROTO).is_some();

    // Someone deletes one of ours.
    let t = std::time::Instant::now();
    ns.ip("route del 10.65.1.0/26 proto 80");
    let back = wait_until_async(Duration::from_secs(10), || present("10.65.1.0/26")).await;
    assert!(
        back,
        "route not restored\n{:#?}\n{}",
        run.handle.status(),
        ns.routes_text()
    );
    eprintln!("drift repair: deleted route back after {:?}", t.elapsed());
    // Someone changes one of ours (keeps our protocol).
    ns.ip("route change 10.65.4.5/32 via 192.168.1.99 dev eth0 proto 80");
    let fixed = wait_until_async(Duration::from_secs(10), || {
        find(&ns.dump_routes(), MAIN, "10.65.4.5/32", PROTO).and_then(|r| r.spec.clone())
            == Some(RouteSpec::Via(via(
                "192.168.1.15",
                ns.ifindex("eth0"),
                false,
            )))
    })
    .await;
    assert!(fixed, "changed route not restored\n{}", ns.routes_text());
    // A foreign route appears next to ours, then a full resync runs: it stays.
    ns.ip("route add 10.65.9.0/26 via 192.168.1.1 proto static");
    let resyncs = run.handle.status().resyncs;
    run.handle.request_resync();
    assert!(
        wait_until_async(Duration::from_secs(10), || run.handle.status().resyncs
            > resyncs)
        .await
    );
    assert!(find(&ns.dump_routes(), MAIN, "10.65.9.0/26", 4).is_some());
    assert_foreign_intact(&ns, "after drift");
    assert!(
        run.handle.status().drift_repairs >= 2,
        "{:#?}",
        run.handle.status()
    );

    // The underlay goes down (the kernel flushes routes via it silently) and comes back.
    ns.ip("link set eth0 down");
    let gone = wait_until_async(Duration::from_secs(10), || !present("10.65.1.0/26")).await;
    assert!(gone, "{}", ns.routes_text());
    ns.ip("link set eth0 up");
    let back = wait_until_async(Duration::from_secs(10), || present("10.65.1.0/26")).await;
    assert!(
        back,
        "routes not back after underlay up\n{:#?}\n{}",
        run.handle.status(),
        ns.routes_text()
    );

    // The underlay is deleted and re-created (new ifindex): routes and vxlan.calico return.
    ns.ip("link del eth0");
    ns.ip("link add eth0 type veth peer name eth0p");
    ns.ip("link set eth0p up");
    ns.ip("addr add 192.168.1.10/24 dev eth0");
    ns.ip("-6 addr add fd00:1::10/64 dev eth0 nodad");
    ns.ip("link set eth0 up");
    let back = wait_until_async(Duration::from_secs(15), || {
        let r = ns.dump_routes();
        let eth0 = ns.ifindex("eth0");
        find(&r, MAIN, "10.65.1.0/26", PROTO).and_then(|r| r.spec.clone())
            == Some(RouteSpec::Via(via("192.168.1.11", eth0, false)))
            && find(&r, MAIN, "10.65.2.0/26", PROTO).is_some()
    })
    .await;
    assert!(
        back,
        "routes not back after underlay re-creation\n{:#?}\n{}",
        run.handle.status(),
        ns.routes_text()
    );
    // The VXLAN device is deleted by someone: it comes back with its L2 entries.
    ns.ip("link del vxlan.calico");
    let back = wait_until_async(Duration::from_secs(15), || {
        ns.try_ip("neigh show dev vxlan.calico")
            .is_ok_and(|n| n.contains("10.65.2.0 lladdr 66:ca:1e:00:00:02 PERMANENT"))
            && find(&ns.dump_routes(), MAIN, "10.65.2.0/26", PROTO).is_some()
    })
    .await;
    assert!(
        back,
        "vxlan.calico not restored\n{:#?}\n{}",
        run.handle.status(),
        ns.routes_text()
    );
    // Someone deletes our neighbour entry.
    ns.ip("neigh del 10.65.2.0 dev vxlan.calico");
    let back = wait_until_async(Duration::from_secs(10), || {
        ns.ip("neigh show dev vxlan.calico")
            .contains("10.65.2.0 lladdr")
    })
    .await;
    assert!(back, "neighbour not restored");
    // (The foreign routes via eth0 went with the old eth0: that is the kernel's doing.)
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_next_hop_is_retried_without_blocking_others() {
    if skip_without_root("retry") {
        return;
    }
    let ns = node_ns("retry", "n", "192.168.1.10/24", None);
    let d = DesiredState {
        node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
        local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
        remote_routes: vec![
            rr("10.65.1.0/26", Encap::None, vec![hop("192.168.1.11")]),
            // Not on any connected subnet yet.
            rr("10.65.2.0/26", Encap::None, vec![hop("172.31.0.2")]),
        ],
        ..Default::default()
    };
    let cfg = Config {
        retry_max: Duration::from_millis(500),
        ..Default::default()
    };
    let run = Running::start(&ns, cfg, d);
    run.wait_programmed(2, "reachable ones", &ns).await;
    let failed = wait_until_async(Duration::from_secs(5), || {
        run.handle.status().routes_failed == 1
    })
    .await;
    let st = run.handle.status();
    assert!(failed, "{st:#?}");
    assert!(st.failures[0].dst.to_string() == "10.65.2.0/26", "{st:#?}");
    eprintln!("reported failure: {}", st.failures[0].error);
    // The next hop becomes reachable: the retry succeeds.
    ns.ip("addr add 172.31.0.1/24 dev eth0");
    let ok = wait_until_async(Duration::from_secs(10), || {
        let s = run.handle.status();
        s.routes_programmed == 3 && s.routes_failed == 0
    })
    .await;
    assert!(ok, "{:#?}\n{}", run.handle.status(), ns.routes_text());
    run.stop().await;
}
