//! The node daemon as a library: what `calyx node run` (the DaemonSet's process, in place of
//! calico-node) runs, and the status types `calyx node status` reads.
//!
//! Start-up: check the configuration (nothing is written when it is bad), wait for the
//! datastore, find this node's addresses, create the default pools, write the `Node`, claim a
//! block and the tunnel addresses the pools need, then run the tasks drawn in [`tasks`]: the
//! main loop keeps a view of what this node acts on from sized watches ([`cluster`]) and feeds
//! the BGP speaker, felix's host state and the route resolver ([`routes`]), which turns best
//! routes and datastore routes into per-route updates for felix. The health endpoint serves
//! the status.

mod autodetect;
mod bfd;
mod bgp;
pub mod borrowed;
pub mod checksystem;
pub mod cluster;
pub mod config;
mod dataplane;
mod felixconfig;
mod felixlive;
pub mod gc;
mod hoststate;
mod http;
mod lookingglass;
pub mod natrules;
pub mod policy;
mod prefix_map;
pub mod routes;
pub mod secrets;
mod startup;
pub mod status;
pub mod tasks;
pub mod workloads;

pub use felixlive::set_log_level_hook;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use calyx_datastore::client::ResourceClient;
use calyx_datastore::resources::ipam::{block_key, AllocationBlock};
use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, StoreError};
use calyx_felix::{Reconciler, ReconcilerHandle, RemoteRoute};
use calyx_ipam::{Family, Ipam};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::cluster::{ClusterState, ClusterWatch, Touched};
use self::config::{Backend, NodeConfig, NodeRunArgs};
use self::http::SharedStatus;
use self::routes::ResolverStats;
use self::status::{DataplaneStatus, IpamStatus, NodeStatus};
use self::tasks::{PoolEncap, ResolverInput, RESOLVER_INPUT_QUEUE};

