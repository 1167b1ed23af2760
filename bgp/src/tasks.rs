//! The tasks of a speaker and every message that passes between them, in one place.
//!
//! ```text
//!                      Speaker (API handle: start, set_peers, originate, withdraw,
//!                         │      subscribe, status, shutdown; RouteLookup: a clone of its
//!                         │      sender for Lookup, answered on a oneshot)
//!                         │ RibMsg (RIB_QUEUE)                     status: PeerShared
//!                         ▼                                        (Mutex + counters,
//!   ┌──────────────► RIB actor (actor.rs: the only owner of the Rib)    read by status())
//!   │                 │        │                  │
//!   │                 │        │ PeerCommands     │ BestRouteChange (subscriber's capacity)
//!   │                 │        │ (stop / exit /   ▼
//!   │                 │        │  refresh slot +  subscribers (node daemon)
//!   │                 │        │  Notify: never lost)
//!   │                 │ OutMsg │
//!   │                 │ (OUT_QUEUE, per session)
//!   │                 ▼        ▼
//!   │   RibMsg   peer task (session/: one per peer, owns the Fsm, timers, the writer)
//!   │  Up/Down ◄──┘   ▲    ▲        ▲
//!   │                 │    │        │ TcpStream (INCOMING_QUEUE)
//!   │                 │    │        └──────────── listener task (accept loop)
//!   │                 │    │ connect result (oneshot) ── connect task
//!   │                 │ Event (READER_EVENTS)
//!   │                 │ + ParseContext / generation (oneshot, reader waits)
//!   │             reader task (one per connection: frames and decodes)
//!   │                 │
//!   └─────────────────┘ RibMsg::Update / Refresh once Established (RIB_QUEUE: a busy RIB
//!                       slows the reading, TCP pushes back on the peer)
//! ```
//!
//! Every channel is bounded. The only messages that must never wait or be dropped, the
//! administrative commands to a peer task, do not go through a queue: they are kept in a
//! slot ([`PeerCommands`]) and the task is woken by a [`Notify`], so that a peer task that is
//! busy (or whose connection queue is full) still gets its stop or exit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use calyx_proto::{
    AfiSafi, Message, NotificationMessage, PathAttributes, RouteRefreshSubtype, UpdateMessage,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::attrs::Prefix;
use crate::config::{BfdSettings, PeerConfig};
use crate::fsm::State;
use crate::rib::{BestRouteChange, PeerCounters, PeerId, UpInfo};

pub(crate) use crate::rib::OutMsg;

/// Capacity of the RIB actor's queue (sessions, readers and the API).
pub(crate) const RIB_QUEUE: usize = 1024;
/// Capacity of a peer task's queue of accepted connections.
pub(crate) const INCOMING_QUEUE: usize = 16;
/// Capacity of a session's queue of route batches from the RIB.
pub(crate) const OUT_QUEUE: usize = 8;
/// Capacity of a reader task's queue of events to its peer task.
pub(crate) const READER_EVENTS: usize = 64;

/// Messages to the RIB actor: from sessions, readers, and the API.
#[derive(Debug)]
pub(crate) enum RibMsg {
    /// A session reached Established (`generation` tells sessions of one peer apart).
    Up {
        id: PeerId,
        generation: u64,
        info: UpInfo,
    },
    /// An Established session ended; keep its routes as stale for this long (graceful
    /// restart), or drop them.
    Down {
        id: PeerId,
        generation: u64,
        keep_stale: Option<Duration>,
    },
    /// An UPDATE from a reader.
    Update {
        id: PeerId,
        generation: u64,
        update: UpdateMessage,
    },
    /// A ROUTE-REFRESH (request, BoRR, EoRR) from a reader.
    Refresh {
        id: PeerId,
        generation: u64,
        family: AfiSafi,
        subtype: RouteRefreshSubtype,
    },
    /// Replace the peer set.
    SetPeers(Vec<PeerConfig>, oneshot::Sender<()>),
    /// Originate a prefix.
    Originate(Prefix, PathAttributes),
    /// Withdraw an originated prefix.
    Withdraw(Prefix),
    /// A new best-route subscriber.
    Subscribe(mpsc::Sender<BestRouteChange>),
    /// A question about the table (`calyx bgp routes`), answered between two messages.
    Lookup(
        crate::rib::RouteQuery,
        oneshot::Sender<crate::rib::RouteTable>,
    ),
    /// Stop every peer, then the actor.
    Shutdown {
        graceful: bool,
        done: oneshot::Sender<()>,
    },
    /// Every peer task has ended (or the wait for them has): the actor ends.
    Finished,
    /// A peer task ended without being told to (it panicked): start the peer afresh.
    PeerTaskFailed { id: PeerId },
}

