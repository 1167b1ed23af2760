//! Garbage collection of this node's leaked addresses and stale WorkloadEndpoints.
//!
//! A pod whose runtime died without a CNI DEL keeps its address for ever (Calico #5339). Every
//! [`interval`] this task reads the IPAM blocks, the WorkloadEndpoints and the host's
//! interfaces and applies one rule, on this node only:
//!
//! - a WorkloadEndpoint of this node whose interface (`spec.interfaceName`) is not on the host
//!   is stale; it is deleted (guarded by the revision read);
//! - an allocation used on this node (its `node` attribute, or the block's affinity when it has
//!   none: this node's blocks and the addresses it borrowed) is leaked when no WorkloadEndpoint
//!   accounts for it ([`calyx_ipam::leak`], the rule `calyx ipam check` reports) and the host
//!   interface the CNI plugin would have made for it is absent; its handle is released through
//!   the IPAM's compare-and-swap release.
//!
//! Neither happens on first sight: a handle (an endpoint) must be seen leaked (stale) on two
//! scans at least the grace period apart, and seen so on every scan in between, so that an ADD
//! in progress (address assigned, interface or endpoint not yet made) is never touched. Tunnel,
//! WireGuard and reserved (handle-less) addresses are never touched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calyx_datastore::resources::ipam::{AllocationBlock, BLOCK_KEY_PREFIX};
use calyx_datastore::resources::{WorkloadEndpoint, WORKLOAD_ENDPOINT_PREFIX};
use calyx_datastore::store::{Revision, Store};
use calyx_ipam::block;
use calyx_ipam::leak::{gc_exempt, handle_container_id, WorkloadClaims};
use calyx_ipam::types::attr_keys;
use calyx_ipam::Ipam;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http::SharedStatus;

/// The longest time between two scans, whatever the grace.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest time between two scans (a zero grace must not spin).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Time between two scans: half the grace (so a leak is acted on within 1.5 graces), at most a
/// minute.
pub fn interval(grace: Duration) -> Duration {
    (grace / 2).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// One allocation of this node that is not exempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// Its handle.
    pub handle: String,
    /// The host interface the CNI plugin made for it.
    pub interface: String,
}

/// One WorkloadEndpoint of this node.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its key.
    pub key: String,
    /// The revision read (the delete is guarded by it).
    pub revision: Revision,
    /// The endpoint.
    pub wep: WorkloadEndpoint,
}

/// What one scan read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// This node's allocations (exempt ones left out).
    pub allocations: Vec<Allocation>,
    /// This node's WorkloadEndpoints.
    pub endpoints: Vec<Endpoint>,
    /// The host's interface names.
    pub interfaces: HashSet<String>,
}

/// What a scan decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Endpoints to delete: key and revision.
    pub delete_endpoints: Vec<(String, Revision)>,
    /// Handles to release, with the blocks they were seen in.
    pub release: BTreeMap<String, BTreeSet<IpNet>>,
    /// Handles and endpoints seen leaked or stale, still in their grace period.
    pub waiting: usize,
}

/// First sightings, kept between scans. Anything not seen again on a scan is forgotten, so a
/// sighting always starts a new grace period.
#[derive(Debug, Default)]
pub struct Tracker {
    handles: HashMap<String, Instant>,
    endpoints: HashMap<String, Instant>,
}

/// Records `ids` as seen now; returns those first seen at least `grace` ago.
fn due(
    seen: &mut HashMap<String, Instant>,
    ids: &BTreeSet<String>,
    now: Instant,
    grace: Duration,
) -> Vec<String> {
    seen.retain(|id, _| ids.contains(id));
    let mut out = Vec::new();
    for id in ids {
        let first = *seen.entry(id.clone()).or_insert(now);
        if now.duration_since(first) >= grace {
            out.push(id.clone());
        }
    }
    out
}

