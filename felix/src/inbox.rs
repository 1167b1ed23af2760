//! The queue between the producer of desired state (the node daemon) and the run loop.
//!
//! ```text
//!  producer ── update_routes(batch).await ──┐ (waits while the queue is full)
//!           ── set_host(host) ─────────────┤ (latest wins)
//!           ── set_desired(full) ──────────┤ (host + ReplaceAll; supersedes what is queued)
//!                                          v
//!                                   Inbox (bounded by routes)
//!                                          │ take(): everything at once, never waits
//!                                          v
//!                                  run loop ── Engine
//! ```
//!
//! The bound counts routes, not batches, so memory stays bounded whatever the producer's batch
//! size. The run loop takes everything queued at once and never waits on the producer; the
//! producer waits for room instead (back-pressure). Order is kept: updates are applied in the
//! order they were queued.

use std::pin::pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::LiveConfig;
use crate::model::{DesiredState, HostState, RouteUpdate};

/// The reconciler has stopped; nothing will take updates any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the reconciler has stopped")]
pub(crate) struct Closed;

#[derive(Default)]
struct Queue {
    host: Option<HostState>,
    live: Option<LiveConfig>,
    batches: Vec<Vec<RouteUpdate>>,
    /// Routes queued (sum of [`RouteUpdate::weight`]).
    queued: usize,
    closed: bool,
}

/// What the run loop takes: the latest host state (if it was set) and the queued batches in
/// order.
#[derive(Default)]
pub(crate) struct Taken {
    pub(crate) host: Option<HostState>,
    /// The latest live settings, if they were set (applied after the host state and routes).
    pub(crate) live: Option<LiveConfig>,
    pub(crate) batches: Vec<Vec<RouteUpdate>>,
}

impl Taken {
    pub(crate) fn is_empty(&self) -> bool {
        self.host.is_none() && self.live.is_none() && self.batches.is_empty()
    }
}

/// The bounded, ordered queue of desired-state changes.
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    /// Wakes the run loop: something was queued.
    work: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
    limit: usize,
}

impl Inbox {
    /// A queue that holds up to `limit` routes (a larger batch is accepted alone).
    pub(crate) fn new(limit: usize) -> Inbox {
        Inbox {
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            room: Notify::new(),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-changed (every change
        // is a push or a take), so a poisoned lock is still good.
        match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Replaces the host part; never waits.
    pub(crate) fn set_host(&self, host: HostState) {
        self.lock().host = Some(host);
        self.work.notify_one();
    }

    /// Replaces the live settings; never waits.
    pub(crate) fn set_live(&self, live: LiveConfig) {
        self.lock().live = Some(live);
        self.work.notify_one();
    }

    /// Replaces host and all routes; never waits. Everything queued before is superseded and
    /// dropped, so a producer that sends full states faster than they are applied does not
    /// grow the queue.
    pub(crate) fn set_desired(&self, desired: DesiredState) {
        let (host, routes) = desired.into_parts();
        let update = RouteUpdate::ReplaceAll(routes);
        {
            let mut q = self.lock();
            q.host = Some(host);
            q.queued = update.weight();
            q.batches.clear();
            q.batches.push(vec![update]);
        }
        self.work.notify_one();
    }

    /// Queues a batch, waiting while the queue is full. Fails only once closed.
    pub(crate) async fn push(&self, batch: Vec<RouteUpdate>) -> Result<(), Closed> {
        let weight: usize = batch.iter().map(RouteUpdate::weight).sum();
        let mut batch = Some(batch);
        loop {
            // Registered before the check, so that a take() between check and wait wakes us.
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.closed {
                    return Err(Closed);
                }
                if q.queued == 0 || q.queued + weight <= self.limit {
                    if let Some(b) = batch.take() {
                        if !b.is_empty() {
                            q.queued += weight;
                            q.batches.push(b);
                        }
                    }
                    drop(q);
                    self.work.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Takes everything queued; never waits.
    pub(crate) fn take(&self) -> Taken {
        let taken = {
            let mut q = self.lock();
            q.queued = 0;
            Taken {
                host: q.host.take(),
                live: q.live.take(),
                batches: std::mem::take(&mut q.batches),
            }
        };
        if !taken.batches.is_empty() {
            self.room.notify_waiters();
        }
        taken
    }

    /// Resolves when something may have been queued since the last `take`.
    pub(crate) async fn queued(&self) {
        self.work.notified().await;
    }

    /// Refuses further batches and fails the waiting ones (the reconciler stopped).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::RemoteRoute;

    fn up(i: u32) -> RouteUpdate {
        RouteUpdate::Remove(ipnet::IpNet::new(std::net::Ipv4Addr::from(i).into(), 32).unwrap())
    }

    fn flat(t: Taken) -> Vec<RouteUpdate> {
        t.batches.into_iter().flatten().collect()
    }

    async fn pending<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn waits_for_room_and_keeps_order() {
        let inbox = std::sync::Arc::new(Inbox::new(10));
        inbox.push((0..8).map(up).collect()).await.unwrap();
        // 8 + 5 > 10: the producer waits.
        let i2 = inbox.clone();
        let mut second = tokio::spawn(async move { i2.push((8..13).map(up).collect()).await });
        assert!(pending(&mut second).await, "pushed past the limit");
        let first = flat(inbox.take());
        assert_eq!(first, (0..8).map(up).collect::<Vec<_>>());
        second.await.unwrap().unwrap();
        assert_eq!(flat(inbox.take()), (8..13).map(up).collect::<Vec<_>>());
        // A batch larger than the limit goes alone into an empty queue.
        inbox.push((0..25).map(up).collect()).await.unwrap();
        assert!(pending(inbox.push(vec![up(99)])).await);
        assert_eq!(flat(inbox.take()).len(), 25);
    }

    #[tokio::test]
    async fn full_state_supersedes_and_never_waits() {
        let inbox = Inbox::new(4);
        inbox.push((0..4).map(up).collect()).await.unwrap();
        let d = DesiredState {
            local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
            remote_routes: vec![RemoteRoute {
                dst: "10.65.1.0/26".parse().unwrap(),
                encap: Default::default(),
                hops: vec![],
            }],
            ..Default::default()
        };
        inbox.set_desired(d.clone());
        inbox.set_desired(d.clone());
        let t = inbox.take();
        assert_eq!(t.host.unwrap().local_blocks, d.local_blocks);
        assert_eq!(
            flat(Taken {
                host: None,
                live: None,
                batches: t.batches
            }),
            vec![RouteUpdate::ReplaceAll(d.remote_routes)]
        );
        // Host only.
        inbox.set_host(HostState::default());
        let t = inbox.take();
        assert!(t.host.is_some() && t.batches.is_empty());
        assert!(inbox.take().is_empty());
    }

    #[tokio::test]
    async fn close_fails_waiting_and_later_producers() {
        let inbox = std::sync::Arc::new(Inbox::new(1));
        inbox.push(vec![up(1)]).await.unwrap();
        let i2 = inbox.clone();
        let mut waiting = tokio::spawn(async move { i2.push(vec![up(2)]).await });
        assert!(pending(&mut waiting).await);
        inbox.close();
        assert_eq!(waiting.await.unwrap(), Err(Closed));
        assert_eq!(inbox.push(vec![up(3)]).await, Err(Closed));
    }
}