/// How long changes are gathered before the dataplane is recomputed.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the node daemon until SIGTERM or SIGINT, with the datastore at `etcd`.
pub async fn run(etcd: &EtcdConfig, args: NodeRunArgs) -> Result<()> {
    let config = args.resolve()?;
    let store = wait_for_datastore(etcd, config.datastore_wait).await?;
    let client = ResourceClient::new(store.clone());
    let ipam = Ipam::new(store.clone());

    let ipv4 = autodetect::resolve(&config.ipv4, false).context("IPv4 address")?;
    let ipv6 = autodetect::resolve(&config.ipv6, true).context("IPv6 address")?;
    info!(
        node = %config.nodename, ipv4 = ?ipv4, ipv6 = ?ipv6, backend = ?config.backend,
        router_id = ?config.router_id, graceful_restart = config.graceful_restart,
        "starting"
    );

    // Bind the endpoints before writing anything, so that a port in use stops start-up
    // early. FelixConfiguration's healthPort and prometheusMetrics* are read here, once (as
    // Felix, which restarts to change them).
    let felix = felixconfig::effective(
        &felixconfig::read(&store, &config.nodename).await,
        &config.nodename,
    );
    let mut health_listen = config.health_listen;
    if let (false, Some(port)) = (config.health_listen_set, felix.health_port) {
        health_listen.set_port(port);
    }
    let listener = http::bind(health_listen)
        .await
        .with_context(|| format!("health endpoint {health_listen}: cannot listen"))?;
    // Felix serves its metrics on all addresses (prometheusMetricsHost unset).
    let metrics_listen = felix.prometheus_metrics_enabled.then(|| {
        std::net::SocketAddr::from(([0, 0, 0, 0], felix.prometheus_metrics_port.unwrap_or(9091)))
    });
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(
            http::bind(addr)
                .await
                .with_context(|| format!("prometheusMetricsPort {addr}: cannot listen"))?,
        ),
        None => None,
    };

    startup::ensure_default_pools(&client, &config).await?;
    startup::ensure_cluster_information(&client, &config.cluster_type).await?;
    startup::write_node_addresses(&client, &config, ipv4, ipv6).await?;
    startup::wait_until_datastore_ready(&client).await;
    if ipv4.is_some() {
        ipam.ensure_block(&config.nodename, Family::V4)
            .await
            .context("cannot claim an IPv4 block")?;
    }
    if ipv6.is_some() && config.default_ipv6_pool.is_some() {
        ipam.ensure_block(&config.nodename, Family::V6)
            .await
            .context("cannot claim an IPv6 block")?;
    }
    hoststate::write_nodename_file(&config);

    let stop = CancellationToken::new();
    let status: SharedStatus = Arc::new(RwLock::new(NodeStatus {
        node: config.nodename.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend_name(config.backend).into(),
        started: unix_now(),
        ipv4: ipv4.map(|n| n.to_string()),
        ipv6: ipv6.map(|n| n.to_string()),
        ..NodeStatus::default()
    }));
    let endpoints = http::Endpoints {
        status: status.clone(),
        bgp: lookingglass::SharedBgp::default(),
    };
    let server = tokio::spawn(http::serve(listener, endpoints.clone(), stop.clone()));
    // The same endpoint again (its /metrics for Prometheus), stopped with the first.
    let _metrics_server =
        metrics_listener.map(|l| tokio::spawn(http::serve(l, endpoints.clone(), stop.clone())));
    // Its own task (see `tasks`): it reads the store on its own timer and never blocks the
    // main loop.
    let collector = tokio::spawn(gc::run(
        ipam.clone(),
        config.nodename.clone(),
        config.ipam_gc_grace,
        status.clone(),
        stop.child_token(),
    ));

    if config.backend != Backend::None {
        hoststate::enable_forwarding(ipv6.is_some());
    }
    let reconciler = if config.backend == Backend::None {
        None
    } else {
        let rec = Reconciler::new(calyx_felix::Config {
            route_protocol: config.route_protocol,
            route_refresh_interval: config.route_refresh_interval,
            ..calyx_felix::Config::default()
        })
        .context("cannot open netlink")?;
        let handle = rec.handle();
        let task = tokio::spawn(rec.run(stop.child_token()));
        Some((handle, task))
    };
    let rules = if config.backend == Backend::None {
        None
    } else {
        // Without nf_tables the routes still work: natOutgoing and the forward rules are
        // missing, which `calyx node checksystem` reports as a warning too.
        match natrules::start(config.route_refresh_interval, stop.child_token()) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "no nftables rules (natOutgoing, forwarding): cannot open nfnetlink");
                None
            }
        }
    };

    // Network policy: its own rules engine (table `inet calyx-policy`) and datastore watches.
    let policy_task = if rules.is_none() {
        None
    } else {
        match policy::start(
            store.clone(),
            config.nodename.clone(),
            config.route_refresh_interval,
            status.clone(),
            stop.child_token(),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "no network policy: cannot open nfnetlink");
                update_status(&status, |s| {
                    s.policy.last_error = Some(format!("cannot open nfnetlink: {e}"))
                });
                None
            }
        }
    };

    let signalled = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(signalled.clone()));
    let result = main_loop(
        &config,
        &store,
        &client,
        &ipam,
        reconciler.as_ref().map(|(h, _)| h),
        rules.as_ref().map(|(h, _)| h),
        &endpoints,
        signalled,
    )
    .await;
    signals.abort();

    info!("shutting down");
    stop.cancel();
    if let Some((_, task)) = reconciler {
        let _ = task.await;
    }
    if let Some((_, task)) = rules {
        let _ = task.await;
    }
    if let Some(task) = policy_task {
        let _ = task.await;
    }
    let _ = collector.await;
    let _ = server.await;
    result
}

/// Connects to etcd, retrying until `wait` has passed; then one clear error.
async fn wait_for_datastore(config: &EtcdConfig, wait: Duration) -> Result<EtcdStore> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match EtcdStore::connect(config).await {
            Ok(store) => return Ok(store),
            Err(e @ StoreError::Unavailable { .. }) if started.elapsed() < wait => {
                warn!(error = %e, "waiting for the datastore");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("datastore"),
        }
    }
}

/// How often this node's own blocks are read for the IPAM status (they are not watched: see
/// [`cluster`]).
const IPAM_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How long the first BGP plan waits for this node's workload addresses (normally a few
/// milliseconds: one netlink dump).
const WORKLOADS_WAIT: Duration = Duration::from_secs(2);

/// How long a failed tunnel-address assignment waits before the next try.
const TUNNEL_RETRY: Duration = Duration::from_secs(5);

/// The route resolver task and the queue into it.
struct ResolverTask {
    inputs: mpsc::Sender<ResolverInput>,
    stats: Arc<ResolverStats>,
    task: tokio::task::JoinHandle<()>,
}

/// Cancels `token` on SIGTERM or SIGINT (or at once when the handlers cannot be installed).
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::SignalKind;
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => warn!(error = %format!("{e:#}"), "stopping"),
    }
    token.cancel();
}

