//! IPAM behaviour on the in-memory store: assign, idempotency, claim, borrow, strict affinity,
//! release, node removal, specific addresses, pool selection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use calyx_datastore::store::memory::MemoryStore;
use calyx_datastore::store::Store;
use calyx_ipam::fixtures::{
    delete_node, put_node, put_pool, put_reservation, set_pool_disabled, set_pool_manual,
};
use calyx_ipam::model::{affinity_key, block_key, handle_key};
use calyx_ipam::{AllocationAttrs, AssignArgs, Family, Ipam, IpamError, TunnelKind};

async fn setup(pool: &str, block: u8) -> Ipam<MemoryStore> {
    let store = MemoryStore::new();
    put_pool(&store, "pool", pool, block, "all()")
        .await
        .unwrap();
    for n in ["node1", "node2"] {
        put_node(&store, n, &[]).await.unwrap();
    }
    Ipam::new(store)
}

fn args(handle: &str, node: &str) -> AssignArgs {
    AssignArgs::one(handle, node, Family::V4).with_attrs(AllocationAttrs::pod("default", handle))
}

#[tokio::test]
async fn assign_claims_a_block_and_is_idempotent() {
    let ipam = setup("10.0.0.0/24", 26).await;
    let a = ipam.assign(args("h1", "node1")).await.unwrap();
    assert_eq!(a.len(), 1);
    let blocks = ipam.node_blocks("node1").await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].cidr.contains(&a[0]));
    // Retried with the same handle: same address, nothing new allocated.
    let again = ipam.assign(args("h1", "node1")).await.unwrap();
    assert_eq!(a, again);
    // From a fresh IPAM (another process, cold cache): same again.
    let other = Ipam::from_arc(Arc::clone(&ipam_store(&ipam)));
    assert_eq!(other.assign(args("h1", "node1")).await.unwrap(), a);
    let b = ipam.assign(args("h2", "node1")).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(ipam.node_blocks("node1").await.unwrap()[0].in_use, 2);
    assert!(ipam.store().get(&handle_key("h1")).await.unwrap().is_some());
}

fn ipam_store(ipam: &Ipam<MemoryStore>) -> Arc<MemoryStore> {
    // Tests share one store between two Ipam values through a clone of the Arc.
    ipam.store_arc()
}

#[tokio::test]
async fn many_concurrent_assigns_get_distinct_addresses() {
    let ipam = setup("10.0.0.0/22", 26).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ipam = ipam.clone();
        tasks.push(tokio::spawn(async move {
            ipam.assign(args(&format!("h{i}"), "node1")).await.unwrap()
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for ip in t.await.unwrap() {
            assert!(seen.insert(ip), "{ip} twice");
        }
    }
    assert_eq!(seen.len(), 200);
    // 200 addresses in /26 blocks: 4 blocks, all affine to node1.
    let blocks = ipam.node_blocks("node1").await.unwrap();
    assert_eq!(blocks.len(), 4);
    assert_eq!(blocks.iter().map(|b| b.in_use).sum::<usize>(), 200);
    assert!(ipam.check(&Default::default()).await.unwrap().is_clean());
}

#[tokio::test]
async fn borrowing_and_strict_affinity() {
    // One /26 block in the pool: node1 takes it, node2 must borrow.
    let ipam = setup("10.0.0.0/26", 26).await;
    ipam.assign(args("a", "node1")).await.unwrap();
    let b = ipam.assign(args("b", "node2")).await.unwrap();
    assert!(b[0].to_string().starts_with("10.0.0."));
    let report = ipam.check(&Default::default()).await.unwrap();
    assert_eq!(report.borrowed.len(), 1);
    assert_eq!(report.borrowed[0].ip, b[0]);
    assert!(report.is_clean(), "{report:?}");

    ipam.configure(Some(true), None, None).await.unwrap();
    let err = ipam.assign(args("c", "node2")).await.unwrap_err();
    match &err {
        IpamError::Exhausted { reason, .. } => assert!(reason.contains("strictAffinity"), "{err}"),
        other => panic!("unexpected {other:?}"),
    }
    // node1 still allocates from its own block.
    ipam.assign(args("d", "node1")).await.unwrap();
}

#[tokio::test]
async fn small_pool_exhausted_by_one_node() {
    let ipam = setup("10.0.0.0/28", 30).await;
    // 16 addresses in 4 blocks; node1 takes them all.
    let mut all = Vec::new();
    for i in 0..16 {
        all.extend(ipam.assign(args(&format!("h{i}"), "node1")).await.unwrap());
    }
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 16);
    let err = ipam.assign(args("x", "node2")).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("borrow"), "{err}");
    // A retried assign of a handle that holds its address gets it back, full pool or not
    // (from either node: the second try of an ADD may run anywhere the first one did not
    // finish; proptest found the full-pool case answering "exhausted").
    for node in ["node1", "node2"] {
        assert_eq!(
            ipam.assign(args("h5", node)).await.unwrap(),
            vec![all[5]],
            "{node}"
        );
    }
    // Freeing one lets node2 borrow it.
    ipam.release_ip(all[3]).await.unwrap().unwrap();
    assert_eq!(ipam.assign(args("x", "node2")).await.unwrap(), vec![all[3]]);
}

