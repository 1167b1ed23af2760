//! Assign throughput against a real local etcd, next to the raw rate of single-key etcd
//! compare-and-swap transactions measured in the same run.
//!
//! `cargo bench -p calyx-ipam --bench assign` (prints figures; nothing is asserted).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Operation, Precondition, Store, Transaction};
use calyx_ipam::fixtures::{put_node, put_pool};
use calyx_ipam::{AllocationAttrs, AssignArgs, Family, Ipam};
use calyx_tests::etcd::Etcd;

async fn connect(endpoint: &str) -> EtcdStore {
    EtcdStore::connect(&EtcdConfig::from_endpoints(endpoint).unwrap())
        .await
        .unwrap()
}

/// Sequential single-key CAS transactions from one client: the revision of each write guards
/// the next (one round trip each, as an assign in the common path).
async fn raw_cas(store: &EtcdStore, n: u32) -> f64 {
    let key = "/bench/cas";
    let mut rev = store.create(key, b"0".to_vec()).await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        let txn = Transaction::new()
            .when(Precondition::ModRevision(key.to_string(), rev))
            .then(Operation::put(key, format!("{i}").into_bytes()));
        rev = store.transaction(txn).await.unwrap();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Read + CAS on one key from each of `clients` tasks (distinct keys), as TESTING.md measured.
async fn raw_read_cas_parallel(endpoint: &str, clients: u32, per_client: u32) -> f64 {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = connect(endpoint).await;
        tasks.push(tokio::spawn(async move {
            let key = format!("/bench/par/{c}");
            store.create(&key, b"0".to_vec()).await.unwrap();
            for i in 0..per_client {
                let kv = store.get(&key).await.unwrap().unwrap();
                store
                    .update(&key, format!("{i}").into_bytes(), kv.mod_revision)
                    .await
                    .unwrap();
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    f64::from(clients * per_client) / start.elapsed().as_secs_f64()
}

async fn assigns(
    ipam: &Ipam<EtcdStore>,
    node: &str,
    allocators: usize,
    total: usize,
    tag: &str,
) -> f64 {
    // Warm the node's block cache and claim its first block outside the measurement.
    ipam.assign(AssignArgs::one(format!("warm-{tag}"), node, Family::V4))
        .await
        .unwrap();
    let per = total / allocators;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..allocators {
        let ipam = ipam.clone();
        let node = node.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let h = format!("k8s-pod-network.{tag}-{a}-{i}");
                let args = AssignArgs::one(h, &node, Family::V4)
                    .with_attrs(AllocationAttrs::pod("bench", &format!("pod-{a}-{i}")));
                ipam.assign(args).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per * allocators) as f64 / start.elapsed().as_secs_f64()
}

/// `n` pod requests at once on a node that has no block yet (cold cache, claims included).
async fn burst(ipam: &Ipam<EtcdStore>, node: &str, n: usize) -> (Duration, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let ipam = ipam.clone();
        let node = node.to_string();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            ipam.assign(AssignArgs::one(
                format!("k8s-pod-network.burst-{node}-{i}"),
                &node,
                Family::V4,
            ))
            .await
            .unwrap();
            t.elapsed()
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    (start.elapsed(), worst)
}

/// etcd keeps every revision until compacted (Kubernetes compacts every 5 minutes): without
/// it, thousands of 10 KB block writes exhaust the backend quota. Compact and defragment
/// between phases, outside the measurements.
async fn compact(etcd: &Etcd, store: &EtcdStore) {
    let rev = store
        .list("/calico/ipam/v2/config-none")
        .await
        .unwrap()
        .revision;
    etcd.etcdctl(&["compact", &rev.to_string()]);
    etcd.etcdctl(&["defrag", "--command-timeout=120s"]);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(etcd) = Etcd::start("ipam-assign-bench") else {
            println!("skipped: no etcd binary");
            return;
        };
        let store = connect(etcd.endpoint()).await;
        put_pool(&store, "bench", "10.128.0.0/12", 26, "all()").await.unwrap();
        for n in ["bench-node", "burst-node", "burst-node-2"] {
            put_node(&store, n, &[]).await.unwrap();
        }
        let store = Arc::new(store);
        let cas = raw_cas(&store, 2000).await;
        let cas8 = raw_read_cas_parallel(etcd.endpoint(), 8, 300).await;
        compact(&etcd, &store).await;
        println!("raw etcd single-key CAS transactions, 1 client:        {cas:8.0} /s");
        println!("raw etcd read+CAS round trips, 8 clients (distinct keys): {cas8:8.0} /s");
        let ipam = Ipam::from_arc(Arc::clone(&store));
        for (allocators, total) in [(1usize, 2000usize), (8, 4000), (64, 6400)] {
            let before = ipam.assign_stats();
            let rate = assigns(&ipam, "bench-node", allocators, total, &format!("c{allocators}")).await;
            println!(
                "assign, {allocators:2} concurrent allocator(s) on one node: {rate:8.0} /s  ({:.2} x raw CAS)",
                rate / cas
            );
            let stats = ipam.assign_stats();
            println!(
                "    ({} transactions, {:.1} requests per transaction, {} conflicts, {} blocks claimed)",
                stats.batches - before.batches,
                (stats.batched_requests - before.batched_requests) as f64
                    / (stats.batches - before.batches).max(1) as f64,
                stats.conflicts - before.conflicts,
                stats.claims - before.claims
            );
            compact(&etcd, &store).await;
        }
        let fresh = Ipam::from_arc(Arc::clone(&store));
        let (all, worst) = burst(&fresh, "burst-node", 100).await;
        println!("100 concurrent pod requests on a node with no block yet: all served in {all:?} (slowest {worst:?})");
        compact(&etcd, &store).await;
        let (all, worst) = burst(&fresh, "bench-node", 100).await;
        println!("100 concurrent pod requests on a node with warm blocks:  all served in {all:?} (slowest {worst:?})");
        // As separate CNI processes would: a cold Ipam (own cache) per request, sequentially.
        let n = 200;
        let start = Instant::now();
        for i in 0..n {
            let cold = Ipam::from_arc(Arc::clone(&store));
            cold.assign(AssignArgs::one(format!("k8s-pod-network.cold-{i}"), "burst-node-2", Family::V4))
                .await
                .unwrap();
        }
        let rate = f64::from(n) / start.elapsed().as_secs_f64();
        println!("assign with a cold cache each time (CNI process per pod):   {rate:8.0} /s");
    });
}
