//! The CNI plugins, as a container runtime (kubelet's CRI runtime, podman, containerd) calls
//! them from `/opt/cni/bin` with the network configuration on stdin (CNI specification 1.0):
//!
//! * `calyx-cni`, installed as `calyx` (`"type": "calyx"`): wires a pod as Calico's plugin
//!   does and asks the IPAM plugin for its addresses ([`conf`], [`delegate`], [`wiring`]);
//! * `calyx-ipam` (`"ipam": {"type": "calyx-ipam"}`): Calico-style IPAM on etcd
//!   ([`ipam_plugin`]).
//!
//! `calyx-cni` also records each pod as a Calico `WorkloadEndpoint` ([`wep`]).
//!
//! Neither needs the BGP speaker or the dataplane reconciler; each command is one short-lived
//! process on a current-thread runtime.

pub mod conf;
pub mod delegate;
pub mod ipam_plugin;
pub mod wep;
pub mod wiring;