/// The watch → view → plans loop, until `shutdown` is cancelled (a signal, or a test).
#[allow(clippy::too_many_arguments)] // the loop's collaborators: one handle each
async fn main_loop<S: Store + Clone>(
    config: &NodeConfig,
    store: &S,
    client: &ResourceClient<S>,
    ipam: &Ipam<S>,
    reconciler: Option<&ReconcilerHandle>,
    rules: Option<&calyx_felix::rules::RulesHandle>,
    endpoints: &http::Endpoints,
    shutdown: CancellationToken,
) -> Result<()> {
    let status = &endpoints.status;
    let (mut state, mut watch) = ClusterWatch::start(store).await?;
    let stop = CancellationToken::new();
    let resolver = reconciler.map(|felix| {
        let (tx, rx) = mpsc::channel(RESOLVER_INPUT_QUEUE);
        let stats = Arc::new(ResolverStats::default());
        let task = tokio::spawn(routes::run(rx, felix.clone(), stats.clone(), stop.clone()));
        ResolverTask {
            inputs: tx,
            stats,
            task,
        }
    });
    let mut bgp = (config.backend == Backend::Bgp).then(|| {
        bgp::Bgp::new(
            stop.child_token(),
            hoststate::restarted_recently(config),
            config.graceful_restart,
            config.bgp_hold_time,
        )
    });
    // Datastore routes as last sent to the resolver (blocks, and borrowed addresses over them),
    // and the block routes alone (what a /32 falls back to when it stops being borrowed).
    let mut sent_routes: BTreeMap<IpNet, RemoteRoute> = BTreeMap::new();
    let mut block_routes: BTreeMap<IpNet, RemoteRoute> = BTreeMap::new();
    let mut sent_pools: Option<Vec<PoolEncap>> = None;
    let mut sent_nat = None;
    let mut felix_applied = felixlive::Applied::default();
    let mut pending = Touched {
        pools: true,
        topology: true,
        blocks: true,
    };
    let mut tunnels_pending = true;
    let mut tunnels_retry = Instant::now();
    // BGP mode originates this node's borrowed addresses from its kernel's workload routes.
    let (mut workloads, workloads_task) = match config.backend {
        Backend::Bgp => {
            let (rx, task) = workloads::spawn(config.route_protocol, stop.child_token());
            (Some(rx), Some(task))
        }
        _ => (None, None),
    };
    // The BGP plan is redone when the topology or the workload addresses change. The first one
    // waits (briefly) for the first workload set: a speaker that came back after a graceful
    // restart would otherwise send End-of-RIB without the borrowed /32s, and its peers would
    // drop them until the next plan.
    let mut bgp_replan = true;
    let mut bgp_waits = workloads.is_some().then(|| Instant::now() + WORKLOADS_WAIT);
    let mut secrets = secrets::Secrets::new(config.bgp_secrets_dir.clone());
    let mut filter_problems: Vec<bgp::FilterProblem> = Vec::new();
    let mut secrets_tick = tokio::time::interval(secrets::POLL_INTERVAL);
    let mut tick = tokio::time::interval(DEBOUNCE);
    let mut ipam_tick = tokio::time::interval(IPAM_STATUS_INTERVAL);
    update_status(status, |s| s.datastore_synced = true);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            event = watch.next() => {
                let Some((prefix, event)) = event else {
                    break Err(anyhow::anyhow!("the datastore watch ended"));
                };
                pending = pending.union(state.apply(prefix, &event));
            }
            set = next_workloads(&mut workloads) => {
                match set {
                    Some(set) => {
                        state.local_workloads = set;
                        bgp_replan = true;
                        bgp_waits = None;
                    }
                    // The follower ended (only when stopping): keep the last set.
                    None => workloads = None,
                }
            }
            // Passwords: a changed Secret file is a new plan (see `secrets`).
            _ = secrets_tick.tick(), if bgp.is_some() => {
                bgp_replan |= secrets.refresh(&state);
                let problems = secrets.problems().to_vec();
                update_status(status, |s| s.bgp_secrets = problems);
            }
            _ = ipam_tick.tick() => {
                let ipam_status = own_blocks_status(store, &state, &config.nodename).await;
                update_status(status, |s| s.ipam = ipam_status);
            }
            _ = tick.tick() => {
                if pending.pools {
                    felix_applied.feed(&state, config, reconciler);
                    if let Some(rules) = rules {
                        natrules::feed(rules, &state, &config.nodename, &mut sent_nat);
                    }
                    tunnels_pending = true;
                    tunnels_retry = Instant::now();
                    // The blocks are watched while some pool uses VXLAN: see `borrowed`.
                    let wanted = dataplane::needs_blocks(&state, config.backend);
                    if let Err(e) = watch.watch_blocks(store, &mut state, wanted).await {
                        warn!(error = %e, "cannot watch the IPAM blocks; retrying");
                        pending.pools = true;
                        continue;
                    }
                }
                if tunnels_pending && Instant::now() >= tunnels_retry {
                    // Retried a while later when it fails (etcd away, datastore not ready):
                    // not on every tick, which would only repeat the same warning.
                    match startup::ensure_tunnels(client, ipam, &config.nodename, &state).await {
                        Ok(()) => tunnels_pending = false,
                        Err(e) => {
                            warn!(error = %format!("{e:#}"), "tunnel addresses; retrying in 5 s");
                            tunnels_retry = Instant::now() + TUNNEL_RETRY;
                        }
                    }
                }
                // Borrowed addresses (VXLAN) that changed since the last tick.
                let dirty = state.borrowed.take_dirty();
                let me = config.nodename.as_str();
                bgp_replan |= pending.topology;
                // A speaker that could not start or take its peers is tried again.
                bgp_replan |= bgp.as_ref().is_some_and(bgp::Bgp::retry_due);
                let waiting = bgp_waits.is_some_and(|until| Instant::now() < until);
                if bgp_replan && !waiting {
                    bgp_replan = false;
                    if let Some(bgp) = bgp.as_mut() {
                        // A new reference is resolved now, not at the next poll.
                        secrets.refresh(&state);
                        if let Some(plan) = bgp::plan(&state, me, config.router_id, &secrets) {
                            bgp.apply(plan).await;
                        }
                        let problems = bgp::filter_problems(&state, me);
                        // Logged once when it appears, not on every plan.
                        for p in problems.iter().filter(|p| !filter_problems.contains(p)) {
                            warn!(filter = %p.filter, used_by = ?p.used_by, "BGPFilter: {}", p.reason);
                        }
                        filter_problems.clone_from(&problems);
                        update_status(status, |s| s.bgp_filters = problems);
                    }
                }
                if let (Some(felix), Some(resolver)) = (reconciler, &resolver) {
                    let mut inputs = Vec::new();
                    if pending.topology {
                        felix.set_host(dataplane::host_state(&state, me, config.backend));
                        block_routes = dataplane::datastore_routes(&state, me, config.backend);
                        let mut routes = block_routes.clone();
                        routes.extend(dataplane::borrowed_routes(&state, me, config.backend));
                        let pools = pool_encaps(&state);
                        if sent_pools.as_ref() != Some(&pools) {
                            inputs.push(ResolverInput::Pools(pools.clone()));
                        }
                        let changes = dataplane::route_changes(&sent_routes, &routes);
                        if !changes.is_empty() {
                            inputs.push(ResolverInput::Datastore(changes));
                        }
                        sent_pools = Some(pools);
                        sent_routes = routes;
                    } else if !dirty.is_empty() {
                        // Only blocks changed: one lookup and at most one update per address.
                        let changes = borrowed_changes(
                            &state, config, &dirty, &block_routes, &mut sent_routes,
                        );
                        if !changes.is_empty() {
                            inputs.push(ResolverInput::Datastore(changes));
                        }
                    }
                    // A speaker (re)started by this tick's plan hands over its feed.
                    if let Some(feed) = bgp.as_mut().and_then(bgp::Bgp::take_feed) {
                        inputs.push(ResolverInput::BgpFeed(feed));
                    }
                    for input in inputs {
                        // The resolver never waits on this loop, so this wait is bounded
                        // by felix's progress.
                        if resolver.inputs.send(input).await.is_err() {
                            warn!("the route resolver has stopped");
                        }
                    }
                }
                pending = Touched::default();
                refresh_status(
                    status,
                    &state,
                    reconciler,
                    resolver.as_ref().map_or(0, |r| r.stats.bgp_routes.load(Ordering::Relaxed)),
                );
                if let Some(rules) = rules {
                    let r = natrules::status(rules);
                    update_status(status, |s| s.rules = r);
                }
                if let Some(peers) = bgp.as_mut().and_then(|b| b.refresh(&endpoints.bgp)) {
                    update_status(status, |s| {
                        s.peers = peers;
                        s.ready = s.datastore_synced && bgp_ready(s);
                    });
                }
            }
        }
    };
    if let Some(bgp) = bgp {
        if config.graceful_restart {
            hoststate::mark_graceful_stop(config);
        }
        bgp.shutdown().await;
    }
    stop.cancel();
    if let Some(task) = workloads_task {
        if let Err(e) = task.await {
            warn!(error = %e, "the workload route follower failed");
        }
    }
    if let Some(resolver) = resolver {
        drop(resolver.inputs);
        if let Err(e) = resolver.task.await {
            warn!(error = %e, "the route resolver task failed");
        }
    }
    result
}

