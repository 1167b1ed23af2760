//! Network policy in the node daemon: a view of the policy kinds and every WorkloadEndpoint
//! (selectors match workloads on every node), kept current by watches, turned into felix's
//! policy state ([`calc`]) and written by a rules engine of its own that owns table
//! `inet calyx-policy` only (the natOutgoing engine owns `inet calyx`), so that each change
//! is one nf_tables transaction and the two never undo each other's work.

pub mod calc;

use std::collections::BTreeMap;
use std::time::Duration;

use calyx_datastore::policy::{PolicyKind, PolicyObject};
use calyx_datastore::resources::{WorkloadEndpoint, WORKLOAD_ENDPOINT_PREFIX};
use calyx_datastore::store::{Listing, Store, WatchEvent};
use calyx_felix::rules::policy::{self, PolicyState};
use calyx_felix::rules::{RulesConfig, RulesEngine, RulesHandle};
use futures::stream::{SelectAll, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::http::SharedStatus;

/// How long changes are gathered before the policy is recomputed.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// The objects policy is computed from.
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    /// WorkloadEndpoints by key.
    pub weps: BTreeMap<String, WorkloadEndpoint>,
    /// Policy objects (every [`PolicyKind`]) by key.
    pub objects: BTreeMap<String, PolicyObject>,
    /// Keys whose stored value could not be decoded (left out; counted in the status).
    pub undecodable: std::collections::BTreeSet<String>,
}

/// Every prefix the policy view is read from.
pub fn prefixes() -> Vec<String> {
    let mut v = vec![WORKLOAD_ENDPOINT_PREFIX.to_string()];
    v.extend(PolicyKind::ALL.iter().map(|k| k.key_prefix()));
    v
}

impl PolicyView {
    /// A Profile by name.
    pub fn profile(&self, name: &str) -> Option<&PolicyObject> {
        self.objects.get(&PolicyKind::Profile.key("", name))
    }

    /// Stores a value read at `key` (an undecodable value is logged, counted and dropped: it
    /// must not stop the rest of the policy).
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.undecodable.remove(key);
        if key.starts_with(WORKLOAD_ENDPOINT_PREFIX) {
            match WorkloadEndpoint::from_json(value) {
                Ok(w) => {
                    self.weps.insert(key.to_string(), w);
                }
                Err(e) => {
                    warn!(key, error = %e, "policy: undecodable WorkloadEndpoint skipped");
                    self.weps.remove(key);
                    self.undecodable.insert(key.to_string());
                }
            }
        } else if let Some((kind, _, _)) = PolicyKind::from_key(key) {
            match PolicyObject::from_stored(kind, value) {
                Ok(o) => {
                    self.objects.insert(key.to_string(), o);
                }
                Err(e) => {
                    warn!(key, error = %e, "policy: undecodable object skipped");
                    self.objects.remove(key);
                    self.undecodable.insert(key.to_string());
                }
            }
        }
    }

    /// Forgets `key`.
    pub fn delete(&mut self, key: &str) {
        self.weps.remove(key);
        self.objects.remove(key);
        self.undecodable.remove(key);
    }

    /// Replaces everything under `prefix` with a listing.
    pub fn replace_prefix(&mut self, prefix: &str, listing: &Listing) {
        self.weps.retain(|k, _| !k.starts_with(prefix));
        self.objects.retain(|k, _| !k.starts_with(prefix));
        self.undecodable.retain(|k| !k.starts_with(prefix));
        for kv in &listing.kvs {
            self.put(&kv.key, &kv.value);
        }
    }

    /// Applies one watch event on `prefix`.
    pub fn apply(&mut self, prefix: &str, event: &WatchEvent) {
        match event {
            WatchEvent::Put(kv) => self.put(&kv.key, &kv.value),
            WatchEvent::Delete { key, .. } => self.delete(key),
            WatchEvent::Resync(listing) => self.replace_prefix(prefix, listing),
        }
    }

    /// Reads every prefix once (for `calyx policy show`).
    pub async fn read<S: Store>(
        store: &S,
    ) -> Result<PolicyView, calyx_datastore::store::StoreError> {
        let mut view = PolicyView::default();
        for p in prefixes() {
            let listing = store.list(&p).await?;
            view.replace_prefix(&p, &listing);
        }
        Ok(view)
    }
}

