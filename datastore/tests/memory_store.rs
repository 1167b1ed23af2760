//! The conformance suite on the in-memory store, plus its compaction behaviour.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use calyx_datastore::store::memory::MemoryStore;
use calyx_datastore::store::{Store, WatchEvent};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_watch_from_a_compacted_revision_resyncs() {
    let store = MemoryStore::new();
    let r1 = store.create("/p/a", b"1".to_vec()).await.unwrap();
    let r2 = store.update("/p/a", b"2".to_vec(), r1).await.unwrap();
    store.compact(r2);
    let mut watch = store.watch("/p/", r1).await.unwrap();
    match conformance::next_event(&mut watch).await {
        WatchEvent::Resync(listing) => {
            assert_eq!(listing.kvs.len(), 1);
            assert_eq!(listing.kvs[0].value, b"2");
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let r3 = store.create("/p/b", b"b".to_vec()).await.unwrap();
    assert_eq!(conformance::next_event(&mut watch).await.revision(), r3);
}