/// The next workload address set, or `None` once the follower has ended; never without one.
async fn next_workloads(
    workloads: &mut Option<workloads::Workloads>,
) -> Option<std::collections::BTreeSet<std::net::IpAddr>> {
    match workloads {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// The datastore route changes for the borrowed addresses in `dirty`: each address's /32
/// (/128) is its borrowed route, else the block route of that exact prefix (a /32 block), else
/// nothing; `sent` is updated to match.
fn borrowed_changes(
    state: &ClusterState,
    config: &NodeConfig,
    dirty: &BTreeMap<std::net::IpAddr, Option<String>>,
    block_routes: &BTreeMap<IpNet, RemoteRoute>,
    sent: &mut BTreeMap<IpNet, RemoteRoute>,
) -> Vec<(IpNet, Option<RemoteRoute>)> {
    let mut changes = Vec::new();
    for ip in dirty.keys() {
        let dst = IpNet::from(*ip);
        let want = dataplane::borrowed_route(state, &config.nodename, config.backend, *ip)
            .or_else(|| block_routes.get(&dst).cloned());
        if sent.get(&dst) == want.as_ref() {
            continue;
        }
        match &want {
            Some(route) => sent.insert(dst, route.clone()),
            None => sent.remove(&dst),
        };
        changes.push((dst, want));
    }
    changes
}

/// The encapsulation of BGP routes per pool, for the resolver.
fn pool_encaps(state: &ClusterState) -> Vec<PoolEncap> {
    state
        .pools
        .values()
        .map(|p| PoolEncap {
            cidr: p.spec.cidr,
            bgp_encap: dataplane::bgp_encap(p),
        })
        .collect()
}

/// This node's blocks, read (not watched) for the status: how many, and how full.
async fn own_blocks_status<S: Store>(store: &S, state: &ClusterState, me: &str) -> IpamStatus {
    let mut ipam = IpamStatus::default();
    for cidr in state.blocks_of(me) {
        let block = match store.get(&block_key(&cidr)).await {
            Ok(Some(kv)) => match serde_json::from_slice::<AllocationBlock>(&kv.value) {
                Ok(b) => b,
                Err(e) => {
                    warn!(%cidr, error = %e, "an IPAM block of this node does not decode");
                    continue;
                }
            },
            Ok(None) => continue,
            Err(e) => {
                warn!(%cidr, error = %e, "cannot read an IPAM block of this node");
                continue;
            }
        };
        ipam.blocks += 1;
        ipam.addresses_in_use += block.num_allocated() as u64;
        ipam.addresses_total += block.num_addresses() as u64;
    }
    ipam
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot install a signal handler")
}

fn update_status(status: &SharedStatus, change: impl FnOnce(&mut NodeStatus)) {
    let mut guard = status
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    change(&mut guard);
}

fn refresh_status(
    status: &SharedStatus,
    state: &ClusterState,
    reconciler: Option<&ReconcilerHandle>,
    rib_routes: u64,
) {
    let dataplane = reconciler.map(|r| {
        let s = r.status();
        DataplaneStatus {
            routes_desired: s.routes_desired as u64,
            routes_programmed: s.routes_programmed as u64,
            routes_pending: s.routes_pending as u64,
            routes_failed: s.routes_failed as u64,
            resyncs: s.resyncs,
            last_resync_seconds: s.last_resync_duration.map_or(0.0, |d| d.as_secs_f64()),
            drift_repairs: s.drift_repairs,
            resync_histogram: Default::default(),
        }
    });
    update_status(status, |s| {
        s.datastore_revision = state.revision;
        s.bgp_rib_routes = rib_routes;
        if let Some(mut d) = dataplane {
            // The histogram lives here, not in the reconciler: a resync finished since the
            // last refresh (every 100 ms) is observed once.
            d.resync_histogram = std::mem::take(&mut s.dataplane.resync_histogram);
            if d.resyncs > s.dataplane.resyncs {
                d.resync_histogram.observe(d.last_resync_seconds);
            }
            s.dataplane = d;
        }
        // Ready by calico-node's rule; without BGP peers that is the datastore alone.
        s.ready = s.datastore_synced && bgp_ready(s);
    });
}

/// calico-node's BGP readiness: every peer Established during the first 30 s, at least one
/// after that; zero peers is ready.
fn bgp_ready(s: &NodeStatus) -> bool {
    if s.peers.is_empty() {
        return true;
    }
    let up = s.peers.iter().filter(|p| p.info == "Established").count();
    if unix_now().saturating_sub(s.started) < 30 {
        up == s.peers.len()
    } else {
        up > 0
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Bgp => "bird",
        Backend::Vxlan => "vxlan",
        Backend::None => "none",
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    //! The daemon's loop in process, against the in-memory store: peers follow the datastore.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use calyx_datastore::client::WriteMode;
    use calyx_datastore::resources::{parse_documents, Kind};
    use calyx_datastore::store::memory::MemoryStore;

    pub(crate) fn config() -> NodeConfig {
        NodeConfig {
            nodename: "a".into(),
            ipv4: config::AddressSetting::None,
            ipv6: config::AddressSetting::None,
            as_number: None,
            backend: Backend::Bgp,
            router_id: config::RouterIdSetting::NodeAddress,
            default_ipv4_pool: None,
            default_ipv6_pool: None,
            health_listen: "127.0.0.1:0".parse().unwrap(),
            health_listen_set: true,
            datastore_wait: Duration::from_secs(1),
            graceful_restart: false,
            bgp_hold_time: 9,
            state_dir: std::env::temp_dir().join(format!("calyx-loop-{}", std::process::id())),
            bgp_secrets_dir: std::env::temp_dir().join("calyx-no-secrets"),
            route_protocol: 80,
            route_protocol_set: false,
            route_refresh_interval: Duration::from_secs(90),
            route_refresh_interval_set: false,
            cluster_type: String::new(),
            ipam_gc_grace: Duration::from_secs(900),
        }
    }

    async fn apply(client: &ResourceClient<MemoryStore>, yaml: &str) {
        client
            .write_all(WriteMode::Apply, parse_documents(yaml).unwrap())
            .await
            .unwrap();
    }

    fn node(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n\
             spec:\n  bgp:\n    ipv4Address: {ip}/8\n---\n"
        )
    }

    async fn peers_become(status: &SharedStatus, want: &[&str]) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..200 {
            got = {
                let s = status.read().unwrap();
                let mut p: Vec<String> = s.peers.iter().map(|p| p.address.clone()).collect();
                p.sort();
                p
            };
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_follow_the_datastore() {
        let store = MemoryStore::new();
        let client = ResourceClient::new(store.clone());
        let ipam = Ipam::new(store.clone());
        // A listen port of the kernel's choosing would need the speaker to report it; a port
        // from the ephemeral range that is free now serves (peers are on loopback only).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  listenPort: {port}\n---\n"
        );
        yaml.push_str(&node("a", "127.0.0.1"));
        yaml.push_str(&node("b", "127.0.0.2"));
        yaml.push_str(&node("c", "127.0.0.3"));
        apply(&client, &yaml).await;

        let status: SharedStatus = Arc::new(RwLock::new(NodeStatus::default()));
        let stop = CancellationToken::new();
        let cfg = config();
        let task = {
            let (store, client, ipam, status, stop) = (
                store.clone(),
                client.clone(),
                ipam.clone(),
                status.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let endpoints = http::Endpoints {
                    status,
                    bgp: lookingglass::SharedBgp::default(),
                };
                main_loop(&cfg, &store, &client, &ipam, None, None, &endpoints, stop).await
            })
        };
        assert_eq!(
            peers_become(&status, &["127.0.0.2", "127.0.0.3"]).await,
            ["127.0.0.2", "127.0.0.3"],
            "the full mesh"
        );
        client.delete(Kind::Node, "c").await.unwrap();
        assert_eq!(peers_become(&status, &["127.0.0.2"]).await, ["127.0.0.2"]);
        apply(
            &client,
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n\
             spec:\n  peerIP: 127.0.0.9\n  asNumber: 65001\n",
        )
        .await;
        assert_eq!(
            peers_become(&status, &["127.0.0.2", "127.0.0.9"]).await,
            ["127.0.0.2", "127.0.0.9"]
        );
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }
}
