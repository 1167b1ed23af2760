//! IPAM on a real etcd: many allocators in separate clients, and an etcd restart in the middle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_ipam::check::CheckOptions;
use calyx_ipam::fixtures::{put_node, put_pool, put_reservation, set_pool_manual};
use calyx_ipam::{AllocationAttrs, AssignArgs, Family, Ipam};
use calyx_tests::etcd::Etcd;

async fn connect(endpoint: &str) -> EtcdStore {
    let config = EtcdConfig::from_endpoints(endpoint).unwrap();
    EtcdStore::connect(&config).await.unwrap()
}

fn args(handle: &str, node: &str) -> AssignArgs {
    AssignArgs::one(handle, node, Family::V4).with_attrs(AllocationAttrs::pod("default", handle))
}

const NODES: usize = 3;

async fn setup(endpoint: &str) -> Ipam<EtcdStore> {
    let store = connect(endpoint).await;
    put_pool(&store, "default-ipv4-ippool", "10.10.0.0/16", 26, "all()")
        .await
        .unwrap();
    for n in 0..NODES {
        put_node(&store, &format!("node{n}"), &[]).await.unwrap();
    }
    Ipam::new(store)
}

/// Asserts that every live handle holds exactly its address and that no address is held twice.
async fn assert_accounted(ipam: &Ipam<EtcdStore>, live: &HashMap<String, IpAddr>) {
    let mut owners: HashMap<IpAddr, &String> = HashMap::new();
    for (h, ip) in live {
        if let Some(other) = owners.insert(*ip, h) {
            panic!("{ip} given to both {h} and {other}");
        }
    }
    let show = ipam.show().await.unwrap();
    let in_use: u128 = show.pools.iter().map(|p| p.in_use).sum();
    for (h, ip) in live {
        assert_eq!(
            ipam.handle_addresses(h).await.unwrap(),
            vec![*ip],
            "handle {h}"
        );
    }
    println!("{} live handles, {} addresses in use", live.len(), in_use);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_four_allocators_each() {
    let Some(etcd) = Etcd::start("three_nodes_four_allocators_each") else {
        return;
    };
    let ipam = setup(etcd.endpoint()).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..NODES {
        for a in 0..4 {
            // Each allocator is its own process as far as etcd can tell: its own client.
            let mine = Ipam::new(connect(etcd.endpoint()).await);
            tasks.push(tokio::spawn(async move {
                let node = format!("node{n}");
                let mut live = BTreeMap::new();
                let mut handles = Vec::new();
                for i in 0..250 {
                    let h = format!("k8s-pod-network.n{n}-a{a}-{i}");
                    let ip = mine.assign(args(&h, &node)).await.unwrap()[0];
                    handles.push((h.clone(), ip));
                    live.insert(h, ip);
                }
                for (i, (h, ip)) in handles.iter().enumerate() {
                    if i % 2 == 0 {
                        let rel = mine.release_handle(h).await.unwrap();
                        assert_eq!(rel.len(), 1);
                        assert_eq!(rel[0].ip, *ip);
                        live.remove(h);
                    }
                }
                for i in 250..375 {
                    let h = format!("k8s-pod-network.n{n}-a{a}-{i}");
                    let ip = mine.assign(args(&h, &node)).await.unwrap()[0];
                    live.insert(h, ip);
                }
                live
            }));
        }
    }
    let mut live = HashMap::new();
    for t in tasks {
        live.extend(t.await.unwrap());
    }
    println!(
        "12 allocators: 3000 assigns + 1500 releases + 1500 assigns in {:?}",
        started.elapsed()
    );
    assert_eq!(live.len(), NODES * 4 * 250);
    assert_accounted(&ipam, &live).await;
    let report = ipam
        .check(&CheckOptions {
            fix: false,
            live_handles: Some(live.keys().cloned().collect()),
            workload_leaks: false,
        })
        .await
        .unwrap();
    println!("{}", report.summary());
    assert!(report.is_clean(), "{report:#?}");
    // Addresses stayed on their nodes: nobody needed to borrow from a /16.
    assert!(report.borrowed.is_empty(), "{:?}", report.borrowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_restart_in_the_middle() {
    let Some(mut etcd) = Etcd::start("etcd_restart_in_the_middle") else {
        return;
    };
    let endpoint = etcd.endpoint().to_string();
    let ipam = setup(&endpoint).await;
    let mut tasks = Vec::new();
    for n in 0..NODES {
        for a in 0..2 {
            let mine = Ipam::new(connect(&endpoint).await);
            tasks.push(tokio::spawn(async move {
                let node = format!("node{n}");
                let mut live = HashMap::new();
                let mut abandoned = Vec::new();
                let mut errors = 0;
                for i in 0..150 {
                    let h = format!("k8s-pod-network.n{n}-a{a}-{i}");
                    if i % 10 == 5 {
                        // An interrupted call: the caller gives up at once and never retries.
                        // Whether the write happened is unknown; check and gc find out.
                        let _ = tokio::time::timeout(
                            Duration::from_micros(300),
                            mine.assign(args(&h, &node)),
                        )
                        .await;
                        abandoned.push(h);
                        continue;
                    }
                    // Like a CNI runtime: retry the same handle until it works (bounded).
                    let mut got = None;
                    for _ in 0..20 {
                        match mine.assign(args(&h, &node)).await {
                            Ok(ips) => {
                                got = Some(ips[0]);
                                break;
                            }
                            Err(e) => {
                                errors += 1;
                                eprintln!("assign {h}: {e} (retrying)");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    let ip = got.unwrap_or_else(|| panic!("{h} never got an address"));
                    live.insert(h, ip);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (live, abandoned, errors)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart();
        etcd
    })
    .await
    .unwrap();
    println!("etcd restarted");
    let mut live = HashMap::new();
    let mut abandoned = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, ab, e) = t.await.unwrap();
        live.extend(l);
        abandoned.extend(ab);
        errors += e;
    }
    println!(
        "{} live, {} abandoned, {} errors seen by callers",
        live.len(),
        abandoned.len(),
        errors
    );
    assert_accounted(&ipam, &live).await;

    let live_set: HashSet<String> = live.keys().cloned().collect();
    let opts = CheckOptions {
        fix: false,
        live_handles: Some(live_set.clone()),
        workload_leaks: false,
    };
    let report = ipam.check(&opts).await.unwrap();
    println!("{}", report.summary());
    // Only abandoned calls can have leaked, and nothing else is wrong.
    assert!(report.allocations_without_handle.is_empty(), "{report:#?}");
    assert!(report.handle_mismatches.is_empty(), "{report:#?}");
    assert!(report.affinity_mismatches.is_empty(), "{report:#?}");
    assert!(report.broken_blocks.is_empty(), "{report:#?}");
    let abandoned_set: HashSet<&String> = abandoned.iter().collect();
    for a in &report.not_live {
        assert!(abandoned_set.contains(a.handle.as_ref().unwrap()), "{a:?}");
    }
    let leaked = report.not_live.len();
    // gc frees them only on the second sighting.
    let first = ipam
        .gc(&live_set, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(first.released.is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = ipam
        .gc(&live_set, Duration::from_millis(100))
        .await
        .unwrap();
    println!(
        "gc: {} leaked addresses found by check, {} released by gc",
        leaked,
        second.released.len()
    );
    assert_eq!(second.released.len(), leaked);
    let after = ipam.check(&opts).await.unwrap();
    assert!(after.is_clean(), "{after:#?}");
    assert_accounted(&ipam, &live).await;
    drop(etcd);
}

/// A `Manual` pool on etcd: used only by requests that name it, also by a second client whose
/// cache holds the node's block of that pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_pool_only_by_name() {
    let Some(etcd) = Etcd::start("manual_pool_only_by_name") else {
        return;
    };
    let ipam = setup(etcd.endpoint()).await;
    put_pool(ipam.store(), "manual", "10.99.0.0/24", 26, "all()")
        .await
        .unwrap();
    set_pool_manual(ipam.store(), "manual", true).await.unwrap();
    let mut named = args("named", "node0");
    named.pools = Some(vec!["10.99.0.0/24".to_string()]);
    let m = ipam.assign(named).await.unwrap();
    assert!(m[0].to_string().starts_with("10.99.0."), "{m:?}");
    let other = Ipam::new(connect(etcd.endpoint()).await);
    for i in 0..20 {
        let ip = other.assign(args(&format!("h{i}"), "node0")).await.unwrap()[0];
        assert!(ip.to_string().starts_with("10.10."), "{ip}");
    }
    let b = other
        .ensure_block("node1", Family::V4)
        .await
        .unwrap()
        .unwrap();
    assert!(b.to_string().starts_with("10.10."), "{b}");
}

/// IPReservation on etcd: a pool whose first addresses are reserved never hands them out, to
/// allocators in several clients on several nodes, until the unreserved rest is used up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_first_addresses_never_handed_out() {
    let Some(etcd) = Etcd::start("reserved_first_addresses_never_handed_out") else {
        return;
    };
    let store = connect(etcd.endpoint()).await;
    put_pool(&store, "small", "10.20.0.0/26", 28, "all()")
        .await
        .unwrap();
    put_reservation(&store, "first", &["10.20.0.0/29", "10.20.0.8"])
        .await
        .unwrap();
    for n in 0..2 {
        put_node(&store, &format!("node{n}"), &[]).await.unwrap();
    }
    let mut got = HashSet::new();
    let clients = [
        Ipam::new(connect(etcd.endpoint()).await),
        Ipam::new(connect(etcd.endpoint()).await),
    ];
    // 64 addresses, 9 reserved: 55 to hand out, then nothing.
    for i in 0..55 {
        let ipam = &clients[i % 2];
        let ip = ipam
            .assign(args(&format!("h{i}"), &format!("node{}", i % 2)))
            .await
            .unwrap()[0];
        let IpAddr::V4(v4) = ip else { panic!("{ip}") };
        assert!(v4.octets()[3] > 8, "reserved {ip} handed out");
        assert!(got.insert(ip), "{ip} twice");
    }
    assert!(clients[0].assign(args("one-more", "node0")).await.is_err());
}