/// From a reader task to its peer task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event {
    /// A message for the FSM (everything before Established, and what the RIB does not take).
    Msg(Message),
    /// The stream could not be decoded: send this NOTIFICATION and close.
    Decode(NotificationMessage),
    /// The connection ended (why).
    Closed(String),
}

/// An administrative command to a peer task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Close the session with this NOTIFICATION; restart after the delay if any.
    Stop {
        notification: Option<NotificationMessage>,
        restart_after: Option<Duration>,
    },
    /// Close the session (with the NOTIFICATION, or silently for a graceful restart) and end;
    /// `done` is told when the task has.
    Exit {
        notification: Option<NotificationMessage>,
        done: oneshot::Sender<()>,
    },
    /// Our import rules changed: ask the peer to send these families again (ROUTE-REFRESH), or
    /// reset the session if it cannot refresh.
    RequestRefresh(Vec<AfiSafi>),
    /// The peer's BFD settings changed: run BFD with these (through this BFD task), or stop
    /// running it, without touching the BGP session.
    SetBfd(BfdChange),
}

/// New BFD settings of a peer, with the BFD task to run them on.
#[derive(Debug, Clone)]
pub(crate) struct BfdChange {
    pub bfd: Option<Arc<calyx_bfd::Bfd>>,
    pub settings: Option<BfdSettings>,
}

#[derive(Debug, Default)]
struct Pending {
    stop: Option<(Option<NotificationMessage>, Option<Duration>)>,
    exit: Option<(Option<NotificationMessage>, oneshot::Sender<()>)>,
    refresh: Vec<AfiSafi>,
    bfd: Option<BfdChange>,
}

/// The administrative commands waiting for one peer task. Senders never wait and nothing is
/// dropped: a command is stored (a later stop replaces an earlier one, an exit stays and
/// makes every other command moot) and the task is woken; a task that is busy finds it at
/// its next turn, because [`Notify`] keeps the wake-up for it.
#[derive(Debug, Default)]
pub(crate) struct PeerCommands {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl PeerCommands {
    fn with(&self, f: impl FnOnce(&mut Pending)) {
        // A poisoned lock only means a panic elsewhere while holding it: the data is a plain
        // slot, still usable.
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        drop(p);
        self.wake.notify_one();
    }

    /// Ask the task to close the session (see [`Command::Stop`]).
    pub fn stop(&self, notification: Option<NotificationMessage>, restart_after: Option<Duration>) {
        self.with(|p| p.stop = Some((notification, restart_after)));
    }

    /// Ask the task to close the session and end (see [`Command::Exit`]).
    pub fn exit(&self, notification: Option<NotificationMessage>, done: oneshot::Sender<()>) {
        self.with(|p| {
            if p.exit.is_none() {
                p.exit = Some((notification, done));
            }
        });
    }

    /// Ask the task to request a route refresh (see [`Command::RequestRefresh`]).
    pub fn request_refresh(&self, families: Vec<AfiSafi>) {
        self.with(|p| {
            for f in families {
                if !p.refresh.contains(&f) {
                    p.refresh.push(f);
                }
            }
        });
    }

    /// Ask the task to change its BFD settings (see [`Command::SetBfd`]); the latest wins.
    pub fn set_bfd(&self, change: BfdChange) {
        self.with(|p| p.bfd = Some(change));
    }

    fn take(&self) -> Option<Command> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notification, done)) = p.exit.take() {
            *p = Pending::default();
            return Some(Command::Exit { notification, done });
        }
        if let Some((notification, restart_after)) = p.stop.take() {
            return Some(Command::Stop {
                notification,
                restart_after,
            });
        }
        if !p.refresh.is_empty() {
            return Some(Command::RequestRefresh(std::mem::take(&mut p.refresh)));
        }
        if let Some(change) = p.bfd.take() {
            return Some(Command::SetBfd(change));
        }
        None
    }

    /// The next command, waiting for one. Cancel-safe: a command is only taken by the poll
    /// that returns it.
    pub async fn next(&self) -> Command {
        loop {
            if let Some(c) = self.take() {
                return c;
            }
            self.wake.notified().await;
        }
    }
}

