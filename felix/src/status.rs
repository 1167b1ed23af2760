//! The reconciler's status, for metrics and the node's status endpoint.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;

/// One route that could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// Destination.
    pub dst: IpNet,
    /// Last error (errno text and the kernel's extended-ack message).
    pub error: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Time until the next attempt.
    pub retry_in: Duration,
}

/// Counters of one apply pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Routes created.
    pub added: usize,
    /// Routes replaced (changed).
    pub replaced: usize,
    /// Routes deleted.
    pub deleted: usize,
    /// Writes that failed.
    pub failed: usize,
    /// Wall time of the pass (dump, diff and writes).
    pub duration: Duration,
}

/// A snapshot of the reconciler's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilerStatus {
    /// Routes in the desired state (after compilation: remote routes and local blocks).
    pub routes_desired: usize,
    /// Remote destinations received (through updates or a full desired state).
    pub routes_remote: usize,
    /// Desired routes the kernel holds exactly as desired.
    pub routes_programmed: usize,
    /// Desired routes not programmed yet and not failed (blocked on a device, VTEP, ...).
    pub routes_pending: usize,
    /// Routes whose last write failed; they are retried with back-off.
    pub routes_failed: usize,
    /// Details of up to 64 failed routes.
    pub failures: Vec<RouteFailure>,
    /// Up to 64 destinations that cannot be programmed yet, with the reason.
    pub blocked: Vec<(IpNet, String)>,
    /// Problems with tunnel devices or the underlay (e.g. "IPIP not supported").
    pub device_errors: Vec<String>,
    /// Permanent neighbour entries held on the VXLAN devices.
    pub neighbours: usize,
    /// FDB entries held on the VXLAN devices.
    pub fdb_entries: usize,
    /// Tunnel devices in use, by name and interface index.
    pub tunnel_devices: Vec<(String, u32)>,
    /// Underlay interface indexes (IPv4, IPv6).
    pub underlay: (Option<u32>, Option<u32>),
    /// End of the last full resync (kernel dump + diff + apply).
    pub last_resync: Option<SystemTime>,
    /// Duration of the last full resync.
    pub last_resync_duration: Option<Duration>,
    /// Number of full resyncs.
    pub resyncs: u64,
    /// Routes rewritten because something else changed or removed them (drift repairs).
    pub drift_repairs: u64,
    /// The last apply pass.
    pub last_apply: ApplyStats,
    /// Route updates taken from the queue so far.
    pub route_updates: u64,
    /// Route writes (creates, replaces, deletes) that succeeded so far.
    pub route_writes: u64,
    /// Notification overruns (the kernel dropped events; a full resync follows).
    pub notification_overruns: u64,
}
