//! The rules engine's run loop: takes desired rulesets from its handle, keeps the kernel equal
//! to the latest one, and repairs drift when nf_tables reports a change or the resync period
//! ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::model::{ChainInsert, Ruleset, TableId};
use super::nft;
use super::sock::{self, NfSocket};
use super::sync::{self, KernelTable, PlanStats};
use super::Error;

/// Settings of a [`RulesEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// Full check of the kernel against the desired rules even without a notification.
    pub resync_interval: Duration,
    /// Wait after an nf_tables notification before reading back, so that a burst of changes
    /// (`nft -f` of a big file) costs one check.
    pub debounce: Duration,
    /// First retry delay after a failed transaction; doubled up to 10 s.
    pub retry_initial: Duration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            resync_interval: Duration::from_secs(90),
            debounce: Duration::from_millis(20),
            retry_initial: Duration::from_millis(100),
        }
    }
}

/// What the engine has done, for the node's status and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesStatus {
    /// The kernel matched the desired rules at the last check.
    pub in_sync: bool,
    /// Checks of the kernel (each is a read-back of Calyx's tables).
    pub checks: u64,
    /// Transactions written.
    pub transactions: u64,
    /// Transactions that repaired a change made by someone else (the desired rules had not
    /// changed since the previous write).
    pub repairs: u64,
    /// The last error, until a check succeeds.
    pub last_error: Option<String>,
    /// Duration of the last check including its write.
    pub last_sync: Option<Duration>,
}

struct Shared {
    pending: Mutex<Option<Ruleset>>,
    wake: Notify,
    status: Mutex<RulesStatus>,
}

/// A cloneable handle that feeds the engine and reads its status.
#[derive(Clone)]
pub struct RulesHandle {
    shared: Arc<Shared>,
}

impl RulesHandle {
    /// Replaces the desired ruleset; the engine converges to it promptly. Never waits; a
    /// ruleset not yet applied is superseded.
    pub fn set_desired(&self, desired: Ruleset) {
        match self.shared.pending.lock() {
            Ok(mut g) => *g = Some(desired),
            Err(p) => *p.into_inner() = Some(desired),
        }
        self.shared.wake.notify_one();
    }

