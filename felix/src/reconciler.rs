//! The public, async face: [`Reconciler`], its [`ReconcilerHandle`], and the `run` loop.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LiveConfig};
use crate::engine::Engine;
use crate::inbox::{Inbox, Taken};
use crate::model::{DesiredState, HostState, RouteUpdate};
use crate::nl::{self, NlSocket};
use crate::status::{ApplyStats, ReconcilerStatus};

/// Errors of the reconciler as a whole (per-route errors are in the status instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink socket could not be opened or configured.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The blocking worker died.
    #[error("reconciler worker failed: {0}")]
    Worker(String),
    /// The reconciler has stopped (its run loop ended or it was dropped): nothing takes
    /// updates any more.
    #[error("the reconciler has stopped")]
    Stopped,
}

struct Shared {
    inbox: Inbox,
    status: Mutex<ReconcilerStatus>,
    resync: Notify,
}

/// Closes the inbox when the reconciler (or its run loop) is gone, so that producers waiting
/// for room fail instead of waiting forever.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.inbox.close();
    }
}

/// A cheap, cloneable handle through which the node daemon feeds the desired state and reads
/// the status while [`Reconciler::run`] is running. Everything fed through it is applied in
/// the order it was fed.
#[derive(Clone)]
pub struct ReconcilerHandle {
    shared: Arc<Shared>,
}

impl ReconcilerHandle {
    /// Replaces the desired state (host part and all remote routes, like [`Self::set_host`]
    /// plus [`RouteUpdate::ReplaceAll`]); the reconciler converges to it promptly. Never
    /// waits: route updates still queued are superseded. Only the differences to the current
    /// state cost kernel work, but every call costs a comparison of all routes: a producer
    /// with many routes should send [`Self::update_routes`] instead.
    pub fn set_desired(&self, desired: DesiredState) {
        self.shared.inbox.set_desired(desired);
    }

    /// Replaces the host part of the desired state only (node addresses, local blocks,
    /// tunnel devices); remote routes are untouched. Never waits.
    pub fn set_host(&self, host: HostState) {
        self.shared.inbox.set_host(host);
    }

