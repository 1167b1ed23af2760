//! Real-kernel tests of the live settings ([`LiveConfig`]): FelixConfiguration's
//! `deviceRouteProtocol`, tunnel MTUs and `routeRefreshInterval` changed while the reconciler
//! runs (root only; they skip with a printed reason otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use calyx_felix::*;
use common::*;

/// The IPv4 part of [`full_state`].
fn v4_state() -> DesiredState {
    let mut d = full_state(false);
    d.node_ipv6 = None;
    d.remote_routes.retain(|r| r.dst.addr().is_ipv4());
    d.local_blocks.retain(|b| b.addr().is_ipv4());
    d
}

#[test]
fn route_protocol_and_mtu_change_live() {
    if skip_without_root("live_proto") {
        return;
    }
    let ns = node_ns("liveproto", "n", "192.168.1.10/24", None);
    ns.ip("route add 10.65.7.0/26 via 192.168.1.1 proto static metric 50");
    let mut rec = ns.reconciler(Config::default());
    let d = v4_state();
    let ours = d.remote_routes.len() + d.local_blocks.len();
    rec.set_desired(d);
    rec.reconcile_once();
    let count = |proto: u8| {
        ns.dump_routes()
            .iter()
            .filter(|r| r.key.table == MAIN && r.protocol == proto)
            .count()
    };
    assert_eq!(count(80), ours, "{}", ns.routes_text());
    assert!(ns.ip("link show dev vxlan.calico").contains("mtu 1450"));
    let vxlan_index = ns.ifindex("vxlan.calico");

    rec.handle().set_live(LiveConfig {
        route_protocol: 99,
        vxlan_mtu: Some(1400),
        ..Config::default().live()
    });
    rec.reconcile_once();
    let text = ns.routes_text();
    assert_eq!(count(80), 0, "old protocol routes left:\n{text}");
    assert_eq!(count(99), ours, "{text}");
    // Moved in place: one route per destination, none doubled.
    for r in &v4_state().remote_routes {
        let dst = r.dst.to_string();
        let n = ns
            .dump_routes()
            .iter()
            .filter(|p| p.key.table == MAIN && p.key.dst == r.dst && p.protocol == 99)
            .count();
        assert_eq!(n, 1, "{dst}:\n{text}");
    }
    // The foreign route is untouched.
    assert!(
        find(&ns.dump_routes(), MAIN, "10.65.7.0/26", 4).is_some(),
        "{text}"
    );
    // MTU set in place.
    assert!(ns.ip("link show dev vxlan.calico").contains("mtu 1400"));
    assert_eq!(ns.ifindex("vxlan.calico"), vxlan_index);
    // Back to the automatic MTU.
    rec.handle().set_live(LiveConfig {
        route_protocol: 99,
        ..Config::default().live()
    });
    rec.reconcile_once();
    assert!(ns.ip("link show dev vxlan.calico").contains("mtu 1450"));
    assert_eq!(count(99), ours);

    // A restart after the protocol changed: a new reconciler starts with the default (99
    // here), is told 80 before its first pass, and still moves the routes of 99.
    drop(rec);
    let mut rec = ns.reconciler(Config {
        route_protocol: 99,
        ..Config::default()
    });
    rec.handle().set_live(Config::default().live());
    rec.set_desired(v4_state());
    rec.reconcile_once();
    assert_eq!(count(99), 0, "{}", ns.routes_text());
    assert_eq!(count(80), ours, "{}", ns.routes_text());
}

#[test]
fn ipip_mtu_changes_live() {
    if skip_without_root("live_ipip_mtu") {
        return;
    }
    let ns = node_ns("liveipip", "n", "192.168.1.10/24", None);
    if let Err(why) = ipip_supported(&ns) {
        eprintln!("SKIP live_ipip_mtu: {why}");
        return;
    }
    let mut rec = ns.reconciler(Config::default());
    let mut d = v4_state();
    d.vxlan_v4 = None;
    d.remote_routes.retain(|r| !r.encap.uses_vxlan());
    d.ipip = Some(IpipTunnel {
        address: Some("10.65.0.1".parse().unwrap()),
    });
    rec.set_desired(d);
    rec.reconcile_once();
    assert!(ns.ip("link show dev tunl0").contains("mtu 1480"));
    rec.handle().set_live(LiveConfig {
        ipip_mtu: Some(1300),
        ..Config::default().live()
    });
    rec.reconcile_once();
    assert!(ns.ip("link show dev tunl0").contains("mtu 1300"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_refresh_interval_changes_live() {
    if skip_without_root("live_refresh") {
        return;
    }
    let ns = node_ns("liverefresh", "n", "192.168.1.10/24", None);
    let cfg = Config {
        route_refresh_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let d = v4_state();
    let ours = d.remote_routes.len() + d.local_blocks.len();
    let run = Running::start(&ns, cfg, d);
    run.wait_programmed(ours, "start", &ns).await;
    let before = run.handle.status().resyncs;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        run.handle.status().resyncs <= before + 1,
        "no periodic resync at 3600 s"
    );
    run.handle.set_live(LiveConfig {
        route_refresh_interval: Duration::from_millis(200),
        ..Config::default().live()
    });
    let ok = wait_until_async(Duration::from_secs(10), || {
        run.handle.status().resyncs >= before + 5
    })
    .await;
    assert!(ok, "resyncs: {} from {before}", run.handle.status().resyncs);
    run.stop().await;
}

#[test]
fn route_source_address_changes_live() {
    if skip_without_root("live_src") {
        return;
    }
    let ns = node_ns("livesrc", "n", "192.168.1.10/24", None);
    ns.ip("addr add 192.168.1.20/32 dev eth0");
    let mut rec = ns.reconciler(Config::default());
    let d = v4_state();
    let remote = d.remote_routes.len();
    rec.set_desired(d);
    rec.reconcile_once();
    let with_src = |src: &str| {
        ns.ip("route show proto 80")
            .lines()
            .filter(|l| l.contains(&format!("src {src}")))
            .count()
    };
    assert_eq!(with_src("192.168.1.20"), 0);
    let live = LiveConfig {
        route_src_v4: Some("192.168.1.20".parse().unwrap()),
        ..Config::default().live()
    };
    rec.handle().set_live(live);
    let stats = rec.reconcile_once();
    // Every unicast route rewritten in place with the source; blackholes have none.
    assert_eq!(
        with_src("192.168.1.20"),
        remote,
        "{stats:?}\n{}",
        ns.routes_text()
    );
    assert_eq!(stats.replaced, remote, "{stats:?}");
    // Nothing more to do: what the kernel reports back matches what was written.
    let again = rec.reconcile_once();
    assert_eq!(again.replaced + again.added, 0, "{again:?}");
    // A route whose source is changed under us is repaired.
    ns.ip("route replace 10.65.1.0/26 via 192.168.1.11 dev eth0 proto 80");
    rec.reconcile_once();
    assert_eq!(with_src("192.168.1.20"), remote, "{}", ns.routes_text());
    // Unset: the sources go.
    rec.handle().set_live(Config::default().live());
    rec.reconcile_once();
    assert_eq!(with_src("192.168.1.20"), 0, "{}", ns.routes_text());
    assert_eq!(
        ns.ip("route show proto 80")
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .count(),
        remote + 1,
        "one blackhole for the local block\n{}",
        ns.routes_text()
    );
}
