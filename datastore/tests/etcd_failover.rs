//! `EtcdStore` on a 3-member etcd cluster: when the member a store talks to dies, or the leader
//! does, reads, listings, transactions and watches go on through another member within the
//! request deadline, and reads stay current.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::time::{Duration, Instant};

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, WatchEvent};
use calyx_tests::etcd::EtcdCluster;

/// The store's request deadline in these tests (3 s per attempt on one member). Longer than
/// the 5 s default: a request sent right after the leader died waits out the election (1-2 s
/// election timeout, more with split votes or on a loaded machine), which no failover can
/// shorten; a 5 s deadline made that a flake, not a finding.
const TIMEOUT: Duration = Duration::from_secs(9);

async fn connect(endpoints: &str) -> EtcdStore {
    let mut config = EtcdConfig::from_endpoints(endpoints).unwrap();
    config.timeout = Some(TIMEOUT);
    EtcdStore::connect(&config).await.unwrap()
}

fn member_of(cluster: &EtcdCluster, store: &EtcdStore) -> usize {
    (0..cluster.len())
        .find(|&i| cluster.endpoint(i) == store.current_endpoint())
        .unwrap()
}

/// Runs `what` and checks that it took less than the deadline: a failover, not a hang or a
/// caller-level retry.
async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took <= TIMEOUT, "{what} took {took:?}");
    out
}

/// The next event that is not a resync, within 15 s.
async fn next_change(watch: &mut calyx_datastore::store::Watch) -> WatchEvent {
    conformance::next_event(watch).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_watches_fail_over_when_members_die() {
    let Some(mut cluster) = EtcdCluster::start("requests_and_watches_fail_over", 3) else {
        return;
    };
    let store = connect(&cluster.endpoints()).await;
    conformance::run_all(&store).await;

    let r1 = store.create("/f/a", b"1".to_vec()).await.unwrap();
    let mut watch = store.watch("/f/", r1 + 1).await.unwrap();

    // 1. The member this store talks to dies (SIGKILL, connections reset).
    let first = member_of(&cluster, &store);
    cluster.kill(first);
    let r2 = timed("update after the store's member died", async {
        store.update("/f/a", b"2".to_vec(), r1).await.unwrap()
    })
    .await;
    assert_ne!(member_of(&cluster, &store), first, "the store moved on");
    let got = timed("get", store.get("/f/a")).await.unwrap().unwrap();
    assert_eq!(got.value, b"2", "a read after failover sees the last write");
    assert_eq!(got.mod_revision, r2);
    timed("create", store.create("/f/b", b"b".to_vec()))
        .await
        .unwrap();
    let listing = timed("list", store.list("/f/")).await.unwrap();
    assert_eq!(listing.kvs.len(), 2);
    match next_change(&mut watch).await {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("/f/a", &b"2"[..]))
        }
        other => panic!("expected the update, got {other:?}"),
    }
    match next_change(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!(kv.key, "/f/b"),
        other => panic!("expected the create, got {other:?}"),
    }
    cluster.restart(first);

    // 2. The leader dies: requests wait out the election on the other members.
    let leader = cluster.wait_leader(None, Duration::from_secs(20));
    eprintln!(
        "killing leader {leader}; the store is on {}",
        member_of(&cluster, &store)
    );
    cluster.kill(leader);
    // Straight away: the first of these waits out the election (a follower drops proposals
    // while it has no leader), on this member or the next.
    let mut rev = r2;
    for i in 0..5u8 {
        rev = timed("update while the leader is gone", async {
            store.update("/f/a", vec![b'3' + i], rev).await.unwrap()
        })
        .await;
    }
    let new_leader = cluster.wait_leader(Some(leader), Duration::from_secs(20));
    eprintln!("leader {leader} killed, {new_leader} elected");
    for _ in 0..5 {
        match next_change(&mut watch).await {
            WatchEvent::Put(kv) => assert_eq!(kv.key, "/f/a"),
            other => panic!("expected the updates, got {other:?}"),
        }
    }
    cluster.restart(leader);
    assert!(cluster.wait_healthy(leader, Duration::from_secs(20)));

    // 3. A fresh store whose endpoint list starts with a dead one (nothing listens there):
    // one refused connection, then a live member, every time.
    let dead = format!("http://127.0.0.1:{}", calyx_tests::free_port());
    for _ in 0..5 {
        let start = Instant::now();
        let s = connect(&format!("{dead},{}", cluster.endpoints())).await;
        assert_eq!(
            s.get("/f/a").await.unwrap().unwrap().mod_revision,
            rev,
            "current through any member"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}

/// The member a store (and its watch) talks to is cut off the network (`ip link set down`):
/// its connections go silent instead of breaking. Requests move on after one short attempt
/// timeout, the watch after the keep-alive notices, and nothing is lost or read stale.
#[test]
fn requests_and_watches_fail_over_when_their_member_is_cut_off() {
    let Some(cluster) = EtcdCluster::start_partitionable(
        "requests_and_watches_fail_over_when_their_member_is_cut_off",
        "dsfo",
        "10.231.8",
        3,
    ) else {
        return;
    };
    let hub = cluster.hub().unwrap().name().to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The members are reachable from the hub only.
            calyx_tests::netns::enter_netns(&hub);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cut_off(&cluster));
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

async fn cut_off(cluster: &EtcdCluster) {
    let store = connect(&cluster.endpoints()).await;
    let r1 = store.create("/p/a", b"1".to_vec()).await.unwrap();
    let mut watch = store.watch("/p/", r1 + 1).await.unwrap();
    // Let the watch stream open on the store's member before cutting it off.
    let r2 = store.update("/p/a", b"2".to_vec(), r1).await.unwrap();
    match next_change(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, r2),
        other => panic!("expected the update, got {other:?}"),
    }
    let cut = member_of(cluster, &store);
    let leader = cluster.leader();
    eprintln!("cutting off member {cut} (leader: {leader:?})");
    cluster.partition(cut);

    let r3 = timed("update after the store's member was cut off", async {
        store.update("/p/a", b"3".to_vec(), r2).await.unwrap()
    })
    .await;
    assert_ne!(member_of(cluster, &store), cut);
    let got = timed("get", store.get("/p/a")).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"3"[..], r3));
    let start = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the watch did not move to another member within 30 s")
        .unwrap();
    eprintln!("watch event after the cut: {:?}", start.elapsed());
    match event {
        WatchEvent::Put(kv) => assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"3"[..], r3)),
        other => panic!("expected the update, got {other:?}"),
    }

    cluster.heal(cut);
    assert!(cluster.wait_healthy(cut, Duration::from_secs(30)));
    let r4 = store.update("/p/a", b"4".to_vec(), r3).await.unwrap();
    match next_change(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, r4),
        other => panic!("expected the update, got {other:?}"),
    }
}
