//! The [`Ipam`] handle and address assignment.
//!
//! # Assignment
//!
//! Requests for one `(node, family)` go through one in-process queue. Whoever holds the node's
//! lock takes every request queued so far and serves them together with **one** transaction:
//! the blocks they take addresses from (guarded by the revision read) and one handle record per
//! request (guarded by "absent", or by its revision when the handle already holds addresses).
//! With one allocator that is one transaction per assign; with 64 concurrent allocators it is
//! one transaction per batch instead of 64 transactions that fight over one block.
//!
//! The node's affine blocks are cached with their revisions, so the common path reads nothing.
//! A failed transaction means someone else wrote: the blocks are re-read (and the handles, which
//! is how a retried request finds the addresses it already holds), and the batch is tried again
//! after a jittered pause, up to the retry bound.
//!
//! A request the affine blocks cannot serve takes the slow path: claim a new block (one
//! transaction creates the block, its affinity and the allocation, so that two nodes racing for
//! one block cannot both win), else borrow from another node's block unless `strictAffinity`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use calyx_datastore::store::{
    KeyValue, Operation, Precondition, Revision, Store, StoreError, Transaction,
};
use futures::future::join_all;
use ipnet::IpNet;
use rand::Rng;
use tokio::sync::oneshot;

use crate::block;
use crate::error::{IpamError, Result};
use crate::model::{
    affinity_key, block_key, handle_key, host_affinity_prefix, AffinityState, AllocationAttribute,
    AllocationBlock, BlockAffinity, IPAMConfig, IPAMHandle, BLOCK_KEY_PREFIX, IPAM_CONFIG_KEY,
};
use crate::pools::{self, Pool};
use crate::retry::RetryPolicy;
use crate::types::{is_tunnel_type, AssignArgs, Family};

/// Most requests served by one transaction (etcd allows 128 operations per transaction).
const MAX_BATCH: usize = 48;

/// The IPAM: cheap to clone, safe to share between tasks.
pub struct Ipam<S: Store> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Ipam<S> {
    fn clone(&self) -> Self {
        Ipam {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store> std::fmt::Debug for Ipam<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("policy", &self.inner.policy)
            .finish()
    }
}

pub(crate) struct Inner<S> {
    pub(crate) store: Arc<S>,
    pub(crate) policy: RetryPolicy,
    allocators: Mutex<HashMap<(String, Family), Arc<NodeAllocator>>>,
    pub(crate) gc_seen: Mutex<HashMap<String, Instant>>,
    stats: StatsCounters,
}

#[derive(Default)]
struct StatsCounters {
    batches: AtomicU64,
    batched_requests: AtomicU64,
    conflicts: AtomicU64,
    slow_paths: AtomicU64,
    claims: AtomicU64,
}

/// Counters of the assign path since the [`Ipam`] was made (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AssignStats {
    /// Transactions committed by the batch path.
    pub batches: u64,
    /// Requests served by those transactions.
    pub batched_requests: u64,
    /// Transactions of the assign path that failed their preconditions.
    pub conflicts: u64,
    /// Requests that took the slow path (claim or borrow).
    pub slow_paths: u64,
    /// Blocks claimed.
    pub claims: u64,
}

/// The per-(node, family) queue and block cache.
#[derive(Default)]
struct NodeAllocator {
    queue: Mutex<Vec<Pending>>,
    cache: tokio::sync::Mutex<NodeCache>,
}

#[derive(Default)]
struct NodeCache {
    loaded: bool,
    blocks: BTreeMap<IpNet, Cached>,
}

#[derive(Clone)]
struct Cached {
    block: AllocationBlock,
    rev: Revision,
}

struct Pending {
    args: AssignArgs,
    tx: oneshot::Sender<Result<Vec<IpAddr>>>,
}

/// What is known about a request's handle record.
#[derive(Clone)]
enum HandleState {
    /// Believed absent: the transaction requires it to be.
    Absent,
    /// Present at this revision.
    Present(IPAMHandle, Revision),
}

/// One request being served.
struct Work {
    args: AssignArgs,
    attr: AllocationAttribute,
    tunnel: bool,
    handle: HandleState,
    /// Addresses of the family the handle already holds.
    existing: Vec<IpAddr>,
    tx: oneshot::Sender<Result<Vec<IpAddr>>>,
}

impl Work {
    fn need(&self) -> usize {
        self.args.count.saturating_sub(self.existing.len())
    }

    fn finish(self, result: Result<Vec<IpAddr>>) {
        // The caller may have gone away; nothing to do then.
        let _ = self.tx.send(result);
    }

    fn finish_ok(mut self) {
        self.existing.truncate(self.args.count);
        let addrs = std::mem::take(&mut self.existing);
        self.finish(Ok(addrs));
    }