impl Tracker {
    /// Applies the rule to one scan.
    pub fn plan(&mut self, scan: &Scan, now: Instant, grace: Duration) -> Plan {
        let mut plan = Plan::default();
        let stale: BTreeSet<String> = scan
            .endpoints
            .iter()
            .filter(|e| {
                let name = &e.wep.spec.interface_name;
                // An endpoint without an interface name cannot be judged: left alone.
                !name.is_empty() && !scan.interfaces.contains(name)
            })
            .map(|e| e.key.clone())
            .collect();
        let due_endpoints: HashSet<String> = due(&mut self.endpoints, &stale, now, grace)
            .into_iter()
            .collect();
        plan.waiting += stale.len() - due_endpoints.len();
        // Endpoints deleted on this scan no longer account for anything: their allocations
        // start their own grace now.
        let mut claims = WorkloadClaims::default();
        for e in &scan.endpoints {
            if due_endpoints.contains(&e.key) {
                plan.delete_endpoints.push((e.key.clone(), e.revision));
            } else {
                claims.add(&e.wep);
            }
        }
        // A handle is leaked only when every address it holds here is.
        let mut live: HashSet<&str> = HashSet::new();
        let mut where_: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
        for a in &scan.allocations {
            where_.entry(a.handle.clone()).or_default().insert(a.block);
            if claims.claims(&a.handle, a.ip) || scan.interfaces.contains(&a.interface) {
                live.insert(&a.handle);
            }
        }
        let leaked: BTreeSet<String> = where_
            .keys()
            .filter(|h| !live.contains(h.as_str()))
            .cloned()
            .collect();
        let due_handles = due(&mut self.handles, &leaked, now, grace);
        plan.waiting += leaked.len() - due_handles.len();
        for h in due_handles {
            if let Some(blocks) = where_.remove(&h) {
                plan.release.insert(h, blocks);
            }
        }
        plan
    }

    /// Forgets a handle or endpoint acted on.
    fn forget(&mut self, id: &str) {
        self.handles.remove(id);
        self.endpoints.remove(id);
    }
}