#[tokio::test]
async fn max_blocks_per_host_then_borrow() {
    let ipam = setup("10.0.0.0/28", 30).await;
    ipam.configure(None, Some(1), None).await.unwrap();
    for i in 0..2 {
        ipam.assign(args(&format!("n2-{i}"), "node2"))
            .await
            .unwrap();
    }
    for i in 0..5 {
        ipam.assign(args(&format!("n1-{i}"), "node1"))
            .await
            .unwrap();
    }
    // node1 filled its one block, then borrowed from node2's instead of claiming another.
    assert_eq!(ipam.node_blocks("node1").await.unwrap().len(), 1);
    let report = ipam.check(&Default::default()).await.unwrap();
    assert_eq!(report.borrowed.len(), 1);
    assert_eq!(report.borrowed[0].used_by, "node1");
}

#[tokio::test]
async fn release_by_handle_and_ip() {
    let ipam = setup("10.0.0.0/24", 26).await;
    let mut a = args("multi", "node1");
    a.count = 3;
    let ips = ipam.assign(a.clone()).await.unwrap();
    assert_eq!(ips.len(), 3);
    assert_eq!(ipam.assign(a).await.unwrap(), ips);
    let one = ipam.release_ip(ips[0]).await.unwrap().unwrap();
    assert_eq!(one.handle.as_deref(), Some("multi"));
    assert!(ipam.release_ip(ips[0]).await.unwrap().is_none());
    let rest = ipam.release_handle("multi").await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(ipam
        .store()
        .get(&handle_key("multi"))
        .await
        .unwrap()
        .is_none());
    assert!(ipam.release_handle("multi").await.unwrap().is_empty());
    // node1 exists: its empty block stays.
    assert_eq!(ipam.node_blocks("node1").await.unwrap().len(), 1);
    assert!(ipam.check(&Default::default()).await.unwrap().is_clean());
}