    /// The precondition on the handle key.
    fn handle_guard(&self) -> Precondition {
        let key = handle_key(&self.args.handle);
        match &self.handle {
            HandleState::Absent => Precondition::Absent(key),
            HandleState::Present(_, rev) => Precondition::ModRevision(key, *rev),
        }
    }

    /// The handle record after adding `added` (block -> count).
    fn handle_after(&self, added: &BTreeMap<IpNet, u32>) -> IPAMHandle {
        let mut h = match &self.handle {
            HandleState::Absent => IPAMHandle::default(),
            HandleState::Present(h, _) => h.clone(),
        };
        h.handle_id = self.args.handle.clone();
        h.deleted = false;
        for (cidr, n) in added {
            *h.block.entry(cidr.to_string()).or_insert(0) += n;
        }
        h
    }
}

impl<S: Store> Ipam<S> {
    /// An IPAM on `store` with the default retry policy.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// An IPAM on a shared store.
    pub fn from_arc(store: Arc<S>) -> Self {
        Self::with_policy(store, RetryPolicy::default())
    }

    /// An IPAM with an explicit retry policy.
    pub fn with_policy(store: Arc<S>, policy: RetryPolicy) -> Self {
        Ipam {
            inner: Arc::new(Inner {
                store,
                policy,
                allocators: Mutex::new(HashMap::new()),
                gc_seen: Mutex::new(HashMap::new()),
                stats: StatsCounters::default(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Counters of the assign path.
    pub fn assign_stats(&self) -> AssignStats {
        let s = &self.inner.stats;
        AssignStats {
            batches: s.batches.load(Ordering::Relaxed),
            batched_requests: s.batched_requests.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            slow_paths: s.slow_paths.load(Ordering::Relaxed),
            claims: s.claims.load(Ordering::Relaxed),
        }
    }

    /// The shared store.
    pub fn store_arc(&self) -> Arc<S> {
        Arc::clone(&self.inner.store)
    }

    pub(crate) fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    /// The IPAM configuration (Calico's default when none is stored).
    pub async fn config(&self) -> Result<IPAMConfig> {
        Ok(self.config_with_rev().await?.0)
    }

    pub(crate) async fn config_with_rev(&self) -> Result<(IPAMConfig, Option<Revision>)> {
        match self.store().get(IPAM_CONFIG_KEY).await? {
            None => Ok((IPAMConfig::default(), None)),
            Some(kv) => Ok((decode(&kv)?, Some(kv.mod_revision))),
        }
    }

    /// Changes the IPAM configuration (`calyx ipam configure`); `None` leaves a setting as it is.
    /// Returns the configuration now stored.
    pub async fn configure(
        &self,
        strict_affinity: Option<bool>,
        max_blocks_per_host: Option<u32>,
        auto_allocate_blocks: Option<bool>,
    ) -> Result<IPAMConfig> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut cfg, rev) = self.config_with_rev().await?;
            if let Some(s) = strict_affinity {
                cfg.strict_affinity = s;
            }
            if let Some(m) = max_blocks_per_host {
                cfg.max_blocks_per_host = m;
            }
            if let Some(a) = auto_allocate_blocks {
                cfg.auto_allocate_blocks = a;
            }
            let guard = match rev {
                None => Precondition::Absent(IPAM_CONFIG_KEY.to_string()),
                Some(r) => Precondition::ModRevision(IPAM_CONFIG_KEY.to_string(), r),
            };
            let txn = Transaction::new()
                .when(guard)
                .then(Operation::put(IPAM_CONFIG_KEY, encode(&cfg)));
            match self.store().transaction(txn).await {
                Ok(_) => return Ok(cfg),
                Err(e) => self.retry_or_fail("configure", attempt, e).await?,
            }
        }
    }

    /// Reads several keys concurrently.
    pub(crate) async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Vec<std::result::Result<Option<KeyValue>, StoreError>> {
        let store = self.store();
        join_all(keys.iter().map(|k| store.get(k))).await
    }

    /// After a failed write: pause and return `Ok` to retry, or the error when it is not
    /// retryable or the bound is reached.
    pub(crate) async fn retry_or_fail(
        &self,
        operation: &str,
        attempt: u32,
        err: StoreError,
    ) -> Result<()> {
        let policy = self.policy();
        let conflict = matches!(
            err,
            StoreError::TransactionFailed | StoreError::Conflict { .. }
        );
        let unavailable = matches!(err, StoreError::Unavailable { .. });
        if !conflict && !unavailable {
            return Err(err.into());
        }
        if conflict && attempt >= policy.max_attempts {
            return Err(IpamError::TooManyConflicts {
                operation: operation.to_string(),
                attempts: attempt,
            });
        }
        if unavailable && attempt >= policy.max_unavailable_attempts {
            return Err(err.into());
        }
        tracing::debug!(operation, attempt, error = %err, "retrying");
        if conflict {
            policy.pause_conflict(attempt).await;
        } else {
            policy.pause(attempt).await;
        }
        Ok(())
    }

    /// Assigns `args.count` addresses of `args.family` to `args.handle` on `args.node`.
    ///
    /// Idempotent per handle: when the handle already holds addresses of the family, those are
    /// returned (and only the missing ones, if any, are added).
    pub async fn assign(&self, args: AssignArgs) -> Result<Vec<IpAddr>> {
        if args.handle.is_empty() || args.handle.contains('/') {
            return Err(IpamError::Invalid(format!(
                "handle ID {:?} must be non-empty and contain no '/'",
                args.handle
            )));
        }
        if args.node.is_empty() || args.node.contains('/') {
            return Err(IpamError::Invalid(format!(
                "node name {:?} must be non-empty and contain no '/'",
                args.node
            )));
        }
        if args.count == 0 {
            return Ok(Vec::new());
        }
        let alloc = self.allocator(&args.node, args.family);
        // Bounded: each round either serves our request or finds that the task serving it was
        // cancelled (its result channel dropped), which can only happen a few times.
        for _ in 0..64 {
            let (tx, mut rx) = oneshot::channel();
            lock(&alloc.queue).push(Pending {
                args: args.clone(),
                tx,
            });
            // Wait for whichever comes first: our result (someone else's batch served us), or
            // the node's lock (then serve everything queued so far, ours included). Waiting for
            // the lock alone would make every served caller queue for it once more before it
            // can read its result, and the callers would convoy into batches of one.
            let result = tokio::select! {
                biased;
                r = &mut rx => r,
                mut cache = alloc.cache.lock() => {
                    let batch = std::mem::take(&mut *lock(&alloc.queue));
                    if !batch.is_empty() {
                        self.serve(&mut cache, batch).await;
                    }
                    drop(cache);
                    (&mut rx).await
                }
            };
            if let Ok(result) = result {
                return result;
            }
        }
        Err(IpamError::Invalid(
            "assign: the tasks serving this request kept being cancelled".to_string(),
        ))
    }

    fn allocator(&self, node: &str, family: Family) -> Arc<NodeAllocator> {
        let mut map = lock(&self.inner.allocators);
        Arc::clone(map.entry((node.to_string(), family)).or_default())
    }

    /// Updates (or drops) a cached block after a write outside the batch path. Best effort: a
    /// cache that is busy is left alone and finds out through its next compare-and-swap.
    pub(crate) fn note_block_written(
        &self,
        cidr: IpNet,
        block: Option<&AllocationBlock>,
        rev: Revision,
    ) {
        let family = Family::of_net(&cidr);
        let allocators: Vec<Arc<NodeAllocator>> = lock(&self.inner.allocators)
            .iter()
            .filter(|((_, f), _)| *f == family)
            .map(|(_, a)| Arc::clone(a))
            .collect();
        for a in allocators {
            if let Ok(mut cache) = a.cache.try_lock() {
                if let Some(entry) = cache.blocks.get_mut(&cidr) {
                    match block {
                        Some(b) => {
                            *entry = Cached {
                                block: b.clone(),
                                rev,
                            };
                        }
                        None => {
                            cache.blocks.remove(&cidr);
                        }
                    }
                }
            }
        }
    }

    /// Forgets the cached blocks of `node`.
    pub(crate) fn forget_node(&self, node: &str) {
        lock(&self.inner.allocators).retain(|(n, _), _| n != node);
    }

    /// Serves a batch: requests with distinct handles together, repeated handles afterwards.
    async fn serve(&self, cache: &mut NodeCache, batch: Vec<Pending>) {
        let mut rest: Vec<Pending> = batch;
        while !rest.is_empty() {
            let mut seen = HashSet::new();
            let mut round = Vec::new();
            let mut later = Vec::new();
            for p in rest {
                if round.len() < MAX_BATCH && seen.insert(p.args.handle.clone()) {
                    round.push(p);
                } else {
                    later.push(p);
                }
            }
            self.serve_round(cache, round).await;
            rest = later;
        }
    }

    async fn serve_round(&self, cache: &mut NodeCache, round: Vec<Pending>) {
        let mut works: Vec<Work> = round
            .into_iter()
            .map(|p| {
                let attr = p.args.attrs.to_attribute(&p.args.handle, &p.args.node);
                let tunnel = p.args.attrs.kind.as_deref().is_some_and(is_tunnel_type);
                Work {
                    args: p.args,
                    attr,
                    tunnel,
                    handle: HandleState::Absent,
                    existing: Vec::new(),
                    tx: p.tx,
                }
            })
            .collect();
        // Every pass serves what the cached blocks can serve in one transaction, then one
        // request through the slow path (which usually claims a block the others then share).
        while !works.is_empty() {
            let slow = self.serve_batch(cache, works).await;
            let mut slow = slow.into_iter();
            let Some(first) = slow.next() else {
                break;
            };
            self.inner.stats.slow_paths.fetch_add(1, Ordering::Relaxed);
            match self.assign_slow(cache, first).await {
                Ok(mut w) => {
                    w.existing.truncate(w.args.count);
                    let addrs = std::mem::take(&mut w.existing);
                    w.finish(Ok(addrs));
                }
                Err((w, e)) => w.finish(Err(e)),
            }
            works = slow.collect();
        }
    }

    /// Serves `open` from the cached affine blocks in one transaction (retried on conflict);
    /// returns the requests they cannot serve.
    async fn serve_batch(&self, cache: &mut NodeCache, mut open: Vec<Work>) -> Vec<Work> {
        let Some(first) = open.first() else {
            return Vec::new();
        };
        let node = first.args.node.clone();
        let family = first.args.family;
        let mut slow: Vec<Work> = Vec::new();
        let mut read_handles = false;
        let mut pools: Option<Vec<Pool>> = None;
        let mut reserved: Option<Vec<IpNet>> = None;
        let mut attempt = 0u32;
        while !open.is_empty() {
            attempt += 1;
            if !cache.loaded {
                match self.load_affine(&node, family).await {
                    Ok(blocks) => {
                        cache.blocks = blocks;
                        cache.loaded = true;
                    }
                    Err(e) => {
                        if let Err(e) = self.retry_or_fail("assign", attempt, e).await {
                            fail_all(open, &e);
                            return slow;
                        }
                        continue;
                    }
                }
            }
            if read_handles {
                match self.refresh_handles(&mut open).await {
                    Ok(()) => {}
                    Err(e) => {
                        if attempt >= self.policy().max_unavailable_attempts || !e.is_transient() {
                            fail_all(open, &e);
                            return slow;
                        }
                        self.policy().pause(attempt).await;
                        continue;
                    }
                }
                let (done, still): (Vec<Work>, Vec<Work>) =
                    open.into_iter().partition(|w| w.need() == 0);
                done.into_iter().for_each(Work::finish_ok);
                open = still;
                if open.is_empty() {
                    break;
                }
            }
            // Always read: even an unrestricted request must know which cached blocks belong
            // to `Manual` pools (claimed earlier for a request that named the pool).
            if pools.is_none() {
                match pools::list_pools(self.store()).await {
                    Ok(p) => pools = Some(p),
                    Err(e) => {
                        fail_all(open, &e);
                        return slow;
                    }
                }
            }
            if reserved.is_none() {
                match pools::list_reserved(self.store()).await {
                    Ok(r) => reserved = Some(r),
                    Err(e) => {
                        fail_all(open, &e);
                        return slow;
                    }
                }
            }
            let reserved_nets: &[IpNet] = reserved.as_deref().unwrap_or_default();
            // Plan: take addresses from copies of the cached blocks.
            let mut scratch: BTreeMap<IpNet, AllocationBlock> = BTreeMap::new();
            let mut planned: Vec<(Work, BTreeMap<IpNet, Vec<usize>>)> = Vec::new();
            for w in open.drain(..) {
                let need = w.need();
                if need == 0 {
                    w.finish_ok();
                    continue;
                }
                let eligible: Vec<IpNet> = cache
                    .blocks
                    .iter()
                    .filter(|(cidr, c)| {
                        !c.block.deleted
                            && block_allowed(cidr, w.args.pools.as_deref(), pools.as_deref())
                    })
                    .map(|(cidr, _)| *cidr)
                    .collect();
                let free: usize = eligible
                    .iter()
                    .map(|cidr| match scratch.get(cidr) {
                        Some(b) => block::free_unreserved(b, reserved_nets),
                        None => cache
                            .blocks
                            .get(cidr)
                            .map_or(0, |c| block::free_unreserved(&c.block, reserved_nets)),
                    })
                    .sum();
                if free < need {
                    slow.push(w);
                    continue;
                }
                let mut taken = BTreeMap::new();
                let mut remaining = need;
                for cidr in eligible {
                    if remaining == 0 {
                        break;
                    }
                    let Some(cached) = cache.blocks.get(&cidr) else {
                        continue;
                    };
                    // Only blocks that give addresses go into the transaction.
                    let free_here = scratch.get(&cidr).map_or_else(
                        || block::free_unreserved(&cached.block, reserved_nets),
                        |b| block::free_unreserved(b, reserved_nets),
                    );
                    if free_here == 0 {
                        continue;
                    }
                    let b = scratch.entry(cidr).or_insert_with(|| cached.block.clone());
                    let got = block::allocate_unreserved(b, remaining, &w.attr, reserved_nets);
                    remaining -= got.len();
                    if !got.is_empty() {
                        taken.insert(cidr, got);
                    }
                }
                planned.push((w, taken));
            }
            if planned.is_empty() {
                break;
            }
            let mut txn = Transaction::new();
            for (cidr, b) in &scratch {
                let rev = cache.blocks.get(cidr).map_or(0, |c| c.rev);
                txn = txn
                    .when(Precondition::ModRevision(block_key(cidr), rev))
                    .then(Operation::put(block_key(cidr), encode(b)));
            }
            for (w, taken) in &planned {
                let added = taken
                    .iter()
                    .map(|(c, o)| (*c, u32::try_from(o.len()).unwrap_or(u32::MAX)))
                    .collect();
                txn = txn.when(w.handle_guard()).then(Operation::put(
                    handle_key(&w.args.handle),
                    encode(&w.handle_after(&added)),
                ));
            }
            match self.store().transaction(txn).await {
                Ok(rev) => {
                    let stats = &self.inner.stats;
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats
                        .batched_requests
                        .fetch_add(planned.len() as u64, Ordering::Relaxed);
                    for (cidr, b) in scratch {
                        cache.blocks.insert(cidr, Cached { block: b, rev });
                    }
                    for (mut w, taken) in planned {
                        for (cidr, ordinals) in taken {
                            w.existing.extend(
                                ordinals
                                    .into_iter()
                                    .filter_map(|o| block_ordinal_ip(&cidr, o)),
                            );
                        }
                        w.finish_ok();
                    }
                    break;
                }
                Err(e) => {
                    open = planned.into_iter().map(|(w, _)| w).collect();
                    let conflict = matches!(e, StoreError::TransactionFailed);
                    if conflict {
                        self.inner.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = self.retry_or_fail("assign", attempt, e).await {
                        fail_all(open, &e);
                        return slow;
                    }
                    if conflict {
                        let touched: Vec<IpNet> = scratch.keys().copied().collect();
                        match self.refresh_blocks(cache, &node, &touched).await {
                            // Unchanged blocks: a handle must be what failed.
                            Ok(changed) => read_handles = !changed || attempt >= 2,
                            Err(_) => {
                                cache.loaded = false;
                                read_handles = true;
                            }
                        }
                    } else {
                        // Unavailable: the write may or may not have happened; re-read all.
                        cache.loaded = false;
                        read_handles = true;
                    }
                }
            }
        }
        if !open.is_empty() {
            let e = IpamError::TooManyConflicts {
                operation: "assign".to_string(),
                attempts: attempt,
            };
            fail_all(open, &e);
        }
        slow
    }

    /// Reads the handle records of `works` and the addresses they already hold.
    async fn refresh_handles(&self, works: &mut [Work]) -> Result<()> {
        let reads = works
            .iter()
            .map(|w| self.read_handle(&w.args.handle, w.args.family));
        let results = join_all(reads).await;
        for (w, r) in works.iter_mut().zip(results) {
            let (state, existing) = r?;
            w.handle = state;
            w.existing = existing;
        }
        Ok(())
    }

    /// A handle's record and the addresses of `family` it holds.
    async fn read_handle(
        &self,
        handle: &str,
        family: Family,
    ) -> Result<(HandleState, Vec<IpAddr>)> {
        let Some(kv) = self.store().get(&handle_key(handle)).await? else {
            return Ok((HandleState::Absent, Vec::new()));
        };
        let record: IPAMHandle = decode(&kv)?;
        let cidrs: Vec<IpNet> = record
            .block
            .keys()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .filter(|c| Family::of_net(c) == family)
            .collect();
        let blocks = self.get_many(cidrs.iter().map(block_key).collect()).await;
        let mut addrs = Vec::new();
        for b in blocks {
            if let Some(kv) = b? {
                let blk: AllocationBlock = decode(&kv)?;
                addrs.extend(block::addresses_of(&blk, handle));
            }
        }
        Ok((HandleState::Present(record, kv.mod_revision), addrs))
    }

    /// Re-reads cached blocks; returns whether any of them changed.
    async fn refresh_blocks(
        &self,
        cache: &mut NodeCache,
        node: &str,
        cidrs: &[IpNet],
    ) -> Result<bool> {
        let reads = self.get_many(cidrs.iter().map(block_key).collect()).await;
        let mut changed = false;
        for (cidr, r) in cidrs.iter().zip(reads) {
            let old = cache.blocks.get(cidr).map(|c| c.rev);
            match r? {
                Some(kv) => {
                    let b: AllocationBlock = decode(&kv)?;
                    if old != Some(kv.mod_revision) {
                        changed = true;
                    }
                    if b.affine_host() == Some(node) {
                        cache.blocks.insert(
                            *cidr,
                            Cached {
                                block: b,
                                rev: kv.mod_revision,
                            },
                        );
                    } else {
                        cache.blocks.remove(cidr);
                    }
                }
                None => {
                    changed = true;
                    cache.blocks.remove(cidr);
                }
            }
        }
        Ok(changed)
    }

    /// The blocks affine to `node` in `family`, by its affinity keys.
    async fn load_affine(
        &self,
        node: &str,
        family: Family,
    ) -> std::result::Result<BTreeMap<IpNet, Cached>, StoreError> {
        let prefix = format!("{}{}/block/", host_affinity_prefix(node), family.key_part());
        let listing = self.store().list(&prefix).await?;
        let cidrs: Vec<IpNet> = listing
            .kvs
            .iter()
            .filter_map(|kv| crate::model::affinity_from_key(&kv.key).map(|(_, c)| c))
            .collect();
        let reads = self.get_many(cidrs.iter().map(block_key).collect()).await;
        let mut out = BTreeMap::new();
        for (cidr, r) in cidrs.into_iter().zip(reads) {
            let Some(kv) = r? else { continue };
            let Ok(b) = serde_json::from_slice::<AllocationBlock>(&kv.value) else {
                tracing::warn!(key = %kv.key, "skipping undecodable block");
                continue;
            };
            if b.affine_host() == Some(node) && !b.deleted {
                out.insert(
                    cidr,
                    Cached {
                        block: b,
                        rev: kv.mod_revision,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Claims a block or borrows, for a request the cached affine blocks cannot serve.
    async fn assign_slow(
        &self,
        cache: &mut NodeCache,
        mut w: Work,
    ) -> std::result::Result<Work, (Work, IpamError)> {
        let node = w.args.node.clone();
        let family = w.args.family;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if w.need() == 0 {
                return Ok(w);
            }
            let plan = match self.plan_slow(cache, &w).await {
                Ok(p) => p,
                Err(e) => {
                    if e.is_transient() && attempt < self.policy().max_unavailable_attempts {
                        self.policy().pause(attempt).await;
                        continue;
                    }
                    if matches!(e, IpamError::Exhausted { .. }) {
                        // No room is no answer for a handle that already holds its addresses
                        // (a retried ADD whose first try was written, say, after a failover
                        // lost the answer): assign is idempotent per handle, full pool or not.
                        match self.read_handle(&w.args.handle, family).await {
                            Ok((state, existing)) => {
                                w.handle = state;
                                w.existing = existing;
                                if w.need() == 0 {
                                    return Ok(w);
                                }
                            }
                            Err(re) => return Err((w, re)),
                        }
                    }
                    return Err((w, e));
                }
            };
            let SlowPlan {
                cidr,
                mut block,
                guard,
                claim,
                affine,
                reserved,
            } = plan;
            let got = block::allocate_unreserved(&mut block, w.need(), &w.attr, &reserved);
            if got.is_empty() {
                // The plan promised room; the block must have been stale. Re-read.
                cache.loaded = false;
                continue;
            }
            let added = BTreeMap::from([(cidr, u32::try_from(got.len()).unwrap_or(u32::MAX))]);
            let mut txn = Transaction::new()
                .when(guard)
                .when(w.handle_guard())
                .then(Operation::put(block_key(&cidr), encode(&block)))
                .then(Operation::put(
                    handle_key(&w.args.handle),
                    encode(&w.handle_after(&added)),
                ));
            if claim {
                let aff = BlockAffinity {
                    state: AffinityState::Confirmed,
                    deleted: false,
                };
                txn = txn
                    .when(Precondition::Absent(affinity_key(&node, &cidr)))
                    .then(Operation::put(affinity_key(&node, &cidr), encode(&aff)));
            }
            match self.store().transaction(txn).await {
                Ok(rev) => {
                    if claim {
                        self.inner.stats.claims.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %node, block = %cidr, "claimed block");
                    } else if !affine {
                        tracing::info!(node = %node, block = %cidr, "borrowed address from another node's block");
                    }
                    w.existing
                        .extend(got.into_iter().filter_map(|o| block_ordinal_ip(&cidr, o)));
                    let record = w.handle_after(&added);
                    w.handle = HandleState::Present(record, rev);
                    if affine {
                        cache.blocks.insert(cidr, Cached { block, rev });
                    }
                }
                Err(e) => {
                    if let Err(e) = self.retry_or_fail("assign", attempt, e).await {
                        return Err((w, e));
                    }
                    cache.loaded = false;
                    match self.read_handle(&w.args.handle, family).await {
                        Ok((state, existing)) => {
                            w.handle = state;
                            w.existing = existing;
                        }
                        Err(e) if e.is_transient() => {}
                        Err(e) => return Err((w, e)),
                    }
                }
            }
        }
    }

    async fn plan_slow(&self, cache: &mut NodeCache, w: &Work) -> Result<SlowPlan> {
        let node = w.args.node.as_str();
        let family = w.args.family;
        if !cache.loaded {
            cache.blocks = self.load_affine(node, family).await?;
            cache.loaded = true;
        }
        let all_pools = pools::list_pools(self.store()).await?;
        let reserved = pools::list_reserved(self.store()).await?;
        let free = |b: &AllocationBlock| block::free_unreserved(b, &reserved);
        let allowed = |cidr: &IpNet| block_allowed(cidr, w.args.pools.as_deref(), Some(&all_pools));
        // An affine block with room (the cache may have been refreshed since the batch).
        if let Some((cidr, c)) = cache
            .blocks
            .iter()
            .find(|(cidr, c)| !c.block.deleted && allowed(cidr) && free(&c.block) > 0)
        {
            return Ok(SlowPlan {
                cidr: *cidr,
                block: c.block.clone(),
                guard: Precondition::ModRevision(block_key(cidr), c.rev),
                claim: false,
                affine: true,
                reserved,
            });
        }
        let (cfg, _) = self.config_with_rev().await?;
        let labels = pools::node_labels(self.store(), node)
            .await?
            .unwrap_or_default();
        let usable = pools::usable_pools(
            &all_pools,
            family,
            &labels,
            w.tunnel,
            w.args.pools.as_deref(),
        )?;
        if usable.is_empty() {
            let reason = match &w.args.pools {
                Some(p) => format!("none of the requested pools {p:?} is an enabled {family} pool"),
                None => format!("no enabled {family} IP pool selects this node"),
            };
            return Err(IpamError::Exhausted {
                family,
                node: node.to_string(),
                reason,
            });
        }
        let listing = self
            .store()
            .list(&format!("{BLOCK_KEY_PREFIX}{}/block/", family.key_part()))
            .await?;
        let mut existing: BTreeMap<IpNet, (AllocationBlock, Revision)> = BTreeMap::new();
        for kv in &listing.kvs {
            if let Ok(b) = serde_json::from_slice::<AllocationBlock>(&kv.value) {
                existing.insert(b.cidr, (b, kv.mod_revision));
            }
        }
        // Blocks affine to this node that the cache did not know (claimed by another process).
        let mut found_affine = false;
        for (cidr, (b, rev)) in &existing {
            if b.affine_host() == Some(node) && !b.deleted && !cache.blocks.contains_key(cidr) {
                cache.blocks.insert(
                    *cidr,
                    Cached {
                        block: b.clone(),
                        rev: *rev,
                    },
                );
                found_affine = found_affine || (allowed(cidr) && free(b) > 0);
            }
        }
        if found_affine {
            return Box::pin(self.plan_slow(cache, w)).await;
        }
        let affine_count = cache.blocks.len();
        let mut reason;
        if !cfg.auto_allocate_blocks {
            reason = "autoAllocateBlocks is off".to_string();
        } else if cfg.max_blocks_per_host > 0
            && affine_count >= usize::try_from(cfg.max_blocks_per_host).unwrap_or(usize::MAX)
        {
            reason = format!(
                "the node has maxBlocksPerHost ({}) blocks, all full",
                cfg.max_blocks_per_host
            );
        } else {
            reason = "every block of the usable pools is claimed".to_string();
            for pool in &usable {
                if let Some(cidr) = find_unclaimed(pool, &existing, &reserved) {
                    let mut block = AllocationBlock::new_affine(cidr, node)
                        .ok_or_else(|| IpamError::Invalid(format!("block {cidr} is too large")))?;
                    block.strict_affinity = cfg.strict_affinity;
                    return Ok(SlowPlan {
                        cidr,
                        block,
                        guard: Precondition::Absent(block_key(&cidr)),
                        claim: true,
                        affine: true,
                        reserved,
                    });
                }
            }
        }
        if cfg.strict_affinity {
            reason.push_str(
                ", and strictAffinity is set: borrowing from other nodes' blocks is not allowed",
            );
            return Err(IpamError::Exhausted {
                family,
                node: node.to_string(),
                reason,
            });
        }
        let candidate = existing.iter().find(|(cidr, (b, _))| {
            b.affine_host() != Some(node)
                && !b.deleted
                && !b.strict_affinity
                && usable.iter().any(|p| p.cidr.contains(*cidr))
                && free(b) > 0
        });
        match candidate {
            Some((cidr, (b, rev))) => Ok(SlowPlan {
                cidr: *cidr,
                block: b.clone(),
                guard: Precondition::ModRevision(block_key(cidr), *rev),
                claim: false,
                affine: false,
                reserved,
            }),
            None => {
                reason.push_str(", and no other node's block has a free address to borrow");
                Err(IpamError::Exhausted {
                    family,
                    node: node.to_string(),
                    reason,
                })
            }
        }
    }
}

struct SlowPlan {
    cidr: IpNet,
    block: AllocationBlock,
    guard: Precondition,
    /// Creating the block (and its affinity).
    claim: bool,
    /// The block is affine to the requesting node.
    affine: bool,
    /// The IPReservation networks read with the plan, skipped when allocating.
    reserved: Vec<IpNet>,
}

/// A block of `pool` that does not exist yet and has an address outside `reserved`, looking
/// from a random place so that nodes racing for blocks rarely pick the same one.
pub(crate) fn find_unclaimed(
    pool: &Pool,
    existing: &BTreeMap<IpNet, (AllocationBlock, Revision)>,
    reserved: &[IpNet],
) -> Option<IpNet> {
    let n = pool.block_count();
    if n == 0 {
        return None;
    }
    let start = rand::rng().random_range(0..n);
    (0..n)
        .filter_map(|i| pool.block((start + i) % n))
        .find(|cidr| !existing.contains_key(cidr) && block::fresh_has_unreserved(cidr, reserved))
}

/// Whether a block may serve a request restricted to `wanted` pools. An unrestricted request may
/// use any block but those of `Manual` pools (a block whose pool is gone stays usable, as before).
fn block_allowed(cidr: &IpNet, wanted: Option<&[String]>, pools: Option<&[Pool]>) -> bool {
    let Some(wanted) = wanted else {
        return !pools.is_some_and(|pools| pools.iter().any(|p| p.manual && p.cidr.contains(cidr)));
    };
    pools.is_some_and(|pools| {
        pools
            .iter()
            .any(|p| p.cidr.contains(cidr) && !p.disabled && p.is_named_by(wanted))
    })
}

pub(crate) fn block_ordinal_ip(cidr: &IpNet, ordinal: usize) -> Option<IpAddr> {
    crate::model::ordinal_to_ip(cidr, ordinal)
}

fn fail_all(works: Vec<Work>, e: &IpamError) {
    for w in works {
        w.finish(Err(dup_error(e)));
    }
}

/// A copy of an error, for every waiter of a failed batch.
pub(crate) fn dup_error(e: &IpamError) -> IpamError {
    match e {
        IpamError::Store(s) => IpamError::Store(dup_store_error(s)),
        IpamError::TooManyConflicts {
            operation,
            attempts,
        } => IpamError::TooManyConflicts {
            operation: operation.clone(),
            attempts: *attempts,
        },
        IpamError::Exhausted {
            family,
            node,
            reason,
        } => IpamError::Exhausted {
            family: *family,
            node: node.clone(),
            reason: reason.clone(),
        },
        IpamError::AlreadyAllocated { ip, holder } => IpamError::AlreadyAllocated {
            ip: *ip,
            holder: holder.clone(),
        },
        IpamError::NotInPool { ip } => IpamError::NotInPool { ip: *ip },
        IpamError::NotAllocated { ip } => IpamError::NotAllocated { ip: *ip },
        IpamError::BadSelector {
            pool,
            selector,
            reason,
        } => IpamError::BadSelector {
            pool: pool.clone(),
            selector: selector.clone(),
            reason: reason.clone(),
        },
        IpamError::Decode { key, reason } => IpamError::Decode {
            key: key.clone(),
            reason: reason.clone(),
        },
        IpamError::Invalid(s) => IpamError::Invalid(s.clone()),
    }
}

fn dup_store_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::AlreadyExists { key } => StoreError::AlreadyExists { key: key.clone() },
        StoreError::NotFound { key } => StoreError::NotFound { key: key.clone() },
        StoreError::Conflict {
            key,
            expected,
            found,
        } => StoreError::Conflict {
            key: key.clone(),
            expected: *expected,
            found: *found,
        },
        StoreError::TransactionFailed => StoreError::TransactionFailed,
        StoreError::Unavailable { endpoints, reason } => StoreError::Unavailable {
            endpoints: endpoints.clone(),
            reason: reason.clone(),
        },
        StoreError::Compacted {
            requested,
            compacted,
        } => StoreError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        StoreError::Config(s) => StoreError::Config(s.clone()),
        StoreError::Backend(s) => StoreError::Backend(s.clone()),
    }
}

/// Locks a std mutex, recovering from poisoning (the data are plain maps that stay valid).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Decodes a stored JSON value.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Decode {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// Encodes a value as JSON (these types always serialize).
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