/// Starts the policy rules engine in this process's network namespace and the task that
/// feeds it from the datastore; both end with `stop`.
/// Its figures go to `status.policy` (`/status`, `/metrics`, `calyx node status`).
pub fn start<S: Store + Clone + 'static>(
    store: S,
    me: String,
    resync: Duration,
    status: SharedStatus,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, calyx_felix::rules::Error> {
    let engine = RulesEngine::new(RulesConfig {
        resync_interval: resync,
        ..RulesConfig::default()
    })?;
    let handle = engine.handle();
    let engine_task = tokio::spawn(engine.run(stop.child_token()));
    // The engine checks the kernel on its own timer: its status is copied every second.
    let reporter = tokio::spawn(report(handle.clone(), status.clone(), stop.child_token()));
    Ok(tokio::spawn(async move {
        run(store, me, handle, &status, stop).await;
        let _ = reporter.await;
        if let Ok(Err(e)) = engine_task.await {
            warn!(error = %e, "policy rules engine ended");
            update(&status, |p| {
                p.rules.last_error = Some(format!("engine ended: {e}"))
            });
        }
    }))
}

fn update(status: &SharedStatus, change: impl FnOnce(&mut crate::status::PolicyStatus)) {
    let mut s = status.write().unwrap_or_else(|p| p.into_inner());
    change(&mut s.policy);
}

async fn report(rules: RulesHandle, status: SharedStatus, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = crate::natrules::status(&rules);
        update(&status, |p| {
            p.enabled = true;
            p.rules = r;
        });
    }
}

/// Lists and watches the prefixes until `stop`; starts over (after a pause) when a watch
/// ends or the store fails.
async fn run<S: Store>(
    store: S,
    me: String,
    rules: RulesHandle,
    status: &SharedStatus,
    stop: CancellationToken,
) {
    let mut sent: Option<PolicyState> = None;
    let mut pause = Duration::from_millis(200);
    loop {
        if stop.is_cancelled() {
            return;
        }
        match watch_once(&store, &me, &rules, &mut sent, status, &stop).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in = ?pause, "policy: datastore watch failed");
                update(status, |p| p.last_error = Some(e));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

fn feed(
    view: &PolicyView,
    me: &str,
    rules: &RulesHandle,
    sent: &mut Option<PolicyState>,
    status: &SharedStatus,
) {
    let state = calc::policy_state(view, me);
    let endpoints = state.endpoints.len() as u64;
    let undecodable = view.undecodable.len() as u64;
    update(status, |p| {
        p.endpoints = endpoints;
        p.undecodable_objects = undecodable;
    });
    if sent.as_ref() != Some(&state) {
        debug!(
            endpoints = state.endpoints.len(),
            sets = state.sets.len(),
            "policy: new desired rules"
        );
        rules.set_desired(policy::ruleset(&state));
        *sent = Some(state);
    }
}

async fn watch_once<S: Store>(
    store: &S,
    me: &str,
    rules: &RulesHandle,
    sent: &mut Option<PolicyState>,
    status: &SharedStatus,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut view = PolicyView::default();
    let mut events = SelectAll::new();
    for p in prefixes() {
        let listing = store.list(&p).await.map_err(|e| e.to_string())?;
        view.replace_prefix(&p, &listing);
        let watch = store
            .watch(&p, listing.revision + 1)
            .await
            .map_err(|e| e.to_string())?;
        let prefix = p.clone();
        events.push(
            futures::stream::unfold(watch, move |mut w| {
                let prefix = prefix.clone();
                async move {
                    let e = w.next().await?;
                    Some(((prefix, e), w))
                }
            })
            .boxed(),
        );
    }
    info!(
        workloads = view.weps.len(),
        objects = view.objects.len(),
        "policy: datastore read"
    );
    // Read again: the last watch error no longer holds.
    update(status, |p| p.last_error = None);
    feed(&view, me, rules, sent, status);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            e = events.next() => e,
        };
        let Some((prefix, event)) = first else {
            return Err("a policy watch ended".into());
        };
        view.apply(&prefix, &event);
        // Gather what arrives together, then compute once.
        let until = tokio::time::Instant::now() + DEBOUNCE;
        while let Ok(Some((prefix, event))) = tokio::time::timeout_at(until, events.next()).await {
            view.apply(&prefix, &event);
        }
        feed(&view, me, rules, sent, status);
    }
}

#[cfg(test)]
mod tests;