/// The host interface name calyx-cni gives a pod: `cali` + 11 hex digits of FNV-1a over
/// `namespace.pod` (or the container ID without them). Must stay as `host_interface_name` in
/// cli/cni/src/wiring.rs; the GC would otherwise think live pods gone (and wait for their
/// endpoint, which still protects them).
pub fn host_interface_name(namespace: Option<&str>, pod: Option<&str>, container: &str) -> String {
    let identity = match (namespace, pod) {
        (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
        _ => container.to_string(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("cali{:011x}", h & 0x0fff_ffff_ffff)
}

/// This node's non-exempt allocations in `blocks`: those whose `node` attribute names it, or
/// without one, those in its own blocks.
pub fn own_allocations(blocks: &[AllocationBlock], me: &str) -> Vec<Allocation> {
    let mut out = Vec::new();
    for b in blocks {
        for (ordinal, attr) in block::allocated(b) {
            if gc_exempt(&attr) {
                continue;
            }
            let user = attr
                .secondary
                .get(attr_keys::NODE)
                .map(String::as_str)
                .or(b.affine_host());
            let (Some(handle), Some(ip), Some(me_too)) = (
                attr.handle_id.clone(),
                b.ordinal_to_ip(ordinal),
                user.map(|u| u == me),
            ) else {
                continue;
            };
            if !me_too {
                continue;
            }
            let interface = host_interface_name(
                attr.secondary.get(attr_keys::NAMESPACE).map(String::as_str),
                attr.secondary.get(attr_keys::POD).map(String::as_str),
                handle_container_id(&handle).unwrap_or(&handle),
            );
            out.push(Allocation {
                ip,
                block: b.cidr,
                handle,
                interface,
            });
        }
    }
    out
}

/// The interface names of the daemon's network namespace (the host's). From
/// `/proc/self/net/dev`, which follows the reading task's namespace, where `/sys/class/net`
/// follows the namespace sysfs was mounted in.
fn host_interfaces() -> std::io::Result<HashSet<String>> {
    Ok(interface_names(&std::fs::read_to_string(
        "/proc/self/net/dev",
    )?))
}

/// The names in a `/proc/net/dev` listing (two header lines, then `name: counters`).
fn interface_names(dev: &str) -> HashSet<String> {
    dev.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.is_empty() && !n.contains('|'))
        .collect()
}

/// Reads one scan. Errors (etcd away, `/sys` unreadable) skip the scan: acting on a partial
/// view could free a live address.
async fn read_scan<S: Store>(store: &S, me: &str) -> anyhow::Result<Scan> {
    let mut blocks = Vec::new();
    for kv in store.list(BLOCK_KEY_PREFIX).await?.kvs {
        match serde_json::from_slice::<AllocationBlock>(&kv.value) {
            Ok(b) => blocks.push(b),
            Err(e) => warn!(key = %kv.key, error = %e, "gc: undecodable block"),
        }
    }
    let mut endpoints = Vec::new();
    for kv in store.list(WORKLOAD_ENDPOINT_PREFIX).await?.kvs {
        if WorkloadEndpoint::split_key(&kv.key).is_none() {
            continue;
        }
        let wep = WorkloadEndpoint::from_json(&kv.value)
            .map_err(|e| anyhow::anyhow!("endpoint {}: {e}", kv.key))?;
        if wep.spec.node == me {
            endpoints.push(Endpoint {
                key: kv.key,
                revision: kv.mod_revision,
                wep,
            });
        }
    }
    Ok(Scan {
        allocations: own_allocations(&blocks, me),
        endpoints,
        interfaces: host_interfaces()?,
    })
}

/// Runs the collector until `stop`, every [`interval`] of `grace`.
pub async fn run<S: Store + Clone>(
    ipam: Ipam<S>,
    me: String,
    grace: Duration,
    status: SharedStatus,
    stop: CancellationToken,
) {
    let mut tracker = Tracker::default();
    let mut ticker = tokio::time::interval(interval(grace));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // As Calico's CNI plugin refuses ADD and DEL while a migration holds the datastore,
        // the collector frees nothing then: pools and blocks may be moving.
        let locked = calyx_datastore::migration::datastore_locked(ipam.store()).await;
        if let Ok(true) = locked {
            let mut s = status.write().unwrap_or_else(|p| p.into_inner());
            if !s.gc.paused {
                info!("gc paused: the datastore is locked for a migration");
            }
            s.gc.paused = true;
            continue;
        }
        let outcome = match locked {
            Err(e) => Err(anyhow::anyhow!("cannot read ClusterInformation: {e}")),
            Ok(_) => scan_once(&ipam, &me, grace, &mut tracker).await,
        };
        let mut s = status.write().unwrap_or_else(|p| p.into_inner());
        if s.gc.paused {
            info!("gc resumed: the datastore is unlocked");
        }
        s.gc.paused = false;
        s.gc.scans += 1;
        match outcome {
            Ok((freed, removed, waiting)) => {
                s.gc.addresses_freed += freed;
                s.gc.endpoints_removed += removed;
                s.gc.waiting = waiting;
                s.gc.last_error = None;
            }
            Err(e) => {
                warn!(error = %e, "gc scan failed");
                s.gc.last_error = Some(format!("{e:#}"));
            }
        }
    }
}

/// One scan and its actions: (addresses freed, endpoints removed, waiting).
async fn scan_once<S: Store>(
    ipam: &Ipam<S>,
    me: &str,
    grace: Duration,
    tracker: &mut Tracker,
) -> anyhow::Result<(u64, u64, u64)> {
    let scan = read_scan(ipam.store(), me).await?;
    let plan = tracker.plan(&scan, Instant::now(), grace);
    let mut removed = 0;
    for (key, revision) in &plan.delete_endpoints {
        // The revision guard keeps an endpoint a new ADD rewrote meanwhile.
        match ipam.store().delete(key, Some(*revision)).await {
            Ok(_) => {
                info!(endpoint = %key, "gc removed an endpoint whose interface is gone");
                removed += 1;
            }
            Err(e) => warn!(endpoint = %key, error = %e, "gc could not remove an endpoint"),
        }
        tracker.forget(key);
    }
    let mut freed = 0;
    if !plan.release.is_empty() {
        // Checked again just before releasing: an interface made since the scan means a pod.
        let interfaces = host_interfaces()?;
        for (handle, blocks) in &plan.release {
            let alive = scan
                .allocations
                .iter()
                .any(|a| &a.handle == handle && interfaces.contains(&a.interface));
            if alive {
                tracker.forget(handle);
                continue;
            }
            let blocks: Vec<IpNet> = blocks.iter().copied().collect();
            let mut released = ipam.release_handle_in_blocks(handle, &blocks).await?;
            released.extend(ipam.release_handle(handle).await?);
            info!(handle = %handle, addresses = ?released.iter().map(|r| r.ip).collect::<Vec<_>>(),
                "gc released the addresses of a workload that is gone");
            freed += released.len() as u64;
            tracker.forget(handle);
        }
    }
    Ok((freed, removed, plan.waiting as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(ip: &str, handle: &str, interface: &str) -> Allocation {
        Allocation {
            ip: ip.parse().expect("address"),
            block: "10.0.0.0/26".parse().expect("cidr"),
            handle: handle.into(),
            interface: interface.into(),
        }
    }

    fn endpoint(key: &str, container: &str, ip: &str, interface: &str) -> Endpoint {
        let mut wep = WorkloadEndpoint::from_json(
            br#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1-k8s-p-eth0","namespace":"default"},"spec":{"node":"n1"}}"#,
        )
        .expect("valid endpoint");
        wep.spec.container_id = container.into();
        wep.spec.ip_networks = vec![format!("{ip}/32")];
        wep.spec.interface_name = interface.into();
        Endpoint {
            key: key.into(),
            revision: 7,
            wep,
        }
    }

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn interface_names_from_proc() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 1 2 3\ncali0123456789a: 4 5 6\n";
        let names = interface_names(dev);
        assert_eq!(names, ["lo", "cali0123456789a"].map(String::from).into());
        assert!(host_interfaces().expect("readable").contains("lo"));
    }

    #[test]
    fn interval_is_half_the_grace_at_most_a_minute() {
        assert_eq!(interval(Duration::from_secs(900)), MAX_INTERVAL);
        assert_eq!(
            interval(Duration::from_secs(3)),
            Duration::from_millis(1500)
        );
        assert_eq!(interval(Duration::ZERO), MIN_INTERVAL);
    }

    #[test]
    fn leaked_handle_is_released_only_on_a_second_scan_after_the_grace() {
        let mut t = Tracker::default();
        let scan = Scan {
            allocations: vec![alloc("10.0.0.1", "net.dead", "calidead")],
            ..Scan::default()
        };
        let t0 = Instant::now();
        let p = t.plan(&scan, t0, GRACE);
        assert!(p.release.is_empty());
        assert_eq!(p.waiting, 1);
        assert!(t.plan(&scan, t0 + GRACE / 2, GRACE).release.is_empty());
        let p = t.plan(&scan, t0 + GRACE, GRACE);
        assert!(p.release.contains_key("net.dead"), "{p:?}");
    }

    #[test]
    fn an_endpoint_or_an_interface_keeps_an_address() {
        let mut t = Tracker::default();
        let scan = Scan {
            allocations: vec![
                alloc("10.0.0.1", "net.a", "calia"),
                alloc("10.0.0.2", "net.b", "calib"),
                alloc("10.0.0.3", "net.c", "calic"),
            ],
            // `a` by container ID, `c` by address; both endpoints' interfaces are up.
            endpoints: vec![
                endpoint("k/a", "a", "10.0.0.9", "calia"),
                endpoint("k/c", "zz", "10.0.0.3", "calic"),
            ],
            interfaces: ["calia", "calib", "calic"].map(String::from).into(),
        };
        let t0 = Instant::now();
        for i in 0..5 {
            let p = t.plan(&scan, t0 + GRACE * i, GRACE);
            assert_eq!(p, Plan::default(), "scan {i}");
        }
    }

    #[test]
    fn stale_endpoint_is_removed_after_the_grace_then_its_address_waits_its_own() {
        let mut t = Tracker::default();
        let scan = Scan {
            allocations: vec![alloc("10.0.0.1", "net.a", "calia")],
            endpoints: vec![endpoint("k/a", "a", "10.0.0.1", "calia")],
            interfaces: HashSet::new(),
        };
        let t0 = Instant::now();
        let p = t.plan(&scan, t0, GRACE);
        assert!(p.delete_endpoints.is_empty() && p.release.is_empty());
        let p = t.plan(&scan, t0 + GRACE, GRACE);
        assert_eq!(p.delete_endpoints, vec![("k/a".to_string(), 7)]);
        assert!(p.release.is_empty(), "the address starts its grace now");
        t.forget("k/a");
        let gone = Scan {
            endpoints: Vec::new(),
            ..scan
        };
        assert!(t.plan(&gone, t0 + GRACE * 3 / 2, GRACE).release.is_empty());
        assert!(t
            .plan(&gone, t0 + GRACE * 2, GRACE)
            .release
            .contains_key("net.a"));
    }

    #[test]
    fn a_handle_seen_live_again_starts_over() {
        let mut t = Tracker::default();
        let dead = Scan {
            allocations: vec![alloc("10.0.0.1", "net.a", "calia")],
            ..Scan::default()
        };
        let live = Scan {
            interfaces: ["calia".to_string()].into(),
            ..dead.clone()
        };
        let t0 = Instant::now();
        t.plan(&dead, t0, GRACE);
        t.plan(&live, t0 + GRACE / 2, GRACE);
        assert!(t.plan(&dead, t0 + GRACE, GRACE).release.is_empty());
        assert!(!t.plan(&dead, t0 + GRACE * 2, GRACE).release.is_empty());
    }

    #[test]
    fn only_this_nodes_allocations_and_never_exempt_ones() {
        let block: AllocationBlock = serde_json::from_value(serde_json::json!({
            "cidr": "10.0.0.0/30",
            "affinity": "host:n1",
            "allocations": [0, 1, 2, 3],
            "unallocated": [],
            "attributes": [
                {"handle_id": "k8s-pod-network.c1", "secondary": {"node": "n1", "namespace": "ns", "pod": "p"}},
                {"handle_id": "k8s-pod-network.c2", "secondary": {"node": "n2"}},
                {"handle_id": "vxlan-tunnel-addr-n1", "secondary": {"node": "n1", "type": "vxlanTunnelAddress"}},
                {"handle_id": null, "secondary": {}}
            ]
        }))
        .expect("block");
        let own = own_allocations(&[block], "n1");
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(own[0].handle, "k8s-pod-network.c1");
        assert_eq!(
            own[0].interface,
            host_interface_name(Some("ns"), Some("p"), "")
        );
        // Calico's layout, 15 characters.
        assert_eq!(own[0].interface.len(), 15);
        let borrowed = own_allocations(
            &[serde_json::from_value(serde_json::json!({
                "cidr": "10.0.0.4/31", "affinity": "host:n3", "allocations": [0, null],
                "unallocated": [1], "attributes": [{"handle_id": "net.c3", "secondary": {"node": "n1"}}]
            }))
            .expect("block")],
            "n1",
        );
        assert_eq!(borrowed.len(), 1);
        assert_eq!(borrowed[0].interface, host_interface_name(None, None, "c3"));
    }
}
