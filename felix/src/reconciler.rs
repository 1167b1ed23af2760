//! The public, async face: [`Reconciler`], its [`ReconcilerHandle`], and the `run` loop.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::model::DesiredState;
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
}

struct Shared {
    desired: watch::Sender<Arc<DesiredState>>,
    status: Mutex<ReconcilerStatus>,
    resync: Notify,
}

/// A cheap, cloneable handle through which the node daemon feeds the desired state and reads
/// the status while [`Reconciler::run`] is running.
#[derive(Clone)]
pub struct ReconcilerHandle {
    shared: Arc<Shared>,
}

impl ReconcilerHandle {
    /// Replaces the desired state; the reconciler converges to it promptly.
    pub fn set_desired(&self, desired: DesiredState) {
        self.shared.desired.send_replace(Arc::new(desired));
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
    desired_rx: watch::Receiver<Arc<DesiredState>>,
}

impl Reconciler {
    /// Opens the netlink sockets in the calling thread's network namespace. Nothing is
    /// written until [`Reconciler::run`] or [`Reconciler::reconcile_once`].
    pub fn new(config: Config) -> Result<Reconciler, Error> {
        let notifications = nl::open_notifications().map_err(Error::Socket)?;
        let sock = NlSocket::open().map_err(Error::Socket)?;
        let (tx, rx) = watch::channel(Arc::new(DesiredState::default()));
        Ok(Reconciler {
            engine: Engine::new(config, sock),
            notifications,
            shared: Arc::new(Shared {
                desired: tx,
                status: Mutex::new(ReconcilerStatus::default()),
                resync: Notify::new(),
            }),
            desired_rx: rx,
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

    /// Blocking: takes the latest desired state and runs one full pass (devices, L2 entries,
    /// route dump, diff, apply). Notifications that arrived meanwhile are drained (they can
    /// only describe what this pass has just reconciled). For one-shot use, tests and
    /// benchmarks; a daemon uses [`Reconciler::run`].
    pub fn reconcile_once(&mut self) -> ApplyStats {
        let d = self.desired_rx.borrow_and_update().clone();
        self.engine.set_desired(d);
        self.engine.request_full();
        let stats = self.engine.step(Instant::now());
        self.publish();
        stats
    }

    /// Blocking: applies only what changed since the last pass (no kernel dump unless
    /// something asked for one). Used by benchmarks to time incremental updates.
    pub fn reconcile_incremental(&mut self) -> ApplyStats {
        let d = self.desired_rx.borrow_and_update().clone();
        self.engine.set_desired(d);
        let stats = self.engine.step(Instant::now());
        self.publish();
        stats
    }

    /// Runs until `shutdown`: reconciles when the desired state changes, when netlink reports
    /// a change to routes, neighbours, links or addresses that concern it, when a failed
    /// route's back-off expires, and every `route_refresh_interval`. Must run inside a tokio
    /// runtime; blocking netlink work runs on the blocking pool.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Reconciler {
            engine,
            notifications,
            shared,
            mut desired_rx,
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
            if desired_rx.has_changed().unwrap_or(false) {
                eng.set_desired(desired_rx.borrow_and_update().clone());
            }
            if eng.has_work(Instant::now()) {
                let joined = tokio::task::spawn_blocking(move || {
                    eng.step(Instant::now());
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
                r = desired_rx.changed() => {
                    if r.is_ok() {
                        eng.set_desired(desired_rx.borrow_and_update().clone());
                    }
                }
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
