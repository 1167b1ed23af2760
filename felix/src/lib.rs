//! Dataplane reconciler: kernel routes, IPIP/VXLAN tunnels, FDB and neighbours via netlink.
//!
//! The node daemon feeds a [`Reconciler`] the desired state: the small [`HostState`] (node
//! addresses, local blocks, tunnel device settings) whole, and the remote routes (next hops and
//! encapsulation; up to a million from a BGP ToR) as [`RouteUpdate`] deltas through a bounded
//! queue ([`ReconcilerHandle::update_routes`]), or both at once as a [`DesiredState`]. The
//! reconciler makes the kernel of its network namespace match it and keeps it so:
//!
//! * **Deltas.** An update recompiles and diffs only its own destination
//!   ([`incremental::IncrementalPlan`]), so one changed route costs work for that route only.
//! * **Ownership.** It only touches routes carrying its route protocol number
//!   ([`Config::route_protocol`], 80 like Felix) in its table, neighbour/FDB entries on its own
//!   VXLAN devices, and the devices `tunl0`, `vxlan.calico` and `vxlan-v6.calico`. New routes
//!   are created with `NLM_F_EXCL` and deletes carry the protocol (which the kernel matches),
//!   so a foreign route is never replaced or removed.
//! * **Level-triggered.** Desired set vs. the kernel's routes of that protocol (a filtered
//!   dump), the difference applied in pipelined batches (see [`nl`]).
//! * **Drift.** Netlink route, neighbour, link and address events update a cache of the
//!   kernel's routes; a change to one of ours is repaired at once, a relevant link or address
//!   event (underlay down/up, a tunnel deleted) triggers a full resync, and one also runs every
//!   [`Config::route_refresh_interval`].
//! * **Live settings.** [`ReconcilerHandle::set_live`] changes the tunnel MTUs, the route
//!   protocol (routes moved to the new one in place), the routes' source address and the
//!   resync interval while it runs ([`LiveConfig`]).
//! * **Errors** are per route, retried with exponential back-off and listed in
//!   [`ReconcilerStatus`].
//!
//! ```no_run
//! # async fn f() -> Result<(), calyx_felix::Error> {
//! use calyx_felix::*;
//! let rec = Reconciler::new(Config::default())?;
//! let handle = rec.handle();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let task = tokio::spawn(rec.run(shutdown.clone()));
//! handle.set_desired(DesiredState {
//!     node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
//!     local_blocks: vec!["10.65.0.0/26".parse().unwrap()],
//!     remote_routes: vec![RemoteRoute {
//!         dst: "10.65.1.0/26".parse().unwrap(),
//!         encap: Encap::VxlanCrossSubnet,
//!         hops: vec![RemoteHop {
//!             node_ip: "192.168.2.11".parse().unwrap(),
//!             vtep: Some(Vtep { tunnel_ip: "10.65.1.0".parse().unwrap(),
//!                               mac: "66:00:00:00:00:01".parse().unwrap() }),
//!         }],
//!     }],
//!     vxlan_v4: Some(VxlanTunnel::calico("66:00:00:00:00:00".parse().unwrap(),
//!                                        Some("10.65.0.0".parse().unwrap()))),
//!     ..Default::default()
//! });
//! println!("{:?}", handle.status());
//! shutdown.cancel();
//! # let _ = task.await; Ok(()) }
//! ```

pub mod config;
mod devices;
mod engine;
mod fasthash;
mod inbox;
pub mod incremental;
pub mod intern;
pub mod link;
pub mod model;
pub mod mtu;
pub mod nl;
pub mod plan;
mod reconciler;
pub mod route;
pub mod rules;
pub mod status;
pub mod sys;
pub mod wire;

pub use config::{Config, LiveConfig};
pub use model::{
    DesiredState, Encap, HostState, IpipTunnel, MacAddr, RemoteHop, RemoteRoute, RouteUpdate, Vtep,
    VxlanTunnel,
};
pub use reconciler::{Error, Reconciler, ReconcilerHandle};
pub use status::{ApplyStats, ReconcilerStatus, RouteFailure};
pub use sys::{run_in_netns, run_in_new_netns};
