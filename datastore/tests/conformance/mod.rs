//! One conformance suite for every [`Store`] backend: the in-memory store and real etcd must
//! behave the same, because the crates above are unit-tested on the first and run on the second.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use calyx_datastore::store::{
    Operation, Precondition, Store, StoreError, Transaction, Watch, WatchEvent,
};

/// Runs every check under its own key prefix.
pub async fn run_all<S: Store + Clone>(store: &S) {
    create_get_and_duplicate(store, "/conf/create/").await;
    update_is_guarded_by_revision(store, "/conf/update/").await;
    delete_is_guarded_by_revision(store, "/conf/delete/").await;
    list_returns_only_the_prefix_in_order(store, "/conf/list/").await;
    transactions_are_all_or_nothing(store, "/conf/txn/").await;
    watch_replays_from_a_revision_and_follows(store, "/conf/watch/").await;
    concurrent_compare_and_swap_loses_no_update(store, "/conf/cas/").await;
    large_listing_is_complete(store, "/conf/large/").await;
}

async fn create_get_and_duplicate<S: Store>(store: &S, p: &str) {
    let key = format!("{p}a");
    assert!(store.get(&key).await.unwrap().is_none());
    let rev = store.create(&key, b"one".to_vec()).await.unwrap();
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.mod_revision, rev);
    assert_eq!(kv.create_revision, rev);
    match store.create(&key, b"two".to_vec()).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("second create gave {other:?}"),
    }
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"one");
}

async fn update_is_guarded_by_revision<S: Store>(store: &S, p: &str) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"v1".to_vec()).await.unwrap();
    let r2 = store.update(&key, b"v2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    match store.update(&key, b"stale".to_vec(), r1).await {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, r1);
            assert_eq!(found, r2);
        }
        other => panic!("stale update gave {other:?}"),
    }
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(kv.value, b"v2");
    assert_eq!(
        kv.create_revision, r1,
        "an update keeps the create revision"
    );
    match store.update(&format!("{p}missing"), b"x".to_vec(), 5).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("update of a missing key gave {other:?}"),
    }
}

async fn delete_is_guarded_by_revision<S: Store>(store: &S, p: &str) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"v1".to_vec()).await.unwrap();
    let r2 = store.update(&key, b"v2".to_vec(), r1).await.unwrap();
    assert!(matches!(
        store.delete(&key, Some(r1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.get(&key).await.unwrap().is_some());
    store.delete(&key, Some(r2)).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
    assert!(matches!(
        store.delete(&key, None).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn list_returns_only_the_prefix_in_order<S: Store>(store: &S, p: &str) {
    for name in ["c", "a", "b"] {
        store
            .create(&format!("{p}in/{name}"), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let last = store
        .create(&format!("{p}inside"), b"x".to_vec())
        .await
        .unwrap();
    store
        .create(&format!("{p}out/a"), b"x".to_vec())
        .await
        .unwrap();
    let listing = store.list(&format!("{p}in/")).await.unwrap();
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [format!("{p}in/a"), format!("{p}in/b"), format!("{p}in/c")]
    );
    assert!(listing.revision > last);
    assert!(store
        .list(&format!("{p}nothing/"))
        .await
        .unwrap()
        .kvs
        .is_empty());
}

async fn transactions_are_all_or_nothing<S: Store>(store: &S, p: &str) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let ra = store.create(&a, b"a".to_vec()).await.unwrap();
    // One failing precondition: nothing is written.
    let failing = Transaction::new()
        .when(Precondition::ModRevision(a.clone(), ra))
        .when(Precondition::Exists(b.clone()))
        .then(Operation::put(&a, b"a2".to_vec()))
        .then(Operation::put(&c, b"c".to_vec()));
    assert!(matches!(
        store.transaction(failing).await,
        Err(StoreError::TransactionFailed)
    ));
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, b"a");
    assert!(store.get(&c).await.unwrap().is_none());
    // All hold: every write lands at one revision.
    let ok = Transaction::new()
        .when(Precondition::ModRevision(a.clone(), ra))
        .when(Precondition::Absent(b.clone()))
        .then(Operation::put(&a, b"a2".to_vec()))
        .then(Operation::put(&b, b"b".to_vec()))
        .then(Operation::delete(&c));
    let rev = store.transaction(ok).await.unwrap();
    let ka = store.get(&a).await.unwrap().unwrap();
    let kb = store.get(&b).await.unwrap().unwrap();
    assert_eq!((ka.mod_revision, kb.mod_revision), (rev, rev));
    assert_eq!(ka.value, b"a2");
}

/// The next event, failing the test if none comes within 10 s.
pub async fn next_event(watch: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

async fn watch_replays_from_a_revision_and_follows<S: Store>(store: &S, p: &str) {
    let a = format!("{p}a");
    let r1 = store.create(&a, b"1".to_vec()).await.unwrap();
    let r2 = store.update(&a, b"2".to_vec(), r1).await.unwrap();
    store
        .create(&format!("/conf/elsewhere{p}"), b"x".to_vec())
        .await
        .unwrap();
    let mut watch = store.watch(p, r1).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], r1)),
        other => panic!("expected the first put, got {other:?}"),
    }
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"2"[..], r2)),
        other => panic!("expected the second put, got {other:?}"),
    }
    let r3 = store.delete(&a, Some(r2)).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Delete { key, revision } => assert_eq!((key, revision), (a.clone(), r3)),
        other => panic!("expected the delete, got {other:?}"),
    }
    let r4 = store.create(&format!("{p}b"), b"b".to_vec()).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, r4),
        other => panic!("expected the live put, got {other:?}"),
    }
}

async fn concurrent_compare_and_swap_loses_no_update<S: Store + Clone>(store: &S, p: &str) {
    let key = format!("{p}counter");
    store.create(&key, b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let kv = store.get(&key).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    match store
                        .update(&key, (n + 1).to_string().into_bytes(), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"100");
}

async fn large_listing_is_complete<S: Store>(store: &S, p: &str) {
    // More keys than one etcd page (1000) so that paging is exercised.
    for chunk in 0..25 {
        let mut txn = Transaction::new();
        for i in 0..100 {
            txn = txn.then(Operation::put(
                format!("{p}{:05}", chunk * 100 + i),
                vec![b'x'; 16],
            ));
        }
        store.transaction(txn).await.unwrap();
    }
    let listing = store.list(p).await.unwrap();
    assert_eq!(listing.kvs.len(), 2500);
    assert!(listing.kvs.windows(2).all(|w| w[0].key < w[1].key));
}