    /// The engine's status.
    pub fn status(&self) -> RulesStatus {
        match self.shared.status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The blocking half: the request socket and what the engine owns.
pub struct Worker {
    sock: NfSocket,
    desired: Ruleset,
    /// Tables and foreign chains ever desired (so that dropping one from the desired
    /// ruleset deletes it).
    owned: BTreeSet<TableId>,
    inserted: BTreeSet<(TableId, String)>,
    /// What the kernel holds as of the last successful sync, as long as nobody else is known
    /// to have changed it since ([`Self::forget`]): lets a change of the desired rules be
    /// planned without reading the tables back ([`Self::sync_fast`]).
    known: Option<Known>,
}

/// The kernel's state as Calyx last wrote it.
struct Known {
    tables: BTreeMap<TableId, KernelTable>,
    inserts: Vec<ChainInsert>,
}

impl Worker {
    /// Opens the request socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Worker> {
        Ok(Worker {
            sock: NfSocket::open()?,
            desired: Ruleset::default(),
            owned: BTreeSet::new(),
            inserted: BTreeSet::new(),
            known: None,
        })
    }

    /// The netlink port id of the request socket: nf_tables notifications caused by this
    /// worker's own transactions carry it.
    pub fn port_id(&self) -> u32 {
        self.sock.port_id()
    }

    /// Replaces the desired ruleset (applied by the next [`Self::sync`]).
    pub fn set_desired(&mut self, r: Ruleset) {
        self.owned.extend(r.tables.keys().cloned());
        self.inserted
            .extend(r.inserts.iter().map(|i| (i.table.clone(), i.chain.clone())));
        self.desired = r;
    }

    /// Someone else may have changed the kernel: the next sync reads it back.
    pub fn forget(&mut self) {
        self.known = None;
    }

    fn dropped(&self) -> (Vec<TableId>, Vec<(TableId, String)>) {
        let dropped = self
            .owned
            .iter()
            .filter(|t| !self.desired.tables.contains_key(*t))
            .cloned()
            .collect();
        let dropped_inserts = self
            .inserted
            .iter()
            .filter(|(t, c)| {
                !self
                    .desired
                    .inserts
                    .iter()
                    .any(|i| &i.table == t && &i.chain == c)
            })
            .cloned()
            .collect();
        (dropped, dropped_inserts)
    }

    /// Reads the kernel and writes the difference in one transaction; returns what changed.
    pub fn sync(&mut self) -> Result<PlanStats, Error> {
        let (dropped, dropped_inserts) = self.dropped();
        let view = sync::read_view(&mut self.sock, &self.desired, &dropped, &dropped_inserts)
            .map_err(Error::Kernel)?;
        self.write(&view, &dropped_inserts)
    }

    /// Like [`Self::sync`], but plans against the state Calyx last wrote instead of reading
    /// the tables back, when that state is known (no change by anyone else noticed since,
    /// the same foreign chains): a change costs work for what changed, not for the whole
    /// table. Falls back to [`Self::sync`] otherwise.
    pub fn sync_fast(&mut self) -> Result<PlanStats, Error> {
        let (dropped, dropped_inserts) = self.dropped();
        let view = match &self.known {
            Some(k)
                if dropped_inserts.is_empty()
                    && k.inserts == self.desired.inserts
                    && self.desired.tables.keys().all(|t| k.tables.contains_key(t)) =>
            {
                sync::KernelView {
                    tables: self
                        .desired
                        .tables
                        .keys()
                        .map(|t| k.tables.get(t).cloned())
                        .collect(),
                    dropped_exist: dropped
                        .iter()
                        .filter(|t| k.tables.contains_key(*t))
                        .cloned()
                        .collect(),
                    // As desired (unchanged since the last sync): nothing to plan.
                    inserts: vec![None; self.desired.inserts.len()],
                    dropped_inserts: Vec::new(),
                }
            }
            _ => return self.sync(),
        };
        self.write(&view, &dropped_inserts)
    }

    fn write(
        &mut self,
        view: &sync::KernelView,
        dropped_inserts: &[(TableId, String)],
    ) -> Result<PlanStats, Error> {
        let first = self.sock.reserve(1 << 16);
        let (batch, stats) = sync::plan_view(first, &self.desired, view, dropped_inserts);
        self.known = None;
        match self.sock.transact(batch).map_err(Error::Kernel)? {
            Ok(()) => {}
            Err(f) => {
                return Err(Error::Transaction {
                    what: f.what,
                    reason: f.failure.describe(),
                })
            }
        }
        self.known = Some(Known {
            tables: self
                .desired
                .tables
                .iter()
                .map(|(id, t)| (id.clone(), sync::assumed(t)))
                .collect(),
            inserts: self.desired.inserts.clone(),
        });
        // Deleted tables are no longer ours to watch.
        self.owned.retain(|t| self.desired.tables.contains_key(t));
        let desired = &self.desired;
        self.inserted.retain(|(t, c)| {
            desired
                .inserts
                .iter()
                .any(|i| &i.table == t && &i.chain == c)
        });
        Ok(stats)
    }

    /// Deletes Calyx's tables and its rules in foreign chains (uninstall).
    pub fn remove_all(&mut self) -> Result<PlanStats, Error> {
        self.set_desired(Ruleset::default());
        self.sync()
    }
}

/// The rules engine: owns Calyx's nftables tables in its network namespace.
pub struct RulesEngine {
    worker: Worker,
    notifications: Socket,
    shared: Arc<Shared>,
    config: RulesConfig,
}

impl RulesEngine {
    /// Opens the engine's sockets in the calling thread's network namespace.
    pub fn new(config: RulesConfig) -> Result<RulesEngine, Error> {
        Ok(RulesEngine {
            worker: Worker::open().map_err(Error::Socket)?,
            notifications: sock::open_notifications().map_err(Error::Socket)?,
            shared: Arc::new(Shared {
                pending: Mutex::new(None),
                wake: Notify::new(),
                status: Mutex::new(RulesStatus::default()),
            }),
            config,
        })
    }

