//! What pod churn on one node costs the other nodes' watches, against a real etcd.
//!
//! N simulated nodes (each with its own etcd connection, running the daemon's real watch code,
//! [`calyx_node::cluster::ClusterWatch`], in one process) watch one etcd while one node's IPAM
//! assigns addresses for P pods, as its CNI plugin would. Printed per run:
//! - the bytes and events each *other* node's watches delivered during the pod phase, next to
//!   the bytes the pod node's own IPAM exchanged with etcd for the same pods (its own cost);
//! - etcd's bytes sent per pod (from etcd's own `/metrics`), which must not grow with N.
//!
//! The same runs with every node also watching the IPAM blocks (`blocks`: what a daemon that
//! programs routes watches, to route borrowed addresses; see `calyx_node::borrowed`) and with
//! every node watching all of `/calico/` (`all`: what the daemon did before its watches were
//! sized) show what each costs.
//!
//! `cargo bench -p calyx-node --bench watch` (prints figures; nothing is asserted).
//! `CALYX_WATCH_BENCH_NODES=50,100,200` and `CALYX_WATCH_BENCH_PODS=1000` change the sizes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, WatchEvent};
use calyx_ipam::fixtures::{put_node, put_pool};
use calyx_ipam::{AssignArgs, Family, Ipam};
use calyx_node::cluster::{daemon_prefixes, ClusterWatch};
use calyx_tests::etcd::Etcd;

#[derive(Default)]
struct Received {
    events: AtomicU64,
    bytes: AtomicU64,
}

fn event_bytes(event: &WatchEvent) -> u64 {
    match event {
        WatchEvent::Put(kv) => (kv.key.len() + kv.value.len()) as u64,
        WatchEvent::Delete { key, .. } => key.len() as u64,
        WatchEvent::Resync(l) => l
            .kvs
            .iter()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum(),
    }
}

/// etcd's counter `name` from its `/metrics` (sum over label sets).
fn etcd_metric(endpoint: &str, name: &str) -> f64 {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const SENT: &str = "etcd_network_client_grpc_sent_bytes_total";
const RECEIVED: &str = "etcd_network_client_grpc_received_bytes_total";

async fn connect(endpoint: &str) -> EtcdStore {
    EtcdStore::connect(&EtcdConfig::from_endpoints(endpoint).unwrap())
        .await
        .unwrap()
}

/// Waits until every watcher's counters stop moving (all events delivered).
async fn settle(counters: &[Arc<Received>]) {
    let total = || -> u64 {
        counters
            .iter()
            .map(|c| c.events.load(Ordering::Relaxed))
            .sum()
    };
    let mut last = total();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = total();
        if now == last {
            return;
        }
        last = now;
    }
}

/// What the simulated nodes watch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    /// `cluster::watch_prefixes()`: resources and affinities.
    Sized,
    /// `cluster::daemon_prefixes(true)`: the same and the IPAM blocks.
    Blocks,
    /// All of `/calico/`.
    All,
}

struct Run {
    nodes: usize,
    pods: usize,
    watched: Watched,
}

async fn run(r: &Run) {
    let etcd = Etcd::start("watch bench").expect("etcd");
    let endpoint = etcd.endpoint().to_string();
    let admin = connect(&endpoint).await;
    put_pool(&admin, "default-ipv4-ippool", "10.0.0.0/8", 26, "all()")
        .await
        .unwrap();
    for i in 0..r.nodes {
        put_node(&admin, &format!("node{i}"), &[]).await.unwrap();
    }
    // Every node but node0 watches; node0 makes the pods.
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 1..r.nodes {
        let store = connect(&endpoint).await;
        let c = Arc::new(Received::default());
        counters.push(c.clone());
        let watched = r.watched;
        tasks.push(tokio::spawn(async move {
            if watched != Watched::All {
                let prefixes = daemon_prefixes(watched == Watched::Blocks);
                let (_state, mut watch) = ClusterWatch::start_on(&store, prefixes).await.unwrap();
                while let Some((_, event)) = watch.next().await {
                    c.events.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(event_bytes(&event), Ordering::Relaxed);
                }
            } else {
                let listing = store.list("/calico/").await.unwrap();
                let mut watch = store.watch("/calico/", listing.revision + 1).await.unwrap();
                while let Some(event) = watch.next().await {
                    c.events.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(event_bytes(&event), Ordering::Relaxed);
                }
            }
        }));
    }
    settle(&counters).await;
    let before: Vec<(u64, u64)> = counters
        .iter()
        .map(|c| {
            (
                c.events.load(Ordering::Relaxed),
                c.bytes.load(Ordering::Relaxed),
            )
        })
        .collect();
    let sent0 = etcd_metric(&endpoint, SENT);
    let recv0 = etcd_metric(&endpoint, RECEIVED);

    // The pod node's own cost, measured alone first: its IPAM's traffic for the pods.
    let ipam = Ipam::new(connect(&endpoint).await);
    let started = Instant::now();
    for p in 0..r.pods {
        ipam.assign(AssignArgs::one(
            format!("k8s-pod-network.pod{p}"),
            "node0",
            Family::V4,
        ))
        .await
        .unwrap();
    }
    let pods_took = started.elapsed();
    settle(&counters).await;
    let sent = etcd_metric(&endpoint, SENT) - sent0;
    let recv = etcd_metric(&endpoint, RECEIVED) - recv0;

    let others: Vec<(u64, u64)> = counters
        .iter()
        .zip(&before)
        .map(|(c, (e0, b0))| {
            (
                c.events.load(Ordering::Relaxed) - e0,
                c.bytes.load(Ordering::Relaxed) - b0,
            )
        })
        .collect();
    let per_other_events = others.iter().map(|o| o.0).max().unwrap_or(0);
    let per_other_bytes = others.iter().map(|o| o.1).max().unwrap_or(0);
    let watch_total: u64 = others.iter().map(|o| o.1).sum();
    // etcd's sent bytes include what it sent the watchers; the rest answered node0's IPAM.
    let own = (sent + recv - watch_total as f64).max(1.0);
    println!(
        "{:>5} {:>6} {:>5} {:>10.1} {:>12} {:>14} {:>12.0} {:>9.3}% {:>14.0}",
        match r.watched {
            Watched::Sized => "sized",
            Watched::Blocks => "blocks",
            Watched::All => "all",
        },
        r.nodes,
        r.pods,
        pods_took.as_secs_f64(),
        per_other_events,
        per_other_bytes,
        own,
        100.0 * per_other_bytes as f64 / own,
        sent / r.pods as f64,
    );
    for t in tasks {
        t.abort();
    }
}

fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nodes = sizes("CALYX_WATCH_BENCH_NODES", &[50, 100, 200]);
    let pods = sizes("CALYX_WATCH_BENCH_PODS", &[1000])[0];
    println!(
        "watch nodes  pods  pods_took_s  other_events  other_bytes  own_bytes  other/own  etcd_sent_per_pod"
    );
    for &n in &nodes {
        rt.block_on(run(&Run {
            nodes: n,
            pods,
            watched: Watched::Sized,
        }));
    }
    // Watching blocks, or everything, is far heavier (every block rewrite goes to every node):
    // fewer pods.
    for watched in [Watched::Blocks, Watched::All] {
        for &n in &nodes {
            rt.block_on(run(&Run {
                nodes: n,
                pods: (pods / 10).max(10),
                watched,
            }));
        }
    }
}
