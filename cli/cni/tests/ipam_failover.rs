//! CNI ADDs through the real `calyx-ipam` binary against a 3-member etcd cluster while the
//! leader fails: killed (SIGKILL, a new leader elected, the old member restarted), or cut off
//! the network (`ip link set down` on its namespace link, then back up). Three "nodes" with 8
//! allocators each (24 ADDs in flight) take 3,000 addresses. Afterwards: no address twice,
//! every successful ADD's address is held by its handle, every failed ADD holds nothing,
//! `Ipam::check` is clean with the successful handles as the live ones, under 1% of ADDs
//! failed and each of those with code 11 (try again later), and a watch that ran through it all
//! (as the node daemon's do) ends in the same state as a fresh listing.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use calyx_datastore::resources::ipam::{handle_key, BLOCK_KEY_PREFIX};
use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, WatchEvent};
use calyx_ipam::check::CheckOptions;
use calyx_ipam::fixtures::{put_node, put_pool};
use calyx_ipam::Ipam;
use calyx_tests::etcd::EtcdCluster;
use futures::future::join_all;
use serde_json::Value;

const NODES: usize = 3;
const ALLOCATORS_PER_NODE: usize = 8;
const ADDS: usize = 3_000;
/// The per-command deadline given to the plugin: shorter than the 90 s default, so that a
/// failover that costs more than a few seconds shows up as failures, not as patience.
const CNI_TIMEOUT_SECS: &str = "30";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the leader, wait for a new one, restart the old member.
    KillLeader,
    /// Cut the leader off the network, wait for a new one, reconnect it.
    PartitionLeader,
}

/// One ADD as the runtime saw it.
#[derive(Debug)]
struct Outcome {
    container: String,
    took: Duration,
    /// Whether the plugin had to retry at the CNI level (the store's own failover did not
    /// absorb the failure).
    retried: bool,
    result: Result<IpAddr, (u64, String)>,
}

fn cni_add(endpoints: &str, node: &str, container: &str) -> Outcome {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"net","type":"calyx","nodename":"{node}","etcd_endpoints":"{endpoints}","ipam":{{"type":"calyx-ipam"}}}}"#
    );
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calyx-ipam"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"),
        )
        .env("CALYX_CNI_TIMEOUT", CNI_TIMEOUT_SECS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "ADD {container}: no JSON on stdout ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let result = if out.status.success() {
        let address = v["ips"][0]["address"].as_str().unwrap();
        Ok(address.split('/').next().unwrap().parse().unwrap())
    } else {
        Err((
            v["code"].as_u64().unwrap_or(0),
            format!("{} {}", v["msg"], v["details"]),
        ))
    };
    Outcome {
        container: container.to_string(),
        took: start.elapsed(),
        retried: String::from_utf8_lossy(&out.stderr).contains("retrying within the CNI deadline"),
        result,
    }
}