/// Status of one peer, written by its task, read by `Speaker::status`.
#[derive(Debug, Clone)]
pub(crate) struct StatusInner {
    pub state: State,
    pub since: SystemTime,
    pub established_at: Option<Instant>,
    pub last_error: Option<String>,
    pub capabilities: Vec<String>,
    pub peer_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    /// How many times the session reached Established since the peer was configured.
    pub established_count: u64,
    /// The peer's BFD session, when it runs one.
    pub bfd: Option<calyx_bfd::SessionStatus>,
}

/// What a peer task shares with the speaker: its status and the RIB's counters of the peer.
#[derive(Debug)]
pub(crate) struct PeerShared {
    pub status: Mutex<StatusInner>,
    pub counters: Arc<PeerCounters>,
    /// Bumped by every [`PeerShared::update`]: lets a reader see that nothing changed
    /// without copying the status (see `Speaker::status_digest`).
    pub changes: AtomicU64,
}

impl PeerShared {
    /// A peer in Idle.
    pub fn new(counters: Arc<PeerCounters>) -> Self {
        PeerShared {
            status: Mutex::new(StatusInner {
                state: State::Idle,
                since: SystemTime::now(),
                established_at: None,
                last_error: None,
                capabilities: Vec::new(),
                peer_id: None,
                hold_time: None,
                established_count: 0,
                bfd: None,
            }),
            counters,
            changes: AtomicU64::new(0),
        }
    }

    /// Change the status.
    pub fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A configured peer as the listener and `Speaker::status` see it.
#[derive(Debug)]
pub(crate) struct Registered {
    /// Where the listener hands connections from the peer.
    pub incoming: mpsc::Sender<TcpStream>,
    /// The peer's configuration.
    pub cfg: PeerConfig,
    /// Its status.
    pub shared: Arc<PeerShared>,
}

/// The configured peers by address, shared by the actor (writer), the listener and
/// `Speaker::status` (readers). Never locked across an `.await`.
pub(crate) type Registry = Arc<Mutex<HashMap<IpAddr, Registered>>>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_are_kept_until_taken_and_exit_wins() {
        let c = PeerCommands::default();
        // Many commands while the task is busy: none waits, the latest stop is kept.
        for i in 0..100u64 {
            c.stop(None, Some(Duration::from_secs(i)));
        }
        c.request_refresh(vec![AfiSafi::IPV4_UNICAST]);
        c.request_refresh(vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
        match c.next().await {
            Command::Stop { restart_after, .. } => {
                assert_eq!(restart_after, Some(Duration::from_secs(99)))
            }
            other => panic!("{other:?}"),
        }
        match c.next().await {
            Command::RequestRefresh(f) => {
                assert_eq!(f, vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST])
            }
            other => panic!("{other:?}"),
        }
        // An exit makes everything else moot, and a later stop does not replace it.
        let (done, rx) = oneshot::channel();
        c.stop(None, None);
        c.exit(None, done);
        c.stop(None, None);
        match c.next().await {
            Command::Exit { done, .. } => done.send(()).unwrap(),
            other => panic!("{other:?}"),
        }
        rx.await.unwrap();
        // Nothing left: the next wait only ends with a new command, sent from elsewhere.
        let c = Arc::new(c);
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.next().await });
        tokio::task::yield_now().await;
        c.request_refresh(vec![AfiSafi::IPV6_UNICAST]);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(got, Command::RequestRefresh(_)));
    }
}
#[cfg(test)]
mod size_tests {
    /// A channel allocates its slots 32 at a time; what crosses one per connection or per
    /// peer stays small (large messages are boxed) so that a node with 100 peers does not
    /// spend megabytes on empty channel blocks.
    #[test]
    fn per_connection_channel_items_stay_small() {
        assert!(std::mem::size_of::<Box<super::Event>>() <= 8);
        assert!(std::mem::size_of::<crate::rib::OutMsg>() <= 128);
        assert!(std::mem::size_of::<tokio::net::TcpStream>() <= 64);
    }
}