    /// A handle to feed the engine.
    pub fn handle(&self) -> RulesHandle {
        RulesHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `shutdown`. Nothing is written before the first desired ruleset arrives.
    /// Calyx's rules stay in the kernel when it stops (pods keep working across a restart);
    /// [`Worker::remove_all`] removes them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let RulesEngine {
            worker,
            notifications,
            shared,
            config,
        } = self;
        // `Socket` owns its fd and closes it only on drop, after the `AsyncFd` is gone.
        #[allow(deprecated)]
        let afd = AsyncFd::new(notifications).map_err(Error::Socket)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut worker = Some(worker);
        let mut have_desired = false;
        let mut dirty = false;
        let mut desired_changed = false;
        let mut due = Instant::now();
        let mut retry = config.retry_initial;
        let mut next_resync = Instant::now() + config.resync_interval;
        // Tables whose changes are worth a check: Calyx's, those it inserts into, and those
        // it owned before (so that a table it still has to delete is watched too).
        let mut watched: Vec<TableId> = Vec::new();
        // Notifications of the worker's own transactions carry its port id: not a change by
        // anyone else.
        let own_port = worker.as_ref().map_or(0, Worker::port_id);
        // Read the kernel back at the next sync (at first, after a change by someone else, and
        // at each periodic resync); otherwise plan against what Calyx last wrote.
        let mut full = true;
        loop {
            let pending = match shared.pending.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            };
            let Some(mut w) = worker.take() else {
                return Err(Error::Worker("worker lost".into()));
            };
            if let Some(r) = pending {
                watched = watched_tables(&r, &watched);
                w.set_desired(r);
                have_desired = true;
                dirty = true;
                desired_changed = true;
                due = Instant::now();
            }
            if have_desired && dirty && Instant::now() >= due {
                let started = Instant::now();
                let read_back = std::mem::replace(&mut full, false);
                let joined = tokio::task::spawn_blocking(move || {
                    let r = if read_back { w.sync() } else { w.sync_fast() };
                    (w, r)
                })
                .await;
                let (w2, result) = joined.map_err(|e| Error::Worker(e.to_string()))?;
                w = w2;
                let mut st = match shared.status.lock() {
                    Ok(g) => g.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                st.checks += 1;
                st.last_sync = Some(started.elapsed());
                match result {
                    Ok(stats) => {
                        dirty = false;
                        retry = config.retry_initial;
                        st.in_sync = true;
                        st.last_error = None;
                        if !stats.is_empty() {
                            st.transactions += 1;
                            if !desired_changed {
                                st.repairs += 1;
                                info!(?stats, "nftables: repaired Calyx's rules");
                            } else {
                                debug!(?stats, "nftables: rules written");
                            }
                        }
                        desired_changed = false;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?retry, "nftables: cannot write Calyx's rules");
                        st.in_sync = false;
                        st.last_error = Some(e.to_string());
                        due = Instant::now() + retry;
                        retry = (retry * 2).min(Duration::from_secs(10));
                    }
                }
                match shared.status.lock() {
                    Ok(mut g) => *g = st,
                    Err(p) => *p.into_inner() = st,
                }
                next_resync = Instant::now() + config.resync_interval;
                worker = Some(w);
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                continue;
            }
            worker = Some(w);
            let wake_at = if dirty { due } else { next_resync };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = shared.wake.notified() => {}
                g = afd.readable() => {
                    let mut guard = g.map_err(Error::Socket)?;
                    guard.clear_ready();
                    if drain(&afd, &mut buf, &watched, own_port) && have_desired {
                        full = true;
                        if !dirty {
                            due = Instant::now() + config.debounce;
                        }
                        dirty = true;
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    full = true;
                    if !dirty {
                        dirty = true;
                        due = Instant::now();
                    }
                }
            }
        }
    }
}