fn run_failover(test: &str, fault: Fault) {
    let cluster = match fault {
        Fault::KillLeader => EtcdCluster::start(test, 3),
        Fault::PartitionLeader => EtcdCluster::start_partitionable(test, "ipfo", "10.231.7", 3),
    };
    let Some(mut cluster) = cluster else {
        return;
    };
    let hub = cluster.hub().map(|h| h.name().to_string());
    // Everything that talks to etcd runs on a thread inside the hub namespace when there is
    // one (the calyx-ipam processes it starts inherit it); the fixture's commands enter
    // namespaces by themselves.
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(hub) = &hub {
                calyx_tests::netns::enter_netns(hub);
            }
            scenario(&mut cluster, fault);
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

fn scenario(cluster: &mut EtcdCluster, fault: Fault) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let endpoints = cluster.endpoints();
    let store = rt.block_on(async {
        let store = EtcdStore::connect(&EtcdConfig::from_endpoints(&endpoints).unwrap())
            .await
            .unwrap();
        put_pool(&store, "default-ipv4-ippool", "10.77.0.0/16", 26, "all()")
            .await
            .unwrap();
        for n in 0..NODES {
            put_node(&store, &format!("node{n}"), &[]).await.unwrap();
        }
        store
    });
    // A watch through the whole run, as the node daemons keep: it must end where etcd is.
    let mut watch = rt.block_on(store.watch(BLOCK_KEY_PREFIX, 1)).unwrap();
    let watched = std::sync::Arc::new(Mutex::new(BTreeMap::<String, i64>::new()));
    let watcher = {
        let watched = watched.clone();
        rt.spawn(async move {
            while let Some(event) = watch.next().await {
                let mut w = watched.lock().unwrap();
                match event {
                    WatchEvent::Put(kv) => {
                        w.insert(kv.key, kv.mod_revision);
                    }
                    WatchEvent::Delete { key, .. } => {
                        w.remove(&key);
                    }
                    WatchEvent::Resync(listing) => {
                        *w = listing
                            .kvs
                            .into_iter()
                            .map(|kv| (kv.key, kv.mod_revision))
                            .collect();
                    }
                }
            }
        })
    };

    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::<Outcome>::new());
    let started = Instant::now();
    let mut timeline = Vec::new();
    std::thread::scope(|s| {
        for a in 0..NODES * ALLOCATORS_PER_NODE {
            let (next, done, outcomes, endpoints) = (&next, &done, &outcomes, &endpoints);
            s.spawn(move || {
                let node = format!("node{}", a / ALLOCATORS_PER_NODE);
                // Bounded: every turn takes one of the ADDS numbers.
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ADDS {
                        break;
                    }
                    let outcome = cni_add(endpoints, &node, &format!("c{i:05}"));
                    outcomes.lock().unwrap().push(outcome);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The fault, while the ADDs run.
        let at = |n: usize| {
            assert!(
                calyx_tests::wait_until(Duration::from_secs(120), || done.load(Ordering::Relaxed)
                    >= n),
                "ADDs stalled at {}",
                done.load(Ordering::Relaxed)
            );
        };
        at(ADDS / 5);
        let leader = cluster.wait_leader(None, Duration::from_secs(20));
        let t = started.elapsed();
        match fault {
            Fault::KillLeader => cluster.kill(leader),
            Fault::PartitionLeader => cluster.partition(leader),
        }
        timeline.push(format!(
            "{t:?}: {fault:?} member {leader} (after {} ADDs)",
            done.load(Ordering::Relaxed)
        ));
        let new_leader = cluster.wait_leader(Some(leader), Duration::from_secs(30));
        timeline.push(format!(
            "{:?}: member {new_leader} elected (after {} ADDs)",
            started.elapsed(),
            done.load(Ordering::Relaxed)
        ));
        at(ADDS * 3 / 5);
        match fault {
            Fault::KillLeader => cluster.restart(leader),
            Fault::PartitionLeader => cluster.heal(leader),
        }
        assert!(
            cluster.wait_healthy(leader, Duration::from_secs(30)),
            "member {leader} did not come back:\n{}",
            cluster.logs()
        );
        timeline.push(format!(
            "{:?}: member {leader} back (after {} ADDs)",
            started.elapsed(),
            done.load(Ordering::Relaxed)
        ));
    });
    let took = started.elapsed();
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.len(), ADDS);

    let mut ips = HashSet::new();
    let mut ok: Vec<(&str, IpAddr)> = Vec::new();
    let mut failed: Vec<(&str, u64, &str)> = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(ip) => {
                assert!(ips.insert(*ip), "{ip} given out twice");
                ok.push((&o.container, *ip));
            }
            Err((code, msg)) => failed.push((&o.container, *code, msg)),
        }
    }
    eprintln!(
        "{fault:?}: {ADDS} ADDs by {} allocators in {took:?} ({:.0}/s), {} failed",
        NODES * ALLOCATORS_PER_NODE,
        ADDS as f64 / took.as_secs_f64(),
        failed.len()
    );
    let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
    took.sort();
    eprintln!(
        "  ADD latency: p50 {:?}, p99 {:?}, max {:?}; {} took over 5 s",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        took.iter().filter(|t| **t > Duration::from_secs(5)).count()
    );
    eprintln!(
        "  {} ADDs retried at the CNI level",
        outcomes.iter().filter(|o| o.retried).count()
    );
    for line in &timeline {
        eprintln!("  {line}");
    }
    for (c, code, msg) in &failed {
        eprintln!("  failed {c}: code {code}: {msg}");
    }

    rt.block_on(async {
        let ipam = Ipam::new(store.clone());
        // Every successful ADD's address is held by its handle.
        for chunk in ok.chunks(64) {
            let infos = join_all(chunk.iter().map(|(_, ip)| ipam.ip_info(*ip))).await;
            for ((c, ip), info) in chunk.iter().zip(infos) {
                let info = info.unwrap();
                assert!(info.allocated, "{ip} of {c} is not allocated");
                assert_eq!(
                    info.handle.as_deref(),
                    Some(format!("net.{c}").as_str()),
                    "{ip}"
                );
            }
        }
        // Every failed ADD holds nothing: no handle record, and (below) no allocation.
        for (c, code, msg) in &failed {
            assert_eq!(
                *code, 11,
                "{c} failed with code {code} ({msg}): not one to retry"
            );
            let record = store.get(&handle_key(&format!("net.{c}"))).await.unwrap();
            assert!(record.is_none(), "failed ADD {c} still holds {record:?}");
        }
        let live: HashSet<String> = ok.iter().map(|(c, _)| format!("net.{c}")).collect();
        let report = ipam
            .check(&CheckOptions {
                fix: false,
                live_handles: Some(live),
                workload_leaks: false,
            })
            .await
            .unwrap();
        assert!(report.is_clean(), "{}\n{report:?}", report.summary());
        assert_eq!(
            report.allocations,
            ok.len(),
            "allocations = successful ADDs"
        );

        // The watch caught up with etcd through the failover.
        let listing = store.list(BLOCK_KEY_PREFIX).await.unwrap();
        let want: BTreeMap<String, i64> = listing
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while *watched.lock().unwrap() != want {
            assert!(
                Instant::now() < deadline,
                "the watch did not catch up: {:?} vs {want:?}",
                watched.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    watcher.abort();
    assert!(
        failed.len() * 100 < ADDS,
        "{} of {ADDS} ADDs failed (1% allowed)",
        failed.len()
    );
}

#[test]
fn cni_adds_survive_the_etcd_leader_being_killed() {
    run_failover(
        "cni_adds_survive_the_etcd_leader_being_killed",
        Fault::KillLeader,
    );
}

#[test]
fn cni_adds_survive_the_etcd_leader_being_partitioned() {
    run_failover(
        "cni_adds_survive_the_etcd_leader_being_partitioned",
        Fault::PartitionLeader,
    );
}