    /// Queues a batch of route changes. Bounded ([`Config::update_queue_limit`] routes):
    /// waits while the reconciler is behind (back-pressure), so memory never grows without
    /// limit. Fails only when the reconciler has stopped ([`Error::Stopped`]).
    pub async fn update_routes(&self, batch: Vec<RouteUpdate>) -> Result<(), Error> {
        self.shared
            .inbox
            .push(batch)
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Replaces the live settings (tunnel MTUs, route protocol, route source, resync
    /// interval); the reconciler's next pass uses them. Never waits.
    pub fn set_live(&self, live: LiveConfig) {
        self.shared.inbox.set_live(live);
    }

    /// Current status snapshot.
    pub fn status(&self) -> ReconcilerStatus {
        match self.shared.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Asks for a full resync (devices, L2, route dump) now.
    pub fn request_resync(&self) {
        self.shared.resync.notify_one();
    }
}

/// The dataplane reconciler of one network namespace (the one it was created in).
pub struct Reconciler {
    engine: Engine,
    notifications: Socket,
    shared: Arc<Shared>,
    max_writes: usize,
    _close: CloseOnDrop,
}

impl Reconciler {
    /// Opens the netlink sockets in the calling thread's network namespace. Nothing is
    /// written until [`Reconciler::run`] or [`Reconciler::reconcile_once`].
    pub fn new(config: Config) -> Result<Reconciler, Error> {
        let notifications = nl::open_notifications().map_err(Error::Socket)?;
        let sock = NlSocket::open().map_err(Error::Socket)?;
        let shared = Arc::new(Shared {
            inbox: Inbox::new(config.update_queue_limit),
            status: Mutex::new(ReconcilerStatus::default()),
            resync: Notify::new(),
        });
        Ok(Reconciler {
            max_writes: config.max_writes_per_pass.max(1),
            engine: Engine::new(config, sock),
            notifications,
            _close: CloseOnDrop(shared.clone()),
            shared,
        })
    }

    /// A handle for feeding desired state and reading status.
    pub fn handle(&self) -> ReconcilerHandle {
        ReconcilerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Same as [`ReconcilerHandle::set_desired`].
    pub fn set_desired(&self, desired: DesiredState) {
        self.handle().set_desired(desired);
    }

    /// Same as [`ReconcilerHandle::status`].
    pub fn status(&self) -> ReconcilerStatus {
        self.handle().status()
    }

    fn publish(&self) {
        let s = self.engine.status.clone();
        match self.shared.status.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    /// Blocking: takes everything fed so far and runs one full pass (devices, L2 entries,
    /// route dump, diff, apply). Notifications are not read (this pass reconciles what they
    /// could report). For one-shot use, tests and benchmarks; a daemon uses
    /// [`Reconciler::run`].
    pub fn reconcile_once(&mut self) -> ApplyStats {
        absorb(&mut self.engine, self.shared.inbox.take());
        self.engine.request_full();
        let stats = self.engine.step(Instant::now(), usize::MAX);
        self.publish();
        stats
    }

    /// Blocking: takes everything fed so far plus `updates` and writes only what they change
    /// (no kernel dump unless a periodic resync is due). The incremental path of
    /// [`Reconciler::run`] without the task around it: for tests and benchmarks.
    pub fn reconcile_updates(&mut self, updates: Vec<RouteUpdate>) -> ApplyStats {
        absorb(&mut self.engine, self.shared.inbox.take());
        self.engine.update_routes(updates);
        let stats = self.engine.step(Instant::now(), usize::MAX);
        self.publish();
        stats
    }

    /// Runs until `shutdown`: reconciles when the desired state changes, when netlink reports
    /// a change to routes, neighbours, links or addresses that concern it, when a failed
    /// route's back-off expires, and every `route_refresh_interval`. Must run inside a tokio
    /// runtime; blocking netlink work runs on the blocking pool.
    ///
    /// Updates are batched in time: each round takes everything queued (without waiting on
    /// the producer), applies it to the plan and writes the changed routes in pipelined
    /// netlink batches of up to [`Config::max_writes_per_pass`], reading the notifications
    /// those writes cause between batches.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Reconciler {
            engine,
            notifications,
            shared,
            max_writes,
            _close,
        } = self;
        // `AsyncFd::new` is deprecated for types that might close their fd while registered;
        // `Socket` owns its fd and closes it only on drop, after the `AsyncFd` is gone.
        #[allow(deprecated)]
        let afd = AsyncFd::new(notifications).map_err(Error::Socket)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut engine = Some(engine);
        let publish = |e: &Engine| {
            let s = e.status.clone();
            match shared.status.lock() {
                Ok(mut g) => *g = s,
                Err(p) => *p.into_inner() = s,
            }
        };
        loop {
            let Some(mut eng) = engine.take() else {
                return Err(Error::Worker("engine lost".into()));
            };
            // The plan runs at most about one pass of writes ahead of the kernel: while more
            // keys than that wait to be written, updates stay in the bounded inbox and the
            // producer waits, so a storm of a million routes is not also held as a million
            // pending keys. The engine drains its backlog without the producer.
            let taken = if eng.backlog() <= max_writes {
                shared.inbox.take()
            } else {
                Taken::default()
            };
            if !taken.is_empty() || eng.has_work(Instant::now()) {
                let joined = tokio::task::spawn_blocking(move || {
                    absorb(&mut eng, taken);
                    if eng.has_work(Instant::now()) {
                        eng.step(Instant::now(), max_writes);
                    }
                    eng
                })
                .await;
                match joined {
                    Ok(e) => {
                        publish(&e);
                        engine = Some(e);
                    }
                    Err(e) => return Err(Error::Worker(e.to_string())),
                }
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                // Let notifications caused by this pass arrive before deciding again.
                tokio::task::yield_now().await;
                let Some(eng) = engine.as_mut() else {
                    continue;
                };
                drain(&afd, &mut buf, eng);
                continue;
            }
            let deadline = eng
                .next_deadline()
                .max(Instant::now() + Duration::from_millis(1));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = shared.inbox.queued() => {}
                _ = shared.resync.notified() => eng.request_full(),
                g = afd.readable() => {
                    match g {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            drain(&afd, &mut buf, &mut eng);
                        }
                        Err(e) => return Err(Error::Socket(e)),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            engine = Some(eng);
        }
    }
}

/// Hands what was taken from the inbox to the engine, in order.
fn absorb(eng: &mut Engine, taken: Taken) {
    if let Some(host) = taken.host {
        eng.set_host(host);
    }
    for batch in taken.batches {
        eng.update_routes(batch);
    }
    // Last, so that a protocol change moves every route the plan holds by now. (Before the
    // first device pass the plan lacks the routes over devices not yet known: at start-up
    // those are deleted under the old protocol and created again under the new one.)
    if let Some(live) = taken.live {
        eng.set_live(live);
    }
}

/// Reads every pending notification (non-blocking), in bounded batches.
fn drain(afd: &AsyncFd<Socket>, buf: &mut [u8], eng: &mut Engine) {
    for _ in 0..100_000 {
        let mut b: &mut [u8] = &mut buf[..];
        match afd.get_ref().recv(&mut b, 0) {
            Ok(n) => {
                let n = n.min(buf.len());
                eng.on_notifications(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => eng.on_overrun(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "netlink notification socket");
                return;
            }
        }
    }
}