/// The tables of `r` and its inserts, plus those watched before (kept: a table dropped from
/// the desired ruleset must still be deleted, and a later change to it noticed).
fn watched_tables(r: &Ruleset, before: &[TableId]) -> Vec<TableId> {
    let mut v: Vec<TableId> = before.to_vec();
    v.extend(r.tables.keys().cloned());
    v.extend(r.inserts.iter().map(|i| i.table.clone()));
    v.sort();
    v.dedup();
    v
}

/// Whether an nf_tables notification is about one of the `watched` tables (by family and
/// the table attribute, the first of every table, chain, rule, set and element message).
/// Generation messages (the end of every transaction) and unreadable ones say nothing.
fn concerns(m: &crate::wire::RawMsg<'_>, watched: &[TableId], own_port: u32) -> bool {
    let pid = m
        .whole
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes);
    if own_port != 0 && pid == Some(own_port) {
        return false;
    }
    if m.ty >> 8 != nft::SUBSYS || (m.ty & 0xff) == NFT_MSG_NEWGEN {
        return false;
    }
    let Some(&family) = m.payload.first() else {
        return false;
    };
    let Some(body) = m.payload.get(4..) else {
        return false;
    };
    let table = crate::wire::attrs(body)
        .find(|(t, _)| *t == 1)
        .map(|(_, v)| v.split(|b| *b == 0).next().unwrap_or(&[]));
    match table {
        Some(name) => watched
            .iter()
            .any(|t| t.family.nfproto() == family && t.name.as_bytes() == name),
        // Unknown shape: check rather than miss a change.
        None => true,
    }
}

/// `NFT_MSG_NEWGEN`.
const NFT_MSG_NEWGEN: u16 = 15;

/// Reads every pending notification; true if one concerned a `watched` table (or some were
/// lost, which may have hidden one).
fn drain(afd: &AsyncFd<Socket>, buf: &mut [u8], watched: &[TableId], own_port: u32) -> bool {
    let mut any = false;
    for _ in 0..10_000 {
        let mut b: &mut [u8] = &mut buf[..];
        match afd.get_ref().recv(&mut b, 0) {
            Ok(n) => {
                let n = n.min(buf.len());
                if crate::wire::messages(&buf[..n]).any(|m| concerns(&m, watched, own_port)) {
                    any = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(error = %e, "nf_tables notification socket");
                return any;
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rules::model::Family;
    use crate::wire;

    fn notification(m: u16, family: u8, table: &str) -> Vec<u8> {
        let mut b = Vec::new();
        let s = wire::begin_msg(&mut b, nft::ty(m), 0, 0);
        b.extend_from_slice(&[family, 0, 0, 0]);
        let mut v = table.as_bytes().to_vec();
        v.push(0);
        wire::put_attr(&mut b, 1, &v);
        wire::end_msg(&mut b, s);
        b
    }

    #[test]
    fn notifications_filtered_by_family_and_table() {
        let watched = vec![
            TableId::new(Family::Inet, "calyx"),
            TableId::new(Family::Ip, "filter"),
        ];
        let yes = |m, f, t: &str| {
            let b = notification(m, f, t);
            let msg = wire::messages(&b).next().unwrap();
            concerns(&msg, &watched, 77)
        };
        assert!(yes(nft::msg::DELTABLE, 1, "calyx"));
        assert!(yes(nft::msg::NEWRULE, 2, "filter"));
        assert!(!yes(nft::msg::NEWRULE, 1, "filter")); // inet filter is not ip filter
        assert!(!yes(nft::msg::NEWSETELEM, 1, "kube-proxy"));
        assert!(!yes(NFT_MSG_NEWGEN, 0, ""));
        // The worker's own changes (its port id in the header) are no one else's.
        let mut own = notification(nft::msg::DELTABLE, 1, "calyx");
        own[12..16].copy_from_slice(&77u32.to_ne_bytes());
        let msg = wire::messages(&own).next().unwrap();
        assert!(!concerns(&msg, &watched, 77));
    }
}
