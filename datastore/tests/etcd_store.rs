//! The conformance suite on a real etcd (Debian's `etcd-server`, started by the test), and the
//! watch's behaviour across an etcd restart and a compaction.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::time::Duration;

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, StoreError, WatchEvent};
use calyx_tests::etcd::Etcd;

async fn connect(etcd: &Etcd) -> EtcdStore {
    let config = EtcdConfig::from_endpoints(etcd.endpoint()).unwrap();
    EtcdStore::connect(&config).await.unwrap()
}

#[tokio::test]
async fn etcd_store_conforms() {
    let Some(etcd) = Etcd::start("etcd_store_conforms") else {
        return;
    };
    conformance::run_all(&connect(&etcd).await).await;
}

#[tokio::test]
async fn unreachable_etcd_is_a_quick_clear_error() {
    let port = calyx_tests::free_port();
    let mut config = EtcdConfig::from_endpoints(&format!("http://127.0.0.1:{port}")).unwrap();
    config.timeout = Some(Duration::from_secs(2));
    let started = std::time::Instant::now();
    match EtcdStore::connect(&config).await {
        Err(StoreError::Unavailable { endpoints, .. }) => {
            assert!(endpoints.contains(&port.to_string()))
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Generous bound: the point is "not a hang", not a latency figure.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_endpoint_is_a_config_error() {
    assert!(matches!(
        EtcdConfig::from_endpoints("127.0.0.1:2379"),
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        EtcdConfig::from_endpoints(" , "),
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn watch_survives_an_etcd_restart() {
    let Some(mut etcd) = Etcd::start("watch_survives_an_etcd_restart") else {
        return;
    };
    let store = connect(&etcd).await;
    let r1 = store.create("/w/a", b"1".to_vec()).await.unwrap();
    let mut watch = store.watch("/w/", r1 + 1).await.unwrap();
    // Let the watch get established before the restart.
    let r2 = store.update("/w/a", b"2".to_vec(), r1).await.unwrap();
    assert_eq!(conformance::next_event(&mut watch).await.revision(), r2);

    etcd.restart();
    // The store reconnects by itself; writes may fail until the connection is back.
    let mut written = None;
    for _ in 0..100 {
        match store.update("/w/a", b"3".to_vec(), r2).await {
            Ok(rev) => {
                written = Some(rev);
                break;
            }
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let r3 = written.expect("etcd did not come back");
    match conformance::next_event(&mut watch).await {
        WatchEvent::Put(kv) => {
            assert_eq!(kv.mod_revision, r3);
            assert_eq!(kv.value, b"3");
        }
        other => panic!("expected the put after the restart, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_compacted_revision_relists_then_resumes() {
    let Some(etcd) = Etcd::start("watch_from_a_compacted_revision_relists_then_resumes") else {
        return;
    };
    let store = connect(&etcd).await;
    let r1 = store.create("/c/a", b"1".to_vec()).await.unwrap();
    let r2 = store.update("/c/a", b"2".to_vec(), r1).await.unwrap();
    store.create("/c/b", b"b".to_vec()).await.unwrap();
    let r4 = store.delete("/c/b", None).await.unwrap();
    let mut kv = store.client().await.unwrap().kv_client();
    kv.compact(r4, None).await.unwrap();

    let mut watch = store.watch("/c/", r2).await.unwrap();
    match conformance::next_event(&mut watch).await {
        WatchEvent::Resync(listing) => {
            assert_eq!(listing.kvs.len(), 1, "only /c/a is left");
            assert_eq!(listing.kvs[0].value, b"2");
            assert!(listing.revision >= r4);
        }
        other => panic!("expected a resync after compaction, got {other:?}"),
    }
    let r5 = store.create("/c/new", b"n".to_vec()).await.unwrap();
    assert_eq!(conformance::next_event(&mut watch).await.revision(), r5);
}

/// A long-lived store (the node daemon's) whose requests failed while etcd was down works
/// again once etcd is back: its connection is re-made, not left broken.
#[tokio::test]
async fn requests_work_again_after_failing_while_etcd_was_down() {
    let Some(mut etcd) = Etcd::start("requests_work_again_after_failing_while_etcd_was_down")
    else {
        return;
    };
    let store = connect(&etcd).await;
    store.create("/r/a", b"1".to_vec()).await.unwrap();
    etcd.kill();
    for _ in 0..3 {
        match store.get("/r/a").await {
            Err(StoreError::Unavailable { .. }) => {}
            other => panic!("expected Unavailable while etcd is down, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    etcd.restart();
    let mut back = false;
    for _ in 0..50 {
        if let Ok(Some(kv)) = store.get("/r/a").await {
            assert_eq!(kv.value, b"1");
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the store did not reconnect within 5 s of etcd's restart"
    );
}
