//! The tasks of the node daemon and the messages between them.
//!
//! ```text
//!     sized watches (pools, nodes, BGP settings and peers, block affinities; IPAM blocks with VXLAN)
//!  etcd ───────────────────────────────┐
//!                                      ▼
//!                             ┌─────────────────┐  plan (peers, originated blocks)
//!                             │    main loop    │──────────────────────────────────┐
//!                             │  ClusterState   │                                  ▼
//!                             └─────────────────┘                        ┌──────────────────┐
//!     ResolverInput (bounded 64):     │   │ set_host (watch: latest wins)│  BGP speaker     │
//!     pools, datastore routes,        │   │                              │  (calyx-bgp:     │
//!     a restarted speaker's feed      ▼   │                              │  sessions, RIB)  │
//!                             ┌────────────┴──┐  BestRouteChange          └──────────────────┘
//!                             │ route resolver │◀──(bounded 4096)────────────────┘
//!                             │  (routes.rs)   │
//!                             └───────┬────────┘
//!                                     │ RouteUpdate batches (bounded, awaited)
//!                                     ▼
//!                             ┌────────────────┐  netlink
//!                             │ felix          │──────────▶ kernel
//!                             │ reconciler     │
//!                             └────────────────┘
//! ```
//!
//! Beside the watches, the main loop follows this node's workload routes in the kernel (BGP
//! mode, [`crate::workloads`]: a task that publishes the latest address set, latest wins).
//!
//! The IPAM garbage collector ([`crate::gc`]) is a task of its own on a timer (every half
//! grace period, at most a minute): it lists the IPAM blocks and the WorkloadEndpoints (no
//! watch), reads the host's interfaces, releases this node's leaked addresses through the
//! IPAM's compare-and-swap release and writes its counts into the status. It talks to no
//! other task, so it waits on nobody but etcd.
//!
//! Who waits on whom (no cycle, so no deadlock under a route storm): the main loop waits on
//! the speaker (peer changes) and on the resolver's input queue; the speaker's RIB waits on the
//! resolver draining its feed; the resolver waits on felix's queue; felix waits on nobody. The
//! resolver never waits on the main loop, and the main loop never drains a channel the
//! speaker may be blocked on.

use calyx_bgp::BestRouteChange;
use calyx_felix::{Encap, RemoteRoute};
use ipnet::IpNet;
use tokio::sync::mpsc;

/// Capacity of the main loop -> resolver queue (messages, each possibly many routes).
pub const RESOLVER_INPUT_QUEUE: usize = 64;

/// Capacity of the speaker's best-route feed (one message per prefix).
pub const BEST_ROUTE_FEED: usize = 4096;

/// How BGP-learned routes inside one pool are encapsulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEncap {
    /// The pool's CIDR.
    pub cidr: IpNet,
    /// The encapsulation; `None` for a VXLAN pool (its blocks are routed from the datastore,
    /// BGP's copies are ignored).
    pub bgp_encap: Option<Encap>,
}

/// From the main loop to the route resolver.
#[derive(Debug)]
pub enum ResolverInput {
    /// The pools changed (the whole, small, table).
    Pools(Vec<PoolEncap>),
    /// Routes the datastore decides that changed; `None` = no longer decided by it.
    Datastore(Vec<(IpNet, Option<RemoteRoute>)>),
    /// A (re)started speaker's best-route feed; the routes of the previous feed are dropped.
    BgpFeed(mpsc::Receiver<BestRouteChange>),
}