#[tokio::test]
async fn empty_block_of_a_gone_node_is_deleted() {
    let ipam = setup("10.0.0.0/24", 26).await;
    let ip = ipam.assign(args("h", "node1")).await.unwrap()[0];
    let cidr = ipam.node_blocks("node1").await.unwrap()[0].cidr;
    delete_node(ipam.store(), "node1").await.unwrap();
    ipam.release_ip(ip).await.unwrap().unwrap();
    assert!(ipam.store().get(&block_key(&cidr)).await.unwrap().is_none());
    assert!(ipam
        .store()
        .get(&affinity_key("node1", &cidr))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn release_node_frees_everything_of_the_node() {
    let ipam = setup("10.0.0.0/26", 28).await;
    ipam.configure(None, Some(1), None).await.unwrap();
    // node1 fills its block (16), then borrows; node2 borrows from node1's block too.
    let mut n1 = Vec::new();
    for i in 0..12 {
        n1.extend(ipam.assign(args(&format!("a{i}"), "node1")).await.unwrap());
    }
    let t = ipam
        .assign_tunnel_address("node1", TunnelKind::Vxlan)
        .await
        .unwrap();
    let n2 = ipam.assign(args("b", "node2")).await.unwrap();
    delete_node(ipam.store(), "node1").await.unwrap();
    let out = ipam.release_node("node1").await.unwrap();
    assert_eq!(out.released.len(), 13);
    assert!(out.released.iter().any(|r| r.ip == t));
    assert!(ipam.node_blocks("node1").await.unwrap().is_empty());
    // node2's address survives.
    assert_eq!(ipam.handle_addresses("b").await.unwrap(), n2);
    let report = ipam.check(&Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// Every key under `/calico/ipam/v2/` that still mentions `node`, with the reason.
async fn keys_of(ipam: &Ipam<MemoryStore>, node: &str) -> Vec<String> {
    let listing = ipam.store().list("/calico/ipam/v2/").await.unwrap();
    let mut left = Vec::new();
    for kv in listing.kvs {
        let value = String::from_utf8_lossy(&kv.value);
        if kv.key.contains(&format!("/{node}/"))
            || kv.key.ends_with(&format!("/{node}"))
            || kv.key.ends_with(&format!("-addr-{node}"))
            || value.contains(&format!("\"host:{node}\""))
            || value.contains(&format!("\"node\":\"{node}\""))
        {
            left.push(kv.key);
        }
    }
    left
}

#[tokio::test]
async fn release_node_leaves_no_key_of_the_node() {
    let ipam = setup("10.0.0.0/26", 28).await;
    ipam.configure(None, Some(1), None).await.unwrap();
    // node1 fills its block (16) and borrows 4 from node2's, two of them tunnel addresses.
    let n2 = ipam.assign(args("b", "node2")).await.unwrap();
    for i in 0..18 {
        ipam.assign(args(&format!("a{i}"), "node1")).await.unwrap();
    }
    for kind in [TunnelKind::Vxlan, TunnelKind::Ipip] {
        ipam.assign_tunnel_address("node1", kind).await.unwrap();
    }
    // What else a node leaves behind: a pending claim without a block, a stale affinity whose
    // block is another node's, a tunnel handle record whose address is gone, the host key.
    let store = ipam.store();
    let n2_block = ipam.node_blocks("node2").await.unwrap()[0].cidr;
    // Blocks are claimed at random: the pending claim is on one that neither node holds.
    let n1_block = ipam.node_blocks("node1").await.unwrap()[0].cidr;
    let pending: ipnet::IpNet = [
        "10.0.0.0/28",
        "10.0.0.16/28",
        "10.0.0.32/28",
        "10.0.0.48/28",
    ]
    .iter()
    .map(|c| c.parse().unwrap())
    .find(|c| *c != n1_block && *c != n2_block)
    .unwrap();
    store
        .create(
            &affinity_key("node1", &pending),
            br#"{"state":"pending"}"#.to_vec(),
        )
        .await
        .unwrap();
    store
        .create(
            &affinity_key("node1", &n2_block),
            br#"{"state":"confirmed"}"#.to_vec(),
        )
        .await
        .unwrap();
    store
        .create(
            &handle_key("vxlan-v6-tunnel-addr-node1"),
            br#"{"block":{"10.0.0.0/28":1}}"#.to_vec(),
        )
        .await
        .unwrap();
    store
        .create("/calico/ipam/v2/host/node1", b"{}".to_vec())
        .await
        .unwrap();
    assert!(!keys_of(&ipam, "node1").await.is_empty());

    delete_node(ipam.store(), "node1").await.unwrap();
    let out = ipam.release_node("node1").await.unwrap();
    assert_eq!(out.released.len(), 20, "{out:?}");
    assert_eq!(keys_of(&ipam, "node1").await, Vec::<String>::new());
    // node2's address, block and affinity are untouched.
    assert_eq!(ipam.handle_addresses("b").await.unwrap(), n2);
    assert!(store
        .get(&affinity_key("node2", &n2_block))
        .await
        .unwrap()
        .is_some());
    let report = ipam.check(&Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    // Twice is harmless.
    let again = ipam.release_node("node1").await.unwrap();
    assert!(again.released.is_empty());
}

#[tokio::test]
async fn specific_addresses() {
    let ipam = setup("10.0.0.0/24", 26).await;
    let ip: IpAddr = "10.0.0.200".parse().unwrap();
    let attrs = AllocationAttrs::default();
    ipam.assign_ip(ip, "static-1", "node2", &attrs)
        .await
        .unwrap();
    // Idempotent for the same handle, refused for another.
    ipam.assign_ip(ip, "static-1", "node2", &attrs)
        .await
        .unwrap();
    let err = ipam
        .assign_ip(ip, "other", "node1", &attrs)
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::AlreadyAllocated { .. }), "{err}");
    let err = ipam
        .assign_ip("192.168.0.1".parse().unwrap(), "x", "node1", &attrs)
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NotInPool { .. }), "{err}");
    // The block was claimed for node2.
    assert_eq!(
        ipam.node_blocks("node2").await.unwrap()[0].cidr.to_string(),
        "10.0.0.192/26"
    );
    assert_eq!(ipam.handle_addresses("static-1").await.unwrap(), vec![ip]);
    // Tunnel addresses are stable.
    let t1 = ipam
        .assign_tunnel_address("node1", TunnelKind::Ipip)
        .await
        .unwrap();
    let t2 = ipam
        .assign_tunnel_address("node1", TunnelKind::Ipip)
        .await
        .unwrap();
    assert_eq!(t1, t2);
}

#[tokio::test]
async fn pools_selectors_disabled_and_dual_stack() {
    let store = MemoryStore::new();
    put_pool(&store, "rack-a", "10.1.0.0/24", 26, "rack == 'a'")
        .await
        .unwrap();
    put_pool(
        &store,
        "rack-b",
        "10.2.0.0/24",
        26,
        "rack in {'b','c'} && !has(edge)",
    )
    .await
    .unwrap();
    put_pool(&store, "v6", "fd00::/120", 122, "all()")
        .await
        .unwrap();
    put_node(&store, "na", &[("rack", "a")]).await.unwrap();
    put_node(&store, "nb", &[("rack", "b")]).await.unwrap();
    put_node(&store, "ne", &[("rack", "b"), ("edge", "")])
        .await
        .unwrap();
    let ipam = Ipam::new(store);
    let a = ipam.assign(args("a", "na")).await.unwrap();
    assert!(a[0].to_string().starts_with("10.1.0."), "{a:?}");
    let b = ipam.assign(args("b", "nb")).await.unwrap();
    assert!(b[0].to_string().starts_with("10.2.0."), "{b:?}");
    // ne matches no pool of its own and may not borrow from pools that do not select it.
    let err = ipam.assign(args("e", "ne")).await.unwrap_err();
    assert!(err.to_string().contains("selects"), "{err}");
    // Dual stack with one handle.
    let v6 = ipam
        .assign(AssignArgs::one("a", "na", Family::V6))
        .await
        .unwrap();
    assert!(v6[0].is_ipv6());
    let mut all = ipam.handle_addresses("a").await.unwrap();
    all.sort();
    assert_eq!(all, vec![a[0], v6[0]]);
    // A disabled pool is not used for new blocks.
    set_pool_disabled(ipam.store(), "rack-b", true)
        .await
        .unwrap();
    put_node(ipam.store(), "nc", &[("rack", "c")])
        .await
        .unwrap();
    assert!(ipam.assign(args("c", "nc")).await.is_err());
    // Requested pools restrict.
    let mut r = args("r", "na");
    r.pools = Some(vec!["rack-b".to_string()]);
    assert!(ipam.assign(r).await.is_err());
    // A bad selector is a clear error.
    put_pool(ipam.store(), "bad", "10.3.0.0/24", 26, "rack == ")
        .await
        .unwrap();
    put_node(ipam.store(), "nz", &[]).await.unwrap();
    let err = ipam.assign(args("z", "nz")).await.unwrap_err();
    assert!(err.to_string().contains("nodeSelector"), "{err}");
}

#[tokio::test]
async fn concurrent_allocators_share_blocks_without_waste() {
    let ipam = setup("10.0.0.0/16", 26).await;
    let mut tasks = Vec::new();
    for a in 0..8 {
        let ipam = ipam.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                ipam.assign(args(&format!("h{a}-{i}"), "node1"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let blocks = ipam.node_blocks("node1").await.unwrap();
    let rev = ipam
        .store()
        .get("/calico/ipam/v2/handle/h0-0")
        .await
        .unwrap()
        .unwrap();
    println!(
        "{} blocks, revision of first handle {}",
        blocks.len(),
        rev.mod_revision
    );
    // 800 addresses fill 12.5 blocks of 64.
    assert_eq!(blocks.len(), 13, "{blocks:?}");
}

#[tokio::test]
async fn an_assign_writes_only_the_block_it_takes_from() {
    let ipam = setup("10.0.0.0/16", 30).await;
    // Fill three /30 blocks, then watch what the next assign writes.
    for i in 0..12 {
        ipam.assign(args(&format!("f{i}"), "node1")).await.unwrap();
    }
    let before = ipam
        .store()
        .list("/calico/ipam/v2/assignment/")
        .await
        .unwrap();
    ipam.assign(args("next", "node1")).await.unwrap();
    let after = ipam
        .store()
        .list("/calico/ipam/v2/assignment/")
        .await
        .unwrap();
    let changed = after
        .kvs
        .iter()
        .filter(|kv| {
            !before
                .kvs
                .iter()
                .any(|b| b.key == kv.key && b.mod_revision == kv.mod_revision)
        })
        .count();
    assert_eq!(changed, 1);
}

mod sequences {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Assign(u8, u8),
        ReleaseHandle(u8),
        ReleaseNth(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..24, 0u8..2).prop_map(|(h, n)| Op::Assign(h, n)),
            1 => (0u8..24).prop_map(Op::ReleaseHandle),
            1 => (0usize..32).prop_map(Op::ReleaseNth),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any sequence of assigns (retries included) and releases on a small pool that runs
        /// out: no address twice, each handle holds exactly what the model says, and check is
        /// clean at the end.
        #[test]
        fn assign_release_sequences(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                // 16 addresses in four /30 blocks: exhaustion and borrowing happen.
                let ipam = setup("10.0.0.0/28", 30).await;
                let mut model: BTreeMap<String, IpAddr> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Assign(h, n) => {
                            let h = format!("h{h}");
                            match ipam.assign(args(&h, &format!("node{}", n + 1))).await {
                                Ok(ips) => {
                                    assert_eq!(ips.len(), 1);
                                    if let Some(prev) = model.get(&h) {
                                        assert_eq!(*prev, ips[0], "retry of {h} got another address");
                                    }
                                    assert!(
                                        !model.iter().any(|(k, v)| *v == ips[0] && *k != h),
                                        "{} given twice", ips[0]
                                    );
                                    model.insert(h, ips[0]);
                                }
                                Err(IpamError::Exhausted { .. }) => {
                                    assert!(!model.contains_key(&h));
                                    assert_eq!(model.len(), 16, "exhausted with {} in use", model.len());
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        Op::ReleaseHandle(h) => {
                            let h = format!("h{h}");
                            let rel = ipam.release_handle(&h).await.unwrap();
                            assert_eq!(rel.first().map(|r| r.ip), model.remove(&h));
                        }
                        Op::ReleaseNth(i) => {
                            if model.is_empty() { continue; }
                            let (h, ip) = model.iter().nth(i % model.len()).map(|(h, ip)| (h.clone(), *ip)).unwrap();
                            let rel = ipam.release_ip(ip).await.unwrap().unwrap();
                            assert_eq!(rel.handle.as_deref(), Some(h.as_str()));
                            model.remove(&h);
                        }
                    }
                }
                for (h, ip) in &model {
                    assert_eq!(ipam.handle_addresses(h).await.unwrap(), vec![*ip]);
                }
                let show = ipam.show().await.unwrap();
                assert_eq!(show.pools[0].in_use, model.len() as u128);
                let report = ipam.check(&Default::default()).await.unwrap();
                assert!(report.is_clean(), "{report:#?}");
            });
        }
    }
}

#[tokio::test]
async fn check_reports_allocations_without_an_endpoint_as_leaked() {
    use calyx_ipam::check::CheckOptions;
    let ipam = setup("10.0.0.0/24", 26).await;
    let with_wep = ipam
        .assign(args("k8s-pod-network.c1", "node1"))
        .await
        .unwrap();
    let by_ip = ipam
        .assign(args("k8s-pod-network.c2", "node1"))
        .await
        .unwrap();
    let leaked = ipam
        .assign(args("k8s-pod-network.c3", "node1"))
        .await
        .unwrap();
    ipam.assign_tunnel_address("node1", TunnelKind::Vxlan)
        .await
        .unwrap();
    // c1's endpoint names its container; c2's (another sandbox's) lists its address.
    for (name, container, ip) in [("a", "c1", with_wep[0]), ("b", "old", by_ip[0])] {
        let wep = format!(
            r#"{{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"node":"node1","containerID":"{container}","ipNetworks":["{ip}/32"]}}}}"#
        );
        ipam.store()
            .create(
                &format!("/calico/resources/v3/projectcalico.org/workloadendpoints/default/{name}"),
                wep.into_bytes(),
            )
            .await
            .unwrap();
    }
    let report = ipam
        .check(&CheckOptions {
            workload_leaks: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(report.workload_endpoints, Some(2));
    let ips: Vec<IpAddr> = report.leaked.iter().map(|a| a.ip).collect();
    assert_eq!(ips, leaked, "{report:#?}");
    assert!(report.summary().contains("Found 1 leaked IPs"));
    // Leaks are reported, not failures (an ADD in progress has no endpoint yet).
    assert!(report.is_clean());
    // Without the option nothing is read or reported.
    let plain = ipam.check(&Default::default()).await.unwrap();
    assert!(plain.leaked.is_empty() && plain.workload_endpoints.is_none());
}

#[tokio::test]
async fn manual_pools_serve_only_requests_that_name_them() {
    let store = MemoryStore::new();
    put_pool(&store, "auto", "10.0.0.0/24", 26, "all()")
        .await
        .unwrap();
    put_pool(&store, "manual", "10.9.0.0/24", 26, "all()")
        .await
        .unwrap();
    set_pool_manual(&store, "manual", true).await.unwrap();
    put_node(&store, "node1", &[]).await.unwrap();
    let ipam = Ipam::new(store);
    let auto: IpAddr = "10.0.0.0".parse().unwrap();
    let in_auto = |ip: &IpAddr| "10.0.0.0/24".parse::<ipnet::IpNet>().unwrap().contains(ip);
    // Named: served from the Manual pool, which claims a block affine to node1.
    let mut named = args("named", "node1");
    named.pools = Some(vec!["manual".to_string()]);
    let m = ipam.assign(named).await.unwrap();
    assert!(m[0].to_string().starts_with("10.9.0."), "{m:?}");
    // Unnamed: never from the Manual pool, not even from its block affine to this node.
    for i in 0..5 {
        let a = ipam.assign(args(&format!("h{i}"), "node1")).await.unwrap();
        assert!(in_auto(&a[0]), "{a:?} (auto pool starts at {auto})");
    }
    // Block claims at start-up and tunnel addresses skip it too.
    put_node(ipam.store(), "node2", &[]).await.unwrap();
    let b = ipam
        .ensure_block("node2", Family::V4)
        .await
        .unwrap()
        .unwrap();
    assert!(b.to_string().starts_with("10.0.0."), "{b}");
    let t = ipam
        .assign_tunnel_address("node2", TunnelKind::Vxlan)
        .await
        .unwrap();
    assert!(in_auto(&t), "{t}");
    // With only the Manual pool left, unnamed requests find nothing.
    set_pool_disabled(ipam.store(), "auto", true).await.unwrap();
    put_node(ipam.store(), "node3", &[]).await.unwrap();
    let err = ipam.assign(args("x", "node3")).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
}

#[tokio::test]
async fn reserved_addresses_are_never_assigned_automatically() {
    let store = MemoryStore::new();
    // Two /28 blocks; the first block is reserved whole, the second's first four addresses too.
    put_pool(&store, "pool", "10.0.0.0/27", 28, "all()")
        .await
        .unwrap();
    put_reservation(&store, "r", &["10.0.0.0/28", "10.0.0.16/30"])
        .await
        .unwrap();
    put_node(&store, "node1", &[]).await.unwrap();
    let ipam = Ipam::new(store);
    let mut got = HashSet::new();
    for i in 0..12 {
        let a = ipam.assign(args(&format!("h{i}"), "node1")).await.unwrap()[0];
        let IpAddr::V4(v4) = a else { panic!("{a}") };
        assert!(v4.octets()[3] >= 20, "reserved {a} handed out");
        assert!(got.insert(a));
    }
    // 10.0.0.20-31 are all taken now; the reserved ones are not borrowed or claimed either.
    let err = ipam.assign(args("full", "node1")).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    // The fully reserved block was never claimed.
    let blocks = ipam.node_blocks("node1").await.unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].cidr.to_string(), "10.0.0.16/28");
    // An explicit request is not automatic assignment: Calico's reservations do not refuse it.
    let ip: IpAddr = "10.0.0.17".parse().unwrap();
    ipam.assign_ip(ip, "static", "node1", &AllocationAttrs::default())
        .await
        .unwrap();
    assert_eq!(ipam.handle_addresses("static").await.unwrap(), vec![ip]);
}
