//! Real-kernel tests of the delta path (`update_routes`, `set_host`, `reconcile_updates`) in
//! network namespaces created by the tests (root only; they skip with a printed reason
//! otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use calyx_felix::route::RouteSpec;
use calyx_felix::*;
use common::*;

fn host_prefix(i: usize) -> ipnet::IpNet {
    let a = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 128, 0, 0)) + i as u32);
    ipnet::IpNet::new(a.into(), 32).unwrap()
}

fn plain_route(i: usize, gw: &str) -> RemoteRoute {
    RemoteRoute {
        dst: host_prefix(i),
        encap: Encap::None,
        hops: vec![hop(gw)],
    }
}

/// Our routes in the main table, by destination.
fn our_routes(ns: &Netns) -> std::collections::HashMap<ipnet::IpNet, Option<RouteSpec>> {
    ns.dump_routes()
        .into_iter()
        .filter(|r| r.protocol == PROTO && r.key.table == MAIN)
        .map(|r| (r.key.dst, r.spec))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_routes_as_deltas_then_one_change_then_all_removed() {
    if skip_without_root("deltas") {
        return;
    }
    const N: usize = 100_000;
    const BATCH: usize = 5_000;
    let ns = node_ns("deltas", "n", "192.168.1.10/24", None);
    let host = HostState {
        node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
        local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
        vxlan_v4: Some(VxlanTunnel::calico(
            mac(1),
            Some("10.65.0.0".parse().unwrap()),
        )),
        ..Default::default()
    };
    // A queue smaller than the load, so that the producer really waits for room.
    let cfg = Config {
        update_queue_limit: 2 * BATCH,
        ..Default::default()
    };
    let run = Running::start(&ns, cfg, DesiredState::default());
    run.handle.set_host(host);
    let eth0 = ns.ifindex("eth0");
    let st = || run.handle.status();

    // N routes arrive in batches.
    let t = std::time::Instant::now();
    for start in (0..N).step_by(BATCH) {
        let batch = (start..start + BATCH)
            .map(|i| RouteUpdate::Upsert(plain_route(i, "192.168.1.11")))
            .collect();
        run.handle.update_routes(batch).await.unwrap();
    }
    let ok = wait_until_async(Duration::from_secs(120), || {
        let s = st();
        s.routes_programmed == N + 1 && s.routes_desired == N + 1 && s.routes_pending == 0
    })
    .await;
    assert!(ok, "{:#?}", st());
    let s = st();
    eprintln!(
        "{N} routes as deltas: programmed after {:?} (debug build; {} full resyncs, {} overruns)",
        t.elapsed(),
        s.resyncs,
        s.notification_overruns
    );
    let kernel = our_routes(&ns);
    assert_eq!(kernel.len(), N + 1);
    for i in [0, 1, N / 2, N - 1] {
        assert_eq!(
            kernel[&host_prefix(i)],
            Some(RouteSpec::Via(via("192.168.1.11", eth0, false))),
            "route {i}"
        );
    }
    assert_eq!(
        kernel[&"10.65.0.0/26".parse().unwrap()],
        Some(RouteSpec::Blackhole)
    );
    // N upserts, and the empty full state `Running::start` set.
    assert_eq!(st().route_updates, N as u64 + 1);

    // One change: one write, nothing else.
    let writes = st().route_writes;
    let changed = host_prefix(777);
    run.handle
        .update_routes(vec![RouteUpdate::Upsert(plain_route(777, "192.168.1.12"))])
        .await
        .unwrap();
    let want = Some(Some(RouteSpec::Via(via("192.168.1.12", eth0, false))));
    let ok = wait_until_async(Duration::from_secs(20), || {
        find(&ns.dump_routes(), MAIN, &changed.to_string(), PROTO).map(|r| r.spec.clone()) == want
    })
    .await;
    assert!(ok, "{:#?}", st());
    let s = st();
    assert_eq!(s.route_writes - writes, 1, "{s:#?}");
    assert_eq!(s.routes_programmed, N + 1, "{s:#?}");

    // A full resync from the producer with one difference: again one write.
    let writes = st().route_writes;
    let all: Vec<RemoteRoute> = (0..N)
        .map(|i| {
            plain_route(
                i,
                if i == 778 {
                    "192.168.1.13"
                } else {
                    "192.168.1.11"
                },
            )
        })
        .collect();
    run.handle
        .update_routes(vec![RouteUpdate::ReplaceAll(all)])
        .await
        .unwrap();
    let ok = wait_until_async(Duration::from_secs(30), || {
        let s = st();
        s.route_writes > writes && s.routes_programmed == N + 1
    })
    .await;
    assert!(ok, "{:#?}", st());
    let kernel = our_routes(&ns);
    assert_eq!(
        kernel[&host_prefix(777)],
        Some(RouteSpec::Via(via("192.168.1.11", eth0, false))),
        "the replace-all set 777 back"
    );
    assert_eq!(
        kernel[&host_prefix(778)],
        Some(RouteSpec::Via(via("192.168.1.13", eth0, false)))
    );
    // 777 back and 778 changed: two writes.
    assert_eq!(st().route_writes - writes, 2, "{:#?}", st());

    // VXLAN routes through one node share one neighbour entry, which goes with the last.
    let vx = |d: &str| {
        RouteUpdate::Upsert(rr(
            d,
            Encap::Vxlan,
            vec![vx_hop("192.168.1.40", "10.65.4.0", 4)],
        ))
    };
    run.handle
        .update_routes(vec![vx("10.65.4.0/26"), vx("10.65.5.0/26")])
        .await
        .unwrap();
    let neigh = || ns.ip("neigh show dev vxlan.calico");
    let ok = wait_until_async(Duration::from_secs(20), || {
        neigh().contains("10.65.4.0 lladdr 66:ca:1e:00:00:04 PERMANENT")
            && st().routes_programmed == N + 3
    })
    .await;
    assert!(ok, "{}\n{:#?}", neigh(), st());
    run.handle
        .update_routes(vec![RouteUpdate::Remove("10.65.4.0/26".parse().unwrap())])
        .await
        .unwrap();
    let ok = wait_until_async(Duration::from_secs(20), || st().routes_desired == N + 2).await;
    assert!(ok, "{:#?}", st());
    assert!(
        neigh().contains("10.65.4.0 lladdr"),
        "still used: {}",
        neigh()
    );
    run.handle
        .update_routes(vec![RouteUpdate::Remove("10.65.5.0/26".parse().unwrap())])
        .await
        .unwrap();
    let ok = wait_until_async(Duration::from_secs(20), || !neigh().contains("10.65.4.0")).await;
    assert!(ok, "neighbour not removed: {}\n{:#?}", neigh(), st());

    // Everything removed, in batches: only the local block stays.
    for start in (0..N).step_by(BATCH) {
        let batch = (start..start + BATCH)
            .map(|i| RouteUpdate::Remove(host_prefix(i)))
            .collect();
        run.handle.update_routes(batch).await.unwrap();
    }
    let ok = wait_until_async(Duration::from_secs(120), || {
        let s = st();
        s.routes_desired == 1 && s.routes_programmed == 1 && s.routes_pending == 0
    })
    .await;
    assert!(ok, "{:#?}", st());
    let ok = wait_until_async(Duration::from_secs(20), || our_routes(&ns).len() == 1).await;
    assert!(ok, "left over: {}", our_routes(&ns).len());
    assert_eq!(st().routes_failed, 0, "{:#?}", st());

    // Once stopped, updates fail instead of waiting.
    let handle = run.handle.clone();
    run.stop().await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        handle.update_routes(vec![RouteUpdate::Remove(host_prefix(0))]),
    )
    .await;
    assert!(matches!(r, Ok(Err(Error::Stopped))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_and_l2_stay_right_under_deltas() {
    if skip_without_root("delta_status") {
        return;
    }
    let ns = node_ns("dstatus", "n", "192.168.1.10/24", None);
    ns.ip("route add 10.65.7.0/26 via 192.168.1.1 proto static");
    let mut host = HostState {
        node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
        local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
        ..Default::default()
    };
    let cfg = Config {
        retry_max: Duration::from_millis(300),
        ..Default::default()
    };
    let run = Running::start(&ns, cfg, DesiredState::default());
    run.handle.set_host(host.clone());
    let st = || run.handle.status();
    let eth0 = ns.ifindex("eth0");
    let send = |u: Vec<RouteUpdate>| {
        let h = run.handle.clone();
        async move { h.update_routes(u).await.unwrap() }
    };
    let vx_route = |m: u8| {
        rr(
            "10.65.2.0/26",
            Encap::Vxlan,
            vec![vx_hop("192.168.1.12", "10.65.2.0", m)],
        )
    };
    send(vec![
        RouteUpdate::Upsert(rr("10.65.1.0/26", Encap::None, vec![hop("192.168.1.11")])),
        // Held by the foreign route: fails, retried.
        RouteUpdate::Upsert(rr("10.65.7.0/26", Encap::None, vec![hop("192.168.1.17")])),
        // No vxlan.calico yet: blocked.
        RouteUpdate::Upsert(vx_route(2)),
        // Hidden by the local block.
        RouteUpdate::Upsert(rr("10.65.0.0/26", Encap::None, vec![hop("192.168.1.13")])),
    ])
    .await;
    let ok = wait_until_async(Duration::from_secs(20), || {
        let s = st();
        (
            s.routes_desired,
            s.routes_programmed,
            s.routes_failed,
            s.routes_pending,
        ) == (3, 2, 1, 1)
    })
    .await;
    assert!(ok, "{:#?}", st());
    let s = st();
    assert_eq!(s.failures[0].dst.to_string(), "10.65.7.0/26", "{s:#?}");
    assert!(
        s.blocked
            .iter()
            .any(|(d, w)| d.to_string() == "10.65.2.0/26" && w.contains("vxlan.calico")),
        "{s:#?}"
    );
    assert_eq!(
        our_routes(&ns)[&"10.65.0.0/26".parse().unwrap()],
        Some(RouteSpec::Blackhole)
    );

    // The failing route is withdrawn: no failure left.
    send(vec![RouteUpdate::Remove("10.65.7.0/26".parse().unwrap())]).await;
    let ok = wait_until_async(Duration::from_secs(20), || {
        let s = st();
        (
            s.routes_desired,
            s.routes_programmed,
            s.routes_failed,
            s.routes_pending,
        ) == (2, 2, 0, 1)
    })
    .await;
    assert!(ok, "{:#?}", st());

    // VXLAN arrives (an Env change): the blocked route goes in with its L2 entries.
    host.vxlan_v4 = Some(VxlanTunnel::calico(
        mac(1),
        Some("10.65.0.0".parse().unwrap()),
    ));
    run.handle.set_host(host.clone());
    let neigh = || ns.try_ip("neigh show dev vxlan.calico").unwrap_or_default();
    let ok = wait_until_async(Duration::from_secs(20), || {
        let s = st();
        (
            s.routes_desired,
            s.routes_programmed,
            s.routes_failed,
            s.routes_pending,
        ) == (3, 3, 0, 0)
            && neigh().contains("10.65.2.0 lladdr 66:ca:1e:00:00:02 PERMANENT")
    })
    .await;
    assert!(ok, "{}\n{:#?}", neigh(), st());

    // The node's VTEP MAC changes, its tunnel IP does not: no route changes, the entry does.
    send(vec![RouteUpdate::Upsert(vx_route(9))]).await;
    let ok = wait_until_async(Duration::from_secs(20), || {
        neigh().contains("10.65.2.0 lladdr 66:ca:1e:00:00:09 PERMANENT")
    })
    .await;
    assert!(ok, "{}\n{:#?}", neigh(), st());
    let fdb = ns.exec("bridge fdb show dev vxlan.calico").unwrap();
    assert!(
        fdb.contains("66:ca:1e:00:00:09 dst 192.168.1.12") && !fdb.contains("66:ca:1e:00:00:02"),
        "{fdb}"
    );

    // The local block goes: the remote route it hid takes its place.
    host.local_blocks.clear();
    run.handle.set_host(host);
    let want = Some(RouteSpec::Via(via("192.168.1.13", eth0, false)));
    let ok = wait_until_async(Duration::from_secs(20), || {
        our_routes(&ns).get(&"10.65.0.0/26".parse().unwrap()) == Some(&want)
    })
    .await;
    assert!(ok, "{}", ns.routes_text());
    let s = st();
    assert_eq!(
        (
            s.routes_desired,
            s.routes_programmed,
            s.routes_failed,
            s.routes_pending
        ),
        (3, 3, 0, 0),
        "{s:#?}"
    );
    run.stop().await;
}

#[test]
fn blocking_incremental_pass_writes_only_the_change() {
    if skip_without_root("blocking_updates") {
        return;
    }
    let ns = node_ns("bupd", "n", "192.168.1.10/24", Some("fd00:1::10/64"));
    let mut rec = ns.reconciler(Config::default());
    let mut d = full_state(true);
    d.remote_routes
        .retain(|r| r.dst.to_string() != "10.65.7.0/26");
    rec.set_desired(d);
    let first = rec.reconcile_once();
    assert_eq!(first.added, 8, "{first:?}");
    let eth0 = ns.ifindex("eth0");
    let stats = rec.reconcile_updates(vec![
        RouteUpdate::Upsert(rr("10.65.4.5/32", Encap::None, vec![hop("192.168.1.16")])),
        RouteUpdate::Remove("10.65.1.0/26".parse().unwrap()),
        RouteUpdate::Upsert(rr("10.65.8.0/26", Encap::None, vec![hop("192.168.1.18")])),
        // Unchanged: no write.
        RouteUpdate::Upsert(rr("fd00:10::40/122", Encap::None, vec![hop("fd00:1::11")])),
    ]);
    assert_eq!(
        (stats.added, stats.replaced, stats.deleted, stats.failed),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    let routes = our_routes(&ns);
    assert_eq!(
        routes[&"10.65.4.5/32".parse().unwrap()],
        Some(RouteSpec::Via(via("192.168.1.16", eth0, false)))
    );
    assert!(!routes.contains_key(&"10.65.1.0/26".parse().unwrap()));
    assert!(routes.contains_key(&"10.65.8.0/26".parse().unwrap()));
    let st = rec.status();
    assert_eq!((st.routes_desired, st.routes_programmed), (8, 8), "{st:#?}");
    // Nothing queued: nothing to do.
    let idle = rec.reconcile_updates(Vec::new());
    assert_eq!(idle.added + idle.replaced + idle.deleted, 0, "{idle:?}");
}
